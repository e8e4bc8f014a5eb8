"""LightGCN kernels: propagation over the normalised bipartite graph, BPR, softmax samples, steps.

Layout shared by every kernel here:

* the graph ``g_indptr, g_indices, g_vals``: one block of the symmetric
  normalised adjacency ``A_hat = D^-1/2 A D^-1/2``, users x items (``R``)
  or items x users (``R^T``), canonical CSR with values
  ``1 / sqrt(deg(u) deg(i))``;
* layer-0 tables ``t_indptr, t_indices, t_v``: CSR rows of active
  coordinates with ``t_v[p, 0]`` the weight and further slots optimiser
  state (Adam: ``m, v``; Adagrad: the accumulator);
* dense blocks ``X`` / ``out`` of shape (rows, n_components), float32.

Row-parallel products write each output row from one thread in a fixed
order, so results do not depend on the number of threads.
"""

import math

import numpy as np
from numba import njit, prange

from ._bpr import in_row, log_sigmoid_grad, sample_negative
from ._rng import draw, randint

ADAM = 0
ADAGRAD = 1


@njit(cache=True, parallel=True, fastmath=True)
def spmm_dense(g_indptr, g_indices, g_vals, X, add, beta, has_add, out):
    """``out = G @ X``, plus ``beta * add`` when ``has_add`` (dense ``X``, ``out`` not ``X``)."""
    d = X.shape[1]
    for r in prange(out.shape[0]):
        o = out[r]
        if has_add:
            ar = add[r]
            for c in range(d):
                o[c] = beta * ar[c]
        else:
            o[:] = 0.0
        for q in range(g_indptr[r], g_indptr[r + 1]):
            # Row views: contiguous inner loops that vectorise.
            xk = X[g_indices[q]]
            s = g_vals[q]
            for c in range(d):
                o[c] += s * xk[c]


@njit(cache=True, parallel=True)
def init_final(t_indptr, t_indices, t_v, a, F, E0, has_e0):
    """``F = a * T`` and, when ``has_e0``, ``E0 = T`` (dense) for a layer-0 table ``T``.

    One pass over the rows: the forward's start, with the dense layer 0 a
    dense first product reads.
    """
    for r in prange(F.shape[0]):
        f = F[r]
        f[:] = 0.0
        if has_e0:
            e = E0[r]
            e[:] = 0.0
        for p in range(t_indptr[r], t_indptr[r + 1]):
            c = t_indices[p]
            w = t_v[p, 0]
            f[c] = a * w
            if has_e0:
                e[c] = w


@njit(cache=True, parallel=True, fastmath=True)
def spmm_dense_acc(g_indptr, g_indices, g_vals, X, out, F, a):
    """``out = G @ X`` and ``F += a * out`` in one pass (a forward layer)."""
    d = X.shape[1]
    for r in prange(out.shape[0]):
        o = out[r]
        o[:] = 0.0
        for q in range(g_indptr[r], g_indptr[r + 1]):
            xk = X[g_indices[q]]
            s = g_vals[q]
            for c in range(d):
                o[c] += s * xk[c]
        f = F[r]
        for c in range(d):
            f[c] += a * o[c]


@njit(cache=True, parallel=True, fastmath=True)
def spmm_table_acc(g_indptr, g_indices, g_vals, t_indptr, t_indices, t_w, out, F, a):
    """``out = G @ T`` for a sparse layer-0 table ``T`` (weights ``t_w``) and ``F += a * out``.

    Costs ``nnz(G)`` times the mean active weights per row of ``T``, not
    ``nnz(G) * n_components``; scattered adds do not vectorise, so it pays
    below about one active weight in eight (``spmm_dense_acc`` otherwise).
    """
    d = out.shape[1]
    for r in prange(out.shape[0]):
        o = out[r]
        o[:] = 0.0
        for q in range(g_indptr[r], g_indptr[r + 1]):
            k = g_indices[q]
            s = g_vals[q]
            # Unsigned positions and columns spare negative-index wraparound.
            for p in range(np.uint64(t_indptr[k]), np.uint64(t_indptr[k + 1])):
                o[np.uint32(t_indices[p])] += s * t_w[p]
        f = F[r]
        for c in range(d):
            f[c] += a * o[c]


# Rows per work item of spmm_gather: one scratch row serves them all.
_GATHER_CHUNK = 64


@njit(cache=True, parallel=True, fastmath=True)
def spmm_gather(g_indptr, g_indices, g_vals, X, add, beta, scale, t_indptr, t_indices, out):
    """``out[p] = scale * (beta * add + G @ X)[r, c]`` at each active ``p = (r, c)``, by
    dense rows.

    The last backward product for a dense-enough table: each row is
    computed densely (vectorised) into a scratch row and read at the
    row's active coordinates, so no dense gradient block is written.
    """
    n = t_indptr.shape[0] - 1
    d = X.shape[1]
    for ch in prange((n + _GATHER_CHUNK - 1) // _GATHER_CHUNK):
        o = np.empty(d, np.float32)
        for r in range(ch * _GATHER_CHUNK, min(n, (ch + 1) * _GATHER_CHUNK)):
            ar = add[r]
            for c in range(d):
                o[c] = beta * ar[c]
            for q in range(g_indptr[r], g_indptr[r + 1]):
                xk = X[g_indices[q]]
                s = g_vals[q]
                for c in range(d):
                    o[c] += s * xk[c]
            for p in range(t_indptr[r], t_indptr[r + 1]):
                out[p] = scale * o[t_indices[p]]


@njit(cache=True, parallel=True, fastmath=True)
def spmm_at_pattern(g_indptr, g_indices, g_vals, X, add, beta, scale, t_indptr, t_indices,
                    out):
    """``out[p] = scale * (beta * add + G @ X)[r, c]`` at each active coordinate ``p = (r, c)``.

    The last product of the backward pass: layer 0 needs its gradient only
    where it has weights, so this costs ``nnz(G)`` times the active weights
    per row.
    """
    for r in prange(t_indptr.shape[0] - 1):
        p0 = t_indptr[r]
        p1 = t_indptr[r + 1]
        ar = add[r]
        for p in range(p0, p1):
            out[p] = beta * ar[t_indices[p]]
        for q in range(g_indptr[r], g_indptr[r + 1]):
            k = g_indices[q]
            s = g_vals[q]
            xk = X[k]
            for p in range(p0, p1):
                out[p] += s * xk[t_indices[p]]
        for p in range(p0, p1):
            out[p] *= scale


@njit(cache=True, parallel=True, fastmath=True)
def rows_dense(g_indptr, g_indices, g_vals, X, add, beta, scale, r0, r1, out):
    """``out = scale * (beta * add + G @ X)[r0:r1]``: growth scores of a chunk of rows."""
    d = X.shape[1]
    for b in prange(r1 - r0):
        r = r0 + b
        o = out[b]
        ar = add[r]
        for c in range(d):
            o[c] = beta * ar[c]
        for q in range(g_indptr[r], g_indptr[r + 1]):
            xk = X[g_indices[q]]
            s = g_vals[q]
            for c in range(d):
                o[c] += s * xk[c]
        for c in range(d):
            o[c] *= scale


@njit(cache=True, parallel=True)
def add_table(t_indptr, t_indices, t_v, scale, out):
    """``out += scale * T`` for a sparse layer-0 table ``T``."""
    for r in prange(t_indptr.shape[0] - 1):
        for p in range(t_indptr[r], t_indptr[r + 1]):
            out[r, t_indices[p]] += scale * t_v[p, 0]


@njit(cache=True, inline="always")
def sample_margin(key, s, n_items, x_indices, x_weight, x_rows, f_indptr, f_indices, Fu, Fi):
    """Sample ``s``: ``(u, i, j, weighted loss, weighted slope)``; ``j < 0``: no negative.

    One source for the CPU and the CUDA kernels.
    """
    pos = randint(draw(key, s, 0), x_indices.shape[0])
    u = x_rows[pos]
    i = x_indices[pos]
    j = sample_negative(key, s, u, n_items, f_indptr, f_indices)
    if j < 0:
        return u, i, j, 0.0, 0.0
    x = 0.0
    fu, fi, fj = Fu[u], Fi[i], Fi[j]
    for c in range(Fu.shape[1]):
        x += fu[c] * (fi[c] - fj[c])
    sample_loss, g = log_sigmoid_grad(x)
    w = x_weight[pos]
    return u, i, j, w * sample_loss, w * g


@njit(cache=True, parallel=True)
def _margins(key, s0, n, n_items, x_indices, x_weight, x_rows, f_indptr, f_indices, Fu, Fi,
             us, ps, js, gs):
    loss = 0.0
    for b in prange(n):
        u, i, j, lo, g = sample_margin(key, s0 + b, n_items, x_indices, x_weight, x_rows,
                                       f_indptr, f_indices, Fu, Fi)
        us[b] = u
        ps[b] = i
        js[b] = j
        gs[b] = g
        loss += lo
    return loss


@njit(cache=True)
def _bucket(keys, n_keys, starts, order):
    """Stable counting sort: ``order[starts[k]:starts[k + 1]]`` lists the ``b`` with
    ``keys[b] == k`` in increasing ``b`` (keys < 0 are left out)."""
    starts[:] = 0
    for b in range(keys.shape[0]):
        k = keys[b]
        if k >= 0:
            starts[k + 1] += 1
    for k in range(n_keys):
        starts[k + 1] += starts[k]
    fill = starts[:n_keys].copy()
    for b in range(keys.shape[0]):
        k = keys[b]
        if k >= 0:
            order[fill[k]] = b
            fill[k] += 1


@njit(cache=True, parallel=True)
def _scatter_users(us, ps, js, gs, inv, Fi, starts, order, Gu, cu):
    """``Gu[u] = -sum_b g_b (F_i - F_j) / n`` over the samples of user ``u`` in sample order."""
    d = Gu.shape[1]
    for u in prange(Gu.shape[0]):
        gu = Gu[u]
        gu[:] = 0.0
        c_u = np.float32(0.0)
        for q in range(starts[u], starts[u + 1]):
            b = order[q]
            g = np.float32(gs[b]) * inv
            fi, fj = Fi[ps[b]], Fi[js[b]]
            for c in range(d):
                gu[c] -= g * (fi[c] - fj[c])
            c_u += inv
        cu[u] = c_u


@njit(cache=True, parallel=True)
def _scatter_items(us, js, gs, inv, Fu, starts, order, Gi, ci):
    """``Gi[k]``: ``-g F_u / n`` where ``k`` is the positive, ``+g F_u / n`` where it is the
    negative, in sample order (event ``e``: sample ``e >> 1``, negative if odd)."""
    d = Gi.shape[1]
    for k in prange(Gi.shape[0]):
        gk = Gi[k]
        gk[:] = 0.0
        c_k = np.float32(0.0)
        for q in range(starts[k], starts[k + 1]):
            e = order[q]
            b = e >> 1
            g = np.float32(gs[b]) * inv
            if e & 1 == 0:
                g = -g
            fu = Fu[us[b]]
            for c in range(d):
                gk[c] += g * fu[c]
            c_k += inv
        ci[k] = c_k


@njit(cache=True)
def bpr_batch(key, s0, n, n_items, x_indices, x_weight, x_rows, f_indptr, f_indices, Fu, Fi,
              Gu, Gi, cu, ci, work_i, work_f):
    """BPR on the final embeddings for samples ``s0 : s0 + n`` of an epoch keyed ``key``.

    Sample ``s`` draws an interaction uniformly (user ``u``, positive ``i``,
    weight ``w``) and a negative ``j`` outside the user's forbidden row.
    Fills ``Gu, Gi`` with the gradient of the *mean* weighted loss ``sum_s
    w_s softplus(-x_s) / n`` with respect to the final embeddings, ``x =
    <F_u, F_i - F_j>``, and ``cu, ci`` with how often each row occurs,
    divided by ``n`` (the L2 term's weights). Returns the summed weighted
    loss. Margins are computed in parallel; the gradient is gathered per
    row in parallel, each row adding its samples in sample order (a stable
    counting sort), so the sums are those of a serial scatter in sample
    order, for any thread count. ``work_i`` has 5 rows of at least ``n``.
    """
    us = work_i[0, :n]
    ps = work_i[1, :n]
    js = work_i[2, :n]
    gs = work_f[:n]
    loss = _margins(key, s0, n, n_items, x_indices, x_weight, x_rows, f_indptr, f_indices,
                    Fu, Fi, us, ps, js, gs)
    inv = np.float32(1.0 / max(n, 1))
    # Samples without a negative (j < 0) add nothing, to neither side.
    keys = work_i[3, :n]
    for b in range(n):
        keys[b] = us[b] if js[b] >= 0 else -1
    starts = np.empty(Gu.shape[0] + 1, np.int64)
    order = work_i[4, :n]
    _bucket(keys, Gu.shape[0], starts, order)
    _scatter_users(us, ps, js, gs, inv, Fi, starts, order, Gu, cu)
    # Item events 2b (positive of sample b) and 2b + 1 (its negative).
    ev = np.empty(2 * n, np.int64)
    for b in range(n):
        ok = js[b] >= 0
        ev[2 * b] = ps[b] if ok else -1
        ev[2 * b + 1] = js[b] if ok else -1
    starts_i = np.empty(Gi.shape[0] + 1, np.int64)
    order_i = np.empty(2 * n, np.int64)
    _bucket(ev, Gi.shape[0], starts_i, order_i)
    _scatter_items(us, js, gs, inv, Fu, starts_i, order_i, Gi, ci)
    return loss


@njit(cache=True, parallel=True)
def step_table(t_indptr, t_v, grad, counts, reg, lr, b1, b2, eps, optimizer):
    """One optimiser step of every active weight of a layer-0 table.

    ``grad`` holds the propagated gradient per active weight; the L2 term
    adds ``reg * counts[row] * w`` (the row's occurrences in the batch over
    the batch size). Adam reads ``lr`` with the bias correction folded in.
    """
    for r in prange(t_indptr.shape[0] - 1):
        rc = reg * counts[r]
        for p in range(t_indptr[r], t_indptr[r + 1]):
            step_weight(t_v, p, grad[p], rc, lr, b1, b2, eps, optimizer)


@njit(cache=True, inline="always")
def step_weight(t_v, p, grad, rc, lr, b1, b2, eps, optimizer):
    """The step of active weight ``p`` (L2 ``rc * w``); one source for the CPU and CUDA."""
    w = t_v[p, 0]
    g = grad + rc * w
    if optimizer == ADAM:
        m = b1 * t_v[p, 1] + (1.0 - b1) * g
        v = b2 * t_v[p, 2] + (1.0 - b2) * g * g
        t_v[p, 1] = m
        t_v[p, 2] = v
        t_v[p, 0] = w - lr * m / (math.sqrt(v) + eps)
    else:
        acc = t_v[p, 1] + g * g
        t_v[p, 1] = acc
        t_v[p, 0] = w - lr * g / (math.sqrt(acc) + eps)


@njit(cache=True, parallel=True)
def history_embeddings(h_indptr, h_indices, inv_sqrt_deg, P, scale, out):
    """``out[r] = scale * sum_{i in row r} P[i] / sqrt(|row r| * deg(i))``.

    A new user's final embedding when its layer-0 row is zero: one
    propagation step of its history over the items' summed layers ``P``.
    """
    d = P.shape[1]
    for r in prange(h_indptr.shape[0] - 1):
        n = h_indptr[r + 1] - h_indptr[r]
        for c in range(d):
            out[r, c] = 0.0
        if n == 0:
            continue
        su = 1.0 / math.sqrt(n)
        o = out[r]
        for q in range(h_indptr[r], h_indptr[r + 1]):
            i = h_indices[q]
            s = np.float32(scale * su * inv_sqrt_deg[i])
            pi = P[i]
            for c in range(d):
                o[c] += s * pi[c]



@njit(cache=True, parallel=True)
def softmax_sample(key, s0, n, neg0, n_items, x_indices, x_weight, x_rows, f_indptr, f_indices,
                   us, ps, ws, negs, hit):
    """Samples ``s0 : s0 + n`` of an epoch keyed ``key`` for the sampled softmax.

    Sample ``s`` draws an interaction uniformly (user ``us``, positive
    ``ps``, weight ``ws``), as :func:`bpr_batch` does; the batch shares
    ``len(negs)`` negatives drawn uniformly over the items, with sample ids
    ``neg0, neg0 + 1, ...`` on a stream of their own. ``hit[b, m]`` is set
    where negative ``m`` is in sample ``b``'s forbidden row (the user's
    training items) or is its positive: those terms are left out.
    """
    for m in prange(negs.shape[0]):
        negs[m] = softmax_negative(key, neg0 + m, n_items)
    for b in prange(n):
        softmax_sample_row(key, s0, b, x_indices, x_weight, x_rows, f_indptr, f_indices, negs,
                           us, ps, ws, hit)


@njit(cache=True, inline="always")
def softmax_negative(key, s, n_items):
    """The shared negative of sample id ``s`` (its own stream), uniform over the items."""
    return randint(draw(key, s, 9), n_items)


@njit(cache=True, inline="always")
def softmax_sample_row(key, s0, b, x_indices, x_weight, x_rows, f_indptr, f_indices, negs,
                       us, ps, ws, hit):
    """Sample ``s0 + b`` of :func:`softmax_sample` into row ``b`` (CPU and CUDA)."""
    pos = randint(draw(key, s0 + b, 0), x_indices.shape[0])
    u = x_rows[pos]
    i = x_indices[pos]
    us[b] = u
    ps[b] = i
    ws[b] = x_weight[pos]
    for m in range(negs.shape[0]):
        j = negs[m]
        hit[b, m] = j == i or in_row(f_indptr, f_indices, u, j)


@njit(cache=True)
def scatter_rows(rows, G, scale, out, counts):
    """``out[rows[b]] += scale * G[b]`` and ``counts[rows[b]] += scale``, in order ``b``.

    Serial, so sums do not depend on the number of threads.
    """
    d = G.shape[1]
    for b in range(rows.shape[0]):
        o = out[rows[b]]
        g = G[b]
        for c in range(d):
            o[c] += scale * g[c]
        counts[rows[b]] += scale
