"""sparse_rec: recommenders whose parameters are truly sparse.

Models are trained sparse from scratch with Dynamic Sparse Learning
(Wang et al., WSDM 2024): a fixed number of active weights, stored as CSR,
pruned by magnitude and regrown by gradient during training.
"""

__version__ = "0.1.0.dev0"

from ._registry import exported as _exported

__all__ = [*_exported(), "load", "__version__"]

# Imported on first use, so that ``sparse_rec.serving`` (numpy, scipy and
# numba only) does not pull in scikit-learn through the estimators. The
# estimators come from the model registry.
_LAZY = {**_exported(), "load": "sparse_rec._io"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sparse_rec' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
