"""DSLLightGCN: propagation and its backward against NumPy, budget, files, errors."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec import DSLLightGCN, load
from sparse_rec._base import TrainData
from sparse_rec._kernels import _lightgcn as K
from sparse_rec._lightgcn.estimator import auto_batch_size
from sparse_rec._table import SparseEmbeddingTable
from sparse_rec.backends.cpu_lightgcn import SPARSE_BELOW, Graph, LightGCNEngine, propagate
from sparse_rec.datasets import make_interactions
from sparse_rec.serving import ServedLightGCN, load_model


def blocks(n_groups=4, per_group=10, items_per_group=6, seed=0):
    """Users in group g like the items of group g; one liked item held out each."""
    rng = np.random.default_rng(seed)
    n_users, n_items = n_groups * per_group, n_groups * items_per_group
    X = np.zeros((n_users, n_items), np.float32)
    held = np.zeros(n_users, np.int64)
    for u in range(n_users):
        g = u // per_group
        items = np.arange(g * items_per_group, (g + 1) * items_per_group)
        held[u] = rng.choice(items)
        X[u, items] = 1
        X[u, held[u]] = 0
    return sp.csr_matrix(X), held


def small(**kw):
    params = dict(n_components=8, density=0.5, max_iter=6, update_interval=2, batch_size=256,
                  learning_rate=0.05, random_state=0, n_threads=1)
    params.update(kw)
    return DSLLightGCN(**params)


def dense_a_hat(X):
    """The normalised bipartite adjacency, (n_users + n_items) square, float64."""
    B = (X > 0).astype(np.float64).toarray()
    nu, ni = B.shape
    A = np.zeros((nu + ni, nu + ni))
    A[:nu, nu:] = B
    A[nu:, :nu] = B.T
    deg = A.sum(axis=1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1)), 0.0)
    return inv[:, None] * A * inv[None, :]


def tables(X, d, density, seed=0, slots=3):
    nu, ni = X.shape
    users = SparseEmbeddingTable.random(nu, d, int(density * nu * d), n_slots=slots, scale=0.5,
                                        seed=seed)
    items = SparseEmbeddingTable.random(ni, d, int(density * ni * d), n_slots=slots, scale=0.5,
                                        seed=seed + 1)
    return users, items


def dense_e0(users, items):
    return np.vstack([users.dense_rows(np.arange(users.n_rows)),
                      items.dense_rows(np.arange(items.n_rows))]).astype(np.float64)


def depth_weights(n_layers):
    """Layer weights growing with depth, ``w_l = (l + 1) / sum``: not the mean."""
    w = np.arange(1, n_layers + 2, dtype=np.float64)
    return w / w.sum()


@pytest.mark.parametrize("density", [0.05, 1.0])  # the sparse and the dense first product
@pytest.mark.parametrize("n_layers", [0, 1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_propagation_matches_scipy_reference(density, n_layers, weighted):
    X = make_interactions(30, 20, 150, random_state=1)
    users, items = tables(X, 16, density)
    assert (users.nnz < SPARSE_BELOW * 30 * 16) == (density < SPARSE_BELOW)
    A = sp.csr_matrix(dense_a_hat(X))
    E = dense_e0(users, items)
    layers = [E]
    for _ in range(n_layers):
        layers.append(A @ layers[-1])
    w = depth_weights(n_layers) if weighted else np.full(n_layers + 1, 1 / (n_layers + 1))
    want = np.tensordot(w, np.array(layers), axes=1)
    Fu, Fi, Pi = propagate(Graph.from_pattern(X.indptr, X.indices, 20), users, items, n_layers,
                           item_layers=True, weights=w if weighted else None)
    np.testing.assert_allclose(np.vstack([Fu, Fi]), want, rtol=1e-4, atol=1e-6)
    # The items' weighted layers below L, sum_l w_{l+1} E_l (w_0 E_0 without layers).
    nu = X.shape[0]
    want_p = (sum(w[ell + 1] * layers[ell][nu:] for ell in range(n_layers)) if n_layers
              else w[0] * E[nu:])
    np.testing.assert_allclose(Pi, want_p, rtol=1e-4, atol=1e-6)


def _final(E, A, n_layers, w=None):
    w = np.full(n_layers + 1, 1 / (n_layers + 1)) if w is None else w
    return sum(w[ell] * (np.linalg.matrix_power(A, ell) @ E) for ell in range(n_layers + 1))


def _bpr_loss(E, A, n_layers, us, ps, js, nu, w=None):
    F = _final(E, A, n_layers, w)
    x = np.einsum("bd,bd->b", F[us], F[nu + ps] - F[nu + js])
    return np.logaddexp(0.0, -x).sum() / len(us)


def _bpr_engine(density, halves=False, **kw):
    """A small BPR engine (3 layers, 10 components) over one batch, or two with ``halves``."""
    X = make_interactions(12, 9, 40, random_state=3)
    users, items = tables(X, 10, density, seed=4)
    data = TrainData.from_matrix(X)
    graph = Graph.from_pattern(data.x_indptr, data.x_indices, X.shape[1])
    eng = LightGCNEngine(data, users, items, graph, n_layers=3, learning_rate=0.1, alpha=0.0,
                         optimizer="adam", batch_size=data.nnz // 2 if halves else data.nnz,
                         **kw)
    return X, users, items, data, eng


@pytest.mark.parametrize("density", [0.05, 0.6])
@pytest.mark.parametrize("w", [None, [0.0, 0.1, 0.3, 0.6]])  # the mean; depth, no layer 0
def test_layer0_gradient_matches_finite_differences(density, w):
    X, users, items, data, eng = _bpr_engine(density, layer_weights=w)
    w = None if w is None else np.asarray(w)
    nu, ni = X.shape
    d, n_layers = users.n_cols, eng.n_layers
    key = np.uint64(7)
    loss, gu, gi = eng.layer0_gradient(key, 0, data.nnz)
    us, ps, js = (eng._work[0][r, :data.nnz] for r in range(3))
    keep = js >= 0
    us, ps, js = us[keep], ps[keep], js[keep]
    A = dense_a_hat(X)
    E = dense_e0(users, items)
    # Skipped samples count in the mean's denominator as in the kernel.
    scale = keep.sum() / data.nnz
    assert loss / data.nnz == pytest.approx(scale * _bpr_loss(E, A, n_layers, us, ps, js, nu, w),
                                            rel=1e-4)
    # Active weights of both tables, by central differences in float64.
    coords = [(r, c) for r in range(nu) for c in users.indices[users.indptr[r]:users.indptr[r + 1]]]
    coords += [(nu + r, c) for r in range(ni)
               for c in items.indices[items.indptr[r]:items.indptr[r + 1]]]
    num = []
    h = 1e-5
    for r, c in coords:
        Ep, Em = E.copy(), E.copy()
        Ep[r, c] += h
        Em[r, c] -= h
        num.append(scale * (_bpr_loss(Ep, A, n_layers, us, ps, js, nu, w)
                            - _bpr_loss(Em, A, n_layers, us, ps, js, nu, w)) / (2 * h))
    np.testing.assert_allclose(np.concatenate([gu, gi]), num, rtol=2e-3, atol=1e-6)

    # Growth: the dense gradient of every coordinate, active or not.
    fills = eng.grow_fns(key)
    Gu = np.zeros((nu, d), np.float32)
    Gi = np.zeros((ni, d), np.float32)
    fills[0](0, nu, Gu)
    fills[1](2, ni, Gi[2:])  # a chunk not starting at row 0
    fills[1](0, 2, Gi[:2])
    want = _bpr_layer0_gradient(E, A, n_layers, us, ps, js, nu, data.nnz, w)
    np.testing.assert_allclose(np.vstack([Gu, Gi]), want, rtol=1e-3, atol=1e-7)


def _bpr_layer0_gradient(E, A, n_layers, us, ps, js, nu, n, w=None):
    """The full-gradient reference ``dL/dE0 = sum_l w_l A^l dL/dF`` of the BPR samples
    over ``n`` (float64, dense; ``w`` None: the mean)."""
    F = _final(E, A, n_layers, w)
    x = np.einsum("bd,bd->b", F[us], F[nu + ps] - F[nu + js])
    g = -1.0 / (1.0 + np.exp(x)) / n
    G = np.zeros_like(F)
    np.add.at(G, us, g[:, None] * (F[nu + ps] - F[nu + js]))
    np.add.at(G, nu + ps, g[:, None] * F[us])
    np.add.at(G, nu + js, -g[:, None] * F[us])
    return _final(G, A, n_layers, w)


@pytest.mark.parametrize("density", [0.05, 0.6])
def test_stale_forward_gradient_is_exact_for_the_reused_embeddings(density):
    """propagate_every=2: the second batch's gradient is the exact gradient of its loss
    on the final embeddings of E0 before the first step (not of the stepped E0)."""
    X, users, items, data, eng = _bpr_engine(density, halves=True, propagate_every=2)
    (nu, ni), n_layers = X.shape, eng.n_layers
    half = eng.batch
    E_stale = dense_e0(users, items)
    key = np.uint64(7)
    _, gu, gi = eng.layer0_gradient(key, 0, half, True)
    eng._step(gu, gi, np.float32(0.1))
    E_now = dense_e0(users, items)
    assert not np.allclose(E_now, E_stale)
    loss, gu, gi = eng.layer0_gradient(key, half, half, False)
    us, ps, js = (eng._work[0][r, :half] for r in range(3))
    keep = js >= 0
    us, ps, js = us[keep], ps[keep], js[keep]
    A = dense_a_hat(X)
    scale = keep.sum() / half
    assert loss / half == pytest.approx(scale * _bpr_loss(E_stale, A, n_layers, us, ps, js, nu),
                                        rel=1e-4)
    want = _bpr_layer0_gradient(E_stale, A, n_layers, us, ps, js, nu, half)
    coords = [(r, c) for r in range(nu) for c in users.indices[users.indptr[r]:users.indptr[r + 1]]]
    coords += [(nu + r, c) for r in range(ni)
               for c in items.indices[items.indptr[r]:items.indptr[r + 1]]]
    np.testing.assert_allclose(np.concatenate([gu, gi]), [want[r, c] for r, c in coords],
                               rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("every, n_batches, forwards", [(1, 5, 5), (2, 5, 3), (4, 5, 2),
                                                        (9, 5, 1)])
def test_propagate_every_sets_the_forwards_per_epoch(monkeypatch, every, n_batches, forwards):
    X = make_interactions(30, 20, 200, random_state=1)
    calls = []
    forward = LightGCNEngine._forward

    def counted(self):
        calls.append(1)
        return forward(self)

    monkeypatch.setattr(LightGCNEngine, "_forward", counted)
    est = small(batch_size=-(-X.nnz // n_batches), propagate_every=every, max_iter=2,
                update_interval=10).fit(X)
    assert len(calls) == 2 * forwards
    assert est.batch_size_ == -(-X.nnz // n_batches)


def test_batch_size_auto_follows_the_data():
    assert auto_batch_size(1) == 8192
    assert auto_batch_size(16 * 8192) == 8192
    assert auto_batch_size(16 * 8192 + 1) == 8193
    assert auto_batch_size(1_000_000) == 62500
    X = make_interactions(30, 20, 200, random_state=1)
    assert small(batch_size="auto", max_iter=1).fit(X).batch_size_ == 8192


def _softmax_loss(E, A, n_layers, us, ps, ws, negs, nu, n_items, tau, X):
    """Mean sampled-softmax loss (cosine logits, shared negatives, log-q) in float64."""
    F = np.mean([np.linalg.matrix_power(A, ell) @ E for ell in range(n_layers + 1)], axis=0)
    unit = F / np.linalg.norm(F, axis=1, keepdims=True)
    U, P, N = unit[us], unit[nu + ps], unit[nu + negs]
    z0 = np.einsum("bd,bd->b", U, P) / tau
    Z = U @ N.T / tau - np.log(len(negs) / n_items)
    Z[X[us][:, negs].toarray() != 0] = -np.inf  # the users' items are no negatives
    lse = np.logaddexp(z0, np.logaddexp.reduce(Z, axis=1))
    return float(np.sum(ws * (lse - z0)) / len(us))


@pytest.mark.parametrize("density", [0.05, 0.6])
def test_softmax_layer0_gradient_matches_finite_differences(density):
    X = make_interactions(12, 9, 40, random_state=3)
    X.data[:] = np.linspace(0.5, 2.0, X.nnz)  # weighted samples
    nu, ni = X.shape
    d, n_layers, tau = 10, 2, 0.5
    users, items = tables(X, d, density, seed=4)
    data = TrainData.from_matrix(X)
    graph = Graph.from_pattern(data.x_indptr, data.x_indices, ni)
    n = 16
    eng = LightGCNEngine(data, users, items, graph, n_layers=n_layers, learning_rate=0.1,
                         alpha=0.0, optimizer="adam", batch_size=n, loss="softmax",
                         n_negatives=5, temperature=tau)
    key = np.uint64(7)
    loss, gu, gi = eng.layer0_gradient(key, 0, n)
    us, ps, ws, negs = (a.copy() for a in eng._soft)
    hits = X[us][:, negs].toarray() != 0
    assert hits.any() and not hits.all()  # left-out negatives are exercised
    A = dense_a_hat(X)
    E = dense_e0(users, items)

    def f(E):
        return _softmax_loss(E, A, n_layers, us, ps, ws, negs, nu, ni, tau, X)

    assert loss / n == pytest.approx(f(E), rel=1e-4)
    coords = [(r, c) for r in range(nu) for c in users.indices[users.indptr[r]:users.indptr[r + 1]]]
    coords += [(nu + r, c) for r in range(ni)
               for c in items.indices[items.indptr[r]:items.indptr[r + 1]]]
    num = []
    h = 1e-6
    for r, c in coords:
        Ep, Em = E.copy(), E.copy()
        Ep[r, c] += h
        Em[r, c] -= h
        num.append((f(Ep) - f(Em)) / (2 * h))
    np.testing.assert_allclose(np.concatenate([gu, gi]), num, rtol=2e-3, atol=1e-5)
    # L2 weights: users and positives per occurrence, each shared negative once.
    cu, ci = eng._counts
    np.testing.assert_allclose(cu, np.bincount(us, minlength=nu) / n, rtol=1e-6)
    np.testing.assert_allclose(ci, (np.bincount(ps, minlength=ni)
                                    + np.bincount(negs, minlength=ni)) / n, rtol=1e-6)


def test_l2_term_is_on_the_batch_rows_only():
    X = make_interactions(12, 9, 40, random_state=3)
    users, items = tables(X, 4, 1.0, slots=2)
    data = TrainData.from_matrix(X)
    graph = Graph.from_pattern(data.x_indptr, data.x_indices, 9)
    eng = LightGCNEngine(data, users, items, graph, n_layers=2, learning_rate=0.01,
                         alpha=1.0, optimizer="adagrad", batch_size=5)
    eng.layer0_gradient(np.uint64(1), 0, 5)
    us, ps, js = (eng._work[0][r, :5] for r in range(3))
    ok = js >= 0
    cu, ci = eng._counts
    # Each row's weight is its occurrences in the batch over the batch size.
    np.testing.assert_allclose(cu, np.bincount(us[ok], minlength=12) / 5)
    np.testing.assert_allclose(ci, (np.bincount(ps[ok], minlength=9)
                                    + np.bincount(js[ok], minlength=9)) / 5)
    # A step with a zero loss gradient moves only those rows, by alpha * count * w.
    w = users.weights.copy()
    K.step_table(users.indptr, users.values_buf, np.zeros(users.nnz, np.float32), cu,
                 np.float32(1.0), np.float32(0.01), np.float32(0.9), np.float32(0.999),
                 np.float32(1e-8), K.ADAGRAD)
    rows = np.repeat(np.arange(12), users.row_nnz())
    g = cu[rows] * w
    want = w - 0.01 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(users.weights, want, rtol=1e-5, atol=1e-7)
    assert np.array_equal(users.weights[cu[rows] == 0], w[cu[rows] == 0])


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_budget_is_exact_after_every_epoch_and_pattern_moves(loss):
    X, _ = blocks()
    est = small(density=0.3, max_iter=9, loss=loss, n_negatives=8).fit(X)
    budget = round(0.3 * 8 * sum(X.shape))
    assert est.n_active_ == budget
    assert len(est.history_) == est.n_iter_ == 9
    assert all(h["nnz"] == budget for h in est.history_)
    assert all(h["pruned"] == h["grown"] for h in est.history_)
    assert sum(h["grown"] for h in est.history_) > 0
    # The global budget moves weights between the tables.
    assert len({h["nnz_user"] for h in est.history_}) > 1
    assert est.user_factors_.nnz + est.item_factors_.nnz == budget
    assert est.user_table_.values_buf.shape[1] == 1  # optimiser state dropped
    assert est.nbytes_ < est.dense_nbytes_


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_recovers_held_out_item_of_the_users_group(loss):
    X, held = blocks()
    est = small(density=0.5, max_iter=40, loss=loss, n_negatives=8).fit(X)
    ids, _ = est.recommend(np.arange(X.shape[0]), n=1)
    assert np.mean(ids[:, 0] == held) >= 0.9


def test_history_of_a_training_user_is_its_embedding_without_layer_zero():
    X = make_interactions(40, 25, 300, random_state=2)
    est = small().fit(X)
    a = 1.0 / (est.n_layers_ + 1)
    E0 = est.user_table_.dense_rows(np.arange(40))
    want = est.user_embeddings_ - a * E0
    np.testing.assert_allclose(est._fold_in(X), want, rtol=1e-4, atol=1e-6)
    ids, _ = est.recommend_for_history(X[:3], n=4)
    scores = est.decision_function(X[:3])
    np.testing.assert_allclose(scores, want[:3] @ est.item_embeddings_.T, rtol=1e-4, atol=1e-6)
    assert ids.shape == (3, 4) and not any(X[r, ids[r]].nnz for r in range(3))


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_reproducible_and_independent_of_threads(loss):
    X = make_interactions(40, 25, 300, random_state=2)
    a = small(n_threads=1, loss=loss, n_negatives=8).fit(X)
    b = small(n_threads=2, loss=loss, n_negatives=8).fit(X)
    assert np.array_equal(a.user_table_.weights, b.user_table_.weights)
    assert np.array_equal(a.item_table_.indices, b.item_table_.indices)
    c = small(random_state=1, loss=loss, n_negatives=8).fit(X)
    assert not np.array_equal(a.item_table_.weights, c.item_table_.weights)


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_save_load_serving_and_pickle_score_the_same(tmp_path, loss):
    X = make_interactions(40, 25, 300, random_state=2)
    est = small(loss=loss, n_negatives=8).fit(X)
    # Softmax models rank by cosine order: unit item embeddings.
    assert est.unit_items_ == (loss == "softmax")
    norms = np.linalg.norm(est.item_embeddings_, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == (loss == "softmax")
    users = np.arange(10)
    want_ids, want_scores = est.recommend(users, n=5)
    path = est.save(tmp_path / "gcn.npz")
    for other in (load(path), load_model(path), pickle.loads(pickle.dumps(est))):
        ids, scores = other.recommend(users, n=5)
        assert np.array_equal(ids, want_ids)
        np.testing.assert_array_equal(scores, want_scores)
        np.testing.assert_array_equal(other.score_items([0, 1], [[1, 2], [3, 4]]),
                                      est.score_items([0, 1], [[1, 2], [3, 4]]))
        np.testing.assert_array_equal(other.recommend_for_history(X[:4], n=3)[0],
                                      est.recommend_for_history(X[:4], n=3)[0])
        np.testing.assert_array_equal(other.similar_items([0, 1], n=3)[0],
                                      est.similar_items([0, 1], n=3)[0])
    assert isinstance(load_model(path), ServedLightGCN)
    assert load(path).nbytes_ == est.nbytes_
    assert load(path).unit_items_ == load_model(path).unit_items_ == est.unit_items_


def test_nbytes_counts_tables_and_graph(tmp_path):
    X = make_interactions(40, 25, 300, random_state=2)
    est = small(density=0.25).fit(X)
    # nbytes_ is exactly what the file stores for the tables and the graph.
    with np.load(est.save(tmp_path / "m.npz")) as z:
        stored = {k: z[k] for k in z.files}
    parts = ("user_table_.", "item_table_.", "seen_.")
    assert est.nbytes_ == sum(a.nbytes for k, a in stored.items() if k.startswith(parts))
    # Narrow exact types: uint8 columns of 8 components, uint8 row counts,
    # uint8 item indices (25 items), no values for the binary graph.
    assert stored["user_table_.indices"].dtype == np.uint8
    assert stored["seen_.indices"].dtype == np.uint8 and "seen_.data" not in stored
    graph = sum(a.nbytes for k, a in stored.items() if k.startswith("seen_."))
    assert est.dense_nbytes_ == 4 * 8 * sum(X.shape) + graph
    loaded = load(tmp_path / "m.npz")
    assert loaded.seen_.indices.dtype == est.seen_.indices.dtype
    rows = np.arange(5)
    assert np.array_equal(loaded.recommend(rows, n=4)[0], est.recommend(rows, n=4)[0])


def test_warm_start_continues_and_refuses_other_layers():
    X = make_interactions(40, 25, 300, random_state=2)
    est = small(warm_start=True, max_iter=2).fit(X)
    est.fit(X)
    assert est.n_iter_ == 4 and len(est.history_) == 4
    est.set_params(n_layers=2)
    with pytest.raises(ValueError, match="n_layers"):
        est.fit(X)


def test_early_stopping_scores_on_the_training_graph():
    X = make_interactions(60, 30, 600, random_state=5)
    est = small(early_stopping=True, max_iter=4).fit(X)
    assert est.best_validation_score_ is not None
    assert "_train_graph" not in vars(est)


@pytest.mark.parametrize("kw, match", [
    (dict(n_layers=-1), "n_layers must be an integer >= 0"),
    (dict(n_layers=1.5), "n_layers must be an integer >= 0"),
    (dict(loss="ssm"), "loss must be one of"),
    (dict(loss="softmax", n_negatives=0), "n_negatives must be an integer >= 1"),
    (dict(loss="softmax", n_negatives=2.5), "n_negatives must be an integer >= 1"),
    (dict(loss="softmax", temperature=0.0), "temperature must be a positive finite"),
    (dict(loss="softmax", temperature=float("nan")), "temperature must be a positive finite"),
    (dict(loss="softmax", temperature="0.2"), "temperature must be a positive finite"),
    (dict(optimizer="sgd"), "optimizer must be one of"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size="big"), "batch_size must be an integer >= 1"),
    (dict(batch_size=None), "batch_size must be an integer >= 1"),
    (dict(propagate_every=0), "propagate_every must be an integer >= 1"),
    (dict(propagate_every=1.5), "propagate_every must be an integer >= 1"),
    (dict(backend="tpu"), r"backend must be one of \(.cpu., .cuda.\); got .tpu."),
    (dict(loss="softmax", backend="tpu"), r"backend must be one of \(.cpu., .cuda.\); got .tpu."),
    (dict(density=0.0), "density"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(layer_weights=[1, 1, 1]), "layer_weights must hold n_layers"),
    (dict(layer_weights=[1, 1, -1, 1]), "layer_weights must hold n_layers"),
    (dict(layer_weights=[1, 1, 1, 0]), "with a positive last one"),
    (dict(layer_weights=[1, 1, 1, float("inf")]), "finite"),
    (dict(layer_weights="depth"), "layer_weights must hold n_layers"),
    (dict(layer_weights=[[1, 1], [1, 1]]), "layer_weights must hold n_layers"),
])
def test_bad_parameters_raise_clear_errors(kw, match):
    X = make_interactions(20, 10, 80, random_state=0)
    with pytest.raises(ValueError, match=match):
        small(**kw).fit(X)


def test_bad_input_raises():
    est = small().fit(make_interactions(20, 10, 80, random_state=0))
    with pytest.raises(ValueError, match="features"):
        est.recommend_for_history(sp.csr_matrix((2, 7)))
    with pytest.raises(ValueError):
        est.recommend([25])
    with pytest.raises(ValueError):
        small().fit(sp.csr_matrix(-np.ones((4, 3))))


# --- workflows (issue 15) ------------------------------------------------------------
def _raw_dataset(X):
    from sparse_rec.datasets import from_frame

    C = X.tocoo()
    return from_frame({"user_id": np.array([f"u{r:02d}" for r in C.row]),
                       "item_id": np.array([f"i{c:02d}" for c in C.col])})


def test_recommend_ids_and_indices_on_estimator_and_served(tmp_path):
    X = make_interactions(40, 25, 300, random_state=2)
    ds = _raw_dataset(X)
    est = small().fit(ds)
    assert list(est.user_ids_) == list(ds.user_ids)
    served = load_model(est.save(tmp_path / "gcn.npz"))
    rows = ds.user_index(["u03", "u00"])
    np.testing.assert_array_equal(est.user_index(["u03", "u00"]), rows)
    np.testing.assert_array_equal(served.item_index(["i04"]), ds.item_index(["i04"]))
    ids, ref = est.recommend(rows, n=5)
    for model in (est, served):
        items, scores = model.recommend_ids(["u03", "u00"], n=5)
        np.testing.assert_array_equal(items, np.asarray(ds.item_ids)[ids])
        np.testing.assert_array_equal(scores, ref)
        with pytest.raises(KeyError, match="'nobody'"):
            model.recommend_ids(["nobody"])


def test_similar_users_is_cosine_of_final_embeddings(tmp_path):
    X = make_interactions(40, 25, 300, random_state=2)
    est = small().fit(X)
    F = est.user_embeddings_.astype(np.float64)
    U = F / np.linalg.norm(F, axis=1)[:, None]
    S = U @ U.T
    for model in (est, load_model(est.save(tmp_path / "gcn.npz"))):
        ids, scores = model.similar_users([0, 7], n=4)
        for b, u in enumerate([0, 7]):
            s = S[u].copy()
            s[u] = -np.inf
            assert u not in ids[b]
            np.testing.assert_allclose(scores[b], np.sort(s)[::-1][:4], atol=1e-5)
            np.testing.assert_allclose(S[u, ids[b]], scores[b], atol=1e-5)


def test_explain_splits_the_score_over_the_history_exactly(tmp_path):
    X = make_interactions(40, 25, 300, random_state=2)
    est = small().fit(X)
    a = 1.0 / (est.n_layers_ + 1)
    user, hist = 5, X[5].indices
    served = load_model(est.save(tmp_path / "gcn.npz"))
    for item in (0, 11, int(hist[0])):
        e = est.explain(user, item, n=len(hist))
        score = est.score_items([user], [[item]])[0, 0]
        assert set(e.items.tolist()) == set(hist.tolist())
        assert np.isclose(e.score, score, atol=1e-6)
        assert (np.diff(e.contributions) <= 0).all()
        # The rest is the user's own layer-0 term, computed here independently.
        own = a * est.user_table_.dense_rows([user])[0] @ est.item_embeddings_[item]
        assert np.isclose(e.rest, own, atol=1e-5)
        # Item j's term: the fold-in of the history {j} (another code path,
        # the kernel) scaled by 1 / sqrt(|h_u|), the user's degree.
        one = sp.csr_matrix((np.ones(len(hist)), e.items, np.arange(len(hist) + 1)),
                            shape=(len(hist), X.shape[1]))
        terms = est._fold_in(one) @ est.item_embeddings_[item] / np.sqrt(len(hist))
        np.testing.assert_allclose(e.contributions, terms, rtol=1e-4, atol=1e-6)
        s = served.explain(user, item, n=2)
        np.testing.assert_array_equal(s.items, e.items[:2])
        np.testing.assert_allclose(s.contributions, e.contributions[:2])
    # Without propagation the history does not enter a fitted user's score.
    flat = small(n_layers=0).fit(X)
    e = flat.explain(user, 3, n=3)
    assert (e.contributions == 0).all()
    assert np.isclose(e.rest, flat.score_items([user], [[3]])[0, 0], atol=1e-6)


def test_partial_fit_users_folds_in_and_keeps_items_and_others(tmp_path):
    X = make_interactions(60, 40, 700, random_state=0)
    est = small().fit(X[:50])
    H = sp.csr_matrix(X[50:])
    expected = est.recommend_for_history(H, n=6)
    refit = est.recommend_for_history(H[:1], n=6)
    others = est.recommend(np.arange(3, 50), n=6)
    Fi, n_active = est.item_embeddings_, est.n_active_
    # User 2 is refitted with user 50's history; users 50..59 are added.
    est.partial_fit_users([2, *range(50, 60)], sp.vstack([H[:1], H]))
    assert est.n_users_ == 60 and est.seen_.shape == (60, 40)
    assert est.user_table_.n_rows == 60
    np.testing.assert_array_equal(est.seen_[50:].toarray(), H.toarray())
    np.testing.assert_array_equal(est.seen_[2].toarray(), H[:1].toarray())
    ids, scores = est.recommend(np.arange(50, 60), n=6)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(est.recommend([2], n=6)[0], refit[0])
    # The graph the items are propagated over is the fitted one.
    np.testing.assert_array_equal(est.item_embeddings_, Fi)
    np.testing.assert_array_equal(est.recommend(np.arange(3, 50), n=6)[0], others[0])
    np.testing.assert_array_equal(est.folded_users_, [2, *range(50, 60)])
    np.testing.assert_array_equal(est.folded_graph_[0].indices, X[2].indices)
    assert est.folded_graph_[1:].nnz == 0
    assert est.n_active_ == n_active == est.user_table_.nnz + est.item_table_.nnz
    # nbytes_ is what the file stores for the tables, the graph and the folding.
    with np.load(est.save(tmp_path / "folded.npz")) as z:
        parts = ("user_table_.", "item_table_.", "seen_.", "folded_graph_.", "folded_users_")
        assert est.nbytes_ == sum(z[k].nbytes for k in z.files if k.startswith(parts))
    # A folded user's score is its history's alone (no layer-0 term).
    e = est.explain(55, 7, n=40)
    assert abs(e.rest) < 1e-6
    assert np.isclose(e.score, est.score_items([55], [[7]])[0, 0], atol=1e-6)
    # Refitting user 2 again keeps its fitted edges; a file keeps the folding.
    est.partial_fit_users([2], H[1:2])
    np.testing.assert_array_equal(est.folded_graph_[0].indices, X[2].indices)
    np.testing.assert_array_equal(est.item_embeddings_, Fi)
    path = est.save(tmp_path / "gcn.npz")
    for other in (load(path), load_model(path), pickle.loads(pickle.dumps(est))):
        np.testing.assert_array_equal(other.recommend(np.arange(60), n=6)[0],
                                      est.recommend(np.arange(60), n=6)[0])
        assert other.nbytes_ == est.nbytes_
    # A new fit propagates over all of seen_ again.
    assert len(small().fit(X).folded_users_) == 0


def test_partial_fit_items_is_not_defined():
    X = make_interactions(40, 25, 300, random_state=2)
    est = small().fit(X)
    with pytest.raises(NotImplementedError, match="edges of the graph"):
        est.partial_fit_items([25], sp.csr_matrix((40, 1)))


def test_loaded_folded_users_are_checked(tmp_path):
    X = make_interactions(40, 25, 300, random_state=2)
    est = small().fit(X[:35]).partial_fit_users(np.arange(35, 40), X[35:])
    est.folded_users_ = np.array([0, 1, 2, 3, 99])
    path = est.save(tmp_path / "bad.npz")
    for loader in (load, load_model):
        with pytest.raises(ValueError, match="folded_users_ must be increasing user indices"):
            loader(path)


def test_layer_weights_are_fitted_saved_and_fold_in_exactly(tmp_path):
    """Weighted layers: normalised, in every score path, kept by a model file; a training
    user's fold-in is its final embedding less ``w_0 E0_u``; the mean is the default."""
    X = make_interactions(40, 25, 300, random_state=2)
    mean = small().fit(X)
    np.testing.assert_allclose(mean.layer_weights_, 0.25)
    same = small(layer_weights=[2, 2, 2, 2]).fit(X)  # normalised: the mean again
    np.testing.assert_array_equal(same.user_embeddings_, mean.user_embeddings_)
    est = small(layer_weights=[1, 2, 3, 4]).fit(X)
    np.testing.assert_allclose(est.layer_weights_, [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    assert est.layer_weights_.dtype == np.float32
    assert not np.allclose(est.user_embeddings_, mean.user_embeddings_)
    # The final embeddings from layer 0 by a dense reference with the fitted weights.
    A = dense_a_hat(X)
    F = _final(dense_e0(est.user_table_, est.item_table_), A, 3, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(np.vstack([est.user_embeddings_, est.item_embeddings_]), F,
                               rtol=1e-4, atol=1e-6)
    E0 = est.user_table_.dense_rows(np.arange(40))
    np.testing.assert_allclose(est._fold_in(X), est.user_embeddings_ - 0.1 * E0,
                               rtol=1e-4, atol=1e-6)
    e = est.explain(5, 3, n=len(X[5].indices))
    assert np.isclose(e.rest, 0.1 * E0[5] @ est.item_embeddings_[3], atol=1e-5)
    assert np.isclose(e.contributions.sum() + e.rest, est.score_items([5], [[3]])[0, 0],
                      atol=1e-5)
    path = est.save(tmp_path / "w.npz")
    for other in (load(path), load_model(path)):
        np.testing.assert_array_equal(other.layer_weights_, est.layer_weights_)
        np.testing.assert_array_equal(other.score_items([0, 1], [[1, 2], [3, 4]]),
                                      est.score_items([0, 1], [[1, 2], [3, 4]]))
        np.testing.assert_array_equal(other.recommend_for_history(X[:4], n=3)[0],
                                      est.recommend_for_history(X[:4], n=3)[0])
    # A loaded model checks them; a file without them (older) holds the mean.
    bad = load(path)
    bad.layer_weights_ = np.array([0.5, 0.5], np.float32)
    with pytest.raises(ValueError, match="layer_weights_ must be n_layers_ . 1 = 4"):
        bad._check_loaded()
    old = load(mean.save(tmp_path / "m.npz"))
    del old.layer_weights_
    old._check_loaded()
    np.testing.assert_allclose(old.layer_weights_, 0.25)
