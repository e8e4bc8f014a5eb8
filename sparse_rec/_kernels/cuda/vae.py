"""CUDA kernels of Mult-VAE's two item tables (numba-cuda): gather, decoder product, Adam.

The device twins of :mod:`sparse_rec._kernels._vae` for a batch whose
logits (items x batch) stay on the device:

* ``encode_kernel``: the encoder's first pre-activation, the gather of
  each history's rows of ``E`` (one thread per batch row, as a CPU
  iteration).
* ``decode_kernel``: logits ``bias[i] + sum_p D[i, k_p] aT[k_p, b]``, one
  thread per (item, batch column), the column fastest so that neighbouring
  threads read and write neighbouring floats.
* ``softmax_stats_kernel``, ``gather_kernel``, ``softmax_grad_kernel``,
  ``scatter_sub_kernel``: the multinomial likelihood's column maxima,
  normalisers, picked logits and its gradient in place
  (:func:`sparse_rec.backends.vae_cpu.softmax_loss_grad`).
* ``row_sum_kernel`` (the output bias's gradient), ``decoder_wgrad_kernel``
  (one thread per item: ``g[p] = sum_b dl[i, b] a[k, b]``),
  ``decoder_input_kernel`` (one thread per (unit, column) over the
  decoder's transposed pattern, so no two threads add to one output: the
  CPU kernel's per-thread parts are not needed) and ``encoder_grad_kernel``
  (one thread per item, the CPU loop).
* a sampled softmax (``n_sampled``) keeps logits of its candidate items
  only (candidates x batch): ``decode_rows_kernel`` (logits of items
  ``rows`` minus their log-probability of being candidates),
  ``decoder_wgrad_rows_kernel`` (the candidates' decoder weights; the
  other weights' gradient is zero, ``zero_kernel``) and
  ``decoder_input_rows_kernel`` (the transposed pattern read through each
  item's candidate slot, -1 for the others); the likelihood kernels above
  run on the candidates' block as they are.
* ``adam_table_kernel``: Adam on every active weight through the CPU
  kernels' own float32 step (:func:`sparse_rec._kernels._vae.adam_step32`,
  compiled as a device function).

Importing this module requires numba-cuda (``pip install sparse-rec[cuda]``);
with ``NUMBA_ENABLE_CUDASIM=1`` it runs in Numba's CUDA simulator.
"""

import math

from numba import cuda

from .. import _vae
from ._device import device_versions

_adam32 = device_versions(((_vae, "adam_step32"),))["adam_step32"]


@cuda.jit
def encode_kernel(h_indptr, h_indices, h_vals, indptr, indices, v, bias, out):
    """``out[b] = bias + sum_q h_vals[q] * E[h_indices[q]]`` over row ``b`` of the batch."""
    for b in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        o = out[b]
        for k in range(o.shape[0]):
            o[k] = bias[k]
        for q in range(h_indptr[b], h_indptr[b + 1]):
            i = h_indices[q]
            x = h_vals[q]
            for p in range(indptr[i], indptr[i + 1]):
                o[indices[p]] += x * v[p, 0]


@cuda.jit
def decode_kernel(indptr, indices, v, aT, bias, outT):
    """``outT[i, b] = bias[i] + sum_p D[i, k_p] * aT[k_p, b]`` for every item and column."""
    n, B = outT.shape
    for t in range(cuda.grid(1), n * B, cuda.gridsize(1)):
        i = t // B
        b = t % B
        acc = bias[i]
        for p in range(indptr[i], indptr[i + 1]):
            acc += v[p, 0] * aT[indices[p], b]
        outT[i, b] = acc


@cuda.jit
def decode_rows_kernel(rows, indptr, indices, v, aT, bias, logp, outT):
    """``outT[q, b] = bias[i] + sum_p D[i, k_p] * aT[k_p, b] - logp[q]`` with ``i = rows[q]``."""
    n, B = outT.shape
    for t in range(cuda.grid(1), n * B, cuda.gridsize(1)):
        q = t // B
        b = t % B
        i = rows[q]
        acc = bias[i]
        for p in range(indptr[i], indptr[i + 1]):
            acc += v[p, 0] * aT[indices[p], b]
        outT[q, b] = acc - logp[q]


@cuda.jit
def zero_kernel(out):
    """``out[:] = 0`` (1-D)."""
    for t in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[t] = 0.0


@cuda.jit
def decoder_wgrad_rows_kernel(rows, indptr, indices, aT, dlT, g_out):
    """``g_out[p] = sum_b dlT[q, b] * aT[k_p, b]`` for every active ``(rows[q], k_p)``."""
    for q in range(cuda.grid(1), rows.shape[0], cuda.gridsize(1)):
        i = rows[q]
        for p in range(indptr[i], indptr[i + 1]):
            k = indices[p]
            s = 0.0
            for b in range(aT.shape[1]):
                s += dlT[q, b] * aT[k, b]
            g_out[p] = s


@cuda.jit
def decoder_input_rows_kernel(t_indptr, t_items, t_pos, slot, v, dlT, daT):
    """``daT[k, b] = sum_i D[i, k] * dlT[slot[i], b]`` over the items with a slot (>= 0)."""
    h, B = daT.shape
    for t in range(cuda.grid(1), h * B, cuda.gridsize(1)):
        k = t // B
        b = t % B
        s = 0.0
        for q in range(t_indptr[k], t_indptr[k + 1]):
            j = slot[t_items[q]]
            if j >= 0:
                s += v[t_pos[q], 0] * dlT[j, b]
        daT[k, b] = s


@cuda.jit
def softmax_stats_kernel(L, m, total):
    """Per column ``b``: ``m[b] = max_i L[i, b]``, ``total[b] = sum_i exp(L[i, b] - m[b])``."""
    n, B = L.shape
    for b in range(cuda.grid(1), B, cuda.gridsize(1)):
        mx = L[0, b]
        for i in range(1, n):
            mx = max(mx, L[i, b])
        s = 0.0
        for i in range(n):
            s += math.exp(L[i, b] - mx)
        m[b] = mx
        total[b] = s


@cuda.jit
def gather_kernel(L, idx, rows, out):
    """``out[q] = L[idx[q], rows[q]]``."""
    for q in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[q] = L[idx[q], rows[q]]


@cuda.jit
def softmax_grad_kernel(L, m, coef):
    """``L[i, b] = exp(L[i, b] - m[b]) * coef[b]`` in place."""
    n, B = L.shape
    for t in range(cuda.grid(1), n * B, cuda.gridsize(1)):
        i = t // B
        b = t % B
        L[i, b] = math.exp(L[i, b] - m[b]) * coef[b]


@cuda.jit
def scatter_sub_kernel(L, idx, rows, vals, scale):
    """``L[idx[q], rows[q]] -= vals[q] * scale`` (the pairs of a batch are distinct)."""
    for q in range(cuda.grid(1), idx.shape[0], cuda.gridsize(1)):
        L[idx[q], rows[q]] -= vals[q] * scale


@cuda.jit
def row_sum_kernel(L, out):
    """``out[i] = sum_b L[i, b]``."""
    for i in range(cuda.grid(1), L.shape[0], cuda.gridsize(1)):
        s = 0.0
        for b in range(L.shape[1]):
            s += L[i, b]
        out[i] = s


@cuda.jit
def decoder_wgrad_kernel(indptr, indices, aT, dlT, g_out):
    """``g_out[p] = sum_b dlT[i, b] * aT[k_p, b]`` for every active ``(i, k_p)``, per item."""
    for i in range(cuda.grid(1), indptr.shape[0] - 1, cuda.gridsize(1)):
        for p in range(indptr[i], indptr[i + 1]):
            k = indices[p]
            s = 0.0
            for b in range(aT.shape[1]):
                s += dlT[i, b] * aT[k, b]
            g_out[p] = s


@cuda.jit
def decoder_input_kernel(t_indptr, t_items, t_pos, v, dlT, daT):
    """``daT[k, b] = sum_i D[i, k] * dlT[i, b]`` over the decoder's pattern transposed.

    ``t_indptr`` (units + 1), ``t_items``, ``t_pos``: for unit ``k`` the
    items holding it and the storage positions of those weights.
    """
    h, B = daT.shape
    for t in range(cuda.grid(1), h * B, cuda.gridsize(1)):
        k = t // B
        b = t % B
        s = 0.0
        for q in range(t_indptr[k], t_indptr[k + 1]):
            s += v[t_pos[q], 0] * dlT[t_items[q], b]
        daT[k, b] = s


@cuda.jit
def encoder_grad_kernel(t_indptr, t_rows, t_vals, indptr, indices, dpre, g_out):
    """``g_out[p] = sum_q t_vals[q] * dpre[t_rows[q], k_p]`` over item ``i``'s batch entries."""
    for i in range(cuda.grid(1), indptr.shape[0] - 1, cuda.gridsize(1)):
        p0, p1 = indptr[i], indptr[i + 1]
        for p in range(p0, p1):
            g_out[p] = 0.0
        for q in range(t_indptr[i], t_indptr[i + 1]):
            r = t_rows[q]
            x = t_vals[q]
            for p in range(p0, p1):
                g_out[p] += x * dpre[r, indices[p]]


@cuda.jit
def adam_table_kernel(v, g, lr1, inv_bc2, reg):
    """One Adam step on every active weight (``lr1``, ``inv_bc2``: the step's bias
    corrections, :func:`sparse_rec._kernels._vae.adam_constants`)."""
    for p in range(cuda.grid(1), v.shape[0], cuda.gridsize(1)):
        _adam32(v, p, g[p] + reg * v[p, 0], lr1, inv_bc2)


@cuda.jit
def encoder_rows_kernel(r0, t_indptr, t_cols, t_vals, dpre, G):
    """Encoder growth scores ``G[r - r0] = sum_q t_vals[q] * dpre[t_cols[q]]`` (rows of ``X_s^T``).

    ``t_*``: the sample's normalised input, item-major; one thread per
    (row, unit).
    """
    n, h = G.shape
    for t in range(cuda.grid(1), n * h, cuda.gridsize(1)):
        b = t // h
        c = t % h
        r = r0 + b
        acc = 0.0
        for q in range(t_indptr[r], t_indptr[r + 1]):
            acc += t_vals[q] * dpre[t_cols[q], c]
        G[b, c] = acc


@cuda.jit
def decoder_rows_kernel(r0, indptr, indices, v, A, bias, lse, nx, x_indptr, x_cols, x_vals, G):
    """Decoder growth scores of rows ``r0 : r0 + len(G)`` over the base users, a thread per row.

    ``G[r - r0] = sum_b (n_b softmax_b(r) - x_{b r}) A[b] / n_base`` with the
    logit ``bias[r] + D[r] . A[b]`` recomputed here (``lse``: the users'
    log-normalisers, ``nx``: their interaction totals; ``x_*``: the base
    users' interactions, item-major).
    """
    n, h = G.shape
    nb = A.shape[0]
    for t in range(cuda.grid(1), n, cuda.gridsize(1)):
        r = r0 + t
        g = G[t]
        for c in range(h):
            g[c] = 0.0
        for b in range(nb):
            logit = bias[r]
            for p in range(indptr[r], indptr[r + 1]):
                logit += v[p, 0] * A[b, indices[p]]
            e = math.exp(logit - lse[b]) * nx[b]
            for c in range(h):
                g[c] += e * A[b, c]
        for q in range(x_indptr[r], x_indptr[r + 1]):
            b = x_cols[q]
            x = x_vals[q]
            for c in range(h):
                g[c] -= x * A[b, c]
        inv = 1.0 / max(nb, 1)
        for c in range(h):
            g[c] *= inv
