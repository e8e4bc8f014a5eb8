"""DSL matrix factorisation: the estimator (``estimator``) and its scoring (``scoring``)."""

__all__ = ["DSLMatrixFactorization"]


def __getattr__(name):
    # Lazy: serving imports ``scoring`` without scikit-learn.
    if name == "DSLMatrixFactorization":
        from .estimator import DSLMatrixFactorization

        return DSLMatrixFactorization
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
