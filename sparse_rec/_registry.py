"""The one list of model classes.

The package namespace (``sparse_rec.DSLNCF``), model files
(:mod:`sparse_rec._io`: which class a file may name), serving
(:mod:`sparse_rec.serving`: which class scores it) and the command line
(``sparse-rec fit --estimator``) all read :data:`MODELS`. Adding a model is
one entry here. Imports nothing, so that reading it costs nothing.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    """Where a model's classes live (``(module, attribute)`` pairs).

    Attributes
    ----------
    estimator : tuple of str
        The estimator class; model files name it by its class name.
    served : tuple of str or None
        The class that serves its model files (None: not servable).
    exported : bool
        Importable from the package namespace (``sparse_rec.<name>``).
    cli : str or None
        Its name for ``sparse-rec fit --estimator`` (None: not trained there).
    """

    estimator: tuple
    served: tuple = None
    exported: bool = False
    cli: str = None


MODELS = {
    "DSLMatrixFactorization": Model(("sparse_rec._mf.estimator", "DSLMatrixFactorization"),
                                    served=("sparse_rec.serving", "ServedMF"), exported=True,
                                    cli="mf"),
    "DSLNCF": Model(("sparse_rec._ncf.estimator", "DSLNCF"),
                    served=("sparse_rec.serving", "ServedNCF"), exported=True, cli="ncf"),
    "DSLMultVAE": Model(("sparse_rec._vae.estimator", "DSLMultVAE"),
                        served=("sparse_rec.serving", "ServedMultVAE"), exported=True,
                        cli="multvae"),
    "DSLLightGCN": Model(("sparse_rec._lightgcn.estimator", "DSLLightGCN"),
                         served=("sparse_rec.serving", "ServedLightGCN"), exported=True,
                         cli="lightgcn"),
    "ImplicitRecommender": Model(("sparse_rec.interop", "ImplicitRecommender")),
}


def estimators():
    """Class name -> ``(module, attribute)`` of every estimator model files may name."""
    return {name: m.estimator for name, m in MODELS.items()}


def served():
    """Class name -> ``(module, attribute)`` of the class serving its files."""
    return {name: m.served for name, m in MODELS.items() if m.served is not None}


def exported():
    """Class name -> module of the estimators in the package namespace."""
    return {name: m.estimator[0] for name, m in MODELS.items() if m.exported}


def cli_estimators():
    """``--estimator`` choice -> class name, in registration order."""
    return {m.cli: name for name, m in MODELS.items() if m.cli is not None}


def load_class(spec):
    """The class at ``(module, attribute)``."""
    import importlib

    module, attr = spec
    return getattr(importlib.import_module(module), attr)
