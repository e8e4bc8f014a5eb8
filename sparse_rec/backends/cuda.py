"""CUDA engines: keep the training arrays on the GPU between epochs.

Prune and grow stay on the CPU: before each update the factor tables come
back to the host, and the rebuilt tables go out again after it.
"""

import numpy as np

from . import cpu


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


class MFEngine(cpu.MFEngine):
    """DSL-MF's BPR epochs on the GPU; growth gradients stay on the CPU.

    The interactions, the tables, the bias and the work buffers live on the
    device between epochs; ``download`` brings the trained values into the
    host tables (which prune/grow reads and rebuilds) and ``upload`` (also
    the rebuild hook) sends the rebuilt tables out again.
    """

    def __init__(self, data, users, items, bias_v, *, learning_rate, alpha, optimizer,
                 n_blocks=None, threads_per_block=128):
        if not is_available():
            raise RuntimeError(
                "backend='cuda' needs numba-cuda and a CUDA GPU, and none was found. Install "
                "the extra (pip install 'sparse-rec[cuda]') on a machine with a GPU, or use "
                "backend='cpu'."
            )
        super().__init__(data, users, items, bias_v, learning_rate=learning_rate, alpha=alpha,
                         optimizer=optimizer)
        from numba import cuda

        from .._kernels.cuda import bpr as _bpr_cuda

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
        self.upload()

    def upload(self):
        to = self._cuda.to_device
        a, users, items = self.arrays, self.users, self.items
        a["u_indptr"], a["u_indices"] = to(users.indptr), to(users.indices)
        a["u_v"] = to(np.ascontiguousarray(users.values_buf[: users.nnz]))
        a["i_indptr"], a["i_indices"] = to(items.indptr), to(items.indices)
        a["i_v"] = to(np.ascontiguousarray(items.values_buf[: items.nnz]))
        a["bias_v"] = to(self.bias_v)

    def download(self):
        a, users, items = self.arrays, self.users, self.items
        a["u_v"].copy_to_host(users.values_buf[: users.nnz])
        a["i_v"].copy_to_host(items.values_buf[: items.nnz])
        a["bias_v"].copy_to_host(self.bias_v)

    def epoch(self, key):
        return self._kernels.launch_epoch(
            self.arrays, self.n_samples, key, self.learning_rate, self.alpha, self.optimizer,
            self.n_blocks, self.threads_per_block,
        )
