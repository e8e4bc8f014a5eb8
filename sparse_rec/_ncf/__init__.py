"""DSL NeuMF: the estimator (``estimator``) and its scoring and layout (``scoring``)."""

__all__ = ["DSLNCF"]


def __getattr__(name):
    # Lazy: serving imports ``scoring`` without scikit-learn.
    if name == "DSLNCF":
        from .estimator import DSLNCF

        return DSLNCF
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
