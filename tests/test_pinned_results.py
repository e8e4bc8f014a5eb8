"""Pinned results: serial fits of every estimator hash to fixed digests.

A refactor must not change what a fit computes. These fits run with one
thread and a fixed seed, so they are bitwise reproducible; the digests below
were taken on the code before the training-loop refactor (issue 10). A
commit that changes results on purpose updates the digest and says why.
"""

import hashlib

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec import DSLNCF, DSLMatrixFactorization
from sparse_rec.datasets import make_interactions

# Every parameter written out: a change of a default must not move the pin.
MF_PARAMS = dict(
    n_components=8, density=0.25, max_iter=12, learning_rate=0.05, alpha=0.03,
    optimizer="adagrad", update_ratio=0.5, update_interval=5, schedule="cosine",
    grow="gradient", budget="global", random_state=3, n_threads=1, backend="cpu",
    verbose=0, callbacks=None, early_stopping=False, validation_fraction=0.1,
    n_iter_no_change=5, tol=1e-4, warm_start=False, loss="bpr",
)
NCF_PARAMS = dict(
    n_components=4, hidden_layer_sizes=(8, 4), density=0.3, n_negatives=2,
    learning_rate=0.003, alpha=0.001, batch_size=64, max_iter=5, update_ratio=0.2,
    update_interval=2, schedule="cosine", grow="gradient", budget="global", grow_scores="raw",
    random_state=3, n_threads=1, verbose=0, callbacks=None, early_stopping=False,
    validation_fraction=0.1, n_iter_no_change=5, tol=1e-4, warm_start=False,
)


def _data():
    X = make_interactions(60, 40, 700, random_state=1)
    rng = np.random.default_rng(2)
    exclude = sp.random(60, 40, density=0.02, random_state=rng, format="csr")
    exclude.data[:] = 1.0
    return X, exclude


def _digest(est, X):
    h = hashlib.sha256()
    for name in est._snapshot_attributes:
        value = getattr(est, name)
        if hasattr(value, "indptr"):  # a SparseEmbeddingTable
            for arr in (value.indptr, value.indices, value.weights):
                h.update(np.ascontiguousarray(arr).tobytes())
        else:
            h.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    h.update(np.array([row["loss"] for row in est.history_], np.float64).tobytes())
    h.update(np.array([row["nnz"] for row in est.history_], np.int64).tobytes())
    ids, scores = est.recommend(np.arange(X.shape[0]), n=5)
    h.update(ids.tobytes())
    h.update(scores.tobytes())
    fold_ids, fold_scores = est.recommend_for_history(X[:7], n=5)
    h.update(fold_ids.tobytes())
    h.update(fold_scores.tobytes())
    return h.hexdigest()


def _fits(cls, params):
    """Digests of: a fit with ``exclude``; its warm continuation; an early-stopping,
    random-growth, per-table-budget fit."""
    X, exclude = _data()
    est = cls(**params).fit(X, exclude=exclude)
    out = [_digest(est, X)]
    est.set_params(warm_start=True, max_iter=3, update_ratio=0.1, update_interval=1)
    est.fit(X)
    out.append(_digest(est, X))
    other = dict(params, early_stopping=True, n_iter_no_change=2, grow="random",
                 budget="table", schedule="linear", random_state=5)
    out.append(_digest(cls(**other).fit(X), X))
    return out


PINNED = {
    "DSLMatrixFactorization": [
        "ca1dc45f851a9ca6d6cf048d3d7079dca9629889135e857b62c1408847d0a095",
        "e2660fe3791cd84f3d156045d0c7368af80bde6177b605f58c6c091c1fd78849",
        "454f9e2ec64abcd20dcfb347c6e7d8507d16b35035fdd984170a82988e95cd17",
    ],
    "DSLNCF": [
        "3e871eac027f0af1092348fbef52dc79a4058c123be80094b4e6e97f8527cd17",
        "cbb47a555ddbaa20d8acbfaed13323ce4809ee547e3fe75c9a8c02a154a6c311",
        "0a70dfb736d1f6335fc200c33e359372a2fedac45dbc78a28403d7bab4592621",
    ],
}


@pytest.mark.parametrize("cls, params", [(DSLMatrixFactorization, MF_PARAMS),
                                         (DSLNCF, NCF_PARAMS)],
                         ids=["mf", "ncf"])
def test_serial_fit_results_are_pinned(cls, params):
    assert _fits(cls, params) == PINNED[cls.__name__]
