"""Scoring, new users and checks of a fitted LightGCN model.

Shared by :class:`~sparse_rec.DSLLightGCN` and its served twin in
:mod:`sparse_rec.serving`; imports numpy, scipy and numba only.

A model file holds the layer-0 tables and the interaction pattern
``seen_``; the graph and the final (propagated) embeddings are derived from
them once, on first use after a fit or a load, and kept in ``_cache``.
"""

import numbers

import numpy as np
import scipy.sparse as sp

from .._kernels import _lightgcn as K
from .._kernels import _topk
from .._threads import numba_threads
from .._validation import check_pattern
from ..backends.cpu_lightgcn import Graph, final_layer_weights, propagate

# Query rows scored per dense block (bounds the score block's memory).
_BLOCK_ROWS = 256


class LightGCNModel:
    """Model hooks of ``RecommenderMixin`` over ``user_table_``, ``item_table_`` and ``seen_``.

    Needs ``n_layers_`` and ``n_threads`` besides the fitted attributes.
    """

    _snapshot_attributes = ("user_table_", "item_table_")
    # What a model file stores (sparse_rec._io); the optimiser state is not.
    _saved_attributes = (
        "user_table_", "item_table_", "n_layers_", "seen_", "n_users_", "n_items_",
        "n_features_in_", "n_active_", "nbytes_", "dense_nbytes_", "n_iter_", "history_",
        "best_validation_score_", "validation_scores_", "folded_users_", "folded_graph_",
        "unit_items_", "layer_weights_",
    )
    # Shapes checked on load (sparse_rec._io), before _check_loaded.
    _loaded_shapes = (
        ("user_table_", ("n_users_", "n_components")),
        ("item_table_", ("n_items_", "n_components")),
        ("seen_", ("n_users_", "n_items_")),
    )

    def _check_loaded(self):
        """Raise ValueError unless a loaded model is safe for the kernels."""
        L = getattr(self, "n_layers_", None)
        if not (isinstance(L, numbers.Integral) and not isinstance(L, bool) and 0 <= L <= 64):
            raise ValueError(f"n_layers_ must be an integer in [0, 64]; got {L!r}.")
        # Files written before loss="softmax" existed rank by dot products.
        unit = getattr(self, "unit_items_", False)
        if not isinstance(unit, (bool, np.bool_)):
            raise ValueError(f"unit_items_ must be a bool; got {unit!r}.")
        self.unit_items_ = bool(unit)
        # Files written before layer_weights existed hold the mean of the layers.
        w = getattr(self, "layer_weights_", None)
        if w is None:
            self.layer_weights_ = final_layer_weights(int(L))
        else:
            w = np.asarray(w)
            if (w.shape != (L + 1,) or w.dtype.kind != "f" or not np.isfinite(w).all()
                    or (w < 0).any() or w[-1] <= 0):
                raise ValueError(f"layer_weights_ must be n_layers_ + 1 = {L + 1} finite "
                                 f"non-negative floats with a positive last one; got {w!r}.")
            self.layer_weights_ = w.astype(np.float32)
        for tab in (self.user_table_, self.item_table_):
            if tab.values_buf.dtype != np.float32:
                raise ValueError("layer-0 weights must be float32.")
        # Files written before partial_fit_users existed have no folded users.
        users, G = getattr(self, "folded_users_", None), getattr(self, "folded_graph_", None)
        if (users is None) != (G is None):
            raise ValueError("folded_users_ and folded_graph_ come together; the file has one.")
        if users is None:
            self.folded_users_ = np.zeros(0, np.int64)
            self.folded_graph_ = sp.csr_matrix((0, self.n_items_), dtype=np.float32)
            return
        users = np.asarray(users)
        if users.ndim != 1 or (users.size and users.dtype.kind not in "iu"):
            raise ValueError(f"folded_users_ must be a 1-D integer array; got {users.dtype} of "
                             f"shape {users.shape}.")
        if users.size and (users.min() < 0 or users.max() >= self.n_users_
                           or (np.diff(users) <= 0).any()):
            raise ValueError("folded_users_ must be increasing user indices below n_users_.")
        if not sp.issparse(G) or G.shape != (len(users), self.n_items_):
            raise ValueError(f"folded_graph_ must be a sparse ({len(users)}, n_items_) matrix; "
                             f"got {getattr(G, 'shape', type(G).__name__)}.")
        self.folded_graph_ = check_pattern(G, (len(users), self.n_items_), "folded_graph_")

    # --- fitted views ----------------------------------------------------------
    @property
    def user_factors_(self):
        """Layer-0 user embeddings (the trained parameters), CSR."""
        return self.user_table_.to_csr()

    @property
    def item_factors_(self):
        """Layer-0 item embeddings (the trained parameters), CSR."""
        return self.item_table_.to_csr()

    @property
    def user_embeddings_(self):
        """Final user embeddings (mean of the layers), dense float32 (a copy)."""
        return self._final()[0].copy()

    @property
    def item_embeddings_(self):
        """Final item embeddings (mean of the layers), dense float32 (a copy).

        Unit rows when ``unit_items_`` (a model trained on cosines ranks by them).
        """
        return self._final()[1].copy()

    def _folded(self):
        """``(users, graph rows)`` of the users added or refitted by ``partial_fit_users``."""
        users = getattr(self, "folded_users_", None)
        if users is None or len(users) == 0:
            return np.zeros(0, np.int64), None
        return np.asarray(users, np.int64), self.folded_graph_

    def _graph_pattern(self):
        """CSR ``(indptr, indices)`` the propagation reads: ``seen_``, except that a
        folded user keeps the graph row it had before (none for an added user)."""
        X = self.seen_
        users, G = self._folded()
        if G is None:
            return X.indptr, X.indices
        src = np.arange(self.n_users_)
        src[users] = self.n_users_ + np.arange(len(users))
        stacked = sp.vstack([sp.csr_matrix(X), sp.csr_matrix(G, dtype=X.dtype)]).tocsr()
        out = stacked[src]
        out.sort_indices()
        return out.indptr, out.indices

    def _graph(self):
        cache = self.__dict__.setdefault("_cache", {})
        if "graph" not in cache:
            # Mid-fit (early stopping, callbacks) the graph is the training
            # split's; afterwards the pattern the model keeps as seen_.
            g = self.__dict__.get("_train_graph")
            if g is None:
                g = Graph.from_pattern(*self._graph_pattern(), self.n_items_)
            cache["graph"] = g
        return cache["graph"]

    def _final(self):
        """``(Fu, Fi, Pi)``: final embeddings and the items' summed layers below L (cached).

        A folded user's final embedding is the fold-in of its ``seen_`` row
        (``_fold_in``), not its propagated one.
        """
        cache = self.__dict__.setdefault("_cache", {})
        if "final" not in cache:
            with numba_threads(self.n_threads):
                Fu, Fi, Pi = propagate(self._graph(), self.user_table_, self.item_table_,
                                       int(self.n_layers_), item_layers=True,
                                       weights=self._layer_weights())
            if getattr(self, "unit_items_", False):
                # Trained on cosines: a user's ranking is by F_u . F_i / |F_i|.
                norms = np.sqrt(np.einsum("id,id->i", Fi, Fi))
                Fi /= np.where(norms > 0, norms, 1.0)[:, None]
            users, _ = self._folded()
            if len(users) and "_train_graph" not in self.__dict__:
                Fu[users] = self._history_embeddings(self.seen_[users], Pi)
            cache["final"] = Fu, Fi, Pi
        return cache["final"]

    # --- model hooks for RecommenderMixin --------------------------------------
    def _top_n(self, rows, n, ex_indptr, ex_indices, allowed, user_side=None, self_exclude=False,
               items=None):
        Fu, Fi, _ = self._final()
        Q = Fu if user_side is None else user_side
        if items is not None:
            Fi = items
        out_idx = np.empty((len(rows), n), np.int64)
        out_val = np.empty((len(rows), n), np.float32)
        with numba_threads(self.n_threads):
            for b0 in range(0, len(rows), _BLOCK_ROWS):
                b1 = min(len(rows), b0 + _BLOCK_ROWS)
                S = np.ascontiguousarray(Q[rows[b0:b1]] @ Fi.T, dtype=np.float32)
                e0, e1 = ex_indptr[b0], ex_indptr[b1]
                _topk.select_top_n(S, n, rows[b0:b1], ex_indptr[b0:b1 + 1] - e0,
                                   ex_indices[e0:e1], allowed, self_exclude,
                                   out_idx[b0:b1], out_val[b0:b1])
        return out_idx, out_val

    def _score(self, rows, cand, user_side=None):
        Fu, Fi, _ = self._final()
        Q = (Fu if user_side is None else user_side)[rows]
        return np.einsum("bd,bmd->bm", Q, Fi[cand]).astype(np.float32)

    def _fold_in(self, X):
        """Final embeddings of users given by their histories ``X``: one propagation step.

        LightGCN's final user embedding is ``w_0 E0_u + sum_{l < L} w_{l+1}
        sum_i c_ui E_i^(l)`` with the layer weights ``w`` (``layer_weights_``;
        ``1 / (n_layers + 1)`` each by default) and ``c_ui = 1 / sqrt(|h_u|
        deg(i))``. A new user has no layer-0 row (``E0_u = 0``)
        and the fitted item layers stand for the graph with the user added,
        so its embedding is that sum over its history: no training, a pure
        function of the row. For a user of the training data this gives
        exactly its final embedding less ``w_0 E0_u``. Interaction values are
        ignored (the graph is binary); an empty history gives zero scores.
        """
        return self._history_embeddings(X, self._final()[2])

    def _layer_weights(self):
        """``w_0 .. w_L`` of the final embeddings (the mean for models without them)."""
        w = getattr(self, "layer_weights_", None)
        return final_layer_weights(int(self.n_layers_), w)

    def _history_embeddings(self, X, Pi):
        g = self._graph()
        out = np.empty((X.shape[0], Pi.shape[1]), np.float32)
        with numba_threads(self.n_threads):
            K.history_embeddings(X.indptr.astype(np.int64), X.indices.astype(np.int32),
                                 g.inv_sqrt_item_deg, Pi, np.float32(1.0), out)
        return out

    # --- workflow hooks (sparse_rec._workflows) --------------------------------
    def _user_vectors(self):
        return self._final()[0]

    def _explain(self, user, item, hist_items, hist_values):
        """Exact split of the score over the history (LightGCN's first propagation step).

        A user's final embedding is ``w_0 E0_u + sum_{j in h_u} c_uj P_j``
        (``w`` the layer weights, ``c_uj = 1 / sqrt(|h_u| deg(j))``, ``P_j =
        sum_{l < L} w_{l+1} E_j^(l)`` item ``j``'s weighted layers below
        ``L``), so the score of ``i`` is ``w_0 E0_u . F_i`` plus one term
        ``c_uj P_j . F_i`` per history item:
        those are the contributions, and the user's own layer-0 term is the
        rest. A folded user has no layer-0 term; with ``n_layers=0`` the
        history does not enter a fitted user's score at all.
        """
        Fu, Fi, Pi = self._final()
        score = float(np.dot(Fu[user].astype(np.float64), Fi[item]))
        users, _ = self._folded()
        folded = bool(np.isin(user, users))
        if int(self.n_layers_) == 0 and not folded:
            return np.zeros(len(hist_items)), score
        c = self._graph().inv_sqrt_item_deg[hist_items].astype(np.float64)
        c /= np.sqrt(len(hist_items))
        contrib = c * (Pi[hist_items].astype(np.float64) @ Fi[item].astype(np.float64))
        return contrib, score

    def _similar(self, rows, n):
        _, Fi, _ = self._final()
        norms = np.sqrt((Fi.astype(np.float64) ** 2).sum(axis=1))
        unit = (Fi / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)
        ex = np.zeros(len(rows) + 1, np.int64), np.zeros(0, np.int32)
        allowed = np.ones(self.n_items_, np.bool_)
        return self._top_n(rows, n, *ex, allowed, user_side=unit, self_exclude=True,
                           items=unit)
