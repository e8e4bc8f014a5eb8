"""BPR matrix-factorisation kernels over CSR factor tables.

Layout shared by every kernel here:

* interactions ``x_indptr, x_indices, x_weight`` (users x items, canonical
  CSR), ``x_rows`` (the user of each interaction) and the *forbidden* pattern
  ``f_indptr, f_indices`` (items never to be sampled as a user's negative:
  the training items, plus any held-out candidates);
* factor tables ``*_indptr, *_indices, *_v``: CSR rows of active
  coordinates; ``v[p, 0]`` is the weight and ``v[p, 1]`` its optimiser
  state (side by side: one cache line per step);
* ``bias_v``: dense item biases, ``bias_v[i, 0]``, and their state.

One BPR sample is a user ``u``, a positive ``i`` drawn uniformly from the
interactions and a negative ``j`` drawn uniformly from the items outside the
user's forbidden row (up to 8 tries, then the sample is skipped). The serial
and parallel epochs run the same block function, so ``n_threads=1`` is
bitwise reproducible and the parallel epoch is Hogwild over samples.
"""

import math

import numpy as np
from numba import njit, prange

from ._prefetch import prefetch
from ._rng import draw, randint

SGD = 0
ADAGRAD = 1
_EPS = np.float32(1e-8)
# Loop turns between the stages of the training pipeline (_bpr_block): the
# prefetch for a stage is issued this many samples before the stage reads.
_LEAD = 4
_RING = 32
# Rows whose pairs the growth-gradient kernels draw and prefetch together.
_GRAD_GROUP = 4


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
    # math (not numpy) functions: the same source compiles for CUDA too.
    if x > 0:
        e = math.exp(-x)
        return math.log1p(e), e / (1.0 + e)
    e = math.exp(x)
    return math.log1p(e) - x, 1.0 / (1.0 + e)


@njit(cache=True, inline="always")
def _apply(v, p, grad, lr, optimizer):
    if optimizer == ADAGRAD:
        acc = v[p, 1] + grad * grad
        v[p, 1] = acc
        v[p, 0] -= lr * grad / (math.sqrt(acc) + _EPS)
    else:
        v[p, 0] -= lr * grad


@njit(cache=True, inline="always")
def bpr_margin_diff(i, j, pu, diff, i_indptr, i_indices, i_v, bias_v):
    """x_uij = b_i - b_j + <p_u, q_i - q_j>; fills ``diff`` with q_i - q_j.

    ``pu`` must hold the user's row scattered densely. Positions and
    column indices are read as unsigned (they are never negative), which
    spares Numba's negative-index wraparound on every access of the hot
    loops.
    """
    x = np.float64(bias_v[i, 0]) - bias_v[j, 0]
    for p in range(np.uint64(i_indptr[i]), np.uint64(i_indptr[i + 1])):
        k = np.uint32(i_indices[p])
        v = i_v[p, 0]
        x += pu[k] * v
        diff[k] += v
    for p in range(np.uint64(i_indptr[j]), np.uint64(i_indptr[j + 1])):
        k = np.uint32(i_indices[p])
        v = i_v[p, 0]
        x -= pu[k] * v
        diff[k] -= v
    return x


@njit(cache=True, inline="always")
def bpr_step(
    pos, u, j, pu, diff, x_indices, x_weight,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, bias_v, lr, reg, optimizer,
):
    """One BPR step on interaction ``pos`` of user ``u`` against negative ``j``.

    ``pu`` and ``diff`` are zeroed work buffers of n_components floats and
    are zero again on return. Returns the sample's weighted loss.
    """
    i = x_indices[pos]
    c = x_weight[pos]
    u0 = np.uint64(u_indptr[u])
    u1 = np.uint64(u_indptr[u + 1])
    for p in range(u0, u1):
        pu[np.uint32(u_indices[p])] = u_v[p, 0]
    x = bpr_margin_diff(i, j, pu, diff, i_indptr, i_indices, i_v, bias_v)
    sample_loss, g = log_sigmoid_grad(x)
    g = np.float32(c * g)
    # d(-log sigmoid(x))/dx = -g. ``pu`` and ``diff`` keep the pre-step
    # values, so user and item steps use the same point.
    for p in range(u0, u1):
        _apply(u_v, p, -g * diff[np.uint32(u_indices[p])] + reg * u_v[p, 0], lr, optimizer)
    for p in range(np.uint64(i_indptr[i]), np.uint64(i_indptr[i + 1])):
        k = np.uint32(i_indices[p])
        _apply(i_v, p, -g * pu[k] + reg * i_v[p, 0], lr, optimizer)
        diff[k] = 0.0
    for p in range(np.uint64(i_indptr[j]), np.uint64(i_indptr[j + 1])):
        k = np.uint32(i_indices[p])
        _apply(i_v, p, g * pu[k] + reg * i_v[p, 0], lr, optimizer)
        diff[k] = 0.0
    for p in range(u0, u1):
        pu[np.uint32(u_indices[p])] = 0.0
    _apply(bias_v, i, -g + reg * bias_v[i, 0], lr, optimizer)
    _apply(bias_v, j, g + reg * bias_v[j, 0], lr, optimizer)
    return c * sample_loss


@njit(cache=True, inline="always")
def bpr_margin(i, j, pu, i_indptr, i_indices, i_v, bias_v):
    """x_uij as :func:`bpr_margin_diff` without filling ``diff`` (growth needs no step)."""
    x = np.float64(bias_v[i, 0]) - bias_v[j, 0]
    for p in range(np.uint64(i_indptr[i]), np.uint64(i_indptr[i + 1])):
        x += pu[np.uint32(i_indices[p])] * i_v[p, 0]
    for p in range(np.uint64(i_indptr[j]), np.uint64(i_indptr[j + 1])):
        x -= pu[np.uint32(i_indices[p])] * i_v[p, 0]
    return x


@njit(cache=True, inline="always")
def prefetch_row(indptr, indices, v, r):
    """Prefetch the first lines of row ``r``'s indices and value slots.

    Straight-line code, no loop over the row: most rows span two or three
    lines, a short row only fetches a line it does not need, and the
    hardware prefetcher follows longer rows.
    """
    p0 = indptr[r]
    p1 = indptr[r + 1] - 1  # -1: prefetching before a row cannot fault
    prefetch(indices, p0)
    prefetch(indices, p1)
    prefetch(v, p0)
    prefetch(v, p0 + 8)
    prefetch(v, p0 + 16)
    prefetch(v, p1)


@njit(cache=True, inline="always")
def prefetch_search(indptr, indices, r):
    """Prefetch the lines a binary search in row ``r`` reads first: its ends and middle."""
    f0 = indptr[r]
    f1 = indptr[r + 1]
    if f1 > f0:
        prefetch(indices, f0)
        prefetch(indices, (f0 + f1) >> 1)
        prefetch(indices, f1 - 1)


# fastmath and error_model="numpy" drop per-step NaN and zero-division
# checks; the caller checks the loss and weights for finiteness after each
# epoch and raises DivergenceError there. _nrt=False: the block allocates
# nothing (its ring buffer comes from the caller), and without Numba's
# runtime the arrays passed into the inlined helpers are not reference
# counted; those counts are atomic operations on counters that all threads
# share, several per sample.
@njit(cache=True, fastmath=True, error_model="numpy", _nrt=False)
def _bpr_block(
    s0, s1, key, pu, diff, ring,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
    bias_v, lr, reg, optimizer,
):
    """Train samples ``s0 <= s < s1`` in order, prefetching ``_LEAD`` samples ahead.

    Sample ``t`` passes six stages, ``_LEAD`` loop turns apart (draw the
    interaction, read its user and item, fetch their rows, draw the
    negative, fetch its row, train), and each stage prefetches what a later
    one reads, so the cache misses of about ``5 * _LEAD`` samples overlap.
    Only the fetch order changes: samples train in the order of a plain
    loop, with the same draws, bit for bit. ``ring`` is int64 work space of
    shape (3, _RING).
    """
    n_items = bias_v.shape[0]
    nnz = x_indices.shape[0]
    D = _LEAD
    mask = _RING - 1  # _RING: a power of two above the 5 * _LEAD + 1 samples in flight
    r_pos = ring[0]
    r_u = ring[1]
    r_j = ring[2]
    loss = 0.0
    for it in range(s0, s1 + 5 * D):
        # Stage 0: which interaction.
        t = it
        if t < s1:
            pos = randint(draw(key, t, 0), nnz)
            r_pos[t & mask] = pos
            prefetch(x_rows, pos)
            prefetch(x_indices, pos)
            prefetch(x_weight, pos)
        # Stage 1: its user and positive item; their row pointers.
        t = it - D
        if s0 <= t < s1:
            pos = r_pos[t & mask]
            u = x_rows[pos]
            i = x_indices[pos]
            r_u[t & mask] = u
            prefetch(f_indptr, u)
            prefetch(u_indptr, u)
            prefetch(i_indptr, i)
            prefetch(bias_v, i)
        # Stage 2: the user's forbidden row (for the negative) and both rows.
        t = it - 2 * D
        if s0 <= t < s1:
            u = r_u[t & mask]
            prefetch_search(f_indptr, f_indices, u)
            prefetch_row(u_indptr, u_indices, u_v, u)
            prefetch_row(i_indptr, i_indices, i_v, x_indices[r_pos[t & mask]])
        # Stage 3: the negative; its row pointer.
        t = it - 3 * D
        if s0 <= t < s1:
            j = sample_negative(key, t, r_u[t & mask], n_items, f_indptr, f_indices)
            r_j[t & mask] = j
            if j >= 0:
                prefetch(i_indptr, j)
                prefetch(bias_v, j)
        # Stage 4: the negative's row.
        t = it - 4 * D
        if s0 <= t < s1:
            j = r_j[t & mask]
            if j >= 0:
                prefetch_row(i_indptr, i_indices, i_v, j)
        # Stage 5: train.
        t = it - 5 * D
        if t >= s0:
            j = r_j[t & mask]
            if j >= 0 and optimizer == ADAGRAD:
                # The optimiser as a constant: each inlined copy of the step
                # has no per-coordinate branch on it.
                loss += bpr_step(
                    r_pos[t & mask], r_u[t & mask], j, pu, diff, x_indices, x_weight,
                    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, bias_v, lr, reg,
                    ADAGRAD,
                )
            elif j >= 0:
                loss += bpr_step(
                    r_pos[t & mask], r_u[t & mask], j, pu, diff, x_indices, x_weight,
                    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, bias_v, lr, reg,
                    SGD,
                )
    return loss


@njit(cache=True)
def bpr_epoch_serial(
    n_samples, key, n_components,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
    bias_v, lr, reg, optimizer,
):
    """One epoch of ``n_samples`` BPR steps in sample order; returns the loss sum."""
    pu = np.zeros(n_components, np.float32)
    diff = np.zeros(n_components, np.float32)
    ring = np.empty((3, _RING), np.int64)
    return _bpr_block(
        0, n_samples, key, pu, diff, ring, x_indices, x_weight, x_rows, f_indptr, f_indices,
        u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, bias_v, lr, reg, optimizer,
    )


@njit(cache=True, parallel=True)
def bpr_epoch_parallel(
    n_samples, key, n_components,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
    bias_v, lr, reg, optimizer, n_blocks,
):
    """Hogwild epoch: blocks of samples run on all threads without locks."""
    per = (n_samples + n_blocks - 1) // n_blocks
    losses = np.zeros(n_blocks)
    for b in prange(n_blocks):
        pu = np.zeros(n_components, np.float32)
        diff = np.zeros(n_components, np.float32)
        ring = np.empty((3, _RING), np.int64)
        losses[b] = _bpr_block(
            b * per, min(n_samples, (b + 1) * per), key, pu, diff, ring,
            x_indices, x_weight, x_rows, f_indptr, f_indices,
            u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, bias_v, lr, reg, optimizer,
        )
    return losses.sum()


# --- gradient of the BPR loss at inactive coordinates (for growth) -----------
#
# Each row's gradient is accumulated by one thread from a per-row sample, so
# the result does not depend on scheduling and can be recomputed exactly.
# A row with more than ``m`` interactions uses ``m`` of them, reweighted by
# deg / m, so the chunk estimates the full-epoch gradient sum.


@njit(cache=True, inline="always")
def sigmoid_neg(x):
    """``sigmoid(-x)``, bit for bit the second value of :func:`log_sigmoid_grad`."""
    if x > 0:
        e = math.exp(-x)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(x))


@njit(cache=True, inline="always")
def _dot_row(r, pu, indptr, indices, v):
    # <row r, pu> in float64, pu holding a user row scattered densely.
    x = 0.0
    for p in range(np.uint64(indptr[r]), np.uint64(indptr[r + 1])):
        x += pu[np.uint32(indices[p])] * v[p, 0]
    return x


@njit(cache=True, inline="always")
def _block_range(blk, n_blocks, lo, hi):
    per = (hi - lo + n_blocks - 1) // n_blocks
    return lo + blk * per, min(hi, lo + (blk + 1) * per)


# Scalar helpers of the growth gradients: the CPU chunk kernels below and
# their CUDA twins (``cuda/bpr.py``) both compile these, so both targets
# draw the same pairs and add the same terms in the same order.
@njit(cache=True, inline="always")
def grow_position(key, start, t, deg, m):
    """Position of the ``t``-th sampled interaction of a row of ``deg`` starting at ``start``."""
    if deg <= m:
        return start + t
    return start + randint(draw(key, start + t, 0), deg)


@njit(cache=True, inline="always")
def group_draw(key, nnz, gid, m_neg, t):
    """The ``t``-th random interaction of item group ``gid`` (streams 9.. keep it apart)."""
    return randint(draw(key, nnz + gid * m_neg + t, 9), nnz)


@njit(cache=True, inline="always")
def scatter_row(pu, r, indptr, indices, v):
    """Write row ``r``'s weights into the dense zeroed ``pu``."""
    for p in range(np.uint64(indptr[r]), np.uint64(indptr[r + 1])):
        pu[np.uint32(indices[p])] = v[p, 0]


@njit(cache=True, inline="always")
def clear_row(pu, r, indptr, indices):
    """Zero again what :func:`scatter_row` wrote."""
    for p in range(np.uint64(indptr[r]), np.uint64(indptr[r + 1])):
        pu[np.uint32(indices[p])] = 0.0


@njit(cache=True, inline="always")
def add_pair_term(g_row, pu, i, j, w, scale, i_indptr, i_indices, i_v, bias_v):
    """dL/dp_u of the pair (i, j): ``g_row += sigmoid(-x_uij) w scale (q_j - q_i)``."""
    x = bpr_margin(i, j, pu, i_indptr, i_indices, i_v, bias_v)
    g = np.float32(sigmoid_neg(x) * w * scale)
    for p in range(np.uint64(i_indptr[i]), np.uint64(i_indptr[i + 1])):
        g_row[np.uint32(i_indices[p])] -= g * i_v[p, 0]
    for p in range(np.uint64(i_indptr[j]), np.uint64(i_indptr[j + 1])):
        g_row[np.uint32(i_indices[p])] += g * i_v[p, 0]


@njit(cache=True, inline="always")
def item_score(i, pu, i_indptr, i_indices, i_v, bias_v):
    """``b_i + <p_u, q_i>`` in float64, ``pu`` holding the user's row densely."""
    return np.float64(bias_v[i, 0]) + _dot_row(i, pu, i_indptr, i_indices, i_v)


@njit(cache=True, inline="always")
def add_negative_term(g_row, pu, x_ui, c, u, w, scale, u_indptr, u_indices, u_v, i_indptr,
                      i_indices, i_v, bias_v):
    """dL/dq_c where ``c`` is the negative of (u, i): ``g_row += sigmoid(-x_uic) w scale p_u``."""
    x = x_ui - bias_v[c, 0] - _dot_row(c, pu, i_indptr, i_indices, i_v)
    g = np.float32(sigmoid_neg(x) * w * scale)
    for p in range(np.uint64(u_indptr[u]), np.uint64(u_indptr[u + 1])):
        g_row[np.uint32(u_indices[p])] += g * u_v[p, 0]


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def grad_users_chunk(
    r0, r1, G, m, key,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v,
    i_indptr, i_indices, i_v, bias_v,
):
    """Fill ``G[r - r0]`` with dL/dp_u (dense rows) for users ``r0 <= r < r1``."""
    d = G.shape[1]
    n_items = bias_v.shape[0]
    n_blocks = max(1, min(r1 - r0, 256))
    for blk in prange(n_blocks):
        # Buffers per block, not per row: allocation inside prange is costly.
        pu = np.zeros(d, np.float32)
        s_pos = np.empty(m, np.int64)
        s_j = np.empty(m, np.int64)
        b0, b1 = _block_range(blk, n_blocks, r0, r1)
        for r in range(b0, b1):
            g_row = G[r - r0]
            g_row[:] = 0.0
            start = x_indptr[r]
            deg = x_indptr[r + 1] - start
            if deg == 0:
                continue
            n = min(deg, m)
            scale = deg / n
            # Draw the row's pairs first and prefetch their item rows, so
            # the misses of all n pairs overlap (as in the training epoch).
            for t in range(n):
                pos = grow_position(key, start, t, deg, m)
                s_pos[t] = pos
                j = sample_negative(key, start + t, r, n_items, f_indptr, f_indices)
                s_j[t] = j
                prefetch(i_indptr, x_indices[pos])
                if j >= 0:
                    prefetch(i_indptr, j)
            for t in range(n):
                prefetch_row(i_indptr, i_indices, i_v, x_indices[s_pos[t]])
                if s_j[t] >= 0:
                    prefetch_row(i_indptr, i_indices, i_v, s_j[t])
            scatter_row(pu, r, u_indptr, u_indices, u_v)
            for t in range(n):
                pos = s_pos[t]
                j = s_j[t]
                if j >= 0:
                    add_pair_term(g_row, pu, x_indices[pos], j, x_weight[pos], scale, i_indptr,
                                  i_indices, i_v, bias_v)
            clear_row(pu, r, u_indptr, u_indices)


@njit(cache=True, inline="always")
def _add_user_term(g_row, pu, a, b, u, w, scale, sign, u_indptr, u_indices, u_v, i_indptr,
                   i_indices, i_v, bias_v):
    # g_row += sign * sigmoid(-x_uab) * w * scale * p_u for the pair (a, b) of user u.
    for p in range(np.uint64(u_indptr[u]), np.uint64(u_indptr[u + 1])):
        pu[np.uint32(u_indices[p])] = u_v[p, 0]
    x = bpr_margin(a, b, pu, i_indptr, i_indices, i_v, bias_v)
    g = np.float32(sigmoid_neg(x) * w * scale)
    for p in range(np.uint64(u_indptr[u]), np.uint64(u_indptr[u + 1])):
        k = np.uint32(u_indices[p])
        if sign > 0:
            g_row[k] += g * u_v[p, 0]
        else:
            g_row[k] -= g * u_v[p, 0]
        pu[k] = 0.0


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def grad_items_chunk(
    c0, c1, G, m, m_neg, key, neg_per_item,
    x_indptr, x_indices, x_weight, x_rows, xt_indptr, xt_indices, xt_weight,
    f_indptr, f_indices,
    u_indptr, u_indices, u_v,
    i_indptr, i_indices, i_v, bias_v,
):
    """Fill ``G[c - c0]`` with dL/dq_c (dense rows) for items ``c0 <= c < c1``.

    Positive terms come from up to ``m`` of the item's own users (``xt``:
    items x users); negative terms from ``m_neg`` random interactions
    ``(u, i)`` of users who never saw ``c``, weighted so they sum to the
    ``neg_per_item`` times an item is expected to be drawn as a negative in
    one epoch. Items go in groups of ``_GRAD_GROUP`` (aligned on item ids)
    whose pairs are drawn stage by stage with prefetches in between (as in
    the training epoch). The items of a group share their ``m_neg`` random
    interactions: each item's estimate is as good as with draws of its own,
    and a user row and an item row fetched once serve the whole group.
    """
    d = G.shape[1]
    n_items = bias_v.shape[0]
    nnz = x_indices.shape[0]
    n_blocks = max(1, min(c1 - c0, 256))
    n_neg = m_neg if m_neg > 0 and neg_per_item > 0.0 else 0
    w_neg = neg_per_item / max(m_neg, 1)
    cap = _GRAD_GROUP * m + n_neg
    for blk in prange(n_blocks):
        pu = np.zeros(d, np.float32)
        s_c = np.empty(cap, np.int64)
        s_id = np.empty(cap, np.int64)  # sample id (positive) or X position (negative)
        s_u = np.empty(cap, np.int64)
        s_i = np.empty(cap, np.int64)  # the other item of the pair; -1: no pair
        s_w = np.empty(cap, np.float32)  # interaction weight
        s_scale = np.empty(cap, np.float64)
        b0, b1 = _block_range(blk, n_blocks, c0, c1)
        g0 = b0
        while g0 < b1:
            # Aligned groups: an item's negative draws do not depend on how
            # the items were split into chunks and blocks.
            gid = g0 // _GRAD_GROUP
            g1 = min(b1, (gid + 1) * _GRAD_GROUP)
            n_p = 0
            # Stage 1: the positive pairs' users, and the group's random
            # interactions (streams 9.. keep them apart from the positives).
            for c in range(g0, g1):
                G[c - c0, :] = 0.0
                start = xt_indptr[c]
                deg = xt_indptr[c + 1] - start
                n = min(deg, m)
                for t in range(n):
                    pos = grow_position(key, start, t, deg, m)
                    u = xt_indices[pos]
                    s_c[n_p] = c
                    s_id[n_p] = start + t
                    s_u[n_p] = u
                    s_w[n_p] = xt_weight[pos]
                    s_scale[n_p] = deg / n
                    prefetch(f_indptr, u)
                    prefetch(u_indptr, u)
                    n_p += 1
            n_all = n_p
            for t in range(n_neg):
                pos = group_draw(key, nnz, gid, m_neg, t)
                s_id[n_all] = pos
                prefetch(x_rows, pos)
                prefetch(x_indices, pos)
                prefetch(x_weight, pos)
                n_all += 1
            # Stage 2: the random interactions' users and items.
            for q in range(n_p, n_all):
                pos = s_id[q]
                u = x_rows[pos]
                s_u[q] = u
                s_i[q] = x_indices[pos]
                s_w[q] = x_weight[pos]
                prefetch(f_indptr, u)
                prefetch(u_indptr, u)
                prefetch(i_indptr, s_i[q])
            # Stage 3: the users' forbidden rows and factor rows.
            for q in range(n_all):
                u = s_u[q]
                prefetch_search(f_indptr, f_indices, u)
                prefetch_row(u_indptr, u_indices, u_v, u)
            # Stage 4: a negative for each positive pair (-1 drops the pair).
            for q in range(n_p):
                other = sample_negative(key, s_id[q], s_u[q], n_items, f_indptr, f_indices)
                s_i[q] = other
                if other >= 0:
                    prefetch(i_indptr, other)
            for q in range(n_all):
                if s_i[q] >= 0:
                    prefetch_row(i_indptr, i_indices, i_v, s_i[q])
            # Stage 5: dL/dq_c is -sigmoid(-x) w p_u where c is the positive
            # of the pair (c, other) ...
            for q in range(n_p):
                other = s_i[q]
                if other >= 0:
                    c = s_c[q]
                    _add_user_term(G[c - c0], pu, c, other, s_u[q], s_w[q], s_scale[q], -1,
                                   u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, bias_v)
            # ... and +sigmoid(-x) w p_u where c is the negative of (u, i),
            # for every item of the group that u never saw.
            for q in range(n_p, n_all):
                u = s_u[q]
                i = s_i[q]
                scatter_row(pu, u, u_indptr, u_indices, u_v)
                x_ui = item_score(i, pu, i_indptr, i_indices, i_v, bias_v)
                for c in range(g0, g1):
                    if c == i or in_row(f_indptr, f_indices, u, c):
                        continue
                    add_negative_term(G[c - c0], pu, x_ui, c, u, s_w[q], w_neg, u_indptr,
                                      u_indices, u_v, i_indptr, i_indices, i_v, bias_v)
                clear_row(pu, u, u_indptr, u_indices)
            g0 = g1
