"""BPR matrix-factorisation kernels over CSR factor tables.

Layout shared by every kernel here:

* interactions ``x_indptr, x_indices, x_weight`` (users x items, canonical
  CSR), ``x_rows`` (the user of each interaction) and the *forbidden* pattern
  ``f_indptr, f_indices`` (items never to be sampled as a user's negative:
  the training items, plus any held-out candidates);
* factor tables ``*_indptr, *_indices, *_w, *_s``: CSR rows of active
  coordinates with weights ``w`` and an aligned optimiser state ``s``;
* ``bias, bias_s``: dense item biases and their state.

One BPR sample is a user ``u``, a positive ``i`` drawn uniformly from the
interactions and a negative ``j`` drawn uniformly from the items outside the
user's forbidden row (up to 8 tries, then the sample is skipped). The serial
and parallel epochs run the same block function, so ``n_threads=1`` is
bitwise reproducible and the parallel epoch is Hogwild over samples.
"""

import numpy as np
from numba import njit, prange

from ._rng import draw, randint

SGD = 0
ADAGRAD = 1
_EPS = np.float32(1e-8)


@njit(cache=True, inline="always")
def in_row(indptr, indices, row, col):
    """Binary search for ``col`` in the sorted ``indices`` of ``row``."""
    lo = indptr[row]
    hi = indptr[row + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        v = indices[mid]
        if v < col:
            lo = mid + 1
        elif v > col:
            hi = mid
        else:
            return True
    return False


@njit(cache=True, inline="always")
def sample_negative(key, s, u, n_items, f_indptr, f_indices):
    """Uniform negative for user ``u`` outside its forbidden row, or -1."""
    for t in range(1, 9):
        j = randint(draw(key, s, t), n_items)
        if not in_row(f_indptr, f_indices, u, j):
            return j
    return -1


@njit(cache=True, inline="always")
def log_sigmoid_grad(x):
    """Return ``(-log(sigmoid(x)), sigmoid(-x))`` without overflow."""
    if x > 0:
        e = np.exp(-x)
        return np.log1p(e), e / (1.0 + e)
    e = np.exp(x)
    return np.log1p(e) - x, 1.0 / (1.0 + e)


@njit(cache=True, inline="always")
def _apply(w, s, p, grad, lr, optimizer):
    if optimizer == ADAGRAD:
        acc = s[p] + grad * grad
        s[p] = acc
        w[p] -= lr * grad / (np.sqrt(acc) + _EPS)
    else:
        w[p] -= lr * grad


@njit(cache=True, inline="always")
def score_pair(u, i, j, pu, diff, i_indptr, i_indices, i_w, bias):
    """x_uij = b_i - b_j + <p_u, q_i - q_j>; fills ``diff`` with q_i - q_j.

    ``pu`` must hold user ``u``'s row scattered densely.
    """
    x = np.float64(bias[i]) - bias[j]
    for p in range(i_indptr[i], i_indptr[i + 1]):
        k = i_indices[p]
        v = i_w[p]
        x += pu[k] * v
        diff[k] += v
    for p in range(i_indptr[j], i_indptr[j + 1]):
        k = i_indices[p]
        v = i_w[p]
        x -= pu[k] * v
        diff[k] -= v
    return x


@njit(cache=True)
def _bpr_block(
    s0, s1, key, pu, diff,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_w, u_s,
    i_indptr, i_indices, i_w, i_s,
    bias, bias_s, lr, reg, optimizer,
):
    n_items = bias.shape[0]
    nnz = x_indices.shape[0]
    loss = 0.0
    for s in range(s0, s1):
        pos = randint(draw(key, s, 0), nnz)
        u = x_rows[pos]
        i = x_indices[pos]
        j = sample_negative(key, s, u, n_items, f_indptr, f_indices)
        if j < 0:
            continue
        c = x_weight[pos]
        for p in range(u_indptr[u], u_indptr[u + 1]):
            pu[u_indices[p]] = u_w[p]
        x = score_pair(u, i, j, pu, diff, i_indptr, i_indices, i_w, bias)
        sample_loss, g = log_sigmoid_grad(x)
        loss += c * sample_loss
        g = np.float32(c * g)
        # d(-log sigmoid(x))/dx = -g. ``pu`` and ``diff`` keep the pre-step
        # values, so user and item steps use the same point.
        for p in range(u_indptr[u], u_indptr[u + 1]):
            _apply(u_w, u_s, p, -g * diff[u_indices[p]] + reg * u_w[p], lr, optimizer)
        for p in range(i_indptr[i], i_indptr[i + 1]):
            k = i_indices[p]
            _apply(i_w, i_s, p, -g * pu[k] + reg * i_w[p], lr, optimizer)
            diff[k] = 0.0
        for p in range(i_indptr[j], i_indptr[j + 1]):
            k = i_indices[p]
            _apply(i_w, i_s, p, g * pu[k] + reg * i_w[p], lr, optimizer)
            diff[k] = 0.0
        for p in range(u_indptr[u], u_indptr[u + 1]):
            pu[u_indices[p]] = 0.0
        _apply(bias, bias_s, i, -g + reg * bias[i], lr, optimizer)
        _apply(bias, bias_s, j, g + reg * bias[j], lr, optimizer)
    return loss


@njit(cache=True)
def bpr_epoch_serial(
    n_samples, key, n_components,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_w, u_s,
    i_indptr, i_indices, i_w, i_s,
    bias, bias_s, lr, reg, optimizer,
):
    """One epoch of ``n_samples`` BPR steps in sample order; returns the loss sum."""
    pu = np.zeros(n_components, np.float32)
    diff = np.zeros(n_components, np.float32)
    return _bpr_block(
        0, n_samples, key, pu, diff, x_indices, x_weight, x_rows, f_indptr, f_indices,
        u_indptr, u_indices, u_w, u_s, i_indptr, i_indices, i_w, i_s,
        bias, bias_s, lr, reg, optimizer,
    )


@njit(cache=True, parallel=True)
def bpr_epoch_parallel(
    n_samples, key, n_components,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_w, u_s,
    i_indptr, i_indices, i_w, i_s,
    bias, bias_s, lr, reg, optimizer, n_blocks,
):
    """Hogwild epoch: blocks of samples run on all threads without locks."""
    per = (n_samples + n_blocks - 1) // n_blocks
    losses = np.zeros(n_blocks)
    for b in prange(n_blocks):
        pu = np.zeros(n_components, np.float32)
        diff = np.zeros(n_components, np.float32)
        losses[b] = _bpr_block(
            b * per, min(n_samples, (b + 1) * per), key, pu, diff,
            x_indices, x_weight, x_rows, f_indptr, f_indices,
            u_indptr, u_indices, u_w, u_s, i_indptr, i_indices, i_w, i_s,
            bias, bias_s, lr, reg, optimizer,
        )
    return losses.sum()


# --- gradient of the BPR loss at inactive coordinates (for growth) -----------
#
# Each row's gradient is accumulated by one thread from a per-row sample, so
# the result does not depend on scheduling and can be recomputed exactly.
# A row with more than ``m`` interactions uses ``m`` of them, reweighted by
# deg / m, so the chunk estimates the full-epoch gradient sum.


@njit(cache=True, parallel=True)
def grad_users_chunk(
    r0, r1, G, m, key,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_w,
    i_indptr, i_indices, i_w, bias,
):
    """Fill ``G[r - r0]`` with dL/dp_u (dense rows) for users ``r0 <= r < r1``."""
    d = G.shape[1]
    n_items = bias.shape[0]
    for r in prange(r0, r1):
        g_row = G[r - r0]
        g_row[:] = 0.0
        start = x_indptr[r]
        deg = x_indptr[r + 1] - start
        if deg == 0:
            continue
        n = min(deg, m)
        scale = deg / n
        pu = np.zeros(d, np.float32)
        diff = np.zeros(d, np.float32)
        for p in range(u_indptr[r], u_indptr[r + 1]):
            pu[u_indices[p]] = u_w[p]
        for t in range(n):
            pos = start + t if deg <= m else start + randint(draw(key, start + t, 0), deg)
            i = x_indices[pos]
            j = sample_negative(key, start + t, r, n_items, f_indptr, f_indices)
            if j < 0:
                continue
            x = score_pair(r, i, j, pu, diff, i_indptr, i_indices, i_w, bias)
            _, g = log_sigmoid_grad(x)
            g = np.float32(g * x_weight[pos] * scale)
            for p in range(i_indptr[i], i_indptr[i + 1]):
                k = i_indices[p]
                g_row[k] -= g * i_w[p]
                diff[k] = 0.0
            for p in range(i_indptr[j], i_indptr[j + 1]):
                k = i_indices[p]
                g_row[k] += g * i_w[p]
                diff[k] = 0.0


@njit(cache=True, parallel=True)
def grad_items_chunk(
    c0, c1, G, m, key, neg_per_item,
    x_indptr, x_indices, x_weight, x_rows, xt_indptr, xt_indices, xt_weight,
    f_indptr, f_indices,
    u_indptr, u_indices, u_w,
    i_indptr, i_indices, i_w, bias,
):
    """Fill ``G[c - c0]`` with dL/dq_c (dense rows) for items ``c0 <= c < c1``.

    Positive terms come from the item's own users (``xt``: items x users);
    negative terms from ``m`` random interactions ``(u, i)`` of users who
    never saw ``c``, weighted so they sum to the ``neg_per_item`` times an
    item is expected to be drawn as a negative in one epoch.
    """
    d = G.shape[1]
    n_items = bias.shape[0]
    nnz = x_indices.shape[0]
    for c in prange(c0, c1):
        g_row = G[c - c0]
        g_row[:] = 0.0
        pu = np.zeros(d, np.float32)
        diff = np.zeros(d, np.float32)
        start = xt_indptr[c]
        deg = xt_indptr[c + 1] - start
        n = min(deg, m)
        for t in range(n):
            pos = start + t if deg <= m else start + randint(draw(key, start + t, 0), deg)
            u = xt_indices[pos]
            j = sample_negative(key, start + t, u, n_items, f_indptr, f_indices)
            if j < 0:
                continue
            for p in range(u_indptr[u], u_indptr[u + 1]):
                pu[u_indices[p]] = u_w[p]
            x = score_pair(u, c, j, pu, diff, i_indptr, i_indices, i_w, bias)
            _, g = log_sigmoid_grad(x)
            g = np.float32(g * xt_weight[pos] * (deg / n))
            for p in range(u_indptr[u], u_indptr[u + 1]):
                g_row[u_indices[p]] -= g * u_w[p]
                pu[u_indices[p]] = 0.0
            for p in range(i_indptr[c], i_indptr[c + 1]):
                diff[i_indices[p]] = 0.0
            for p in range(i_indptr[j], i_indptr[j + 1]):
                diff[i_indices[p]] = 0.0
        if m == 0 or neg_per_item <= 0.0:
            continue
        w_neg = neg_per_item / m
        for t in range(m):
            # Streams 9.. keep these draws apart from the positive ones above.
            pos = randint(draw(key, nnz + c * m + t, 9), nnz)
            u = x_rows[pos]
            i = x_indices[pos]
            if i == c or in_row(f_indptr, f_indices, u, c):
                continue
            for p in range(u_indptr[u], u_indptr[u + 1]):
                pu[u_indices[p]] = u_w[p]
            x = score_pair(u, i, c, pu, diff, i_indptr, i_indices, i_w, bias)
            _, g = log_sigmoid_grad(x)
            g = np.float32(g * x_weight[pos] * w_neg)
            for p in range(u_indptr[u], u_indptr[u + 1]):
                g_row[u_indices[p]] += g * u_w[p]
                pu[u_indices[p]] = 0.0
            for p in range(i_indptr[i], i_indptr[i + 1]):
                diff[i_indices[p]] = 0.0
            for p in range(i_indptr[c], i_indptr[c + 1]):
                diff[i_indices[p]] = 0.0
