"""Kernels against slow NumPy references (exact or near-exact with one thread)."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec._base import TrainData
from sparse_rec._kernels import _bpr, _rng, _topk
from sparse_rec._table import SparseEmbeddingTable
from sparse_rec.backends import cpu

M64 = (1 << 64) - 1


def splitmix_ref(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def draw_ref(key, s, stream):
    return splitmix_ref((int(key) + splitmix_ref((int(s) * 16 + stream) & M64)) & M64)


def test_rng_matches_python_reference():
    key = int(_rng.epoch_key(np.uint64(42), np.uint64(3)))
    assert key == splitmix_ref(42 ^ splitmix_ref(3))
    for s in (0, 1, 12345, 2**40):
        for stream in (0, 1, 9):
            assert int(_rng.draw(np.uint64(key), s, stream)) == draw_ref(key, s, stream)
    assert _rng.randint(np.uint64(draw_ref(key, 7, 0)), 1000) == (draw_ref(key, 7, 0) >> 1) % 1000


def small_problem(seed=0, n_users=30, n_items=25, d=8, density=0.4):
    rng = np.random.default_rng(seed)
    X = sp.random(n_users, n_items, density=0.2, random_state=seed, format="csr", dtype=np.float32)
    X.data[:] = rng.integers(1, 4, X.nnz)
    X.sort_indices()
    data = TrainData.from_matrix(X)
    total = d * (n_users + n_items)
    nnz = int(density * total)
    users = SparseEmbeddingTable.random(n_users, d, nnz // 2, seed=seed, scale=0.5)
    items = SparseEmbeddingTable.random(n_items, d, nnz - nnz // 2, seed=seed + 1, scale=0.5)
    bias = np.zeros((n_items, 2), np.float32)
    bias[:, 0] = rng.standard_normal(n_items) * 0.1
    return X, data, users, items, bias


def bpr_epoch_ref(data, U, I, b, n_samples, key, lr, reg, adagrad):
    """Plain-Python BPR epoch on dense copies; same sampler, same step order."""
    Uw, Us, Iw, Is = (np.zeros(t.shape, np.float64) for t in (U, U, I, I))
    um = np.zeros(U.shape, bool)
    im = np.zeros(I.shape, bool)
    for tab, w, s, m in ((U, Uw, Us, um), (I, Iw, Is, im)):
        rows = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
        cols = tab.indices.astype(np.int64)
        w[rows, cols], s[rows, cols], m[rows, cols] = tab.slot(0), tab.slot(1), True
    b = b[:, 0].astype(np.float64)
    bs = np.zeros_like(b)
    n_items = len(b)

    def step(w, s, idx, g):
        if adagrad:
            s[idx] += g * g
            w[idx] -= lr * g / (np.sqrt(s[idx]) + 1e-8)
        else:
            w[idx] -= lr * g

    loss = 0.0
    nnz = data.nnz
    for sample in range(n_samples):
        pos = (draw_ref(key, sample, 0) >> 1) % nnz
        u, i = data.x_rows[pos], data.x_indices[pos]
        j = -1
        for t in range(1, 9):
            cand = (draw_ref(key, sample, t) >> 1) % n_items
            row = data.f_indices[data.f_indptr[u]:data.f_indptr[u + 1]]
            if cand not in row:
                j = cand
                break
        if j < 0:
            continue
        c = data.x_weight[pos]
        pu = Uw[u].copy()
        diff = Iw[i] - Iw[j]
        x = b[i] - b[j] + pu @ diff
        loss += c * np.logaddexp(0, -x)
        g = c / (1 + np.exp(x))
        gu = (-g * diff + reg * Uw[u]) * um[u]
        gi = (-g * pu + reg * Iw[i]) * im[i]
        gj = (g * pu + reg * Iw[j]) * im[j]
        for w, s, r, gr, m in ((Uw, Us, u, gu, um), (Iw, Is, i, gi, im), (Iw, Is, j, gj, im)):
            k = np.flatnonzero(m[r])
            step(w[r], s[r], k, gr[k])
        step(b, bs, i, -g + reg * b[i])
        step(b, bs, j, g + reg * b[j])
    return loss, Uw, Iw, b


# 3 samples: fewer than the prefetch pipeline holds (5 * _LEAD), so the
# epoch is all pipeline fill and drain.
@pytest.mark.parametrize("n_samples", [3, 500])
@pytest.mark.parametrize("optimizer", [cpu.SGD, cpu.ADAGRAD])
def test_serial_epoch_matches_reference(optimizer, n_samples):
    X, data, U, I, b = small_problem()
    key = int(_rng.epoch_key(np.uint64(7), np.uint64(0)))
    ref = bpr_epoch_ref(data, U, I, b, n_samples, key, 0.05, 0.01, optimizer == cpu.ADAGRAD)
    numba.set_num_threads(1)
    try:
        loss = cpu.bpr_epoch(data, U, I, b, n_samples, np.uint64(key), 0.05, 0.01, optimizer)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    # float32 storage against a float64 reference
    assert loss == pytest.approx(ref[0], rel=1e-4)
    from test_table import dense

    np.testing.assert_allclose(dense(U), ref[1], atol=2e-5)
    np.testing.assert_allclose(dense(I), ref[2], atol=2e-5)
    np.testing.assert_allclose(b[:, 0], ref[3], atol=2e-5)


def test_serial_epoch_is_bitwise_reproducible():
    outs = []
    for _ in range(2):
        X, data, U, I, b = small_problem(seed=3)
        numba.set_num_threads(1)
        loss = cpu.bpr_epoch(data, U, I, b, 2000, np.uint64(9), 0.1, 0.0, cpu.ADAGRAD)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        outs.append((loss, U.weights.copy(), I.weights.copy(), b.copy()))
    assert outs[0][0] == outs[1][0]
    for a, c in zip(outs[0][1:], outs[1][1:], strict=True):
        np.testing.assert_array_equal(a, c)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_parallel_epoch_close_to_serial():
    res = []
    for nt in (1, 2):
        X, data, U, I, b = small_problem(seed=5, n_users=200, n_items=100)
        numba.set_num_threads(nt)
        loss = cpu.bpr_epoch(data, U, I, b, data.nnz, np.uint64(3), 0.01, 0.0, cpu.SGD)
        res.append((loss, U.weights.copy()))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    # Hogwild reorders some steps, so the loss agrees only approximately.
    assert res[0][0] == pytest.approx(res[1][0], rel=0.02)
    np.testing.assert_allclose(res[0][1], res[1][1], atol=0.05)


def test_user_gradient_matches_reference():
    X, data, U, I, b = small_problem(seed=2)
    from test_table import dense

    Ud, Id = dense(U).astype(np.float64), dense(I).astype(np.float64)
    key = int(_rng.epoch_key(np.uint64(1), np.uint64(1)))
    m = 3
    G = np.zeros((U.n_rows, U.n_cols), np.float32)
    cpu.grad_users(data, U, I, b, m, np.uint64(key))(0, U.n_rows, G)
    ref = np.zeros_like(Ud)
    for r in range(U.n_rows):
        start, deg = data.x_indptr[r], data.x_indptr[r + 1] - data.x_indptr[r]
        n = min(deg, m)
        for t in range(n):
            pos = start + t if deg <= m else start + (draw_ref(key, start + t, 0) >> 1) % deg
            i = data.x_indices[pos]
            j = -1
            for s in range(1, 9):
                cand = (draw_ref(key, start + t, s) >> 1) % len(b)
                if cand not in data.f_indices[data.f_indptr[r]:data.f_indptr[r + 1]]:
                    j = cand
                    break
            if j < 0:
                continue
            x = b[i, 0] - b[j, 0] + Ud[r] @ (Id[i] - Id[j])
            g = data.x_weight[pos] * (deg / n) / (1 + np.exp(x))
            ref[r] -= g * (Id[i] - Id[j])
    np.testing.assert_allclose(G, ref, atol=1e-5)


# 700 items: blocks of 3 items cut across the groups of 4 that share their
# negative draws, and the chunks cut across both.
@pytest.mark.parametrize("n_items, cuts", [(25, ()), (700, (7, 301))])
def test_item_gradient_matches_reference(n_items, cuts):
    X, data, U, I, b = small_problem(seed=4, n_users=200 if n_items > 100 else 30,
                                     n_items=n_items)
    from test_table import dense

    Ud, Id = dense(U).astype(np.float64), dense(I).astype(np.float64)
    bb = b[:, 0].astype(np.float64)
    key = int(_rng.epoch_key(np.uint64(2), np.uint64(3)))
    m, m_neg = 3, 5
    G = np.zeros((I.n_rows, I.n_cols), np.float32)
    fill = cpu.grad_items(data, U, I, b, m, np.uint64(key), m_neg)
    bounds = [0, *cuts, I.n_rows]
    for c0, c1 in zip(bounds[:-1], bounds[1:], strict=True):
        fill(c0, c1, G[c0:c1])
    n_items, nnz = I.n_rows, data.nnz
    neg_per_item = nnz / n_items

    def forbidden(u):
        return data.f_indices[data.f_indptr[u]:data.f_indptr[u + 1]]

    ref = np.zeros_like(Id)
    for c in range(n_items):
        start, deg = data.xt_indptr[c], data.xt_indptr[c + 1] - data.xt_indptr[c]
        n = min(deg, m)
        for t in range(n):  # c as the positive of its own users' pairs
            pos = start + t if deg <= m else start + (draw_ref(key, start + t, 0) >> 1) % deg
            u = data.xt_indices[pos]
            j = -1
            for s in range(1, 9):
                cand = (draw_ref(key, start + t, s) >> 1) % n_items
                if cand not in forbidden(u):
                    j = cand
                    break
            if j < 0:
                continue
            x = bb[c] - bb[j] + Ud[u] @ (Id[c] - Id[j])
            ref[c] -= data.xt_weight[pos] * (deg / n) / (1 + np.exp(x)) * Ud[u]
        for t in range(m_neg):  # c as the negative of other users' interactions
            pos = (draw_ref(key, nnz + (c // _bpr._GRAD_GROUP) * m_neg + t, 9) >> 1) % nnz
            u, i = data.x_rows[pos], data.x_indices[pos]
            if i == c or c in forbidden(u):
                continue
            x = bb[i] - bb[c] + Ud[u] @ (Id[i] - Id[c])
            ref[c] += data.x_weight[pos] * (neg_per_item / m_neg) / (1 + np.exp(x)) * Ud[u]
    assert np.abs(ref).max() > 0.01  # both kinds of terms present, not a zero matrix
    np.testing.assert_allclose(G, ref, atol=1e-5)


@pytest.mark.parametrize("dense_path", [False, True])
def test_top_n_and_scores_match_brute_force(dense_path, monkeypatch):
    # The sparse (transposed table) and dense (BLAS block) paths agree.
    monkeypatch.setattr(cpu, "DENSE_SCORING_DENSITY", 0.0 if dense_path else 2.0)
    monkeypatch.setattr(cpu, "_BLOCK_ROWS", 3)  # several blocks of queries
    X, data, U, I, b = small_problem(seed=4)
    from test_table import dense

    b = b[:, 0].copy()
    S = dense(U) @ dense(I).T + b
    rows = np.array([0, 3, 7, 29])
    E = X[rows]
    allowed = np.ones(len(b), bool)
    allowed[[1, 2]] = False
    ids, vals = cpu.top_n(rows, 6, U, I.transposed(), b, E.indptr.astype(np.int64),
                          E.indices.astype(np.int32), allowed, items=I)
    for q, r in enumerate(rows):
        s = S[r].copy()
        s[E[q].indices] = -np.inf
        s[~allowed] = -np.inf
        order = np.argsort(-s, kind="stable")[:6]
        np.testing.assert_array_equal(ids[q], order)
        np.testing.assert_allclose(vals[q], s[order], rtol=1e-5)
    cand = np.array([[0, 1, 2], [4, 4, 5], [9, 8, 7], [24, 0, 3]])
    np.testing.assert_allclose(cpu.score(rows, cand, U, I, b), S[rows[:, None], cand], rtol=1e-5)


def test_top_n_pads_when_few_items_are_eligible():
    scores = np.array([np.nan, 1.0, -np.inf, 3.0], np.float32)
    idx = np.empty(3, np.int64)
    val = np.empty(3, np.float32)
    _topk.top_n(scores, 3, idx, val)
    assert idx.tolist() == [3, 1, -1]
    assert val[2] == -np.inf


def test_in_row_binary_search():
    indptr = np.array([0, 3, 3, 5])
    indices = np.array([1, 4, 9, 0, 2], np.int32)
    assert _bpr.in_row(indptr, indices, 0, 4)
    assert not _bpr.in_row(indptr, indices, 0, 5)
    assert not _bpr.in_row(indptr, indices, 1, 1)
    assert _bpr.in_row(indptr, indices, 2, 0)
