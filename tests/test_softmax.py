"""DSL-MF with loss="softmax": kernel gradients, budget, reproducibility, fold-in, files."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from sparse_rec import DSLMatrixFactorization, load
from sparse_rec._base import TrainData
from sparse_rec._kernels import _rng, _softmax
from sparse_rec._table import SparseEmbeddingTable
from sparse_rec.backends.cpu_softmax import SoftmaxEngine, proposal
from sparse_rec.datasets import make_interactions

D, N_NEG, TEMP, REG = 6, 7, 0.5, 0.01


def _setup(seed=0, density=0.6):
    X = make_interactions(25, 18, 150, random_state=seed).tocsr().astype(np.float32)
    X.data = np.random.default_rng(seed).uniform(0.5, 2.0, X.nnz).astype(np.float32)
    data = TrainData.from_matrix(X)
    users = SparseEmbeddingTable.random(25, D, int(density * 25 * D), scale=0.8, seed=seed + 1)
    items = SparseEmbeddingTable.random(18, D, int(density * 18 * D), scale=0.8, seed=seed + 2)
    return X, data, users, items


def _engine(data, users, items, batch=4, per_user=True):
    return SoftmaxEngine(data, users, items, None, learning_rate=0.05, alpha=REG,
                         n_negatives=N_NEG, temperature=TEMP, batch=batch, per_user=per_user)


def _read_gradients(tab, w0, rows):
    """Gradients of the rows' active weights after one Adagrad step from zero state.

    The state slot then holds grad**2 and the step's sign is the gradient's.
    """
    out = {}
    for r in rows:
        for p in range(tab.indptr[r], tab.indptr[r + 1]):
            out[r, int(tab.indices[p])] = (np.sign(w0[p] - tab.weights[p])
                                           * np.sqrt(tab.values_buf[p, 1]))
    return out


def _check_fd(f, M0, grads, eps=1e-5):
    for (r, k), g in grads.items():
        Mp, Mm = M0.copy(), M0.copy()
        Mp[r, k] += eps
        Mm[r, k] -= eps
        np.testing.assert_allclose(g, (f(Mp) - f(Mm)) / (2 * eps), rtol=2e-3, atol=2e-5)


def _sample_loss(P, Q, u, i, c, neg, logq, forbidden):
    """NumPy sampled-softmax loss of one positive against the negatives ``neg``."""
    s = [P[u] @ Q[i] / TEMP] + [P[u] @ Q[j] / TEMP - logq[j] for j in neg
                                if j != i and j not in forbidden]
    s = np.array(s)
    m = s.max()
    return c * (np.log(np.exp(s - m).sum()) + m - s[0])


def test_epoch_gradient_matches_finite_differences():
    # One positive in one batch: Adagrad from a zero accumulator stores
    # grad**2 in the state slot, and the step's sign gives the gradient's.
    X, data, users, items = _setup()
    eng = _engine(data, users, items, batch=1, per_user=False)
    eng.n_samples = 1
    neg = np.empty(N_NEG, np.int64)
    for key in map(np.uint64, range(100, 200)):
        # A key whose negatives miss the positive (the positive's row then
        # steps once, which the read-out below needs).
        pos = int(_rng.randint(_rng.draw(key, np.uint64(0), np.uint64(0)), data.nnz))
        u, i, c = int(data.x_rows[pos]), int(data.x_indices[pos]), float(data.x_weight[pos])
        _softmax.draw_negatives_host(key, N_NEG, eng.cdf, neg)
        if i not in neg:
            break
    assert i not in neg
    forbidden = set(X.indices[X.indptr[u]:X.indptr[u + 1]].tolist())
    P0 = users.to_csr().toarray().astype(np.float64)
    Q0 = items.to_csr().toarray().astype(np.float64)
    touched_items = sorted({i, *neg.tolist()})

    def f(P, Q):
        reg = (P[u] ** 2).sum() + sum((Q[j] ** 2).sum() for j in touched_items)
        return _sample_loss(P, Q, u, i, c, neg, eng.logq, forbidden) + 0.5 * REG * reg

    w_u, w_i = users.weights.copy(), items.weights.copy()
    loss = eng.epoch(key)
    np.testing.assert_allclose(loss, _sample_loss(P0, Q0, u, i, c, neg, eng.logq, forbidden),
                               rtol=1e-5)
    eps = 1e-5
    checked = 0
    for tab, w0, M0, rows in ((users, w_u, P0, [u]), (items, w_i, Q0, touched_items)):
        for r in rows:
            for p in range(tab.indptr[r], tab.indptr[r + 1]):
                k = tab.indices[p]
                grad = np.sign(w0[p] - tab.weights[p]) * np.sqrt(tab.values_buf[p, 1])
                Mp, Mm = M0.copy(), M0.copy()
                Mp[r, k] += eps
                Mm[r, k] -= eps
                if tab is users:
                    fd = (f(Mp, Q0) - f(Mm, Q0)) / (2 * eps)
                else:
                    fd = (f(P0, Mp) - f(P0, Mm)) / (2 * eps)
                np.testing.assert_allclose(grad, fd, rtol=2e-3, atol=2e-5)
                checked += 1
    assert checked > 10
    # Rows the batch did not touch keep their weights.
    untouched = [j for j in range(18) if j not in touched_items]
    for j in untouched:
        sl = slice(items.indptr[j], items.indptr[j + 1])
        assert np.array_equal(items.weights[sl], w_i[sl])


def test_user_batch_epoch_gradient_matches_finite_differences():
    # The default epoch: a user takes all its positives at once against the
    # batch's negatives; one user in one batch, every touched row steps once.
    X, data, users, items = _setup(seed=3)
    eng = _engine(data, users, items)
    neg = np.empty(N_NEG, np.int64)
    u = 4
    hist = X.indices[X.indptr[u]:X.indptr[u + 1]].tolist()
    for key in map(np.uint64, range(100, 300)):
        _softmax.draw_negatives_host(key, N_NEG, eng.cdf, neg)
        if not set(neg.tolist()) & set(hist):
            break
    assert not set(neg.tolist()) & set(hist)
    P0 = users.to_csr().toarray().astype(np.float64)
    Q0 = items.to_csr().toarray().astype(np.float64)
    touched = sorted({*hist, *neg.tolist()})
    cs = data.x_weight[data.x_indptr[u]:data.x_indptr[u + 1]].astype(np.float64)

    def loss(P, Q):
        return sum(_sample_loss(P, Q, u, i, c, neg, eng.logq, set(hist) - {i})
                   for i, c in zip(hist, cs, strict=True))

    def f(P, Q):
        reg = (P[u] ** 2).sum() + sum((Q[j] ** 2).sum() for j in touched)
        return loss(P, Q) + 0.5 * REG * reg

    w_u, w_i = users.weights.copy(), items.weights.copy()
    got = _softmax.softmax_users_serial(
        np.array([u], np.int64), 1, N_NEG, key, *eng.work, data.x_indptr, data.x_indices,
        data.x_weight, data.f_indptr, data.f_indices, users.indptr, users.indices,
        users.values_buf, items.indptr, items.indices, items.values_buf, eng.cdf, eng.logq,
        eng.inv_t, eng.lr, eng.reg)
    np.testing.assert_allclose(got, loss(P0, Q0), rtol=1e-5)
    gu = _read_gradients(users, w_u, [u])
    gi = _read_gradients(items, w_i, touched)
    assert len(gu) + len(gi) > 10
    _check_fd(lambda P: f(P, Q0), P0, gu)
    _check_fd(lambda Q: f(P0, Q), Q0, gi)


def _prep(eng, key):
    p = eng._prepare(np.uint64(key))
    return p["neg"], p["LN"], p["A"]


def test_user_growth_gradient_matches_finite_differences():
    # Users: the exact full-data gradient at the step's shared negatives,
    # at active and inactive coordinates alike.
    X, data, users, items = _setup(seed=1)
    eng = _engine(data, users, items)
    neg, _, _ = _prep(eng, 7)
    P0 = users.to_csr().toarray().astype(np.float64)
    Q0 = items.to_csr().toarray().astype(np.float64)
    W = TrainData.from_matrix(X)

    def f(P):
        total = 0.0
        for u in range(25):
            hist = set(W.x_indices[W.x_indptr[u]:W.x_indptr[u + 1]].tolist())
            for p in range(W.x_indptr[u], W.x_indptr[u + 1]):
                i = int(W.x_indices[p])
                total += _sample_loss(P, Q0, u, i, float(W.x_weight[p]), neg, eng.logq,
                                      hist - {i})
        return total

    G = np.empty((25, D), np.float32)
    eng.grow_fns(np.uint64(7))[0](0, 25, G)
    eps = 1e-5
    for u in (0, 3, 11, 24):
        for k in range(D):
            Pp, Pm = P0.copy(), P0.copy()
            Pp[u, k] += eps
            Pm[u, k] -= eps
            np.testing.assert_allclose(G[u, k], (f(Pp) - f(Pm)) / (2 * eps), rtol=2e-3,
                                       atol=2e-5)


def test_item_growth_gradient_matches_finite_differences_of_its_expectation():
    # Items: exact over the item's own users; as a negative, the expected
    # term A_u exp(<p_u, q_c> / T) of every other user (all users: the
    # sample covers them below _GROW_ITEM_USERS), LN and A held fixed.
    X, data, users, items = _setup(seed=2)
    eng = _engine(data, users, items)
    _, LN, A = _prep(eng, 9)
    P0 = users.to_csr().toarray().astype(np.float64)
    Q0 = items.to_csr().toarray().astype(np.float64)
    F = X.toarray() > 0
    W = sp.csr_matrix((data.x_weight, data.x_indices, data.x_indptr), shape=X.shape).toarray()

    def f(q, c):
        z = P0 @ q / TEMP
        pos = F[:, c]
        lse = np.logaddexp(z[pos], LN[pos])
        return float((W[pos, c] * (lse - z[pos])).sum() + (A[~pos] * np.exp(z[~pos])).sum())

    G = np.empty((18, D), np.float32)
    eng.grow_fns(np.uint64(9))[1](0, 18, G)
    eps = 1e-5
    for c in range(18):
        for k in range(D):
            qp, qm = Q0[c].copy(), Q0[c].copy()
            qp[k] += eps
            qm[k] -= eps
            np.testing.assert_allclose(G[c, k], (f(qp, c) - f(qm, c)) / (2 * eps), rtol=2e-3,
                                       atol=2e-5)


def test_normalised_growth_divides_by_the_rows_mean_accumulator():
    X, data, users, items = _setup(seed=4)
    for tab in (users, items):
        tab.values_buf[:, 1] = np.random.default_rng(0).uniform(0.5, 4.0, tab.values_buf.shape[0])
    plain, scaled = _engine(data, users, items), _engine(data, users, items)
    scaled.normalise = True
    for t, tab in enumerate((users, items)):
        G0 = np.empty((tab.n_rows, D), np.float32)
        G1 = np.empty((tab.n_rows, D), np.float32)
        plain.grow_fns(np.uint64(5))[t](0, tab.n_rows, G0)
        scaled.grow_fns(np.uint64(5))[t](0, tab.n_rows, G1)
        mean = np.array([tab.values_buf[tab.indptr[r]:tab.indptr[r + 1], 1].mean()
                         if tab.indptr[r + 1] > tab.indptr[r]
                         else tab.values_buf[:tab.nnz, 1].mean() for r in range(tab.n_rows)])
        np.testing.assert_allclose(G1, G0 / np.sqrt(mean)[:, None], rtol=1e-5, atol=1e-7)


def test_proposal_is_a_distribution_with_its_log_correction():
    counts = np.array([0, 3, 8, 1])
    cdf, logq = proposal(counts, 5, beta=0.5)
    q = np.diff(np.concatenate(([0.0], cdf)))
    np.testing.assert_allclose(cdf[-1], 1.0)
    np.testing.assert_allclose(q, np.sqrt(counts + 1) / np.sqrt(counts + 1).sum())
    np.testing.assert_allclose(logq, np.log(5 * q))
    neg = np.empty(4000, np.int64)
    _softmax.draw_negatives_host(np.uint64(3), 4000, cdf, neg)
    assert np.all(np.diff(neg) >= 0)  # sorted
    np.testing.assert_allclose(np.bincount(neg, minlength=4) / 4000, q, atol=0.03)


def _fit(X, **kw):
    params = {"n_components": 8, "density": 0.25, "loss": "softmax", "max_iter": 6,
              "update_interval": 2, "random_state": 0, "n_threads": 1, **kw}
    return DSLMatrixFactorization(**params).fit(X)


def test_budget_exact_after_every_epoch_and_loss_falls():
    X = make_interactions(120, 80, 1500, random_state=1)
    est = _fit(X)
    budget = round(0.25 * 8 * (120 + 80))
    assert est.n_active_ == budget
    assert [h["nnz"] for h in est.history_] == [budget] * 6
    assert sum(h["pruned"] for h in est.history_) > 0
    assert all(h["pruned"] == h["grown"] for h in est.history_)
    assert est.history_[-1]["loss"] < est.history_[0]["loss"]
    assert not est.item_bias_.any()  # the softmax loss has no bias
    est.user_table_.check()
    est.item_table_.check()


def test_one_thread_is_bitwise_reproducible():
    X = make_interactions(120, 80, 1500, random_state=1)
    a, b = _fit(X), _fit(X)
    for name in ("user_table_", "item_table_"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert np.array_equal(ta.indptr, tb.indptr) and np.array_equal(ta.indices, tb.indices)
        assert np.array_equal(ta.weights, tb.weights)
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    c = _fit(X, random_state=1)
    assert not np.array_equal(c.user_table_.weights, a.user_table_.weights)


def test_two_threads_train_as_well():
    X = make_interactions(120, 80, 1500, random_state=1)
    est = _fit(X, n_threads=2)
    assert est.n_active_ == round(0.25 * 8 * 200)
    assert est.history_[-1]["loss"] < est.history_[0]["loss"]


def _planted():
    # Two groups of users with disjoint item sets; user 0 of group A saw
    # all of A's items but item 9, which every other member of A saw.
    rows, cols = [], []
    for u in range(40):
        group = range(0, 10) if u < 20 else range(10, 20)
        for i in group:
            if u == 0 and i == 9:
                continue
            rows.append(u)
            cols.append(i)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(40, 20))


def test_known_answer_ranks_the_planted_item_first():
    X = _planted()
    est = _fit(X, max_iter=30, update_interval=5, density=0.5, n_components=4,
               n_negatives=8)
    ids, _ = est.recommend([0], n=3)
    assert ids[0, 0] == 9
    hist = X[:1].copy()
    ids, _ = est.recommend_for_history(hist, n=3)
    assert ids[0, 0] == 9


def test_fold_in_keeps_the_per_user_budget_and_is_row_independent():
    X = make_interactions(80, 50, 900, random_state=3)
    check_fold_in(_fit(X, max_iter=6), X[:6])


def check_fold_in(est, H):
    """Fold-in keeps the fitted per-user budget, a row alone folds in alike, seen items stay out.

    Shared with the other softmax-family loss (tests/test_ccl.py).
    """
    tab = est._fold_in(H)
    k_keep = round(est.user_table_.nnz / est.n_users_)
    assert np.all(tab.row_nnz() == k_keep)
    alone = est._fold_in(H[2:3])
    assert np.array_equal(alone.weights, tab.weights[tab.indptr[2]:tab.indptr[3]])
    ids, _ = est.recommend_for_history(H, n=5)
    seen = H.toarray() > 0
    assert not seen[np.arange(H.shape[0])[:, None], ids].any()


def test_partial_fit_items_says_it_is_not_available():
    X = make_interactions(60, 40, 700, random_state=4)
    est = _fit(X, max_iter=2)
    with pytest.raises(NotImplementedError, match="loss='softmax'"):
        est.partial_fit_items(np.arange(3), X[:, :3])


def check_save_load(est, H, path):
    """A saved and loaded model (and its served twin) recommends as ``est``; returns the loaded.

    ``H``: histories to fold in. Shared with the other softmax-family loss
    (tests/test_ccl.py).
    """
    path = est.save(path)
    back = load(path)
    for a, b in ((est.recommend(np.arange(10), n=5), back.recommend(np.arange(10), n=5)),
                 (est.recommend_for_history(H, n=5), back.recommend_for_history(H, n=5))):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    from sparse_rec.serving import load_model

    served = load_model(path)
    assert np.array_equal(served.recommend_for_history(H, n=5)[0],
                          est.recommend_for_history(H, n=5)[0])
    return back


def test_save_load_roundtrip(tmp_path):
    X = make_interactions(60, 40, 700, random_state=4)
    est = _fit(X, temperature=0.3, n_negatives=16)
    back = check_save_load(est, X[:4], tmp_path / "m.npz")
    assert back.loss == "softmax" and back.temperature == 0.3 and back.n_negatives == 16


def test_clone_and_get_params():
    est = DSLMatrixFactorization(loss="softmax", n_negatives=32, temperature=0.1)
    params = clone(est).get_params()
    assert params["loss"] == "softmax"
    assert params["n_negatives"] == 32 and params["temperature"] == 0.1
    assert DSLMatrixFactorization().get_params()["n_negatives"] is None


def test_defaults_resolve_per_loss():
    X = make_interactions(60, 40, 700, random_state=4)
    est = DSLMatrixFactorization(loss="softmax", n_components=4, density=0.5, n_threads=1,
                                 random_state=0)
    assert est._resolved("max_iter") == 40 and est._resolved("update_interval") == 4
    est.max_iter = 2
    est.fit(X)
    assert est._n_negatives() == 39  # fewer items than the default 256: all others


@pytest.mark.parametrize("params, match", [
    ({"loss": "softmx"}, "loss must be one of"),
    ({"temperature": 0.0}, "temperature must be"),
    ({"temperature": -1.0}, "temperature must be"),
    ({"temperature": "hot"}, "temperature must be"),
    ({"n_negatives": 0}, "n_negatives must be"),
    ({"n_negatives": 2.5}, "n_negatives must be"),
    ({"n_negatives": 10**9}, "n_negatives must be"),
    # backend="cuda" has an engine (tests/test_cuda_engines.py); others are refused.
    ({"backend": "tpu"}, r"backend must be one of \('cpu', 'cuda'\); got 'tpu'"),
])
def test_bad_parameters(params, match):
    X = make_interactions(20, 10, 80, random_state=0)
    with pytest.raises(ValueError, match=match):
        DSLMatrixFactorization(n_components=4, max_iter=1, **{"loss": "softmax", **params}).fit(X)


def test_command_line_fits_the_softmax_loss(tmp_path, capsys):
    from sparse_rec.cli import main

    model = tmp_path / "softmax.npz"
    assert main(["fit", "--loss", "softmax", "--epochs", "2", "--quiet", "--n-components", "8",
                 "--output", str(model), "--threads", "1"]) == 0
    assert "Recall@20" in capsys.readouterr().out
    loaded = load(model)
    assert loaded.loss == "softmax" and loaded.n_iter_ == 2 and not loaded.item_bias_.any()


def test_warm_start_continues_with_the_pattern():
    X = make_interactions(60, 40, 700, random_state=5)
    est = _fit(X, max_iter=4)
    est.set_params(warm_start=True, max_iter=2)
    est.fit(X)
    assert est.n_iter_ == 6 and est.n_active_ == round(0.25 * 8 * 100)
