"""CPU backend: chooses the serial or the parallel kernel and sizes blocks."""

import numba
import numpy as np

from .._kernels import _bpr, _topk

SGD = _bpr.SGD
ADAGRAD = _bpr.ADAGRAD


def _n_blocks(n_samples, n_threads):
    # Enough blocks to balance threads, each large enough to amortise its
    # two small buffers.
    return int(max(n_threads, min(n_threads * 64, n_samples // 2048 + 1)))


def bpr_epoch(data, users, items, bias_v, n_samples, key, lr, reg, optimizer):
    """One BPR epoch; serial (bitwise reproducible) when one thread is set."""
    n_threads = numba.get_num_threads()
    args = (
        n_samples, key, users.n_cols,
        data.x_indices, data.x_weight, data.x_rows, data.f_indptr, data.f_indices,
        users.indptr, users.indices, users.values_buf,
        items.indptr, items.indices, items.values_buf,
        bias_v, np.float32(lr), np.float32(reg), optimizer,
    )
    if n_threads == 1:
        return _bpr.bpr_epoch_serial(*args)
    return _bpr.bpr_epoch_parallel(*args, _n_blocks(n_samples, n_threads))


def grad_users(data, users, items, bias_v, m, key):
    def fill(r0, r1, G):
        _bpr.grad_users_chunk(
            r0, r1, G, m, key, data.x_indptr, data.x_indices, data.x_weight,
            data.f_indptr, data.f_indices, users.indptr, users.indices, users.values_buf,
            items.indptr, items.indices, items.values_buf, bias_v,
        )
    return fill


def grad_items(data, users, items, bias_v, m, key, m_neg=None):
    neg_per_item = data.nnz / max(items.n_rows, 1)

    def fill(r0, r1, G):
        _bpr.grad_items_chunk(
            r0, r1, G, m, m if m_neg is None else m_neg, key, neg_per_item,
            data.x_indptr, data.x_indices, data.x_weight, data.x_rows,
            data.xt_indptr, data.xt_indices, data.xt_weight,
            data.f_indptr, data.f_indices, users.indptr, users.indices, users.values_buf,
            items.indptr, items.indices, items.values_buf, bias_v,
        )
    return fill


# Above this item-table density scoring uses dense blocks and BLAS: CSR
# saves nothing there, and scattered adds are far slower than a matmul.
DENSE_SCORING_DENSITY = 0.5
_BLOCK_ROWS = 256


def top_n(rows, n, query, item_t, bias, ex_indptr, ex_indices, allowed, self_exclude=False,
          items=None):
    """Top ``n`` items per query row; ``items`` (the item table) enables dense scoring."""
    out_idx = np.empty((len(rows), n), np.int64)
    out_val = np.empty((len(rows), n), np.float32)
    if items is not None and items.nnz >= DENSE_SCORING_DENSITY * items.n_rows * items.n_cols:
        # Only the queried rows are densified, never a copy of the whole table.
        Q = items.dense_rows(np.arange(items.n_rows))
        for b0 in range(0, len(rows), _BLOCK_ROWS):
            b1 = min(len(rows), b0 + _BLOCK_ROWS)
            S = query.dense_rows(rows[b0:b1]) @ Q.T
            S += bias
            e0, e1 = ex_indptr[b0], ex_indptr[b1]
            _topk.select_top_n(
                S, n, rows[b0:b1], ex_indptr[b0:b1 + 1] - e0, ex_indices[e0:e1], allowed,
                self_exclude, out_idx[b0:b1], out_val[b0:b1],
            )
        return out_idx, out_val
    _topk.recommend_top_n(
        rows, n, query.indptr, query.indices, query.weights,
        item_t[0], item_t[1], item_t[2], bias,
        ex_indptr, ex_indices, allowed, self_exclude, out_idx, out_val,
    )
    return out_idx, out_val


def score(rows, cand, query, items, bias):
    out = np.empty(cand.shape, np.float32)
    _topk.score_candidates(
        rows, cand, query.n_cols, query.indptr, query.indices, query.weights,
        items.indptr, items.indices, items.weights, bias, out,
    )
    return out
