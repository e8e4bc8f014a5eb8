"""Scoring and top-k selection over sparse factor tables in bounded memory.

Scores for one query row are accumulated dimension by dimension from the
transposed item table (dimension -> items), so the work is the query's
active dimensions times the items active there, not n_items x n_components.
Each thread holds one dense score vector of n_items floats.
"""

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _sift_down(h_val, h_idx, n, pos):
    # Min-heap on (value, -index): the root is the weakest of the kept items.
    while True:
        left = 2 * pos + 1
        if left >= n:
            return
        child = left
        right = left + 1
        if right < n and (
            h_val[right] < h_val[left]
            or (h_val[right] == h_val[left] and h_idx[right] > h_idx[left])
        ):
            child = right
        if h_val[child] < h_val[pos] or (h_val[child] == h_val[pos] and h_idx[child] > h_idx[pos]):
            h_val[child], h_val[pos] = h_val[pos], h_val[child]
            h_idx[child], h_idx[pos] = h_idx[pos], h_idx[child]
            pos = child
        else:
            return


@njit(cache=True)
def top_n(scores, n, out_idx, out_val):
    """Best ``n`` finite scores, descending (ties: lower index first); -1 pads."""
    h_val = np.empty(n, np.float32)
    h_idx = np.empty(n, np.int64)
    size = 0
    for t in range(scores.shape[0]):
        v = scores[t]
        if not np.isfinite(v):
            continue
        if size < n:
            # Insert by sifting up.
            pos = size
            h_val[pos] = v
            h_idx[pos] = t
            size += 1
            while pos > 0:
                parent = (pos - 1) // 2
                if h_val[pos] < h_val[parent] or (
                    h_val[pos] == h_val[parent] and h_idx[pos] > h_idx[parent]
                ):
                    h_val[pos], h_val[parent] = h_val[parent], h_val[pos]
                    h_idx[pos], h_idx[parent] = h_idx[parent], h_idx[pos]
                    pos = parent
                else:
                    break
        elif v > h_val[0]:
            h_val[0] = v
            h_idx[0] = t
            _sift_down(h_val, h_idx, size, 0)
    # Pop in ascending order into the tail of the output.
    for t in range(n):
        out_idx[t] = -1
        out_val[t] = -np.inf
    for t in range(size - 1, -1, -1):
        out_idx[t] = h_idx[0]
        out_val[t] = h_val[0]
        size -= 1
        h_val[0] = h_val[size]
        h_idx[0] = h_idx[size]
        _sift_down(h_val, h_idx, size, 0)


@njit(cache=True, inline="always")
def _exclude_and_select(scores, b, r, n, ex_indptr, ex_indices, allowed, self_exclude,
                        out_idx, out_val):
    """Mask query ``b``'s exclusions (row ``r`` itself if asked), keep the top ``n``."""
    for p in range(ex_indptr[b], ex_indptr[b + 1]):
        scores[ex_indices[p]] = -np.inf
    for t in range(scores.shape[0]):
        if not allowed[t]:
            scores[t] = -np.inf
    if self_exclude:
        scores[r] = -np.inf
    top_n(scores, n, out_idx[b], out_val[b])


@njit(cache=True, parallel=True)
def recommend_top_n(
    rows, n,
    q_indptr, q_indices, q_w,
    t_indptr, t_items, t_w, bias,
    ex_indptr, ex_indices, allowed, self_exclude,
    out_idx, out_val,
):
    """Top ``n`` items for each query row ``rows[b]``.

    Query rows come from table ``q``; items from the transposed table ``t``
    (dimension -> items) plus ``bias``. Items in row ``b`` of the exclusion
    CSR ``ex`` and items with ``allowed[item] == False`` are skipped; with
    ``self_exclude`` the query's own index is skipped (similar items).
    """
    n_items = bias.shape[0]
    n_q = rows.shape[0]
    n_chunks = min(n_q, 256)
    per = (n_q + n_chunks - 1) // max(n_chunks, 1)
    for c in prange(n_chunks):
        scores = np.empty(n_items, np.float32)
        for b in range(c * per, min(n_q, (c + 1) * per)):
            r = rows[b]
            scores[:] = bias
            for p in range(q_indptr[r], q_indptr[r + 1]):
                k = q_indices[p]
                w = q_w[p]
                for t in range(t_indptr[k], t_indptr[k + 1]):
                    scores[t_items[t]] += w * t_w[t]
            _exclude_and_select(scores, b, r, n, ex_indptr, ex_indices, allowed, self_exclude,
                                out_idx, out_val)


@njit(cache=True, parallel=True)
def score_candidates(
    rows, cand, n_components, q_indptr, q_indices, q_w, i_indptr, i_indices, i_w, bias, out
):
    """``out[b, t]`` = bias + <query row rows[b], item row cand[b, t]>."""
    for b in prange(rows.shape[0]):
        pu = np.zeros(n_components, np.float32)
        r = rows[b]
        for p in range(q_indptr[r], q_indptr[r + 1]):
            pu[q_indices[p]] = q_w[p]
        for t in range(cand.shape[1]):
            it = cand[b, t]
            acc = np.float64(bias[it])
            for p in range(i_indptr[it], i_indptr[it + 1]):
                acc += pu[i_indices[p]] * i_w[p]
            out[b, t] = acc


@njit(cache=True, parallel=True)
def select_top_n(S, n, rows, ex_indptr, ex_indices, allowed, self_exclude, out_idx, out_val):
    """Top ``n`` of each row of a dense score block ``S`` (modified in place).

    Exclusions as in :func:`recommend_top_n`; ``rows[b]`` is the query index
    of row ``b`` (for ``self_exclude``).
    """
    for b in prange(S.shape[0]):
        _exclude_and_select(S[b], b, rows[b], n, ex_indptr, ex_indices, allowed, self_exclude,
                            out_idx, out_val)


def cosine_top_n(E, rows, n, block):
    """Top ``n`` rows of a dense embedding ``E`` by cosine to each ``E[rows[b]]``.

    The row itself is excluded; a zero row scores 0 against everything.
    Scores are computed ``block`` query rows at a time, so memory is
    ``block x len(E)`` floats beyond the normalised copy of ``E``.
    """
    norms = np.linalg.norm(E, axis=1)
    E = E / np.where(norms > 0, norms, 1.0)[:, None]
    out_idx = np.empty((len(rows), n), np.int64)
    out_val = np.empty((len(rows), n), np.float32)
    ex_indptr, ex_indices = np.zeros(block + 1, np.int64), np.zeros(0, np.int32)
    allowed = np.ones(len(E), np.bool_)
    for b0 in range(0, len(rows), block):
        b1 = min(len(rows), b0 + block)
        S = np.ascontiguousarray(E[rows[b0:b1]] @ E.T, np.float32)
        select_top_n(S, n, rows[b0:b1], ex_indptr[: b1 - b0 + 1], ex_indices, allowed, True,
                     out_idx[b0:b1], out_val[b0:b1])
    return out_idx, out_val
