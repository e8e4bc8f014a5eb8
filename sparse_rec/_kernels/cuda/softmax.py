"""CUDA twins of DSL-MF's softmax-family user-batch epochs (sampled softmax and CCL).

The CPU block functions (:func:`sparse_rec._kernels._softmax._softmax_users_block`,
:func:`sparse_rec._kernels._ccl._ccl_users_block`) and every helper they
call (sampling, the gather of the batch's negatives into a dense ``(d, N)``
block, the negatives' scores, the user-row and negatives' Adagrad steps)
are compiled again as CUDA device functions: one source, two targets.

Mapping: GPU thread ``t`` of ``T`` trains the contiguous run of batches
that the CPU's work row ``t`` of ``T`` trains (Hogwild between threads, as
between CPU threads); with one thread the batches run in the serial
order and the epoch matches the serial CPU epoch up to floating-point
contraction. A thread's work rows (``QT``, ``GQ``, negatives, scores,
``pu``, ``gu``) are stored with the thread as the last, fastest axis
(``QT[k, n, t]``), so threads of a warp that touch the same ``(k, n)``
touch consecutive addresses; the block functions see their strided
``(d, N)`` views.

The softmax loss's growth scores (:func:`sparse_rec._kernels._softmax.partition_row`,
``grad_user_row``, ``grad_item_row``, the CPU chunk kernels' per-row
bodies) run one GPU thread per row on the epoch's work rows.

CCL also scales every table row to its target norm after each epoch
(:func:`sparse_rec._kernels._ccl.normalise_row`, one thread per row).

Importing this module requires numba-cuda (``pip install sparse-rec[cuda]``);
with ``NUMBA_ENABLE_CUDASIM=1`` it runs in Numba's CUDA simulator.
"""

import numpy as np
from numba import cuda

from .. import _ccl, _rng, _softmax
from ._device import device_versions

# Helpers in call order: each is rebuilt with globals that point at the
# device versions of the helpers before it.
_HELPERS = (
    (_rng, "splitmix64"),
    (_rng, "draw"),
    (_softmax, "_adagrad"),
    (_softmax, "row_norm"),
    (_softmax, "uniform01"),
    (_softmax, "draw_item"),
    (_softmax, "_sort_small"),
    (_softmax, "draw_negatives"),
    (_softmax, "gather_block"),
    (_softmax, "start_batch"),
    (_softmax, "negative_scores"),
    (_softmax, "_dot_sparse_dense"),
    (_softmax, "step_negatives"),
    (_softmax, "step_user_row"),
    (_softmax, "_softmax_users_block"),
    (_softmax, "partition_row"),
    (_softmax, "grad_user_row"),
    (_softmax, "grad_item_row"),
    (_ccl, "_sift_down"),
    (_ccl, "heap_sort"),
    (_ccl, "ccl_start_batch"),
    (_ccl, "_column_norms"),
    (_ccl, "ccl_step_user"),
    (_ccl, "_ccl_users_block"),
    (_ccl, "normalise_row"),
)

_D = device_versions(_HELPERS)
_softmax_users_block = _D["_softmax_users_block"]
_ccl_users_block = _D["_ccl_users_block"]
_normalise_row = _D["normalise_row"]
_partition_row = _D["partition_row"]
_grad_user_row = _D["grad_user_row"]
_grad_item_row = _D["grad_item_row"]


class Work:
    """Device work rows of ``n_threads`` threads, thread-minor: ``QT[:, :, t]`` is thread t's.

    ``QT`` and ``GQ`` (``d x N x T`` float32), ``neg`` (``N x T`` int64),
    ``s`` (``N x T`` float64), ``pu`` and ``gu`` (``d x T`` float32), and
    ``n_extra`` more ``N x T`` float64 rows (CCL's negatives' norms and
    their gradient along the row) and ``n_index`` more ``N x T`` int64 rows
    (CCL's negatives above the margin), zero.
    """

    def __init__(self, n_threads, d, n_neg, n_extra=0, n_index=0):
        T, z = int(n_threads), cuda.to_device
        self.n_threads = T
        self.rows = (z(np.zeros((d, n_neg, T), np.float32)),
                     z(np.zeros((d, n_neg, T), np.float32)),
                     z(np.zeros((n_neg, T), np.int64)), z(np.zeros((n_neg, T))),
                     z(np.zeros((d, T), np.float32)), z(np.zeros((d, T), np.float32))
                     ) + tuple(z(np.zeros((n_neg, T))) for _ in range(n_extra)) + tuple(
                         z(np.zeros((n_neg, T), np.int64)) for _ in range(n_index))
        self.losses = cuda.device_array(T, np.float64)

    @staticmethod
    def nbytes(n_threads, d, n_neg, n_extra=0, n_index=0):
        """Device bytes of the work rows of ``n_threads`` threads."""
        return int(n_threads) * (2 * 4 * d * n_neg + (16 + 8 * (n_extra + n_index)) * n_neg
                                 + 8 * d + 8)


@cuda.jit(device=True)
def _thread_batches(tid, T, n_users, batch):
    """Thread ``tid``'s run ``[b0, b1)`` of the batches, as the CPU's work row ``tid`` of ``T``."""
    n_batches = (n_users + batch - 1) // batch
    per = (n_batches + T - 1) // T
    b0 = tid * per
    return b0, min(n_batches, b0 + per)


@cuda.jit
def softmax_users_kernel(
    order, batch, n_neg, key, QT, GQ, neg, s, pu, gu,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg, losses,
):
    """Thread ``t`` trains its run of user batches (the CPU's work row ``t``); ``losses[t]``."""
    tid = cuda.grid(1)
    T = losses.shape[0]
    if tid >= T:
        return
    b0, b1 = _thread_batches(tid, T, order.shape[0], batch)
    losses[tid] = _softmax_users_block(
        b0, b1, order, batch, n_neg, key, QT[:, :, tid], GQ[:, :, tid], neg[:, tid], s[:, tid],
        pu[:, tid], gu[:, tid], x_indptr, x_indices, x_weight, f_indptr, f_indices,
        u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, logq, inv_t, lr, reg,
    )


@cuda.jit
def ccl_users_kernel(
    order, batch, n_neg, key, QT, GQ, neg, s, pu, gu, nq, beta, act,
    x_indptr, x_indices, x_weight, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, zero, margin, neg_weight, lr, reg,
    losses,
):
    """Thread ``t`` trains its run of user batches under CCL; ``losses[t]``."""
    tid = cuda.grid(1)
    T = losses.shape[0]
    if tid >= T:
        return
    b0, b1 = _thread_batches(tid, T, order.shape[0], batch)
    losses[tid] = _ccl_users_block(
        b0, b1, order, batch, n_neg, key, QT[:, :, tid], GQ[:, :, tid], neg[:, tid], s[:, tid],
        pu[:, tid], gu[:, tid], nq[:, tid], beta[:, tid], act[:, tid], x_indptr, x_indices,
        x_weight,
        f_indptr, f_indices, u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, cdf, zero,
        margin, neg_weight, lr, reg,
    )


@cuda.jit
def normalise_rows_kernel(indptr, v, norms):
    """:func:`sparse_rec._kernels._ccl.normalise_rows` on the device, one thread per row."""
    for r in range(cuda.grid(1), indptr.shape[0] - 1, cuda.gridsize(1)):
        _normalise_row(r, indptr, v, norms)


def _grid(T, threads_per_block):
    tpb = max(1, min(int(threads_per_block), T))
    return (T + tpb - 1) // tpb, tpb


def launch_softmax_users(order, batch, n_neg, key, work, data, users, items, cdf, logq, inv_t,
                         lr, reg, threads_per_block):
    """One sampled-softmax epoch over ``order`` (device arrays); returns the loss sum.

    ``data``: the interactions' ``x_indptr, x_indices, x_weight, f_indptr,
    f_indices``; ``users`` and ``items``: ``(indptr, indices, v)`` device
    tables; ``work``: a :class:`Work` of the epoch's threads.
    """
    grid = _grid(work.n_threads, threads_per_block)
    softmax_users_kernel[grid](
        order, np.int64(batch), np.int64(n_neg), np.uint64(key), *work.rows, *data, *users,
        *items, cdf, logq, np.float64(inv_t), np.float32(lr), np.float32(reg), work.losses)
    return float(work.losses.copy_to_host().sum())


def launch_ccl_users(order, batch, n_neg, key, work, data, users, items, cdf, zero, margin,
                     neg_weight, lr, reg, threads_per_block):
    """One CCL epoch over ``order`` (device arrays, as :func:`launch_softmax_users`)."""
    grid = _grid(work.n_threads, threads_per_block)
    ccl_users_kernel[grid](
        order, np.int64(batch), np.int64(n_neg), np.uint64(key), *work.rows, *data, *users,
        *items, cdf, zero, np.float64(margin), np.float64(neg_weight), np.float32(lr),
        np.float32(reg), work.losses)
    return float(work.losses.copy_to_host().sum())


def launch_normalise(indptr, v, norms, n_blocks, threads_per_block):
    """Scale every non-zero row of the device table ``(indptr, v)`` to ``norms[r]``."""
    normalise_rows_kernel[int(n_blocks), int(threads_per_block)](indptr, v, norms)


# --- the softmax loss's growth scores (one thread per row) -------------------------


@cuda.jit
def partition_kernel(LN, A, S, PU, QT, neg, n_neg, x_indptr, x_indices, x_weight, f_indptr,
                     f_indices, u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, logq, inv_t):
    """``LN[u], A[u]`` of every user (:func:`sparse_rec._kernels._softmax.user_partition`).

    ``S`` (n_neg x T float64) and ``PU`` (d x T float32, zero): the work
    rows of ``T`` threads (the epoch's).
    """
    tid = cuda.grid(1)
    T = PU.shape[1]
    if tid >= T:
        return
    for u in range(tid, LN.shape[0], T):
        ln, a = _partition_row(u, S[:, tid], PU[:, tid], QT, neg, n_neg, x_indptr, x_indices,
                               x_weight, f_indptr, f_indices, u_indptr, u_indices, u_v,
                               i_indptr, i_indices, i_v, logq, inv_t)
        LN[u] = ln
        A[u] = a


@cuda.jit
def grad_users_kernel(r0, r1, G, LN, S, PU, QT, neg, n_neg, x_indptr, x_indices, x_weight,
                      f_indptr, f_indices, u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
                      logq, inv_t):
    """``G[u - r0]`` = dL/dp_u for users ``r0 <= u < r1`` (work rows as above)."""
    tid = cuda.grid(1)
    T = PU.shape[1]
    if tid >= T:
        return
    for u in range(r0 + tid, r1, T):
        _grad_user_row(u, G[u - r0], LN[u], S[:, tid], PU[:, tid], QT, neg, n_neg, x_indptr,
                       x_indices, x_weight, f_indptr, f_indices, u_indptr, u_indices, u_v,
                       i_indptr, i_indices, i_v, logq, inv_t)


@cuda.jit
def grad_items_kernel(c0, c1, G, LN, A, sample_users, user_scale, PU, xt_indptr, xt_indices,
                      xt_weight, u_indptr, u_indices, u_v, i_indptr, i_indices, i_v, inv_t):
    """``G[c - c0]`` = dL/dq_c for items ``c0 <= c < c1`` (``PU``: d x T float32, zero)."""
    tid = cuda.grid(1)
    T = PU.shape[1]
    if tid >= T:
        return
    for c in range(c0 + tid, c1, T):
        _grad_item_row(c, G[c - c0], PU[:, tid], LN, A, sample_users, user_scale, xt_indptr,
                       xt_indices, xt_weight, u_indptr, u_indices, u_v, i_indptr, i_indices,
                       i_v, inv_t)
