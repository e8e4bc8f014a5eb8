"""Sampled-softmax matrix-factorisation kernels over CSR factor tables.

Layout as in :mod:`._bpr` (interactions, forbidden pattern, tables whose
``v[p, 0]`` is the weight and ``v[p, 1]`` its Adagrad accumulator).

One epoch draws ``n_samples`` positive interactions ``(u, i)`` uniformly
(weighted by their value) in batches of ``batch``. Each batch shares
``n_neg`` negative items drawn with replacement from the proposal ``q``
(``cdf``: its cumulative distribution). The loss of a positive is the
sampled softmax with the log-q correction

    L_ui = c_ui * (logsumexp(s_0, s_1 .. s_N) - s_0),
    s_0 = <p_u, q_i> / T,   s_n = <p_u, q_{j_n}> / T - log(N q(j_n)),

where negatives in ``u``'s forbidden row (or equal to ``i``) are left out.
The correction makes the sum over negatives an unbiased estimate of the
full softmax denominator. Because the negatives are shared, a batch first
gathers their rows into a dense ``(d, N)`` block; each positive is then a
small dense product of the user's active coordinates with that block (the
scores) and its transpose (the user's gradient), and the negatives' rows
are stepped once per batch with the batch's summed gradient. Adagrad on
every touched weight with L2 ``reg``. Batches run Hogwild over threads, the
same block function serially on one thread (bitwise reproducible).
"""

import math

import numpy as np
from numba import njit, prange

from ._foldin import _keep_largest as keep_largest
from ._rng import draw, randint, splitmix64

_EPS = np.float32(1e-8)
_NEG_INF = -1e30


@njit(cache=True, inline="always")
def _adagrad(v, p, grad, lr):
    acc = v[p, 1] + grad * grad
    v[p, 1] = acc
    v[p, 0] -= lr * grad / (math.sqrt(acc) + _EPS)


@njit(cache=True, inline="always")
def row_norm(sq):
    """The norm of a row of squared norm ``sq``; 1 for a zero row (cosine losses).

    A zero row has no direction; counting its norm as 1 gives it the
    gradient of a unit row (the cosine losses keep rows near unit norm).
    """
    return math.sqrt(sq) if sq > 1e-24 else 1.0


@njit(cache=True, inline="always")
def uniform01(bits):
    """53 random bits as a float in [0, 1)."""
    return np.float64(bits >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def draw_item(bits, cdf):
    """An item drawn from the proposal whose cumulative distribution is ``cdf``."""
    x = uniform01(bits) * cdf[cdf.shape[0] - 1]
    lo = 0
    hi = cdf.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if cdf[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _sort_small(a, n):
    # Insertion sort of a[:n] (a few hundred ids): no allocation, sorted
    # negatives make the accidental-hit test a merge with the user's row.
    for t in range(1, n):
        x = a[t]
        s = t - 1
        while s >= 0 and a[s] > x:
            a[s + 1] = a[s]
            s -= 1
        a[s + 1] = x


@njit(cache=True, inline="always")
def draw_negatives(key, base, n_neg, cdf, neg):
    """``neg[:n_neg]``: draws ``base .. base + n_neg`` of stream 1, sorted."""
    for n in range(n_neg):
        neg[n] = draw_item(draw(key, base + n, 1), cdf)
    _sort_small(neg, n_neg)


@njit(cache=True, inline="always")
def gather_block(QT, neg, n_neg, i_indptr, i_indices, i_v):
    """Dense ``QT[:, n]`` = item row ``neg[n]`` (zero elsewhere)."""
    QT[:, :n_neg] = 0.0
    for n in range(n_neg):
        j = neg[n]
        for p in range(i_indptr[j], i_indptr[j + 1]):
            QT[i_indices[p], n] = i_v[p, 0]


@njit(cache=True, inline="always")
def start_batch(key, b, n_neg, cdf, neg, QT, GQ, i_indptr, i_indices, i_v):
    """Batch ``b``'s negatives, their rows gathered into ``QT`` and ``GQ`` zeroed."""
    draw_negatives(key, b * n_neg, n_neg, cdf, neg)
    gather_block(QT, neg, n_neg, i_indptr, i_indices, i_v)
    GQ[:, :n_neg] = 0.0


@njit(cache=True)
def draw_negatives_host(key, n_neg, cdf, neg):
    """:func:`draw_negatives` of one shared sample (growth steps)."""
    draw_negatives(key, 0, n_neg, cdf, neg)


@njit(cache=True)
def gather_block_host(QT, neg, i_indptr, i_indices, i_v):
    """:func:`gather_block` of all ``neg`` (growth steps)."""
    gather_block(QT, neg, neg.shape[0], i_indptr, i_indices, i_v)


@njit(cache=True, inline="always")
def negative_scores(s, u, i, pu_idx0, pu_idx1, u_indices, u_v, QT, neg, n_neg, logq, inv_t,
                    f_indptr, f_indices):
    """``s[n]`` = corrected logit of negative ``n`` for user ``u``; -inf for hits. Max returned.

    ``pu_idx0:pu_idx1`` are the positions of ``u``'s active weights.
    """
    for n in range(n_neg):
        s[n] = 0.0
    for p in range(pu_idx0, pu_idx1):
        k = u_indices[p]
        w = u_v[p, 0]
        for n in range(n_neg):
            s[n] += w * QT[k, n]
    # Merge the sorted negatives with the user's sorted forbidden row.
    f = f_indptr[u]
    f1 = f_indptr[u + 1]
    mx = _NEG_INF
    for n in range(n_neg):
        j = neg[n]
        while f < f1 and f_indices[f] < j:
            f += 1
        if j == i or (f < f1 and f_indices[f] == j):
            s[n] = _NEG_INF
        else:
            s[n] = s[n] * inv_t - logq[j]
            if s[n] > mx:
                mx = s[n]
    return mx


@njit(cache=True, inline="always")
def _dot_sparse_dense(r, dense, indptr, indices, v):
    x = 0.0
    for p in range(indptr[r], indptr[r + 1]):
        x += dense[indices[p]] * v[p, 0]
    return x


@njit(cache=True, inline="always")
def step_negatives(neg, n_neg, GQ, beta, use_beta, QT, i_indptr, i_indices, i_v, lr, reg):
    """One Adagrad step per negative row with the batch's gradient ``GQ`` (``d x N``).

    With ``use_beta`` the gradient of column ``n`` also has ``-beta[n] * QT[:, n]``
    (a term along the row itself, as the cosine loss's). The negatives are
    sorted, so an item drawn twice is a run: it steps once, with the run's
    summed gradient.
    """
    n = 0
    while n < n_neg:
        j = neg[n]
        e = n + 1
        while e < n_neg and neg[e] == j:
            e += 1
        for p in range(i_indptr[j], i_indptr[j + 1]):
            k = i_indices[p]
            g = 0.0
            for m in range(n, e):
                g += GQ[k, m]
                if use_beta:
                    g -= beta[m] * QT[k, m]
            _adagrad(i_v, p, np.float32(g) + reg * i_v[p, 0], lr)
        n = e


@njit(cache=True, fastmath=True, error_model="numpy")
def _softmax_block(
    b0, b1, n_samples, batch, n_neg, key, QT, GQ, neg, s, pu, qi,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
    cdf, logq, inv_t, lr, reg,
):
    """Train batches ``b0 <= b < b1`` in order; returns their loss sum."""
    nnz = x_indices.shape[0]
    loss = 0.0
    for b in range(b0, b1):
        start_batch(key, b, n_neg, cdf, neg, QT, GQ, i_indptr, i_indices, i_v)
        t1 = min(n_samples, (b + 1) * batch)
        for t in range(b * batch, t1):
            pos = randint(draw(key, t, 0), nnz)
            u = x_rows[pos]
            i = x_indices[pos]
            c = x_weight[pos]
            u0 = u_indptr[u]
            u1 = u_indptr[u + 1]
            for p in range(u0, u1):
                pu[u_indices[p]] = u_v[p, 0]
            for p in range(i_indptr[i], i_indptr[i + 1]):
                qi[i_indices[p]] = i_v[p, 0]
            s0 = _dot_sparse_dense(i, pu, i_indptr, i_indices, i_v) * inv_t
            mx = negative_scores(s, u, i, u0, u1, u_indices, u_v, QT, neg, n_neg, logq,
                                 inv_t, f_indptr, f_indices)
            if s0 > mx:
                mx = s0
            z = math.exp(s0 - mx)
            for n in range(n_neg):
                s[n] = math.exp(s[n] - mx)  # hits: exp(-huge) = 0
                z += s[n]
            loss += c * (math.log(z) + mx - s0)
            g0 = np.float32(c * inv_t * (math.exp(s0 - mx) / z - 1.0))
            scale = c * inv_t / z
            for n in range(n_neg):
                s[n] *= scale  # dL/d<p_u, q_j>
            # User step at the pre-step point; the negatives' gradient
            # gathers into GQ with the pre-step user row (in pu).
            for p in range(u0, u1):
                k = u_indices[p]
                g = g0 * qi[k]
                for n in range(n_neg):
                    g += s[n] * QT[k, n]
                    GQ[k, n] += s[n] * pu[k]
                _adagrad(u_v, p, np.float32(g) + reg * u_v[p, 0], lr)
            for p in range(i_indptr[i], i_indptr[i + 1]):
                k = i_indices[p]
                _adagrad(i_v, p, g0 * pu[k] + reg * i_v[p, 0], lr)
                qi[k] = 0.0
            for p in range(u0, u1):
                pu[u_indices[p]] = 0.0
        step_negatives(neg, n_neg, GQ, GQ[0], False, QT, i_indptr, i_indices, i_v, lr, reg)
    return loss


@njit(cache=True, inline="always")
def step_user_row(u0, u1, u_indices, u_v, pu, gu, along, s, QT, GQ, n_neg, lr, reg):
    """Adagrad step of a user's active weights ``u0:u1``, then ``pu`` and ``gu`` cleared.

    The gradient of coordinate ``k`` is ``gu[k] + along * pu[k] + sum_n s[n]
    QT[k, n]`` (``s[n]``: dL/d<p_u, q_n> of the batch's negatives), at the
    pre-step row held in ``pu``; the negatives' gradient ``s[n] * pu[k]``
    gathers into ``GQ`` for :func:`step_negatives`. Shared by the
    user-batch kernels of the softmax and CCL losses.
    """
    for p in range(u0, u1):
        k = u_indices[p]
        g = np.float64(gu[k]) + along * pu[k]
        for m in range(n_neg):
            g += s[m] * QT[k, m]
            GQ[k, m] += s[m] * pu[k]
        _adagrad(u_v, p, np.float32(g) + reg * u_v[p, 0], lr)
    for p in range(u0, u1):
        pu[u_indices[p]] = 0.0
    gu[:] = 0.0


@njit(cache=True, fastmath=True, error_model="numpy")
def _softmax_users_block(
    b0, b1, order, batch, n_neg, key, QT, GQ, neg, s, pu, gu,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
    cdf, logq, inv_t, lr, reg,
):
    """Train user batches ``b0 <= b < b1`` of ``order``; returns their loss sum.

    A user's negative logits do not depend on the positive, so each user
    takes all its positives at once: the negatives' scores and the user's
    step cost one pass over ``(active coordinates) x N``, whatever the
    user's number of interactions (see the growth formulas below). Each
    positive item steps once; the user row steps once with the summed
    gradient.
    """
    n = order.shape[0]
    loss = 0.0
    for b in range(b0, b1):
        start_batch(key, b, n_neg, cdf, neg, QT, GQ, i_indptr, i_indices, i_v)
        for t in range(b * batch, min(n, (b + 1) * batch)):
            u = order[t]
            h0 = x_indptr[u]
            h1 = x_indptr[u + 1]
            if h0 == h1:
                continue
            u0 = u_indptr[u]
            u1 = u_indptr[u + 1]
            for p in range(u0, u1):
                pu[u_indices[p]] = u_v[p, 0]
            mx = negative_scores(s, u, -1, u0, u1, u_indices, u_v, QT, neg, n_neg, logq,
                                 inv_t, f_indptr, f_indices)
            zn = 0.0
            for m in range(n_neg):
                s[m] = math.exp(s[m] - mx)  # hits: 0
                zn += s[m]
            ln = math.log(zn) + mx if zn > 0 else _NEG_INF
            rest = 0.0
            for h in range(h0, h1):
                i = x_indices[h]
                c = x_weight[h]
                s0 = _dot_sparse_dense(i, pu, i_indptr, i_indices, i_v) * inv_t
                top = max(s0, ln)
                lse = top + math.log(math.exp(s0 - top) + math.exp(ln - top))
                loss += c * (lse - s0)
                P = math.exp(s0 - lse)
                rest += c * (1.0 - P)
                w = np.float32(c * (P - 1.0) * inv_t)
                for p in range(i_indptr[i], i_indptr[i + 1]):
                    k = i_indices[p]
                    gu[k] += w * i_v[p, 0]
                    _adagrad(i_v, p, w * pu[k] + reg * i_v[p, 0], lr)
            scale = rest * inv_t / zn if zn > 0 else 0.0
            for m in range(n_neg):
                s[m] *= scale  # dL/d<p_u, q_j>
            step_user_row(u0, u1, u_indices, u_v, pu, gu, 0.0, s, QT, GQ, n_neg, lr, reg)
        step_negatives(neg, n_neg, GQ, GQ[0], False, QT, i_indptr, i_indices, i_v, lr, reg)
    return loss


@njit(cache=True)
def softmax_users_serial(
    order, batch, n_neg, key, QT, GQ, neg, s, pu, gu,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
):
    """One epoch over the users in ``order``, batch by batch, on one thread."""
    n_batches = (order.shape[0] + batch - 1) // batch
    return _softmax_users_block(
        0, n_batches, order, batch, n_neg, key, QT[0], GQ[0], neg[0], s[0], pu[0], gu[0],
        x_indptr, x_indices, x_weight, f_indptr, f_indices,
        u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
    )


@njit(cache=True, parallel=True)
def softmax_users_parallel(
    order, batch, n_neg, key, QT, GQ, neg, s, pu, gu,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
):
    """Hogwild epoch over user batches: contiguous runs on the work rows' threads."""
    n_batches = (order.shape[0] + batch - 1) // batch
    n_blocks = QT.shape[0]
    per = (n_batches + n_blocks - 1) // n_blocks
    losses = np.zeros(n_blocks)
    for blk in prange(n_blocks):
        losses[blk] = _softmax_users_block(
            blk * per, min(n_batches, (blk + 1) * per), order, batch, n_neg, key,
            QT[blk], GQ[blk], neg[blk], s[blk], pu[blk], gu[blk],
            x_indptr, x_indices, x_weight, f_indptr, f_indices,
            u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
        )
    return losses.sum()


@njit(cache=True)
def softmax_epoch_serial(
    n_samples, batch, n_neg, key, QT, GQ, neg, s, pu, qi,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
):
    """One epoch in batch order on one thread; returns the loss sum."""
    n_batches = (n_samples + batch - 1) // batch
    return _softmax_block(
        0, n_batches, n_samples, batch, n_neg, key, QT[0], GQ[0], neg[0], s[0], pu[0], qi[0],
        x_indices, x_weight, x_rows, f_indptr, f_indices,
        u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
    )


@njit(cache=True, parallel=True)
def softmax_epoch_parallel(
    n_samples, batch, n_neg, key, QT, GQ, neg, s, pu, qi,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
):
    """Hogwild epoch: contiguous runs of batches on the work rows' threads."""
    n_batches = (n_samples + batch - 1) // batch
    n_blocks = QT.shape[0]
    per = (n_batches + n_blocks - 1) // n_blocks
    losses = np.zeros(n_blocks)
    for blk in prange(n_blocks):
        losses[blk] = _softmax_block(
            blk * per, min(n_batches, (blk + 1) * per), n_samples, batch, n_neg, key,
            QT[blk], GQ[blk], neg[blk], s[blk], pu[blk], qi[blk],
            x_indices, x_weight, x_rows, f_indptr, f_indices,
            u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
        )
    return losses.sum()


# --- growth: full-data gradient of the loss at a shared sample of negatives ---
#
# With one sample of N negatives shared by every positive, a user's
# negative logits do not depend on the positive, so the log-partition of a
# positive (u, i) is lse_ui = logaddexp(s_ui, LN_u) with LN_u the user's
# log-sum over the negatives. Then
#   dL/dp_u = (1/T) [sum_i c_ui (P_ui - 1) q_i + (sum_i c_ui (1 - P_ui)) sum_n pi_un q_n],
# with P_ui = exp(s_ui - lse_ui) and pi_un the softmax over the negatives;
# and, in expectation over the epoch's draws (c is drawn N q(c) times a
# batch, which the log-q correction cancels),
#   dL/dq_c = (1/T) [sum_{u in c} c_uc (P_uc - 1) p_u
#                    + sum_{u not in c} A_u exp(<p_u, q_c> / T) p_u],
# A_u = sum_i c_ui exp(-lse_ui). The users' sums are exact; the items'
# second sum runs over a uniform sample of users, scaled to all of them.


@njit(cache=True, inline="always")
def partition_row(u, s, pu, QT, neg, n_neg, x_indptr, x_indices, x_weight, f_indptr, f_indices,
                  u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, logq, inv_t):
    """``(LN_u, A_u)`` of user ``u`` (work rows ``s``: n_neg float64, ``pu``: d float32, zero).

    Shared by :func:`user_partition` and its CUDA twin.
    """
    mx = negative_scores(s, u, -1, u_indptr[u], u_indptr[u + 1], u_indices, u_v, QT,
                         neg, n_neg, logq, inv_t, f_indptr, f_indices)
    z = 0.0
    for n in range(n_neg):
        z += math.exp(s[n] - mx)
    ln = math.log(z) + mx if z > 0 else _NEG_INF
    for p in range(u_indptr[u], u_indptr[u + 1]):
        pu[u_indices[p]] = u_v[p, 0]
    a = 0.0
    for p in range(x_indptr[u], x_indptr[u + 1]):
        s0 = _dot_sparse_dense(x_indices[p], pu, i_indptr, i_indices, i_v) * inv_t
        m = max(s0, ln)
        lse = m + math.log(math.exp(s0 - m) + math.exp(ln - m))
        a += x_weight[p] * math.exp(-lse)
    for p in range(u_indptr[u], u_indptr[u + 1]):
        pu[u_indices[p]] = 0.0
    return ln, a


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def user_partition(LN, A, QT, neg, n_neg, x_indptr, x_indices, x_weight, f_indptr, f_indices,
                   u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, logq, inv_t, S, PU):
    """Per user: ``LN[u]`` (log-sum over the shared negatives) and ``A[u]``.

    ``S`` (blocks x n_neg, float64) and ``PU`` (blocks x d, float32, zero)
    are work rows, one per block of users.
    """
    n_users = LN.shape[0]
    n_blocks = S.shape[0]
    per = (n_users + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        s = S[blk]
        pu = PU[blk]
        for u in range(blk * per, min(n_users, (blk + 1) * per)):
            LN[u], A[u] = partition_row(u, s, pu, QT, neg, n_neg, x_indptr, x_indices,
                                        x_weight, f_indptr, f_indices, u_indptr, u_indices,
                                        u_v, i_indptr, i_indices, i_v, logq, inv_t)


@njit(cache=True, inline="always")
def grad_user_row(u, g, ln, s, pu, QT, neg, n_neg, x_indptr, x_indices, x_weight, f_indptr,
                  f_indices, u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, logq, inv_t):
    """``g`` = dL/dp_u (dense) of user ``u`` with log-partition ``ln`` (work as above).

    Shared by :func:`grad_users_chunk` and its CUDA twin.
    """
    d = g.shape[0]
    g[:] = 0.0
    if x_indptr[u + 1] == x_indptr[u]:
        return
    negative_scores(s, u, -1, u_indptr[u], u_indptr[u + 1], u_indices, u_v, QT, neg,
                    n_neg, logq, inv_t, f_indptr, f_indices)
    for p in range(u_indptr[u], u_indptr[u + 1]):
        pu[u_indices[p]] = u_v[p, 0]
    rest = 0.0
    for p in range(x_indptr[u], x_indptr[u + 1]):
        i = x_indices[p]
        s0 = _dot_sparse_dense(i, pu, i_indptr, i_indices, i_v) * inv_t
        m = max(s0, ln)
        P = math.exp(s0 - m) / (math.exp(s0 - m) + math.exp(ln - m))
        c = x_weight[p]
        rest += c * (1.0 - P)
        w = np.float32(c * (P - 1.0) * inv_t)
        for q in range(i_indptr[i], i_indptr[i + 1]):
            g[i_indices[q]] += w * i_v[q, 0]
    for p in range(u_indptr[u], u_indptr[u + 1]):
        pu[u_indices[p]] = 0.0
    if ln > _NEG_INF:
        for n in range(n_neg):
            pi = np.float32(rest * inv_t * math.exp(s[n] - ln))
            if pi != 0.0:
                for k in range(d):
                    g[k] += pi * QT[k, n]


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def grad_users_chunk(r0, r1, G, LN, QT, neg, n_neg, x_indptr, x_indices, x_weight, f_indptr,
                     f_indices, u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, logq, inv_t,
                     S, PU):
    """Fill ``G[u - r0]`` with dL/dp_u (dense) for users ``r0 <= u < r1`` (work as above)."""
    n_blocks = S.shape[0]
    per = (r1 - r0 + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        s = S[blk]
        pu = PU[blk]
        for u in range(r0 + blk * per, min(r1, r0 + (blk + 1) * per)):
            grad_user_row(u, G[u - r0], LN[u], s, pu, QT, neg, n_neg, x_indptr, x_indices,
                          x_weight, f_indptr, f_indices, u_indptr, u_indices, u_v, i_indptr,
                          i_indices, i_v, logq, inv_t)


@njit(cache=True, inline="always")
def grad_item_row(c, g, qc, LN, A, sample_users, user_scale, xt_indptr, xt_indices, xt_weight,
                  u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, inv_t):
    """``g`` = dL/dq_c (dense) of item ``c`` (``qc``: d float32, zero; zero again on return).

    Shared by :func:`grad_items_chunk` and its CUDA twin.
    """
    g[:] = 0.0
    for p in range(i_indptr[c], i_indptr[c + 1]):
        qc[i_indices[p]] = i_v[p, 0]
    for p in range(xt_indptr[c], xt_indptr[c + 1]):
        u = xt_indices[p]
        s0 = _dot_sparse_dense(u, qc, u_indptr, u_indices, u_v) * inv_t
        ln = LN[u]
        m = max(s0, ln)
        P = math.exp(s0 - m) / (math.exp(s0 - m) + math.exp(ln - m))
        w = np.float32(xt_weight[p] * (P - 1.0) * inv_t)
        for q in range(u_indptr[u], u_indptr[u + 1]):
            g[u_indices[q]] += w * u_v[q, 0]
    # ``sample_users`` is sorted: a merge with the item's sorted users
    # skips its positives (a binary search per pair took 1.5x the
    # time of the whole fill on the built-in set).
    f = xt_indptr[c]
    f1 = xt_indptr[c + 1]
    for t in range(sample_users.shape[0]):
        u = sample_users[t]
        while f < f1 and xt_indices[f] < u:
            f += 1
        if f < f1 and xt_indices[f] == u:
            continue
        s0 = _dot_sparse_dense(u, qc, u_indptr, u_indices, u_v) * inv_t
        w = np.float32(user_scale * A[u] * inv_t * math.exp(min(s0, 80.0)))
        for q in range(u_indptr[u], u_indptr[u + 1]):
            g[u_indices[q]] += w * u_v[q, 0]
    for p in range(i_indptr[c], i_indptr[c + 1]):
        qc[i_indices[p]] = 0.0


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def grad_items_chunk(c0, c1, G, LN, A, sample_users, user_scale, xt_indptr, xt_indices,
                     xt_weight, u_indptr, u_indices, u_v, i_indptr,
                     i_indices, i_v, inv_t, PU):
    """Fill ``G[c - c0]`` with dL/dq_c (dense) for items ``c0 <= c < c1``.

    ``PU`` (blocks x d, float32, zero) holds one dense item row per block.
    """
    n_blocks = PU.shape[0]
    per = (c1 - c0 + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        qc = PU[blk]
        for c in range(c0 + blk * per, min(c1, c0 + (blk + 1) * per)):
            grad_item_row(c, G[c - c0], qc, LN, A, sample_users, user_scale, xt_indptr,
                          xt_indices, xt_weight, u_indptr, u_indices, u_v, i_indptr, i_indices,
                          i_v, inv_t)


# --- fold-in of new users against the fixed item table ----------------------


@njit(cache=True, inline="always")
def _row_dot(u, j, i_indptr, i_indices, i_w):
    x = 0.0
    for q in range(i_indptr[j], i_indptr[j + 1]):
        x += u[i_indices[q]] * i_w[q]
    return x


@njit(cache=True, inline="always")
def _add_row(g, a, j, i_indptr, i_indices, i_w):
    for q in range(i_indptr[j], i_indptr[j + 1]):
        g[i_indices[q]] += a * i_w[q]


@njit(cache=True, inline="always")
def _softmax_row_grad(g, u, h0, h1, x_indices, x_data, inv_mean, neg, n_neg, s,
                      i_indptr, i_indices, i_w, logq, inv_t):
    """Add the row's sampled-softmax gradient to ``g``; ``s[n]`` is 0 for hits."""
    mx = _NEG_INF
    for n in range(n_neg):
        if s[n] != 0.0:
            s[n] = _row_dot(u, neg[n], i_indptr, i_indices, i_w) * inv_t - logq[neg[n]]
            mx = max(mx, s[n])
        else:
            s[n] = _NEG_INF
    zn = 0.0
    for n in range(n_neg):
        s[n] = math.exp(s[n] - mx) if s[n] > _NEG_INF else 0.0
        zn += s[n]
    ln = math.log(zn) + mx if zn > 0 else _NEG_INF
    rest = 0.0
    for p in range(h0, h1):
        i = x_indices[p]
        s0 = _row_dot(u, i, i_indptr, i_indices, i_w) * inv_t
        m = max(s0, ln)
        P = math.exp(s0 - m) / (math.exp(s0 - m) + math.exp(ln - m))
        c = x_data[p] * inv_mean
        rest += c * (1.0 - P)
        _add_row(g, np.float32(c * (P - 1.0) * inv_t), i, i_indptr, i_indices, i_w)
    if zn > 0:
        for n in range(n_neg):
            _add_row(g, np.float32(rest * inv_t * s[n] / zn), neg[n], i_indptr, i_indices, i_w)


@njit(cache=True, inline="always")
def _ccl_row_grad(g, u, h0, h1, x_indices, x_data, inv_mean, neg, n_neg, s,
                  i_indptr, i_indices, i_w, i_norm, margin, neg_weight):
    """Add the row's cosine contrastive gradient to ``g``; ``s[n]`` is 0 for hits."""
    d = u.shape[0]
    sq = 0.0
    for c in range(d):
        sq += u[c] * u[c]
    un = row_norm(sq)
    cu = 0.0
    ap = 0.0  # coefficient of u / |u|^2
    for p in range(h0, h1):
        i = x_indices[p]
        c = x_data[p] * inv_mean
        cu += c
        cos = _row_dot(u, i, i_indptr, i_indices, i_w) / (un * i_norm[i])
        ap += c * cos
        _add_row(g, np.float32(-c / (un * i_norm[i])), i, i_indptr, i_indices, i_w)
    wn = cu * neg_weight / n_neg
    for n in range(n_neg):
        if s[n] != 0.0:
            j = neg[n]
            cos = _row_dot(u, j, i_indptr, i_indices, i_w) / (un * i_norm[j])
            if cos > margin:
                ap -= wn * cos
                _add_row(g, np.float32(wn / (un * i_norm[j])), j, i_indptr, i_indices, i_w)
    for c in range(d):
        g[c] += ap * u[c] / (un * un)


@njit(cache=True)
def _fold_in_row(r, x_indptr, x_indices, x_data, i_indptr, i_indices, i_w, cdf, logq, n_neg,
                 inv_t, ccl, i_norm, margin, neg_weight, n_passes, n_refine, k_keep, lr, reg,
                 key, u, mask, neg, s, g, acc):
    d = u.shape[0]
    h0, h1 = x_indptr[r], x_indptr[r + 1]
    nh = h1 - h0
    u[:] = 0.0
    mask[:] = True
    acc[:] = 0.0
    if nh == 0:
        return
    rkey = key
    total = 0.0
    for p in range(h0, h1):
        rkey = splitmix64(rkey ^ np.uint64(x_indices[p]))
        total += x_data[p]
    inv_mean = nh / total if total > 0 else 1.0
    if ccl:
        # A zero row has no direction: start from the history's mean item row.
        for p in range(h0, h1):
            _add_row(u, np.float32(1.0 / nh), x_indices[p], i_indptr, i_indices, i_w)
    for it in range(n_passes + n_refine):
        if it == n_passes and k_keep < d:
            keep_largest(u, mask, k_keep)
        draw_negatives(rkey, it * n_neg, n_neg, cdf, neg)
        # The history is the row's forbidden set: merge it with the negatives
        # (s[n] = 0 marks a hit, 1 a negative).
        f = h0
        for n in range(n_neg):
            j = neg[n]
            while f < h1 and x_indices[f] < j:
                f += 1
            s[n] = 0.0 if f < h1 and x_indices[f] == j else 1.0
        for c in range(d):
            g[c] = reg * u[c]
        if ccl:
            _ccl_row_grad(g, u, h0, h1, x_indices, x_data, inv_mean, neg, n_neg, s,
                          i_indptr, i_indices, i_w, i_norm, margin, neg_weight)
        else:
            _softmax_row_grad(g, u, h0, h1, x_indices, x_data, inv_mean, neg, n_neg, s,
                              i_indptr, i_indices, i_w, logq, inv_t)
        for c in range(d):
            if mask[c]:
                acc[c] += g[c] * g[c]
                u[c] -= lr * g[c] / (math.sqrt(acc[c]) + _EPS)


@njit(cache=True, parallel=True)
def fold_in_softmax(x_indptr, x_indices, x_data, i_indptr, i_indices, i_w, cdf, logq, n_neg,
                    inv_t, ccl, i_norm, margin, neg_weight, n_passes, n_refine, k_keep, lr, reg,
                    key, U, M, NEG, S, GW, ACC):
    """Fill ``U[r]`` (weights) and ``M[r]`` (active mask) for each history row ``r``.

    Each pass is one full-row Adagrad step of the row's loss (all its
    positives, weighted by value over the row's mean, against ``n_neg``
    fresh negatives keyed by the row's items) on all coordinates; after
    ``n_passes`` the ``k_keep`` largest are kept and ``n_refine`` more passes
    train them alone. The loss is the sampled softmax (``logq``, ``inv_t``),
    or with ``ccl`` the cosine contrastive loss (``i_norm``: the item rows'
    norms, ``margin``, ``neg_weight``; the row starts at its history's mean
    item row). ``NEG``, ``S``, ``GW`` and ``ACC`` are work rows
    (blocks x n_neg int64 and float64, blocks x d float32 twice).
    """
    n_rows = U.shape[0]
    n_blocks = NEG.shape[0]
    per = (n_rows + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        neg = NEG[blk]
        s = S[blk]
        g = GW[blk]
        acc = ACC[blk]
        for r in range(blk * per, min(n_rows, (blk + 1) * per)):
            _fold_in_row(r, x_indptr, x_indices, x_data, i_indptr, i_indices, i_w, cdf, logq,
                         n_neg, inv_t, ccl, i_norm, margin, neg_weight, n_passes, n_refine,
                         k_keep, lr, reg, key, U[r], M[r], neg, s, g, acc)
