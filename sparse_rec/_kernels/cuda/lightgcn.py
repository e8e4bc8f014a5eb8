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
* the sampled softmax over cosines (``loss="softmax"``): the CPU's
  sampler (:func:`~sparse_rec._kernels._lightgcn.softmax_sample_row`,
  compiled as a device function) in ``softmax_negatives_kernel`` and
  ``softmax_samples_kernel``; ``unit_rows_kernel`` (the rows a batch reads,
  over their norms); ``softmax_logits_kernel`` (one thread per sample:
  logits against the shared negatives, the softmax, the loss and the
  logits' gradient); ``softmax_grads_kernel`` and
  ``softmax_negative_grads_kernel`` (the dense products of the batch's
  gradient, one thread per (row, column)); ``project_scatter_kernel``
  (through the normalisation, then added to the final embeddings'
  gradient with float32 atomics);
* ``gather_pattern_kernel``: a dense gradient read at the active weights;
  ``step_table_kernel``: one thread per row through the CPU's
  :func:`~sparse_rec._kernels._lightgcn.step_weight`.

Importing this module requires numba-cuda (``pip install sparse-rec[cuda]``);
with ``NUMBA_ENABLE_CUDASIM=1`` it runs in Numba's CUDA simulator.
"""

import math

import numpy as np
from numba import cuda

from .. import _lightgcn
from ._device import device_versions
from .bpr import _D as _BPR_DEVICE

_D = device_versions(((_lightgcn, "sample_margin"), (_lightgcn, "step_weight"),
                      (_lightgcn, "softmax_negative"), (_lightgcn, "softmax_sample_row")),
                     device=_BPR_DEVICE)
_sample_margin = _D["sample_margin"]
_step_weight = _D["step_weight"]
_softmax_negative = _D["softmax_negative"]
_softmax_sample_row = _D["softmax_sample_row"]


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


# --- sampled softmax over cosines (loss="softmax") ------------------------------


@cuda.jit
def softmax_negatives_kernel(key, neg0, n_items, negs):
    """The batch's shared negatives (:func:`sparse_rec._kernels._lightgcn.softmax_sample`)."""
    for m in range(cuda.grid(1), negs.shape[0], cuda.gridsize(1)):
        negs[m] = _softmax_negative(key, neg0 + m, n_items)


@cuda.jit
def softmax_samples_kernel(key, s0, n, x_indices, x_weight, x_rows, f_indptr, f_indices, negs,
                           us, ps, ws, hit):
    """Samples ``s0 : s0 + n``: rows, positives, weights and hits, one thread each."""
    for b in range(cuda.grid(1), n, cuda.gridsize(1)):
        _softmax_sample_row(key, s0, b, x_indices, x_weight, x_rows, f_indptr, f_indices, negs,
                            us, ps, ws, hit)


@cuda.jit
def unit_rows_kernel(n, rows, F, X, r):
    """``X[b] = F[rows[b]] / r[b]``, ``r[b] = max(|F[rows[b]]|, 1e-12)`` for ``b < n``."""
    d = F.shape[1]
    for b in range(cuda.grid(1), n, cuda.gridsize(1)):
        f = F[rows[b]]
        sq = np.float32(0.0)
        for c in range(d):
            sq += f[c] * f[c]
        nr = max(np.float32(math.sqrt(sq)), np.float32(1e-12))
        r[b] = nr
        for c in range(d):
            X[b, c] = f[c] / nr


@cuda.jit
def softmax_logits_kernel(n, U, Ii, N, hit, ws, t, shift, P, g0, losses):
    """Per sample ``b``: the loss, ``g0[b]`` = dL/dz_0 and ``P[b, m]`` = dL/dz_m (times ``t``).

    Logits ``z_0 = t cos(u, i)`` and ``z_m = t cos(u, n_m) + shift`` (hits
    left out); loss ``w (logsumexp(z) - z_0)``.
    """
    d = U.shape[1]
    M = N.shape[0]
    for b in range(cuda.grid(1), n, cuda.gridsize(1)):
        z0 = 0.0
        for c in range(d):
            z0 += U[b, c] * Ii[b, c]
        z0 *= t
        mx = z0
        for m in range(M):
            if hit[b, m]:
                continue
            z = 0.0
            for c in range(d):
                z += U[b, c] * N[m, c]
            z = t * z + shift
            P[b, m] = z
            mx = max(mx, z)
        e0 = math.exp(z0 - mx)
        tot = e0
        for m in range(M):
            e = 0.0 if hit[b, m] else math.exp(P[b, m] - mx)
            P[b, m] = e
            tot += e
        w = ws[b]
        losses[b] = w * (math.log(tot) + mx - z0)
        a = t * w / tot
        for m in range(M):
            P[b, m] *= a
        g0[b] = t * w * (e0 / tot - 1.0)


@cuda.jit
def softmax_grads_kernel(n, U, Ii, N, P, g0, GU, GI):
    """``GU = g0 Ii + P @ N`` and ``GI = g0 U`` (rows ``b < n``), one thread per (row, column)."""
    d = U.shape[1]
    M = N.shape[0]
    for t in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        b = t // d
        c = t % d
        g = g0[b] * Ii[b, c]
        for m in range(M):
            g += P[b, m] * N[m, c]
        GU[b, c] = g
        GI[b, c] = g0[b] * U[b, c]


@cuda.jit
def softmax_negative_grads_kernel(n, U, P, GN):
    """``GN = P[:n].T @ U[:n]``, one thread per (negative, column)."""
    M, d = GN.shape
    for t in range(cuda.grid(1), M * d, cuda.gridsize(1)):
        m = t // d
        c = t % d
        g = np.float32(0.0)
        for b in range(n):
            g += P[b, m] * U[b, c]
        GN[m, c] = g


@cuda.jit
def project_scatter_kernel(n, rows, G, X, r, scale, out, counts):
    """``out[rows[b]] += scale (G[b] - (G[b] . X[b]) X[b]) / r[b]``, ``counts[rows[b]] += scale``.

    The gradient through ``x / |x|`` (``X``: unit rows, ``r``: norms),
    added with float32 atomics (the CPU adds in sample order).
    """
    d = G.shape[1]
    for b in range(cuda.grid(1), n, cuda.gridsize(1)):
        dot = np.float32(0.0)
        for c in range(d):
            dot += G[b, c] * X[b, c]
        row = rows[b]
        for c in range(d):
            cuda.atomic.add(out, (row, c), scale * ((G[b, c] - dot * X[b, c]) / r[b]))
        cuda.atomic.add(counts, row, scale)
