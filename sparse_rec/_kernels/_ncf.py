"""NeuMF kernels: forward, backward and lazy Adam over CSR layers.

Layout shared by every kernel here (``sparse_rec._ncf.scoring._Net`` builds it). Kernels
take it bundled: ``emb`` = ``(ug, ig, um, im)``, ``net`` a :data:`Net`, the
interactions a :data:`Interactions` and the training threads' buffers a
:data:`Work` (named tuples, which Numba passes as one argument each):

* four embedding tables, each ``(indptr, indices, v)`` with ``v[p]`` =
  (weight, Adam m, Adam v): GMF users ``ug``, GMF items ``ig``, MLP users
  ``um``, MLP items ``im``, all with ``d`` columns;
* the MLP layers packed into one CSR whose rows are the *input* units of all
  layers in order (``m_indptr, m_indices, m_v``, and ``m_w``: a contiguous
  copy of the weights, which every step keeps current); layer ``l`` has
  ``n_in[l]`` rows starting at row ``w_row0[l]`` and ``n_out[l]`` columns.
  Rows are inputs because both directions then walk a row once: the forward
  pass scatters ``x[k] * W[k, :]`` into the outputs, the backward pass
  gathers ``W[k, :] . delta`` for input ``k``, and an input that is zero
  (inactive embedding coordinate, ReLU off) skips its row entirely. The first
  layer's rows ``0..d-1`` see the user's MLP embedding, rows ``d..2d-1`` the
  item's, so scoring can compute each part once per user and once per item;
* dense parameters ``dense_v`` (n_dense, 3): biases of layer ``l`` at
  ``b_off[l]``, the fusion weights over ``[gmf product, last hidden layer]``
  at ``h_off`` and the output bias at ``o_off``;
* activations of one sample in a float32 vector: the MLP input ``z0`` (2d)
  at ``a_off[0] = 0`` and layer ``l``'s ReLU output at ``a_off[l + 1]``.
  A unit is on iff its output is > 0 (PyTorch's ReLU has zero slope at 0).

One training instance is a number ``t`` in ``[0, nnz * (1 + K))``: the
positive interaction ``t // (1 + K)`` when ``t % (1 + K) == 0``, otherwise
one of its ``K`` negatives, drawn uniformly outside the user's forbidden row
(``_bpr.sample_negative``; skipped after 8 failed tries). An epoch visits
every instance once in the order of a keyed bijection of that range (a
Feistel network), so shuffling costs no memory and no thread decides it.

A mini-batch runs its instances' forward and backward passes one by one,
summing the MLP gradients in a buffer aligned with the packed weights and
keeping each instance's embedding gradients. Then each embedding table
groups the batch's instances by row and steps only those rows (lazy Adam: a
row absent from the batch keeps its weights and moments; the bias
correction uses the global step), and the MLP and dense parameters take a
plain Adam step. The serial epoch runs the batches in order (bitwise
reproducible); the parallel epoch gives thread ``t`` the batches ``t, t +
T, ...`` and lets the threads step the shared parameters without locks
(Hogwild at the granularity of a mini-batch), so threads never wait for one
another inside an epoch.
"""

import math
from collections import namedtuple

import numpy as np
from numba import njit, prange

from ._bpr import in_row, sample_negative
from ._rng import draw, randint, splitmix64
from ._topk import _exclude_and_select

#: The arrays of an NCF network as the kernels read them (see above):
#: packed MLP weights, dense parameters and offsets.
Net = namedtuple("Net", "m_indptr m_indices m_w dense_v n_in n_out w_row0 b_off a_off h_off o_off")
#: The interaction arrays of one fit (``sparse_rec._base.TrainData``).
Interactions = namedtuple("Interactions", "x_indptr x_indices x_weight x_rows xt_indptr "
                                          "xt_indices xt_weight f_indptr f_indices")
#: Work buffers of the training threads, one row per thread.
Work = namedtuple("Work", "act dact pg qg sg su si gm gd acc")

BETA1 = 0.9
BETA2 = 0.999
ADAM_EPS = 1e-8
_N_ROUNDS = 4


# --- instance order ----------------------------------------------------------
@njit(cache=True, inline="always")
def permute(key, t, n, half_bits):
    """Image of ``t`` under a keyed bijection of ``[0, n)``.

    A 4-round Feistel network permutes ``[0, 4**half_bits)`` (which must be
    >= n); cycle-walking maps it back into ``[0, n)``.
    """
    mask = np.uint64((1 << half_bits) - 1)
    hb = np.uint64(half_bits)
    x = np.uint64(t)
    while True:
        left = x >> hb
        right = x & mask
        for r in range(_N_ROUNDS):
            f = splitmix64(key ^ splitmix64(right + np.uint64(r) * np.uint64(0x100000000))) & mask
            left, right = right, left ^ f
        x = (left << hb) | right
        if x < np.uint64(n):
            return np.int64(x)


@njit(cache=True, inline="always")
def instance(t, k1, key, x_indices, x_weight, x_rows, f_indptr, f_indices, n_items):
    """``(user, item, label, weight)`` of instance ``t``; item -1 if skipped."""
    pos = t // k1
    u = x_rows[pos]
    if t % k1 == 0:
        return u, np.int64(x_indices[pos]), np.float32(1.0), x_weight[pos]
    j = sample_negative(key, t, u, n_items, f_indptr, f_indices)
    return u, j, np.float32(0.0), np.float32(1.0)


# --- one sample --------------------------------------------------------------
@njit(cache=True, inline="always")
def _bce(x, y):
    """Binary cross-entropy of logit ``x`` against label ``y`` and its slope."""
    # log(1 + exp(-|x|)) + max(x, 0) - x * y, written without overflow.
    ax = abs(x)
    e = math.exp(-ax)
    loss = math.log1p(e) + max(x, 0.0) - x * y
    sig = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
    return loss, sig - y


@njit(cache=True, inline="always")
def _row_scatter(act, dst, x, start, stop, n_out, m_indices, m_w):
    """``act[dst + j] += x * W[k, j]`` over the active ``j`` of one layer row."""
    if stop - start == n_out:
        # A full row: contiguous weights. Loops over zero-based views
        # vectorise; offset indexing does not (negative-index checks).
        out = act[dst: dst + n_out]
        w = m_w[start:stop]
        for j in range(n_out):
            out[j] += x * w[j]
    else:
        for p in range(start, stop):
            act[dst + m_indices[p]] += x * m_w[p]


@njit(cache=True, inline="always")
def _row_gather(dact, dst, x, start, stop, n_out, m_indices, m_w, gm, acc_params):
    """``sum_j W[k, j] * delta[j]``, adding ``x * delta[j]`` to the row's gradients."""
    acc = np.float32(0.0)
    if stop - start == n_out:
        delta = dact[dst: dst + n_out]
        w = m_w[start:stop]
        for j in range(n_out):
            acc += w[j] * delta[j]
        if acc_params:
            g = gm[start:stop]
            for j in range(n_out):
                g[j] += x * delta[j]
    else:
        for p in range(start, stop):
            dj = dact[dst + m_indices[p]]
            acc += m_w[p] * dj
            if acc_params:
                gm[p] += x * dj
    return acc


@njit(cache=True, fastmath=True, error_model="numpy")
def forward(u, i, d, act, pg, qg, emb, net):
    """Logit of pair ``(u, i)``; fills ``act`` and the dense GMF rows ``pg, qg``.

    ``emb`` is ``(ug, ig, um, im)``, ``net`` a :data:`Net` (``m_w``: the
    packed MLP weights alone, contiguous). ``act``, ``pg`` and ``qg`` are
    zeroed here first.
    """
    ug, ig, um, im = emb
    m_indptr, m_indices, m_w, dense_v = net.m_indptr, net.m_indices, net.m_w, net.dense_v
    n_in, n_out, w_row0, b_off = net.n_in, net.n_out, net.w_row0, net.b_off
    a_off, h_off, o_off = net.a_off, net.h_off, net.o_off
    n_layers = n_in.shape[0]
    for k in range(d):
        pg[k] = 0.0
        qg[k] = 0.0
    for k in range(a_off[n_layers] + n_out[n_layers - 1]):
        act[k] = 0.0
    for p in range(ug[0][u], ug[0][u + 1]):
        pg[ug[1][p]] = ug[2][p, 0]
    for p in range(ig[0][i], ig[0][i + 1]):
        qg[ig[1][p]] = ig[2][p, 0]
    for p in range(um[0][u], um[0][u + 1]):
        act[um[1][p]] = um[2][p, 0]
    for p in range(im[0][i], im[0][i + 1]):
        act[d + im[1][p]] = im[2][p, 0]
    for layer in range(n_layers):
        src = a_off[layer]
        dst = a_off[layer + 1]
        bo = b_off[layer]
        no = n_out[layer]
        for j in range(no):
            act[dst + j] = dense_v[bo + j, 0]
        r0 = w_row0[layer]
        for k in range(n_in[layer]):
            x = act[src + k]
            if x != 0.0:
                _row_scatter(act, dst, x, m_indptr[r0 + k], m_indptr[r0 + k + 1], no,
                             m_indices, m_w)
        for j in range(no):
            if act[dst + j] < 0.0:
                act[dst + j] = 0.0
    out = np.float64(dense_v[o_off, 0])
    for k in range(d):
        out += dense_v[h_off + k, 0] * pg[k] * qg[k]
    last = a_off[n_layers]
    for j in range(n_out[n_layers - 1]):
        out += dense_v[h_off + d + j, 0] * act[last + j]
    return out


@njit(cache=True, fastmath=True, error_model="numpy")
def backward(g, u, i, d, act, dact, pg, qg, emb_grad, emb, net, gm, gd, acc_params, dense_z0,
             gw_dense, w_dense_off):
    """Back-propagate the slope ``g`` = dloss/dlogit of the last :func:`forward`.

    Writes ``emb_grad`` (4d): dL/d(GMF user row), dL/d(GMF item row) (both
    dense), then dL/dz0 for the user and the item MLP rows: at the active
    coordinates of ``um[u]`` and ``im[i]`` only (other entries are left
    stale), or at every coordinate when ``dense_z0``. With ``acc_params`` the
    gradients of the active MLP weights are added to ``gm`` (aligned with
    ``m_w``) and those of the dense parameters to ``gd``. With a non-empty
    ``gw_dense`` the gradient of *every* MLP weight, active or not, is added
    to it (layer ``l`` as a dense row-major block at ``w_dense_off[l]``).
    """
    um, im = emb[2], emb[3]
    m_indptr, m_indices, m_w, dense_v = net.m_indptr, net.m_indices, net.m_w, net.dense_v
    n_in, n_out, w_row0, b_off = net.n_in, net.n_out, net.w_row0, net.b_off
    a_off, h_off = net.a_off, net.h_off
    n_layers = n_in.shape[0]
    want_dense_w = gw_dense.shape[0] > 0
    for k in range(d):
        hk = dense_v[h_off + k, 0]
        emb_grad[k] = g * hk * qg[k]
        emb_grad[d + k] = g * hk * pg[k]
    last = a_off[n_layers]
    n_last = n_out[n_layers - 1]
    if acc_params:
        for k in range(d):
            gd[h_off + k] += g * pg[k] * qg[k]
        for j in range(n_last):
            gd[h_off + d + j] += g * act[last + j]
        gd[h_off + d + n_last] += g
    for j in range(n_last):
        dact[last + j] = g * dense_v[h_off + d + j, 0] if act[last + j] > 0.0 else 0.0
    # Deltas of layer ``layer``'s outputs are in dact[dst:] (ReLU slope
    # applied); compute its inputs' deltas.
    for layer in range(n_layers - 1, -1, -1):
        src = a_off[layer]
        dst = a_off[layer + 1]
        r0 = w_row0[layer]
        no = n_out[layer]
        if acc_params:
            bo = b_off[layer]
            for j in range(no):
                gd[bo + j] += dact[dst + j]
        if want_dense_w:
            off = w_dense_off[layer]
            delta = dact[dst: dst + no]
            for k in range(n_in[layer]):
                x = act[src + k]
                if x != 0.0:
                    g = gw_dense[off + k * no: off + (k + 1) * no]
                    for j in range(no):
                        g[j] += x * delta[j]
        if layer > 0:
            for k in range(n_in[layer]):
                x = act[src + k]
                acc = np.float32(0.0)
                if x > 0.0:
                    acc = _row_gather(dact, dst, x, m_indptr[r0 + k], m_indptr[r0 + k + 1], no,
                                      m_indices, m_w, gm, acc_params)
                dact[src + k] = acc
        else:
            # First layer: inputs are embedding coordinates. Their deltas are
            # needed where the coordinate is active (even at weight 0, or a
            # grown weight would never move), or everywhere for growth.
            for side in range(2):
                tab = um if side == 0 else im
                row = u if side == 0 else i
                base = side * d
                if dense_z0:
                    n_k = d
                else:
                    n_k = tab[0][row + 1] - tab[0][row]
                for t in range(n_k):
                    k = base + (t if dense_z0 else tab[1][tab[0][row] + t])
                    emb_grad[2 * d + k] = _row_gather(
                        dact, dst, act[src + k], m_indptr[r0 + k], m_indptr[r0 + k + 1], no,
                        m_indices, m_w, gm, acc_params and act[src + k] != 0.0)


# --- training ----------------------------------------------------------------
@njit(cache=True, inline="always")
def _adam(v, p, grad, lr1, bc2_sqrt):
    """Adam on entry ``p`` of ``v`` (w, m, v); ``lr1 = lr / (1 - beta1**t)``.

    Returns the new weight.
    """
    m = BETA1 * v[p, 1] + (1.0 - BETA1) * grad
    s = BETA2 * v[p, 2] + (1.0 - BETA2) * grad * grad
    v[p, 1] = m
    v[p, 2] = s
    w = v[p, 0] - lr1 * m / (math.sqrt(s) / bc2_sqrt + ADAM_EPS)
    v[p, 0] = w
    return w


@njit(cache=True, inline="always")
def step_row_group(tab, col0, rows, items, sg, order, g, nb, acc, inv_b, lr1, bc2_sqrt, reg):
    """Lazy Adam on the row of the group starting at ``order[g]``; returns the group's end.

    ``order`` lists the batch's ``nb`` instances sorted stably by
    ``rows``; the group is the run of instances with the row of
    ``order[g]``. Their gradients (columns ``col0:col0 + d`` of ``sg``) are
    summed in instance order and the row takes one step on its active
    coordinates, unless every instance of the group was skipped
    (``items < 0``). The CPU epoch and its CUDA twin both step rows here.
    """
    indptr, indices, v = tab
    d = acc.shape[0]
    r = rows[order[g]]
    for k in range(d):
        acc[k] = 0.0
    used = False
    h = g
    while h < nb and rows[order[h]] == r:
        s = order[h]
        if items[s] >= 0:
            used = True
            for k in range(d):
                acc[k] += sg[s, col0 + k]
        h += 1
    if used:
        for p in range(indptr[r], indptr[r + 1]):
            _adam(v, p, acc[indices[p]] * inv_b + reg * v[p, 0], lr1, bc2_sqrt)
    return h


@njit(cache=True, fastmath=True, error_model="numpy")
def _apply_table(tab, col0, rows, items, sg, nb, acc, inv_b, lr1, bc2_sqrt, reg):
    """Lazy Adam on the rows of one embedding table that the batch touched.

    The batch's instances are grouped by row (stable sort, so each row sums
    its instances' gradients in instance order) and each row takes one step
    on its active coordinates (:func:`step_row_group`).
    """
    order = np.argsort(rows[:nb], kind="mergesort")
    g = 0
    while g < nb:
        g = step_row_group(tab, col0, rows, items, sg, order, g, nb, acc, inv_b, lr1, bc2_sqrt,
                           reg)


@njit(cache=True, fastmath=True, error_model="numpy")
def _apply_dense(gm, gd, m_v, m_w, dense_v, w_range, inv_b, lr1, bc2_sqrt, reg):
    """Adam on every active MLP weight and every dense parameter."""
    for p in range(m_v.shape[0]):
        m_w[p] = _adam(m_v, p, gm[p] * inv_b + reg * m_v[p, 0], lr1, bc2_sqrt)
    for p in range(dense_v.shape[0]):
        # L2 on the fusion weights, never on biases.
        r = reg if p >= w_range[0] and p < w_range[1] else np.float32(0.0)
        _adam(dense_v, p, gd[p] * inv_b + r * dense_v[p, 0], lr1, bc2_sqrt)


@njit(cache=True, fastmath=True, error_model="numpy")
def train_batches(
    first, stride, n_inst, k1, batch, key, half_bits, step0, lr, reg,
    data, n_items, d, emb, net, m_v, w_range, work, row,
):
    """Mini-batches ``first, first + stride, ...`` of the epoch; returns their loss sum.

    Batch ``b`` holds the instances at positions ``[b * batch, (b + 1) *
    batch)`` of the epoch's order and takes Adam step ``step0 + b + 1``.
    The gradients are averaged over the batch (as a mean loss would give).
    ``data`` is an :data:`Interactions`, ``m_v`` the packed MLP weights
    with their Adam state (``net.m_w`` is kept equal to ``m_v[:, 0]``) and
    ``work`` a :data:`Work` whose row ``row`` this call uses.
    """
    x_indices, x_weight, x_rows = data.x_indices, data.x_weight, data.x_rows
    f_indptr, f_indices = data.f_indptr, data.f_indices
    ug, ig, um, im = emb
    m_w, dense_v = net.m_w, net.dense_v
    act, dact, pg, qg, sg = work.act[row], work.dact[row], work.pg[row], work.qg[row], work.sg[row]
    su, si, gm, gd, acc = work.su[row], work.si[row], work.gm[row], work.gd[row], work.acc[row]
    n_batches = (n_inst + batch - 1) // batch
    loss = 0.0
    for b in range(first, n_batches, stride):
        b0 = b * batch
        b1 = min(n_inst, b0 + batch)
        nb = b1 - b0
        gm[:] = 0.0
        gd[:] = 0.0
        for s in range(b0, b1):
            t = permute(key, s, n_inst, half_bits)
            u, i, y, c_w = instance(t, k1, key, x_indices, x_weight, x_rows, f_indptr,
                                    f_indices, n_items)
            su[s - b0] = u
            si[s - b0] = i
            if i < 0:
                continue
            x = forward(u, i, d, act, pg, qg, emb, net)
            sample_loss, slope = _bce(x, y)
            loss += c_w * sample_loss
            backward(np.float32(c_w * slope), u, i, d, act, dact, pg, qg, sg[s - b0], emb, net,
                     gm, gd, True, False, act[:0], net.w_row0[:0])
        step = step0 + b + 1
        lr1 = np.float32(lr / (1.0 - BETA1 ** step))
        bc2_sqrt = np.float32(math.sqrt(1.0 - BETA2 ** step))
        inv_b = np.float32(1.0 / nb)
        _apply_table(ug, 0, su, si, sg, nb, acc, inv_b, lr1, bc2_sqrt, reg)
        _apply_table(ig, d, si, si, sg, nb, acc, inv_b, lr1, bc2_sqrt, reg)
        _apply_table(um, 2 * d, su, si, sg, nb, acc, inv_b, lr1, bc2_sqrt, reg)
        _apply_table(im, 3 * d, si, si, sg, nb, acc, inv_b, lr1, bc2_sqrt, reg)
        _apply_dense(gm, gd, m_v, m_w, dense_v, w_range, inv_b, lr1, bc2_sqrt, reg)
    return loss


@njit(cache=True, parallel=True)
def ncf_epoch_parallel(
    n_inst, k1, batch, key, half_bits, step0, lr, reg,
    data, n_items, d, emb, net, m_v, w_range, work,
):
    """Hogwild epoch: thread ``t`` trains batches ``t, t + T, ...`` with no locks.

    Work buffers have one row per thread (``work.act.shape[0]`` threads). Threads
    never wait for each other during the epoch; their Adam steps on shared
    rows and MLP weights may interleave (as in Hogwild SGD).
    """
    n_threads = work.act.shape[0]
    losses = np.zeros(n_threads)
    # A parallel loop cannot capture a tuple of tuples: rebuild ``emb`` inside.
    ug, ig, um, im = emb
    for t in prange(n_threads):
        losses[t] = train_batches(
            t, n_threads, n_inst, k1, batch, key, half_bits, step0, lr, reg,
            data, n_items, d, (ug, ig, um, im), net, m_v, w_range, work, t,
        )
    return losses.sum()


# --- gradients at inactive coordinates (for growth) --------------------------
#
# Each row's gradient comes from a per-row sample computed by one thread, so
# the result is independent of scheduling and recomputing it gives the same
# numbers. Rows with more interactions than ``m`` use ``m`` of them,
# reweighted to estimate the gradient of a full epoch's loss sum.


@njit(cache=True, inline="always")
def embedding_row_grad(which, r, g_row, m, key, k_neg, neg_per_item, data, n_items, d, emb, net,
                       act, dact, pg, qg, eg):
    """Dense gradient of row ``r`` of embedding table ``which`` into ``g_row``.

    The per-row sum of :func:`grad_embedding_rows` (see there); ``act``,
    ``dact``, ``pg``, ``qg`` and ``eg`` (4d) are work buffers. The CPU
    kernel and its CUDA twin both call it.
    """
    x_indptr, x_indices, x_weight, x_rows = (data.x_indptr, data.x_indices, data.x_weight,
                                             data.x_rows)
    xt_indptr, xt_indices, xt_weight = data.xt_indptr, data.xt_indices, data.xt_weight
    f_indptr, f_indices = data.f_indptr, data.f_indices
    is_item = which % 2 == 1
    col0 = which * d
    nnz = x_indices.shape[0]
    for k in range(g_row.shape[0]):
        g_row[k] = 0.0
    if is_item:
        start = xt_indptr[r]
        deg = xt_indptr[r + 1] - start
    else:
        start = x_indptr[r]
        deg = x_indptr[r + 1] - start
    n = min(deg, m)
    n_pairs = 2 * n if not is_item else n + m
    for t in range(n_pairs):
        if t < n:
            pos = start + t if deg <= m else start + randint(draw(key, start + t, 0), deg)
            if is_item:
                u = xt_indices[pos]
                i = r
                weight = xt_weight[pos] * (deg / n)
            else:
                u = r
                i = x_indices[pos]
                weight = x_weight[pos] * (deg / n)
            y = 1.0
        elif not is_item:
            u = r
            i = sample_negative(key, start + t, r, n_items, f_indptr, f_indices)
            if i < 0:
                continue
            weight = k_neg * deg / n
            y = 0.0
        else:
            # Streams 9.. keep these draws apart from the ones above.
            pos = randint(draw(key, nnz + r * m + t, 9), nnz)
            u = x_rows[pos]
            i = r
            if x_indices[pos] == r or in_row(f_indptr, f_indices, u, r):
                continue
            weight = neg_per_item / m
            y = 0.0
        x = forward(u, i, d, act, pg, qg, emb, net)
        _, slope = _bce(x, y)
        backward(np.float32(weight * slope), u, i, d, act, dact, pg, qg, eg, emb, net,
                 act[:0], act[:0], False, which >= 2, act[:0], net.w_row0[:0])
        for k in range(d):
            g_row[k] += eg[col0 + k]


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def grad_embedding_rows(which, r0, r1, G, m, key, k_neg, neg_per_item, data, n_items, d, emb,
                        net, n_act):
    """Fill ``G[r - r0]`` with the dense gradient of row ``r`` of table ``which``.

    ``which``: 0 GMF users, 1 GMF items, 2 MLP users, 3 MLP items. A user
    row sums up to ``m`` of its interactions (weight deg / n each) and ``m``
    negatives (weight ``k_neg`` deg / n each). An item row sums up to ``m``
    of its users and ``m`` pairs where it is another user's negative, drawn
    from random interactions and weighted to the ``neg_per_item`` times an
    item is drawn as a negative in one epoch (:func:`embedding_row_grad`).
    """
    n_rows = r1 - r0
    n_blocks = min(n_rows, 256)
    per = (n_rows + n_blocks - 1) // max(n_blocks, 1)
    ug, ig, um, im = emb  # rebuilt per block: a parallel loop cannot capture it
    for blk in prange(n_blocks):
        emb_b = (ug, ig, um, im)
        act = np.zeros(n_act, np.float32)
        dact = np.zeros(n_act, np.float32)
        pg = np.zeros(d, np.float32)
        qg = np.zeros(d, np.float32)
        eg = np.zeros(4 * d, np.float32)
        for r in range(r0 + blk * per, min(r1, r0 + (blk + 1) * per)):
            embedding_row_grad(which, r, G[r - r0], m, key, k_neg, neg_per_item, data, n_items,
                               d, emb_b, net, act, dact, pg, qg, eg)


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def grad_mlp_dense(n_samples, n_blocks, key, n_inst, k1, half_bits, out, data, n_items, d, emb,
                   net, n_act, w_dense_off):
    """Add to ``out`` the gradient of every MLP weight (dense, per layer blocks).

    ``n_samples`` instances of the epoch (the first ones of a keyed order),
    in ``n_blocks`` fixed blocks summed in block order, scaled to the
    epoch's ``n_inst`` instances.
    """
    x_indices, x_weight, x_rows = data.x_indices, data.x_weight, data.x_rows
    f_indptr, f_indices = data.f_indptr, data.f_indices
    per = (n_samples + n_blocks - 1) // n_blocks
    part = np.zeros((n_blocks, out.shape[0]), np.float32)
    scale = n_inst / max(n_samples, 1)
    ug, ig, um, im = emb  # rebuilt per block: a parallel loop cannot capture it
    for blk in prange(n_blocks):
        emb_b = (ug, ig, um, im)
        act = np.zeros(n_act, np.float32)
        dact = np.zeros(n_act, np.float32)
        pg = np.zeros(d, np.float32)
        qg = np.zeros(d, np.float32)
        eg = np.zeros(4 * d, np.float32)
        for s in range(blk * per, min(n_samples, (blk + 1) * per)):
            t = permute(key, s, n_inst, half_bits)
            u, i, y, c_w = instance(t, k1, key, x_indices, x_weight, x_rows, f_indptr,
                                    f_indices, n_items)
            if i < 0:
                continue
            x = forward(u, i, d, act, pg, qg, emb_b, net)
            _, slope = _bce(x, y)
            backward(np.float32(c_w * slope * scale), u, i, d, act, dact, pg, qg, eg, emb_b,
                     net, act[:0], act[:0], False, False, part[blk], w_dense_off)
    for blk in range(n_blocks):
        out += part[blk]


# --- scoring -----------------------------------------------------------------
@njit(cache=True, inline="always")
def pair_logit(ugh, u1, qg, i1, a, dense_w, n_out, s_off, w_off, b_off, h_off, o_bias):
    """Logit of one pair from its user part and its item part.

    ``ugh``: the user's GMF row times the GMF fusion weights; ``u1``: the
    first layer applied to the user's MLP row; ``qg``: the item's GMF row;
    ``i1``: the first layer applied to the item's MLP row plus the bias.
    ``dense_w`` holds layers 2.. (row-major blocks at ``w_off``, biases at
    ``b_off``) and the fusion weights of the last layer (``h_off``); layer
    ``l``'s outputs go to ``a[s_off[l]:]``.
    """
    out = o_bias
    for k in range(qg.shape[0]):
        out += ugh[k] * qg[k]
    for j in range(n_out[0]):
        x = u1[j] + i1[j]
        a[j] = x if x > 0.0 else 0.0
    n_layers = n_out.shape[0]
    for layer in range(1, n_layers):
        src = s_off[layer - 1]
        dst = s_off[layer]
        no = n_out[layer]
        bo = b_off[layer]
        out_l = a[dst: dst + no]
        bias = dense_w[bo: bo + no]
        for j in range(no):
            out_l[j] = bias[j]
        wo = w_off[layer]
        for k in range(n_out[layer - 1]):
            x = a[src + k]
            # ReLU leaves about half the units at 0: skip their rows.
            if x > 0.0:
                w = dense_w[wo + k * no: wo + (k + 1) * no]
                for j in range(no):
                    out_l[j] += x * w[j]
        for j in range(no):
            if out_l[j] < 0.0:
                out_l[j] = 0.0
    last = s_off[n_layers - 1]
    for j in range(n_out[n_layers - 1]):
        out += dense_w[h_off + j] * a[last + j]
    return out


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def recommend_top_n(
    rows, n, UGH, U1, QG, I1, dense_w, n_out, s_off, w_off, b_off, h_off, o_bias,
    ex_indptr, ex_indices, allowed, out_idx, out_val,
):
    """Top ``n`` items of every query row ``rows[b]`` of the user-side arrays.

    Items in row ``b`` of the exclusion CSR ``ex`` and items with
    ``allowed[item] == False`` are skipped.
    """
    n_items = QG.shape[0]
    n_q = rows.shape[0]
    n_chunks = min(n_q, 256)
    per = (n_q + n_chunks - 1) // max(n_chunks, 1)
    for c in prange(n_chunks):
        scores = np.empty(n_items, np.float32)
        a = np.zeros(s_off[-1], np.float32)
        for b in range(c * per, min(n_q, (c + 1) * per)):
            r = rows[b]
            for it in range(n_items):
                if allowed[it]:
                    scores[it] = pair_logit(UGH[r], U1[r], QG[it], I1[it], a, dense_w, n_out,
                                            s_off, w_off, b_off, h_off, o_bias)
                else:
                    scores[it] = -np.inf
            _exclude_and_select(scores, b, r, n, ex_indptr, ex_indices, allowed, False,
                                out_idx, out_val)


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def score_candidates(
    rows, cand, UGH, U1, QG, I1, dense_w, n_out, s_off, w_off, b_off, h_off, o_bias, out,
):
    """``out[b, t]`` = logit of user ``rows[b]`` (of the user-side arrays) and ``cand[b, t]``."""
    for b in prange(rows.shape[0]):
        a = np.zeros(s_off[-1], np.float32)
        r = rows[b]
        for t in range(cand.shape[1]):
            it = cand[b, t]
            out[b, t] = pair_logit(UGH[r], U1[r], QG[it], I1[it], a, dense_w, n_out, s_off,
                                   w_off, b_off, h_off, o_bias)


# --- fold-in of new users ------------------------------------------------------
@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def fold_in_users(
    x_indptr, x_indices, n_passes, k_neg, lr, reg, key, step0, ug, um, ig, im, net, n_act,
    n_items, d,
):
    """Train row ``r`` of the new-user tables ``ug, um`` on history row ``r``.

    The item tables, the MLP and the dense parameters stay fixed. Each pass
    visits every history item as a positive followed by ``k_neg`` uniform
    negatives outside the history, with one Adam step (per-row count,
    continuing from ``step0``) on the row's active coordinates after each
    instance. Random draws are keyed by the row's items, not its position,
    so a row's result does not depend on the other rows.
    """
    k1 = k_neg + 1
    for r_ in prange(x_indptr.shape[0] - 1):
        r = np.int64(r_)  # a plain signed index, as the tables' row ids
        h0 = x_indptr[r]
        nh = x_indptr[r + 1] - h0
        if nh == 0 or nh >= n_items:
            continue
        rkey = key
        for p in range(h0, h0 + nh):
            rkey = splitmix64(rkey ^ np.uint64(x_indices[p]))
        act = np.zeros(n_act, np.float32)
        dact = np.zeros(n_act, np.float32)
        pg = np.zeros(d, np.float32)
        qg = np.zeros(d, np.float32)
        eg = np.zeros(4 * d, np.float32)
        step = step0
        for it in range(n_passes):
            for t in range(nh * k1):
                if t % k1 == 0:
                    i = np.int64(x_indices[h0 + t // k1])
                    y = 1.0
                else:
                    i = sample_negative(rkey, it * nh * k1 + t, r, n_items, x_indptr, x_indices)
                    if i < 0:
                        continue
                    y = 0.0
                emb = (ug, ig, um, im)
                x = forward(r, i, d, act, pg, qg, emb, net)
                _, slope = _bce(x, y)
                backward(np.float32(slope), r, i, d, act, dact, pg, qg, eg, emb, net,
                         act[:0], act[:0], False, False, act[:0], net.w_row0[:0])
                step += 1
                lr1 = np.float32(lr / (1.0 - BETA1 ** step))
                bc2_sqrt = np.float32(math.sqrt(1.0 - BETA2 ** step))
                for p in range(ug[0][r], ug[0][r + 1]):
                    _adam(ug[2], p, eg[ug[1][p]] + reg * ug[2][p, 0], lr1, bc2_sqrt)
                for p in range(um[0][r], um[0][r + 1]):
                    _adam(um[2], p, eg[2 * d + um[1][p]] + reg * um[2][p, 0], lr1, bc2_sqrt)
