"""DSLMultVAE: passes against a NumPy Mult-VAE (finite differences), budget, API, errors."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparse_rec import DSLMultVAE, load
from sparse_rec._base import TrainData
from sparse_rec._dsl import PruneGrow
from sparse_rec._vae.estimator import auto_alpha, auto_batch_size
from sparse_rec.backends import vae_cpu as V
from sparse_rec.datasets import make_interactions
from sparse_rec.serving import ServedMultVAE, load_model

N_USERS, N_ITEMS, HIDDEN, D = 6, 7, (5,), 3

# --------------------------------------------------------------------------- #
# A NumPy Mult-VAE from the paper's equations, in float64.
# --------------------------------------------------------------------------- #


def reference_loss(Ed, Dd, P, Xin, X, eps, beta):
    """Mean over rows of -sum x log softmax(logits) + beta * KL, dense float64."""
    h = np.tanh(Xin @ Ed + P["b_e"])
    for layer in range(len(HIDDEN) - 1):
        h = np.tanh(h @ P[f"enc_W{layer}"] + P[f"enc_b{layer}"])
    q = h @ P["q_W"] + P["q_b"]
    mu, lv = q[:, :D], q[:, D:]
    a = mu if eps is None else mu + np.exp(0.5 * lv) * eps
    for layer in range(len(HIDDEN)):
        a = np.tanh(a @ P[f"dec_W{layer}"] + P[f"dec_b{layer}"])
    logits = a @ Dd.T + P["b_d"]
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    nll = -(X * logp).sum(axis=1)
    kl = -0.5 * (1 + lv - mu ** 2 - np.exp(lv)).sum(axis=1)
    return float((nll + beta * kl).mean()), logits


def tiny_model(density=0.6, seed=0, hidden=HIDDEN):
    est = DSLMultVAE(hidden_layer_sizes=hidden, n_components=D, density=density)
    params = est._init_params(N_USERS, N_ITEMS, seed)
    rng = np.random.default_rng(seed)
    for t in params.tables:  # weights large enough that every term matters
        t.values_buf[: t.nnz, 0] = rng.normal(0, 0.5, t.nnz)
    params.layout.dense[0] = rng.normal(0, 0.5, params.layout.dense.shape[1])
    return est, params


def tiny_data(seed=0):
    X = sp.random(N_USERS, N_ITEMS, density=0.5, random_state=seed, format="csr",
                  data_rvs=lambda n: np.ones(n))
    X = X.tolil()
    for u in range(N_USERS):
        X[u, u % N_ITEMS] = 1.0  # no empty row
    X = X.tocsr().astype(np.float32)
    X.sort_indices()
    return X


def dense64(t):
    return t.dense_rows(np.arange(t.n_rows)).astype(np.float64)


def finite_difference(f, x, positions, h=1e-5):
    out = np.empty(len(positions))
    for j, pos in enumerate(positions):
        old = x[pos]
        x[pos] = old + h
        up = f()
        x[pos] = old - h
        down = f()
        x[pos] = old
        out[j] = (up - down) / (2 * h)
    return out


@pytest.mark.parametrize("density", [0.6, 1.0])  # 1.0: every table full, the BLAS path
def test_forward_and_backward_match_numpy_with_finite_differences(density):
    est, params = tiny_model(density)
    E, Dt = params.tables
    state = params.layout
    layout = state.layout
    X = tiny_data()
    rng = np.random.default_rng(3)
    B = X.shape[0]
    vals, rows = V.normalised(X.indptr, X.indices, X.data, B)
    keep = rng.random(len(vals)) >= 0.3  # a dropout mask
    Xin = sp.csr_matrix((np.where(keep, vals / 0.7, 0), X.indices.copy(), X.indptr.copy()),
                        shape=X.shape)
    Xin.eliminate_zeros()
    eps = rng.standard_normal((B, D)).astype(np.float32)
    beta = 0.3
    hist = (Xin.indptr.astype(np.int64), Xin.indices.astype(np.int32),
            Xin.data.astype(np.float32))
    hist_t = V.transposed(*hist, X.shape)
    P = layout.views(state.dense[0])
    enc, mu, lv, dec, = V.forward(E, P, layout, hist, eps)
    L = V.logits_t(Dt, np.ascontiguousarray(dec[-1].T), P["b_d"])
    Ed, Dd = dense64(E), dense64(Dt)
    w64 = state.dense[0].astype(np.float64)
    P64 = layout.views(w64)
    Xin64, X64 = Xin.toarray().astype(np.float64), X.toarray().astype(np.float64)
    ref, ref_logits = reference_loss(Ed, Dd, P64, Xin64, X64, eps.astype(np.float64), beta)
    np.testing.assert_allclose(L.T, ref_logits, rtol=1e-4, atol=1e-5)
    nll, _ = V.softmax_loss_grad(L, X.indices.astype(np.int64), rows, X.data, np.float32(1 / B))
    kl = -0.5 * np.sum(1 + lv - mu ** 2 - np.exp(lv), axis=1)
    assert abs((nll.sum() + beta * kl.sum()) / B - ref) < 1e-4 * max(1, abs(ref))
    grad = np.zeros(layout.size, np.float32)
    parts = np.zeros((2, HIDDEN[0], B), np.float32)
    gE, gD, _ = V.backward(E, Dt, P, layout.views(grad), layout, hist_t, enc, mu, lv, dec, eps,
                           L, np.float32(beta / B), parts)

    def loss():
        return reference_loss(Ed, Dd, P64, Xin64, X64, eps.astype(np.float64), beta)[0]

    for tab, G, M in ((E, gE, Ed), (Dt, gD, Dd)):
        rows_t = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
        pos = list(zip(rows_t, tab.indices.astype(np.int64), strict=True))
        np.testing.assert_allclose(G, finite_difference(loss, M, pos), rtol=2e-3, atol=2e-5)
    pos = [(p,) for p in range(layout.size)]
    np.testing.assert_allclose(grad, finite_difference(loss, w64, pos), rtol=2e-3, atol=2e-5)


@pytest.mark.parametrize("density", [0.6, 1.0])
def test_sampled_softmax_loss_and_gradients_match_numpy(density):
    # Two users: their positives leave items out, so some candidates are draws only.
    est, params = tiny_model(density, seed=1)
    E, Dt = params.tables
    state = params.layout
    layout = state.layout
    X = sp.csr_matrix((np.ones(4, np.float32), [0, 2, 2, 5], [0, 2, 4]), shape=(2, N_ITEMS))
    B = X.shape[0]
    q = V.item_proposal(np.arange(N_ITEMS))
    cand, logp = V.sampled_candidates(np.unique(X.indices), np.cumsum(q), np.log1p(-q), 3,
                                      np.random.default_rng(4))
    assert set(np.unique(X.indices)) < set(cand)  # some sampled-only candidates
    np.testing.assert_array_equal(logp[np.isin(cand, X.indices)], 0.0)
    sampled_only = ~np.isin(cand, X.indices)
    np.testing.assert_allclose(logp[sampled_only],
                               np.log(1 - (1 - q[cand[sampled_only]]) ** 3), rtol=1e-5)
    vals, rows = V.normalised(X.indptr, X.indices, X.data, B)
    hist = (X.indptr.astype(np.int64), X.indices.astype(np.int32), vals)
    hist_t = V.transposed(*hist, X.shape)
    eps = np.random.default_rng(3).standard_normal((B, D)).astype(np.float32)
    beta = 0.3
    P = layout.views(state.dense[0])
    enc, mu, lv, dec = V.forward(E, P, layout, hist, eps)
    L = V.logits_t(Dt, np.ascontiguousarray(dec[-1].T), P["b_d"], rows=cand)
    L -= logp[:, None]
    nll, _ = V.softmax_loss_grad(L, np.searchsorted(cand, X.indices).astype(np.int64), rows,
                                 X.data, np.float32(1 / B))
    kl = -0.5 * np.sum(1 + lv - mu ** 2 - np.exp(lv), axis=1)
    grad = np.zeros(layout.size, np.float32)
    parts = np.zeros((2, HIDDEN[0], B), np.float32)
    gE, gD, _ = V.backward(E, Dt, P, layout.views(grad), layout, hist_t, enc, mu, lv, dec, eps,
                           L, np.float32(beta / B), parts, rows=cand)
    Ed, Dd = dense64(E), dense64(Dt)
    w64 = state.dense[0].astype(np.float64)
    P64 = layout.views(w64)
    Xin64 = sp.csr_matrix((vals, X.indices, X.indptr), shape=X.shape).toarray().astype(float)
    X64 = X.toarray().astype(np.float64)
    logp64 = logp.astype(np.float64)

    def loss():  # the corrected softmax over the candidates only, in float64
        _, logits = reference_loss(Ed, Dd, P64, Xin64, X64, eps.astype(np.float64), 0.0)
        h = np.tanh(Xin64 @ Ed + P64["b_e"])
        qz = h @ P64["q_W"] + P64["q_b"]
        m, v = qz[:, :D], qz[:, D:]
        lc = logits[:, cand] - logp64
        top = lc.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(lc - top).sum(axis=1))
        nll = X64.sum(axis=1) * lse - (X64 * logits).sum(axis=1)
        return float((nll + beta * -0.5 * (1 + v - m ** 2 - np.exp(v)).sum(axis=1)).mean())

    assert abs((nll.sum() + beta * kl.sum()) / B - loss()) < 1e-4 * max(1, abs(loss()))
    for tab, G, M in ((E, gE, Ed), (Dt, gD, Dd)):
        rows_t = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
        pos = list(zip(rows_t, tab.indices.astype(np.int64), strict=True))
        np.testing.assert_allclose(G, finite_difference(loss, M, pos), rtol=2e-3, atol=2e-5)
    assert np.all(gD[np.isin(np.repeat(np.arange(Dt.n_rows), Dt.row_nnz()),
                                            cand, invert=True)] == 0)
    pos = [(p,) for p in range(layout.size)]
    np.testing.assert_allclose(grad, finite_difference(loss, w64, pos), rtol=2e-3, atol=2e-5)


def test_sampled_candidates_estimate_the_full_normaliser_without_bias():
    rng = np.random.default_rng(0)
    n = 40
    logits = rng.normal(0, 1.5, n)
    q = V.item_proposal(rng.integers(0, 20, n))
    cdf, log1m_q = np.cumsum(q), np.log1p(-q)
    positives = np.array([3, 17])
    est = []
    for _ in range(4000):
        cand, logp = V.sampled_candidates(positives, cdf, log1m_q, 6, rng)
        assert set(positives) <= set(cand)
        est.append(np.exp(logits[cand] - logp).sum())
    est = np.array(est)
    Z = np.exp(logits).sum()
    assert abs(est.mean() - Z) < 4 * est.std() / np.sqrt(len(est))


def test_growth_gradients_are_the_dense_gradient_of_the_mean_loss():
    est, params = tiny_model(density=0.4)
    X = tiny_data(1)
    data = TrainData.from_matrix(X)
    engine = est._make_engine(data, params)
    E, Dt = params.tables
    layout = params.layout.layout
    w64 = params.layout.dense[0].astype(np.float64)
    P64 = layout.views(w64)
    vals, _ = V.normalised(X.indptr, X.indices, X.data, X.shape[0])
    Xin = sp.csr_matrix((vals, X.indices, X.indptr), shape=X.shape).toarray().astype(np.float64)
    Xw = sp.csr_matrix((data.x_weight, data.x_indices, data.x_indptr), shape=X.shape).toarray()
    beta = engine.anneal()
    Ed, Dd = dense64(E), dense64(Dt)

    def loss():  # all users (fewer than the sample size), no dropout, z = mu
        return reference_loss(Ed, Dd, P64, Xin, Xw.astype(np.float64), None, beta)[0]

    every = [(i, k) for i in range(N_ITEMS) for k in range(HIDDEN[0])]
    fills = engine.grow_fns(np.uint64(5))
    for fill, M in zip(fills, (Ed, Dd), strict=True):
        G = np.zeros((N_ITEMS, HIDDEN[0]), np.float32)
        fill(0, 3, G[:3])  # two chunks: the contract of PruneGrow
        fill(3, N_ITEMS, G[3:])
        np.testing.assert_allclose(G.ravel(), finite_difference(loss, M, every), rtol=2e-3,
                                   atol=2e-5)


def test_adam_state_moves_with_the_pattern_through_prune_and_grow():
    est, params = tiny_model(density=0.5)
    X = tiny_data(2)
    engine = est._make_engine(TrainData.from_matrix(X), params)
    engine.epoch(np.uint64(1))
    engine.epoch(np.uint64(2))
    before = {}
    for t, tab in enumerate(params.tables):
        rows = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
        for r, c, v in zip(rows, tab.indices, tab.values_buf[: tab.nnz], strict=True):
            before[t, r, int(c)] = v.copy()
    pg = PruneGrow(params.tables, budget="global", grow="gradient", chunk_bytes=64)
    pruned, grown = pg.step(0.3, 0, engine.grow_fns(np.uint64(3)), rebuild=engine.rebuild)
    assert pruned.sum() == grown.sum() > 0
    kept = new = 0
    for t, tab in enumerate(params.tables):
        rows = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
        for r, c, v in zip(rows, tab.indices, tab.values_buf[: tab.nnz], strict=True):
            if (t, r, int(c)) in before:
                np.testing.assert_array_equal(v, before[t, r, int(c)])
                kept += 1
            else:
                np.testing.assert_array_equal(v, 0.0)
                new += 1
    assert new == grown.sum() and kept + new == len(before)
    assert np.isfinite(engine.epoch(np.uint64(4)))


def test_kl_annealing_schedule():
    est, params = tiny_model()
    # A batch above the 6 users: one batch, so one update, per epoch.
    engine = DSLMultVAE(beta=0.2, anneal_steps=10, batch_size=500)._make_engine(
        TrainData.from_matrix(tiny_data()), params)
    seen = []
    for _ in range(4):
        seen.append(engine.anneal())
        engine.epoch(np.uint64(len(seen)))  # one batch per epoch: one update
    np.testing.assert_allclose(seen, [0.0, 0.1, 0.2, 0.2])  # slope 1/10, capped at beta
    assert params.layout.n_updates == 4
    zero = DSLMultVAE(beta=0.2, anneal_steps=0)._make_engine(
        TrainData.from_matrix(tiny_data()), params)
    assert zero.anneal() == 0.2


# --------------------------------------------------------------------------- #
# Fits.
# --------------------------------------------------------------------------- #


def small(**kw):
    args = dict(hidden_layer_sizes=(16,), n_components=4, density=0.3, max_iter=6,
                update_interval=1, batch_size=64, random_state=0, n_threads=1)
    args.update(kw)
    return DSLMultVAE(**args)


@pytest.fixture(scope="module")
def X():
    return make_interactions(150, 60, 1500, random_state=0)


@pytest.fixture(scope="module")
def fitted(X):
    nnz = []
    est = small(callbacks=[lambda e, row: nnz.append(
        (e.encoder_table_.nnz + e.decoder_table_.nnz, row["nnz"], row["pruned"]))]).fit(X)
    est.set_params(callbacks=None)  # a lambda neither pickles nor saves
    return est, nnz


def test_budget_is_exact_after_every_epoch(fitted):
    est, nnz = fitted
    budget = round(0.3 * 2 * 60 * 16)
    assert est.n_active_ == budget
    assert [a for a, _, _ in nnz] == [budget] * 6
    assert [b for _, b, _ in nnz] == [budget] * 6
    assert sum(p for _, _, p in nnz) > 0  # the pattern did move
    assert est.history_[-1]["empty_users"] == 0
    assert est.nbytes_ < est.dense_nbytes_
    # The default budget="table" keeps each table's half.
    assert {(h["nnz_encoder"], h["nnz_decoder"]) for h in est.history_} == {(288, 288)}


def test_global_budget_moves_weights_and_keeps_the_total(X):
    rows = []
    small(budget="global", callbacks=[lambda e, row: rows.append(row)]).fit(X)
    budget = round(0.3 * 2 * 60 * 16)
    assert all(r["nnz"] == r["nnz_encoder"] + r["nnz_decoder"] == budget for r in rows)
    assert len({r["nnz_encoder"] for r in rows}) > 1


def test_training_lowers_the_loss_and_beats_popularity(X):
    from sparse_rec.metrics import recall_at_k
    from sparse_rec.model_selection import random_split

    X_tr, X_te = random_split(X, test_size=0.2, random_state=0)
    est = small(density=1.0, max_iter=30, learning_rate=3e-3).fit(X_tr)
    assert est.history_[-1]["loss"] < est.history_[0]["loss"]
    ids, _ = est.recommend(np.arange(X.shape[0]), n=10)
    pop = np.asarray(X_tr.sum(axis=0)).ravel()
    top = np.argsort(-pop, kind="stable")
    pop_ids = np.array([[j for j in top if X_tr[u, j] == 0][:10] for u in range(X.shape[0])])
    assert recall_at_k(ids, X_te, 10) > recall_at_k(pop_ids, X_te, 10)


def test_sampled_softmax_fit_lowers_the_loss_and_beats_popularity(X):
    from sparse_rec.metrics import recall_at_k
    from sparse_rec.model_selection import random_split

    X_tr, X_te = random_split(X, test_size=0.2, random_state=0)
    est = small(density=1.0, n_sampled=10, max_iter=30, learning_rate=3e-3).fit(X_tr)
    assert est.history_[-1]["loss"] < est.history_[0]["loss"]
    ids, _ = est.recommend(np.arange(X.shape[0]), n=10)
    pop = np.asarray(X_tr.sum(axis=0)).ravel()
    top = np.argsort(-pop, kind="stable")
    pop_ids = np.array([[j for j in top if X_tr[u, j] == 0][:10] for u in range(X.shape[0])])
    assert recall_at_k(ids, X_te, 10) > recall_at_k(pop_ids, X_te, 10)


def test_one_thread_fit_is_reproducible(X, fitted):
    again = small(callbacks=[lambda e, row: None]).fit(X)
    est = fitted[0]
    for name in ("encoder_table_", "decoder_table_"):
        np.testing.assert_array_equal(getattr(est, name).weights, getattr(again, name).weights)
    np.testing.assert_array_equal(est.dense_params_, again.dense_params_)


def test_recommend_for_history_of_a_training_row_equals_recommend(X, fitted):
    est = fitted[0]
    users = np.array([0, 3, 7, 11])
    ids, scores = est.recommend(users, n=8)
    ids_h, scores_h = est.recommend_for_history(X[users], n=8)
    np.testing.assert_array_equal(ids, ids_h)
    np.testing.assert_array_equal(scores, scores_h)
    S = est.decision_function(X[users])
    np.testing.assert_array_equal(est.score_items(users, ids), np.take_along_axis(S, ids, 1))
    assert (est.predict(X[users]) == ids[:, 0]).all()
    assert not X[users][np.arange(4)[:, None], ids].toarray().any()  # history filtered
    sim, _ = est.similar_items([0, 1], n=5)
    assert sim.shape == (2, 5) and not (sim == np.array([[0], [1]])).any()


def test_save_load_serving_and_pickle_roundtrip(X, fitted, tmp_path):
    est = fitted[0]
    users = np.arange(20)
    want = est.recommend(users, n=10)
    path = est.save(tmp_path / "vae.npz")
    for other in (load(path), load_model(path), pickle.loads(pickle.dumps(est))):
        got = other.recommend(users, n=10)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(other.decision_function(X[:5]), est.decision_function(X[:5]))
    assert isinstance(load_model(path), ServedMultVAE)
    assert load(path).n_active_ == est.n_active_
    np.testing.assert_array_equal(clone(est).get_params()["hidden_layer_sizes"], (16,))


def test_warm_start_continues_and_refuses_another_structure(X):
    est = small(max_iter=2, warm_start=True).fit(X)
    updates = est.n_updates_
    est.fit(X)
    assert est.n_iter_ == 4 and est.n_updates_ == 2 * updates
    est.set_params(hidden_layer_sizes=(8,))
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        est.fit(X)


def test_early_stopping_scores_from_the_training_part(X):
    est = small(max_iter=8, early_stopping=True, n_iter_no_change=2).fit(X)
    assert len(est.validation_scores_) == est.n_iter_ >= 1
    assert est.seen_.nnz == X.nnz  # restored after scoring


@pytest.mark.parametrize("param, value, match", [
    ("dropout", 1.0, "dropout"),
    ("dropout", -0.1, "dropout"),
    ("beta", -1.0, "beta"),
    ("anneal_steps", -1, "anneal_steps"),
    ("anneal_steps", 2.5, "anneal_steps"),
    ("hidden_layer_sizes", (0,), "hidden_layer_sizes"),
    ("hidden_layer_sizes", (), "hidden_layer_sizes"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", "big", "batch_size"),
    ("alpha", -1e-3, "alpha"),
    ("alpha", "big", "alpha"),
    ("alpha", float("nan"), "alpha"),
    ("n_sampled", 0, "n_sampled"),
    ("n_sampled", 2.5, "n_sampled"),
    ("n_components", 0, "n_components"),
    ("density", 0.0, "density"),
    ("backend", "tpu", "backend"),
])
def test_bad_parameters_say_what_must_hold(X, param, value, match):
    with pytest.raises(ValueError, match=match):
        small(**{param: value}).fit(X)


def test_auto_batch_size_follows_the_users_and_equals_the_explicit_batch(X):
    assert auto_batch_size(100_000) == 500  # the paper's batch on large data
    assert [auto_batch_size(n) for n in (1, 4, 5, 482, 2000, 2001)] == [1, 1, 2, 121, 500, 500]
    # Users without an interaction do not count: 150 rows, 10 of them emptied.
    Xe = X.tolil()
    Xe[:10] = 0
    Xe = Xe.tocsr()
    Xe.eliminate_zeros()
    auto = small(batch_size="auto", max_iter=2).fit(Xe)
    assert auto.batch_size_ == auto_batch_size(140) == 35
    explicit = small(batch_size=35, max_iter=2).fit(Xe)
    assert explicit.batch_size_ == 35
    # One Adam update per batch: ceil(140 / 35) = 4 an epoch.
    assert auto.n_updates_ == explicit.n_updates_ == 8
    np.testing.assert_array_equal(auto.decoder_table_.weights, explicit.decoder_table_.weights)
    np.testing.assert_array_equal(auto.dense_params_, explicit.dense_params_)


def test_auto_alpha_is_a_fixed_prior_over_the_users_and_equals_the_explicit_penalty(X):
    # 0.4 / n_users: the penalty on the mean loss fades as the users grow.
    assert [auto_alpha(n) for n in (1, 400, 40_000)] == [0.4, 0.001, 1e-05]
    Xe = X.tolil()
    Xe[:10] = 0  # users without an interaction do not count
    Xe = Xe.tocsr()
    Xe.eliminate_zeros()
    auto = small(alpha="auto", max_iter=3).fit(Xe)
    assert auto.alpha_ == auto_alpha(140) == 0.4 / 140
    explicit = small(alpha=0.4 / 140, max_iter=3).fit(Xe)
    assert explicit.alpha_ == 0.4 / 140
    np.testing.assert_array_equal(auto.decoder_table_.weights, explicit.decoder_table_.weights)
    np.testing.assert_array_equal(auto.dense_params_, explicit.dense_params_)
    # The penalty is applied: without it the weights differ and are larger.
    none = small(alpha=0.0, max_iter=3).fit(Xe)
    assert none.alpha_ == 0.0
    strong = small(alpha=1.0, max_iter=3).fit(Xe)
    assert not np.array_equal(none.dense_params_, auto.dense_params_)
    norms = [np.linalg.norm(e.dense_layers_["q_W"]) for e in (strong, auto, none)]
    assert norms[0] < norms[1] < norms[2]


def test_bad_inputs(X, fitted):
    est = fitted[0]
    with pytest.raises(ValueError, match="features"):
        est.recommend_for_history(sp.csr_matrix((2, 59)))
    with pytest.raises(ValueError):
        small().fit(-X)
    with pytest.raises(ValueError):
        est.recommend([150])
    # An empty history is a zero input: scores are finite, nothing to filter.
    ids, scores = est.recommend_for_history(sp.csr_matrix((1, 60)), n=3)
    assert (ids >= 0).all() and np.isfinite(scores).all()


# --------------------------------------------------------------------------- #
# Workflows (issue 15): raw ids, similar users, explain, partial fits.
# --------------------------------------------------------------------------- #


def encoder_means(est, X):
    """mu of the histories ``X`` from the fitted arrays, dense float64 (one hidden layer)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1))).ravel()
    Xin = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ X
    P = {k: v.astype(np.float64) for k, v in est.dense_layers_.items()}
    h = np.tanh(Xin @ dense64(est.encoder_table_) + P["b_e"])
    return (h @ P["q_W"] + P["q_b"])[:, :est.n_components_]


def without(row, j):
    """The one-row history ``row`` without item ``j``."""
    keep = row.indices != j
    return sp.csr_matrix((row.data[keep], row.indices[keep], [0, keep.sum()]), shape=row.shape)


def test_raw_ids_in_and_out_on_the_estimator_and_the_served_model(X, tmp_path):
    from sparse_rec.datasets import from_frame

    C = X.tocoo()
    ds = from_frame({"user_id": [f"u{r:03d}" for r in C.row],
                     "item_id": [f"i{c:02d}" for c in C.col]})
    est = small(max_iter=2).fit(ds)
    np.testing.assert_array_equal(est.user_ids_, ds.user_ids)
    served = load_model(est.save(tmp_path / "ids.npz"))
    rows = ds.user_index(["u007", "u002"])
    ids, scores = est.recommend(rows, n=5)
    for model in (est, served):
        np.testing.assert_array_equal(model.user_index(["u007", "u002"]), rows)
        np.testing.assert_array_equal(model.item_index(["i03"]), [3])
        items, got = model.recommend_ids(["u007", "u002"], n=5)
        np.testing.assert_array_equal(items, ds.item_ids[ids])
        np.testing.assert_array_equal(got, scores)
        with pytest.raises(KeyError, match="'u999'"):
            model.recommend_ids(["u999"])


def test_similar_users_is_the_cosine_of_the_encoder_means(X, fitted, tmp_path):
    est = fitted[0]
    mu = encoder_means(est, X)
    np.testing.assert_allclose(est._user_vectors(), mu, rtol=1e-4, atol=1e-5)
    U = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    S = U @ U.T
    users = [0, 5, 42]
    ids, scores = est.similar_users(users, n=6)
    for b, u in enumerate(users):
        s = S[u].copy()
        s[u] = -np.inf
        assert u not in ids[b]
        np.testing.assert_allclose(scores[b], np.sort(s)[::-1][:6], atol=1e-5)
        np.testing.assert_allclose(S[u, ids[b]], scores[b], atol=1e-5)
    served = load_model(est.save(tmp_path / "sim.npz"))
    for got, want in zip(served.similar_users(users, n=6), (ids, scores), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_user_without_history_is_similar_to_no_one(X):
    est = small(max_iter=2).fit(X)
    est.partial_fit_users([150, 151], sp.csr_matrix((2, 60), dtype=np.float32))
    ids, scores = est.similar_users([150], n=5)
    assert (scores == 0).all()  # not 1.0 with the other empty user
    ids, scores = est.similar_users([0], n=149)
    assert not np.isin([150, 151], ids[0][scores[0] != 0]).any()


def test_explain_is_the_logit_drop_of_leaving_each_history_item_out(X, fitted, monkeypatch):
    from sparse_rec._vae import scoring

    est = fitted[0]
    user = 9
    hist = X[user]
    assert hist.nnz >= 4
    for item in (0, int(hist.indices[0]), 33):
        e = est.explain(user, item, n=hist.nnz)
        full = est.decision_function(hist)[0, item]
        assert sorted(e.items.tolist()) == sorted(hist.indices.tolist())
        assert np.isclose(e.score, est.score_items([user], [[item]])[0, 0], atol=1e-6)
        assert np.isclose(e.score, full, atol=1e-6)
        for j, c in zip(e.items, e.contributions, strict=True):
            drop = full - est.decision_function(without(hist, j))[0, item]
            assert np.isclose(c, drop, atol=1e-5)
        assert np.isclose(e.contributions.sum() + e.rest, e.score, atol=1e-5)
        assert (np.diff(e.contributions) <= 0).all()  # largest first
        np.testing.assert_array_equal(est.explain(user, item, n=2).items, e.items[:2])
    # Histories longer than a scoring block are occluded block by block.
    monkeypatch.setattr(scoring, "_SCORE_BLOCK", 3)
    blocked = est.explain(user, 33, n=hist.nnz)
    np.testing.assert_array_equal(blocked.items, e.items)
    np.testing.assert_allclose(blocked.contributions, e.contributions, atol=1e-6)


def test_partial_fit_users_writes_histories_and_scores_them_as_recommend_for_history(
        X, tmp_path):
    est = small(max_iter=3).fit(X[:120])
    H = sp.csr_matrix(X[120:])
    want = est.recommend_for_history(H, n=6)
    want_2 = est.recommend_for_history(H[:1], n=6)
    others = est.recommend(np.arange(3, 120), n=6)
    weights = (est.encoder_table_.weights.copy(), est.decoder_table_.weights.copy(),
               est.dense_params_.copy())
    n_active, nbytes = est.n_active_, est.nbytes_
    est.partial_fit_users(np.r_[2, 120:150], sp.vstack([H[:1], H]))
    assert est.n_users_ == 150 and est.seen_.shape == (150, 60)
    np.testing.assert_array_equal(est.seen_[120:].toarray(), H.toarray())
    ids, scores = est.recommend(np.arange(120, 150), n=6)
    np.testing.assert_array_equal(ids, want[0])
    np.testing.assert_allclose(scores, want[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(est.recommend([2], n=6)[0], want_2[0])
    np.testing.assert_array_equal(est.recommend(np.arange(3, 120), n=6)[0], others[0])
    # Nothing was solved: no weight moved, the budget and the bytes are the fit's.
    for a, b in zip((est.encoder_table_.weights, est.decoder_table_.weights,
                     est.dense_params_), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert est.n_active_ == n_active and est.nbytes_ == nbytes
    served = load_model(est.save(tmp_path / "grown.npz"))
    np.testing.assert_array_equal(served.recommend(np.arange(120, 150), n=6)[0], want[0])


def test_partial_fit_users_with_raw_ids(X):
    from sparse_rec.datasets import from_frame

    C = X.tocoo()
    ds = from_frame({"user_id": C.row + 1000, "item_id": C.col})
    est = small(max_iter=2).fit(ds)
    with pytest.raises(ValueError, match="pass ids"):
        est.partial_fit_users([150], X[:1])
    est.partial_fit_users([150], X[:1], ids=[7])
    assert est.user_ids_[-1] == 7
    items, _ = est.recommend_ids([7], n=4)
    np.testing.assert_array_equal(items, ds.item_ids[est.recommend_for_history(X[:1], n=4)[0]])


def test_partial_fit_items_is_refused_with_the_reason(X, fitted):
    est = fitted[0]
    with pytest.raises(NotImplementedError, match="encoder row, a decoder row"):
        est.partial_fit_items([60], sp.csr_matrix(X[:, [1]]))


@parametrize_with_checks([DSLMultVAE(hidden_layer_sizes=(8,), n_components=2, max_iter=2,
                                     update_interval=1, batch_size=16, random_state=0,
                                     n_threads=1)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
