"""iALS kernels on sparse tables: Gram matrices, exact row solves, curvature scores.

The loss of one row ``u`` (a user against the items, or an item against the
users) with weight vector ``w`` restricted to the row's active coordinates
``S`` is

    L_u(w) = sum_{i in I_u} c_ui (w . h_i - 1)^2 + w0 sum_{i not in I_u} (w . h_i)^2
             + lam_u |w|^2

with ``h_i`` the other side's rows, ``c_ui`` the confidence of an observed
pair and ``w0 wo_i`` the weight of every other pair (``w0``: the row's
factor ``wr[u]``, ``wo_i``: the other row's; all ``wo`` are 1 unless
unobserved items are weighted by popularity, eALS, He et al. 2016). With
``G = H^T diag(wo) H`` (the weighted Gram matrix of the other side) it is a
quadratic form

    L_u(w) = w^T A w - 2 b . w + sum_i c_ui,
    A = w0 G + sum_{i in I_u} (c_ui - w0 wo_i) h_i h_i^T + lam_u I,   b = sum_i c_ui h_i,
    lam_u = lam (sum_i c_ui + w0 sum_i wo_i),

so the exact minimiser on ``S`` solves ``A_SS w_S = b_S`` (a small Cholesky
system), and for any coordinate ``j`` the gradient is ``2 (A w - b)_j`` and
the curvature ``2 A_jj``. Pairs with ``c_ui = 0`` (excluded, not observed)
cancel the ``w0`` term: they are neither positive nor negative.

Kernels know arrays only. Tables are passed as ``(indptr, indices, values)``
with the weights in ``values[:, 0]``.
"""

import math

import numpy as np
from numba import njit, prange


def ials_item_factors(counts, exponent, reference=None):
    """iALS factor ``q_i`` of each item's unobserved weight: ``max(n_i, 1)**exponent``, mean 1.

    ``counts`` are the items' interaction counts; the mean is taken over
    ``reference`` (the training items' counts; default ``counts``), so all
    unobserved pairs together keep the weight of ``exponent=0`` (all 1).
    """
    if exponent == 0:
        return np.ones(len(counts))
    ref = counts if reference is None else reference
    scale = np.mean(np.maximum(np.asarray(ref, np.float64), 1.0) ** exponent) if len(ref) else 1.0
    return np.maximum(np.asarray(counts, np.float64), 1.0) ** exponent / scale


@njit(cache=True)
def gram(indptr, indices, values, d, wo):
    """``H^T diag(wo) H`` (float64, ``(d, d)``) of a sparse table's weights.

    ``wo[r]`` is row r's factor of the unobserved weight (all 1 unless
    unobserved pairs are weighted by popularity). Serial: it costs a small
    fraction of an epoch's solves, and a fixed summation order keeps results
    independent of the number of threads.
    """
    n = indptr.shape[0] - 1
    G = np.zeros((d, d))
    for r in range(n):
        p0, p1 = indptr[r], indptr[r + 1]
        f = wo[r]
        for p in range(p0, p1):
            a = indices[p]
            va = f * values[p, 0]
            for q in range(p0, p1):
                G[a, indices[q]] += va * values[q, 0]
    return G


@njit(cache=True)
def _cholesky_solve(A, b, k):
    """Solve ``A[:k, :k] x = b[:k]`` in place (``x`` in ``b``), reading A's lower triangle.

    ``A`` is symmetric positive definite (the ridge term sees to it); a
    pivot that rounding left non-positive is clamped so the solve stays
    finite.
    """
    for j in range(k):
        s = A[j, j]
        for m in range(j):
            s -= A[j, m] * A[j, m]
        if s <= 1e-300:
            s = 1e-300
        ljj = math.sqrt(s)
        A[j, j] = ljj
        for i in range(j + 1, k):
            t = A[i, j]
            for m in range(j):
                t -= A[i, m] * A[j, m]
            A[i, j] = t / ljj
    for i in range(k):
        t = b[i]
        for m in range(i):
            t -= A[i, m] * b[m]
        b[i] = t / A[i, i]
    for i in range(k - 1, -1, -1):
        t = b[i]
        for m in range(i + 1, k):
            t -= A[m, i] * b[m]
        b[i] = t / A[i, i]


# Interactions gathered per pass of the system build: bounds the scratch
# (d x _CHUNK per thread) whatever a row's length.
_CHUNK = 256


@njit(cache=True, fastmath={"reassoc", "contract"})
def _accumulate(A, b, H, wH, n, k):
    """Add one chunk of interactions to the lower triangle of ``A[:k, :k]`` and to ``b[:k]``.

    ``A[a, e] += sum_s wH[a, s] H[e, s]`` and ``b[a] += sum_s c_s H[a, s]``
    with ``c_s`` in row ``d`` of ``wH``. Dot products along the
    interactions (contiguous) vectorise; the reassociation this allows is
    the only change of summation order.
    """
    c = wH[H.shape[0] - 1]
    for a in range(k):
        ha = H[a]
        acc = 0.0
        for s in range(n):
            acc += c[s] * ha[s]
        b[a] += acc
        wa = wH[a]
        for e in range(a + 1):
            he = H[e]
            acc = 0.0
            for s in range(n):
                acc += wa[s] * he[s]
            A[a, e] += acc


@njit(cache=True)
def _system(cols, k, h0, h1, x_idx, x_c, o_indptr, o_indices, o_values, G, w0, wo, lam,
            wo_sum, pos, A, b, H, wH):
    """Fill the lower triangle of ``A[:k, :k]`` and ``b[:k]`` of one row on ``cols[:k]``.

    ``cols`` is sorted; ``pos`` (length d, all d on entry and on return)
    maps a column to its place in ``cols``; ``H`` and ``wH`` are
    ``(d + 1, _CHUNK)`` scratch: the other side's rows restricted to
    ``cols``, one interaction per column, plain and times ``c_ui - w0 wo_i``
    (row d of ``wH``: the confidences); ``w0 * wo[i]`` is the unobserved
    weight of the pair with other row i, ``wo_sum`` the sum of ``wo``.
    Returns ``(sum_i c_ui, lam_u)``.
    """
    d = G.shape[0]
    for a in range(k):
        pos[cols[a]] = a
    for a in range(k):
        b[a] = 0.0
        for c in range(a + 1):
            A[a, c] = w0 * G[cols[a], cols[c]]
    csum = 0.0
    chunk = H.shape[1]
    for t0 in range(h0, h1, chunk):
        t1 = min(t0 + chunk, h1)
        n = t1 - t0
        for a in range(k):
            for s in range(n):
                H[a, s] = 0.0
        # Branch-free scatter: inactive columns map to row d of H, a row
        # no sum reads.
        for t in range(t0, t1):
            s = t - t0
            i = x_idx[t]
            for p in range(o_indptr[i], o_indptr[i + 1]):
                H[pos[o_indices[p]], s] = o_values[p, 0]
        for t in range(t0, t1):
            s = t - t0
            c = np.float64(x_c[t])
            csum += c
            wH[d, s] = c
            cw = c - w0 * wo[x_idx[t]]
            for a in range(k):
                wH[a, s] = cw * H[a, s]
        _accumulate(A, b, H, wH, n, k)
    lam_u = lam * (csum + w0 * wo_sum)
    for a in range(k):
        A[a, a] += lam_u
        pos[cols[a]] = d
    return csum, lam_u


@njit(cache=True)
def _solve_row(cols, k, h0, h1, x_idx, x_c, o_indptr, o_indices, o_values, G, w0, wo, lam,
               wo_sum, pos, A, b, H, wH, x):
    """Exact minimiser ``x[:k]`` of the row's loss on ``cols[:k]``; returns ``(loss, reg)``.

    ``loss`` is the row's whole objective (data and its ridge term) at the
    solution, ``reg`` the ridge term alone.
    """
    csum, lam_u = _system(cols, k, h0, h1, x_idx, x_c, o_indptr, o_indices, o_values, G, w0,
                          wo, lam, wo_sum, pos, A, b, H, wH)
    # Keep b: the objective at the solution is csum - b . x.
    for a in range(k):
        x[a] = b[a]
    _cholesky_solve(A, x, k)
    bx = 0.0
    sq = 0.0
    for a in range(k):
        bx += b[a] * x[a]
        sq += x[a] * x[a]
    return csum - bx, lam_u * sq


@njit(cache=True, parallel=True)
def solve_rows(indptr, indices, values, x_indptr, x_idx, x_c, o_indptr, o_indices, o_values,
               G, wr, wo, lam, n_blocks, loss, reg):
    """Replace every row's active weights by the exact minimiser of its loss.

    ``loss[r]`` and ``reg[r]`` receive the row's objective and ridge term at
    the solution. Rows are independent, so the result does not depend on the
    number of threads.
    """
    n = indptr.shape[0] - 1
    d = G.shape[0]
    wo_sum = wo.sum()
    for blk in prange(n_blocks):
        pos = np.full(d, d, np.int64)
        cols = np.empty(d, np.int64)
        A = np.empty((d, d))
        b = np.empty(d)
        x = np.empty(d)
        H = np.empty((d + 1, _CHUNK))
        wH = np.empty((d + 1, _CHUNK))
        for r in range(blk, n, n_blocks):
            p0, p1 = indptr[r], indptr[r + 1]
            k = p1 - p0
            for a in range(k):
                cols[a] = indices[p0 + a]
            lo, rg = _solve_row(cols, k, x_indptr[r], x_indptr[r + 1], x_idx, x_c, o_indptr,
                                o_indices, o_values, G, wr[r], wo, lam, wo_sum, pos, A, b,
                                H, wH, x)
            for a in range(k):
                values[p0 + a, 0] = np.float32(x[a])
            loss[r] = lo
            reg[r] = rg


@njit(cache=True)
def _grad_curv(r, indptr, indices, values, x_indptr, x_idx, x_c, o_indptr, o_indices,
               o_values, G, w0, wo, lam, wo_sum, w, g, h):
    """Gradient ``g`` and Hessian diagonal ``h`` (length d, halved) of row ``r`` at its weights.

    Both are over all d coordinates, active or not: ``g = A w - b`` and
    ``h = diag(A)`` (the factor 2 of the loss cancels in every score).
    """
    d = G.shape[0]
    for j in range(d):
        w[j] = 0.0
        g[j] = 0.0
        h[j] = 0.0
    p0, p1 = indptr[r], indptr[r + 1]
    for p in range(p0, p1):
        w[indices[p]] = values[p, 0]
    csum = 0.0
    for t in range(x_indptr[r], x_indptr[r + 1]):
        i = x_idx[t]
        c = np.float64(x_c[t])
        csum += c
        s = 0.0
        for p in range(o_indptr[i], o_indptr[i + 1]):
            s += w[o_indices[p]] * o_values[p, 0]
        cw = c - w0 * wo[i]
        e = cw * s - c
        for p in range(o_indptr[i], o_indptr[i + 1]):
            v = np.float64(o_values[p, 0])
            j = o_indices[p]
            g[j] += e * v
            h[j] += cw * v * v
    lam_u = lam * (csum + w0 * wo_sum)
    for j in range(d):
        s = 0.0
        for p in range(p0, p1):
            s += G[j, indices[p]] * w[indices[p]]
        g[j] += w0 * s + lam_u * w[j]
        h[j] += w0 * G[j, j] + lam_u


@njit(cache=True, parallel=True)
def curvature_scores(grow, prune, indptr, indices, values, x_indptr, x_idx, x_c, o_indptr,
                     o_indices, o_values, G, wr, wo, lam, n_blocks=64):
    """Growth and prune scores of every row of a table, from one gradient pass.

    ``grow[r, j] = g_j / sqrt(H_jj)``: its square, ``g_j^2 / H_jj``, is the
    loss decrease of the best step on coordinate j alone (up to a factor
    2), scale-free across frequent and rare rows. ``prune[p] = w_p^2 *
    H_jj`` per active weight (storage order): the loss increase of zeroing
    that weight of a solved row (up to a factor 2).
    """
    d = G.shape[0]
    n = indptr.shape[0] - 1
    wo_sum = wo.sum()
    # Scratch per block of rows, not per row: allocations inside the
    # parallel loop cost more than a row's scores.
    for blk in prange(n_blocks):
        w = np.empty(d)
        g = np.empty(d)
        h = np.empty(d)
        for r in range(blk, n, n_blocks):
            _grad_curv(r, indptr, indices, values, x_indptr, x_idx, x_c, o_indptr, o_indices,
                       o_values, G, wr[r], wo, lam, wo_sum, w, g, h)
            for j in range(d):
                grow[r, j] = np.float32(g[j] / math.sqrt(h[j])) if h[j] > 0 else 0.0
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[p]
                prune[p] = np.float32(w[j] * w[j] * h[j])


@njit(cache=True, parallel=True)
def fold_in_ials(x_indptr, x_idx, x_c, i_indptr, i_indices, i_values, G, wr, wo, lam, k_keep,
                 U, M):
    """Rows of new users: the exact iALS solve on a budget of ``k_keep`` coordinates.

    Each row is solved on all d coordinates, keeps the ``k_keep`` with the
    largest ``w_j^2 * A_jj`` (the loss increase of dropping each) and is
    solved again exactly on those. ``U[r]`` gets the weights, ``M[r]`` the
    active mask. Rows are independent.
    """
    n_rows, d = U.shape
    wo_sum = wo.sum()
    for r in prange(n_rows):
        pos = np.full(d, d, np.int64)
        cols = np.arange(d)
        A = np.empty((d, d))
        b = np.empty(d)
        x = np.empty(d)
        H = np.empty((d + 1, _CHUNK))
        wH = np.empty((d + 1, _CHUNK))
        h0, h1 = x_indptr[r], x_indptr[r + 1]
        for j in range(d):
            U[r, j] = 0.0
            M[r, j] = False
        if h1 == h0:
            # No history: nothing to fit; the row keeps its budget at zero.
            for j in range(min(k_keep, d)):
                M[r, j] = True
            continue
        _solve_row(cols, d, h0, h1, x_idx, x_c, i_indptr, i_indices, i_values, G, wr[r], wo,
                   lam, wo_sum, pos, A, b, H, wH, x)
        if k_keep < d:
            # The diagonal of A again (the solve factored it in place).
            sol = x.copy()
            _system(cols, d, h0, h1, x_idx, x_c, i_indptr, i_indices, i_values, G, wr[r], wo,
                    lam, wo_sum, pos, A, b, H, wH)
            score = np.empty(d)
            for j in range(d):
                score[j] = -(sol[j] * sol[j] * A[j, j])
            order = np.argsort(score, kind="mergesort")
            keep = np.sort(order[:k_keep])
            for a in range(k_keep):
                cols[a] = keep[a]
            _solve_row(cols, k_keep, h0, h1, x_idx, x_c, i_indptr, i_indices, i_values, G,
                       wr[r], wo, lam, wo_sum, pos, A, b, H, wH, x)
        k = min(k_keep, d)
        for a in range(k):
            U[r, cols[a]] = np.float32(x[a])
            M[r, cols[a]] = True
