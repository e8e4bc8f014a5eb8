"""CUDA twin of the BPR epoch (numba-cuda), same arrays and same sampler.

The scalar helpers (RNG, negative sampling, the BPR step) are the very
Python functions the CPU kernels compile; here they are compiled again as
CUDA device functions, so both targets run one source. Each GPU thread
takes samples ``tid, tid + n_threads, ...`` (Hogwild, as on the CPU); with
one thread the samples run in order and the result matches the serial CPU
epoch up to floating-point contraction.

The growth gradients (``grad_users_kernel``, ``grad_items_kernel``) are
the CPU chunk kernels' per-row sums, one GPU thread per row, built from the
same pair-level helpers (``_bpr.add_pair_term``, ``add_negative_term``,
``_add_user_term``, ``grow_position``, ``group_draw``): a row's sampled
pairs and the order of its terms are the CPU's, so a row's gradient matches
the CPU one up to floating-point contraction. The CPU kernels' prefetch
staging has no GPU counterpart (the GPU hides latency with threads).

Importing this module requires numba-cuda (``pip install sparse-rec[cuda]``);
with ``NUMBA_ENABLE_CUDASIM=1`` it runs in Numba's CUDA simulator.
"""

import numpy as np
from numba import cuda

from .. import _bpr, _rng
from ._device import device_versions

# Helpers in call order: each is rebuilt with globals that point at the
# device versions of the helpers before it.
_HELPERS = (
    (_rng, "splitmix64"),
    (_rng, "draw"),
    (_rng, "randint"),
    (_bpr, "in_row"),
    (_bpr, "sample_negative"),
    (_bpr, "log_sigmoid_grad"),
    (_bpr, "_apply"),
    (_bpr, "bpr_margin_diff"),
    (_bpr, "bpr_step"),
    (_bpr, "bpr_margin"),
    (_bpr, "sigmoid_neg"),
    (_bpr, "_dot_row"),
    (_bpr, "grow_position"),
    (_bpr, "group_draw"),
    (_bpr, "scatter_row"),
    (_bpr, "clear_row"),
    (_bpr, "add_pair_term"),
    (_bpr, "item_score"),
    (_bpr, "add_negative_term"),
    (_bpr, "_add_user_term"),
)


_D = device_versions(_HELPERS)
_randint = _D["randint"]
_draw = _D["draw"]
_sample_negative = _D["sample_negative"]
_bpr_step = _D["bpr_step"]
_in_row = _D["in_row"]
_grow_position = _D["grow_position"]
_group_draw = _D["group_draw"]
_scatter_row = _D["scatter_row"]
_clear_row = _D["clear_row"]
_add_pair_term = _D["add_pair_term"]
_item_score = _D["item_score"]
_add_negative_term = _D["add_negative_term"]
_add_user_term = _D["_add_user_term"]
GRAD_GROUP = _bpr._GRAD_GROUP


@cuda.jit
def bpr_epoch_kernel(
    n_samples, key,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
    bias_v, lr, reg, optimizer, scratch, losses,
):
    """Grid-stride BPR epoch; ``scratch`` is (n_threads, 2, n_components) zeros."""
    tid = cuda.grid(1)
    stride = cuda.gridsize(1)
    if tid >= scratch.shape[0]:
        return
    pu = scratch[tid, 0]
    diff = scratch[tid, 1]
    n_items = bias_v.shape[0]
    nnz = x_indices.shape[0]
    acc = 0.0
    for s in range(tid, n_samples, stride):
        pos = _randint(_draw(key, s, 0), nnz)
        u = x_rows[pos]
        j = _sample_negative(key, s, u, n_items, f_indptr, f_indices)
        if j >= 0:
            acc += _bpr_step(pos, u, j, pu, diff, x_indices, x_weight, u_indptr, u_indices, u_v,
                             i_indptr, i_indices, i_v, bias_v, lr, reg, optimizer)
    losses[tid] = acc


def launch_epoch(arrays, n_samples, key, lr, reg, optimizer, n_blocks, n_threads_per_block):
    """Run one epoch on device arrays; returns the loss sum (a host float).

    ``arrays`` maps the kernel's array argument names to device arrays (see
    :class:`sparse_rec.backends.cuda.MFEngine`), including ``scratch``
    and ``losses`` sized for ``n_blocks * n_threads_per_block`` threads.
    """
    a = arrays
    bpr_epoch_kernel[n_blocks, n_threads_per_block](
        np.int64(n_samples), np.uint64(key),
        a["x_indices"], a["x_weight"], a["x_rows"], a["f_indptr"], a["f_indices"],
        a["u_indptr"], a["u_indices"], a["u_v"], a["i_indptr"], a["i_indices"], a["i_v"],
        a["bias_v"], np.float32(lr), np.float32(reg), np.int64(optimizer),
        a["scratch"], a["losses"],
    )
    return float(a["losses"].copy_to_host().sum())


@cuda.jit
def grad_users_kernel(
    r0, r1, G, m, key,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, bias_v, scratch,
):
    """``G[r - r0]`` = dL/dp_u (dense) for users ``r0 <= r < r1``, one thread per row.

    ``scratch[tid, 0]`` is a zeroed row of n_components floats per thread
    (the epoch's work buffer; zero again on return).
    """
    tid = cuda.grid(1)
    if tid >= scratch.shape[0]:
        return
    pu = scratch[tid, 0]
    n_items = bias_v.shape[0]
    d = G.shape[1]
    for r in range(r0 + tid, r1, cuda.gridsize(1)):
        g_row = G[r - r0]
        for k in range(d):
            g_row[k] = 0.0
        start = x_indptr[r]
        deg = x_indptr[r + 1] - start
        if deg == 0:
            continue
        n = min(deg, m)
        scale = deg / n
        _scatter_row(pu, r, u_indptr, u_indices, u_v)
        for t in range(n):
            pos = _grow_position(key, start, t, deg, m)
            j = _sample_negative(key, start + t, r, n_items, f_indptr, f_indices)
            if j >= 0:
                _add_pair_term(g_row, pu, x_indices[pos], j, x_weight[pos], scale, i_indptr,
                               i_indices, i_v, bias_v)
        _clear_row(pu, r, u_indptr, u_indices)


@cuda.jit
def grad_items_kernel(
    c0, c1, G, m, m_neg, key, neg_per_item,
    x_indices, x_weight, x_rows, xt_indptr, xt_indices, xt_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, bias_v, scratch,
):
    """``G[c - c0]`` = dL/dq_c (dense) for items ``c0 <= c < c1``, one thread per row.

    The terms of :func:`sparse_rec._kernels._bpr.grad_items_chunk`: up to
    ``m`` of the item's users, then the ``m_neg`` random interactions of
    its aligned group of ``GRAD_GROUP`` items (each thread draws its
    group's interactions itself; the CPU kernel shares them in a group).
    """
    tid = cuda.grid(1)
    if tid >= scratch.shape[0]:
        return
    pu = scratch[tid, 0]
    n_items = bias_v.shape[0]
    nnz = x_indices.shape[0]
    d = G.shape[1]
    n_neg = m_neg if m_neg > 0 and neg_per_item > 0.0 else 0
    w_neg = neg_per_item / max(m_neg, 1)
    for c in range(c0 + tid, c1, cuda.gridsize(1)):
        g_row = G[c - c0]
        for k in range(d):
            g_row[k] = 0.0
        start = xt_indptr[c]
        deg = xt_indptr[c + 1] - start
        n = min(deg, m)
        for t in range(n):
            pos = _grow_position(key, start, t, deg, m)
            u = xt_indices[pos]
            other = _sample_negative(key, start + t, u, n_items, f_indptr, f_indices)
            if other >= 0:
                _add_user_term(g_row, pu, c, other, u, xt_weight[pos], deg / n, -1, u_indptr,
                               u_indices, u_v, i_indptr, i_indices, i_v, bias_v)
        gid = c // GRAD_GROUP
        for t in range(n_neg):
            pos = _group_draw(key, nnz, gid, m_neg, t)
            u = x_rows[pos]
            i = x_indices[pos]
            if c == i or _in_row(f_indptr, f_indices, u, c):
                continue
            _scatter_row(pu, u, u_indptr, u_indices, u_v)
            x_ui = _item_score(i, pu, i_indptr, i_indices, i_v, bias_v)
            _add_negative_term(g_row, pu, x_ui, c, u, x_weight[pos], w_neg, u_indptr,
                               u_indices, u_v, i_indptr, i_indices, i_v, bias_v)
            _clear_row(pu, u, u_indptr, u_indices)


def launch_grad_users(arrays, r0, r1, G, m, key, n_blocks, n_threads_per_block):
    """Fill the device array ``G`` (rows ``r0:r1``) with the users' growth gradient."""
    a = arrays
    grad_users_kernel[n_blocks, n_threads_per_block](
        np.int64(r0), np.int64(r1), G, np.int64(m), np.uint64(key),
        a["x_indptr"], a["x_indices"], a["x_weight"], a["f_indptr"], a["f_indices"],
        a["u_indptr"], a["u_indices"], a["u_v"], a["i_indptr"], a["i_indices"], a["i_v"],
        a["bias_v"], a["scratch"],
    )


def launch_grad_items(arrays, c0, c1, G, m, m_neg, key, neg_per_item, n_blocks,
                      n_threads_per_block):
    """Fill the device array ``G`` (rows ``c0:c1``) with the items' growth gradient."""
    a = arrays
    grad_items_kernel[n_blocks, n_threads_per_block](
        np.int64(c0), np.int64(c1), G, np.int64(m), np.int64(m_neg), np.uint64(key),
        np.float64(neg_per_item), a["x_indices"], a["x_weight"], a["x_rows"],
        a["xt_indptr"], a["xt_indices"], a["xt_weight"], a["f_indptr"], a["f_indices"],
        a["u_indptr"], a["u_indices"], a["u_v"], a["i_indptr"], a["i_indices"], a["i_v"],
        a["bias_v"], a["scratch"],
    )
