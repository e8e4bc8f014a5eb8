"""CUDA engines of DSL-MF's softmax-family losses (``loss="softmax"`` and ``loss="ccl"``).

The epochs run on the GPU (:mod:`sparse_rec._kernels.cuda.softmax`: the
CPU's user-batch block functions compiled as device functions, one GPU
thread per contiguous run of batches). The interactions, both tables
(weight and Adagrad slots) and the work rows stay on the device between
epochs. The prune threshold (smallest ``|w|``) is found on the device for
both losses; the softmax loss's growth scores are computed and selected
there too (the CPU's per-row code, one thread a row). CCL's growth scores
(exact, from dense blocks of cosines) are computed on the host by the CPU
engine's code, from the tables ``download`` brings back before every
prune/grow step (which the loop downloads for anyway: the rebuild runs on
the host); the rebuilt tables go out again in ``rebuild``.
"""

import numpy as np

from . import cpu_softmax as C
from . import cuda as _backend

# The simulator runs every GPU thread as a Python thread: a small grid.
_SIM_GRID = (1, 4)
# Device bytes the epoch's work rows may take (each thread holds two
# ``d x n_negatives`` float32 blocks): the thread count is capped by it.
_WORK_BYTES = 4 << 30


def _threads(n_batches, n_blocks, threads_per_block, d, n_neg, n_extra, n_index):
    """``(threads, threads_per_block)`` of an epoch: at most one thread per batch and the budget."""
    from numba import cuda

    if n_blocks is None and _backend._simulated():
        n_blocks, threads_per_block = _SIM_GRID
    elif n_blocks is None:
        n_blocks = int(getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1))
    from .._kernels.cuda.softmax import Work

    per_thread = Work.nbytes(1, d, n_neg, n_extra, n_index)
    T = min(int(n_blocks) * int(threads_per_block), max(1, n_batches),
            max(1, _WORK_BYTES // per_thread))
    return int(T), int(threads_per_block)


class _DeviceTables:
    """Shared device side of both engines: interactions, tables, work rows, up- and download."""

    def _start(self, n_blocks, threads_per_block, n_extra, n_index=0):
        from numba import cuda

        from .._kernels.cuda import softmax as _k

        self._cuda, self._kd = cuda, _k
        dt, d = self.data, self.users.n_cols
        n_batches = (self.users.n_rows + self.user_batch - 1) // self.user_batch
        T, self.threads_per_block = _threads(n_batches, n_blocks, threads_per_block, d,
                                             self.n_neg, n_extra, n_index)
        to = cuda.to_device
        self.work_d = _k.Work(T, d, self.n_neg, n_extra, n_index)
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

    @property
    def _grid(self):
        return self._kd._grid(self.n_threads, self.threads_per_block)

    def prune_scores(self):
        """``|w|`` of the device tables: the prune threshold is found on the GPU."""
        from .._kernels.cuda.prune_grow import DevicePrune

        return [DevicePrune(v, self._grid) for _, _, v in self.tabs_d]

    def _score_buffer(self, n_rows):
        G = getattr(self, "_G", None)
        if G is None or G.shape[0] < n_rows:
            self._G = self._cuda.device_array((n_rows, self.users.n_cols), np.float32)
        return self._G[:n_rows]

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
    within ``_WORK_BYTES`` of work rows. Growth scores (the CPU engine's)
    are computed and selected on the device, and so is the prune threshold
    (smallest ``|w|``).
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
        to = self._cuda.to_device
        self.logq_d = to(self.logq)
        dt = self.data
        self.xt_d = tuple(to(x) for x in (dt.xt_indptr, dt.xt_indices, dt.xt_weight))

    def grow_fns(self, key):
        """The CPU engine's growth scores, computed and selected on the GPU (one thread a row).

        The step's shared negatives, their gathered rows and the items'
        user sample are drawn on the host (:meth:`cpu_softmax.SoftmaxEngine._draws`,
        from the tables downloaded for the update) and sent out; the users'
        log-partitions and both tables' scores are computed on the device.
        With ``normalise`` (scores over the rows' Adagrad state) the CPU
        engine's host scores are used.
        """
        if self.normalise:
            return C.SoftmaxEngine.grow_fns(self, key)
        from .._kernels.cuda.prune_grow import DeviceScores

        k, cuda, grid = self._kd, self._cuda, self._grid
        dt = self.data_d
        s_d, pu_d = self.work_d.rows[3], self.work_d.rows[4]
        (u_p, u_i, u_v), (i_p, i_i, i_v) = self.tabs_d
        xt = self.xt_d
        cache = {}

        def prepare():
            if not cache:
                to = cuda.to_device
                d = self._draws(key)
                cache.update(neg=to(d["neg"]), QT=to(d["QT"]), sample=to(d["sample"]),
                             scale=float(d["scale"]),
                             LN=cuda.device_array(self.users.n_rows, np.float64),
                             A=cuda.device_array(self.users.n_rows, np.float64))
                k.partition_kernel[grid](cache["LN"], cache["A"], s_d, pu_d, cache["QT"],
                                         cache["neg"], np.int64(self.n_neg), *dt, u_p, u_i, u_v,
                                         i_p, i_i, i_v, self.logq_d, np.float64(self.inv_t))
            return cache

        def users(r0, r1, G_d):
            c = prepare()
            k.grad_users_kernel[grid](np.int64(r0), np.int64(r1), G_d, c["LN"], s_d, pu_d,
                                      c["QT"], c["neg"], np.int64(self.n_neg), *dt, u_p, u_i,
                                      u_v, i_p, i_i, i_v, self.logq_d, np.float64(self.inv_t))

        def items(r0, r1, G_d):
            c = prepare()
            k.grad_items_kernel[grid](np.int64(r0), np.int64(r1), G_d, c["LN"], c["A"],
                                      c["sample"], np.float64(c["scale"]), pu_d, *xt, u_p, u_i,
                                      u_v, i_p, i_i, i_v, np.float64(self.inv_t))

        held = [None]
        return [DeviceScores(users, u_p, u_i, self._score_buffer, held, grid),
                DeviceScores(items, i_p, i_i, self._score_buffer, held, grid)]

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
    (the expected gradient, its negative part sampled) come from the host
    tables (:meth:`cpu_softmax.CCLEngine.grow_fns`); the prune
    threshold (smallest ``|w|``) is found on the device.
    """

    def __init__(self, data, users, items, bias_v, *, n_blocks=None, threads_per_block=32,
                 **kw):
        if not _backend.is_available():
            raise _backend._no_gpu_error()
        super().__init__(data, users, items, bias_v, **kw)
        self._start(n_blocks, threads_per_block, 2, 1)
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
