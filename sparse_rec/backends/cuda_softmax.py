"""CUDA engines of DSL-MF's softmax-family losses (``loss="softmax"`` and ``loss="ccl"``).

The epochs run on the GPU (:mod:`sparse_rec._kernels.cuda.softmax`: the
CPU's user-batch block functions compiled as device functions, one GPU
thread per contiguous run of batches). The interactions, both tables
(weight and Adagrad slots) and the work rows stay on the device between
epochs. Growth scores and the prune threshold are computed on the host,
by the CPU engines' own code, from the tables ``download`` brings back
before every prune/grow step (which the loop downloads for anyway); the
rebuilt tables go out again in ``rebuild``. Moving growth to the device
(as the BPR and iALS engines do) is still owed.
"""

import numpy as np

from . import cpu_softmax as C
from . import cuda as _backend

# The simulator runs every GPU thread as a Python thread: a small grid.
_SIM_GRID = (1, 4)
# Device bytes the epoch's work rows may take (each thread holds two
# ``d x n_negatives`` float32 blocks): the thread count is capped by it.
_WORK_BYTES = 4 << 30


def _threads(n_batches, n_blocks, threads_per_block, d, n_neg, n_extra):
    """``(threads, threads_per_block)`` of an epoch: at most one thread per batch and the budget."""
    from numba import cuda

    if n_blocks is None and _backend._simulated():
        n_blocks, threads_per_block = _SIM_GRID
    elif n_blocks is None:
        n_blocks = int(getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1))
    from .._kernels.cuda.softmax import Work

    per_thread = Work.nbytes(1, d, n_neg, n_extra)
    T = min(int(n_blocks) * int(threads_per_block), max(1, n_batches),
            max(1, _WORK_BYTES // per_thread))
    return int(T), int(threads_per_block)


class _DeviceTables:
    """Shared device side of both engines: interactions, tables, work rows, up- and download."""

    def _start(self, n_blocks, threads_per_block, n_extra):
        from numba import cuda

        from .._kernels.cuda import softmax as _k

        self._cuda, self._kd = cuda, _k
        dt, d = self.data, self.users.n_cols
        n_batches = (self.users.n_rows + self.user_batch - 1) // self.user_batch
        T, self.threads_per_block = _threads(n_batches, n_blocks, threads_per_block, d,
                                             self.n_neg, n_extra)
        to = cuda.to_device
        self.work_d = _k.Work(T, d, self.n_neg, n_extra)
        self.data_d = tuple(to(x) for x in (dt.x_indptr, dt.x_indices, dt.x_weight,
                                            dt.f_indptr, dt.f_indices))
        self.cdf_d = to(self.cdf)
        self.upload()

    @property
    def n_threads(self):
        """GPU threads of an epoch (each trains a contiguous run of batches)."""
        return self.work_d.n_threads

    def upload(self):
        to = self._cuda.to_device
        self.tabs_d = [(to(t.indptr), to(t.indices),
                        to(np.ascontiguousarray(t.values_buf[: t.nnz])))
                       for t in (self.users, self.items)]

    def download(self):
        for t, (_, _, v) in zip((self.users, self.items), self.tabs_d, strict=True):
            v.copy_to_host(t.values_buf[: t.nnz])

    def _order(self, key):
        # The CPU engines' order of the users, sent to the device.
        order = np.random.default_rng(int(key)).permutation(self.users.n_rows).astype(np.int64)
        return self._cuda.to_device(order)


class SoftmaxEngine(_DeviceTables, C.SoftmaxEngine):
    """Sampled-softmax epochs of DSL-MF on the GPU (the CPU engine's user batches).

    GPU thread ``t`` of ``n_threads`` trains the run of batches that CPU
    work row ``t`` of as many trains: with one thread an epoch is the
    serial CPU epoch up to floating-point contraction. By default one warp
    of threads per streaming multiprocessor, at most one per batch and
    within ``_WORK_BYTES`` of work rows. Growth scores come from the host
    tables (:meth:`cpu_softmax.SoftmaxEngine.grow_fns`).
    """

    def __init__(self, data, users, items, bias_v, *, n_blocks=None, threads_per_block=32,
                 **kw):
        if not _backend.is_available():
            raise _backend._no_gpu_error()
        super().__init__(data, users, items, bias_v, **kw)
        if not self.per_user:
            raise ValueError("per_user=False (batches of positives) has no CUDA kernel; use "
                             "per_user=True (the default) on backend='cuda'.")
        self._start(n_blocks, threads_per_block, 0)
        self.logq_d = self._cuda.to_device(self.logq)

    def epoch(self, key):
        return self._kd.launch_softmax_users(
            self._order(key), self.user_batch, self.n_neg, key, self.work_d, self.data_d,
            *self.tabs_d, self.cdf_d, self.logq_d, self.inv_t, self.lr, self.reg,
            self.threads_per_block)

    def rebuild(self):
        C.SoftmaxEngine.rebuild(self)
        self.upload()


class CCLEngine(_DeviceTables, C.CCLEngine):
    """Cosine contrastive epochs of DSL-MF on the GPU (the CPU engine's user batches).

    Threads as :class:`SoftmaxEngine`; after each epoch every row is scaled
    to its target norm on the device (one thread per row). Growth scores
    (the exact expected gradient, dense blocks of cosines) come from the
    host tables (:meth:`cpu_softmax.CCLEngine.grow_fns`).
    """

    def __init__(self, data, users, items, bias_v, *, n_blocks=None, threads_per_block=32,
                 **kw):
        if not _backend.is_available():
            raise _backend._no_gpu_error()
        super().__init__(data, users, items, bias_v, **kw)
        self._start(n_blocks, threads_per_block, 2)
        to = self._cuda.to_device
        self.zero_d = to(self.zero)
        self.norms_d = tuple(to(np.ascontiguousarray(n, np.float64)) for n in self.target_norms)

    def epoch(self, key):
        self._grow = None
        loss = self._kd.launch_ccl_users(
            self._order(key), self.user_batch, self.n_neg, key, self.work_d, self.data_d,
            *self.tabs_d, self.cdf_d, self.zero_d, self.margin, self.neg_weight, self.lr,
            self.reg, self.threads_per_block)
        for (ptr, _, v), norms in zip(self.tabs_d, self.norms_d, strict=True):
            self._kd.launch_normalise(ptr, v, norms, *_row_grid(ptr.shape[0] - 1))
        return loss

    def rebuild(self):
        C.CCLEngine.rebuild(self)
        self.upload()


def _row_grid(n_rows):
    """One thread per row (the simulator: a few threads striding over the rows)."""
    if _backend._simulated():
        return 1, 4
    tpb = 128
    return max(1, (n_rows + tpb - 1) // tpb), tpb
