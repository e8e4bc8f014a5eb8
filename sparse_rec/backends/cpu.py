"""CPU engines (DSL-MF's BPR, NCF) and MF scoring: serial or parallel kernels, block sizes."""

import numba
import numpy as np

from .._kernels import _bpr, _topk
from .._kernels import _ncf as KN
from ._engine import Engine

SGD = _bpr.SGD
ADAGRAD = _bpr.ADAGRAD
OPTIMIZERS = {"sgd": SGD, "adagrad": ADAGRAD}

# Interactions per row that MF growth looks at (reweighted to a full epoch).
# An item's sample costs more than a user's (positive and negative draws,
# more scattered reads), so items look at fewer: prune/grow then stays
# below a tenth of the fit time at the default update_interval.
_GROW_SAMPLES_USER = 8
_GROW_SAMPLES_ITEM = 4
_GROW_SAMPLES_ITEM_NEG = 4
# NCF growth: interactions per embedding row, and instances that estimate
# the MLP layers' dense gradients.
_NCF_GROW_SAMPLES = 8
_NCF_GROW_MLP_INSTANCES = 4096
_NCF_GROW_MLP_BLOCKS = 16


def _n_blocks(n_samples, n_threads):
    # Enough blocks to balance threads, each large enough to amortise its
    # two small buffers.
    return int(max(n_threads, min(n_threads * 64, n_samples // 2048 + 1)))


def bpr_epoch(data, users, items, bias_v, n_samples, key, lr, reg, optimizer):
    """One BPR epoch; serial (bitwise reproducible) when one thread is set."""
    n_threads = numba.get_num_threads()
    args = (
        n_samples, key, users.n_cols,
        data.x_indices, data.x_weight, data.x_rows, data.f_indptr, data.f_indices,
        users.indptr, users.indices, users.values_buf,
        items.indptr, items.indices, items.values_buf,
        bias_v, np.float32(lr), np.float32(reg), optimizer,
    )
    if n_threads == 1:
        return _bpr.bpr_epoch_serial(*args)
    return _bpr.bpr_epoch_parallel(*args, _n_blocks(n_samples, n_threads))


def grad_users(data, users, items, bias_v, m, key):
    def fill(r0, r1, G):
        _bpr.grad_users_chunk(
            r0, r1, G, m, key, data.x_indptr, data.x_indices, data.x_weight,
            data.f_indptr, data.f_indices, users.indptr, users.indices, users.values_buf,
            items.indptr, items.indices, items.values_buf, bias_v,
        )
    return fill


def grad_items(data, users, items, bias_v, m, key, m_neg=None):
    neg_per_item = data.nnz / max(items.n_rows, 1)

    def fill(r0, r1, G):
        _bpr.grad_items_chunk(
            r0, r1, G, m, m if m_neg is None else m_neg, key, neg_per_item,
            data.x_indptr, data.x_indices, data.x_weight, data.x_rows,
            data.xt_indptr, data.xt_indices, data.xt_weight,
            data.f_indptr, data.f_indices, users.indptr, users.indices, users.values_buf,
            items.indptr, items.indices, items.values_buf, bias_v,
        )
    return fill


class MFEngine(Engine):
    """BPR epochs and growth gradients of DSL-MF on the CPU.

    Trains ``users``, ``items`` (tables with weight and Adagrad slots) and
    ``bias_v`` (item bias and its state, shape ``(n_items, 2)``) in place.
    """

    def __init__(self, data, users, items, bias_v, *, learning_rate, alpha, optimizer):
        self.data, self.users, self.items, self.bias_v = data, users, items, bias_v
        self.learning_rate, self.alpha = learning_rate, alpha
        self.optimizer = OPTIMIZERS[optimizer]
        self.n_samples = data.nnz

    def epoch(self, key):
        return bpr_epoch(self.data, self.users, self.items, self.bias_v, self.n_samples, key,
                         self.learning_rate, self.alpha, self.optimizer)

    def grow_fns(self, key):
        args = (self.data, self.users, self.items, self.bias_v)
        return [
            grad_users(*args, _GROW_SAMPLES_USER, key),
            grad_items(*args, _GROW_SAMPLES_ITEM, key, _GROW_SAMPLES_ITEM_NEG),
        ]


def half_bits(n):
    """Smallest ``h`` with ``4**h >= n`` (the Feistel permutation's domain)."""
    h = 1
    while 4**h < n:
        h += 1
    return h


def _arrays(t):
    return t.indptr, t.indices, t.values_buf


def _interactions(data):
    return KN.Interactions(data.x_indptr, data.x_indices, data.x_weight, data.x_rows,
                           data.xt_indptr, data.xt_indices, data.xt_weight, data.f_indptr,
                           data.f_indices)


def ncf_row_scales(data, n_items, k1):
    """Per embedding table and row, the square root of the instances of an epoch that reach it.

    The curvature of the epoch's loss sum at a weight ``W[k, j]`` of a
    table grows with the sum over the epoch's instances of the squared
    input ``z_k`` that the weight multiplies. An embedding row is a
    weight matrix whose input is a one-hot indicator, so that sum is
    ``n_r``, the instances that involve row ``r``: a user's interactions
    and their negatives (``k1`` each), an item's interactions plus the
    ``(k1 - 1) * nnz / n_items`` times an epoch draws it as a negative.
    With ``H ~ n_r``, growing a coordinate lowers the loss by about
    ``g**2 / (2 H)`` and pruning a weight raises it by about ``H w**2 / 2``,
    so ``grow_scores="frequency"`` ranks growth by ``|g| / sqrt(n_r)`` and
    pruning by ``|w| * sqrt(n_r)``: a frequent row's summed gradient no
    longer wins only because it sums more instances. The MLP layers' rows
    (input units) have real-valued inputs; see :func:`ncf_layer_scales`.
    Returns float32 arrays in PruneGrow order (four embedding tables).

    Examples
    --------
    >>> from sparse_rec._base import TrainData
    >>> from sparse_rec.datasets import make_interactions
    >>> data = TrainData.from_matrix(make_interactions(4, 3, 8, random_state=0))
    >>> scales = ncf_row_scales(data, n_items=3, k1=5)
    >>> len(scales), scales[0].shape, scales[1].shape
    (4, (4,), (3,))
    >>> bool(np.allclose(scales[0] ** 2, 5 * np.diff(data.x_indptr)))
    True
    """
    users = np.sqrt(np.maximum(np.diff(data.x_indptr) * float(k1), 1.0))
    neg = (k1 - 1) * data.nnz / max(n_items, 1)
    items = np.sqrt(np.maximum(np.diff(data.xt_indptr) + neg, 1.0))
    users, items = users.astype(np.float32), items.astype(np.float32)
    return [users, items, users, items]


def ncf_layer_scales(data, embeddings, net, k1, seed, n_instances=_NCF_GROW_MLP_INSTANCES):
    """Per MLP layer and input unit ``k``, ``sqrt(N * mean(z_k**2))`` over an epoch's instances.

    The row scale of ``grow_scores="frequency"`` for a layer: its row ``k``
    holds the weights that multiply input ``z_k`` (an MLP embedding
    coordinate for the first layer, a ReLU unit after it), so the curvature
    of the epoch's loss sum at those weights grows with ``sum z_k**2`` over
    the epoch's ``N = nnz * k1`` instances, as an embedding row's grows with
    its instance count (its input is one-hot). Estimated at the current
    weights from ``n_instances`` instances (interactions drawn uniformly,
    each replaced by a uniform random item with probability
    ``(k1 - 1) / k1`` as a negative), the same for growth and pruning of a
    step. An input that is always zero (an MLP embedding column no row
    holds, a dead ReLU) gets a scale near 0: its weights change nothing, so
    they are pruned first, and their gradient is zero, so they are not
    grown.

    Examples
    --------
    >>> from sparse_rec._base import TrainData
    >>> from sparse_rec._ncf import DSLNCF
    >>> from sparse_rec.datasets import make_interactions
    >>> X = make_interactions(30, 20, 200, random_state=0)
    >>> est = DSLNCF(n_components=4, hidden_layer_sizes=(4,), density=0.5, max_iter=1,
    ...              random_state=0).fit(X)
    >>> from sparse_rec._ncf.scoring import _Net
    >>> net = _Net.from_fitted(est)
    >>> emb = [est.user_gmf_table_, est.item_gmf_table_, est.user_mlp_table_,
    ...        est.item_mlp_table_]
    >>> s = ncf_layer_scales(TrainData.from_matrix(X), emb, net, k1=5, seed=0)
    >>> [x.shape for x in s]
    [(8,)]
    >>> empty = est.user_mlp_table_.nnz == 0   # columns no user row holds give scale ~0
    >>> bool(empty) == bool(np.all(s[0][:4] < 1e-3))
    True
    """
    rng = np.random.default_rng(int(seed))
    n = int(n_instances)
    n_items = embeddings[1].n_rows
    if data.nnz == 0 or n_items == 0:
        return [np.ones(int(m), np.float32) for m in net.n_in]
    at = rng.integers(0, data.nnz, n)
    users = np.asarray(data.x_rows, np.int64)[at]
    items = np.asarray(data.x_indices, np.int64)[at]
    negative = rng.random(n) < (k1 - 1) / k1
    items = np.where(negative, rng.integers(0, n_items, n), items)
    z = np.hstack([embeddings[2].dense_rows(users), embeddings[3].dense_rows(items)])
    z = z.astype(np.float64)
    total = float(data.nnz) * k1
    out = []
    for layer, tab in enumerate(net.layers):
        # A tiny floor keeps the growth score g / scale finite (g is 0 there anyway).
        out.append(np.sqrt(total * (np.mean(z * z, axis=0) + 1e-12)).astype(np.float32))
        W = tab.dense_rows(np.arange(tab.n_rows)).astype(np.float64)
        b0 = int(net.b_off[layer])
        b = net.dense_v[b0: b0 + int(net.n_out[layer]), 0].astype(np.float64)
        z = np.maximum(z @ W + b, 0.0)
    return out


def _scaled_fill(fill, scale):
    """A growth callback whose rows ``r0:r1`` are divided by ``scale[r0:r1]`` (or a scalar)."""
    def scaled(r0, r1, G):
        fill(r0, r1, G)
        G /= scale[r0:r1, None] if np.ndim(scale) else scale
    return scaled


class NCFEngine(Engine):
    """NeuMF epochs (mini-batch Adam, Hogwild over threads) and growth gradients.

    Trains the four embedding tables and the network ``net`` (a
    :class:`sparse_rec._ncf.scoring._Net`: layer tables, their packed copy and
    the dense parameters, all with Adam slots) in place. Work buffers have
    one row per Numba thread at construction; one thread runs the serial
    kernel, so a fit is bitwise reproducible.
    """

    def __init__(self, data, embeddings, net, *, learning_rate, alpha, n_negatives,
                 batch_size, grow_scores="raw"):
        self.data, self.embeddings, self.net = data, list(embeddings), net
        self.interactions = _interactions(data)
        self.learning_rate, self.alpha = learning_rate, alpha
        self.k1 = int(n_negatives) + 1
        self.n_samples = data.nnz * self.k1
        self.grow_scores = grow_scores
        self.row_scales = ncf_row_scales(data, self.embeddings[1].n_rows, self.k1)
        self._layer_scales = None  # (adam_step, scales) of the current update
        self.half_bits = half_bits(self.n_samples)
        self.batch = int(min(batch_size, max(self.n_samples, 1)))
        self.adam_step = 0
        d, T, batch = net.d, numba.get_num_threads(), self.batch
        # Work buffers, one row per thread.
        self.work = (
            np.zeros((T, net.n_act), np.float32), np.zeros((T, net.n_act), np.float32),
            np.zeros((T, d), np.float32), np.zeros((T, d), np.float32),
            np.zeros((T, batch, 4 * d), np.float32), np.zeros((T, batch), np.int64),
            np.zeros((T, batch), np.int64),
        )
        self.dense_grad = np.zeros((T, net.dense_v.shape[0]), np.float32)
        self.acc = np.zeros((T, d), np.float32)

    def epoch(self, key):
        net = self.net
        net.pack()
        T = self.acc.shape[0]
        # The MLP gradient buffer follows the packed weights (their count moves).
        gm = np.zeros((T, net.m_w.shape[0]), np.float32)
        work = KN.Work(*self.work, gm, self.dense_grad, self.acc)
        args = (
            self.n_samples, self.k1, self.batch, key, self.half_bits, self.adam_step,
            float(self.learning_rate), np.float32(self.alpha), self.interactions,
            self.embeddings[1].n_rows, net.d, tuple(_arrays(t) for t in self.embeddings),
            net.kernel_net(), net.m_v, net.w_range,
        )
        if T == 1:
            loss = KN.train_batches(0, 1, *args, work, 0)
        else:
            loss = KN.ncf_epoch_parallel(*args, work)
        self.adam_step += (self.n_samples + self.batch - 1) // self.batch
        net.unpack()
        return loss

    def rebuild(self):
        self.net.pack()

    def grow_fns(self, key):
        """Dense-gradient callbacks, one per table (embeddings, then MLP layers)."""
        data, net, k1 = self.data, self.net, self.k1
        d = net.d
        n_items = self.embeddings[1].n_rows
        neg_per_item = (k1 - 1) * data.nnz / max(n_items, 1)
        net.m_w[:] = net.m_v[:, 0]
        emb = tuple(_arrays(t) for t in self.embeddings)
        inter, knet = self.interactions, net.kernel_net()

        def rows_fn(which):
            def fill(r0, r1, G):
                KN.grad_embedding_rows(
                    which, r0, r1, G, _NCF_GROW_SAMPLES, key, float(k1 - 1), neg_per_item,
                    inter, n_items, d, emb, knet, net.n_act,
                )
            return fill

        sizes = [int(a * b) for a, b in zip(net.n_in, net.n_out, strict=True)]
        w_off = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        cache = {}

        def mlp_grads():
            # All layers come from one pass over a sample of the epoch's
            # instances; computed once per update, served row by row.
            if "G" not in cache:
                out = np.zeros(sum(sizes), np.float32)
                n_s = int(min(self.n_samples, _NCF_GROW_MLP_INSTANCES))
                KN.grad_mlp_dense(
                    n_s, min(_NCF_GROW_MLP_BLOCKS, max(n_s, 1)), key, self.n_samples, k1,
                    self.half_bits, out, inter, n_items, d, emb, knet, net.n_act, w_off,
                )
                cache["G"] = out
            return cache["G"]

        def layer_fn(layer):
            def fill(r0, r1, G):
                no = int(net.n_out[layer])
                block = mlp_grads()[w_off[layer]: w_off[layer] + sizes[layer]]
                G[:] = block.reshape(-1, no)[r0:r1]
            return fill

        fns = [rows_fn(w) for w in range(4)] + [layer_fn(t) for t in range(len(net.layers))]
        if self.grow_scores == "raw":
            return fns
        return [_scaled_fill(f, s) for f, s in zip(fns, self.score_scales(key), strict=True)]

    def score_scales(self, key=0):
        """Row scales of every table for ``grow_scores="frequency"``, at the current weights.

        The embeddings' from their rows' instance counts
        (:func:`ncf_row_scales`), the MLP layers' from their inputs'
        activity (:func:`ncf_layer_scales`), computed once per update (the
        Adam step count changes with every epoch) so growth and pruning of
        one step share them.
        """
        if self._layer_scales is None or self._layer_scales[0] != self.adam_step:
            scales = ncf_layer_scales(self.data, self.embeddings, self.net, self.k1, key)
            self._layer_scales = (self.adam_step, scales)
        return self.row_scales + self._layer_scales[1]

    def prune_scores(self):
        """``|w|`` (``grow_scores="raw"``: None) or ``|w|`` times the row's scale."""
        if self.grow_scores == "raw":
            return None
        tables = self.embeddings + list(self.net.layers)
        return [np.abs(t.weights) * s[np.repeat(np.arange(t.n_rows), t.row_nnz())]
                for t, s in zip(tables, self.score_scales(), strict=True)]


# Above this item-table density scoring uses dense blocks and BLAS: CSR
# saves nothing there, and scattered adds are far slower than a matmul.
DENSE_SCORING_DENSITY = 0.5
_BLOCK_ROWS = 256


def top_n(rows, n, query, item_t, bias, ex_indptr, ex_indices, allowed, self_exclude=False,
          items=None):
    """Top ``n`` items per query row; ``items`` (the item table) enables dense scoring."""
    out_idx = np.empty((len(rows), n), np.int64)
    out_val = np.empty((len(rows), n), np.float32)
    if items is not None and items.nnz >= DENSE_SCORING_DENSITY * items.n_rows * items.n_cols:
        # Only the queried rows are densified, never a copy of the whole table.
        Q = items.dense_rows(np.arange(items.n_rows))
        for b0 in range(0, len(rows), _BLOCK_ROWS):
            b1 = min(len(rows), b0 + _BLOCK_ROWS)
            S = query.dense_rows(rows[b0:b1]) @ Q.T
            S += bias
            e0, e1 = ex_indptr[b0], ex_indptr[b1]
            _topk.select_top_n(
                S, n, rows[b0:b1], ex_indptr[b0:b1 + 1] - e0, ex_indices[e0:e1], allowed,
                self_exclude, out_idx[b0:b1], out_val[b0:b1],
            )
        return out_idx, out_val
    _topk.recommend_top_n(
        rows, n, query.indptr, query.indices, query.weights,
        item_t[0], item_t[1], item_t[2], bias,
        ex_indptr, ex_indices, allowed, self_exclude, out_idx, out_val,
    )
    return out_idx, out_val


def score(rows, cand, query, items, bias):
    out = np.empty(cand.shape, np.float32)
    _topk.score_candidates(
        rows, cand, query.n_cols, query.indptr, query.indices, query.weights,
        items.indptr, items.indices, items.weights, bias, out,
    )
    return out


# Strided row blocks of the iALS kernels: a fixed count, so results do not
# depend on the number of threads.
_IALS_BLOCKS = 64


def _ials_confidence(data):
    """Confidences of the user rows and the item rows, on the patterns the solves read.

    Without ``exclude`` these are the interactions themselves. With it, the
    rows run over observed and excluded pairs, an excluded pair with
    confidence 0 (so it is neither a positive nor a negative).
    """
    if data.f_indices is data.x_indices:
        return ((data.x_indptr, data.x_indices, data.x_weight),
                (data.xt_indptr, data.xt_indices, data.xt_weight))
    import scipy.sparse as sp

    n_items = max(int(data.xt_indptr.shape[0]) - 1, 1)
    rows_f = np.repeat(np.arange(data.f_indptr.shape[0] - 1, dtype=np.int64),
                       np.diff(data.f_indptr))
    key_f = rows_f * n_items + data.f_indices
    key_x = data.x_rows.astype(np.int64) * n_items + data.x_indices
    at = np.minimum(np.searchsorted(key_x, key_f), max(len(key_x) - 1, 0))
    found = key_x[at] == key_f if len(key_x) else np.zeros(len(key_f), np.bool_)
    conf = np.where(found, data.x_weight[at] if len(key_x) else 0, 0).astype(np.float32)
    F = sp.csr_matrix((conf, data.f_indices, data.f_indptr),
                      shape=(data.f_indptr.shape[0] - 1, n_items))
    Ft = F.T.tocsr()  # conversions keep the explicit zeros
    Ft.sort_indices()
    return ((data.f_indptr, data.f_indices, conf),
            (np.asarray(Ft.indptr, np.int64), np.asarray(Ft.indices, np.int32),
             np.asarray(Ft.data, np.float32)))


class IALSEngine(Engine):
    """iALS epochs of DSL-MF on the CPU: exact row solves on the active coordinates.

    An epoch solves every user row on its active coordinates against the
    item table (through the items' Gram matrix), then every item row against
    the users. Growth scores are ``g / sqrt(H_jj)`` (exact full-data
    gradient over the row's curvature), prune scores ``w**2 * H_jj``; see
    :mod:`sparse_rec._kernels._ials`. ``bias_v`` is left at zero (iALS has
    no bias).
    """

    def __init__(self, data, users, items, bias_v, *, regularization, unobserved_weight,
                 popularity_exponent=0.0):
        from .._kernels import _ials

        self._k = _ials
        self.users, self.items = users, items
        self.lam, self.w0 = float(regularization), float(unobserved_weight)
        self.user_rows, self.item_rows = _ials_confidence(data)
        self.n_samples = data.nnz
        # The unobserved weight of pair (u, i) is w0 * q_i: q (mean 1) by the
        # item's training count, all 1 without popularity weighting.
        counts = np.diff(data.xt_indptr)
        q = _ials.ials_item_factors(counts, popularity_exponent)
        # Per side: (the solved rows' factors, the other side's factors).
        self._w = {"user": (np.full(users.n_rows, self.w0), q),
                   "item": (self.w0 * q, np.ones(users.n_rows))}
        self._cache = None

    def _gram(self, tab, wo):
        return self._k.gram(tab.indptr, tab.indices, tab.values_buf, tab.n_cols, wo)

    def _solve(self, tab, rows, other, side):
        wr, wo = self._w[side]
        G = self._gram(other, wo)
        loss = np.zeros(tab.n_rows)
        reg = np.zeros(tab.n_rows)
        self._k.solve_rows(tab.indptr, tab.indices, tab.values_buf, *rows, other.indptr,
                           other.indices, other.values_buf, G, wr, wo, self.lam,
                           _IALS_BLOCKS, loss, reg)
        return loss, reg

    def epoch(self, key):
        # Deterministic: the key is not needed (no sampling).
        self._cache = None
        _, user_reg = self._solve(self.users, self.user_rows, self.items, "user")
        item_loss, _ = self._solve(self.items, self.item_rows, self.users, "item")
        # Each item row's objective holds the whole data loss once and the
        # item ridge; the user ridge comes from the user solves.
        return float(item_loss.sum() + user_reg.sum())

    def _scores(self):
        # Growth (rows x n_cols) and prune scores of both tables at the
        # current weights, from one gradient pass; computed once per
        # prune/grow step, whichever of grow_fns and prune_scores asks first.
        if self._cache is None:
            self._cache = []
            for tab, rows, other, side in ((self.users, self.user_rows, self.items, "user"),
                                           (self.items, self.item_rows, self.users, "item")):
                wr, wo = self._w[side]
                grow = np.empty((tab.n_rows, tab.n_cols), np.float32)
                prune = np.empty(tab.nnz, np.float32)
                self._k.curvature_scores(grow, prune, tab.indptr, tab.indices, tab.values_buf,
                                         *rows, other.indptr, other.indices, other.values_buf,
                                         self._gram(other, wo), wr, wo, self.lam,
                                         _IALS_BLOCKS)
                self._cache.append((grow, prune))
        return self._cache

    def grow_fns(self, key):
        def make(t):
            def fill(r0, r1, out):
                out[:] = self._scores()[t][0][r0:r1]
            return fill
        return [make(0), make(1)]

    def prune_scores(self):
        return [prune for _, prune in self._scores()]

    def rebuild(self):
        self._cache = None
