"""Scoring, fold-in and checks of a fitted DSLNCF model.

Shared by :class:`~sparse_rec.DSLNCF` and the served model of
:mod:`sparse_rec.serving`; imports numpy, scipy and numba only.
"""

import numbers

import numpy as np

from .._kernels import _ncf as KN
from .._kernels import _topk
from .._table import SparseEmbeddingTable
from .._threads import numba_threads

# Fold-in of new users: Adam passes on all coordinates, then on the kept ones.
_FOLD_IN_PASSES = 20
_FOLD_IN_REFINE = 10
_FOLD_IN_LR_SCALE = 10.0
_FOLD_IN_KEY = 0x5EED_F01D
_SCORE_BLOCK = 4096



class _Net:
    """Layout of the NeuMF parameters as the kernels read them.

    Holds the per-layer MLP tables (what PruneGrow works on), their packed
    copy (one CSR whose rows are every layer's inputs, what the kernels
    read), the dense parameters with their Adam state and the offsets.
    """

    def __init__(self, d, hidden, layers, dense_v):
        self.d = d
        self.hidden = tuple(int(h) for h in hidden)
        self.layers = layers
        self.dense_v = dense_v
        L = len(self.hidden)
        self.n_out = np.array(self.hidden, np.int64)
        self.n_in = np.array((2 * d,) + self.hidden[:-1], np.int64)
        self.w_row0 = np.concatenate(([0], np.cumsum(self.n_in)[:-1])).astype(np.int64)
        self.b_off = np.concatenate(([0], np.cumsum(self.n_out)[:-1])).astype(np.int64)
        self.h_off = int(self.n_out.sum())
        self.o_off = self.h_off + d + self.hidden[-1]
        self.a_off = np.concatenate(([0, 2 * d], 2 * d + np.cumsum(self.n_out)[:-1])).astype(
            np.int64)[: L + 1]
        self.n_act = int(self.a_off[L] + self.n_out[L - 1])
        # L2 applies to the fusion weights, not to the biases.
        self.w_range = np.array([self.h_off, self.o_off], np.int64)
        self.pack()

    @staticmethod
    def n_dense(d, hidden):
        return int(sum(hidden)) + d + int(hidden[-1]) + 1

    def pack(self):
        """Copy the layer tables into the packed arrays the kernels read."""
        indptr = [np.zeros(1, np.int64)]
        base = 0
        for t in self.layers:
            indptr.append(t.indptr[1:] + base)
            base += t.nnz
        self.m_indptr = np.concatenate(indptr)
        self.m_indices = np.concatenate([t.indices for t in self.layers]).astype(np.int32)
        self.m_v = np.concatenate([t.values_buf[: t.nnz] for t in self.layers])
        self.m_w = np.ascontiguousarray(self.m_v[:, 0])

    def unpack(self):
        """Copy the packed values (trained) back into the layer tables."""
        p = 0
        for t in self.layers:
            t.values_buf[: t.nnz] = self.m_v[p: p + t.nnz, : t.n_slots]
            p += t.nnz

    def packed_table(self):
        """The MLP weights as one table (rows: inputs of every layer in order)."""
        return SparseEmbeddingTable(
            self.m_indptr.copy(), self.m_indices.astype(np.int16 if max(self.hidden) < 32768
                                                        else np.int32),
            np.ascontiguousarray(self.m_v[:, :1]), max(self.hidden),
        )

    def kernel_net(self):
        """The arrays the kernels read, as one :data:`sparse_rec._kernels._ncf.Net`."""
        return KN.Net(self.m_indptr, self.m_indices, self.m_w, self.dense_v, self.n_in,
                      self.n_out, self.w_row0, self.b_off, self.a_off, self.h_off, self.o_off)

    @classmethod
    def from_fitted(cls, est, n_slots=1):
        """Layout of a fitted estimator (weights only unless ``n_slots`` > 1)."""
        d = est.user_gmf_table_.n_cols
        hidden = tuple(int(h) for h in est.hidden_layer_sizes_)
        layers = _split_layers(est.mlp_table_, d, hidden, n_slots)
        dense = np.zeros((cls.n_dense(d, hidden), 3), np.float32)
        dense[:, 0] = np.concatenate(
            [est.intercepts_, est.fusion_weights_, [est.fusion_bias_]])
        return cls(d, hidden, layers, dense)


def _split_layers(packed, d, hidden, n_slots):
    """Per-layer tables from a packed MLP table (weights, zero state)."""
    n_in = (2 * d,) + tuple(hidden[:-1])
    layers = []
    r = 0
    for ni, no in zip(n_in, hidden, strict=True):
        p0, p1 = packed.indptr[r], packed.indptr[r + ni]
        values = np.zeros((p1 - p0, n_slots), np.float32)
        values[:, 0] = packed.values_buf[p0:p1, 0]
        layers.append(SparseEmbeddingTable(
            packed.indptr[r: r + ni + 1] - p0,
            packed.indices_buf[p0:p1].astype(np.int16 if no < 32768 else np.int32),
            values, no,
        ))
        r += ni
    return layers


def _dense_layer(table):
    """A small layer table as a dense (n_in, n_out) float32 matrix."""
    return table.dense_rows(np.arange(table.n_rows))



class NCFModel:
    """Model hooks of ``RecommenderMixin`` over the fitted NeuMF arrays.

    Needs ``n_components``, ``learning_rate``, ``alpha``, ``n_negatives``,
    ``n_threads``, ``n_users_``, ``n_items_`` and the fitted tables.
    """

    _snapshot_attributes = (
        "user_gmf_table_", "item_gmf_table_", "user_mlp_table_", "item_mlp_table_",
        "mlp_table_", "intercepts_", "fusion_weights_", "fusion_bias_",
    )
    # Fitted attributes stored in model files (sparse_rec._io).
    _saved_attributes = _snapshot_attributes + (
        "hidden_layer_sizes_", "seen_", "n_users_", "n_items_", "n_features_in_", "n_active_",
        "nbytes_", "dense_nbytes_", "n_iter_", "history_", "best_validation_score_",
        "validation_scores_",
    )

    @property
    def coefs_(self):
        d = self.user_gmf_table_.n_cols
        hidden = tuple(int(h) for h in self.hidden_layer_sizes_)
        return [t.to_csr() for t in _split_layers(self.mlp_table_, d, hidden, 1)]

    # Shapes checked on load (sparse_rec._io), before _check_loaded.
    _loaded_shapes = (("seen_", ("n_users_", "n_items_")),)

    def _check_loaded(self):
        """Raise ValueError unless a loaded model's arrays fit together (no kernel
        may index out of bounds on a crafted file)."""
        hidden = self.hidden_layer_sizes_
        if not (len(hidden) >= 1 and all(isinstance(h, numbers.Integral) and h > 0
                                         for h in hidden)):
            raise ValueError(f"hidden_layer_sizes_ must be positive integers; got {hidden!r}.")
        hidden = tuple(int(h) for h in hidden)
        d = self.user_gmf_table_.n_cols
        for name, rows in (("user_gmf_table_", self.n_users_), ("item_gmf_table_", self.n_items_),
                           ("user_mlp_table_", self.n_users_),
                           ("item_mlp_table_", self.n_items_)):
            tab = getattr(self, name)
            if tab.shape != (rows, d):
                raise ValueError(f"{name} has shape {tab.shape}; expected {(rows, d)}.")
        n_in = (2 * d,) + hidden[:-1]
        mlp = self.mlp_table_
        if mlp.shape != (sum(n_in), max(hidden)):
            raise ValueError(f"mlp_table_ has shape {mlp.shape}; expected "
                             f"{(sum(n_in), max(hidden))}.")
        r = 0
        for ni, no in zip(n_in, hidden, strict=True):
            p0, p1 = mlp.indptr[r], mlp.indptr[r + ni]
            if p1 > p0 and int(mlp.indices_buf[p0:p1].max()) >= no:
                raise ValueError(f"mlp_table_ has a weight beyond a layer's {no} outputs.")
            r += ni
        for name, size in (("intercepts_", sum(hidden)), ("fusion_weights_", d + hidden[-1])):
            arr = np.asarray(getattr(self, name))
            if arr.shape != (size,) or arr.dtype.kind != "f":
                raise ValueError(f"{name} must be {size} floats; got {arr.dtype} {arr.shape}.")

    def _scoring_net(self):
        """Dense copies of the small parts scoring needs (cached)."""
        cache = self.__dict__.setdefault("_cache", {})
        if "net" not in cache:
            d = self.user_gmf_table_.n_cols
            hidden = tuple(int(h) for h in self.hidden_layer_sizes_)
            layers = _split_layers(self.mlp_table_, d, hidden, 1)
            W1 = _dense_layer(layers[0])
            n_out = np.array(hidden, np.int64)
            s_off = np.concatenate(([0], np.cumsum(n_out))).astype(np.int64)
            parts, w_off, b_off, pos = [], np.zeros(len(hidden), np.int64), np.zeros(
                len(hidden), np.int64), 0
            b_start = np.concatenate(([0], np.cumsum(n_out)[:-1]))
            for t in range(1, len(hidden)):
                W = _dense_layer(layers[t]).ravel()
                w_off[t] = pos
                parts.append(W)
                pos += W.size
                b_off[t] = pos
                b = self.intercepts_[b_start[t]: b_start[t] + hidden[t]]
                parts.append(b)
                pos += b.size
            h_off = pos
            parts.append(self.fusion_weights_[d:])
            dense_w = np.concatenate(parts).astype(np.float32) if parts else np.zeros(
                0, np.float32)
            cache["net"] = dict(
                W1u=W1[:d], W1i=W1[d:], b1=self.intercepts_[: hidden[0]],
                h_gmf=self.fusion_weights_[:d].astype(np.float32), dense_w=dense_w,
                n_out=n_out, s_off=s_off, w_off=w_off, b_off=b_off, h_off=int(h_off),
                o_bias=float(self.fusion_bias_),
            )
        return cache["net"]

    def _item_side(self):
        cache = self.__dict__.setdefault("_cache", {})
        if "items" not in cache:
            net = self._scoring_net()
            every = np.arange(self.n_items_)
            QG = self.item_gmf_table_.dense_rows(every)
            I1 = self.item_mlp_table_.dense_rows(every) @ net["W1i"] + net["b1"]
            cache["items"] = (QG, np.ascontiguousarray(I1, np.float32))
        return cache["items"]

    def _user_side(self, ug, um, rows):
        """``(UGH, U1)`` for ``rows`` of the user tables ``ug, um``."""
        net = self._scoring_net()
        UGH = ug.dense_rows(rows) * net["h_gmf"]
        U1 = um.dense_rows(rows) @ net["W1u"]
        return np.ascontiguousarray(UGH, np.float32), np.ascontiguousarray(U1, np.float32)

    def _sides(self, rows, user_side):
        if user_side is None:
            UGH, U1 = self._user_side(self.user_gmf_table_, self.user_mlp_table_, rows)
            local = np.arange(len(rows), dtype=np.int64)
        else:
            UGH, U1 = user_side
            local = np.asarray(rows, np.int64)
        return local, UGH, U1

    # --- model hooks for RecommenderMixin --------------------------------------
    def _top_n(self, rows, n, ex_indptr, ex_indices, allowed, user_side=None):
        net = self._scoring_net()
        QG, I1 = self._item_side()
        rows = np.asarray(rows, np.int64)
        out_idx = np.empty((len(rows), n), np.int64)
        out_val = np.empty((len(rows), n), np.float32)
        with numba_threads(self.n_threads):
            # Blocks of users bound the dense user-side arrays.
            for b0 in range(0, len(rows), _SCORE_BLOCK):
                b1 = min(len(rows), b0 + _SCORE_BLOCK)
                local, UGH, U1 = self._sides(rows[b0:b1], user_side)
                e0, e1 = ex_indptr[b0], ex_indptr[b1]
                KN.recommend_top_n(
                    local, n, UGH, U1, QG, I1, net["dense_w"], net["n_out"], net["s_off"],
                    net["w_off"], net["b_off"], net["h_off"], net["o_bias"],
                    ex_indptr[b0:b1 + 1] - e0, ex_indices[e0:e1], allowed,
                    out_idx[b0:b1], out_val[b0:b1],
                )
        return out_idx, out_val

    def _score(self, rows, cand, user_side=None):
        net = self._scoring_net()
        QG, I1 = self._item_side()
        rows = np.asarray(rows, np.int64)
        cand = np.ascontiguousarray(cand, np.int64)
        out = np.empty(cand.shape, np.float32)
        with numba_threads(self.n_threads):
            for b0 in range(0, len(rows), _SCORE_BLOCK):
                b1 = min(len(rows), b0 + _SCORE_BLOCK)
                local, UGH, U1 = self._sides(rows[b0:b1], user_side)
                KN.score_candidates(
                    local, cand[b0:b1], UGH, U1, QG, I1, net["dense_w"], net["n_out"],
                    net["s_off"], net["w_off"], net["b_off"], net["h_off"], net["o_bias"],
                    out[b0:b1],
                )
        return out

    def _fold_in(self, X):
        """User-side arrays for histories ``X``, trained against the fixed rest.

        Each row gets dense GMF and MLP user rows, trained by
        ``_FOLD_IN_PASSES`` passes of per-instance Adam (step size
        ``_FOLD_IN_LR_SCALE * learning_rate``) over its interactions, each
        followed by ``n_negatives`` uniform negatives outside the history;
        then each row keeps the fitted tables' mean number of active weights
        per user (largest magnitudes) and refines them for
        ``_FOLD_IN_REFINE`` passes. Random draws are keyed by the row's
        items, so a row's result does not depend on the other rows.
        """
        ug, um = self._fold_in_tables(X)
        return self._user_side(ug, um, np.arange(X.shape[0]))

    def _fold_in_tables(self, X):
        """The GMF and MLP user tables of the fold-in of ``X`` (see ``_fold_in``)."""
        d = self.user_gmf_table_.n_cols
        n = X.shape[0]
        net = _Net.from_fitted(self)
        x_indptr = X.indptr.astype(np.int64)
        x_indices = X.indices.astype(np.int32)
        ug = _dense_table(n, d)
        um = _dense_table(n, d)
        items = (self.item_gmf_table_, self.item_mlp_table_)
        args = dict(lr=float(_FOLD_IN_LR_SCALE * self.learning_rate), reg=float(self.alpha))

        def run(passes, ug, um):
            KN.fold_in_users(
                x_indptr, x_indices, passes, int(self.n_negatives), args["lr"], args["reg"],
                np.uint64(_FOLD_IN_KEY), 0, _tab(ug), _tab(um), _tab(items[0]), _tab(items[1]),
                net.kernel_net(), net.n_act, self.n_items_, d,
            )

        with numba_threads(self.n_threads):
            run(_FOLD_IN_PASSES, ug, um)
            kept = []
            for tab, fitted in ((ug, self.user_gmf_table_), (um, self.user_mlp_table_)):
                k_keep = int(min(d, max(1, round(fitted.nnz / max(self.n_users_, 1)))))
                kept.append(_keep_largest(tab, k_keep))
            run(_FOLD_IN_REFINE, *kept)
        return kept

    # --- workflow hooks (sparse_rec._workflows) --------------------------------
    def _user_vectors(self):
        import scipy.sparse as sp

        return sp.hstack([self.user_gmf_table_.to_csr(), self.user_mlp_table_.to_csr()]).tocsr()

    def _partial_user_tables(self, X):
        ug, um = self._fold_in_tables(X)
        return {"user_gmf_table_": ug, "user_mlp_table_": um}

    def _partial_item_rows(self, items, X_cols):
        raise NotImplementedError(
            "DSLNCF cannot add or refit items without a refit: its item rows feed the MLP "
            "together with every user's, and it has no solve of item rows against a fixed "
            "user side (users can be added with partial_fit_users). Refit with the new items."
        )

    def _similar(self, rows, n):
        """Cosine over the concatenated GMF and MLP item embeddings."""
        every = np.arange(self.n_items_)
        E = np.hstack([self.item_gmf_table_.dense_rows(every),
                       self.item_mlp_table_.dense_rows(every)])
        with numba_threads(self.n_threads):
            return _topk.cosine_top_n(E, rows, n, _SCORE_BLOCK)


def _tab(t):
    return t.indptr, t.indices, t.values_buf


def _dense_table(n_rows, d):
    """A table with every coordinate active, zero weights, 3 slots."""
    indptr = np.arange(0, (n_rows + 1) * d, d, dtype=np.int64)
    indices = np.tile(np.arange(d, dtype=np.int16 if d < 32768 else np.int32), n_rows)
    return SparseEmbeddingTable(indptr, indices, np.zeros((n_rows * d, 3), np.float32), d)


def _keep_largest(tab, k):
    """Copy of a dense table keeping the ``k`` largest |w| of each row (state reset)."""
    n, d = tab.shape
    W = tab.weights.reshape(n, d)
    order = np.argsort(-np.abs(W), axis=1, kind="stable")[:, :k]
    cols = np.sort(order, axis=1)
    values = np.zeros((n * k, 3), np.float32)
    values[:, 0] = np.take_along_axis(W, cols, axis=1).ravel()
    indptr = np.arange(0, (n + 1) * k, k, dtype=np.int64)
    return SparseEmbeddingTable(indptr, cols.ravel().astype(tab.indices.dtype), values, d)

