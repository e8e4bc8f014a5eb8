"""CUDA twin of the NeuMF epoch (numba-cuda): mini-batches per thread block.

The per-instance math (the instance order, negative sampling, forward,
backward, the loss, Adam and the lazy row step) is the CPU kernels' own
Python source (:mod:`sparse_rec._kernels._ncf`) compiled again as CUDA
device functions. What is GPU-specific is the split of a mini-batch:

* Block ``b`` trains batches ``b, b + B, ...`` (``B`` blocks): Hogwild
  between blocks at the granularity of a mini-batch, as the CPU's threads.
* Inside a block, each thread runs the forward and backward passes of the
  batch's instances ``tid, tid + T, ...``. Embedding gradients go to the
  block's per-instance rows (as on the CPU); MLP and dense gradients to the
  thread's own buffers, which the block sums (in thread order) when it
  steps them, each thread stepping a share of the weights.
* Lazy Adam needs the batch grouped by row. The block sorts it by
  *ranking*: each instance's position is the number of instances with a
  smaller row, or the same row and a smaller index, which is the CPU's
  stable sort (``argsort(kind="mergesort")``) without a sort kernel; a
  batch is a few hundred instances, so the quadratic count is a small part
  of the forward and backward work. The first instance of each run of equal
  rows steps that row with :func:`~sparse_rec._kernels._ncf.step_row_group`,
  summing the row's gradients in instance order. No two threads step one
  row, no atomics touch a weight, and with one block an epoch is the serial
  CPU epoch up to the order of float32 sums.

Growth gradients of the embedding tables (``grad_embedding_rows_kernel``)
run one GPU thread per row through the CPU kernel's per-row function
(:func:`~sparse_rec._kernels._ncf.embedding_row_grad`).

Importing this module requires numba-cuda (``pip install sparse-rec[cuda]``);
with ``NUMBA_ENABLE_CUDASIM=1`` it runs in Numba's CUDA simulator.
"""

import math

import numpy as np
from numba import cuda

from .. import _bpr, _ncf, _rng
from ._device import device_versions

_HELPERS = (
    (_rng, "splitmix64"),
    (_rng, "draw"),
    (_rng, "randint"),
    (_bpr, "in_row"),
    (_bpr, "sample_negative"),
    (_ncf, "permute"),
    (_ncf, "instance"),
    (_ncf, "_bce"),
    (_ncf, "_row_scatter"),
    (_ncf, "_row_gather"),
    (_ncf, "forward"),
    (_ncf, "backward"),
    (_ncf, "_adam"),
    (_ncf, "step_row_group"),
    (_ncf, "embedding_row_grad"),
)
_D = device_versions(_HELPERS)
_permute = _D["permute"]
_instance = _D["instance"]
_bce = _D["_bce"]
_forward = _D["forward"]
_backward = _D["backward"]
_adam = _D["_adam"]
_step_row_group = _D["step_row_group"]
_embedding_row_grad = _D["embedding_row_grad"]
Interactions = _ncf.Interactions
Net = _ncf.Net
BETA1 = _ncf.BETA1
BETA2 = _ncf.BETA2


@cuda.jit
def ncf_epoch_kernel(
    n_inst, k1, batch, key, half_bits, step0, lr, reg, n_items, d,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    ug_p, ug_i, ug_v, ig_p, ig_i, ig_v, um_p, um_i, um_v, im_p, im_i, im_v,
    m_indptr, m_indices, m_w, m_v, dense_v, n_in, n_out, w_row0, b_off, a_off, h_off, o_off,
    w_range,
    act, dact, pg, qg, acc, gm, gd, sg, su, si, order_u, order_i, losses,
):
    """One epoch; per-thread buffers have one row per grid thread, per-block ones per block."""
    blk = cuda.blockIdx.x
    n_blocks = cuda.gridDim.x
    th = cuda.threadIdx.x
    T = cuda.blockDim.x
    tid = blk * T + th
    ug = (ug_p, ug_i, ug_v)
    ig = (ig_p, ig_i, ig_v)
    um = (um_p, um_i, um_v)
    im = (im_p, im_i, im_v)
    emb = (ug, ig, um, im)
    net = Net(m_indptr, m_indices, m_w, dense_v, n_in, n_out, w_row0, b_off, a_off, h_off, o_off)
    t_act, t_dact, t_pg, t_qg, t_acc = act[tid], dact[tid], pg[tid], qg[tid], acc[tid]
    t_gm, t_gd = gm[tid], gd[tid]
    b_sg, b_su, b_si, b_ou, b_oi = sg[blk], su[blk], si[blk], order_u[blk], order_i[blk]
    g0 = blk * T  # this block's first row of the per-thread buffers
    n_m = m_v.shape[0]
    n_dense = dense_v.shape[0]
    n_batches = (n_inst + batch - 1) // batch
    loss = 0.0
    for b in range(blk, n_batches, n_blocks):
        b0 = b * batch
        b1 = min(n_inst, b0 + batch)
        nb = b1 - b0
        # Forward and backward passes, instances split over the threads.
        for s in range(b0 + th, b1, T):
            t = _permute(key, s, n_inst, half_bits)
            u, i, y, c_w = _instance(t, k1, key, x_indices, x_weight, x_rows, f_indptr,
                                     f_indices, n_items)
            b_su[s - b0] = u
            b_si[s - b0] = i
            if i >= 0:
                x = _forward(u, i, d, t_act, t_pg, t_qg, emb, net)
                sample_loss, slope = _bce(x, y)
                loss += c_w * sample_loss
                _backward(np.float32(c_w * slope), u, i, d, t_act, t_dact, t_pg, t_qg,
                          b_sg[s - b0], emb, net, t_gm, t_gd, True, False, t_act[:0],
                          w_row0[:0])
        cuda.syncthreads()
        # Stable order of the batch by user and by item (ranks).
        for s in range(th, nb, T):
            ru = 0
            ri = 0
            us = b_su[s]
            it = b_si[s]
            for q in range(nb):
                uq = b_su[q]
                iq = b_si[q]
                if uq < us or (uq == us and q < s):
                    ru += 1
                if iq < it or (iq == it and q < s):
                    ri += 1
            b_ou[ru] = s
            b_oi[ri] = s
        cuda.syncthreads()
        step = step0 + b + 1
        lr1 = np.float32(lr / (1.0 - BETA1 ** step))
        bc2_sqrt = np.float32(math.sqrt(1.0 - BETA2 ** step))
        inv_b = np.float32(1.0 / nb)
        # Lazy Adam: the first instance of each row's run steps the row.
        for g in range(th, nb, T):
            if g == 0 or b_su[b_ou[g]] != b_su[b_ou[g - 1]]:
                _step_row_group(ug, 0, b_su, b_si, b_sg, b_ou, g, nb, t_acc, inv_b, lr1,
                                bc2_sqrt, reg)
                _step_row_group(um, 2 * d, b_su, b_si, b_sg, b_ou, g, nb, t_acc, inv_b, lr1,
                                bc2_sqrt, reg)
            if g == 0 or b_si[b_oi[g]] != b_si[b_oi[g - 1]]:
                _step_row_group(ig, d, b_si, b_si, b_sg, b_oi, g, nb, t_acc, inv_b, lr1,
                                bc2_sqrt, reg)
                _step_row_group(im, 3 * d, b_si, b_si, b_sg, b_oi, g, nb, t_acc, inv_b, lr1,
                                bc2_sqrt, reg)
        # Plain Adam on the MLP and dense parameters, gradients summed over the threads.
        for p in range(th, n_m, T):
            gsum = np.float32(0.0)
            for j in range(T):
                gsum += gm[g0 + j, p]
                gm[g0 + j, p] = 0.0
            m_w[p] = _adam(m_v, p, gsum * inv_b + reg * m_v[p, 0], lr1, bc2_sqrt)
        for p in range(th, n_dense, T):
            gsum = np.float32(0.0)
            for j in range(T):
                gsum += gd[g0 + j, p]
                gd[g0 + j, p] = 0.0
            # L2 on the fusion weights, never on biases (as on the CPU).
            r = reg if p >= w_range[0] and p < w_range[1] else np.float32(0.0)
            _adam(dense_v, p, gsum * inv_b + r * dense_v[p, 0], lr1, bc2_sqrt)
        cuda.syncthreads()
    losses[tid] = loss


def launch_epoch(a, n_inst, k1, batch, key, half_bits, step0, lr, reg, n_items, d, h_off,
                 o_off, n_blocks, n_threads_per_block):
    """Run one epoch on the device arrays ``a`` (see ``backends.cuda.NCFEngine``)."""
    ncf_epoch_kernel[n_blocks, n_threads_per_block](
        np.int64(n_inst), np.int64(k1), np.int64(batch), np.uint64(key), np.int64(half_bits),
        np.int64(step0), np.float64(lr), np.float32(reg), np.int64(n_items), np.int64(d),
        a["x_indices"], a["x_weight"], a["x_rows"], a["f_indptr"], a["f_indices"],
        *a["emb"], a["m_indptr"], a["m_indices"], a["m_w"], a["m_v"], a["dense_v"],
        a["n_in"], a["n_out"], a["w_row0"], a["b_off"], a["a_off"], np.int64(h_off),
        np.int64(o_off), a["w_range"],
        a["act"], a["dact"], a["pg"], a["qg"], a["acc"], a["gm"], a["gd"], a["sg"], a["su"],
        a["si"], a["order_u"], a["order_i"], a["losses"],
    )
    return float(a["losses"].copy_to_host().sum())


@cuda.jit
def grad_embedding_rows_kernel(
    which, r0, r1, G, m, key, k_neg, neg_per_item, n_items, d,
    x_indptr, x_indices, x_weight, x_rows, xt_indptr, xt_indices, xt_weight, f_indptr,
    f_indices,
    ug_p, ug_i, ug_v, ig_p, ig_i, ig_v, um_p, um_i, um_v, im_p, im_i, im_v,
    m_indptr, m_indices, m_w, dense_v, n_in, n_out, w_row0, b_off, a_off, h_off, o_off,
    act, dact, pg, qg, eg,
):
    """``G[r - r0]`` = dense gradient of row ``r`` of table ``which``, one thread per row."""
    tid = cuda.grid(1)
    if tid >= act.shape[0]:
        return
    data = Interactions(x_indptr, x_indices, x_weight, x_rows, xt_indptr, xt_indices, xt_weight,
                        f_indptr, f_indices)
    emb = ((ug_p, ug_i, ug_v), (ig_p, ig_i, ig_v), (um_p, um_i, um_v), (im_p, im_i, im_v))
    net = Net(m_indptr, m_indices, m_w, dense_v, n_in, n_out, w_row0, b_off, a_off, h_off, o_off)
    for r in range(r0 + tid, r1, cuda.gridsize(1)):
        _embedding_row_grad(which, r, G[r - r0], m, key, k_neg, neg_per_item, data, n_items, d,
                            emb, net, act[tid], dact[tid], pg[tid], qg[tid], eg[tid])


def launch_grad_embedding_rows(a, which, r0, r1, G, m, key, k_neg, neg_per_item, n_items, d,
                               h_off, o_off, n_blocks, n_threads_per_block):
    """Fill the device array ``G`` (rows ``r0:r1`` of table ``which``) with growth gradients."""
    grad_embedding_rows_kernel[n_blocks, n_threads_per_block](
        np.int64(which), np.int64(r0), np.int64(r1), G, np.int64(m), np.uint64(key),
        np.float64(k_neg), np.float64(neg_per_item), np.int64(n_items), np.int64(d),
        a["x_indptr"], a["x_indices"], a["x_weight"], a["x_rows"], a["xt_indptr"],
        a["xt_indices"], a["xt_weight"], a["f_indptr"], a["f_indices"], *a["emb"],
        a["m_indptr"], a["m_indices"], a["m_w"], a["dense_v"], a["n_in"], a["n_out"],
        a["w_row0"], a["b_off"], a["a_off"], np.int64(h_off), np.int64(o_off),
        a["act"], a["dact"], a["pg"], a["qg"], a["eg"],
    )


@cuda.jit
def divide_rows_kernel(G, r0, scale):
    """``G[r - r0, :] /= scale[r]``: growth scores over the row's curvature scale."""
    n_rows, n_cols = G.shape
    for e in range(cuda.grid(1), n_rows * n_cols, cuda.gridsize(1)):
        r = e // n_cols
        G[r, e - r * n_cols] /= scale[r0 + r]
