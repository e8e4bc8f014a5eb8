"""DSL Mult-VAE: the estimator (``estimator``) and its scoring (``scoring``)."""

__all__ = ["DSLMultVAE"]


def __getattr__(name):
    # Lazy: serving imports ``scoring`` without scikit-learn.
    if name == "DSLMultVAE":
        from .estimator import DSLMultVAE

        return DSLMultVAE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
