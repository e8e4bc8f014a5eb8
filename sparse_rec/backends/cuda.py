"""CUDA backend: keeps the training arrays on the GPU between epochs.

Prune and grow stay on the CPU: before each update the factor tables come
back to the host, and the rebuilt tables go out again after it.
"""

import numpy as np

from .._kernels import _bpr


def is_available():
    """True when numba-cuda is installed and sees a GPU (or the simulator)."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver counts as no GPU
        return False


def _simulated():
    import os

    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


class DeviceState:
    """Device copies of the interactions, tables, bias and work buffers."""

    def __init__(self, data, users, items, bias_v, n_blocks=None, threads_per_block=128):
        from numba import cuda

        from .._kernels import _bpr_cuda

        self._cuda = cuda
        self._kernels = _bpr_cuda
        if n_blocks is None and _simulated():
            # The simulator runs each GPU thread as a Python thread.
            n_blocks, threads_per_block = 1, 8
        elif n_blocks is None:
            sms = getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1)
            n_blocks = 8 * int(sms)
        self.n_blocks = int(n_blocks)
        self.threads_per_block = int(threads_per_block)
        n_threads = self.n_blocks * self.threads_per_block
        to = cuda.to_device
        self.arrays = {
            "x_indices": to(data.x_indices), "x_weight": to(data.x_weight),
            "x_rows": to(data.x_rows), "f_indptr": to(data.f_indptr),
            "f_indices": to(data.f_indices),
            "scratch": to(np.zeros((n_threads, 2, users.n_cols), np.float32)),
            "losses": to(np.zeros(n_threads, np.float64)),
        }
        self.upload(users, items, bias_v)

    def upload(self, users, items, bias_v):
        to = self._cuda.to_device
        a = self.arrays
        a["u_indptr"], a["u_indices"] = to(users.indptr), to(users.indices)
        a["u_v"] = to(np.ascontiguousarray(users.values_buf[: users.nnz]))
        a["i_indptr"], a["i_indices"] = to(items.indptr), to(items.indices)
        a["i_v"] = to(np.ascontiguousarray(items.values_buf[: items.nnz]))
        a["bias_v"] = to(bias_v)

    def download(self, users, items, bias_v):
        a = self.arrays
        a["u_v"].copy_to_host(users.values_buf[: users.nnz])
        a["i_v"].copy_to_host(items.values_buf[: items.nnz])
        a["bias_v"].copy_to_host(bias_v)

    def epoch(self, n_samples, key, lr, reg, optimizer):
        return self._kernels.launch_epoch(
            self.arrays, n_samples, key, lr, reg, optimizer, self.n_blocks,
            self.threads_per_block,
        )


SGD = _bpr.SGD
ADAGRAD = _bpr.ADAGRAD
