"""Cosine contrastive loss (CCL, SimpleX) matrix-factorisation kernels over CSR factor tables.

Layout and sampling as in :mod:`._softmax`: an epoch takes every user once,
users in batches that share ``n_neg`` negatives drawn from the proposal
``cdf``. The loss of a user ``u`` with positives ``i`` (values ``c_ui``,
``C_u = sum_i c_ui``) against the batch's negatives ``j_1 .. j_N`` is

    L_u = sum_i c_ui (1 - cos(p_u, q_i))
          + C_u (w / N) sum_n max(0, cos(p_u, q_{j_n}) - margin),

negatives in ``u``'s forbidden row left out: each positive's own CCL term
(Mao et al. 2021, SimpleX) with the negatives shared by all the user's
positives. With ``cos(p, q) = <p, q> / (|p| |q|)``,

    d cos / d p = (q / |q| - cos p / |p|) / |p|,

so the user's gradient is a dense product of its active coordinates with
the batch's gathered ``(d, N)`` block plus a term along ``p`` itself, and a
negative's gradient gathers into ``GQ`` plus ``-beta[n] q_n`` (see
:func:`._softmax.step_negatives`). Adagrad on every touched weight with L2
``reg``. The engine keeps rows at one norm between epochs (the loss does
not depend on a row's norm), so steps have one scale and a dot product
ranks as the cosine.

Growth scores are the gradient of the loss in expectation over the
negatives' draws (``w q(j)`` per user-item pair outside the forbidden
pattern), from the dense unit rows: the positive part exactly by
:func:`positive_grad`, the negative part by blocks of dense products,
either over all pairs (:func:`hinge_block` turns a block of cosines into
its weights) or, at a bounded cost, over sampled columns or rows with
importance weights (:func:`hinge_sampled`), an unbiased estimate of it.
"""

import math

import numpy as np
from numba import njit, prange

from ._rng import draw
from ._softmax import (
    _adagrad,
    draw_item,
    gather_block,
    negative_scores,
    row_norm,
    step_negatives,
)


@njit(cache=True, inline="always")
def _sift_down(a, r, n):
    while 2 * r + 1 < n:
        c = 2 * r + 1
        if c + 1 < n and a[c + 1] > a[c]:
            c += 1
        if a[r] >= a[c]:
            return
        a[r], a[c] = a[c], a[r]
        r = c


@njit(cache=True, inline="always")
def heap_sort(a, n):
    """Sort ``a[:n]`` in place (heapsort: n log n, no allocation, plain loops).

    Plain loops so that the CUDA engines can compile it as a device function.
    """
    for r in range(n // 2 - 1, -1, -1):
        _sift_down(a, r, n)
    for e in range(n - 1, 0, -1):
        a[0], a[e] = a[e], a[0]
        _sift_down(a, 0, e)


@njit(cache=True, inline="always")
def ccl_start_batch(key, b, n_neg, cdf, neg, QT, GQ, i_indptr, i_indices, i_v):
    """:func:`._softmax.start_batch` sorted by :func:`heap_sort`: the same sorted draws.

    CCL wants thousands of negatives, where the insertion sort of the
    softmax kernels (quadratic) would cost more than the batch's products.
    """
    for n in range(n_neg):
        neg[n] = draw_item(draw(key, b * n_neg + n, 1), cdf)
    heap_sort(neg, n_neg)
    gather_block(QT, neg, n_neg, i_indptr, i_indices, i_v)
    GQ[:, :n_neg] = 0.0


@njit(cache=True, inline="always")
def _column_norms(nq, beta, neg, n_neg, i_indptr, i_v):
    for m in range(n_neg):
        j = neg[m]
        sq = 0.0
        for p in range(i_indptr[j], i_indptr[j + 1]):
            sq += i_v[p, 0] * i_v[p, 0]
        nq[m] = row_norm(sq)
        beta[m] = 0.0


@njit(cache=True, inline="always")
def ccl_step_user(u0, u1, u_indices, u_v, pu, gu, along, s, act, n_act, QT, GQ, lr, reg):
    """:func:`._softmax.step_user_row` over the negatives ``act[:n_act]`` only.

    A CCL negative below the margin has no gradient (``s[m] = 0``), and most
    are below it, so the user's step and the negatives' gradient cost the
    active coordinates times the hinge's active negatives, not times all.
    """
    for p in range(u0, u1):
        k = u_indices[p]
        g = np.float64(gu[k]) + along * pu[k]
        for t in range(n_act):
            m = act[t]
            g += s[m] * QT[k, m]
            GQ[k, m] += s[m] * pu[k]
        _adagrad(u_v, p, np.float32(g) + reg * u_v[p, 0], lr)
    for p in range(u0, u1):
        pu[u_indices[p]] = 0.0
    gu[:] = 0.0


@njit(cache=True, fastmath=True, error_model="numpy")
def _ccl_users_block(
    b0, b1, order, batch, n_neg, key, QT, GQ, neg, s, pu, gu, nq, beta, act,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
    cdf, zero, margin, neg_weight, lr, reg,
):
    """Train user batches ``b0 <= b < b1`` of ``order``; returns their loss sum.

    ``zero`` is a zero array of ``n_items`` (no log-q shift of the scores).
    """
    n = order.shape[0]
    loss = 0.0
    wn = neg_weight / n_neg
    for b in range(b0, b1):
        ccl_start_batch(key, b, n_neg, cdf, neg, QT, GQ, i_indptr, i_indices, i_v)
        _column_norms(nq, beta, neg, n_neg, i_indptr, i_v)
        for t in range(b * batch, min(n, (b + 1) * batch)):
            u = order[t]
            h0 = x_indptr[u]
            h1 = x_indptr[u + 1]
            if h0 == h1:
                continue
            u0 = u_indptr[u]
            u1 = u_indptr[u + 1]
            sq = 0.0
            for p in range(u0, u1):
                w = u_v[p, 0]
                pu[u_indices[p]] = w
                sq += w * w
            pn = row_norm(sq)
            # Dot products with the negatives; hits come back as -1e30.
            negative_scores(s, u, -1, u0, u1, u_indices, u_v, QT, neg, n_neg, zero, 1.0,
                            f_indptr, f_indices)
            cu = 0.0
            for h in range(h0, h1):
                cu += x_weight[h]
            a = cu * wn
            ap = 0.0  # coefficient of p / |p|^2 in dL/dp
            n_act = 0
            for m in range(n_neg):
                cm = s[m] / (pn * nq[m])
                if cm > margin:
                    loss += a * (cm - margin)
                    ap -= a * cm
                    beta[m] += a * cm / (nq[m] * nq[m])
                    s[m] = a / (pn * nq[m])  # of q_n in dL/dp, of p in dL/dq_n
                    act[n_act] = m
                    n_act += 1
                else:
                    s[m] = 0.0
            for h in range(h0, h1):
                i = x_indices[h]
                c = x_weight[h]
                sq = 0.0
                dot = 0.0
                for p in range(i_indptr[i], i_indptr[i + 1]):
                    w = i_v[p, 0]
                    sq += w * w
                    dot += w * pu[i_indices[p]]
                qn = row_norm(sq)
                ci = dot / (pn * qn)
                loss += c * (1.0 - ci)
                ap += c * ci
                gi = c / (pn * qn)
                ki = c * ci / (qn * qn)
                # dL/dq_i = -c (p / (|p| |q_i|) - cos q_i / |q_i|^2), at the pre-step p.
                for p in range(i_indptr[i], i_indptr[i + 1]):
                    k = i_indices[p]
                    w = i_v[p, 0]
                    gu[k] -= gi * w
                    _adagrad(i_v, p, np.float32(ki * w - gi * pu[k]) + reg * w, lr)
            ccl_step_user(u0, u1, u_indices, u_v, pu, gu, ap / (pn * pn), s, act, n_act,
                              QT, GQ, lr, reg)
        step_negatives(neg, n_neg, GQ, beta, True, QT, i_indptr, i_indices, i_v, lr, reg)
    return loss


@njit(cache=True)
def ccl_users_serial(
    order, batch, n_neg, key, QT, GQ, neg, s, pu, gu, nq, beta, act,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, zero, margin, neg_weight, lr, reg,
):
    """One epoch over the users in ``order``, batch by batch, on one thread."""
    n_batches = (order.shape[0] + batch - 1) // batch
    return _ccl_users_block(
        0, n_batches, order, batch, n_neg, key, QT[0], GQ[0], neg[0], s[0], pu[0], gu[0],
        nq[0], beta[0], act[0], x_indptr, x_indices, x_weight, f_indptr, f_indices,
        u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, zero, margin, neg_weight,
        lr, reg,
    )


@njit(cache=True, parallel=True)
def ccl_users_parallel(
    order, batch, n_neg, key, QT, GQ, neg, s, pu, gu, nq, beta, act,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, zero, margin, neg_weight, lr, reg,
):
    """Hogwild epoch over user batches: contiguous runs on the work rows' threads."""
    n_batches = (order.shape[0] + batch - 1) // batch
    n_blocks = QT.shape[0]
    per = (n_batches + n_blocks - 1) // n_blocks
    losses = np.zeros(n_blocks)
    for blk in prange(n_blocks):
        losses[blk] = _ccl_users_block(
            blk * per, min(n_batches, (blk + 1) * per), order, batch, n_neg, key,
            QT[blk], GQ[blk], neg[blk], s[blk], pu[blk], gu[blk], nq[blk], beta[blk], act[blk],
            x_indptr, x_indices, x_weight, f_indptr, f_indices,
            u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, zero, margin, neg_weight,
            lr, reg,
        )
    return losses.sum()


@njit(cache=True, inline="always")
def normalise_row(r, indptr, v, norms):
    """Scale row ``r`` (weights ``v[:, 0]``) to ``norms[r]`` unless it is zero (CPU and CUDA)."""
    sq = 0.0
    for p in range(indptr[r], indptr[r + 1]):
        sq += np.float64(v[p, 0]) * v[p, 0]
    if sq > 1e-24:
        inv = norms[r] / math.sqrt(sq)
        for p in range(indptr[r], indptr[r + 1]):
            v[p, 0] = np.float32(v[p, 0] * inv)


@njit(cache=True, parallel=True)
def normalise_rows(indptr, v, norms):
    """Scale every non-zero row ``r`` of a table (weights ``v[:, 0]``) to ``norms[r]``, in place."""
    n = indptr.shape[0] - 1
    for r in prange(n):
        normalise_row(r, indptr, v, norms)


@njit(cache=True)
def dense_unit_rows(indptr, indices, v, n_cols, out, norms):
    """``out[r]`` = row ``r`` over its norm (dense), ``norms[r]`` = :func:`row_norm`."""
    n = indptr.shape[0] - 1
    for r in range(n):
        sq = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            sq += np.float64(v[p, 0]) * v[p, 0]
        nr = row_norm(sq)
        norms[r] = nr
        out[r, :] = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            out[r, indices[p]] = np.float32(v[p, 0] / nr)


@njit(cache=True, parallel=True, fastmath=True)
def positive_grad(r0, r1, G, x_indptr, x_indices, x_weight, A, B, norms):
    """``G[r - r0]`` = the positive part of dL/d(row r) for rows ``r0 <= r < r1``.

    ``A`` and ``B``: this side's and the other side's unit rows (dense),
    ``norms`` this side's row norms; the pairs are ``x`` (CSR of this side).
    """
    d = G.shape[1]
    for r in prange(r0, r1):
        g = G[r - r0]
        g[:] = 0.0
        a = A[r]
        for p in range(x_indptr[r], x_indptr[r + 1]):
            j = x_indices[p]
            b = B[j]
            cos = 0.0
            for k in range(d):
                cos += a[k] * b[k]
            c = x_weight[p] / norms[r]
            for k in range(d):
                g[k] += c * (cos * a[k] - b[k])


@njit(cache=True, parallel=True)
def hinge_block(Cos, W, margin, rw, cw, r0, c0, f_indptr, f_indices):
    """``W`` = ``rw[r] * cw[c]`` where ``Cos > margin`` and the pair is not forbidden, else 0.

    ``Cos`` is the block of rows ``r0 ..`` (of the forbidden CSR) by columns
    ``c0 ..``; forbidden pairs are set to -2 in ``Cos`` as well.
    """
    n_r, n_c = Cos.shape
    for r in prange(n_r):
        u = r0 + r
        for p in range(f_indptr[u], f_indptr[u + 1]):
            j = f_indices[p] - c0
            if 0 <= j < n_c:
                Cos[r, j] = -2.0
        for c in range(n_c):
            W[r, c] = rw[r] * cw[c] if Cos[r, c] > margin else 0.0


@njit(cache=True, parallel=True)
def hinge_sampled(Cos, W, margin, rw, cw, rows, cols, f_indptr, f_indices):
    """:func:`hinge_block` of a sampled block: rows ``rows[a]`` by columns ``cols[b]``.

    ``Cos[a, b]`` is the cosine of user ``rows[a]`` and item ``cols[b]``;
    ``cols`` must be sorted (the forbidden test is a merge with each user's
    sorted forbidden row), ``rows`` may repeat. ``W[a, b]`` = ``rw[a] *
    cw[b]`` where ``Cos > margin`` and the pair is not forbidden, else 0;
    forbidden pairs are set to -2 in ``Cos`` as well.
    """
    n_r, n_c = Cos.shape
    for a in prange(n_r):
        u = rows[a]
        f = f_indptr[u]
        f1 = f_indptr[u + 1]
        for b in range(n_c):
            j = cols[b]
            while f < f1 and f_indices[f] < j:
                f += 1
            if f < f1 and f_indices[f] == j:
                Cos[a, b] = -2.0
                W[a, b] = 0.0
            else:
                W[a, b] = rw[a] * cw[b] if Cos[a, b] > margin else 0.0


@njit(cache=True)
def start_batch_host(key, n_neg, cdf, neg, QT, i_indptr):
    """:func:`ccl_start_batch` of batch 0 on a table without weights (tests)."""
    GQ = np.zeros_like(QT)
    ccl_start_batch(key, 0, n_neg, cdf, neg, QT, GQ, i_indptr, np.zeros(0, np.int32),
                np.zeros((0, 1), np.float32))
