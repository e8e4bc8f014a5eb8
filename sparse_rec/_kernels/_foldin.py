"""Fold-in of new users against a fitted item table (BPR, Adagrad).

Each history row is solved on its own: its random numbers are keyed by the
row's *content* (its sorted item ids), not by its position in the batch, so
the result for a row does not depend on which other rows come with it.
"""

import math

import numpy as np
from numba import njit, prange

from ._bpr import in_row, log_sigmoid_grad
from ._rng import draw, randint, splitmix64

_EPS = np.float32(1e-8)


@njit(cache=True, inline="always")
def _keep_largest(w, mask, k_keep):
    """Mask the ``k_keep`` largest ``|w|`` (ties by position) and zero the rest of ``w``."""
    order = np.argsort(-np.abs(w), kind="mergesort")
    for c in range(w.shape[0]):
        mask[c] = False
    for c in range(k_keep):
        mask[order[c]] = True
    for c in range(w.shape[0]):
        if not mask[c]:
            w[c] = 0.0


@njit(cache=True, inline="always")
def _dot_row_f32(u, indptr, indices, w, i):
    s = np.float32(0.0)
    for p in range(indptr[i], indptr[i + 1]):
        s += u[indices[p]] * w[p]
    return s


@njit(cache=True)
def _fold_in_row(r, x_indptr, x_indices, x_data, i_indptr, i_indices, i_w, bias, n_items,
                 n_passes, n_refine, k_keep, lr, reg, key, u, mask):
    d = u.shape[0]
    h0, h1 = x_indptr[r], x_indptr[r + 1]
    nh = h1 - h0
    u[:] = 0.0
    mask[:] = True
    if nh == 0 or nh >= n_items:
        return
    rkey = key
    total = 0.0
    for p in range(h0, h1):
        rkey = splitmix64(rkey ^ np.uint64(x_indices[p]))
        total += x_data[p]
    # Values weight the positives as in fit, relative to the row's mean so
    # the result depends on this row alone.
    inv_mean = nh / total if total > 0 else 1.0
    acc = np.zeros(d, np.float32)
    g = np.zeros(d, np.float32)
    for it in range(n_passes + n_refine):
        if it == n_passes and k_keep < d:
            # Keep the k_keep largest weights: the row gets the fitted
            # model's per-user budget, then the last passes refine them.
            _keep_largest(u, mask, k_keep)
        for t in range(nh):
            i = x_indices[h0 + t]
            j = -1
            for s in range(1, 9):
                cand = randint(draw(rkey, it * nh + t, s), n_items)
                if not in_row(x_indptr, x_indices, r, cand):
                    j = cand
                    break
            if j < 0:
                continue
            x = (_dot_row_f32(u, i_indptr, i_indices, i_w, i)
                 - _dot_row_f32(u, i_indptr, i_indices, i_w, j) + bias[i] - bias[j])
            _, sg = log_sigmoid_grad(x)
            sg = np.float32(sg * x_data[h0 + t] * inv_mean)
            for c in range(d):
                g[c] = reg * u[c]
            for p in range(i_indptr[i], i_indptr[i + 1]):
                g[i_indices[p]] -= sg * i_w[p]
            for p in range(i_indptr[j], i_indptr[j + 1]):
                g[i_indices[p]] += sg * i_w[p]
            for c in range(d):
                if mask[c]:
                    acc[c] += g[c] * g[c]
                    u[c] -= lr * g[c] / (math.sqrt(acc[c]) + _EPS)


@njit(cache=True, parallel=True)
def fold_in_bpr(x_indptr, x_indices, x_data, i_indptr, i_indices, i_w, bias, n_items,
                n_passes, n_refine, k_keep, lr, reg, key, U, M):
    """Fill ``U[r]`` (weights) and ``M[r]`` (active mask) for each history row ``r``.

    ``n_passes`` Adagrad passes over the row's interactions (one uniform
    negative outside the row per positive, BPR loss weighted by the value
    over the row's mean value, L2 ``reg``) on all
    coordinates, then the ``k_keep`` largest are kept and ``n_refine`` more
    passes train them alone.
    """
    for r in prange(U.shape[0]):
        _fold_in_row(r, x_indptr, x_indices, x_data, i_indptr, i_indices, i_w, bias, n_items,
                     n_passes, n_refine, k_keep, lr, reg, key, U[r], M[r])


@njit(cache=True)
def _fold_in_item_row(r, c_indptr, c_users, c_data, u_indptr, u_indices, u_w, i_indptr,
                      i_indices, i_w, bias, s_indptr, s_indices, s_rows, n_as_negative,
                      self_item, n_items, n_passes, n_refine, k_keep, lr, reg, key, q, mask,
                      b_out, pu):
    # The mirror of _fold_in_row: the item's row q (and its bias) is trained
    # on the BPR pairs (u, this item) > (u, j) of the users u who chose it,
    # with the user rows and the other items fixed.
    d = q.shape[0]
    h0, h1 = c_indptr[r], c_indptr[r + 1]
    nh = h1 - h0
    q[:] = 0.0
    mask[:] = True
    b_out[0] = 0.0
    if nh == 0:
        return
    rkey = key
    total = 0.0
    for p in range(h0, h1):
        rkey = splitmix64(rkey ^ np.uint64(c_users[p]))
        total += c_data[p]
    inv_mean = nh / total if total > 0 else 1.0
    acc = np.zeros(d, np.float32)
    g = np.zeros(d, np.float32)
    acc_b = np.float32(0.0)
    b = np.float32(0.0)
    for it in range(n_passes + n_refine):
        if it == n_passes and k_keep < d:
            _keep_largest(q, mask, k_keep)
        for t in range(nh):
            u = c_users[h0 + t]
            j = -1
            for s in range(1, 9):
                cand = randint(draw(rkey, it * nh + t, s), n_items)
                if cand != self_item and not in_row(s_indptr, s_indices, u, cand):
                    j = cand
                    break
            if j < 0:
                continue
            for p in range(u_indptr[u], u_indptr[u + 1]):
                pu[u_indices[p]] = u_w[p]
            x = np.float32(0.0)
            for c in range(d):
                x += q[c] * pu[c]
            x += b - _dot_row_f32(pu, i_indptr, i_indices, i_w, j) - bias[j]
            _, sg = log_sigmoid_grad(x)
            sg = np.float32(sg * c_data[h0 + t] * inv_mean)
            for c in range(d):
                g[c] = reg * q[c] - sg * pu[c]
            for c in range(d):
                if mask[c]:
                    acc[c] += g[c] * g[c]
                    q[c] -= lr * g[c] / (math.sqrt(acc[c]) + _EPS)
            gb = reg * b - sg
            acc_b += gb * gb
            b -= lr * gb / (math.sqrt(acc_b) + _EPS)
            for p in range(u_indptr[u], u_indptr[u + 1]):
                pu[u_indices[p]] = 0.0
        # In fit an item is also the uniform negative of other users' pairs
        # (about nnz / n_items times an epoch): without these steps nothing
        # holds its bias and weights back.
        n_s = s_indices.shape[0]
        for t in range(n_as_negative if n_s > 0 else 0):
            e = randint(draw(rkey, it * n_as_negative + t, 9), n_s)
            v = s_rows[e]
            j = s_indices[e]
            if j == self_item or in_row(c_indptr, c_users, r, v):
                continue
            for p in range(u_indptr[v], u_indptr[v + 1]):
                pu[u_indices[p]] = u_w[p]
            x = _dot_row_f32(pu, i_indptr, i_indices, i_w, j) + bias[j] - b
            for c in range(d):
                x -= q[c] * pu[c]
            _, sg = log_sigmoid_grad(x)
            sg = np.float32(sg)
            for c in range(d):
                g[c] = reg * q[c] + sg * pu[c]
            for c in range(d):
                if mask[c]:
                    acc[c] += g[c] * g[c]
                    q[c] -= lr * g[c] / (math.sqrt(acc[c]) + _EPS)
            gb = reg * b + sg
            acc_b += gb * gb
            b -= lr * gb / (math.sqrt(acc_b) + _EPS)
            for p in range(u_indptr[v], u_indptr[v + 1]):
                pu[u_indices[p]] = 0.0
    b_out[0] = b


@njit(cache=True, parallel=True)
def fold_in_items_bpr(c_indptr, c_users, c_data, u_indptr, u_indices, u_w, i_indptr, i_indices,
                      i_w, bias, s_indptr, s_indices, s_rows, n_as_negative, self_items,
                      n_items, n_passes, n_refine, k_keep, lr, reg, key, Q, M, B):
    """Fill ``Q[r]``, ``M[r]`` and ``B[r]`` (row, mask, bias) for each item column ``r``.

    Column ``r`` lists the users of the item (``c_users``, values ``c_data``).
    Each pass draws for every such user ``u`` one negative item among the
    ``n_items`` fixed ones, outside ``u``'s history (``s_*``) and other than
    ``self_items[r]`` (the item itself when it is refitted, else -1), and
    takes an Adagrad step of the weighted BPR loss on the item's row and
    bias. Each pass also draws ``n_as_negative`` interactions ``(v, j)``
    of the fixed data (``s_rows``, ``s_indices``) of users ``v`` outside the
    column, the item being ``v``'s negative against ``j``, as in fit. After
    ``n_passes`` the ``k_keep`` largest weights are kept and ``n_refine``
    passes train them alone (as :func:`fold_in_bpr`).
    """
    d = Q.shape[1]
    for r in prange(Q.shape[0]):
        pu = np.zeros(d, np.float32)
        _fold_in_item_row(r, c_indptr, c_users, c_data, u_indptr, u_indices, u_w, i_indptr,
                          i_indices, i_w, bias, s_indptr, s_indices, s_rows, n_as_negative,
                          self_items[r], n_items, n_passes, n_refine, k_keep, lr, reg, key, Q[r],
                          M[r], B[r:r + 1], pu)
