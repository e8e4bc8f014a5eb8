"""Mult-VAE on the GPU: the two item tables and the logits on the device.

A batch's large work is the encoder's gather of its histories' rows, the
decoder's logits over every item (items x batch), the likelihood's
gradient there and the two tables' gradients and Adam steps, all on the
device (:mod:`sparse_rec._kernels.cuda.vae`). The small dense layers
between the tables (hidden x hidden, hidden x latent) run on the host
with NumPy (:func:`~sparse_rec.backends.vae_cpu.forward_dense`,
:func:`~sparse_rec.backends.vae_cpu.backward_dense`, the CPU engine's own
code), so per batch only batch-sized activations and the output bias
(one float per item) cross the bus, never the logits. With ``n_sampled``
(a sampled softmax) the logits and their gradient are the batch's
candidate items' only, as on the CPU; growth scores use the full softmax
on both. The batch order,
dropout and Gaussian noise are the CPU engine's draws from the same
generator, so an epoch follows the CPU epoch up to float rounding.
Growth gradients of the CPU engine's sample are computed and selected on
the device too (the dense layers of the sample's passes on the host).
"""

import numpy as np

from . import cuda as _backend
from . import vae_cpu

# The simulator runs every GPU thread as a Python thread: a small grid.
_SIM_VAE_GRID = (1, 8)


class VAEEngine(vae_cpu.VAEEngine):
    """Mult-VAE epochs with the item tables, logits and table Adam on the GPU.

    See :mod:`sparse_rec.backends.vae_cuda`. ``download`` brings both
    tables (weights and Adam moments) into the host tables, ``upload`` (the
    rebuild hook) sends them and the decoder's transposed pattern out.
    """

    def __init__(self, data, encoder, decoder, state, *, n_blocks=None, threads_per_block=128,
                 **kw):
        if not _backend.is_available():
            raise _backend._no_gpu_error()
        super().__init__(data, encoder, decoder, state, **kw)
        from numba import cuda

        from .._kernels.cuda import vae as _vae_cuda

        self._cuda, self._kernels = cuda, _vae_cuda
        if n_blocks is None and _backend._simulated():
            n_blocks, threads_per_block = _SIM_VAE_GRID
        elif n_blocks is None:
            n_blocks = 8 * int(getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1))
        self.grid = (int(n_blocks), int(threads_per_block))
        self._L = {}  # logits buffer per batch size
        self.upload()

    def upload(self):
        to = self._cuda.to_device
        self.tabs_d = [(to(t.indptr), to(t.indices),
                        to(np.ascontiguousarray(t.values_buf[: t.nnz])))
                       for t in (self.E, self.D)]
        # The decoder's pattern by unit: the input gradient sums per unit.
        D = self.D
        items = np.repeat(np.arange(D.n_rows, dtype=np.int64), np.diff(D.indptr))
        order = np.argsort(D.indices, kind="stable")
        t_indptr = np.zeros(D.n_cols + 1, np.int64)
        np.cumsum(np.bincount(D.indices, minlength=D.n_cols), out=t_indptr[1:])
        self.dec_t = (to(t_indptr), to(items[order]), to(order.astype(np.int64)))

    def download(self):
        for t, (_, _, v) in zip((self.E, self.D), self.tabs_d, strict=True):
            v.copy_to_host(t.values_buf[: t.nnz])

    def rebuild(self):
        self.upload()

    def prune_scores(self):
        """``|w|`` of the device tables: the prune threshold is found on the GPU."""
        from .._kernels.cuda.prune_grow import DevicePrune

        return [DevicePrune(v, self.grid) for _, _, v in self.tabs_d]

    def _logits(self, B):
        if B not in self._L:
            self._L[B] = self._cuda.device_array((self.D.n_rows, B), np.float32)
        return self._L[B]

    def _device_pass(self, users, rng, train, scale, P, cand=None, logp=None):
        """Forward over ``users`` on the device, then the likelihood's gradient in the logits.

        ``train``: the CPU engine's draws, in its order (input dropout, then
        the Gaussian noise); otherwise none (``z = mu``). The logits buffer
        ends up holding ``(softmax * n_x - x) * scale`` (items x batch), as
        :func:`vae_cpu.softmax_loss_grad` leaves it. Returns the host
        activations, ``aT`` and the logits on the device, the per-user
        negative log-likelihoods and log-normalisers, and the batch's
        item-major input. With ``cand`` (a sampled softmax's sorted
        candidates, ``logp`` their log-probabilities of being candidates)
        the logits are the candidates' only (candidates x batch), corrected
        by ``logp``, as the CPU engine's.
        """
        cuda, k, g = self._cuda, self._kernels, self.grid
        to = cuda.to_device
        layout = self.state.layout
        (e_p, e_i, e_v), (d_p, d_i, d_v) = self.tabs_d
        B = len(users)
        hist, hist_t, (idx, rows, vals) = self._batch_input(users, rng if train else None)
        eps = rng.standard_normal((B, layout.d), dtype=np.float32) if train else None
        pre_d = cuda.device_array((B, layout.hidden[0]), np.float32)
        k.encode_kernel[g](*(to(x) for x in hist), e_p, e_i, e_v, to(P["b_e"]), pre_d)
        enc, mu, logvar, dec = vae_cpu.forward_dense(pre_d.copy_to_host(), P, layout, eps)
        aT_d = to(np.ascontiguousarray(dec[-1].T))
        L = self._logits(B)
        if cand is None:
            k.decode_kernel[g](d_p, d_i, d_v, aT_d, to(P["b_d"]), L)
        else:
            L = L[: len(cand)]
            k.decode_rows_kernel[g](to(cand), d_p, d_i, d_v, aT_d, to(P["b_d"]),
                                    to(np.ascontiguousarray(logp, np.float32)), L)
            idx = np.searchsorted(cand, idx)
        idx_d, rows_d = to(idx), to(rows.astype(np.int64))
        picked_d = cuda.device_array(len(idx), np.float32)
        k.gather_kernel[g](L, idx_d, rows_d, picked_d)
        m_d = cuda.device_array(B, np.float32)
        tot_d = cuda.device_array(B, np.float64)
        k.softmax_stats_kernel[g](L, m_d, tot_d)
        m, tot, picked = m_d.copy_to_host(), tot_d.copy_to_host(), picked_d.copy_to_host()
        nx = np.bincount(rows, vals, minlength=B).astype(np.float32)
        lse = m + np.log(tot)
        nll = nx * lse - np.bincount(rows, vals * picked, minlength=B)
        k.softmax_grad_kernel[g](L, m_d, to((nx / tot * scale).astype(np.float32)))
        k.scatter_sub_kernel[g](L, idx_d, rows_d, to(vals), scale)
        return (enc, mu, logvar, dec, eps), aT_d, L, nll, lse, hist_t

    def _device_backward(self, P, G, acts, aT_d, L, kl_scale, tables=True, cand=None):
        """Gradients from the logits' gradient ``L``: ``(gE_d, gD_d, dpre1)``.

        The output bias and the decoder's gradients on the device, the dense
        layers on the host (filling ``G``); with ``tables=False`` only
        ``dpre1``, the encoder's first pre-activation gradient (host). With
        ``cand``, ``L`` holds the candidates' rows only: every other item's
        logit gradient is zero.
        """
        cuda, k, g = self._cuda, self._kernels, self.grid
        to = cuda.to_device
        d_p, d_i, d_v = self.tabs_d[1]
        B = L.shape[1]
        bd_d = cuda.device_array(L.shape[0], np.float32)
        k.row_sum_kernel[g](L, bd_d)
        if cand is None:
            G["b_d"][:] = bd_d.copy_to_host()
        else:
            G["b_d"][:] = 0.0
            G["b_d"][cand] = bd_d.copy_to_host()
            cand_d = to(cand)
        gD_d = None
        if tables:
            gD_d = cuda.device_array(max(self.D.nnz, 1), np.float32)
            if cand is None:
                k.decoder_wgrad_kernel[g](d_p, d_i, aT_d, L, gD_d)
            else:
                k.zero_kernel[g](gD_d)
                k.decoder_wgrad_rows_kernel[g](cand_d, d_p, d_i, aT_d, L, gD_d)
        daT_d = cuda.device_array((self.state.layout.hidden[0], B), np.float32)
        if cand is None:
            k.decoder_input_kernel[g](*self.dec_t, d_v, L, daT_d)
        else:
            slot = np.full(self.D.n_rows, -1, np.int64)
            slot[cand] = np.arange(len(cand))
            k.decoder_input_rows_kernel[g](*self.dec_t, to(slot), d_v, L, daT_d)
        enc, mu, logvar, dec, eps = acts
        dpre1 = vae_cpu.backward_dense(P, G, self.state.layout, enc, mu, logvar, dec, eps,
                                       daT_d.copy_to_host().T, kl_scale)
        return gD_d, dpre1

    def _batch(self, users, rng, P, G):
        """The CPU engine's :meth:`~vae_cpu.VAEEngine._batch` with the tables on the device."""
        cuda, k, g = self._cuda, self._kernels, self.grid
        to = cuda.to_device
        e_p, e_i, _ = self.tabs_d[0]
        B = len(users)
        cand = logp = None
        if self.n_sampled is not None:  # drawn first, as on the CPU
            cand, logp = vae_cpu.sampled_candidates(np.unique(self.X[users].indices), self.cdf,
                                                    self.log1m_q, self.n_sampled, rng)
        acts, aT_d, L, nll, _, hist_t = self._device_pass(users, rng, True, np.float32(1.0 / B),
                                                          P, cand, logp)
        beta = self.anneal()
        _, mu, logvar, _, _ = acts
        gD_d, dpre1 = self._device_backward(P, G, acts, aT_d, L, np.float32(beta / B),
                                            cand=cand)
        gE_d = cuda.device_array(max(self.E.nnz, 1), np.float32)
        k.encoder_grad_kernel[g](*(to(x) for x in hist_t), e_p, e_i, to(dpre1), gE_d)
        return vae_cpu.batch_loss(nll, mu, logvar, beta), (gE_d, gD_d)

    def _adam_tables(self, grads, lr1, inv_bc2):
        for (_, _, v_d), g_d in zip(self.tabs_d, grads, strict=True):
            self._kernels.adam_table_kernel[self.grid](v_d, g_d, lr1, inv_bc2,
                                                       np.float32(self.alpha))

    def _sample_pass(self, users, P, scratch, S):
        acts, aT_d, L, _, lse, _ = self._device_pass(users, None, False, np.float32(1.0 / S), P)
        dpre = self._device_backward(P, scratch, acts, aT_d, L, np.float32(self.anneal() / S),
                                     tables=False)[1]
        return dpre, acts[3][-1], lse

    def _score_buffer(self, n_rows):
        G = getattr(self, "_G", None)
        if G is None or G.shape[0] < n_rows:
            self._G = self._cuda.device_array((n_rows, self.E.n_cols), np.float32)
        return self._G[:n_rows]

    def grow_fns(self, key):
        """The CPU engine's growth gradients (same sample), computed and selected on the GPU.

        The sample's forward and backward passes run as in an epoch (no
        dropout, ``z = mu``); the encoder's rows are then one sparse-dense
        product on the device, the decoder's one pass per row over the base
        users' logits, recomputed per chunk (never all items x users at once).
        """
        from .._kernels.cuda.prune_grow import DeviceScores

        cuda, k, grid = self._cuda, self._kernels, self.grid
        to = cuda.to_device
        rng = np.random.default_rng(int(key))
        base, sample = self._grow_sample(rng)
        layout = self.state.layout
        cache = {}

        def prepare():
            if cache:
                return
            P = layout.views(self.state.dense[0])
            got = self._growth_inputs(base, sample, P)
            XsT, XbT = got["XsT"], got["XbT"]
            cache.update(
                XsT=tuple(to(x) for x in (XsT.indptr.astype(np.int64), XsT.indices, XsT.data)),
                dpre=to(got["dpre"]), A=to(got["A"]), lse=to(got["lse"]), nx=to(got["nx"]),
                XbT=tuple(to(x) for x in (XbT.indptr.astype(np.int64), XbT.indices,
                                           XbT.data)),
                b_d=to(P["b_d"]))

        def encoder(r0, r1, G_d):
            prepare()
            k.encoder_rows_kernel[grid](np.int64(r0), *cache["XsT"], cache["dpre"], G_d)

        def decoder(r0, r1, G_d):
            prepare()
            d_p, d_i, d_v = self.tabs_d[1]
            k.decoder_rows_kernel[grid](np.int64(r0), d_p, d_i, d_v, cache["A"], cache["b_d"],
                                        cache["lse"], cache["nx"], *cache["XbT"], G_d)

        held = [None]
        return [DeviceScores(encoder, self.tabs_d[0][0], self.tabs_d[0][1], self._score_buffer,
                             held, grid),
                DeviceScores(decoder, self.tabs_d[1][0], self.tabs_d[1][1], self._score_buffer,
                             held, grid)]
