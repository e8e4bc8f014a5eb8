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
        self.user_batch = max(1, int(round(batch * data.x_indptr.shape[0] / max(data.nnz, 1))))
        self.n_samples = data.nnz
        self.cdf, self.logq = proposal(np.diff(data.xt_indptr), self.n_neg, NEGATIVE_BETA)
        T, d, N = numba.get_num_threads(), users.n_cols, self.n_neg
        self.work = (np.zeros((T, d, N), np.float32), np.zeros((T, d, N), np.float32),
                     np.zeros((T, N), np.int64), np.zeros((T, N)), np.zeros((T, d), np.float32),
                     np.zeros((T, d), np.float32))
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

    def _prepare(self, key):
        """Shared negatives, per-user log-partitions and the item growth sample of ``key``."""
        if self._grow is not None and self._grow[0] == key:
            return self._grow[1]
        u, i, dt = self.users, self.items, self.data
        d, N = u.n_cols, self.n_neg
        neg = np.empty(N, np.int64)
        _softmax.draw_negatives_host(np.uint64(key), N, self.cdf, neg)
        QT = np.zeros((d, N), np.float32)
        _softmax.gather_block_host(QT, neg, i.indptr, i.indices, i.values_buf)
        LN = np.empty(u.n_rows)
        A = np.empty(u.n_rows)
        S = np.empty((_GROW_BLOCKS, N))
        PU = np.zeros((_GROW_BLOCKS, d), np.float32)
        _softmax.user_partition(LN, A, QT, neg, N, dt.x_indptr, dt.x_indices, dt.x_weight,
                                dt.f_indptr, dt.f_indices, u.indptr, u.indices, u.values_buf,
                                i.indptr, i.indices, i.values_buf, self.logq, self.inv_t, S, PU)
        n_users = u.n_rows
        m = min(n_users, _GROW_ITEM_USERS)
        rng = np.random.default_rng(int(splitmix64(np.uint64(key))))
        sample = np.sort(rng.choice(n_users, m, replace=False)) if m < n_users \
            else np.arange(n_users)
        prep = {"neg": neg, "QT": QT, "LN": LN, "A": A, "S": S, "PU": PU,
                "sample": sample.astype(np.int64), "scale": n_users / max(m, 1)}
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
