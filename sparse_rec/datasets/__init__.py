"""Data sets for recommenders: a shipped MovieLens copy, folder readers and synthetic data.

Nothing here downloads. ``load_movielens_small`` reads the copy of MovieLens
latest-small shipped with the package (under the MovieLens licence, see
``data/ml-latest-small-README.txt``); ``load_movielens`` and ``load_lightgcn``
read folders you have downloaded yourself; ``make_interactions`` generates
synthetic implicit feedback of any size; ``from_frame`` builds a data set from
a pandas or polars DataFrame (or a mapping of columns) with raw ids of any type.
"""

from ._base import InteractionDataset, TrainTestDataset
from ._frame import from_frame
from ._lightgcn import load_lightgcn
from ._movielens import load_movielens, load_movielens_small
from ._synthetic import make_interactions

__all__ = [
    "InteractionDataset",
    "TrainTestDataset",
    "load_movielens_small",
    "load_movielens",
    "load_lightgcn",
    "make_interactions",
    "from_frame",
]
