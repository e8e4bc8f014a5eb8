"""Tests for sparse_rec.metrics.make_ranking_scorer."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from sparse_rec import DSLMatrixFactorization
from sparse_rec.metrics import METRIC_NAMES, make_ranking_scorer
from sparse_rec.model_selection import SparseTarget, fold_in_split


class CoOccurrence(BaseEstimator):
    """Scores items by co-occurrence with the history plus weighted popularity.

    Records the histories and options it is asked about, to check what the
    scorer passes.
    """

    def __init__(self, pop_weight=0.1):
        self.pop_weight = pop_weight

    def fit(self, X, y=None):
        B = (sp.csr_matrix(X) != 0).astype(np.float64)
        C = (B.T @ B).toarray()
        np.fill_diagonal(C, 0.0)
        self.C_, self.pop_ = C, np.asarray(B.sum(axis=0)).ravel()
        self.calls_ = []
        return self

    def recommend_for_history(self, X, n=10, filter_seen=True):
        H = sp.csr_matrix(X)
        self.calls_.append((H.copy(), n, filter_seen))
        seen = H.toarray() != 0
        S = seen.astype(np.float64) @ self.C_ + self.pop_weight * self.pop_
        if sp.issparse(filter_seen):
            S[sp.csr_matrix(filter_seen).toarray() != 0] = -np.inf
        elif filter_seen:
            S[seen] = -np.inf
        order = np.argsort(-S, axis=1, kind="stable")[:, :n]
        top = np.take_along_axis(S, order, axis=1)
        return np.where(np.isfinite(top), order, -1), top.astype(np.float32)


class NoFoldIn(BaseEstimator):
    def fit(self, X, y=None):
        return self


def _data(n_users=40, n_items=25, seed=0, test_size=0.3):
    rng = np.random.default_rng(seed)
    R = sp.random(n_users, n_items, density=0.25, format="csr", random_state=rng)
    R.data[:] = 1.0
    return fold_in_split(R, test_size, random_state=seed)


def _metric(name, ranked, truth, k):
    """One user's metric, straight from the definitions in the docs."""
    top = [int(i) for i in ranked[:k]]
    hits = [i >= 0 and i in truth and i not in top[:r] for r, i in enumerate(top)]
    n_hits = sum(hits)
    if name == "precision":
        return n_hits / k
    if name == "recall":
        return n_hits / len(truth)
    if name == "ndcg":
        dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
        return dcg / sum(1 / math.log2(r + 2) for r in range(min(len(truth), k)))
    if name == "hit_rate":
        return float(n_hits > 0)
    if name == "map":
        ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h)
        return ap / min(len(truth), k)
    return next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0)  # mrr


def _reference(est, X, y, name, k):
    """Score user by user: history = X's row minus y's items, one call each."""
    X, y = sp.csr_matrix(X), sp.csr_matrix(y)
    values = []
    for u in range(X.shape[0]):
        truth = set(y[u].indices.tolist())
        if not truth:
            continue
        hist = sorted(set(X[u].indices.tolist()) - truth)
        H = sp.csr_matrix((np.ones(len(hist)), ([0] * len(hist), hist)), shape=(1, X.shape[1]))
        ids, _ = est.recommend_for_history(H, n=k, filter_seen=True)
        values.append(_metric(name, ids[0], truth, k))
    return float(np.mean(values))


@pytest.mark.parametrize("metric", METRIC_NAMES)
@pytest.mark.parametrize("batch_size", [1024, 7])
def test_matches_per_user_reference(metric, batch_size):
    X, y = _data()
    est = CoOccurrence().fit(X)
    k = 5
    got = make_ranking_scorer(metric, k, batch_size=batch_size)(est, X, y)
    assert got == pytest.approx(_reference(est, X, y, metric, k), rel=1e-12, abs=1e-12)


def test_hand_computed_ndcg():
    # Popularity order 0 > 1 > 2 > 3, no co-occurrence signal.
    est = CoOccurrence(pop_weight=1.0)
    est.C_, est.pop_, est.calls_ = np.zeros((4, 4)), np.array([4.0, 3.0, 2.0, 1.0]), []
    X = sp.csr_matrix([[1, 0, 0, 0], [0, 1, 0, 0]])
    y = sp.csr_matrix([[0, 0, 1, 0], [1, 0, 0, 1]])
    # User 0 gets [1, 2]: hit at position 1 of 1 relevant item.
    # User 1 gets [0, 2]: hit at position 0 of 2 relevant items.
    expected = (1 / math.log2(3) + 1 / (1 + 1 / math.log2(3))) / 2
    assert make_ranking_scorer("ndcg", k=2)(est, X, y) == pytest.approx(expected, rel=1e-12)


def test_held_out_items_in_X_are_not_history():
    X_in, y = _data()
    est = CoOccurrence().fit(X_in)
    scorer = make_ranking_scorer("recall", 5)
    disjoint = scorer(est, X_in, y)
    histories_disjoint = est.calls_[-1][0]
    full = scorer(est, X_in + y, y)
    histories_full = est.calls_[-1][0]
    assert full == disjoint
    assert (histories_full != histories_disjoint).nnz == 0
    # No held-out item is in a history, so all of them stay rankable.
    assert histories_full.multiply(y[np.diff(y.indptr) > 0]).nnz == 0


def test_scorer_asks_for_k_items_with_history_filtered():
    X, y = _data()
    est = CoOccurrence().fit(X)
    make_ranking_scorer("map", 7)(est, X, y)
    (_, n, filter_seen), = est.calls_
    assert n == 7 and filter_seen is True


def test_users_without_held_out_items_are_skipped():
    X, y = _data()
    est = CoOccurrence().fit(X)
    scorer = make_ranking_scorer("ndcg", 5)
    base = scorer(est, X, y)
    # Add users with histories but nothing held out: the mean is unchanged
    # and they are not folded in.
    extra = sp.csr_matrix(np.ones((6, X.shape[1])))
    X2 = sp.vstack([extra[:3], X, extra[3:]]).tocsr()
    y2 = sp.vstack([sp.csr_matrix((3, X.shape[1])), y, sp.csr_matrix((3, X.shape[1]))]).tocsr()
    est.calls_ = []
    assert scorer(est, X2, y2) == base
    n_active = int((np.diff(y.indptr) > 0).sum())
    assert sum(h.shape[0] for h, _, _ in est.calls_) == n_active


def test_y_forms_give_the_same_score():
    X, y = _data()
    est = CoOccurrence().fit(X)
    scorer = make_ranking_scorer("precision", 4)
    expected = scorer(est, X, y)
    assert scorer(est, X, SparseTarget(y)) == expected
    assert scorer(est, X, y.toarray()) == expected
    assert scorer(est, X.tocoo(), sp.csr_array(y)) == expected


def test_pipeline_transforms_histories_before_the_last_step():
    X, y = _data()

    def drop_item_0(M):
        keep = np.ones(M.shape[1])
        keep[0] = 0.0
        M = (sp.csr_matrix(M) @ sp.diags(keep)).tocsr()
        M.eliminate_zeros()
        return M

    pipe = Pipeline([("drop", FunctionTransformer(drop_item_0, accept_sparse=True)),
                     ("rec", CoOccurrence())]).fit(X)
    rec = pipe.named_steps["rec"]
    scorer = make_ranking_scorer("hit_rate", 3)
    scorer(pipe, X, y)
    assert X[:, 0].nnz > 0
    # The last step sees transformed histories (item 0 dropped) ...
    assert all(h[:, 0].nnz == 0 for h, _, _ in rec.calls_)
    # ... but the untransformed history is what is filtered: item 0 was seen.
    filters = [f for _, _, f in rec.calls_]
    assert all(sp.issparse(f) for f in filters)
    assert sum(f[:, 0].nnz for f in filters) > 0
    for h, _, f in rec.calls_:
        assert ((h != 0) > (f != 0)).nnz == 0  # transformed pattern within the filter


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metric": "auc"}, "metric must be one of"),
        ({"metric": ["ndcg"]}, "metric must be one of"),
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": 2.5}, "k must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_ranking_scorer(**{"metric": "ndcg", **kwargs})


def test_bad_input():
    X, y = _data()
    est = CoOccurrence().fit(X)
    scorer = make_ranking_scorer("ndcg", 5)
    with pytest.raises(ValueError, match="needs y, the held-out interactions"):
        scorer(est, X, None)
    with pytest.raises(ValueError, match=r"y must have the shape of X .* got X \(40, 25\) and y"):
        scorer(est, X, y[:, :20])
    with pytest.raises(ValueError, match="no held-out interaction for any of its 40 users"):
        scorer(est, X, sp.csr_matrix(y.shape))
    with pytest.raises(TypeError, match="must have recommend_for_history.*got NoFoldIn"):
        scorer(NoFoldIn().fit(X), X, y)
    with pytest.raises(TypeError, match="got NoFoldIn"):
        scorer(Pipeline([("id", FunctionTransformer()), ("m", NoFoldIn())]).fit(X), X, y)


def test_repr():
    assert repr(make_ranking_scorer("mrr", k=20)) == "make_ranking_scorer('mrr', k=20)"


def test_real_estimator_matches_reference():
    X_in, y = _data(n_users=60, n_items=30)
    est = DSLMatrixFactorization(n_components=8, density=0.5, max_iter=3, random_state=0,
                                 n_threads=1).fit(X_in)
    for metric in ("ndcg", "recall"):
        got = make_ranking_scorer(metric, 5)(est, X_in + y, y)
        assert got == pytest.approx(_reference(est, X_in + y, y, metric, 5), rel=1e-12)
