"""The engine interface and the table of engines per (model, device)."""

import importlib

# (model, device) -> (module, class). A model (DSL-MF's BPR loss, NCF) is
# trained on a device only through its engine listed here.
_ENGINES = {
    ("mf", "cpu"): ("sparse_rec.backends.cpu", "MFEngine"),
    ("mf", "cuda"): ("sparse_rec.backends.cuda", "MFEngine"),
    ("ncf", "cpu"): ("sparse_rec.backends.cpu", "NCFEngine"),
    ("ncf", "cuda"): ("sparse_rec.backends.cuda", "NCFEngine"),
    # DSL-MF with loss="ials" (the estimator's _engine_key()).
    ("mf-ials", "cpu"): ("sparse_rec.backends.cpu", "IALSEngine"),
    ("mf-ials", "cuda"): ("sparse_rec.backends.cuda", "IALSEngine"),
    # DSL-MF with loss="softmax".
    ("mf-softmax", "cpu"): ("sparse_rec.backends.cpu_softmax", "SoftmaxEngine"),
    ("mf-softmax", "cuda"): ("sparse_rec.backends.cuda_softmax", "SoftmaxEngine"),
    # DSL-MF with loss="ccl" (cosine contrastive loss).
    ("mf-ccl", "cpu"): ("sparse_rec.backends.cpu_softmax", "CCLEngine"),
    ("mf-ccl", "cuda"): ("sparse_rec.backends.cuda_softmax", "CCLEngine"),
    ("vae", "cpu"): ("sparse_rec.backends.vae_cpu", "VAEEngine"),
    ("vae", "cuda"): ("sparse_rec.backends.vae_cuda", "VAEEngine"),
    ("lightgcn", "cpu"): ("sparse_rec.backends.cpu_lightgcn", "LightGCNEngine"),
    ("lightgcn", "cuda"): ("sparse_rec.backends.cuda_lightgcn", "LightGCNEngine"),
    # DSLLightGCN with loss="softmax": the same engines as BPR.
    ("lightgcn-softmax", "cpu"): ("sparse_rec.backends.cpu_lightgcn", "LightGCNEngine"),
    ("lightgcn-softmax", "cuda"): ("sparse_rec.backends.cuda_lightgcn", "LightGCNEngine"),
}


def devices(model):
    """Devices that have an engine for ``model``, in registration order."""
    return tuple(dev for m, dev in _ENGINES if m == model)


def engine_class(model, device):
    """The engine class training ``model`` on ``device``."""
    if (model, device) not in _ENGINES:
        raise ValueError(f"backend must be one of {devices(model)}; got {device!r}.")
    module, name = _ENGINES[model, device]
    return getattr(importlib.import_module(module), name)


class Engine:
    """One model's training on one device: the only caller of its training kernels.

    An engine is built once per fit over the model's parameters (the sparse
    tables in :class:`~sparse_rec._dsl.PruneGrow` order and the model's dense
    parts, arrays it trains in place) and the interaction arrays. The shared
    training loop (:mod:`sparse_rec._training`) calls, per epoch:

    ``loss = epoch(key)``
        Train one epoch keyed by ``key`` (uint64); return the summed loss
        over ``n_samples`` instances (the loop divides).
    ``download()``
        Bring trained weights into the host arrays (before anything on the
        host reads them: prune/grow, early stopping, callbacks, the end).
    ``grow_fns(key)``
        One growth-score callback per table, ``fill(r0, r1, G)``, for
        :meth:`PruneGrow.step <sparse_rec._dsl.PruneGrow.step>`.
    ``prune_scores()``
        ``None`` (prune the smallest ``|w|``) or one non-negative score per
        active weight and table (an iALS engine: ``w**2 * H_jj``).
    ``rebuild()``
        After prune/grow rebuilt the host tables: refresh derived arrays and
        send them to the device (``upload``).

    ``upload`` and ``download`` do nothing on the CPU, where the kernels
    train the host arrays themselves.

    Examples
    --------
    >>> import numpy as np
    >>> from sparse_rec._base import TrainData
    >>> from sparse_rec._table import SparseEmbeddingTable
    >>> from sparse_rec.backends import engine_class
    >>> from sparse_rec.datasets import make_interactions
    >>> data = TrainData.from_matrix(make_interactions(20, 10, 80, random_state=0))
    >>> users = SparseEmbeddingTable.random(20, 4, 40, seed=0)
    >>> items = SparseEmbeddingTable.random(10, 4, 20, seed=1)
    >>> engine = engine_class("mf", "cpu")(data, users, items, np.zeros((10, 2), np.float32),
    ...                                    learning_rate=0.05, alpha=0.0, optimizer="adagrad")
    >>> loss = engine.epoch(np.uint64(1))
    >>> engine.download()  # a no-op on the CPU
    >>> bool(np.isfinite(loss / engine.n_samples)), len(engine.grow_fns(np.uint64(2)))
    (True, 2)
    """

    #: Instances one epoch draws: the mean loss is ``epoch(key) / n_samples``.
    n_samples = 0

    def epoch(self, key):
        raise NotImplementedError

    def grow_fns(self, key):
        raise NotImplementedError

    def prune_scores(self):
        return None

    def rebuild(self):
        self.upload()

    def upload(self):
        """Copy the host parameters to the device (no-op on the CPU)."""

    def download(self):
        """Copy the device parameters to the host (no-op on the CPU)."""
