"""Mult-VAE on the CPU: the network's passes (shared with scoring) and the training engine.

The two item tables (encoder input layer ``E`` and decoder output layer
``D``, ``n_items x hidden[0]`` each) are CSR tables trained by the kernels
of :mod:`sparse_rec._kernels._vae`; everything else (the small layers
between them and every bias) is one dense float32 vector laid out by
:class:`Layout` and multiplied with BLAS.
"""

import contextlib

import numba
import numpy as np
import scipy.sparse as sp

from .._kernels import _vae as KV
from .._kernels._ncf import ADAM_EPS, BETA1, BETA2
from ._engine import Engine

# Growth gradients: random users estimating the decoder's gradient (every
# decoder row gets one from any user); the encoder's sample adds one random
# interactor of every item, so every item row with an interaction has one.
_GROW_USERS = 1024
# Users per block of a forward pass outside training (growth, scoring).
BLOCK = 512
# F.normalize's floor: an empty history stays a zero input.
_NORM_EPS = 1e-12
_BLAS = []


def one_blas_thread():
    """Context that runs BLAS on one thread: the small dense layers.

    Their products (batch x hidden x latent, about 0.3 GFLOP a batch of 500
    with the default sizes) gain little from a second BLAS thread, and a
    BLAS thread pool spinning next to Numba's threads on the same cores
    costs far more: on ml-latest-small at density 0.2 (2 cores, other work
    running) the dense layers took 165 ms a batch with two BLAS threads and
    19 ms with one. The large products (dense tables, growth gradients)
    keep BLAS's threads.
    """
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # a served model without scikit-learn (which brings it)
            _BLAS.append(None)
        else:
            _BLAS.append(ThreadpoolController())
    return contextlib.nullcontext() if _BLAS[0] is None else _BLAS[0].limit(
        limits=1, user_api="blas")


class Layout:
    """Where each dense parameter sits in the flat dense vector.

    In order: the encoder's first bias ``b_e`` (``hidden[0]``), the
    encoder's further layers ``enc_W{l}, enc_b{l}`` (``hidden[l] ->
    hidden[l + 1]``), the Gaussian layer ``q_W, q_b`` (``hidden[-1] -> 2 *
    d``: mean, then log-variance), the decoder's layers ``dec_W{l},
    dec_b{l}`` (``d -> hidden[-1] -> ... -> hidden[0]``) and the output bias
    ``b_d`` (``n_items``). Weight matrices are stored ``(n_in, n_out)``.
    """

    def __init__(self, n_items, hidden, d):
        self.n_items, self.d = int(n_items), int(d)
        self.hidden = h = tuple(int(x) for x in hidden)
        shapes = [("b_e", (h[0],))]
        for layer in range(len(h) - 1):
            shapes += [(f"enc_W{layer}", (h[layer], h[layer + 1])),
                       (f"enc_b{layer}", (h[layer + 1],))]
        shapes += [("q_W", (h[-1], 2 * self.d)), ("q_b", (2 * self.d,))]
        dec = (self.d,) + h[::-1]
        for layer in range(len(dec) - 1):
            shapes += [(f"dec_W{layer}", (dec[layer], dec[layer + 1])),
                       (f"dec_b{layer}", (dec[layer + 1],))]
        shapes.append(("b_d", (self.n_items,)))
        self.slices, off = {}, 0
        for name, shape in shapes:
            self.slices[name] = (off, shape)
            off += int(np.prod(shape))
        self.size = off
        self.n_enc, self.n_dec = len(h) - 1, len(h)

    def views(self, flat):
        """Name -> view of ``flat`` (weights or gradients) in its shape."""
        return {name: flat[o: o + int(np.prod(s))].reshape(s)
                for name, (o, s) in self.slices.items()}

    def weight_mask(self):
        """True on weight matrices, False on biases (L2 applies to weights only)."""
        mask = np.zeros(self.size, bool)
        for name, (o, s) in self.slices.items():
            if "_W" in name:
                mask[o: o + int(np.prod(s))] = True
        return mask


def _arr(t):
    return t.indptr, t.indices, t.values_buf


def _full(t):
    """The weights as a contiguous ``(n_rows, n_cols)`` array when every coordinate
    is active (density 1), else None: BLAS then beats any CSR kernel."""
    if t.nnz != t.n_rows * t.n_cols or t.nnz == 0:
        return None
    return np.ascontiguousarray(t.values_buf[: t.nnz, 0].reshape(t.n_rows, t.n_cols))


def normalised(indptr, indices, values, n_rows):
    """Each row's values divided by its L2 norm (the Mult-VAE input), float32."""
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    norm = np.sqrt(np.bincount(rows, values.astype(np.float64) ** 2, minlength=n_rows))
    return (values / np.maximum(norm, _NORM_EPS)[rows]).astype(np.float32), rows


def forward(E, P, layout, hist, eps=None):
    """Activations of a batch; ``hist`` = (indptr, indices, values) of its input rows.

    Returns ``(enc, mu, logvar, dec)``: the encoder's tanh activations (first
    layer first), the Gaussian's mean and log-variance, and the decoder's
    activations ``[z, tanh(...), ..., last]``; ``z = mu + exp(logvar / 2) *
    eps``, or ``mu`` when ``eps`` is None (inference).
    """
    indptr, indices, vals = hist
    B = len(indptr) - 1
    W = _full(E)
    if W is None:
        pre = np.empty((B, layout.hidden[0]), np.float32)
        KV.encode(indptr, indices, vals, *_arr(E), P["b_e"], pre)
    else:
        pre = sp.csr_matrix((vals, indices, indptr), shape=(B, E.n_rows)) @ W + P["b_e"]
    return forward_dense(pre, P, layout, eps)


def forward_dense(pre, P, layout, eps=None):
    """:func:`forward` from the encoder's first pre-activation ``pre`` on (overwritten).

    The small dense layers between the two item tables (a GPU engine runs
    the tables on the device and these on the host), on one BLAS thread
    (:func:`one_blas_thread`).
    """
    with one_blas_thread():
        return _forward_dense(pre, P, layout, eps)


def _forward_dense(pre, P, layout, eps):
    enc = [np.tanh(pre, out=pre)]
    for layer in range(layout.n_enc):
        enc.append(np.tanh(enc[-1] @ P[f"enc_W{layer}"] + P[f"enc_b{layer}"]))
    q = enc[-1] @ P["q_W"] + P["q_b"]
    d = layout.d
    mu, logvar = q[:, :d], q[:, d:]
    z = mu if eps is None else mu + np.exp(0.5 * logvar) * eps
    dec = [np.ascontiguousarray(z, np.float32)]
    for layer in range(layout.n_dec):
        dec.append(np.tanh(dec[-1] @ P[f"dec_W{layer}"] + P[f"dec_b{layer}"]))
    return enc, mu, logvar, dec


def logits_t(D, aT, b_d, r0=0, r1=None, rows=None):
    """Logits of items ``r0:r1``, or of the items ``rows`` (a sampled softmax's
    candidates), for the batch with last decoder activations ``aT.T``."""
    W = _full(D)
    if rows is None:
        r1 = D.n_rows if r1 is None else r1
        if W is not None:
            return W[r0:r1] @ aT + b_d[r0:r1, None]
        rows = np.arange(r0, r1, dtype=np.int64)
    elif W is not None:
        return W[rows] @ aT + b_d[rows, None]
    out = np.empty((len(rows), aT.shape[1]), np.float32)
    KV.decode(rows, *_arr(D), aT, b_d, out)
    return out


def item_proposal(counts):
    """Sampling probabilities of a sampled softmax's shared negatives: ``(count + 1) / sum``.

    The softmax averaged over users approaches the items' frequencies, so
    drawing by frequency puts the draws where the normaliser's mass is;
    the added one keeps every item drawable.
    """
    q = np.asarray(counts, np.float64) + 1.0
    return q / q.sum()


def sampled_candidates(positives, cdf, log1m_q, n_sampled, rng):
    """A batch's candidate items and the log-probability that each is a candidate.

    ``n_sampled`` items are drawn with replacement from the proposal whose
    cumulative sum is ``cdf`` (``log1m_q = log(1 - q)``); the candidates
    are the draws and the batch's ``positives``. A positive is a candidate
    for certain (log-probability 0), any other item ``j`` with probability
    ``1 - (1 - q_j) ** n_sampled``: subtracting that log from the logits
    makes the candidates' sum of ``exp(logit) / P(candidate)`` an unbiased
    estimate of the full softmax's normaliser (Horvitz-Thompson), the
    log-q correction.
    """
    draws = np.minimum(np.searchsorted(cdf, rng.random(n_sampled) * cdf[-1], side="right"),
                       len(cdf) - 1)
    cand = np.union1d(positives, draws).astype(np.int64)
    logp = np.log(-np.expm1(n_sampled * log1m_q[cand])).astype(np.float32)
    logp[np.isin(cand, positives, assume_unique=True)] = 0.0
    return cand, logp


def _infer(E, P, layout, X, width, pick):
    """``pick(forward(...))`` of the histories ``X`` (CSR), by blocks, with ``z = mu``."""
    out = np.empty((X.shape[0], width), np.float32)
    for b0 in range(0, X.shape[0], BLOCK):
        Xb = X[b0: b0 + BLOCK]
        vals, _ = normalised(Xb.indptr, Xb.indices, Xb.data, Xb.shape[0])
        hist = (Xb.indptr.astype(np.int64), Xb.indices.astype(np.int32), vals)
        out[b0: b0 + Xb.shape[0]] = pick(forward(E, P, layout, hist))
    return out


def hidden_of(E, P, layout, X):
    """The decoder's last activations (inference) for the histories ``X`` (CSR)."""
    return _infer(E, P, layout, X, layout.hidden[0], lambda f: f[3][-1])


def mean_of(E, P, layout, X):
    """The encoder's means ``mu`` (the latent code scored) of the histories ``X`` (CSR)."""
    return _infer(E, P, layout, X, layout.d, lambda f: f[1])


def softmax_loss_grad(L, idx, rows, vals, scale):
    """Multinomial log-likelihood of a batch and its logits' gradient, in place.

    ``L`` (items x batch) holds logits; on return it holds ``(softmax * n_x
    - x) * scale``. Returns the per-user negative log-likelihoods and
    log-normalisers (``logsumexp`` of each user's logits).
    """
    B = L.shape[1]
    m = L.max(axis=0)
    picked = L[idx, rows]
    L -= m
    np.exp(L, out=L)
    total = L.sum(axis=0)
    nx = np.bincount(rows, vals, minlength=B).astype(np.float32)
    lse = m + np.log(total)
    nll = nx * lse - np.bincount(rows, vals * picked, minlength=B)
    L *= (nx / total * scale)[None, :]
    L[idx, rows] -= vals * scale
    return nll, lse


def backward(E, D, P, G, layout, hist_t, enc, mu, logvar, dec, eps, dlT, kl_scale, parts,
             rows=None, encoder=True):
    """Gradients of one batch from the logits' gradient ``dlT`` (items x batch).

    Fills the dense gradient views ``G``; returns ``(gE, gD, dpre1)``, the
    gradients of the two tables' active weights and of the encoder's first
    pre-activation. ``kl_scale`` is the KL weight divided by the batch size.
    With ``rows`` (a sampled softmax), ``dlT[q]`` is item ``rows[q]``'s and
    every other item's logit gradient is zero. ``encoder=False`` skips the
    encoder table's gradient (``gE`` is None: growth needs ``dpre1`` only).
    """
    aT = np.ascontiguousarray(dec[-1].T)
    W = _full(D)
    if rows is None:
        G["b_d"][:] = dlT.sum(axis=1)
    else:
        G["b_d"][:] = 0.0
        G["b_d"][rows] = dlT.sum(axis=1)
    if W is not None and rows is None:
        gD = (dlT @ dec[-1]).ravel()
        da = dlT.T @ W
    elif W is not None:
        gD = np.zeros(W.shape, np.float32)
        gD[rows] = dlT @ dec[-1]
        gD = gD.ravel()
        da = dlT.T @ W[rows]
    else:
        if rows is None:
            gD, rows = np.empty(D.nnz, np.float32), np.arange(D.n_rows, dtype=np.int64)
        else:
            gD = np.zeros(D.nnz, np.float32)
        if parts.shape[2] != aT.shape[1]:
            # Contiguous rows of exactly the batch: the kernel's inner loops vectorise.
            parts = np.empty(parts.shape[:2] + (aT.shape[1],), np.float32)
        KV.decoder_backward(rows, *_arr(D), aT, dlT, gD, parts)
        da = parts.sum(axis=0).T
    dpre1 = backward_dense(P, G, layout, enc, mu, logvar, dec, eps, da, kl_scale)
    if not encoder:
        gE = None
    elif _full(E) is not None:
        t_indptr, t_rows, t_vals = hist_t
        gE = (sp.csr_matrix((t_vals, t_rows, t_indptr), shape=(E.n_rows, len(dpre1)))
              @ dpre1).ravel()
    else:
        gE = np.empty(E.nnz, np.float32)
        KV.encoder_grad(*hist_t, *_arr(E)[:2], dpre1, gE)
    return gE, gD, dpre1


def backward_dense(P, G, layout, enc, mu, logvar, dec, eps, da, kl_scale):
    """The dense layers' part of :func:`backward`: from ``da`` (the gradient of the
    decoder's last activations) to the encoder's first pre-activation gradient,
    which it returns; fills the dense views ``G`` but ``b_d``. On one BLAS
    thread (:func:`one_blas_thread`)."""
    with one_blas_thread():
        return _backward_dense(P, G, layout, enc, mu, logvar, dec, eps, da, kl_scale)


def _backward_dense(P, G, layout, enc, mu, logvar, dec, eps, da, kl_scale):
    for layer in reversed(range(layout.n_dec)):
        dpre = da * (1.0 - dec[layer + 1] ** 2)
        G[f"dec_W{layer}"][:] = dec[layer].T @ dpre
        G[f"dec_b{layer}"][:] = dpre.sum(axis=0)
        da = dpre @ P[f"dec_W{layer}"].T
    var = np.exp(logvar)
    dmu = da + kl_scale * mu
    dlv = kl_scale * 0.5 * (var - 1.0)
    if eps is not None:
        dlv += da * eps * 0.5 * np.sqrt(var)
    dq = np.hstack([dmu, dlv]).astype(np.float32)
    G["q_W"][:] = enc[-1].T @ dq
    G["q_b"][:] = dq.sum(axis=0)
    da = dq @ P["q_W"].T
    for layer in reversed(range(layout.n_enc)):
        dpre = da * (1.0 - enc[layer + 1] ** 2)
        G[f"enc_W{layer}"][:] = enc[layer].T @ dpre
        G[f"enc_b{layer}"][:] = dpre.sum(axis=0)
        da = dpre @ P[f"enc_W{layer}"].T
    dpre1 = np.ascontiguousarray(da * (1.0 - enc[0] ** 2), np.float32)
    G["b_e"][:] = dpre1.sum(axis=0)
    return dpre1


def batch_loss(nll, mu, logvar, beta):
    """A batch's summed loss: negative log-likelihoods plus ``beta`` times the KL terms."""
    kl = -0.5 * np.sum(1.0 + logvar - mu ** 2 - np.exp(logvar), axis=1)
    return float(nll.sum()) + beta * float(kl.sum())


def transposed(indptr, indices, vals, shape):
    """Item-major CSR ``(indptr, batch rows, values)`` of a batch's input rows."""
    T = sp.csr_matrix((vals, indices, indptr), shape=shape).T.tocsr()
    return T.indptr.astype(np.int64), T.indices.astype(np.int32), T.data.astype(np.float32)


class VAEState:
    """What a Mult-VAE fit trains besides its tables: the dense parameters.

    ``dense`` has shape ``(3, layout.size)`` (weights, Adam m, Adam v);
    ``n_updates`` counts Adam steps (the KL annealing reads it).
    """

    def __init__(self, layout, dense, n_updates=0):
        self.layout, self.dense, self.n_updates = layout, dense, int(n_updates)


class VAEEngine(Engine):
    """Mult-VAE epochs (shuffled users, mini-batch Adam) and growth gradients.

    Trains the encoder and decoder tables (3 slots: weight and Adam's
    moments, full Adam every batch like PyTorch's) and the dense state
    ``state`` (:class:`VAEState`) in place. An epoch visits every user with
    an interaction once; the mean loss is per user. Randomness (order,
    dropout, the Gaussian noise) comes from a generator keyed by the epoch
    key, and the kernels are free of races, so with one thread a fit is
    bitwise reproducible.
    """

    def __init__(self, data, encoder, decoder, state, *, learning_rate, alpha, dropout, beta,
                 anneal_steps, batch_size, table_learning_rate=None, n_sampled=None):
        self.E, self.D, self.state = encoder, decoder, state
        n_users = data.x_indptr.shape[0] - 1
        n_items = encoder.n_rows
        self.X = sp.csr_matrix((data.x_weight, data.x_indices, data.x_indptr),
                               shape=(n_users, n_items))
        self.Xt = sp.csr_matrix((data.xt_weight, data.xt_indices, data.xt_indptr),
                                shape=(n_items, n_users))
        self.users = np.flatnonzero(np.diff(data.x_indptr))
        self.n_samples = len(self.users)
        self.lr, self.alpha = float(learning_rate), float(alpha)
        # The tables' step size (the estimator scales it with the density).
        self.table_lr = self.lr if table_learning_rate is None else float(table_learning_rate)
        self.dropout, self.beta = float(dropout), float(beta)
        self.anneal_steps = int(anneal_steps)
        self.batch = int(max(1, min(batch_size, max(self.n_samples, 1))))
        self.parts = np.zeros((numba.get_num_threads(), state.layout.hidden[0], self.batch),
                              np.float32)
        self.wmask = state.layout.weight_mask()
        # Sampled softmax: shared negatives drawn by item frequency (None: full softmax).
        self.n_sampled = None if n_sampled is None else int(n_sampled)
        if self.n_sampled is not None:
            q = item_proposal(np.diff(self.Xt.indptr))
            self.cdf, self.log1m_q = np.cumsum(q), np.log1p(-q)

    def anneal(self):
        """The KL weight of the next update: ``min(beta, n_updates / anneal_steps)``."""
        if self.anneal_steps == 0:
            return self.beta
        return min(self.beta, self.state.n_updates / self.anneal_steps)

    def _batch_input(self, users, rng):
        Xb = self.X[users]
        B = len(users)
        vals, rows = normalised(Xb.indptr, Xb.indices, Xb.data, B)
        idx = Xb.indices.astype(np.int64)
        if rng is not None and self.dropout > 0:
            keep = rng.random(len(vals)) >= self.dropout
            vals = vals[keep] / np.float32(1.0 - self.dropout)
            k_idx, k_rows = Xb.indices[keep], rows[keep]
        else:
            k_idx, k_rows = Xb.indices, rows
        indptr = np.zeros(B + 1, np.int64)
        np.cumsum(np.bincount(k_rows, minlength=B), out=indptr[1:])
        hist = (indptr, k_idx.astype(np.int32), vals.astype(np.float32))
        hist_t = transposed(*hist, (B, self.E.n_rows))
        return hist, hist_t, (idx, rows, Xb.data.astype(np.float32))

    def _pass(self, users, rng, G, *, train_noise, cand=None):
        """Forward pass over ``users``: activations and the logits (of items ``cand``)."""
        layout = self.state.layout
        P = layout.views(self.state.dense[0])
        B = len(users)
        hist, hist_t, target = self._batch_input(users, rng if train_noise else None)
        eps = rng.standard_normal((B, layout.d), dtype=np.float32) if train_noise else None
        enc, mu, logvar, dec = forward(self.E, P, layout, hist, eps)
        aT = np.ascontiguousarray(dec[-1].T)
        L = logits_t(self.D, aT, P["b_d"], rows=cand)
        return enc, mu, logvar, dec, eps, L, hist_t, target

    def epoch(self, key):
        """One epoch: shuffled batches, each one Adam step (the CUDA engine shares this loop)."""
        layout, state = self.state.layout, self.state
        rng = np.random.default_rng(int(key))
        order = rng.permutation(self.users)
        grad = np.zeros(layout.size, np.float32)
        G = layout.views(grad)
        P = layout.views(state.dense[0])
        total = 0.0
        for s in range(0, len(order), self.batch):
            loss, table_grads = self._batch(np.sort(order[s: s + self.batch]), rng, P, G)
            total += loss
            state.n_updates += 1
            t = state.n_updates
            self._adam_tables(table_grads, *KV.adam_constants(t, self.table_lr))
            self._adam_dense(grad, t)
        return total

    def _batch(self, users, rng, P, G):
        """Loss and gradients of one batch: ``(loss, table gradients)``, ``G`` filled.

        The loss is the batch's negative log-likelihood plus the annealed KL
        (summed over its users); the table gradients go to :meth:`_adam_tables`.
        """
        layout = self.state.layout
        B = len(users)
        cand = None
        if self.n_sampled is not None:
            Xb = self.X[users]
            cand, logp = sampled_candidates(np.unique(Xb.indices), self.cdf, self.log1m_q,
                                            self.n_sampled, rng)
        enc, mu, logvar, dec, eps, L, hist_t, (idx, rows, vals) = self._pass(
            users, rng, G, train_noise=True, cand=cand)
        beta = self.anneal()
        if cand is not None:
            L -= logp[:, None]
            idx = np.searchsorted(cand, idx)
        nll, _ = softmax_loss_grad(L, idx, rows, vals, np.float32(1.0 / B))
        gE, gD, _ = backward(self.E, self.D, P, G, layout, hist_t, enc, mu, logvar, dec,
                             eps, L, np.float32(beta / B), self.parts, rows=cand)
        return batch_loss(nll, mu, logvar, beta), (gE, gD)

    def _adam_tables(self, grads, lr1, inv_bc2):
        """One Adam step on both tables' active weights (``grads``: encoder's, decoder's)."""
        for tab, g in zip((self.E, self.D), grads, strict=True):
            KV.adam_table(tab.values_buf, g, tab.nnz, lr1, inv_bc2, np.float32(self.alpha))

    def _adam_dense(self, g, t):
        w, m, v = self.state.dense
        if self.alpha:
            g = g + np.float32(self.alpha) * w * self.wmask
        m *= np.float32(BETA1)
        m += np.float32(1.0 - BETA1) * g
        v *= np.float32(BETA2)
        v += np.float32(1.0 - BETA2) * g * g
        lr1 = np.float32(self.lr / (1.0 - BETA1 ** t))
        bc2 = np.float32(np.sqrt(1.0 - BETA2 ** t))
        w -= lr1 * m / (np.sqrt(v) / bc2 + np.float32(ADAM_EPS))

    def _grow_sample(self, rng):
        """``(base, sample)``: up to ``_GROW_USERS`` random users, and those plus one
        random interactor of every item with an interaction (sorted)."""
        n = self.n_samples
        base = np.sort(rng.choice(self.users, min(_GROW_USERS, n), replace=False))
        counts = np.diff(self.Xt.indptr)
        has = np.flatnonzero(counts)
        pick = self.Xt.indptr[has] + (rng.random(len(has)) * counts[has]).astype(np.int64)
        return base, np.union1d(base, self.Xt.indices[pick])

    def _sample_passes(self, sample, P):
        """``(dpre1, A, lse)`` of the growth sample's users, by blocks (no dropout, ``z = mu``).

        The gradient of the mean loss at the encoder's first pre-activation,
        the decoder's last activations and the log-normalisers, one row per
        user (the CUDA engine shares this loop through :meth:`_sample_pass`).
        """
        layout = self.state.layout
        scratch = layout.views(np.zeros(layout.size, np.float32))
        S = len(sample)
        dpre = np.empty((S, layout.hidden[0]), np.float32)
        A = np.empty((S, layout.hidden[0]), np.float32)
        lse = np.empty(S, np.float32)
        for b0 in range(0, S, BLOCK):
            users = sample[b0: b0 + BLOCK]
            b1 = b0 + len(users)
            dpre[b0:b1], A[b0:b1], lse[b0:b1] = self._sample_pass(users, P, scratch, S)
        return dpre, A, lse

    def _growth_inputs(self, base, sample, P):
        """What both engines' growth gradients read, on the host.

        ``XsT`` (items x sample, CSR) the sample's normalised input and
        ``dpre`` its first pre-activation gradients (encoder side); ``A``,
        ``lse``, ``nx`` and ``XbT`` the base users' last activations,
        log-normalisers, history sizes and histories item-major (decoder side).
        """
        dpre, A, lse = self._sample_passes(sample, P)
        Xs = self.X[sample]
        vals, _ = normalised(Xs.indptr, Xs.indices, Xs.data, len(sample))
        pos = np.searchsorted(sample, base)
        Xb = self.X[base]
        return dict(
            XsT=sp.csr_matrix((vals, Xs.indices, Xs.indptr), shape=Xs.shape).T.tocsr(),
            dpre=dpre, A=np.ascontiguousarray(A[pos]), lse=lse[pos],
            nx=np.asarray(Xb.sum(axis=1)).ravel().astype(np.float32),
            XbT=Xb.T.tocsr().astype(np.float32))

    def _sample_pass(self, users, P, scratch, S):
        """One block of :meth:`_sample_passes` (``S``: the sample's size, the loss's divisor)."""
        enc, mu, logvar, dec, _, L, hist_t, (idx, rows, vals) = self._pass(
            users, None, scratch, train_noise=False)
        lse = softmax_loss_grad(L, idx, rows, vals, np.float32(1.0 / S))[1]
        dpre = backward(self.E, self.D, P, scratch, self.state.layout, hist_t, enc, mu, logvar,
                        dec, None, L, np.float32(self.anneal() / S), self.parts,
                        encoder=False)[2]
        return dpre, dec[-1], lse

    def grow_fns(self, key):
        """Dense gradients of the mean loss (no dropout, ``z = mu``) for both tables.

        The decoder's come from up to ``_GROW_USERS`` random users; the
        encoder's from those plus one random interactor of every item, so
        every item row with an interaction is covered. Computed once per
        update, then served in row chunks (the decoder's logits are
        recomputed per chunk, so memory stays bounded by the chunk).
        """
        rng = np.random.default_rng(int(key))
        base, sample = self._grow_sample(rng)
        layout = self.state.layout
        cache = {}

        def prepare():
            if cache:
                return
            P = layout.views(self.state.dense[0])
            cache.update(self._growth_inputs(base, sample, P), P=P)
            cache["aT"] = np.ascontiguousarray(cache["A"].T)

        def fill_encoder(r0, r1, G):
            prepare()
            G[:] = cache["XsT"][r0:r1] @ cache["dpre"]

        def fill_decoder(r0, r1, G):
            prepare()
            G[:] = 0.0
            nb = len(base)
            for b0 in range(0, nb, BLOCK):
                b1 = min(nb, b0 + BLOCK)
                L = logits_t(self.D, np.ascontiguousarray(cache["aT"][:, b0:b1]),
                             cache["P"]["b_d"], r0, r1)
                L -= cache["lse"][b0:b1]
                np.exp(L, out=L)
                L *= cache["nx"][b0:b1]
                L -= cache["XbT"][r0:r1, b0:b1].toarray()
                G += L @ cache["A"][b0:b1]
            G *= np.float32(1.0 / max(nb, 1))

        return [fill_encoder, fill_decoder]
