"""CPU engine of DSL-MF's sampled-softmax loss (``loss="softmax"``)."""

import numba
import numpy as np

from .._kernels import _softmax
from .._kernels._rng import splitmix64
from ._engine import Engine

# Positives per batch sharing one draw of negatives.
SOFTMAX_BATCH = 256
# Exponent of the negatives' proposal q(j) ~ (count_j + 1) ** beta: 0 is
# uniform, 1 popularity; the log-q correction keeps the softmax unbiased.
NEGATIVE_BETA = 0.5
# Batches of users, each with all its positives (one user step per epoch),
# instead of batches of positives: the user's negative scores are shared by
# its positives, so an epoch costs one pass per user, not per interaction.
PER_USER = True
# Users whose terms estimate an item's negative gradient at a growth step
# (all users below this; the sum is scaled to all of them).
_GROW_ITEM_USERS = 1024
# Growth scores divided by sqrt(mean Adagrad accumulator) of their row (a
# curvature estimate): off, it lowered ml-100k validation Recall@20 at
# density 0.2 from 0.228 to 0.188.
GROW_NORMALISE = False
# Work rows of the growth kernels: a fixed count, so growth scores do not
# depend on the number of threads.
_GROW_BLOCKS = 64


def proposal(item_counts, n_negatives, beta=NEGATIVE_BETA):
    """``(cdf, logq)`` of the negatives' proposal: its cumulative sum and ``log(N q(j))``."""
    w = (np.asarray(item_counts, np.float64) + 1.0) ** beta
    q = w / w.sum()
    return np.cumsum(q), np.log(n_negatives * q)


def _user_batch(data, batch):
    """Users per batch of the user-batch kernels: about ``batch`` interactions each."""
    return max(1, int(round(batch * data.x_indptr.shape[0] / max(data.nnz, 1))))


def _work(d, n_neg, n_extra=0):
    """Per-thread work rows of the softmax-family epochs (``n_extra`` more ``(T, N)`` rows).

    ``QT`` and ``GQ`` (``d x N``), the negatives, the scores, ``pu`` and ``gu``.
    """
    T = numba.get_num_threads()
    return (np.zeros((T, d, n_neg), np.float32), np.zeros((T, d, n_neg), np.float32),
            np.zeros((T, n_neg), np.int64), np.zeros((T, n_neg)), np.zeros((T, d), np.float32),
            np.zeros((T, d), np.float32)) + tuple(np.zeros((T, n_neg)) for _ in range(n_extra))


class SoftmaxEngine(Engine):
    """Sampled-softmax epochs of DSL-MF on the CPU (see :mod:`sparse_rec._kernels._softmax`).

    Trains ``users`` and ``items`` (weight and Adagrad slots) in place;
    ``bias_v`` is left at zero (the loss has no bias). Growth scores are the
    full-data gradient at one shared draw of negatives per step, the users'
    exact, the items' negative part from a uniform sample of users; with
    ``normalise`` each row's scores are divided by the square root of its
    mean Adagrad accumulator (a curvature estimate of the row).
    """

    def __init__(self, data, users, items, bias_v, *, learning_rate, alpha, n_negatives,
                 temperature, normalise=None, batch=SOFTMAX_BATCH, per_user=PER_USER):
        self.data, self.users, self.items = data, users, items
        self.lr, self.reg = np.float32(learning_rate), np.float32(alpha)
        self.inv_t = 1.0 / float(temperature)
        self.n_neg = int(n_negatives)
        self.batch = int(batch)
        self.normalise = GROW_NORMALISE if normalise is None else normalise
        self.per_user = per_user
        self.user_batch = _user_batch(data, batch)
        self.n_samples = data.nnz
        self.cdf, self.logq = proposal(np.diff(data.xt_indptr), self.n_neg, NEGATIVE_BETA)
        self.work = _work(users.n_cols, self.n_neg)
        self._grow = None

    def epoch(self, key):
        u, i, dt = self.users, self.items, self.data
        if self.per_user:
            order = np.random.default_rng(int(key)).permutation(u.n_rows).astype(np.int64)
            args = (order, self.user_batch, self.n_neg, key, *self.work,
                    dt.x_indptr, dt.x_indices, dt.x_weight, dt.f_indptr, dt.f_indices,
                    u.indptr, u.indices, u.values_buf, i.indptr, i.indices, i.values_buf,
                    self.cdf, self.logq, self.inv_t, self.lr, self.reg)
            if numba.get_num_threads() == 1:
                return _softmax.softmax_users_serial(*args)
            return _softmax.softmax_users_parallel(*args)
        args = (self.n_samples, self.batch, self.n_neg, key, *self.work,
                dt.x_indices, dt.x_weight, dt.x_rows, dt.f_indptr, dt.f_indices,
                u.indptr, u.indices, u.values_buf, i.indptr, i.indices, i.values_buf,
                self.cdf, self.logq, self.inv_t, self.lr, self.reg)
        if numba.get_num_threads() == 1:
            return _softmax.softmax_epoch_serial(*args)
        return _softmax.softmax_epoch_parallel(*args)

    def _draws(self, key):
        """The growth step's shared negatives, their rows (``QT``) and the items' user sample."""
        u, i = self.users, self.items
        d, N = u.n_cols, self.n_neg
        neg = np.empty(N, np.int64)
        _softmax.draw_negatives_host(np.uint64(key), N, self.cdf, neg)
        QT = np.zeros((d, N), np.float32)
        _softmax.gather_block_host(QT, neg, i.indptr, i.indices, i.values_buf)
        n_users = u.n_rows
        m = min(n_users, _GROW_ITEM_USERS)
        rng = np.random.default_rng(int(splitmix64(np.uint64(key))))
        sample = np.sort(rng.choice(n_users, m, replace=False)) if m < n_users \
            else np.arange(n_users)
        return {"neg": neg, "QT": QT, "sample": sample.astype(np.int64),
                "scale": n_users / max(m, 1)}

    def _prepare(self, key):
        """Shared negatives, per-user log-partitions and the item growth sample of ``key``."""
        if self._grow is not None and self._grow[0] == key:
            return self._grow[1]
        u, i, dt = self.users, self.items, self.data
        prep = self._draws(key)
        neg, QT, N = prep["neg"], prep["QT"], self.n_neg
        LN = np.empty(u.n_rows)
        A = np.empty(u.n_rows)
        S = np.empty((_GROW_BLOCKS, N))
        PU = np.zeros((_GROW_BLOCKS, u.n_cols), np.float32)
        _softmax.user_partition(LN, A, QT, neg, N, dt.x_indptr, dt.x_indices, dt.x_weight,
                                dt.f_indptr, dt.f_indices, u.indptr, u.indices, u.values_buf,
                                i.indptr, i.indices, i.values_buf, self.logq, self.inv_t, S, PU)
        prep.update(LN=LN, A=A, S=S, PU=PU)
        self._grow = (key, prep)
        return prep

    def _normalise(self, tab, r0, r1, G):
        if not self.normalise:
            return
        acc = tab.values_buf[: tab.nnz, 1].astype(np.float64)
        cnt = np.diff(tab.indptr[r0:r1 + 1])
        seg = np.add.reduceat(acc[tab.indptr[r0]:tab.indptr[r1]], tab.indptr[r0:r1] -
                              tab.indptr[r0]) if tab.indptr[r1] > tab.indptr[r0] else \
            np.zeros(r1 - r0)
        seg = np.where(cnt > 0, seg, 0.0)
        fallback = acc.mean() if tab.nnz else 1.0
        mean = np.where(cnt > 0, seg / np.maximum(cnt, 1), fallback)
        G /= np.sqrt(np.maximum(mean, 1e-12)).astype(np.float32)[:, None]

    def grow_fns(self, key):
        u, i, dt = self.users, self.items, self.data

        def users(r0, r1, G):
            p = self._prepare(key)
            _softmax.grad_users_chunk(r0, r1, G, p["LN"], p["QT"], p["neg"], self.n_neg,
                                      dt.x_indptr, dt.x_indices, dt.x_weight, dt.f_indptr,
                                      dt.f_indices, u.indptr, u.indices, u.values_buf,
                                      i.indptr, i.indices, i.values_buf, self.logq, self.inv_t,
                                      p["S"], p["PU"])
            self._normalise(u, r0, r1, G)

        def items(r0, r1, G):
            p = self._prepare(key)
            _softmax.grad_items_chunk(r0, r1, G, p["LN"], p["A"], p["sample"], p["scale"],
                                      dt.xt_indptr, dt.xt_indices, dt.xt_weight, u.indptr,
                                      u.indices, u.values_buf, i.indptr, i.indices,
                                      i.values_buf, self.inv_t, p["PU"])
            self._normalise(i, r0, r1, G)

        return [users, items]

    def rebuild(self):
        # The tables changed: the next step's growth sample is computed afresh.
        self._grow = None


# Cosine contrastive loss: the negatives' proposal exponent (0: uniform, as
# SimpleX draws them).
CCL_NEGATIVE_BETA = 0.0
# Rows x columns of the dense cosine blocks of the exact growth scores
# (float32: 32 MiB a block, three at a time).
_CCL_BLOCK = (2048, 4096)
# Interactions per batch of users sharing one draw of negatives (CCL): a
# batch's fixed cost (drawing, sorting and gathering its negatives, their
# norms and steps) then weighs little against its users' products. Gowalla
# validation Recall@20 at density 0.2: 0.132 / 0.133 with 256 / 1024 (800
# negatives), 0.139 / 0.139 with 1024 / 4096 (1600); ml-100k 0.290 / 0.287
# and built-in 0.187 / 0.186 with 256 / 4096 (run-to-run spread ~0.007).
CCL_BATCH = 4096
# Draws of the sampled growth scores (``grow_samples``; None: exact): items
# from the negatives' proposal for the users' scores, users in proportion to
# their weight for the items' (see ``CCLEngine._sampled_part``). Gowalla
# validation Recall@20 at the CCL defaults: 0.146-0.148 with 2048 (26 s of
# growth a fit), 0.151 with 8192 (128 s), 0.152 exact (437 s).
CCL_GROW_SAMPLES = 2048
# Norm of every row after each epoch. The loss ignores it; against it the
# Adagrad step is measured: learning_rate=0.05 moves a weight by up to a
# fifth of its row's norm (unit rows needed learning rates 0.15-0.5 on the
# validation splits, 0.05 left ml-100k at Recall@20 0.19 against 0.27).
CCL_ROW_NORM = 0.25
# Item rows' norms times ((count + 1) ** e) / mean: the loss ignores them,
# the dot product of ``recommend`` then ranks by norm x cosine, a mild
# popularity prior (a pure cosine gives a rare item a popular one's norm).
# Validation Recall@20 at density 0.2, e = 0 / 0.15 / 0.25 / 0.5: ml-100k
# 0.272 / 0.290 / 0.283 / 0.273, built-in 0.167 / 0.185 / 0.182 / 0.173.
CCL_ITEM_NORM_EXPONENT = 0.15


class CCLEngine(Engine):
    """Cosine contrastive (SimpleX CCL) epochs of DSL-MF on the CPU (see :mod:`.._kernels._ccl`).

    Trains ``users`` and ``items`` (weight and Adagrad slots) in place and
    scales every row to a fixed norm after each epoch (and once at the
    start): ``CCL_ROW_NORM`` for users, that times ``(count + 1) **
    CCL_ITEM_NORM_EXPONENT`` over its mean for items. The loss depends on
    directions only, so this changes no loss value, gives every row's steps
    one scale and makes the dot product of ``recommend`` rank by the
    cosine times the item's popularity factor. ``bias_v`` stays zero. Growth scores are the
    gradient of the loss in expectation over the negatives' draws: the
    positive part exact, the negative part estimated from ``grow_samples``
    draws per step (see :meth:`_sampled_part`; unbiased), or exact over all
    pairs in blocks of ``_CCL_BLOCK`` dense cosines when ``grow_samples``
    is None or the other side has at most that many rows. Pruning drops the
    smallest ``|w|`` (rows of one norm: a weight's share of its row).
    ``batch`` (None: ``CCL_BATCH``) interactions share one draw of
    negatives.
    """

    def __init__(self, data, users, items, bias_v, *, learning_rate, alpha, n_negatives,
                 margin, negative_weight, batch=None, grow_samples=CCL_GROW_SAMPLES):
        from .._kernels import _ccl

        self._k = _ccl
        self.data, self.users, self.items = data, users, items
        self.lr, self.reg = np.float32(learning_rate), np.float32(alpha)
        self.margin, self.neg_weight = float(margin), float(negative_weight)
        self.n_neg = int(n_negatives)
        self.grow_samples = None if grow_samples is None else int(grow_samples)
        self.user_batch = _user_batch(data, CCL_BATCH if batch is None else batch)
        self.n_samples = data.nnz
        counts = np.diff(data.xt_indptr)
        self.cdf, _ = proposal(counts, self.n_neg, CCL_NEGATIVE_BETA)
        self.q = np.diff(np.concatenate([[0.0], self.cdf]))  # the proposal itself
        self.zero = np.zeros(counts.shape[0])
        # Each user's total value (its positives' weight on the negative term).
        cw = np.concatenate([[0.0], np.cumsum(data.x_weight, dtype=np.float64)])
        self.user_weight = cw[data.x_indptr[1:]] - cw[data.x_indptr[:-1]]
        # Three more rows a thread: the negatives' norms, their gradient along q
        # and the positions of a user's negatives above the margin.
        self.work = _work(users.n_cols, self.n_neg, n_extra=2) + (
            np.zeros((numba.get_num_threads(), self.n_neg), np.int64),)
        s = (counts + 1.0) ** CCL_ITEM_NORM_EXPONENT
        self.target_norms = (np.full(users.n_rows, CCL_ROW_NORM),
                             CCL_ROW_NORM * s / s.mean())
        self._normalise()
        self._grow = None
        self._sample = None

    def _normalise(self):
        for tab, norms in zip((self.users, self.items), self.target_norms, strict=True):
            self._k.normalise_rows(tab.indptr, tab.values_buf, norms)

    def epoch(self, key):
        u, i, dt = self.users, self.items, self.data
        self._grow = None
        order = np.random.default_rng(int(key)).permutation(u.n_rows).astype(np.int64)
        args = (order, self.user_batch, self.n_neg, key, *self.work,
                dt.x_indptr, dt.x_indices, dt.x_weight, dt.f_indptr, dt.f_indices,
                u.indptr, u.indices, u.values_buf, i.indptr, i.indices, i.values_buf,
                self.cdf, self.zero, self.margin, self.neg_weight, self.lr, self.reg)
        if numba.get_num_threads() == 1:
            loss = self._k.ccl_users_serial(*args)
        else:
            loss = self._k.ccl_users_parallel(*args)
        self._normalise()
        return loss

    def _units(self):
        """Dense unit rows and norms of both tables (cached until the next rebuild)."""
        if self._grow is None:
            out = []
            for tab in (self.users, self.items):
                A = np.empty((tab.n_rows, tab.n_cols), np.float32)
                nrm = np.empty(tab.n_rows)
                self._k.dense_unit_rows(tab.indptr, tab.indices, tab.values_buf, tab.n_cols, A,
                                        nrm)
                out.append((A, nrm))
            self._grow = out
        return self._grow

    def _negative_part(self, G, r0, r1, side):
        """Add the negative term's expected gradient for rows ``r0:r1`` of ``side`` to ``G``."""
        (U, un), (Q, qn) = self._units()
        dt = self.data
        bu, bi = _CCL_BLOCK
        rw_all = self.user_weight * self.neg_weight
        own, other = (U, Q) if side == 0 else (Q, U)
        n_other = other.shape[0]
        step_own, step_other = (bu, bi) if side == 0 else (bi, bu)
        for a0 in range(r0, r1, step_own):
            a1 = min(r1, a0 + step_own)
            A = np.zeros((a1 - a0, own.shape[1]), np.float32)
            b = np.zeros(a1 - a0)
            for c0 in range(0, n_other, step_other):
                c1 = min(n_other, c0 + step_other)
                (x0, x1), (y0, y1) = ((a0, a1), (c0, c1)) if side == 0 else ((c0, c1), (a0, a1))
                Cos = U[x0:x1] @ Q[y0:y1].T
                W = np.empty_like(Cos)
                self._k.hinge_block(Cos, W, self.margin, rw_all[x0:x1], self.q[y0:y1], x0, y0,
                                    dt.f_indptr, dt.f_indices)
                if side == 0:
                    A += W @ Q[y0:y1]
                    b += (W * Cos).sum(axis=1)
                else:
                    A += W.T @ U[x0:x1]
                    b += (W * Cos).sum(axis=0)
            norms = (un if side == 0 else qn)[a0:a1]
            G[a0 - r0:a1 - r0] += ((A - b[:, None].astype(np.float32) * own[a0:a1])
                                   / norms[:, None].astype(np.float32))

    def _draws(self, key):
        """Sorted sampled items (from the proposal) and users (by weight) of ``key``."""
        if self._sample is None or self._sample[0] != key:
            M = self.grow_samples
            rng = np.random.default_rng(int(splitmix64(np.uint64(key) ^ np.uint64(0xCC1))))
            items = np.searchsorted(self.cdf, rng.random(M) * self.cdf[-1], side="right")
            cw = np.cumsum(self.user_weight)
            users = np.searchsorted(cw, rng.random(M) * cw[-1], side="right")
            self._sample = (key, np.sort(np.minimum(items, self.q.shape[0] - 1)),
                            np.sort(np.minimum(users, cw.shape[0] - 1)))
        return self._sample[1], self._sample[2]

    def _sampled_part(self, G, r0, r1, side, key):
        """Add an unbiased estimate of the negative term's expected gradient (rows ``r0:r1``).

        The exact term sums ``w C_u q(j) h(u, j)`` over all pairs outside the
        forbidden pattern (``h``: the hinge's gradient of the pair). Users'
        rows average it over ``M`` items drawn from ``q`` (weight ``w C_u /
        M`` a draw); items' rows over ``M`` users drawn with probability
        ``C_u / sum(C)`` (weight ``w sum(C) q(j) / M`` a draw, the importance
        weight ``C_u / pi_u``), so each is unbiased for its exact value at a
        cost of ``M`` cosines a row instead of the other side's size.
        """
        (U, un), (Q, qn) = self._units()
        dt = self.data
        items, users = self._draws(key)
        M = self.grow_samples
        step = _CCL_BLOCK[0]
        if side == 0:
            other = Q[items]
            cw = np.full(M, 1.0 / M)
            own, norms = U, un
        else:
            other = U[users]
            rw = np.full(M, self.neg_weight * self.user_weight.sum() / M)
            own, norms = Q, qn
        for a0 in range(r0, r1, step):
            a1 = min(r1, a0 + step)
            ids = np.arange(a0, a1)
            Cos = own[a0:a1] @ other.T if side == 0 else other @ own[a0:a1].T
            W = np.empty_like(Cos)
            if side == 0:
                self._k.hinge_sampled(Cos, W, self.margin, self.user_weight[a0:a1] *
                                      self.neg_weight, cw, ids, items, dt.f_indptr,
                                      dt.f_indices)
                A = W @ other
                b = (W * Cos).sum(axis=1)
            else:
                self._k.hinge_sampled(Cos, W, self.margin, rw, self.q[a0:a1], users, ids,
                                      dt.f_indptr, dt.f_indices)
                A = W.T @ other
                b = (W * Cos).sum(axis=0)
            G[a0 - r0:a1 - r0] += ((A - b[:, None].astype(np.float32) * own[a0:a1])
                                   / norms[a0:a1, None].astype(np.float32))

    def grow_fns(self, key):
        dt = self.data
        # A side whose other side has at most M rows is cheaper exact.
        others = (self.items.n_rows, self.users.n_rows)

        def negative(G, r0, r1, side):
            if self.grow_samples is None or others[side] <= self.grow_samples:
                self._negative_part(G, r0, r1, side)
            else:
                self._sampled_part(G, r0, r1, side, key)

        def users(r0, r1, G):
            (U, un), (Q, _) = self._units()
            self._k.positive_grad(r0, r1, G, dt.x_indptr, dt.x_indices, dt.x_weight, U, Q, un)
            negative(G, r0, r1, 0)

        def items(r0, r1, G):
            (U, _), (Q, qn) = self._units()
            self._k.positive_grad(r0, r1, G, dt.xt_indptr, dt.xt_indices, dt.xt_weight, Q, U,
                                  qn)
            negative(G, r0, r1, 1)

        return [users, items]

    def rebuild(self):
        # The tables changed: the dense unit rows are computed afresh.
        self._grow = None
