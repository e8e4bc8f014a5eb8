"""CUDA twins of the iALS kernels (numba-cuda): Gram matrix, exact row solves, curvature scores.

The per-row work is the CPU kernels' own Python source compiled again as
CUDA device functions (:func:`~sparse_rec._kernels._ials._system`,
``_cholesky_solve``, ``_solve_row``, ``_grad_curv``): a row's system,
its Cholesky solve and its gradient and curvature are the CPU's, term for
term, so results match up to floating-point contraction.

* ``densify_kernel`` and ``gram_kernel``/``gram_reduce_kernel``: the other
  side's weighted Gram matrix ``H^T diag(wo) H`` as a dense ``d x d``
  product on the device (``wo``: each row's factor of the unobserved
  weight, all 1 unless unobserved pairs are weighted by popularity).
  The table is written densely (float32, zeros off the pattern), one thread
  per ``(segment of rows, a, e)`` sums its segment in float64, and a
  second kernel adds the segments in order: no atomics, so the result does
  not depend on scheduling.
* ``solve_rows_kernel``: one GPU thread per row (grid-stride) solves the
  row's ``|S| x |S|`` system on its active coordinates, with its own
  scratch (``A``, ``b``, the gathered block ``H``, ``wH``; the thread is
  the scratch's last axis, so a warp's accesses coalesce). The
  gathered block's width (the number of interactions per pass) is the
  scratch's, smaller than the CPU's to bound device memory per thread.
* ``curvature_kernel``: one thread per row, growth scores
  ``g_j / sqrt(H_jj)`` of a chunk of rows and prune scores
  ``w_p^2 H_jj`` of their active weights.

Importing this module requires numba-cuda (``pip install sparse-rec[cuda]``);
with ``NUMBA_ENABLE_CUDASIM=1`` it runs in Numba's CUDA simulator.
"""

import math

import numpy as np
from numba import cuda

from .. import _ials
from ._device import device_versions

_HELPERS = (
    (_ials, "_cholesky_solve"),
    (_ials, "_accumulate"),
    (_ials, "_system"),
    (_ials, "_solve_row"),
    (_ials, "_grad_curv"),
)
_D = device_versions(_HELPERS)
_solve_row = _D["_solve_row"]
_grad_curv = _D["_grad_curv"]

#: Interactions gathered per pass of a row's system build on the device
#: (the CPU gathers ``_ials._CHUNK``): scratch is ``2 (d + 1) x GATHER``
#: float64 per thread.
GATHER = 32
#: Row segments of the Gram product (partial sums, added in order).
GRAM_SEGMENTS = 64


@cuda.jit
def densify_kernel(indptr, indices, values, D):
    """``D[r, j]``: row ``r``'s weight at column ``j`` (zero off the pattern), a thread per row."""
    for r in range(cuda.grid(1), D.shape[0], cuda.gridsize(1)):
        row = D[r]
        for j in range(row.shape[0]):
            row[j] = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            row[indices[p]] = values[p, 0]


@cuda.jit
def gram_kernel(D, wo, P):
    """``P[s, a, e] = sum_{r in segment s} wo[r] D[r, a] D[r, e]`` (float64), for ``e <= a``."""
    n, d = D.shape
    n_seg = P.shape[0]
    seg_len = (n + n_seg - 1) // n_seg
    for t in range(cuda.grid(1), n_seg * d * d, cuda.gridsize(1)):
        s = t // (d * d)
        a = (t // d) % d
        e = t % d
        if e > a:
            continue
        acc = 0.0
        for r in range(s * seg_len, min(n, (s + 1) * seg_len)):
            acc += wo[r] * D[r, a] * D[r, e]
        P[s, a, e] = acc


@cuda.jit
def gram_reduce_kernel(P, G):
    """``G`` = the segments of ``P`` added in order, mirrored to the upper triangle."""
    d = G.shape[0]
    for t in range(cuda.grid(1), d * d, cuda.gridsize(1)):
        a = t // d
        e = t % d
        if e > a:
            continue
        acc = 0.0
        for s in range(P.shape[0]):
            acc += P[s, a, e]
        G[a, e] = acc
        G[e, a] = acc


@cuda.jit
def solve_rows_kernel(indptr, indices, values, x_indptr, x_idx, x_c, o_indptr, o_indices,
                      o_values, G, wr, wo, lam, wo_sum, loss, reg, pos, cols, A, b, x, H, wH):
    """Every row's active weights replaced by the exact minimiser of its loss, one thread per row.

    ``loss[r]``, ``reg[r]``: the row's objective and ridge term at the
    solution; ``wr``, ``wo``: the solved and the other rows' factors of the
    unobserved weight, ``wo_sum`` the sum of ``wo``. Scratch has the thread
    last (:class:`Scratch`); ``pos`` is all ``d``.
    """
    tid = cuda.grid(1)
    if tid >= pos.shape[1]:
        return
    n = indptr.shape[0] - 1
    t_pos, t_cols, t_b, t_x = pos[:, tid], cols[:, tid], b[:, tid], x[:, tid]
    t_A, t_H, t_wH = A[:, :, tid], H[:, :, tid], wH[:, :, tid]
    for r in range(tid, n, cuda.gridsize(1)):
        p0 = indptr[r]
        k = indptr[r + 1] - p0
        for a in range(k):
            t_cols[a] = indices[p0 + a]
        lo, rg = _solve_row(t_cols, k, x_indptr[r], x_indptr[r + 1], x_idx, x_c, o_indptr,
                            o_indices, o_values, G, wr[r], wo, lam, wo_sum, t_pos, t_A, t_b,
                            t_H, t_wH, t_x)
        for a in range(k):
            values[p0 + a, 0] = np.float32(t_x[a])
        loss[r] = lo
        reg[r] = rg


@cuda.jit
def curvature_kernel(r0, r1, grow, prune, indptr, indices, values, x_indptr, x_idx, x_c,
                     o_indptr, o_indices, o_values, G, wr, wo, lam, wo_sum, w, g, h):
    """Growth scores of rows ``r0:r1`` into ``grow[r - r0]`` and prune scores of their weights.

    ``grow`` with no rows writes prune scores only. One thread per row,
    scratch ``w``, ``g``, ``h`` with the thread last.
    """
    tid = cuda.grid(1)
    if tid >= w.shape[1]:
        return
    d = G.shape[0]
    t_w, t_g, t_h = w[:, tid], g[:, tid], h[:, tid]
    write_grow = grow.shape[0] > 0
    for r in range(r0 + tid, r1, cuda.gridsize(1)):
        _grad_curv(r, indptr, indices, values, x_indptr, x_idx, x_c, o_indptr, o_indices,
                   o_values, G, wr[r], wo, lam, wo_sum, t_w, t_g, t_h)
        if write_grow:
            out = grow[r - r0]
            for j in range(d):
                out[j] = np.float32(t_g[j] / math.sqrt(t_h[j])) if t_h[j] > 0 else 0.0
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            prune[p] = np.float32(t_w[j] * t_w[j] * t_h[j])


class Scratch:
    """Work arrays of the solve and score kernels for ``n_threads`` threads.

    The thread is the last axis: the threads of a warp, each at the same
    step of its own row's solve, touch neighbouring words (coalesced), where
    one contiguous block per thread would scatter a warp's accesses.
    """

    def __init__(self, n_threads, d, gather=GATHER):
        T = int(n_threads)
        self.pos = cuda.to_device(np.full((d, T), d, np.int64))
        self.cols = cuda.device_array((d, T), np.int64)
        self.A = cuda.device_array((d, d, T), np.float64)
        self.b = cuda.device_array((d, T), np.float64)
        self.x = cuda.device_array((d, T), np.float64)
        self.H = cuda.device_array((d + 1, gather, T), np.float64)
        self.wH = cuda.device_array((d + 1, gather, T), np.float64)
        self.g = cuda.device_array((d, T), np.float64)
        self.h = cuda.device_array((d, T), np.float64)


def gram(indptr, indices, values, n_rows, d, grid, wo, dense=None, partial=None):
    """``H^T diag(wo) H`` (float64 ``(d, d)``, on the device) of a device table.

    Returns ``(G, dense, partial)``; pass the last two back to reuse them.
    """
    if dense is None or dense.shape != (n_rows, d):
        dense = cuda.device_array((max(n_rows, 0), d), np.float32)
    if partial is None or partial.shape[1] != d:
        partial = cuda.device_array((GRAM_SEGMENTS, d, d), np.float64)
    G = cuda.device_array((d, d), np.float64)
    densify_kernel[grid](indptr, indices, values, dense)
    gram_kernel[grid](dense, wo, partial)
    gram_reduce_kernel[grid](partial, G)
    return G, dense, partial


def solve_rows(tab, rows, other, G, weights, lam, loss, reg, scratch, grid):
    """Launch :func:`solve_rows_kernel`; ``tab``/``other`` are ``(indptr, indices, values)``.

    ``weights``: ``(wr, wo, wo_sum)``, the device factor arrays and ``wo``'s sum.
    """
    s = scratch
    wr, wo, wo_sum = weights
    solve_rows_kernel[grid](*tab, *rows, *other, G, wr, wo, np.float64(lam),
                            np.float64(wo_sum), loss, reg, s.pos, s.cols, s.A, s.b, s.x, s.H,
                            s.wH)


def curvature(r0, r1, grow, prune, tab, rows, other, G, weights, lam, scratch, grid):
    """Launch :func:`curvature_kernel` on rows ``r0:r1`` (``weights`` as in :func:`solve_rows`)."""
    s = scratch
    wr, wo, wo_sum = weights
    curvature_kernel[grid](np.int64(r0), np.int64(r1), grow, prune, *tab, *rows, *other, G, wr,
                           wo, np.float64(lam), np.float64(wo_sum), s.x, s.g, s.h)
