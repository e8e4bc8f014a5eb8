"""Scoring and checks of a fitted DSLMultVAE model.

Shared by :class:`~sparse_rec.DSLMultVAE` and the served model of
:mod:`sparse_rec.serving`; imports numpy, scipy and numba only. The model
is a pure function of a history row, so scoring a training user reads
that user's row of ``seen_`` and a new user needs no fold-in optimisation.
"""

import numbers

import numpy as np

from .._kernels import _topk
from .._threads import numba_threads
from ..backends import vae_cpu as V

_SCORE_BLOCK = V.BLOCK


class VAEModel:
    """Model hooks of ``RecommenderMixin`` over the fitted Mult-VAE arrays.

    Needs ``encoder_table_``, ``decoder_table_``, ``dense_params_``,
    ``layer_sizes_``, ``n_components_``, ``seen_``, ``n_users_``,
    ``n_items_`` and ``n_threads``.
    """

    _snapshot_attributes = ("encoder_table_", "decoder_table_", "dense_params_")
    # alpha="auto" (estimator.auto_alpha) passes the shared checks, also of loaded files.
    _alpha_auto = True
    # Fitted attributes stored in model files (sparse_rec._io).
    _saved_attributes = _snapshot_attributes + (
        "layer_sizes_", "n_components_", "n_updates_", "seen_", "n_users_", "n_items_",
        "n_features_in_", "n_active_", "nbytes_", "dense_nbytes_", "n_iter_", "history_",
        "best_validation_score_", "validation_scores_",
    )
    # Shapes checked on load (sparse_rec._io), before _check_loaded.
    _loaded_shapes = (
        ("seen_", ("n_users_", "n_items_")),
        ("dense_params_", (None,)),
    )

    def _layout(self):
        return V.Layout(self.n_items_, tuple(int(h) for h in self.layer_sizes_),
                        int(self.n_components_))

    @property
    def dense_layers_(self):
        """Name -> dense parameter (see the class notes for the names and shapes)."""
        return {k: v.copy() for k, v in self._layout().views(self.dense_params_).items()}

    def _check_loaded(self):
        """Raise ValueError unless a loaded model's arrays fit together (no kernel
        may index out of bounds on a crafted file)."""
        sizes = self.layer_sizes_
        if not (len(sizes) >= 1 and all(isinstance(h, numbers.Integral) and h > 0
                                        for h in sizes)):
            raise ValueError(f"layer_sizes_ must be positive integers; got {sizes!r}.")
        d = self.n_components_
        if not (isinstance(d, numbers.Integral) and d > 0):
            raise ValueError(f"n_components_ must be a positive integer; got {d!r}.")
        h0 = int(sizes[0])
        for name in ("encoder_table_", "decoder_table_"):
            tab = getattr(self, name)
            if tab.shape != (self.n_items_, h0):
                raise ValueError(f"{name} has shape {tab.shape}; expected "
                                 f"{(self.n_items_, h0)}.")
            if tab.values_buf.dtype != np.float32:
                raise ValueError(f"{name} weights must be float32.")
        w = np.asarray(self.dense_params_)
        size = self._layout().size
        if w.shape != (size,) or w.dtype != np.float32:
            raise ValueError(f"dense_params_ must be {size} float32 values; got {w.dtype} "
                             f"{w.shape}.")

    # --- the network -------------------------------------------------------------
    def _views(self):
        cache = self.__dict__.setdefault("_cache", {})
        if "views" not in cache:
            layout = self._layout()
            cache["views"] = layout, layout.views(np.ascontiguousarray(self.dense_params_,
                                                                       np.float32))
        return cache["views"]

    def _fold_in(self, X):
        """The decoder's last activations for histories ``X`` (a forward pass, no training)."""
        layout, P = self._views()
        with numba_threads(self.n_threads):
            return V.hidden_of(self.encoder_table_, P, layout, X.tocsr())

    def _logits(self, A):
        """Scores of every item for the rows of decoder activations ``A`` (batch x items)."""
        layout, P = self._views()
        L = V.logits_t(self.decoder_table_, np.ascontiguousarray(A.T, np.float32), P["b_d"])
        return np.ascontiguousarray(L.T)

    def _blocks(self, rows, user_side):
        """``(b0, b1, scores)`` per block of ``rows``: training users read their own row."""
        for b0 in range(0, len(rows), _SCORE_BLOCK):
            b1 = min(len(rows), b0 + _SCORE_BLOCK)
            if user_side is None:
                A = self._fold_in(self.seen_[rows[b0:b1]])
            else:
                A = user_side[rows[b0:b1]]
            with numba_threads(self.n_threads):
                S = self._logits(A)
            yield b0, b1, S

    # --- model hooks for RecommenderMixin --------------------------------------
    def _top_n(self, rows, n, ex_indptr, ex_indices, allowed, user_side=None):
        rows = np.asarray(rows, np.int64)
        out_idx = np.empty((len(rows), n), np.int64)
        out_val = np.empty((len(rows), n), np.float32)
        for b0, b1, S in self._blocks(rows, user_side):
            e0, e1 = ex_indptr[b0], ex_indptr[b1]
            with numba_threads(self.n_threads):
                _topk.select_top_n(S, n, rows[b0:b1], ex_indptr[b0:b1 + 1] - e0,
                                   ex_indices[e0:e1], allowed, False, out_idx[b0:b1],
                                   out_val[b0:b1])
        return out_idx, out_val

    def _score(self, rows, cand, user_side=None):
        rows = np.asarray(rows, np.int64)
        cand = np.asarray(cand, np.int64)
        out = np.empty(cand.shape, np.float32)
        for b0, b1, S in self._blocks(rows, user_side):
            out[b0:b1] = np.take_along_axis(S, cand[b0:b1], axis=1)
        return out

    def _similar(self, rows, n):
        """Cosine over the decoder's item rows (the item embeddings of the output layer)."""
        E = self.decoder_table_.dense_rows(np.arange(self.n_items_))
        with numba_threads(self.n_threads):
            return _topk.cosine_top_n(E, rows, n, _SCORE_BLOCK)

    # --- workflow hooks (sparse_rec._workflows) --------------------------------
    def _user_vectors(self):
        """The encoder's means ``mu`` of the users' histories (the code a score decodes)."""
        layout, P = self._views()
        with numba_threads(self.n_threads):
            mu = V.mean_of(self.encoder_table_, P, layout, self.seen_.tocsr())
        # An empty history encodes to the biases' code, the same for every such
        # user: they would all be each other's nearest; make them similar to no one.
        mu[np.diff(self.seen_.indptr) == 0] = 0.0
        return mu

    def _explain(self, user, item, hist_items, hist_values):
        """Occlusion, as the default, but scoring ``item``'s logit only, in blocks."""
        from .._workflows import occluded

        w = self.decoder_table_.dense_rows([item])[0].astype(np.float64)
        b = float(self._views()[1]["b_d"][item])
        h = len(hist_items)
        drop = np.arange(-1, h)
        s = np.empty(h + 1)
        for b0 in range(0, h + 1, _SCORE_BLOCK):
            A = self._fold_in(occluded(hist_items, hist_values, self.n_items_,
                                       drop[b0:b0 + _SCORE_BLOCK]))
            s[b0:b0 + len(A)] = A.astype(np.float64) @ w + b
        score = float(self._score(np.array([user]), np.array([[item]], np.int64))[0, 0])
        return s[0] - s[1:], score

    def _partial_user_tables(self, X):
        # A user is a pure function of their history (scoring reads seen_):
        # adding or refitting users writes seen_ only, there is no row to solve.
        return {}

    def _partial_item_rows(self, items, X_cols):
        raise NotImplementedError(
            "DSLMultVAE cannot add or refit items without a refit: an item is an input of "
            "the encoder and an output of the decoder's softmax, so a new item needs an "
            "encoder row, a decoder row and an output bias, and the softmax over all items "
            "ties its scores to every other item's; there is no solve of one item against "
            "fixed users. Refit on the matrix with the new columns (users can be added "
            "with partial_fit_users)."
        )
