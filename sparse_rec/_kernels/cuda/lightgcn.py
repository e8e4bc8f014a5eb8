"""CUDA kernels of LightGCN (numba-cuda): CSR propagation, BPR on final embeddings, steps.

The device twins of :mod:`sparse_rec._kernels._lightgcn`, same layout
(graph blocks as CSR, layer-0 tables with optimiser slots, dense float32
blocks):

* ``densify_kernel``: a layer-0 table written dense, one thread per row
  (``scale_kernel`` then gives the final embeddings' first term);
* ``spmm_dense_kernel``: ``out = add + G @ X`` over a graph block, one
  thread per (row, column), the column fastest: neighbouring threads read
  and write neighbouring floats of ``X`` and ``out``; ``axpy_kernel``
  accumulates the final embeddings;
* ``margins_kernel``: one thread per sample through the CPU kernels' own
  sampler and margin (:func:`~sparse_rec._kernels._lightgcn.sample_margin`,
  compiled as a device function); ``scatter_grad_kernel`` adds each
  sample's terms to the final embeddings' gradient with float32 atomics
  (the CPU scatters serially in sample order: sums agree up to their
  order);
* ``gather_pattern_kernel``: a dense gradient read at the active weights;
  ``step_table_kernel``: one thread per row through the CPU's
  :func:`~sparse_rec._kernels._lightgcn.step_weight`.

Importing this module requires numba-cuda (``pip install sparse-rec[cuda]``);
with ``NUMBA_ENABLE_CUDASIM=1`` it runs in Numba's CUDA simulator.
"""

import numpy as np
from numba import cuda

from .. import _lightgcn
from ._device import device_versions
from .bpr import _D as _BPR_DEVICE

_D = device_versions(((_lightgcn, "sample_margin"), (_lightgcn, "step_weight")),
                     device=_BPR_DEVICE)
_sample_margin = _D["sample_margin"]
_step_weight = _D["step_weight"]


@cuda.jit
def densify_kernel(t_indptr, t_indices, t_v, out):
    """``out[r]`` = row ``r`` of the table (zeros off its pattern)."""
    for r in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        o = out[r]
        for c in range(o.shape[0]):
            o[c] = 0.0
        for p in range(t_indptr[r], t_indptr[r + 1]):
            o[t_indices[p]] = t_v[p, 0]


@cuda.jit
def spmm_dense_kernel(g_indptr, g_indices, g_vals, X, add, beta, has_add, out):
    """``out = G @ X``, plus ``beta * add`` when ``has_add`` (``out`` is not ``X``)."""
    n, d = out.shape
    for t in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        r = t // d
        c = t % d
        o = beta * add[r, c] if has_add else np.float32(0.0)
        for q in range(g_indptr[r], g_indptr[r + 1]):
            o += g_vals[q] * X[g_indices[q], c]
        out[r, c] = o


@cuda.jit
def axpy_kernel(a, X, out):
    """``out += a * X`` (2-D, same shape)."""
    n, d = out.shape
    for t in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        out[t // d, t % d] += a * X[t // d, t % d]


@cuda.jit
def scale_kernel(a, out):
    """``out *= a`` (2-D)."""
    n, d = out.shape
    for t in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        out[t // d, t % d] *= a


@cuda.jit
def margins_kernel(key, s0, n, n_items, x_indices, x_weight, x_rows, f_indptr, f_indices, Fu,
                   Fi, us, ps, js, gs, losses):
    """Samples ``s0 : s0 + n``: rows, negatives, weighted slopes and losses, one thread each."""
    for b in range(cuda.grid(1), n, cuda.gridsize(1)):
        u, i, j, lo, g = _sample_margin(key, s0 + b, n_items, x_indices, x_weight, x_rows,
                                        f_indptr, f_indices, Fu, Fi)
        us[b] = u
        ps[b] = i
        js[b] = j
        gs[b] = g
        losses[b] = lo


@cuda.jit
def scatter_grad_kernel(n, us, ps, js, gs, Fu, Fi, Gu, Gi, cu, ci):
    """Add sample ``b``'s gradient of the mean loss to ``Gu, Gi`` and its rows' counts (atomics).

    ``Gu, Gi, cu, ci`` are zero on entry (:func:`sparse_rec._kernels._lightgcn.bpr_batch`).
    """
    d = Fu.shape[1]
    inv = np.float32(1.0 / max(n, 1))
    for b in range(cuda.grid(1), n, cuda.gridsize(1)):
        j = js[b]
        if j < 0:
            continue
        u = us[b]
        i = ps[b]
        g = np.float32(gs[b]) * inv
        for c in range(d):
            fu = Fu[u, c]
            cuda.atomic.add(Gu, (u, c), -(g * (Fi[i, c] - Fi[j, c])))
            cuda.atomic.add(Gi, (i, c), -(g * fu))
            cuda.atomic.add(Gi, (j, c), g * fu)
        cuda.atomic.add(cu, u, inv)
        cuda.atomic.add(ci, i, inv)
        cuda.atomic.add(ci, j, inv)


@cuda.jit
def zero_kernel(out):
    """``out[:] = 0`` (1-D)."""
    for t in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[t] = 0.0


@cuda.jit
def zero2_kernel(out):
    """``out[:] = 0`` (2-D)."""
    n, d = out.shape
    for t in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        out[t // d, t % d] = 0.0


@cuda.jit
def gather_pattern_kernel(t_indptr, t_indices, D, scale, out):
    """``out[p] = scale * D[r, c]`` at each active coordinate ``p = (r, c)``."""
    for r in range(cuda.grid(1), t_indptr.shape[0] - 1, cuda.gridsize(1)):
        for p in range(t_indptr[r], t_indptr[r + 1]):
            out[p] = scale * D[r, t_indices[p]]


@cuda.jit
def step_table_kernel(t_indptr, t_v, grad, counts, reg, lr, b1, b2, eps, optimizer):
    """One optimiser step of every active weight (L2 ``reg * counts[row] * w``), per row."""
    for r in range(cuda.grid(1), t_indptr.shape[0] - 1, cuda.gridsize(1)):
        rc = reg * counts[r]
        for p in range(t_indptr[r], t_indptr[r + 1]):
            _step_weight(t_v, p, grad[p], rc, lr, b1, b2, eps, optimizer)


@cuda.jit
def rows_dense_kernel(g_indptr, g_indices, g_vals, X, add, beta, scale, r0, out):
    """``out = scale * (beta * add + G @ X)[r0 : r0 + len(out)]``: growth scores of a chunk."""
    n, d = out.shape
    for t in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        b = t // d
        c = t % d
        r = r0 + b
        o = beta * add[r, c]
        for q in range(g_indptr[r], g_indptr[r + 1]):
            o += g_vals[q] * X[g_indices[q], c]
        out[b, c] = scale * o
