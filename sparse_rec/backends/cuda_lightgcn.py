"""LightGCN on the GPU: the graph, both tables and every propagation on the device.

Each mini-batch runs the CPU engine's algorithm
(:class:`~sparse_rec.backends.cpu_lightgcn.LightGCNEngine`) with its
products as CUDA kernels (:mod:`sparse_rec._kernels.cuda.lightgcn`): forward
propagation of the layer-0 tables over the normalised graph's CSR blocks,
BPR (or with ``loss="softmax"`` the sampled softmax over cosines against the
batch's shared negatives) on the final embeddings, the backward pass by
Horner's rule, the layer-0 gradient read at the active weights and one
optimiser step per active weight. Only the batch's summed loss comes back
per batch. Growth scores are computed and selected on the device
(:class:`~sparse_rec._kernels.cuda.prune_grow.DeviceScores`); the prune
threshold (smallest ``|w|``) and the rebuild run on the host.
"""

import numpy as np

from . import cpu_lightgcn as C
from . import cuda as _backend

# The simulator runs every GPU thread as a Python thread: a small grid.
_SIM_LIGHTGCN_GRID = (1, 8)


class LightGCNEngine(C.LightGCNEngine):
    """LightGCN's mini-batch BPR with every product on the GPU.

    The gradient of the final embeddings is scattered with float32 atomics
    (the CPU adds the samples serially): sums agree up to their order.
    ``download`` brings both tables (weights and optimiser slots) to the
    host, ``upload`` (the rebuild hook) sends the rebuilt tables out.
    """

    def __init__(self, data, users, items, graph, *, n_blocks=None, threads_per_block=128,
                 **kw):
        if not _backend.is_available():
            raise _backend._no_gpu_error()
        super().__init__(data, users, items, graph, **kw)
        from numba import cuda

        from .._kernels.cuda import lightgcn as _k

        self._cuda, self._k = cuda, _k
        if n_blocks is None and _backend._simulated():
            n_blocks, threads_per_block = _SIM_LIGHTGCN_GRID
        elif n_blocks is None:
            n_blocks = 8 * int(getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1))
        self.grid = (int(n_blocks), int(threads_per_block))
        to = cuda.to_device
        self.R_d, self.Rt_d = (tuple(to(x) for x in b) for b in (graph.R, graph.Rt))
        self.last_d = tuple(tuple(to(x) for x in b) for b in self._last)
        self.x_d = tuple(to(x) for x in (data.x_indices, data.x_weight, data.x_rows,
                                         data.f_indptr, data.f_indices))
        nu, ni, d = users.n_rows, items.n_rows, users.n_cols
        self.pairs_d = [(cuda.device_array((nu, d), np.float32),
                         cuda.device_array((ni, d), np.float32)) for _ in range(5)]
        self.counts_d = (cuda.device_array(nu, np.float32), cuda.device_array(ni, np.float32))
        self.work_d = self._device_work(self.batch)
        if self.loss == "softmax":
            n, m = self.batch, self.n_negatives
            f32 = np.float32
            self.soft_d = {
                "us": cuda.device_array(n, np.int64), "ps": cuda.device_array(n, np.int64),
                "ws": cuda.device_array(n, np.float64), "negs": cuda.device_array(m, np.int64),
                "hit": cuda.device_array((n, m), np.bool_),
                "U": cuda.device_array((n, d), f32), "Ii": cuda.device_array((n, d), f32),
                "N": cuda.device_array((m, d), f32), "ru": cuda.device_array(n, f32),
                "ri": cuda.device_array(n, f32), "rn": cuda.device_array(m, f32),
                "P": cuda.device_array((n, m), f32), "g0": cuda.device_array(n, np.float64),
                "GU": cuda.device_array((n, d), f32), "GI": cuda.device_array((n, d), f32),
                "GN": cuda.device_array((m, d), f32), "losses": cuda.device_array(n, np.float64),
            }
        self.upload()

    def _device_work(self, n):
        c = self._cuda
        return (c.device_array(n, np.int64), c.device_array(n, np.int64),
                c.device_array(n, np.int64), c.device_array(n, np.float64),
                c.device_array(n, np.float64))

    def upload(self):
        to, c = self._cuda.to_device, self._cuda
        self.tabs_d = [(to(t.indptr), to(t.indices),
                        to(np.ascontiguousarray(t.values_buf[: t.nnz])))
                       for t in (self.users, self.items)]
        self.grads_d = [c.device_array(max(t.nnz, 1), np.float32) for t in (self.users, self.items)]

    def download(self):
        for t, (_, _, v) in zip((self.users, self.items), self.tabs_d, strict=True):
            v.copy_to_host(t.values_buf[: t.nnz])

    def rebuild(self):
        self._grow_cache = {}
        self.upload()

    def prune_scores(self):
        """``|w|`` of the device tables: the prune threshold is found on the GPU."""
        from .._kernels.cuda.prune_grow import DevicePrune

        return [DevicePrune(v, self.grid) for _, _, v in self.tabs_d]

    def _spmm(self, g, X, add, has_add, out, beta=1.0):
        self._k.spmm_dense_kernel[self.grid](*g, X, add, np.float32(beta), has_add, out)

    def _forward(self):
        """Final embeddings ``(Fu, Fi)`` on the device (:func:`cpu_lightgcn.propagate`)."""
        k, grid = self._k, self.grid
        (Fu, Fi), (Eu, Ei), (Eu2, Ei2) = self.pairs_d[0], self.pairs_d[2], self.pairs_d[3]
        w = self.weights
        a = w[0]
        (ui, uj, uv), (ii, ij, iv) = self.tabs_d
        k.densify_kernel[grid](ui, uj, uv, Fu)
        k.densify_kernel[grid](ii, ij, iv, Fi)
        if self.n_layers == 0:
            k.scale_kernel[grid](a, Fu)
            k.scale_kernel[grid](a, Fi)
            return Fu, Fi
        # Layer 0 dense into the second buffers, then the first products.
        Eu2.copy_to_device(Fu)
        Ei2.copy_to_device(Fi)
        k.scale_kernel[grid](a, Fu)
        k.scale_kernel[grid](a, Fi)
        self._spmm(self.R_d, Ei2, Ei2, False, Eu)
        self._spmm(self.Rt_d, Eu2, Eu2, False, Ei)
        for layer in range(1, self.n_layers + 1):
            k.axpy_kernel[grid](w[layer], Eu, Fu)
            k.axpy_kernel[grid](w[layer], Ei, Fi)
            if layer == self.n_layers:
                break
            self._spmm(self.R_d, Ei, Ei, False, Eu2)
            self._spmm(self.Rt_d, Eu, Eu, False, Ei2)
            Eu, Eu2, Ei, Ei2 = Eu2, Eu, Ei2, Ei
        return Fu, Fi

    def _gradient(self, key, s0, n, work, fresh=True):
        """Final embeddings' BPR gradient ``(loss, Gu, Gi)`` of samples ``s0 : s0 + n``."""
        k, grid = self._k, self.grid
        Fu, Fi = self._final(fresh)
        Gu, Gi = self.pairs_d[1]
        if self.loss == "softmax":
            return self._softmax_gradient(key, s0, n, Fu, Fi, Gu, Gi)
        us, ps, js, gs, losses = work
        k.margins_kernel[grid](np.uint64(key), np.int64(s0), np.int64(n), np.int64(self.n_items),
                               *self.x_d, Fu, Fi, us, ps, js, gs, losses)
        for arr in (Gu, Gi):
            k.zero2_kernel[grid](arr)
        for arr in self.counts_d:
            k.zero_kernel[grid](arr)
        k.scatter_grad_kernel[grid](np.int64(n), us, ps, js, gs, Fu, Fi, Gu, Gi, *self.counts_d)
        return float(losses[:n].copy_to_host().sum()), Gu, Gi

    def _softmax_gradient(self, key, s0, n, Fu, Fi, Gu, Gi):
        """The CPU engine's sampled-softmax batches on the device; ``G`` of the mean loss."""
        k, grid = self._k, self.grid
        for arr in (Gu, Gi):
            k.zero2_kernel[grid](arr)
        for arr in self.counts_d:
            k.zero_kernel[grid](arr)
        loss = 0.0
        for c0 in range(s0, s0 + n, self.batch):
            loss += self._softmax_batch(key, c0, min(self.batch, s0 + n - c0), Fu, Fi, Gu, Gi,
                                        np.float32(1.0 / n))
        return loss, Gu, Gi

    def _softmax_batch(self, key, s0, n, Fu, Fi, Gu, Gi, scale):
        """:meth:`cpu_lightgcn.LightGCNEngine._softmax_batch` with device kernels."""
        k, grid, w = self._k, self.grid, self.soft_d
        n64 = np.int64(n)
        k.softmax_negatives_kernel[grid](np.uint64(key), np.int64((s0 // self.batch)
                                                                  * self.n_negatives),
                                         np.int64(self.n_items), w["negs"])
        k.softmax_samples_kernel[grid](np.uint64(key), np.int64(s0), n64, *self.x_d, w["negs"],
                                       w["us"], w["ps"], w["ws"], w["hit"])
        m64 = np.int64(self.n_negatives)
        for cnt, rows, F, X, r in ((n64, w["us"], Fu, w["U"], w["ru"]),
                                   (n64, w["ps"], Fi, w["Ii"], w["ri"]),
                                   (m64, w["negs"], Fi, w["N"], w["rn"])):
            k.unit_rows_kernel[grid](cnt, rows, F, X, r)
        k.softmax_logits_kernel[grid](n64, w["U"], w["Ii"], w["N"], w["hit"], w["ws"],
                                      np.float64(1.0 / self.temperature),
                                      np.float64(self._shift), w["P"], w["g0"], w["losses"])
        k.softmax_grads_kernel[grid](n64, w["U"], w["Ii"], w["N"], w["P"], w["g0"], w["GU"],
                                     w["GI"])
        k.softmax_negative_grads_kernel[grid](n64, w["U"], w["P"], w["GN"])
        cu, ci = self.counts_d
        for cnt, rows, G, X, r, out, c in (
                (n64, w["us"], w["GU"], w["U"], w["ru"], Gu, cu),
                (n64, w["ps"], w["GI"], w["Ii"], w["ri"], Gi, ci),
                (m64, w["negs"], w["GN"], w["N"], w["rn"], Gi, ci)):
            k.project_scatter_kernel[grid](cnt, rows, G, X, r, scale, out, c)
        return float(w["losses"][:n].copy_to_host().sum())

    def _horner(self, Gu, Gi):
        Hu, Hi = self.pairs_d[2]
        Hu2, Hi2 = self.pairs_d[3]
        Hu.copy_to_device(Gu)
        Hi.copy_to_device(Gi)
        for layer in range(self.n_layers - 1, 0, -1):  # the CPU engine's Horner
            self._spmm(self.R_d, Hi, Gu, True, Hu2, self._ratios[layer])
            self._spmm(self.Rt_d, Hu, Gi, True, Hi2, self._ratios[layer])
            Hu, Hu2, Hi, Hi2 = Hu2, Hu, Hi2, Hi
        return Hu, Hi

    def layer0_gradient(self, key, s0, n, fresh=True):
        """``(loss, gu, gi)`` with the gradients as device arrays (see the CPU engine)."""
        a, c0 = self.weights[-1], self._ratios[0]
        loss, Gu, Gi = self._gradient(key, s0, n, self.work_d, fresh)
        Hu, Hi = self._horner(Gu, Gi)
        full_u, full_i = self.pairs_d[4]  # not the final embeddings: they may be reused
        R, Rt = self.last_d
        self._spmm(R, Hi, Gu, True, full_u, c0)
        self._spmm(Rt, Hu, Gi, True, full_i, c0)
        for (t_p, t_i, _), full, out in zip(self.tabs_d, (full_u, full_i), self.grads_d,
                                            strict=True):
            self._k.gather_pattern_kernel[self.grid](t_p, t_i, full, a, out)
        return loss, self.grads_d[0], self.grads_d[1]

    def _step(self, gu, gi, lr):
        """One optimiser step of both device tables (the CPU engine's ``epoch`` calls it)."""
        for (t_p, _, t_v), g, cnt in zip(self.tabs_d, (gu, gi), self.counts_d, strict=True):
            self._k.step_table_kernel[self.grid](
                t_p, t_v, g, cnt, np.float32(self.alpha), np.float32(lr),
                np.float32(C._BETA1), np.float32(C._BETA2), np.float32(C._EPS),
                np.int64(self.optimizer))

    def _score_buffer(self, n_rows):
        G = getattr(self, "_G", None)
        if G is None or G.shape[0] < n_rows:
            self._G = self._cuda.device_array((n_rows, self.users.n_cols), np.float32)
        return self._G[:n_rows]

    def grow_fns(self, key):
        """Dense ``dL/dE0`` rows of the CPU engine's sample, computed and selected on the GPU."""
        from .._kernels.cuda.prune_grow import DeviceScores

        a, c0 = self.weights[-1], self._ratios[0]

        def prepared():
            if self._grow_cache.get("key") != int(key):
                n = int(min(self.n_samples, C._GROW_SAMPLES))
                _, Gu, Gi = self._gradient(key, 0, n, self._device_work(n))
                Hu, Hi = self._horner(Gu, Gi)
                self._grow_cache = {"key": int(key), "arrays": (Gu, Gi, Hu, Hi)}
            return self._grow_cache["arrays"]

        def users(r0, r1, G_d):
            Gu, _, _, Hi = prepared()
            self._k.rows_dense_kernel[self.grid](*self.last_d[0], Hi, Gu, c0, a, np.int64(r0),
                                                 G_d)

        def items(r0, r1, G_d):
            _, Gi, Hu, _ = prepared()
            self._k.rows_dense_kernel[self.grid](*self.last_d[1], Hu, Gi, c0, a, np.int64(r0),
                                                 G_d)

        held = [None]
        return [DeviceScores(users, self.tabs_d[0][0], self.tabs_d[0][1], self._score_buffer,
                             held, self.grid),
                DeviceScores(items, self.tabs_d[1][0], self.tabs_d[1][1], self._score_buffer,
                             held, self.grid)]
