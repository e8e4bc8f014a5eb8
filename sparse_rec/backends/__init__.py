"""Backends: the training engines, one per (model, device), and MF scoring.

An engine is the only caller of its model's training kernels (the epoch and
the growth gradients); see :class:`~sparse_rec.backends._engine.Engine` for
the interface and the Architecture page of the docs for who calls what.
"""

from . import cpu
from ._engine import Engine, devices, engine_class

__all__ = ["Engine", "cpu", "devices", "engine_class", "get_backend"]


def get_backend(name="cpu"):
    """The module of MF scoring on ``name`` (only the CPU scores)."""
    if name == "cpu":
        return cpu
    raise ValueError(f"backend must be 'cpu'; got {name!r}.")
