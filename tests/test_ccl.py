"""DSL-MF with loss="ccl": kernel gradients, growth, budget, reproducibility, fold-in, input."""

import numpy as np
import pytest
import scipy.sparse as sp
from test_softmax import (  # noqa: E402
    D,
    _check_fd,
    _planted,
    _read_gradients,
    _setup,
    check_fold_in,
    check_save_load,
)

from sparse_rec import DSLMatrixFactorization
from sparse_rec._base import TrainData
from sparse_rec._kernels import _ccl, _softmax
from sparse_rec._table import SparseEmbeddingTable
from sparse_rec.backends.cpu_softmax import CCL_ROW_NORM, CCLEngine, proposal
from sparse_rec.datasets import make_interactions

N_NEG, MARGIN, WEIGHT, REG = 7, 0.1, 3.0, 0.01


def _engine(data, users, items, margin=MARGIN, grow_samples=None):
    return CCLEngine(data, users, items, None, learning_rate=0.05, alpha=REG,
                     n_negatives=N_NEG, margin=margin, negative_weight=WEIGHT, batch=4,
                     grow_samples=grow_samples)


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return a @ b / (na * nb)


def _user_loss(P, Q, u, hist, cs, neg, margin):
    """NumPy CCL of user ``u``'s positives against the shared negatives ``neg`` (no hits)."""
    pos = sum(c * (1 - _cos(P[u], Q[i])) for i, c in zip(hist, cs, strict=True))
    hinge = sum(max(0.0, _cos(P[u], Q[j]) - margin) for j in neg)
    return pos + sum(cs) * WEIGHT / N_NEG * hinge


def test_epoch_gradient_matches_finite_differences():
    # One user in one batch: every touched row steps once, from the
    # pre-step weights (the engine made the rows unit first).
    X, data, users, items = _setup(seed=3)
    eng = _engine(data, users, items, margin=0.0)
    neg = np.empty(N_NEG, np.int64)
    u = 4
    hist = X.indices[X.indptr[u]:X.indptr[u + 1]].tolist()
    for key in map(np.uint64, range(100, 300)):
        _softmax.draw_negatives_host(key, N_NEG, eng.cdf, neg)
        if not set(neg.tolist()) & set(hist) and len(set(neg.tolist())) < N_NEG:
            break  # no hit, and one negative drawn twice (a run steps once)
    assert not set(neg.tolist()) & set(hist)
    assert len(set(neg.tolist())) < N_NEG
    P0 = users.to_csr().toarray().astype(np.float64)
    Q0 = items.to_csr().toarray().astype(np.float64)
    touched = sorted({*hist, *neg.tolist()})
    cs = data.x_weight[data.x_indptr[u]:data.x_indptr[u + 1]].astype(np.float64)
    active = sum(_cos(P0[u], Q0[j]) > eng.margin for j in neg)
    assert 0 < active < N_NEG  # both sides of the hinge are exercised

    def f(P, Q):
        reg = (P[u] ** 2).sum() + sum((Q[j] ** 2).sum() for j in touched)
        return _user_loss(P, Q, u, hist, cs, neg, eng.margin) + 0.5 * REG * reg

    w_u, w_i = users.weights.copy(), items.weights.copy()
    got = _ccl.ccl_users_serial(
        np.array([u], np.int64), 1, N_NEG, key, *eng.work, data.x_indptr, data.x_indices,
        data.x_weight, data.f_indptr, data.f_indices, users.indptr, users.indices,
        users.values_buf, items.indptr, items.indices, items.values_buf, eng.cdf,
        eng.zero, eng.margin, eng.neg_weight, eng.lr, eng.reg)
    np.testing.assert_allclose(got, _user_loss(P0, Q0, u, hist, cs, neg, eng.margin),
                               rtol=1e-5)
    gu = _read_gradients(users, w_u, [u])
    gi = _read_gradients(items, w_i, touched)
    assert len(gu) + len(gi) > 10
    _check_fd(lambda P: f(P, Q0), P0, gu)
    _check_fd(lambda Q: f(P0, Q), Q0, gi)
    # Rows the batch did not touch keep their weights.
    for j in set(range(18)) - set(touched):
        sl = slice(items.indptr[j], items.indptr[j + 1])
        assert np.array_equal(items.weights[sl], w_i[sl])


def _expected_loss(P, Q, X, data, q):
    """The loss in expectation over the negatives' draws: ``w q_j`` per pair outside X."""
    W = sp.csr_matrix((data.x_weight, data.x_indices, data.x_indptr), shape=X.shape).toarray()
    F = X.toarray() > 0
    Pn = P / np.where(np.linalg.norm(P, axis=1) > 0, np.linalg.norm(P, axis=1), 1)[:, None]
    Qn = Q / np.where(np.linalg.norm(Q, axis=1) > 0, np.linalg.norm(Q, axis=1), 1)[:, None]
    C = Pn @ Qn.T
    pos = (W * (1 - C) * F).sum()
    hinge = np.maximum(C - MARGIN, 0) * ~F
    return pos + (W.sum(axis=1)[:, None] * WEIGHT * q[None, :] * hinge).sum()


@pytest.mark.parametrize("side", [0, 1])
def test_growth_scores_are_the_exact_expected_gradient(side):
    # At active and inactive coordinates alike, users and items, over every
    # pair (no sampling), in blocks smaller than the tables.
    from sparse_rec.backends import cpu_softmax

    X, data, users, items = _setup(seed=1 + side)
    eng = _engine(data, users, items)  # rows are unit from here on
    P0 = users.to_csr().toarray().astype(np.float64)
    Q0 = items.to_csr().toarray().astype(np.float64)
    tab = (users, items)[side]
    G = np.empty((tab.n_rows, D), np.float32)
    old = cpu_softmax._CCL_BLOCK
    cpu_softmax._CCL_BLOCK = (4, 5)
    try:
        fill = eng.grow_fns(np.uint64(7))[side]
        fill(0, 3, G[0:3])
        fill(3, tab.n_rows, G[3:])
    finally:
        cpu_softmax._CCL_BLOCK = old
    M0 = (P0, Q0)[side]

    def f(M):
        return _expected_loss(M, Q0, X, data, eng.q) if side == 0 else \
            _expected_loss(P0, M, X, data, eng.q)

    _check_fd(f, M0, {(r, k): G[r, k] for r in range(tab.n_rows) for k in range(D)})


def _growth(eng, key):
    """Both tables' growth scores (dense, users then items) at ``key``."""
    out = []
    for tab, fill in zip((eng.users, eng.items), eng.grow_fns(np.uint64(key)), strict=True):
        G = np.empty((tab.n_rows, D), np.float32)
        fill(0, tab.n_rows, G)
        out.append(G.astype(np.float64))
    return np.concatenate([g.ravel() for g in out])


@pytest.mark.parametrize("popular", [False, True])
def test_sampled_growth_is_unbiased_for_the_exact_scores(popular):
    # The mean of the sampled scores over many keys matches the exact
    # expected gradient at every coordinate of both tables, within a few
    # standard errors; a wrong importance weight (users drawn by weight,
    # items from a non-uniform proposal) moves the mean by a factor.
    X, data, users, items = _setup(seed=8)
    eng = _engine(data, users, items)
    if popular:  # a proposal far from uniform: q(j) ~ (count + 1) ** 2
        eng.cdf, _ = proposal(np.diff(data.xt_indptr), N_NEG, 2.0)
        eng.q = np.diff(np.concatenate([[0.0], eng.cdf]))
    exact = _growth(eng, 0)
    eng.neg_weight = 0.0
    positive = _growth(eng, 0)  # the exact positive part alone
    eng.neg_weight = WEIGHT
    eng.grow_samples = 12
    draws = np.stack([_growth(eng, key) for key in range(1, 801)])
    mean, se = draws.mean(axis=0), draws.std(axis=0) / np.sqrt(len(draws))
    assert (se > 0).sum() > 0.5 * exact.size  # most scores are estimated, not exact
    assert (np.abs(mean - exact) / np.maximum(se, 1e-9)).max() < 5.0
    # The test has the power to see a negative part off by a quarter.
    wrong = positive + 1.25 * (exact - positive)
    assert (np.abs(mean - wrong) / np.maximum(se, 1e-9)).max() > 5.0


def test_sampled_growth_ranks_the_coordinates_as_the_exact_scores():
    # One draw, fewer than either side's rows (300 users, 200 items): the
    # top tenth of |g| (what growth picks from) overlaps the exact top tenth
    # far above chance (0.1), more so with more draws, and never worse
    # than with a quarter of them.
    X = make_interactions(300, 200, 4000, random_state=3).tocsr().astype(np.float32)
    data = TrainData.from_matrix(X)
    users = SparseEmbeddingTable.random(300, D, 300 * D // 2, scale=0.8, seed=1)
    items = SparseEmbeddingTable.random(200, D, 200 * D // 2, scale=0.8, seed=2)
    eng = _engine(data, users, items)
    exact = np.abs(_growth(eng, 0))
    k = exact.size // 10
    top = set(np.argsort(-exact)[:k])

    def overlap(m, key):
        eng.grow_samples = m
        return len(top & set(np.argsort(-np.abs(_growth(eng, key)))[:k])) / k

    for key in (5, 6):
        few, many = overlap(36, key), overlap(144, key)
        assert many >= 0.5 and many > few, (few, many)


def test_rows_have_their_fixed_norms_after_every_epoch():
    # Users at CCL_ROW_NORM; items at that times (count + 1) ** e over its mean.
    from sparse_rec.backends.cpu_softmax import CCL_ITEM_NORM_EXPONENT

    X, data, users, items = _setup(seed=5)
    eng = _engine(data, users, items)
    s = (np.diff(data.xt_indptr) + 1.0) ** CCL_ITEM_NORM_EXPONENT
    want = (np.full(25, CCL_ROW_NORM), CCL_ROW_NORM * s / s.mean())
    for key in (1, 2):
        eng.epoch(np.uint64(key))
        for tab, w in zip((users, items), want, strict=True):
            norms = np.linalg.norm(tab.to_csr().toarray(), axis=1)
            np.testing.assert_allclose(norms[norms > 0], w[norms > 0], rtol=1e-5)


def _fit(X, **kw):
    params = {"n_components": 8, "density": 0.25, "loss": "ccl", "max_iter": 6,
              "update_interval": 2, "random_state": 0, "n_threads": 1, **kw}
    return DSLMatrixFactorization(**params).fit(X)


def test_budget_exact_after_every_epoch_and_loss_falls():
    X = make_interactions(120, 80, 1500, random_state=1)
    est = _fit(X, max_iter=10)
    budget = round(0.25 * 8 * 200)
    assert est.n_active_ == budget
    assert all(h["nnz"] == budget for h in est.history_)
    assert any(h["grown"] > 0 for h in est.history_)
    assert est.history_[-1]["loss"] < est.history_[0]["loss"]
    assert np.all(est.item_bias_ == 0)


def test_one_thread_is_bitwise_reproducible():
    X = make_interactions(120, 80, 1500, random_state=2)
    a, b = _fit(X), _fit(X)
    for t in ("user_table_", "item_table_"):
        assert np.array_equal(getattr(a, t).weights, getattr(b, t).weights)
        assert np.array_equal(getattr(a, t).indices, getattr(b, t).indices)
    c = _fit(X, random_state=1)
    assert not np.array_equal(a.user_table_.weights, c.user_table_.weights)


def test_two_threads_train_as_well():
    X = make_interactions(150, 90, 2500, random_state=3)
    one, two = _fit(X, max_iter=10), _fit(X, max_iter=10, n_threads=2)
    assert two.history_[-1]["loss"] < two.history_[0]["loss"]
    assert two.history_[-1]["loss"] < 1.2 * one.history_[-1]["loss"]


def test_known_answer_ranks_the_planted_item_first():
    X = _planted()
    est = _fit(X, max_iter=30, update_interval=5, density=0.5, n_components=4,
               n_negatives=8)
    assert est.recommend([0], n=3)[0][0, 0] == 9
    assert est.recommend_for_history(X[:1], n=3)[0][0, 0] == 9


def test_fold_in_keeps_the_per_user_budget_and_is_row_independent():
    X = make_interactions(120, 80, 1500, random_state=4).tocsr()
    check_fold_in(_fit(X), X[:6])


def test_partial_fit_items_says_it_is_not_available():
    X = make_interactions(60, 40, 600, random_state=5)
    est = _fit(X, max_iter=2)
    with pytest.raises(NotImplementedError, match="loss='ccl'"):
        est.partial_fit_items(np.arange(3), X[:, :3])


def test_save_load_roundtrip(tmp_path):
    X = make_interactions(60, 40, 600, random_state=6)
    est = _fit(X, margin=0.3, negative_weight=20.0)
    back = check_save_load(est, X[:3], tmp_path / "m.npz")
    assert back.loss == "ccl" and back.margin == 0.3 and back.negative_weight == 20.0


@pytest.mark.parametrize("params, match", [
    ({"margin": 1.0}, r"margin must be in \(-1, 1\)"),
    ({"margin": -1.5}, r"margin must be in \(-1, 1\)"),
    ({"margin": "x"}, "margin"),
    ({"negative_weight": 0.0}, "negative_weight"),
    ({"negative_weight": -3.0}, "negative_weight"),
    ({"n_negatives": 0}, "n_negatives"),
    # backend="cuda" has an engine (tests/test_cuda_engines.py); others are refused.
    ({"backend": "tpu"}, r"backend must be one of \('cpu', 'cuda'\); got 'tpu'"),
])
def test_bad_parameters(params, match):
    X = make_interactions(30, 20, 200, random_state=0)
    with pytest.raises(ValueError, match=match):
        _fit(X, **params)


def test_defaults_resolve_per_loss():
    est = DSLMatrixFactorization(loss="ccl")
    assert est._resolved("max_iter") == 80 and est._resolved("update_interval") == 8
    X = make_interactions(50, 30, 400, random_state=0)
    fitted = _fit(X, n_negatives=None, max_iter=2)
    assert fitted._n_negatives() == 29  # all other items when there are fewer than 800


def test_default_negatives_follow_the_catalogue():
    # 8% of the items within [800, 4096], never more than the other items.
    from sparse_rec._mf.scoring import default_negatives

    got = [default_negatives(n, "ccl") for n in (30, 1682, 9724, 20000, 40981, 10 ** 6)]
    assert got == [29, 800, 800, 1600, 3278, 4096]
    assert default_negatives(40981, "softmax") == 256


def test_batch_negatives_are_the_softmax_kernels_sorted_draws():
    # CCL's heapsort gives exactly the softmax kernels' (insertion-sorted) draws.
    cdf = np.cumsum(np.full(500, 1 / 500))
    for n_neg, key in ((1, 3), (7, 4), (800, 5), (3278, 6)):
        want = np.empty(n_neg, np.int64)
        _softmax.draw_negatives_host(np.uint64(key), n_neg, cdf, want)
        neg = np.empty(n_neg, np.int64)
        QT = np.zeros((2, n_neg), np.float32)
        empty = np.zeros(501, np.int64)
        _ccl.start_batch_host(np.uint64(key), n_neg, cdf, neg, QT, empty)
        assert np.array_equal(neg, want) and np.all(np.diff(neg) >= 0)
