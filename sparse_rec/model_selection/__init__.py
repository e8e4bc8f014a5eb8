"""Splitting interaction matrices into train and test sets.

Splitters keep the users x items shape, so indices stay aligned between
train and test; see :func:`leave_one_out_split` for the NCF-style protocol
with sampled negatives.
"""

from ._split import (
    LeaveOneOutSplit,
    leave_one_out_split,
    random_split,
    temporal_split,
    train_test_split_users,
)

__all__ = [
    "LeaveOneOutSplit",
    "leave_one_out_split",
    "random_split",
    "temporal_split",
    "train_test_split_users",
]
