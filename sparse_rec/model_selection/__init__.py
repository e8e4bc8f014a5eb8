"""Splitting interaction matrices into train and test sets.

Splitters keep the users x items shape, so indices stay aligned between
train and test; see :func:`leave_one_out_split` for the NCF-style protocol
with sampled negatives. For scikit-learn's search tools,
:func:`fold_in_split` builds the ``(X, y)`` pair of histories and held-out
interactions, :class:`UserKFold` (new users) and :class:`HoldOutSplit` (the
same users) split it, and :class:`SparseTarget` wraps a sparse ``y`` for
``cross_validate`` and friends.
"""

from ._cv import HoldOutSplit, SparseTarget, UserKFold, fold_in_split
from ._split import (
    LeaveOneOutSplit,
    leave_one_out_split,
    random_split,
    temporal_split,
    train_test_split_users,
)

__all__ = [
    "HoldOutSplit",
    "LeaveOneOutSplit",
    "SparseTarget",
    "UserKFold",
    "fold_in_split",
    "leave_one_out_split",
    "random_split",
    "temporal_split",
    "train_test_split_users",
]
