"""Backends: the only callers of compiled kernels."""

from . import cpu

__all__ = ["cpu", "get_backend"]


def get_backend(name="cpu"):
    if name == "cpu":
        return cpu
    raise ValueError(f"backend must be 'cpu'; got {name!r}.")
