"""sparse_rec: recommenders whose parameters are truly sparse.

Models are trained sparse from scratch with Dynamic Sparse Learning
(Wang et al., WSDM 2024): a fixed number of active weights, stored as CSR,
pruned by magnitude and regrown by gradient during training.
"""

from ._io import load
from ._mf import DSLMatrixFactorization

__version__ = "0.1.0.dev0"

__all__ = ["DSLMatrixFactorization", "load", "__version__"]
