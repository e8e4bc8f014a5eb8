"""CUDA twin of the BPR epoch (numba-cuda), same arrays and same sampler.

The scalar helpers (RNG, negative sampling, the BPR step) are the very
Python functions the CPU kernels compile; here they are compiled again as
CUDA device functions, so both targets run one source. Each GPU thread
takes samples ``tid, tid + n_threads, ...`` (Hogwild, as on the CPU); with
one thread the samples run in order and the result matches the serial CPU
epoch up to floating-point contraction.

Importing this module requires numba-cuda (``pip install sparse-rec[cuda]``);
with ``NUMBA_ENABLE_CUDASIM=1`` it runs in Numba's CUDA simulator.
"""

import types

import numpy as np
from numba import cuda

from .. import _bpr, _rng

# Helpers in call order: each is rebuilt with globals that point at the
# device versions of the helpers before it.
_HELPERS = (
    (_rng, "splitmix64"),
    (_rng, "draw"),
    (_rng, "randint"),
    (_bpr, "in_row"),
    (_bpr, "sample_negative"),
    (_bpr, "log_sigmoid_grad"),
    (_bpr, "_apply"),
    (_bpr, "bpr_margin_diff"),
    (_bpr, "bpr_step"),
)


def _device_versions():
    device = {}
    for module, name in _HELPERS:
        py = getattr(module, name).py_func
        scope = dict(py.__globals__)
        scope.update(device)
        retargeted = types.FunctionType(py.__code__, scope, name, py.__defaults__, py.__closure__)
        device[name] = cuda.jit(device=True)(retargeted)
    return device


_D = _device_versions()
_randint = _D["randint"]
_draw = _D["draw"]
_sample_negative = _D["sample_negative"]
_bpr_step = _D["bpr_step"]


@cuda.jit
def bpr_epoch_kernel(
    n_samples, key,
    x_indices, x_weight, x_rows, f_indptr, f_indices,
    u_indptr, u_indices, u_v, i_indptr, i_indices, i_v,
    bias_v, lr, reg, optimizer, scratch, losses,
):
    """Grid-stride BPR epoch; ``scratch`` is (n_threads, 2, n_components) zeros."""
    tid = cuda.grid(1)
    stride = cuda.gridsize(1)
    if tid >= scratch.shape[0]:
        return
    pu = scratch[tid, 0]
    diff = scratch[tid, 1]
    n_items = bias_v.shape[0]
    nnz = x_indices.shape[0]
    acc = 0.0
    for s in range(tid, n_samples, stride):
        pos = _randint(_draw(key, s, 0), nnz)
        u = x_rows[pos]
        j = _sample_negative(key, s, u, n_items, f_indptr, f_indices)
        if j >= 0:
            acc += _bpr_step(pos, u, j, pu, diff, x_indices, x_weight, u_indptr, u_indices, u_v,
                             i_indptr, i_indices, i_v, bias_v, lr, reg, optimizer)
    losses[tid] = acc


def launch_epoch(arrays, n_samples, key, lr, reg, optimizer, n_blocks, n_threads_per_block):
    """Run one epoch on device arrays; returns the loss sum (a host float).

    ``arrays`` maps the kernel's array argument names to device arrays (see
    :class:`sparse_rec.backends.cuda.MFEngine`), including ``scratch``
    and ``losses`` sized for ``n_blocks * n_threads_per_block`` threads.
    """
    a = arrays
    bpr_epoch_kernel[n_blocks, n_threads_per_block](
        np.int64(n_samples), np.uint64(key),
        a["x_indices"], a["x_weight"], a["x_rows"], a["f_indptr"], a["f_indices"],
        a["u_indptr"], a["u_indices"], a["u_v"], a["i_indptr"], a["i_indices"], a["i_v"],
        a["bias_v"], np.float32(lr), np.float32(reg), np.int64(optimizer),
        a["scratch"], a["losses"],
    )
    return float(a["losses"].copy_to_host().sum())
