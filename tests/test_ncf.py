"""DSLNCF: kernels against a NumPy NeuMF, prune/grow, known answers, errors, API."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from test_mf import blocks as mf_blocks

from sparse_rec._base import TrainData
from sparse_rec._dsl import PruneGrow
from sparse_rec._kernels import _bpr, _rng
from sparse_rec._kernels import _ncf as KN
from sparse_rec._ncf import DSLNCF
from sparse_rec._ncf.scoring import _tab
from sparse_rec.backends.cpu import NCFEngine, _interactions
from sparse_rec.backends.cpu import half_bits as _half_bits
from sparse_rec.exceptions import NotFittedError

# --------------------------------------------------------------------------- #
# A NumPy NeuMF written from the paper's equations, in float64.
# --------------------------------------------------------------------------- #


def embs(tables):
    """The embedding tables as the kernels take them: one tuple of array triples."""
    return tuple(_tab(t) for t in tables)


def random_net(n_users=5, n_items=7, d=4, hidden=(6, 3), density=0.6, seed=0):
    """Tables of a model at ``density`` with random (not small) weights."""
    est = DSLNCF(density=density)
    emb, net = est._init_tables(n_users, n_items, d, hidden, seed)
    rng = np.random.default_rng(seed)
    # Random patterns too (the fit's initial pattern is on leading columns).
    for t in emb + net.layers:
        t.values_buf[: t.nnz, 0] = rng.normal(0, 0.5, t.nnz)
    net.dense_v[:, 0] = rng.normal(0, 0.5, net.dense_v.shape[0])
    net.pack()
    return emb, net


def random_pattern_net(n_users=5, n_items=7, d=4, hidden=(6, 3), density=0.5, seed=0):
    """As :func:`random_net`, with uniformly random embedding patterns."""
    from sparse_rec._table import SparseEmbeddingTable

    emb, net = random_net(n_users, n_items, d, hidden, density, seed)
    rng = np.random.default_rng(seed + 1)
    out = []
    for t in emb:
        r = SparseEmbeddingTable.random(t.n_rows, t.n_cols, t.nnz, n_slots=3, seed=seed + 5)
        r.values_buf[:, 0] = rng.normal(0, 0.5, r.nnz)
        out.append(r)
    return out, net


def params(emb, net):
    """Dense float64 copies of every parameter (inactive weights are 0)."""
    dv = net.dense_v[:, 0].astype(np.float64)
    hidden = tuple(net.hidden)

    def dense(t):
        return t.dense_rows(np.arange(t.n_rows)).astype(np.float64)

    return dict(
        ug=dense(emb[0]), ig=dense(emb[1]), um=dense(emb[2]), im=dense(emb[3]),
        W=[dense(t) for t in net.layers],
        b=[dv[net.b_off[t]: net.b_off[t] + h] for t, h in enumerate(hidden)],
        hg=dv[net.h_off: net.h_off + net.d], hm=dv[net.h_off + net.d: net.o_off],
        o=dv[net.o_off],
    )


def ref_forward(P, u, i):
    hs = [np.concatenate([P["um"][u], P["im"][i]])]
    for W, b in zip(P["W"], P["b"], strict=True):
        hs.append(np.maximum(hs[-1] @ W + b, 0.0))
    x = P["o"] + P["hg"] @ (P["ug"][u] * P["ig"][i]) + P["hm"] @ hs[-1]
    return x, hs


def ref_grads(P, u, i, y, c=1.0):
    """Gradients of c * BCE(sigmoid(logit(u, i)), y) for every parameter (dense)."""
    x, hs = ref_forward(P, u, i)
    g = c * (1.0 / (1.0 + np.exp(-x)) - y)
    pg, qg = P["ug"][u], P["ig"][i]
    out = dict(ug=g * P["hg"] * qg, ig=g * P["hg"] * pg, hg=g * pg * qg, hm=g * hs[-1], o=g)
    delta = g * P["hm"] * (hs[-1] > 0)
    dW, db = [None] * len(P["W"]), [None] * len(P["W"])
    for t in range(len(P["W"]) - 1, -1, -1):
        dW[t] = np.outer(hs[t], delta)
        db[t] = delta
        dh = P["W"][t] @ delta
        delta = dh * (hs[t] > 0) if t > 0 else dh
    d = len(pg)
    out.update(um=delta[:d], im=delta[d:], W=dW, b=db)
    return out


def loss_of(P, u, i, y):
    x, _ = ref_forward(P, u, i)
    return np.logaddexp(0.0, x) - y * x


def test_numpy_reference_matches_finite_differences():
    emb, net = random_net(density=1.0)
    P = params(emb, net)
    u, i, y = 2, 5, 1.0
    g = ref_grads(P, u, i, y)
    eps = 1e-6
    for name, idx, got in [("ug", (u, 1), g["ug"][1]), ("im", (i, 2), g["im"][2]),
                           ("hg", (0,), g["hg"][0])]:
        P[name][idx] += eps
        up = loss_of(P, u, i, y)
        P[name][idx] -= 2 * eps
        down = loss_of(P, u, i, y)
        P[name][idx] += eps
        assert got == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)
    for t, W in enumerate(P["W"]):
        W[1, 0] += eps
        up = loss_of(P, u, i, y)
        W[1, 0] -= 2 * eps
        down = loss_of(P, u, i, y)
        W[1, 0] += eps
        assert g["W"][t][1, 0] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


# --------------------------------------------------------------------------- #
# Kernels against the reference.
# --------------------------------------------------------------------------- #


def buffers(net):
    d = net.d
    return (np.zeros(net.n_act, np.float32), np.zeros(net.n_act, np.float32),
            np.zeros(d, np.float32), np.zeros(d, np.float32), np.zeros(4 * d, np.float32))


@pytest.mark.parametrize("density", [1.0, 0.5])
def test_forward_and_backward_match_reference_at_active_weights(density):
    emb, net = random_pattern_net(density=density, seed=3)
    P = params(emb, net)
    act, dact, pg, qg, eg = buffers(net)
    d = net.d
    for u, i, y in [(0, 0, 1.0), (2, 5, 0.0), (4, 6, 1.0), (1, 3, 0.0)]:
        x = KN.forward(u, i, d, act, pg, qg, embs(emb), net.kernel_net())
        x_ref, _ = ref_forward(P, u, i)
        assert x == pytest.approx(x_ref, rel=1e-5, abs=1e-6)
        gm = np.zeros(net.m_w.shape[0], np.float32)
        gd = np.zeros(net.dense_v.shape[0], np.float32)
        slope = 1.0 / (1.0 + np.exp(-x)) - y
        KN.backward(np.float32(slope), u, i, d, act, dact, pg, qg, eg, embs(emb),
                    net.kernel_net(), gm, gd, True, False, act[:0], net.w_row0[:0])
        R = ref_grads(P, u, i, y)
        np.testing.assert_allclose(eg[:d], R["ug"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(eg[d: 2 * d], R["ig"], rtol=1e-4, atol=1e-6)
        for side, row, name in ((2, u, "um"), (3, i, "im")):
            t = emb[side]
            cols = t.indices[t.indptr[row]: t.indptr[row + 1]].astype(np.int64)
            np.testing.assert_allclose(eg[side * d + cols], R[name][cols], rtol=1e-4, atol=1e-6)
        # MLP weights: gradients at the active entries, in packed order.
        want = np.concatenate([
            R["W"][t][np.repeat(np.arange(L.n_rows), L.row_nnz()), L.indices.astype(np.int64)]
            for t, L in enumerate(net.layers)])
        np.testing.assert_allclose(gm, want, rtol=1e-4, atol=1e-6)
        want_d = np.concatenate(R["b"] + [R["hg"], R["hm"], [R["o"]]])
        np.testing.assert_allclose(gd, want_d, rtol=1e-4, atol=1e-6)


def test_backward_gives_gradients_at_inactive_coordinates_for_growth():
    emb, net = random_pattern_net(density=0.4, seed=5)
    P = params(emb, net)
    act, dact, pg, qg, eg = buffers(net)
    d = net.d
    sizes = [int(a * b) for a, b in zip(net.n_in, net.n_out, strict=True)]
    w_off = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    u, i, y = 3, 2, 1.0
    x = KN.forward(u, i, d, act, pg, qg, embs(emb), net.kernel_net())
    gw = np.zeros(sum(sizes), np.float32)
    slope = 1.0 / (1.0 + np.exp(-x)) - y
    KN.backward(np.float32(slope), u, i, d, act, dact, pg, qg, eg, embs(emb), net.kernel_net(),
                act[:0], act[:0], False, True, gw, w_off)
    R = ref_grads(P, u, i, y)
    # Every coordinate of the MLP rows, active or not.
    np.testing.assert_allclose(eg[2 * d: 3 * d], R["um"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(eg[3 * d:], R["im"], rtol=1e-4, atol=1e-6)
    for t in range(len(sizes)):
        np.testing.assert_allclose(gw[w_off[t]: w_off[t] + sizes[t]], R["W"][t].ravel(),
                                   rtol=1e-4, atol=1e-6)


def small_data(seed=0, n_users=6, n_items=8, per_user=3):
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        items = rng.choice(n_items, per_user, replace=False)
        rows += [u] * per_user
        cols += list(items)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    X.sort_indices()
    return X


def draw_int(key, sample, stream, n):
    """The kernels' counter-based draw of an integer in [0, n)."""
    bits = _rng.draw(np.uint64(key), np.int64(sample), np.int64(stream))
    return int(_rng.randint(np.uint64(bits), np.int64(n)))


def test_growth_gradients_of_embedding_rows_match_reference():
    X = small_data()
    data = TrainData.from_matrix(X)
    emb, net = random_pattern_net(n_users=6, n_items=8, density=0.5, seed=2)
    P = params(emb, net)
    d, k_neg, m = net.d, 4, 2
    key = np.uint64(99)
    n_items = X.shape[1]
    neg_per_item = k_neg * data.nnz / n_items
    nnz = data.nnz
    for which, name in enumerate(("ug", "ig", "um", "im")):
        n_rows = emb[which].n_rows
        G = np.zeros((n_rows, d), np.float32)
        KN.grad_embedding_rows(
            which, 0, n_rows, G, m, key, float(k_neg), neg_per_item, _interactions(data),
            n_items, d, embs(emb), net.kernel_net(), net.n_act,
        )
        want = np.zeros((n_rows, d))
        for r in range(n_rows):
            if which % 2 == 0:
                start, deg = data.x_indptr[r], data.x_indptr[r + 1] - data.x_indptr[r]
            else:
                start, deg = data.xt_indptr[r], data.xt_indptr[r + 1] - data.xt_indptr[r]
            n = min(deg, m)
            pairs = []
            for t in range(n):
                pos = start + t if deg <= m else start + draw_int(key, start + t, 0, deg)
                if which % 2 == 0:
                    pairs.append((r, data.x_indices[pos], 1.0, deg / n))
                else:
                    pairs.append((data.xt_indices[pos], r, 1.0, deg / n))
            if which % 2 == 0:
                for t in range(n, 2 * n):
                    j = _bpr.sample_negative(key, start + t, r, n_items, data.f_indptr,
                                             data.f_indices)
                    if j >= 0:
                        pairs.append((r, j, 0.0, k_neg * deg / n))
            else:
                for t in range(n, n + m):
                    pos = draw_int(key, nnz + r * m + t, 9, nnz)
                    uu = data.x_rows[pos]
                    row = data.f_indices[data.f_indptr[uu]: data.f_indptr[uu + 1]]
                    if data.x_indices[pos] != r and r not in row:
                        pairs.append((uu, r, 0.0, neg_per_item / m))
            for uu, ii, y, w in pairs:
                want[r] += ref_grads(P, uu, ii, y, w)[name]
        np.testing.assert_allclose(G, want, rtol=2e-4, atol=1e-5, err_msg=name)


def test_growth_gradient_of_mlp_layers_matches_reference():
    X = small_data(seed=1)
    data = TrainData.from_matrix(X)
    emb, net = random_pattern_net(n_users=6, n_items=8, density=0.5, seed=4)
    P = params(emb, net)
    k1 = 5
    n_inst = data.nnz * k1
    hb = _half_bits(n_inst)
    key = np.uint64(7)
    sizes = [int(a * b) for a, b in zip(net.n_in, net.n_out, strict=True)]
    w_off = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    n_s = 40
    out = np.zeros(sum(sizes), np.float32)
    KN.grad_mlp_dense(n_s, 4, key, n_inst, k1, hb, out, _interactions(data), X.shape[1],
                      net.d, embs(emb), net.kernel_net(), net.n_act, w_off)
    want = [np.zeros((a, b)) for a, b in zip(net.n_in, net.n_out, strict=True)]
    for s in range(n_s):
        t = KN.permute(key, s, n_inst, hb)
        u, i, y, c = KN.instance(t, k1, key, data.x_indices, data.x_weight, data.x_rows,
                                 data.f_indptr, data.f_indices, X.shape[1])
        if i < 0:
            continue
        R = ref_grads(P, u, i, y, c * n_inst / n_s)
        for layer in range(len(want)):
            want[layer] += R["W"][layer]
    np.testing.assert_allclose(out, np.concatenate([w.ravel() for w in want]), rtol=2e-4,
                               atol=1e-4)


@pytest.mark.parametrize("n", [1, 2, 5, 17, 64, 1000])
def test_instance_order_is_a_permutation(n):
    hb = _half_bits(n)
    got = [KN.permute(np.uint64(3), s, n, hb) for s in range(n)]
    assert sorted(got) == list(range(n))
    if n >= 17:
        assert got != list(range(n))


def adam(w, m, v, g, step, lr):
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    w = w - lr / (1 - 0.9**step) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**step) + 1e-8)
    return w, m, v


def test_serial_epoch_matches_numpy_mini_batch_adam():
    """Shuffled instances, BCE, batch-mean gradients, lazy Adam on touched rows."""
    X = small_data(seed=2, n_users=5, n_items=7, per_user=3)
    data = TrainData.from_matrix(X)
    emb, net = random_pattern_net(n_users=5, n_items=7, density=0.5, seed=6)
    d = net.d
    lr, reg, batch, k1, step0 = 0.01, 0.001, 8, 3, 4
    n_inst = data.nnz * k1
    hb = _half_bits(n_inst)
    key = np.uint64(1234)
    # Reference state (weights, m, v) per parameter, before the epoch.
    P = params(emb, net)
    state = {n: (P[n].copy(), np.zeros_like(P[n]), np.zeros_like(P[n]))
             for n in ("ug", "ig", "um", "im")}
    masks = {}
    for n, t in zip(("ug", "ig", "um", "im"), emb, strict=True):
        mask = np.zeros(t.shape, bool)
        mask[np.repeat(np.arange(t.n_rows), t.row_nnz()), t.indices.astype(np.int64)] = True
        masks[n] = mask
    Wmask = []
    for L in net.layers:
        mask = np.zeros(L.shape, bool)
        mask[np.repeat(np.arange(L.n_rows), L.row_nnz()), L.indices.astype(np.int64)] = True
        Wmask.append(mask)
    Wst = [(W.copy(), np.zeros_like(W), np.zeros_like(W)) for W in P["W"]]
    dense0 = np.concatenate(P["b"] + [P["hg"], P["hm"], [P["o"]]])
    Dst = (dense0.copy(), np.zeros_like(dense0), np.zeros_like(dense0))
    b_sizes = [len(b) for b in P["b"]]
    n_batches = (n_inst + batch - 1) // batch
    for b in range(n_batches):
        cur = {n: state[n][0] for n in state}
        cur["W"] = [s[0] for s in Wst]
        dv = Dst[0]
        cur["b"] = list(np.split(dv[: sum(b_sizes)], np.cumsum(b_sizes)[:-1]))
        cur["hg"], cur["hm"], cur["o"] = dv[sum(b_sizes): sum(b_sizes) + d], \
            dv[sum(b_sizes) + d:-1], dv[-1]
        sums = {n: np.zeros_like(state[n][0]) for n in state}
        touched = {n: set() for n in state}
        gW = [np.zeros_like(W) for W in cur["W"]]
        gD = np.zeros_like(dv)
        b0, b1 = b * batch, min(n_inst, (b + 1) * batch)
        for s in range(b0, b1):
            t = KN.permute(key, s, n_inst, hb)
            u, i, y, c = KN.instance(t, k1, key, data.x_indices, data.x_weight, data.x_rows,
                                     data.f_indptr, data.f_indices, X.shape[1])
            if i < 0:
                continue
            R = ref_grads(cur, u, i, y, c)
            for n, row in (("ug", u), ("um", u), ("ig", i), ("im", i)):
                sums[n][row] += R[n]
                touched[n].add(row)
            for layer in range(len(gW)):
                gW[layer] += R["W"][layer]
            gD += np.concatenate(R["b"] + [R["hg"], R["hm"], [R["o"]]])
        nb = b1 - b0
        step = step0 + b + 1
        for n in state:
            w, m, v = state[n]
            for row in touched[n]:
                mk = masks[n][row]
                g = sums[n][row] / nb + reg * w[row]
                w2, m2, v2 = adam(w[row], m[row], v[row], g, step, lr)
                w[row][mk], m[row][mk], v[row][mk] = w2[mk], m2[mk], v2[mk]
        for layer, (W, m, v) in enumerate(Wst):
            mk = Wmask[layer]
            g = gW[layer] / nb + reg * W
            W2, m2, v2 = adam(W, m, v, g, step, lr)
            W[mk], m[mk], v[mk] = W2[mk], m2[mk], v2[mk]
        w, m, v = Dst
        r = np.zeros_like(w)
        r[sum(b_sizes): len(w) - 1] = reg  # L2 on the fusion weights only
        w[:], m[:], v[:] = adam(w, m, v, gD / nb + r * w, step, lr)
    # The kernel.
    gm = np.zeros(net.m_w.shape[0], np.float32)
    args = (n_inst, k1, batch, key, hb, step0, lr, np.float32(reg), _interactions(data),
            X.shape[1], d, embs(emb), net.kernel_net(), net.m_v, net.w_range)
    act, dact, pg, qg, _ = buffers(net)
    work = KN.Work(*(a[None] for a in (
        act, dact, pg, qg, np.zeros((batch, 4 * d), np.float32), np.zeros(batch, np.int64),
        np.zeros(batch, np.int64), gm, np.zeros(net.dense_v.shape[0], np.float32),
        np.zeros(d, np.float32))))
    KN.train_batches(0, 1, *args, work, 0)
    net.unpack()
    for n, t in zip(("ug", "ig", "um", "im"), emb, strict=True):
        np.testing.assert_allclose(t.dense_rows(np.arange(t.n_rows)), state[n][0],
                                   rtol=1e-4, atol=2e-5, err_msg=n)
    for layer, L in enumerate(net.layers):
        np.testing.assert_allclose(L.dense_rows(np.arange(L.n_rows)), Wst[layer][0],
                                   rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(net.dense_v[:, 0], Dst[0], rtol=1e-4, atol=2e-5)


def test_scoring_kernels_match_forward():
    X = small_data(seed=3, n_users=6, n_items=8)
    est = fast(density=0.5, max_iter=2).fit(X)
    from sparse_rec._ncf.scoring import _Net

    net = _Net.from_fitted(est)
    emb = [est.user_gmf_table_, est.item_gmf_table_, est.user_mlp_table_, est.item_mlp_table_]
    act, _, pg, qg, _ = buffers(net)
    want = np.array([[KN.forward(u, i, net.d, act, pg, qg, embs(emb), net.kernel_net())
                      for i in range(8)] for u in range(6)])
    users = np.arange(6)
    got = est.score_items(users, np.tile(np.arange(8), (6, 1)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ids, scores = est.recommend(users, n=8, filter_seen=False)
    np.testing.assert_allclose(scores, np.take_along_axis(got, ids, axis=1), rtol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)


# --------------------------------------------------------------------------- #
# Prune and grow.
# --------------------------------------------------------------------------- #


def test_prune_grow_moves_optimiser_state_with_the_weights():
    X = small_data(seed=4, n_users=12, n_items=10, per_user=4)
    data = TrainData.from_matrix(X)
    emb, net = random_pattern_net(n_users=12, n_items=10, density=0.4, seed=8)
    tables = list(emb) + list(net.layers)
    # State slots tied to the weight, so any misalignment shows.
    for t in tables:
        t.values_buf[: t.nnz, 1] = 2 * t.values_buf[: t.nnz, 0]
        t.values_buf[: t.nnz, 2] = 3 * t.values_buf[: t.nnz, 0] ** 2
    before = [t.to_csr() for t in tables]
    budget = sum(t.nnz for t in tables)
    engine = NCFEngine(data, emb, net, learning_rate=0.003, alpha=0.0, n_negatives=4,
                       batch_size=256)
    fns = engine.grow_fns(np.uint64(5))
    pruned, grown = PruneGrow(tables, budget="global").step(0.3, 1, grow_fns=fns)
    assert pruned.sum() == grown.sum() == round(0.3 * budget)
    assert sum(t.nnz for t in tables) == budget
    for t, old in zip(tables, before, strict=True):
        t.check()
        w, m, v = (t.values_buf[: t.nnz, s] for s in range(3))
        new = t.to_csr()
        old_mask = old.astype(bool).toarray()
        rows = np.repeat(np.arange(t.n_rows), t.row_nnz())
        was_active = old_mask[rows, t.indices.astype(np.int64)]
        np.testing.assert_array_equal(m[was_active], 2 * w[was_active])
        np.testing.assert_array_equal(v[was_active], 3 * w[was_active] ** 2)
        # Grown coordinates start at zero weight and zero state.
        assert not np.any(w[~was_active]) and not np.any(m[~was_active])
        assert not np.any(v[~was_active])
        assert new.shape == old.shape


# --------------------------------------------------------------------------- #
# The estimator.
# --------------------------------------------------------------------------- #


def blocks(n_groups=3, per_group=8, items_per_group=6, seed=0):
    """The block data of test_mf, plus the matrix of held-out pairs.

    Fits pass that matrix as ``exclude`` (as in the NCF protocol): otherwise
    the sampler would teach the model that the held-out item is a negative.
    """
    X, held = mf_blocks(n_groups, per_group, items_per_group, seed=seed)
    n_users = X.shape[0]
    E = sp.csr_matrix((np.ones(n_users, np.float32), (np.arange(n_users), held)), X.shape)
    return X, held, E


def fast(**kw):
    params = dict(n_components=8, hidden_layer_sizes=(8, 4), density=0.5, max_iter=12,
                  learning_rate=0.02, batch_size=32, update_interval=3, random_state=0,
                  n_threads=1)
    params.update(kw)
    return DSLNCF(**params)


@pytest.mark.parametrize("density", [1.0, 0.4])
def test_ranks_the_held_out_in_block_item_first(density):
    X, held, E = blocks()
    est = fast(density=density).fit(X, exclude=E)
    ids, _ = est.recommend(np.arange(X.shape[0]), n=1)
    # The only unseen item of a user's own block is the held-out one.
    assert np.mean(ids[:, 0] == held) >= 0.9


def test_budget_is_exact_after_every_epoch_and_history_is_complete():
    X, _, _ = blocks()
    est = fast(density=0.3).fit(X)
    n_u, n_i = X.shape
    # Four 8-column embedding tables, then layers 16 -> 8 -> 4.
    total = 2 * 8 * n_u + 2 * 8 * n_i + 16 * 8 + 8 * 4
    budget = round(0.3 * total)
    assert est.n_active_ == budget
    assert len(est.history_) == est.n_iter_ == 12
    for h in est.history_:
        assert h["nnz"] == budget
        parts = [h[k] for k in h if k.startswith("nnz_")]
        assert sum(parts) == budget and len(parts) == 6
        assert h["pruned"] == h["grown"]
    assert sum(h["grown"] for h in est.history_) > 0
    assert sum(c.nnz for c in est.coefs_) == est.mlp_table_.nnz
    tables = [est.user_gmf_table_, est.item_gmf_table_, est.user_mlp_table_,
              est.item_mlp_table_]
    assert sum(t.nnz for t in tables) + est.mlp_table_.nnz == budget
    assert est.nbytes_ < est.dense_nbytes_
    assert est.dense_nbytes_ == 4 * total + 4 * (8 + 4 + 8 + 4 + 1)


def test_table_budget_keeps_each_table_count():
    X, _, _ = blocks()
    est = fast(density=0.3, budget="table").fit(X)
    counts = {tuple(h[k] for k in sorted(h) if k.startswith("nnz_")) for h in est.history_}
    assert len(counts) == 1


def test_frequency_scores_are_raw_scores_over_the_rows_instance_counts():
    # grow_scores="frequency": growth |g| / s_r, pruning |w| * s_r, with s_r**2 the
    # instances of an epoch that reach embedding row r (counted here from the data) and,
    # for an MLP layer's row k, the engine's activity scales (checked on their own below).
    X = small_data(n_users=6, n_items=8, per_user=3).tolil()
    X[0, 7] = X[1, 7] = X[2, 7] = 1.0  # item 7 more frequent than most
    X = sp.csr_matrix(X)
    data = TrainData.from_matrix(X)
    emb, net = random_pattern_net(n_users=6, n_items=8, density=0.5, seed=4)
    k_neg = 3
    opts = dict(learning_rate=0.01, alpha=0.0, n_negatives=k_neg, batch_size=8)
    raw = NCFEngine(data, emb, net, grow_scores="raw", **opts)
    freq = NCFEngine(data, emb, net, grow_scores="frequency", **opts)
    n_user = np.diff(X.indptr) * (k_neg + 1.0)
    n_item = np.bincount(X.indices, minlength=8) + k_neg * X.nnz / 8
    key = np.uint64(7)
    grow = freq.grow_fns(key)
    layer_scales = freq.score_scales()[4:]
    scale = [np.sqrt(n_user), np.sqrt(n_item)] * 2 + layer_scales
    assert [s.shape for s in layer_scales] == [(t.n_rows,) for t in net.layers]
    tables = emb + net.layers
    assert raw.prune_scores() is None
    prune = freq.prune_scores()
    for t, (tab, f_raw, f_freq, s) in enumerate(zip(tables, raw.grow_fns(key), grow, scale,
                                                    strict=True)):
        G_raw = np.zeros((tab.n_rows, tab.n_cols), np.float32)
        G_freq = np.zeros_like(G_raw)
        f_raw(0, tab.n_rows, G_raw)
        f_freq(0, tab.n_rows, G_freq)
        assert np.count_nonzero(G_raw) > 0 or t >= 2, t  # GMF rows always have a gradient
        np.testing.assert_allclose(G_freq, G_raw / s[:, None], rtol=1e-5, atol=1e-9)
        rows = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
        np.testing.assert_allclose(prune[t], np.abs(tab.weights) * s[rows], rtol=1e-6)
    assert scale[1][7] > scale[1][np.argmin(n_item)]


def test_layer_scales_are_the_inputs_root_mean_square_over_an_epochs_instances():
    # An MLP layer's row k multiplies input z_k: its scale is sqrt(N * E[z_k**2]) over an
    # epoch's N instances (interactions, and with probability k_neg / (k_neg + 1) a
    # uniform item as the negative). The exact expectation, by enumerating every pair,
    # against the engine's 4,096-instance estimate.
    from sparse_rec.backends.cpu import ncf_layer_scales

    X = small_data(n_users=6, n_items=8, per_user=3)
    data = TrainData.from_matrix(X)
    emb, net = random_pattern_net(n_users=6, n_items=8, density=0.9, seed=4)
    assert emb[2].nnz > 0 and emb[3].nnz > 0  # both MLP embedding tables feed layer 1
    P = params(emb, net)
    k_neg = 3
    rows, cols = X.nonzero()

    def activations(u, i):
        z = np.hstack([P["um"][u], P["im"][i]])
        out = []
        for W, b in zip(P["W"], P["b"], strict=True):
            out.append(z)
            z = np.maximum(z @ W + b, 0.0)
        return out

    def mean_sq(pairs):
        acts = [activations(u, i) for u, i in pairs]
        return [np.mean([a[layer] ** 2 for a in acts], axis=0) for layer in range(len(P["W"]))]

    pos = mean_sq(zip(rows, cols, strict=True))
    neg = mean_sq([(u, j) for u in rows for j in range(8)])
    N = X.nnz * (k_neg + 1.0)
    want = [np.sqrt(N * (p + k_neg * q) / (k_neg + 1.0)) for p, q in zip(pos, neg, strict=True)]
    got = ncf_layer_scales(data, emb, net, k_neg + 1, seed=3)
    for w, g in zip(want, got, strict=True):
        # (atol: a ReLU that is never on has the floor's tiny scale)
        np.testing.assert_allclose(g, w, rtol=0.1, atol=1e-4 * w.max())
    # An input no row feeds (an empty MLP user table) gets a scale near 0: its layer-1
    # weights are pruned first.
    from sparse_rec._table import SparseEmbeddingTable

    empty = SparseEmbeddingTable.random(6, emb[2].n_cols, 0, n_slots=3, seed=0)
    got = ncf_layer_scales(data, [emb[0], emb[1], empty, emb[3]], net, k_neg + 1, seed=3)
    d = emb[2].n_cols
    assert np.all(got[0][:d] < 1e-4) and np.all(got[0][d:] > 0.1)


@pytest.mark.parametrize("grow_scores", ["frequency", "raw"])
def test_both_score_scalings_keep_the_budget_and_learn(grow_scores):
    X, held, E = blocks()
    est = fast(density=0.4, grow_scores=grow_scores).fit(X, exclude=E)
    assert all(h["nnz"] == est.n_active_ for h in est.history_)
    assert sum(h["grown"] for h in est.history_) > 0
    ids, _ = est.recommend(np.arange(X.shape[0]), n=1)
    assert np.mean(ids[:, 0] == held) >= 0.9


def test_frequency_scores_move_another_pattern_than_raw_scores():
    X, _, E = blocks()
    a = fast(density=0.4, grow_scores="frequency").fit(X, exclude=E)
    b = fast(density=0.4, grow_scores="raw").fit(X, exclude=E)
    pa = [getattr(a, f"{n}_table_").to_csr() for n in ("user_gmf", "item_gmf")]
    pb = [getattr(b, f"{n}_table_").to_csr() for n in ("user_gmf", "item_gmf")]
    assert any((x != 0).toarray().tolist() != (y != 0).toarray().tolist()
               for x, y in zip(pa, pb, strict=True))


def test_file_without_grow_scores_loads_as_a_raw_score_fit(tmp_path, monkeypatch):
    from sparse_rec import _io as io
    from sparse_rec import load

    X, _, _ = blocks()
    est = fast(density=0.4, max_iter=3, grow_scores="raw").fit(X)
    encode = io._encode_params

    def old_encode(params):  # a file written before grow_scores existed
        return encode({k: v for k, v in params.items() if k != "grow_scores"})

    monkeypatch.setattr(io, "_encode_params", old_encode)
    path = est.save(tmp_path / "old.npz")
    monkeypatch.undo()
    back = load(path)
    assert back.grow_scores == "raw"
    assert DSLNCF().grow_scores == "frequency"


def test_one_thread_fit_is_bitwise_reproducible():
    X, _, _ = blocks()
    a = fast().fit(X)
    b = fast().fit(X)
    for name in ("user_gmf_table_", "item_mlp_table_", "mlp_table_"):
        np.testing.assert_array_equal(getattr(a, name).to_csr().toarray(),
                                      getattr(b, name).to_csr().toarray())
    np.testing.assert_array_equal(a.fusion_weights_, b.fusion_weights_)
    c = fast(random_state=1).fit(X)
    assert not np.array_equal(a.fusion_weights_, c.fusion_weights_)


def test_parallel_fit_learns_the_blocks_too():
    X, held, E = blocks()
    est = fast(n_threads=2).fit(X, exclude=E)
    ids, _ = est.recommend(np.arange(X.shape[0]), n=1)
    assert np.mean(ids[:, 0] == held) >= 0.9
    assert all(np.isfinite(h["loss"]) for h in est.history_)


def test_recommend_agrees_with_score_items_and_filters():
    X, _, _ = blocks()
    est = fast().fit(X)
    users = np.array([0, 5, 9, 20])
    all_items = np.tile(np.arange(X.shape[1]), (len(users), 1))
    S = est.score_items(users, all_items)
    ids, scores = est.recommend(users, n=5)
    np.testing.assert_allclose(scores, np.take_along_axis(S, ids, axis=1), rtol=1e-6)
    for b, u in enumerate(users):
        seen = set(X[u].indices)
        assert not seen & set(ids[b])
        masked = S[b].copy()
        masked[list(seen)] = -np.inf
        np.testing.assert_allclose(np.sort(masked)[::-1][:5], scores[b], rtol=1e-6)
    ids2, _ = est.recommend(users, n=3, items=[1, 2, 3, 4], filter_seen=False)
    assert set(ids2.ravel()) <= {1, 2, 3, 4}


def test_similar_items_excludes_the_item_and_prefers_its_block():
    X, _, _ = blocks()
    est = fast(density=1.0).fit(X)
    ids, scores = est.similar_items([0, 7], n=3)
    assert ids.shape == (2, 3) and 0 not in ids[0] and 7 not in ids[1]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_fold_in_recommends_from_the_history_block():
    X, held, E = blocks()
    est = fast(density=1.0).fit(X, exclude=E)
    H = X[[0, 9, 17]]
    ids, _ = est.recommend_for_history(H, n=1)
    np.testing.assert_array_equal(ids[:, 0], held[[0, 9, 17]])
    # A row's result does not depend on the rows around it.
    alone, _ = est.recommend_for_history(X[[9]], n=1)
    assert alone[0, 0] == ids[1, 0]
    D = est.decision_function(H)
    assert D.shape == (3, X.shape[1]) and np.all(np.isfinite(D))


def test_pickle_and_clone():
    X, _, _ = blocks()
    est = fast().fit(X)
    again = pickle.loads(pickle.dumps(est))
    a = est.recommend([0, 1, 2], n=4)
    b = again.recommend([0, 1, 2], n=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = clone(est)
    assert c.get_params() == est.get_params()
    assert not hasattr(c, "mlp_table_")


def test_save_and_load_model_file(tmp_path):
    from sparse_rec._io import load

    X, _, _ = blocks()
    est = fast().fit(X)
    est.save(tmp_path / "ncf.npz")
    back = load(tmp_path / "ncf.npz")
    np.testing.assert_array_equal(back.score_items([0, 3], [[1, 2], [3, 4]]),
                                  est.score_items([0, 3], [[1, 2], [3, 4]]))


def test_warm_start_continues_and_early_stopping_keeps_best():
    X, _, _ = blocks()
    est = fast(max_iter=3, warm_start=True).fit(X)
    est.fit(X)
    assert est.n_iter_ == 6 and len(est.history_) == 6
    es = fast(max_iter=30, early_stopping=True, n_iter_no_change=2, validation_fraction=0.2)
    es.fit(X)
    assert es.n_iter_ <= 30 and es.best_validation_score_ is not None
    stops = []
    cb = fast(max_iter=10, callbacks=[lambda e, row: stops.append(row["epoch"]) or
                                      row["epoch"] == 2]).fit(X)
    assert cb.n_iter_ == 2 and stops == [1, 2]


@pytest.mark.parametrize("params, match", [
    (dict(hidden_layer_sizes=()), "hidden_layer_sizes must be a non-empty"),
    (dict(hidden_layer_sizes=(8, 0)), "hidden_layer_sizes must be a non-empty"),
    (dict(hidden_layer_sizes="big"), "hidden_layer_sizes must be a non-empty"),
    (dict(n_negatives=0), "n_negatives must be an integer >= 1"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(density=1.5), "density must be in"),
    (dict(learning_rate=0), "learning_rate must be a finite number > 0"),
    (dict(update_ratio=1.0), "update_ratio must be in"),
    (dict(budget="both"), "budget must be one of"),
    (dict(grow_scores="curvature"), "grow_scores must be one of"),
])
def test_bad_parameters_fail_with_clear_messages(params, match):
    X, _, _ = blocks()
    with pytest.raises(ValueError, match=match):
        fast(**params).fit(X)


def test_bad_input_fails_with_clear_messages():
    X, _, _ = blocks()
    with pytest.raises(ValueError, match="non-negative"):
        fast().fit(-X)
    with pytest.raises(ValueError, match="exclude must have the shape"):
        fast().fit(X, exclude=sp.csr_matrix((2, 2)))
    with pytest.raises(NotFittedError):
        fast().recommend([0])
    est = fast(max_iter=1).fit(X)
    with pytest.raises(ValueError, match="users must be user ids"):
        est.recommend([X.shape[0]])
    with pytest.raises(ValueError, match="items must have shape"):
        est.score_items([0, 1], [[1, 2]])
    with pytest.raises(ValueError, match="features"):
        est.recommend_for_history(sp.csr_matrix((1, X.shape[1] + 1)))
