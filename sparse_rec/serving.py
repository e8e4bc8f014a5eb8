"""Serve a saved model with numpy, scipy and numba only.

:func:`load_model` reads a model file written by ``est.save`` (see
:func:`sparse_rec.load` for the format and its checks) into a small
read-only object (:class:`ServedMF`, :class:`ServedNCF`,
:class:`ServedLightGCN` or :class:`ServedMultVAE`) with the estimator's
recommendation methods:
``recommend``, ``recommend_for_history``, ``score_items``,
``similar_items``, ``decision_function`` and ``predict``, and the read-only
workflow methods ``recommend_ids`` (raw ids in and out), ``user_index``,
``item_index``, ``similar_users`` and ``explain``. It runs the very
scoring code of the estimator, but imports neither scikit-learn nor joblib,
implicit or tqdm, so a service can run in an environment that has only
numpy, scipy and numba (plus this package's files).

Examples
--------
>>> import os, tempfile
>>> from sparse_rec import DSLMatrixFactorization
>>> from sparse_rec.datasets import make_interactions
>>> from sparse_rec.serving import load_model
>>> X = make_interactions(50, 30, 400, random_state=0)
>>> mf = DSLMatrixFactorization(n_components=8, max_iter=3, random_state=0,
...                             n_threads=1).fit(X)
>>> path = mf.save(os.path.join(tempfile.mkdtemp(), "model.npz"))
>>> served = load_model(path)
>>> bool((served.recommend([0, 1], n=5)[0] == mf.recommend([0, 1], n=5)[0]).all())
True
"""

from ._io import _load
from ._lightgcn.scoring import LightGCNModel
from ._mf.scoring import MFModel
from ._ncf.scoring import NCFModel
from ._recommend import RecommenderMixin
from ._registry import served
from ._vae.scoring import VAEModel
from ._workflows import WorkflowMixin

__all__ = ["load_model", "ServedMF", "ServedNCF", "ServedMultVAE", "ServedLightGCN"]


class _Served(WorkflowMixin, RecommenderMixin):
    """A model read from a file, for scoring only: it has no ``fit``."""

    _served = True

    def __init__(self):
        self.n_threads = None
        self._cache = {}

    def __repr__(self):
        n_users = getattr(self, "n_users_", "?")
        n_items = getattr(self, "n_items_", "?")
        return f"{type(self).__name__}(n_users={n_users}, n_items={n_items})"


class ServedMF(MFModel, _Served):
    """A loaded :class:`~sparse_rec.DSLMatrixFactorization`, for scoring only.

    Holds the saved hyper-parameters and fitted attributes under the
    estimator's names (``user_table_``, ``item_table_``, ``item_bias_``,
    ``seen_``, ``n_users_``, ``n_items_``, ``n_active_``, ``nbytes_``, and
    ``user_ids_`` / ``item_ids_`` when the file has raw ids). It cannot be
    trained: load the file with :func:`sparse_rec.load` for that.
    """


class ServedNCF(NCFModel, _Served):
    """A loaded :class:`~sparse_rec.DSLNCF`, for scoring only (see :class:`ServedMF`)."""


class ServedMultVAE(VAEModel, _Served):
    """A loaded :class:`~sparse_rec.DSLMultVAE`, for scoring only (see :class:`ServedMF`)."""


class ServedLightGCN(LightGCNModel, _Served):
    """A loaded :class:`~sparse_rec.DSLLightGCN`, for scoring only (see :class:`ServedMF`).

    Propagates the layer-0 tables over ``seen_`` (with ``folded_graph_``'s rows
    for the users of ``folded_users_``) once, on first use.
    """


# Saved class -> the class that serves it (module, attribute), from the registry.
_SERVED = served()


def load_model(path, *, n_threads=None, max_bytes=None):
    """Load a model file for serving; the same checks as :func:`sparse_rec.load`.

    Parameters
    ----------
    path : str or path-like
        A file written by ``est.save`` or ``sparse_rec._io.save_model``.
    n_threads : int or None, default=None
        Numba threads used for scoring (None: the saved setting, or all).
    max_bytes : int, optional
        Cap on the bytes the file may inflate to, as in :func:`sparse_rec.load`
        (default ``MAX_LOAD_BYTES``, 16 GiB); raise it for a trusted larger file.

    Returns
    -------
    ServedMF, ServedNCF, ServedMultVAE or ServedLightGCN

    Raises
    ------
    ValueError
        If the file is damaged, not a model file, or holds a model this
        module cannot serve (the registered models with a served class only).
    """
    model = _load(path, classes=_SERVED, max_bytes=max_bytes)
    if n_threads is not None:
        model.n_threads = n_threads
    return model
