"""CUDA engines: keep the training arrays on the GPU between epochs.

Growth scores (DSL-MF's tables, DSLNCF's embeddings) are computed and
selected on the GPU: the growth callbacks are
:class:`~sparse_rec._kernels.cuda.prune_grow.DeviceScores`, from which
:class:`~sparse_rec._dsl.PruneGrow` takes bin counts and the kept
coordinates only. The prune threshold is found on the GPU too (the
engines' ``prune_scores`` are
:class:`~sparse_rec._kernels.cuda.prune_grow.DevicePrune`: bin counts, one
bin's values and a keep mask come back, not the scores). The rebuild runs
on the CPU, so before each update the tables come back to the host and
the rebuilt tables go out again after it.
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


def _no_gpu_error():
    return RuntimeError(
        "backend='cuda' needs numba-cuda and a CUDA GPU, and none was found. Install "
        "the extra (pip install 'sparse-rec[cuda]') on a machine with a GPU, or use "
        "backend='cpu'."
    )


# The simulator runs each GPU thread as a Python thread: a small grid.
_SIM_MF_GRID = (1, 8)


def _grid(n_blocks, threads_per_block):
    """``(n_blocks, threads_per_block)``: the simulator's small grid, or a few blocks per SM."""
    from numba import cuda

    if n_blocks is None and _simulated():
        return _SIM_MF_GRID
    if n_blocks is None:
        sms = getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1)
        n_blocks = 8 * int(sms)
    return int(n_blocks), int(threads_per_block)


class MFEngine(cpu.MFEngine):
    """DSL-MF's BPR epochs and growth gradients on the GPU.

    The interactions, the tables, the bias and the work buffers live on the
    device between epochs; ``download`` brings the trained values into the
    host tables (which prune/grow reads and rebuilds) and ``upload`` (also
    the rebuild hook) sends the rebuilt tables out again. ``grow_fns``
    returns scorers that run the growth-gradient kernels on the device
    tables and select the scores there.
    """

    def __init__(self, data, users, items, bias_v, *, learning_rate, alpha, optimizer,
                 n_blocks=None, threads_per_block=128):
        if not is_available():
            raise _no_gpu_error()
        super().__init__(data, users, items, bias_v, learning_rate=learning_rate, alpha=alpha,
                         optimizer=optimizer)
        from numba import cuda

        from .._kernels.cuda import bpr as _bpr_cuda

        self._cuda = cuda
        self._kernels = _bpr_cuda
        self.n_blocks, self.threads_per_block = _grid(n_blocks, threads_per_block)
        n_threads = self.n_blocks * self.threads_per_block
        to = cuda.to_device
        self.arrays = {
            "x_indices": to(data.x_indices), "x_weight": to(data.x_weight),
            "x_rows": to(data.x_rows), "f_indptr": to(data.f_indptr),
            "f_indices": to(data.f_indices), "x_indptr": to(data.x_indptr),
            "xt_indptr": to(data.xt_indptr), "xt_indices": to(data.xt_indices),
            "xt_weight": to(data.xt_weight),
            "scratch": to(np.zeros((n_threads, 2, users.n_cols), np.float32)),
            "losses": to(np.zeros(n_threads, np.float64)),
        }
        self._G = None  # device score buffer, sized on the first growth chunk
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

    def _score_buffer(self, n_rows):
        if self._G is None or self._G.shape[0] < n_rows:
            self._G = self._cuda.device_array((n_rows, self.users.n_cols), np.float32)
        return self._G[:n_rows]

    def grow_fns(self, key):
        """Growth scores computed and selected on the GPU (the gradients of :class:`cpu.MFEngine`).

        Each callback is a :class:`~sparse_rec._kernels.cuda.prune_grow.DeviceScores`:
        PruneGrow gets bin counts and the kept coordinates from it, never the
        dense scores.
        """
        from .._kernels.cuda.prune_grow import DeviceScores

        k, a, grid = self._kernels, self.arrays, (self.n_blocks, self.threads_per_block)
        neg_per_item = self.data.nnz / max(self.items.n_rows, 1)

        def users(r0, r1, G_d):
            k.launch_grad_users(a, r0, r1, G_d, cpu._GROW_SAMPLES_USER, key, *grid)

        def items(r0, r1, G_d):
            k.launch_grad_items(a, r0, r1, G_d, cpu._GROW_SAMPLES_ITEM,
                                cpu._GROW_SAMPLES_ITEM_NEG, key, neg_per_item, *grid)

        held = [None]
        return [DeviceScores(users, a["u_indptr"], a["u_indices"], self._score_buffer, held, grid),
                DeviceScores(items, a["i_indptr"], a["i_indices"], self._score_buffer, held, grid)]

    def prune_scores(self):
        """``|w|`` of the device tables: the prune threshold is found on the GPU."""
        from .._kernels.cuda.prune_grow import DevicePrune

        grid = (self.n_blocks, self.threads_per_block)
        return [DevicePrune(self.arrays["u_v"], grid), DevicePrune(self.arrays["i_v"], grid)]


# The simulator runs every GPU thread as a Python thread: a small grid, two
# blocks so that blocks still train batches side by side.
_SIM_NCF_GRID = (2, 4)


class NCFEngine(cpu.NCFEngine):
    """NeuMF epochs on the GPU, one thread block per mini-batch.

    The interactions, the four embedding tables, the packed MLP weights,
    the dense parameters (all with their Adam state) and the work buffers
    live on the device between epochs (see :mod:`sparse_rec._kernels.cuda.ncf`
    for how a block trains a batch and groups it by row). ``download``
    brings the trained values into the host tables, the packed MLP arrays
    and back into the layer tables. The embedding tables' growth scores are
    computed and selected on the GPU (one thread per row); the MLP layers'
    dense gradients, one pass over a few thousand instances, on the CPU
    (:meth:`cpu.NCFEngine.grow_fns`). ``rebuild`` repacks the MLP and
    uploads after prune/grow. ``n_blocks`` blocks train batches
    concurrently (Hogwild between blocks); by default one per streaming
    multiprocessor, which keeps the batches in flight (and so the staleness
    of the shared weights) near what a many-core CPU has, rather than
    filling the GPU with blocks.
    """

    def __init__(self, data, embeddings, net, *, learning_rate, alpha, n_negatives, batch_size,
                 grow_scores="raw", n_blocks=None, threads_per_block=64):
        if not is_available():
            raise _no_gpu_error()
        super().__init__(data, embeddings, net, learning_rate=learning_rate, alpha=alpha,
                         n_negatives=n_negatives, batch_size=batch_size,
                         grow_scores=grow_scores)
        from numba import cuda

        from .._kernels.cuda import ncf as _ncf_cuda

        self._cuda = cuda
        self._kernels = _ncf_cuda
        if n_blocks is None and not _simulated():
            n_blocks = int(getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1))
        elif n_blocks is None:
            n_blocks, threads_per_block = _SIM_NCF_GRID
        n_batches = (self.n_samples + self.batch - 1) // self.batch
        self.n_blocks = int(max(1, min(n_blocks, n_batches)))
        self.threads_per_block = int(threads_per_block)
        T, B, d, batch = self.n_blocks * self.threads_per_block, self.n_blocks, net.d, self.batch
        to = cuda.to_device
        self.arrays = {
            "x_indices": to(data.x_indices), "x_weight": to(data.x_weight),
            "x_rows": to(data.x_rows), "f_indptr": to(data.f_indptr),
            "f_indices": to(data.f_indices), "x_indptr": to(data.x_indptr),
            "xt_indptr": to(data.xt_indptr), "xt_indices": to(data.xt_indices),
            "xt_weight": to(data.xt_weight),
            "n_in": to(net.n_in), "n_out": to(net.n_out), "w_row0": to(net.w_row0),
            "b_off": to(net.b_off), "a_off": to(net.a_off), "w_range": to(net.w_range),
            "act": to(np.zeros((T, net.n_act), np.float32)),
            "dact": to(np.zeros((T, net.n_act), np.float32)),
            "pg": to(np.zeros((T, d), np.float32)), "qg": to(np.zeros((T, d), np.float32)),
            "acc": to(np.zeros((T, d), np.float32)),
            "eg": to(np.zeros((T, 4 * d), np.float32)),
            "gd": to(np.zeros((T, net.dense_v.shape[0]), np.float32)),
            "sg": to(np.zeros((B, batch, 4 * d), np.float32)),
            "su": to(np.zeros((B, batch), np.int64)), "si": to(np.zeros((B, batch), np.int64)),
            "order_u": to(np.zeros((B, batch), np.int64)),
            "order_i": to(np.zeros((B, batch), np.int64)),
            "losses": to(np.zeros(T, np.float64)),
        }
        self._G = None  # device score buffer, sized on the first growth chunk
        # Per-row curvature scales of the embedding tables (grow_scores="frequency").
        self._row_scales_d = [to(s) for s in self.row_scales[:4]]
        self.upload()

    def upload(self):
        to, a, net = self._cuda.to_device, self.arrays, self.net
        net.pack()
        a["emb"] = tuple(to(np.ascontiguousarray(x)) for t in self.embeddings
                         for x in (t.indptr, t.indices, t.values_buf[: t.nnz]))
        a["m_indptr"], a["m_indices"] = to(net.m_indptr), to(net.m_indices)
        a["m_v"], a["m_w"], a["dense_v"] = to(net.m_v), to(net.m_w), to(net.dense_v)
        T = self.n_blocks * self.threads_per_block
        if "gm" not in a or a["gm"].shape[1] != net.m_v.shape[0]:
            # The MLP gradient buffers follow the packed weights (their count moves).
            a["gm"] = to(np.zeros((T, net.m_v.shape[0]), np.float32))

    def download(self):
        a, net = self.arrays, self.net
        for t, v in zip(self.embeddings, a["emb"][2::3], strict=True):
            v.copy_to_host(t.values_buf[: t.nnz])
        a["m_v"].copy_to_host(net.m_v)
        a["dense_v"].copy_to_host(net.dense_v)
        net.m_w[:] = net.m_v[:, 0]
        net.unpack()

    def rebuild(self):
        self.upload()

    def epoch(self, key):
        net = self.net
        loss = self._kernels.launch_epoch(
            self.arrays, self.n_samples, self.k1, self.batch, key, self.half_bits,
            self.adam_step, float(self.learning_rate), self.alpha, self.embeddings[1].n_rows,
            net.d, net.h_off, net.o_off, self.n_blocks, self.threads_per_block,
        )
        self.adam_step += (self.n_samples + self.batch - 1) // self.batch
        return loss

    def _score_buffer(self, n_rows):
        if self._G is None or self._G.shape[0] < n_rows:
            self._G = self._cuda.device_array((n_rows, self.net.d), np.float32)
        return self._G[:n_rows]

    def grow_fns(self, key):
        """Growth scores: the embeddings' computed and selected on the GPU, the MLP's on the CPU."""
        from .._kernels.cuda.prune_grow import DeviceScores

        fns = super().grow_fns(key)
        net, k1, a = self.net, self.k1, self.arrays
        n_items = self.embeddings[1].n_rows
        neg_per_item = (k1 - 1) * self.data.nnz / max(n_items, 1)
        grid = (self.n_blocks, self.threads_per_block)

        def rows_fn(which):
            def launch(r0, r1, G_d):
                self._kernels.launch_grad_embedding_rows(
                    a, which, r0, r1, G_d, cpu._NCF_GROW_SAMPLES, key, k1 - 1, neg_per_item,
                    n_items, net.d, net.h_off, net.o_off, *grid)
                if self.grow_scores != "raw":
                    self._kernels.divide_rows_kernel[grid](G_d, np.int64(r0),
                                                           self._row_scales_d[which])
            return launch

        held = [None]
        emb = a["emb"]
        device = [DeviceScores(rows_fn(w), emb[3 * w], emb[3 * w + 1], self._score_buffer, held,
                               grid) for w in range(4)]
        return device + fns[4:]

    def prune_scores(self):
        """``|w|``: the embeddings' on the GPU, the MLP layers' from the host tables.

        With ``grow_scores="frequency"`` all scores come from the host
        tables (downloaded before every prune/grow step), as on the CPU.
        """
        from .._kernels.cuda.prune_grow import DevicePrune

        if self.grow_scores != "raw":
            return super().prune_scores()
        grid = (self.n_blocks, self.threads_per_block)
        emb = [DevicePrune(v, grid) for v in self.arrays["emb"][2::3]]
        return emb + [t.weights for t in self.net.layers]


# The simulator runs every GPU thread as a Python thread: a small grid.
_SIM_IALS_GRID = (1, 4)


class IALSEngine(cpu.IALSEngine):
    """DSL-MF's iALS epochs, growth and prune scores on the GPU.

    The confidences, both tables and the work arrays live on the device
    between epochs (see :mod:`sparse_rec._kernels.cuda.ials`). An epoch
    computes the items' Gram matrix on the device, solves every user row on
    its active coordinates (one thread per row), then the same for the
    items against the users. Growth scores ``g / sqrt(H_jj)`` of a chunk of
    rows are computed and selected on the device
    (:class:`~sparse_rec._kernels.cuda.prune_grow.DeviceScores`); so are
    the prune scores ``w**2 * H_jj`` and their threshold (only a keep mask
    comes back); the rebuild runs on the host. ``regularization``,
    ``unobserved_weight`` and ``popularity_exponent`` are the estimator's,
    as on the CPU. Scratch
    is about ``(2 d + 64) d`` float64 per thread, so the grid is a few
    blocks of 64 threads per streaming multiprocessor by default.
    ``gather``: interactions gathered per pass of a row's system build
    (default :data:`~sparse_rec._kernels.cuda.ials.GATHER`).
    """

    def __init__(self, data, users, items, bias_v, *, regularization, unobserved_weight,
                 popularity_exponent=0.0, n_blocks=None, threads_per_block=64, gather=None):
        if not is_available():
            raise _no_gpu_error()
        super().__init__(data, users, items, bias_v, regularization=regularization,
                         unobserved_weight=unobserved_weight,
                         popularity_exponent=popularity_exponent)
        from numba import cuda

        from .._kernels.cuda import ials as _ials_cuda

        self._cuda, self._kernels = cuda, _ials_cuda
        if n_blocks is None and _simulated():
            n_blocks, threads_per_block = _SIM_IALS_GRID
        elif n_blocks is None:
            n_blocks = 2 * int(getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1))
        self.n_blocks, self.threads_per_block = int(n_blocks), int(threads_per_block)
        to = cuda.to_device
        self.rows_d = [tuple(to(np.ascontiguousarray(x)) for x in rows)
                       for rows in (self.user_rows, self.item_rows)]
        # Per table (users, items): the solved rows' and the other side's
        # factors of the unobserved weight on the device, and the latter's sum
        # (the CPU engine's ``_w``).
        self.weights_d = [(to(np.ascontiguousarray(wr, np.float64)),
                           to(np.ascontiguousarray(wo, np.float64)), float(np.sum(wo)))
                          for wr, wo in (self._w["user"], self._w["item"])]
        self.scratch = _ials_cuda.Scratch(self.n_blocks * self.threads_per_block, users.n_cols,
                                          gather or _ials_cuda.GATHER)
        self.loss_d = [cuda.device_array(t.n_rows, np.float64) for t in (users, items)]
        self.reg_d = [cuda.device_array(t.n_rows, np.float64) for t in (users, items)]
        self._gram_work = [(None, None), (None, None)]  # dense copy and partials, per table
        self._G = None  # device growth-score buffer, sized on the first chunk
        self.upload()

    @property
    def _grid(self):
        return self.n_blocks, self.threads_per_block

    def upload(self):
        to = self._cuda.to_device
        self.tabs_d = [(to(t.indptr), to(t.indices),
                        to(np.ascontiguousarray(t.values_buf[: t.nnz])))
                       for t in (self.users, self.items)]
        self._grams = None

    def download(self):
        for t, (_, _, v) in zip((self.users, self.items), self.tabs_d, strict=True):
            v.copy_to_host(t.values_buf[: t.nnz])

    def _gram_of(self, t):
        tab = (self.users, self.items)[t]
        dense, partial = self._gram_work[t]
        # Table t is the other side of the solves of table 1 - t: weighted by
        # those solves' ``wo``.
        G, dense, partial = self._kernels.gram(*self.tabs_d[t], tab.n_rows, tab.n_cols,
                                               self._grid, self.weights_d[1 - t][1], dense,
                                               partial)
        self._gram_work[t] = (dense, partial)
        return G

    def epoch(self, key):
        # Deterministic: the key is not needed (no sampling).
        self._grams = None
        k, lam, W, grid = self._kernels, self.lam, self.weights_d, self._grid
        k.solve_rows(self.tabs_d[0], self.rows_d[0], self.tabs_d[1], self._gram_of(1), W[0],
                     lam, self.loss_d[0], self.reg_d[0], self.scratch, grid)
        k.solve_rows(self.tabs_d[1], self.rows_d[1], self.tabs_d[0], self._gram_of(0), W[1],
                     lam, self.loss_d[1], self.reg_d[1], self.scratch, grid)
        # As on the CPU: the item rows' objectives hold the data loss once
        # and the item ridge; the user ridge comes from the user solves.
        return float(self.loss_d[1].copy_to_host().sum() + self.reg_d[0].copy_to_host().sum())

    def _gram_pair(self):
        # The other side's Gram matrix of each table at the current weights,
        # once per prune/grow step (both score kinds read it).
        if self._grams is None:
            self._grams = (self._gram_of(1), self._gram_of(0))
        return self._grams

    def _score_args(self, t):
        return self.tabs_d[t], self.rows_d[t], self.tabs_d[1 - t], self._gram_pair()[t]

    def _score_buffer(self, n_rows):
        if self._G is None or self._G.shape[0] < n_rows:
            self._G = self._cuda.device_array((n_rows, self.users.n_cols), np.float32)
        return self._G[:n_rows]

    def grow_fns(self, key):
        """Growth scores of row chunks, computed and selected on the GPU."""
        from .._kernels.cuda.prune_grow import DeviceScores

        k, grid = self._kernels, self._grid
        tables = (self.users, self.items)

        def make(t):
            prune_d = self._cuda.device_array(max(tables[t].nnz, 1), np.float32)

            def launch(r0, r1, G_d):
                k.curvature(r0, r1, G_d, prune_d, *self._score_args(t), self.weights_d[t],
                            self.lam, self.scratch, grid)
            return launch

        held = [None]
        return [DeviceScores(make(t), self.tabs_d[t][0], self.tabs_d[t][1], self._score_buffer,
                             held, grid) for t in (0, 1)]

    def prune_scores(self):
        """``w**2 H_jj`` computed on the GPU, where the prune threshold is then found."""
        from .._kernels.cuda.prune_grow import DevicePrune

        out = []
        empty = self._cuda.device_array((0, self.users.n_cols), np.float32)
        for t, tab in enumerate((self.users, self.items)):
            prune_d = self._cuda.device_array((tab.nnz, 1), np.float32)
            self._kernels.curvature(0, tab.n_rows, empty, prune_d.reshape(tab.nnz),
                                    *self._score_args(t), self.weights_d[t], self.lam,
                                    self.scratch, self._grid)
            out.append(DevicePrune(prune_d, self._grid))
        return out

    def rebuild(self):
        self.upload()
