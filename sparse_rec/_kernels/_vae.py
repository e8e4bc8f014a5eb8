"""Mult-VAE kernels: the two large CSR layers (encoder input, decoder output) and Adam.

The encoder table ``E`` and the decoder table ``D`` both have one row per
item and one column per unit of the first hidden layer; each is
``(indptr, indices, v)`` with ``v[p]`` = (weight, Adam m, Adam v). The
input layer reads only the rows of a history's items; the decoder computes
a batch's logits over all items as a sparse-dense product. Activations are
kept *transposed* for the decoder (``aT``: units x batch), so the inner
loop of every product runs over the batch, contiguous and vectorised.

The kernels write disjoint outputs per parallel iteration (per batch row,
per item, or per thread part), so they are race-free and allocate nothing
inside their parallel loops.
"""

import math

from numba import njit, prange

from ._ncf import BETA1, BETA2, _adam


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def encode(h_indptr, h_indices, h_vals, indptr, indices, v, bias, out):
    """``out[b] = bias + sum_q h_vals[q] * E[h_indices[q]]`` over row ``b`` of the batch."""
    for b in prange(out.shape[0]):
        o = out[b]
        for k in range(o.shape[0]):
            o[k] = bias[k]
        for q in range(h_indptr[b], h_indptr[b + 1]):
            i = h_indices[q]
            x = h_vals[q]
            for p in range(indptr[i], indptr[i + 1]):
                o[indices[p]] += x * v[p, 0]


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def decode(rows, indptr, indices, v, aT, bias, outT):
    """Logits of items ``rows``: ``outT[q] = bias[i] + sum_p D[i, k_p] * aT[k_p]``, ``i = rows[q]``.

    ``rows`` is a range of items (full softmax, growth chunks) or a sampled
    softmax's candidates.
    """
    B = aT.shape[1]
    for q in prange(rows.shape[0]):
        i = rows[q]
        o = outT[q]
        bi = bias[i]
        for b in range(B):
            o[b] = bi
        for p in range(indptr[i], indptr[i + 1]):
            w = v[p, 0]
            a = aT[indices[p]]
            for b in range(B):
                o[b] += w * a[b]


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def decoder_backward(rows, indptr, indices, v, aT, dlT, g_out, daT_parts):
    """Gradients of the decoder weights and of its input, from the logits' gradient.

    ``dlT[q]`` is the gradient of item ``rows[q]``'s logits. ``g_out[p] =
    sum_b dlT[q, b] * aT[k, b]`` for every active ``(rows[q], k)`` (the
    other items' entries are left as they are); ``daT_parts[t]`` receives
    ``sum_q D[rows[q], k] * dlT[q, :]`` over the rows of part ``t`` (the
    caller sums the parts: no two threads add to one row).
    """
    n = rows.shape[0]
    n_parts = daT_parts.shape[0]
    B = aT.shape[1]
    for t in prange(n_parts):
        acc = daT_parts[t]
        acc[:] = 0.0
        for q in range(t * n // n_parts, (t + 1) * n // n_parts):
            i = rows[q]
            dl = dlT[q]
            for p in range(indptr[i], indptr[i + 1]):
                k = indices[p]
                a = aT[k]
                row = acc[k]
                w = v[p, 0]
                s = 0.0
                for b in range(B):
                    s += dl[b] * a[b]
                    row[b] += w * dl[b]
                g_out[p] = s


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def encoder_grad(t_indptr, t_rows, t_vals, indptr, indices, dpre, g_out):
    """``g_out[p] = sum_q t_vals[q] * dpre[t_rows[q], k_p]`` over item ``i``'s batch entries.

    ``t_*`` is the batch input item-major (CSR of its transpose); items no
    history of the batch holds get a zero gradient.
    """
    n = indptr.shape[0] - 1
    for i in prange(n):
        p0, p1 = indptr[i], indptr[i + 1]
        for p in range(p0, p1):
            g_out[p] = 0.0
        for q in range(t_indptr[i], t_indptr[i + 1]):
            d = dpre[t_rows[q]]
            x = t_vals[q]
            for p in range(p0, p1):
                g_out[p] += x * d[indices[p]]


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def adam_table(v, g, nnz, step, lr, reg):
    """One Adam step (``step`` >= 1) on every active weight of a table, gradient ``g``."""
    lr1 = lr / (1.0 - BETA1**step)
    bc2_sqrt = math.sqrt(1.0 - BETA2**step)
    for p in prange(nnz):
        _adam(v, p, g[p] + reg * v[p, 0], lr1, bc2_sqrt)
