"""DSL-MF with loss="ials": exact row solves, curvature scores, budget, fold-in, files."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import sparse_rec._io as io
from sparse_rec import DSLMatrixFactorization, load
from sparse_rec._base import TrainData
from sparse_rec._kernels import _ials
from sparse_rec._table import SparseEmbeddingTable
from sparse_rec.backends.cpu import IALSEngine
from sparse_rec.datasets import make_interactions
from sparse_rec.metrics import make_ranking_scorer
from sparse_rec.model_selection import UserKFold, fold_in_split

D = 6
LAM, W0 = 0.01, 0.3


def _setup(density=0.5, exclude=None, seed=0):
    X = make_interactions(30, 20, 200, random_state=seed)
    X = X.tocsr().astype(np.float32)
    X.data = np.random.default_rng(seed).uniform(0.5, 3.0, X.nnz).astype(np.float32)
    data = TrainData.from_matrix(X, exclude)
    users = SparseEmbeddingTable.random(30, D, int(density * 30 * D), n_slots=1, scale=0.5,
                                        seed=seed + 1)
    items = SparseEmbeddingTable.random(20, D, int(density * 20 * D), n_slots=1, scale=0.5,
                                        seed=seed + 2)
    return X, data, users, items


def _q(counts, expo):
    """Items' unobserved-weight factors: max(n_i, 1)**expo over their mean."""
    f = np.maximum(counts, 1.0) ** expo
    return f / f.mean()


def _conf(data, shape, exclude=None, expo=0.0):
    """Dense confidence matrix: observed pairs their weight, excluded pairs 0, others w0 q_i."""
    counts = np.bincount(data.x_indices, minlength=shape[1]).astype(np.float64)
    C = np.tile(W0 * _q(counts, expo), (shape[0], 1))
    Y = np.zeros(shape)
    rows = np.repeat(np.arange(shape[0]), np.diff(data.x_indptr))
    if exclude is not None:
        C[exclude.toarray() > 0] = 0.0
    C[rows, data.x_indices] = data.x_weight
    Y[rows, data.x_indices] = 1.0
    return C, Y


def _row_loss(w, H, c, y, lam_u):
    return float(np.sum(c * (H @ w - y) ** 2) + lam_u * w @ w)


@pytest.mark.parametrize("expo", [0.0, 0.7])
def test_row_solve_matches_weighted_lstsq(expo):
    X, data, users, items = _setup()
    H = items.to_csr().toarray().astype(np.float64)
    C, Y = _conf(data, X.shape, expo=expo)
    q = _q(np.bincount(data.x_indices, minlength=X.shape[1]).astype(np.float64), expo)
    engine = IALSEngine(data, users, items, None, regularization=LAM, unobserved_weight=W0,
                        popularity_exponent=expo)
    G = _ials.gram(items.indptr, items.indices, items.values_buf, D, q)
    np.testing.assert_allclose(G, H.T @ (q[:, None] * H), rtol=1e-12, atol=1e-12)
    loss, reg = engine._solve(users, engine.user_rows, items, "user")
    W = users.to_csr().toarray()
    for u in range(X.shape[0]):
        S = users.indices[users.indptr[u]:users.indptr[u + 1]].astype(np.int64)
        c, y = C[u], Y[u]
        # Ridge scaled by the row's weight: its confidences plus w0 q_i per item.
        lam_u = LAM * (np.sum(c[y > 0]) + W0 * q.sum())
        # Weighted ridge as one least-squares system.
        A = np.vstack([np.sqrt(c)[:, None] * H[:, S], np.sqrt(lam_u) * np.eye(len(S))])
        rhs = np.concatenate([np.sqrt(c) * y, np.zeros(len(S))])
        ref = np.linalg.lstsq(A, rhs, rcond=None)[0]
        np.testing.assert_allclose(W[u, S], ref, rtol=2e-4, atol=1e-5)
        w = np.zeros(D)
        w[S] = ref
        assert loss[u] == pytest.approx(_row_loss(w, H, c, y, lam_u), rel=1e-6, abs=1e-9)
        assert reg[u] == pytest.approx(lam_u * ref @ ref, rel=1e-6, abs=1e-12)
    # The item rows: item i's unobserved pairs weigh w0 q_i each.
    engine._solve(items, engine.item_rows, users, "item")
    P = users.to_csr().toarray().astype(np.float64)
    V = items.to_csr().toarray()
    for i in range(X.shape[1]):
        S = items.indices[items.indptr[i]:items.indptr[i + 1]].astype(np.int64)
        c, y = C[:, i], Y[:, i]
        lam_i = LAM * (np.sum(c[y > 0]) + W0 * q[i] * X.shape[0])
        A = P[:, S].T @ (c[:, None] * P[:, S]) + lam_i * np.eye(len(S))
        ref = np.linalg.solve(A, P[:, S].T @ (c * y))
        np.testing.assert_allclose(V[i, S], ref, rtol=2e-4, atol=1e-5)


def test_excluded_pairs_weigh_nothing():
    X, _, _, _ = _setup()
    ex = sp.random(30, 20, density=0.1, random_state=np.random.default_rng(4), format="csr")
    ex.data[:] = 1
    ex = (ex - ex.multiply(X > 0)).tocsr()
    ex.eliminate_zeros()
    _, data, users, items = _setup(exclude=ex)
    H = items.to_csr().toarray().astype(np.float64)
    C, Y = _conf(data, X.shape, exclude=ex)
    engine = IALSEngine(data, users, items, None, regularization=LAM, unobserved_weight=W0)
    engine._solve(users, engine.user_rows, items, "user")
    W = users.to_csr().toarray()
    for u in range(X.shape[0]):
        S = users.indices[users.indptr[u]:users.indptr[u + 1]].astype(np.int64)
        c, y = C[u], Y[u]
        lam_u = LAM * (np.sum(c[y > 0]) + W0 * X.shape[1])
        A = H[:, S].T @ (c[:, None] * H[:, S]) + lam_u * np.eye(len(S))
        ref = np.linalg.solve(A, H[:, S].T @ (c * y))
        np.testing.assert_allclose(W[u, S], ref, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("expo", [0.0, -0.5])
def test_growth_and_prune_scores_match_finite_differences(expo):
    X, data, users, items = _setup(density=0.5)
    H = items.to_csr().toarray().astype(np.float64)
    C, Y = _conf(data, X.shape, expo=expo)
    q = _q(np.bincount(data.x_indices, minlength=X.shape[1]).astype(np.float64), expo)
    engine = IALSEngine(data, users, items, None, regularization=LAM, unobserved_weight=W0,
                        popularity_exponent=expo)
    fill_users = engine.grow_fns(np.uint64(0))[0]
    out = np.zeros((X.shape[0], D), np.float32)
    fill_users(0, X.shape[0], out)
    prune = engine.prune_scores()[0]
    W = users.to_csr().toarray().astype(np.float64)
    eps = 1e-3
    for u in range(X.shape[0]):
        c, y = C[u], Y[u]
        lam_u = LAM * (np.sum(c[y > 0]) + W0 * q.sum())

        def f(w, c=c, y=y, lam_u=lam_u):
            return _row_loss(w, H, c, y, lam_u)

        for j in range(D):
            e = np.zeros(D)
            e[j] = eps
            g = (f(W[u] + e) - f(W[u] - e)) / (2 * eps)  # exact for a quadratic
            h = (f(W[u] + e) - 2 * f(W[u]) + f(W[u] - e)) / eps**2
            # Kernel scores use half the gradient and curvature: g/2 / sqrt(h/2).
            assert out[u, j] == pytest.approx((g / 2) / np.sqrt(h / 2), rel=1e-3, abs=1e-4)
        for p in range(users.indptr[u], users.indptr[u + 1]):
            j = users.indices[p]
            e = np.zeros(D)
            e[j] = eps
            h = (f(W[u] + e) - 2 * f(W[u]) + f(W[u] - e)) / eps**2
            assert prune[p] == pytest.approx(W[u, j] ** 2 * h / 2, rel=1e-3, abs=1e-6)


def _fit(X, **kw):
    params = dict(n_components=8, density=0.25, max_iter=6, update_interval=2, loss="ials",
                  random_state=0, n_threads=1)
    return DSLMatrixFactorization(**{**params, **kw}).fit(X)


def test_budget_exact_after_every_epoch_and_loss_falls():
    X = make_interactions(120, 80, 1500, random_state=1)
    est = _fit(X, max_iter=8)
    budget = round(0.25 * 8 * (120 + 80))
    assert est.n_active_ == budget
    assert [h["nnz"] for h in est.history_] == [budget] * 8
    assert sum(h["pruned"] for h in est.history_) > 0
    assert all(h["pruned"] == h["grown"] for h in est.history_)
    # Between updates an epoch of exact alternating solves never raises the objective.
    losses = [h["loss"] for h in est.history_]
    for t in range(1, 8):
        if est.history_[t - 1]["pruned"] == 0:
            assert losses[t] <= losses[t - 1] * (1 + 1e-6)
    est.user_table_.check()
    est.item_table_.check()


def test_thread_count_does_not_change_results():
    X = make_interactions(120, 80, 1500, random_state=1)
    a, b = _fit(X, n_threads=1), _fit(X, n_threads=2)
    for name in ("user_table_", "item_table_"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert np.array_equal(ta.indptr, tb.indptr) and np.array_equal(ta.indices, tb.indices)
        assert np.array_equal(ta.weights, tb.weights)


def test_factor_only_ranking_is_the_ranking():
    X = make_interactions(60, 40, 700, random_state=2)
    est = _fit(X)
    assert not est.item_bias_.any()
    S = (est.user_factors_ @ est.item_factors_.T).toarray()
    S[X.toarray() > 0] = -np.inf
    ids, _ = est.recommend(np.arange(60), n=5)
    ref = np.argsort(-S, axis=1, kind="stable")[:, :5]
    got_scores = np.take_along_axis(S, ids, axis=1)
    ref_scores = np.take_along_axis(S, ref, axis=1)
    np.testing.assert_allclose(got_scores, ref_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("expo", [None, 0.5])
def test_fold_in_is_the_exact_row_solve_on_the_budget(expo):
    X = make_interactions(60, 40, 700, random_state=3)
    est = _fit(X, popularity_exponent=expo)
    # Dense data (29%): the default weighs unobserved pairs alike.
    q = _q(np.diff(X.tocsc().indptr).astype(np.float64), 0.0 if expo is None else expo)
    hist = X[:5].tocsr().astype(np.float32)
    hist.data[:] = 1.0
    side = est._fold_in(hist)
    k_keep = int(round(est.user_table_.nnz / 60))
    assert np.all(side.row_nnz() == min(8, k_keep))
    H = est.item_factors_.toarray().astype(np.float64)
    w0 = est._unobserved_weight()
    assert w0 == pytest.approx(10 * X.nnz / (60 * 40))
    for r in range(5):
        S = side.indices[side.indptr[r]:side.indptr[r + 1]].astype(np.int64)
        y = hist[r].toarray().ravel() > 0
        c = np.where(y, 1.0, w0 * q)
        lam_u = est._regularization() * (y.sum() + w0 * 40)
        A = H[:, S].T @ (c[:, None] * H[:, S]) + lam_u * np.eye(len(S))
        ref = np.linalg.solve(A, H[:, S].T @ (c * y))
        np.testing.assert_allclose(side.weights[side.indptr[r]:side.indptr[r + 1]], ref,
                                   rtol=2e-4, atol=1e-5)
    ids, _ = est.recommend_for_history(hist, n=5)
    assert ids.shape == (5, 5)
    # A dense model folds in with the full ridge solution.
    dense = _fit(X, density=1.0)
    side = dense._fold_in(hist)
    assert np.all(side.row_nnz() == 8)


@pytest.mark.parametrize("expo", [0.0, 0.5])
def test_partial_fit_items_is_the_exact_item_solve_on_the_budget(expo):
    X = make_interactions(60, 40, 700, random_state=3)
    est = _fit(X, popularity_exponent=expo)
    counts = np.maximum(np.diff(X.tocsc().indptr), 1).astype(np.float64) ** expo
    P = est.user_factors_.toarray().astype(np.float64)
    w0, lam = est._unobserved_weight(), est._regularization()
    k_keep = int(round(est.item_table_.nnz / 40))
    cols = sp.csr_matrix(X[:, [3, 7]], dtype=np.float32)
    cols.data[:] = 1.0
    est.partial_fit_items([40, 41], cols)
    assert est.n_items_ == 42 and np.all(est.item_bias_ == 0)
    tab = est.item_table_
    for r, item in enumerate([40, 41]):
        S = tab.indices[tab.indptr[item]:tab.indptr[item + 1]].astype(np.int64)
        assert len(S) == min(8, k_keep)
        y = cols[:, [r]].toarray().ravel() > 0
        # The new item's factor: its count to the exponent over the fitted items' mean.
        q_i = max(y.sum(), 1) ** expo / counts.mean()
        c = np.where(y, 1.0, w0 * q_i)
        lam_i = lam * (y.sum() + w0 * q_i * 60)
        A = P[:, S].T @ (c[:, None] * P[:, S]) + lam_i * np.eye(len(S))
        ref = np.linalg.solve(A, P[:, S].T @ (c * y))
        np.testing.assert_allclose(tab.weights[tab.indptr[item]:tab.indptr[item + 1]], ref,
                                   rtol=2e-4, atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    X = make_interactions(60, 40, 700, random_state=4)
    est = _fit(X, unobserved_weight=0.2, regularization=0.003)
    path = est.save(tmp_path / "m.npz")
    back = load(path)
    assert back.loss == "ials" and back.unobserved_weight == 0.2
    assert back.regularization == 0.003
    for a, b in ((est.recommend(np.arange(10), n=5), back.recommend(np.arange(10), n=5)),
                 (est.recommend_for_history(X[:4], n=5),
                  back.recommend_for_history(X[:4], n=5))):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    from sparse_rec.serving import load_model

    served = load_model(path)
    assert np.array_equal(served.recommend_for_history(X[:4], n=5)[0],
                          est.recommend_for_history(X[:4], n=5)[0])


def test_file_without_loss_loads_as_bpr(tmp_path, monkeypatch):
    X = make_interactions(60, 40, 700, random_state=4)
    est = DSLMatrixFactorization(n_components=8, max_iter=3, random_state=0, loss="bpr",
                                 n_threads=1).fit(X)
    encode = io._encode_params

    def old_encode(params):  # a file written before the loss parameter existed
        params = {k: v for k, v in params.items()
                  if k not in ("loss", "regularization", "unobserved_weight")}
        return encode(params)

    monkeypatch.setattr(io, "_encode_params", old_encode)
    path = est.save(tmp_path / "old.npz")
    monkeypatch.undo()
    back = load(path)
    assert back.loss == "bpr"
    from sparse_rec.serving import load_model

    served = load_model(path)
    assert not hasattr(served, "loss")
    a, b = served.recommend_for_history(X[:4], n=5), est.recommend_for_history(X[:4], n=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_clone_and_grid_search_over_loss():
    R = make_interactions(80, 40, 960, random_state=0)
    X_in, y = fold_in_split(R, 0.25, random_state=0)
    est = DSLMatrixFactorization(n_components=8, max_iter=4, update_interval=2,
                                 random_state=0, n_threads=1)
    assert clone(est.set_params(loss="ials")).get_params()["loss"] == "ials"
    search = GridSearchCV(est, {"loss": ["bpr", "ials"]}, cv=UserKFold(2, random_state=0),
                          scoring=make_ranking_scorer("ndcg", k=10)).fit(X_in + y, y)
    assert search.best_params_["loss"] in ("bpr", "ials")
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


@pytest.mark.parametrize("params, match", [
    ({"loss": "mse"}, "loss must be one of"),
    ({"loss": "ials", "regularization": 0.0}, "regularization must be"),
    ({"loss": "ials", "unobserved_weight": -1.0}, "unobserved_weight must be"),
    ({"loss": "ials", "unobserved_weight": True}, "unobserved_weight must be"),
    ({"loss": "ials", "backend": "tpu"}, r"backend must be one of \('cpu', 'cuda'\); got 'tpu'"),
    ({"loss": "ials", "popularity_exponent": 2.5}, r"popularity_exponent must be in \[-2, 2\]"),
    ({"loss": "ials", "popularity_exponent": "high"}, "popularity_exponent must be"),
])
def test_bad_parameters(params, match):
    X = make_interactions(20, 10, 80, random_state=0)
    with pytest.raises(ValueError, match=match):
        DSLMatrixFactorization(n_components=4, max_iter=1, **params).fit(X)


def test_warm_start_continues():
    X = make_interactions(60, 40, 700, random_state=5)
    est = _fit(X)
    est.set_params(warm_start=True, max_iter=2)
    est.fit(X)
    assert est.n_iter_ == 8 and est.n_active_ == round(0.25 * 8 * 100)


def test_bpr_model_continued_by_ials_drops_the_bias():
    X = make_interactions(60, 40, 700, random_state=6)
    est = DSLMatrixFactorization(n_components=8, density=0.25, max_iter=3, random_state=0,
                                 loss="bpr", n_threads=1).fit(X)
    assert est.item_bias_.any()
    est.set_params(loss="ials", warm_start=True, max_iter=2, update_interval=1)
    est.fit(X)
    assert not est.item_bias_.any() and est.n_iter_ == 5


def test_score_items_agrees_with_recommend():
    X = make_interactions(60, 40, 700, random_state=2)
    est = _fit(X)
    ids, scores = est.recommend([3, 4], n=4)
    # Same float32 dot products summed in another order: as in the factor ranking test.
    np.testing.assert_allclose(est.score_items([3, 4], ids), scores, rtol=1e-5, atol=1e-6)


# --- iALS is the default; epochs and update interval resolve per loss ------------------
def _update_epochs(est):
    return [h["epoch"] for h in est.history_ if h["update_ratio"] > 0]


def test_default_is_ials_with_its_own_epochs_and_interval():
    from test_mf import blocks

    assert DSLMatrixFactorization().get_params()["loss"] == "ials"
    X, held = blocks()
    est = DSLMatrixFactorization(n_components=8, density=0.5, random_state=0,
                                 n_threads=1).fit(X)
    assert est.n_iter_ == len(est.history_) == 14
    # An update after every epoch but the last.
    assert _update_epochs(est) == list(range(1, 14))
    assert not est.item_bias_.any()
    # The default model learns the block structure (as BPR does in test_mf).
    ids, _ = est.recommend(np.arange(X.shape[0]), n=1)
    assert np.mean(ids[:, 0] == held) >= 0.9
    # None stays None in the parameters (scikit-learn's clone and get_params).
    assert est.get_params()["max_iter"] is None and est.get_params()["update_interval"] is None
    assert clone(est).get_params() == est.get_params()


def test_bpr_resolves_its_own_defaults_and_explicit_values_win():
    X = make_interactions(30, 20, 200, random_state=0)
    bpr = DSLMatrixFactorization(loss="bpr", n_components=4, density=0.5, random_state=0,
                                 n_threads=1).fit(X)
    assert bpr.n_iter_ == 100 and _update_epochs(bpr) == list(range(5, 100, 5))
    for loss in ("bpr", "ials"):
        est = DSLMatrixFactorization(loss=loss, n_components=4, density=0.5, max_iter=7,
                                     update_interval=3, random_state=0, n_threads=1).fit(X)
        assert est.n_iter_ == 7 and _update_epochs(est) == [3, 6]


def test_saved_default_model_round_trips(tmp_path):
    X = make_interactions(60, 40, 700, random_state=4)
    est = DSLMatrixFactorization(n_components=8, density=0.25, random_state=0,
                                 n_threads=1).fit(X)
    back = load(est.save(tmp_path / "default.npz"))
    assert back.get_params() == est.get_params() and back.loss == "ials"
    a, b = est.recommend(np.arange(10), n=5), back.recommend(np.arange(10), n=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # A warm start of the loaded model continues with the resolved defaults.
    back.set_params(warm_start=True).fit(X)
    assert back.n_iter_ == 2 * est.n_iter_ == 28


# --- unobserved weights by item popularity (eALS) ------------------------------------
def test_default_popularity_exponent_follows_the_density():
    dense = make_interactions(60, 40, 700, random_state=0)  # 29%: uniform
    sparse = make_interactions(2000, 1000, 6000, random_state=0)  # 0.3%
    assert _fit(dense)._popularity_exponent() == 0.0
    est = DSLMatrixFactorization(popularity_exponent=None)
    est.seen_ = sparse
    assert est._popularity_exponent() == pytest.approx(0.25 * np.log10(0.01 / 0.003))
    est.seen_ = sp.csr_matrix(([1.0], ([0], [0])), shape=(20000, 10000))  # nearly empty: the cap
    assert est._popularity_exponent() == 0.5
    assert DSLMatrixFactorization(popularity_exponent=-0.2)._popularity_exponent() == -0.2
    # Exponent 0 is today's uniform weight, bit for bit, on any data.
    a = _fit(dense)
    b = _fit(dense, popularity_exponent=0.0)
    assert np.array_equal(a.user_table_.weights, b.user_table_.weights)
    c = _fit(dense, popularity_exponent=0.5)
    assert not np.array_equal(a.user_table_.weights, c.user_table_.weights)


# --- ridge by the data's counts ---------------------------------------------------
def test_default_regularization_follows_the_counts():
    from sparse_rec._mf.scoring import default_regularization

    # m = nnz / sqrt(n_users * n_items): at or above 20 the base 0.01, below it 0.2 / m.
    assert default_regularization(20 * 100, 100, 100) == pytest.approx(0.01)
    assert default_regularization(80 * 100, 100, 100) == pytest.approx(0.01)
    assert default_regularization(5 * 200, 100, 400) == pytest.approx(0.04)
    assert default_regularization(0, 100, 400) == 0.01  # no counts to scale by
    # Thinning a data set to a quarter raises the ridge fourfold below the knee.
    full = default_regularization(40_000, 3000, 2000)
    assert default_regularization(10_000, 3000, 2000) == pytest.approx(4 * full)
    X = make_interactions(200, 100, 1000, random_state=0)  # m = 7.07
    est = _fit(X)
    assert est.regularization is None
    assert est._regularization() == pytest.approx(0.2 / (1000 / np.sqrt(200 * 100)))
    assert DSLMatrixFactorization(regularization=0.003)._regularization() == 0.003
    # The fit solves with the resolved value: the same fit with it given explicitly.
    same = _fit(X, regularization=est._regularization())
    assert np.array_equal(est.user_table_.weights, same.user_table_.weights)
    other = _fit(X, regularization=0.01)
    assert not np.array_equal(est.user_table_.weights, other.user_table_.weights)


def test_file_without_popularity_exponent_loads_uniform(tmp_path, monkeypatch):
    # Sparse enough that the default (None) would weigh by popularity.
    X = make_interactions(1000, 500, 1500, random_state=5)
    est = _fit(X, popularity_exponent=0.0)
    default = DSLMatrixFactorization()
    default.seen_ = X
    assert default._popularity_exponent() > 0.1
    encode = io._encode_params

    def old_encode(params):
        return encode({k: v for k, v in params.items() if k != "popularity_exponent"})

    monkeypatch.setattr(io, "_encode_params", old_encode)
    path = est.save(tmp_path / "old.npz")
    monkeypatch.undo()
    back = load(path)
    assert back.popularity_exponent == 0.0
    from sparse_rec.serving import load_model

    for model in (back, load_model(path)):
        a, b = model.recommend_for_history(X[:6], n=5), est.recommend_for_history(X[:6], n=5)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
