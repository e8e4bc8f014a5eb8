"""LightGCN under a DSL budget: the estimator (``estimator``) and its scoring (``scoring``)."""

__all__ = ["DSLLightGCN"]


def __getattr__(name):
    # Lazy: serving imports ``scoring`` without scikit-learn.
    if name == "DSLLightGCN":
        from .estimator import DSLLightGCN

        return DSLLightGCN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
