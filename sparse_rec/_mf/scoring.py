"""Scoring, fold-in and checks of a fitted matrix-factorisation model.

Shared by :class:`~sparse_rec.DSLMatrixFactorization` and the served model
of :mod:`sparse_rec.serving`; imports numpy, scipy and numba only.
"""

import numpy as np
import scipy.sparse as sp

from .. import backends
from .._table import SparseEmbeddingTable
from .._threads import numba_threads

#: The losses of DSL-MF; a model file without ``loss`` is a BPR model.
LOSSES = ("bpr", "ials", "softmax", "ccl")
# iALS: unobserved pairs together weigh this many times the observed ones
# when ``unobserved_weight`` is None.
IALS_UNOBSERVED_MASS = 10.0
# iALS popularity exponent when ``popularity_exponent`` is None:
# _POP_SLOPE * log10(_POP_DENSITY / density), clipped to [0, _POP_MAX]
# (0 at 1% density and above; 0.3 at Gowalla's 0.066%).
_POP_SLOPE, _POP_DENSITY, _POP_MAX = 0.25, 0.01, 0.5
# iALS ridge when ``regularization`` is None: _REG_BASE * max(1, _REG_KNEE / m)
# with m = nnz / sqrt(n_users * n_items), the geometric mean of the mean user
# and mean item counts. Thinning a data set (fewer interactions per row)
# moves the best ridge up as 1 / m on validation splits; the knee keeps the
# shared sets (m 23-64) at the base (see "Losses" in the DSL guide).
_REG_BASE, _REG_KNEE = 0.01, 20.0


# Fold-in of new users (BPR): passes on all coordinates, then on the kept ones.
_FOLD_IN_PASSES = 30
_FOLD_IN_REFINE = 10
_FOLD_IN_KEY = 0x5EED_F01D


def default_regularization(nnz, n_users, n_items):
    """iALS ridge factor when ``regularization`` is None.

    ``_REG_BASE * max(1, _REG_KNEE / m)`` with ``m = nnz / sqrt(n_users *
    n_items)``: 0.01 where users and items hold at least about 20
    interactions each (in geometric mean), more in proportion to how much
    sparser the data are.

    Examples
    --------
    >>> from sparse_rec._mf.scoring import default_regularization
    >>> round(default_regularization(810_128, 29_858, 40_981), 4)   # Gowalla
    0.01
    >>> round(default_regularization(202_532, 29_858, 40_981), 4)   # a quarter of it
    0.0345
    """
    m = nnz / max(np.sqrt(float(n_users) * float(n_items)), 1.0)
    if m <= 0:  # no interactions: nothing to scale by
        return _REG_BASE
    return float(_REG_BASE * max(1.0, _REG_KNEE / m))


def default_negatives(n_items, loss="softmax"):
    """Shared negatives per batch of the softmax losses when ``n_negatives`` is None.

    Softmax: ``SOFTMAX_NEGATIVES``. CCL: ``CCL_NEGATIVE_FRACTION`` of the
    items within ``[CCL_NEGATIVES, CCL_NEGATIVES_MAX]``. Both at most
    ``n_items - 1``.

    Examples
    --------
    >>> from sparse_rec._mf.scoring import default_negatives
    >>> [default_negatives(n, "ccl") for n in (1682, 40981, 30)]
    [800, 3278, 29]
    """
    if loss == "ccl":
        n = min(CCL_NEGATIVES_MAX, max(CCL_NEGATIVES, round(CCL_NEGATIVE_FRACTION * n_items)))
    else:
        n = SOFTMAX_NEGATIVES
    return int(max(1, min(n_items - 1, n)))


# CCL: negative_weight when None is n_items / CCL_ITEMS_PER_WEIGHT, so every
# item as a negative (drawn uniformly) weighs 1/150 of a positive whatever
# the catalogue's size (about 11 on ml-100k, 65 on the built-in set).
CCL_ITEMS_PER_WEIGHT = 150.0
# Negatives per batch at the default (fewer when there are fewer items):
# softmax, and the cosine contrastive loss: 8% of the items within [800,
# 4096]. More CCL negatives ranked better on every validation split (Gowalla
# at density 0.2: Recall@20 0.133 / 0.139 / 0.142 with 800 / 1600 / 3200,
# the rule's 3278) at a cost per epoch about proportional to their number;
# MovieLens sets keep 800 (SimpleX's order of magnitude).
SOFTMAX_NEGATIVES = 256
CCL_NEGATIVES = 800
CCL_NEGATIVES_MAX = 4096
CCL_NEGATIVE_FRACTION = 0.08


def check_softmax_params(est):
    """Raise ValueError unless the softmax / CCL parameters are usable."""
    from .._validation import check_positive_int, check_real

    if getattr(est, "n_negatives", None) is not None:
        check_positive_int(est.n_negatives, "n_negatives",
                           hint="Use None for the default (256 for softmax, 800 for ccl; "
                                "fewer for few items).")
    check_real(getattr(est, "temperature", None), "temperature", low=0, low_open=True,
               hint="Use for example temperature=0.5.")
    if getattr(est, "loss", None) == "ccl":
        margin = check_real(getattr(est, "margin", None), "margin",
                            hint="Use a cosine in (-1, 1), for example margin=0.5.")
        if not -1.0 < margin < 1.0:
            # A cosine lies in [-1, 1]: margin 1 or more never pushes a negative.
            raise ValueError(f"margin must be in (-1, 1) (a cosine); got {margin!r}. Use "
                             "for example margin=0.5.")
        if getattr(est, "negative_weight", None) is not None:
            check_real(est.negative_weight, "negative_weight", low=0, low_open=True,
                       hint="Use None (by the number of items) or for example 50.")


class MFModel:
    """Model hooks of ``RecommenderMixin`` over ``user_table_``, ``item_table_``, ``item_bias_``.

    Needs the attributes ``n_components``, ``learning_rate``, ``alpha``,
    ``n_threads``, ``n_users_`` and ``n_items_`` besides the tables.
    """

    # --- fitted views ----------------------------------------------------------
    @property
    def user_factors_(self):
        return self.user_table_.to_csr()

    @property
    def item_factors_(self):
        return self.item_table_.to_csr()

    def _item_transposed(self):
        # A cache dict set in fit: filling it leaves __dict__ itself unchanged,
        # so scoring stays free of visible side effects.
        cache = self.__dict__.setdefault("_cache", {})
        if "item_t" not in cache:
            cache["item_t"] = self.item_table_.transposed()
        return cache["item_t"]

    # --- model hooks for RecommenderMixin --------------------------------------
    _snapshot_attributes = ("user_table_", "item_table_", "item_bias_")
    # What a model file stores (sparse_rec._io); the optimiser state is not.
    _saved_attributes = (
        "user_table_", "item_table_", "item_bias_", "seen_", "n_users_", "n_items_",
        "n_features_in_", "n_active_", "nbytes_", "dense_nbytes_", "n_iter_", "history_",
        "best_validation_score_", "validation_scores_",
    )

    # Shapes checked on load (sparse_rec._io), before _check_loaded.
    _loaded_shapes = (
        ("user_table_", ("n_users_", "n_components")),
        ("item_table_", ("n_items_", "n_components")),
        ("item_bias_", ("n_items_",)),
        ("seen_", ("n_users_", "n_items_")),
    )

    def _check_loaded(self):
        """Raise ValueError unless a loaded model is safe for the kernels."""
        missing = [n for n in ("user_table_", "item_table_", "item_bias_", "seen_", "n_users_",
                               "n_items_") if getattr(self, n, None) is None]
        if missing:
            raise ValueError(f"the model file lacks {missing}.")
        u, i, b = self.user_table_, self.item_table_, self.item_bias_
        if b.dtype != np.float32:
            raise ValueError(f"item_bias_ must be float32; got {b.dtype}.")
        for tab in (u, i):
            if tab.values_buf.dtype != np.float32:
                raise ValueError("factor weights must be float32.")
        loss = self._loss()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}.")
        if loss == "ials":
            # Fold-in reads these (a served model never runs the estimator's checks).
            from .._validation import check_real

            if getattr(self, "regularization", None) is not None:
                check_real(self.regularization, "regularization", low=0, low_open=True)
            if getattr(self, "unobserved_weight", None) is not None:
                check_real(self.unobserved_weight, "unobserved_weight", low=0, low_open=True)
            if getattr(self, "popularity_exponent", None) is not None:
                check_real(self.popularity_exponent, "popularity_exponent")
        if loss in ("softmax", "ccl"):
            check_softmax_params(self)

    def _top_n(self, rows, n, ex_indptr, ex_indices, allowed, user_side=None):
        be = backends.get_backend("cpu")
        query = self.user_table_ if user_side is None else user_side
        with numba_threads(self.n_threads):
            return be.top_n(
                rows, n, query, self._item_transposed(), self.item_bias_,
                ex_indptr, ex_indices, allowed, items=self.item_table_,
            )

    def _score(self, rows, cand, user_side=None):
        be = backends.get_backend("cpu")
        query = self.user_table_ if user_side is None else user_side
        with numba_threads(self.n_threads):
            return be.score(rows, cand, query, self.item_table_, self.item_bias_)

    def _loss(self):
        # Files written before the loss parameter hold BPR models.
        return getattr(self, "loss", None) or "bpr"

    def _unobserved_weight(self):
        """iALS weight of an unobserved pair: the parameter, or the data-derived default."""
        w0 = getattr(self, "unobserved_weight", None)
        if w0 is not None:
            return float(w0)
        n_users, n_items = self.seen_.shape
        return IALS_UNOBSERVED_MASS * self.seen_.nnz / max(n_users * n_items, 1)

    def _regularization(self):
        """iALS ridge factor: the parameter, or the data-derived default (by counts)."""
        reg = getattr(self, "regularization", None)
        if reg is not None:
            return float(reg)
        return default_regularization(self.seen_.nnz, *self.seen_.shape)

    def _n_negatives(self):
        """Softmax negatives per batch: the parameter, or the data-derived default."""
        n = getattr(self, "n_negatives", None)
        return int(n) if n is not None else default_negatives(self.seen_.shape[1], self._loss())

    def _negative_weight(self):
        """CCL weight of the negative term: the parameter, or ``n_items / 150``."""
        w = getattr(self, "negative_weight", None)
        return float(w) if w is not None else self.seen_.shape[1] / CCL_ITEMS_PER_WEIGHT

    def _popularity_exponent(self):
        """iALS popularity exponent: the parameter, or the data-derived default (by density)."""
        expo = getattr(self, "popularity_exponent", 0.0)
        if expo is not None:
            return float(expo)
        n_users, n_items = self.seen_.shape
        density = self.seen_.nnz / max(n_users * n_items, 1)
        if density <= 0:
            return 0.0
        return float(np.clip(_POP_SLOPE * np.log10(_POP_DENSITY / density), 0.0, _POP_MAX))

    def _fold_in(self, X):
        """User rows for histories ``X``, solved against the fixed item side.

        ``loss="ials"``: each row is the exact iALS solve on all
        ``n_components`` coordinates (confidences: the values over the row's
        mean value), then keeps the fitted model's mean number of active
        weights per user (largest ``w_j**2 * H_jj``) and is solved exactly
        again on those.

        ``loss="bpr"``: each row runs ``_FOLD_IN_PASSES`` Adagrad passes of the BPR loss over
        its interactions (one uniform negative outside the history per
        positive, each weighted by its value over the row's mean value, the
        fitted ``learning_rate`` and ``alpha``) on all
        ``n_components`` coordinates, keeps the fitted model's mean number of
        active weights per user (largest magnitudes) and refines those for
        ``_FOLD_IN_REFINE`` passes. Random draws are keyed by the row's items,
        so a row's result does not depend on the other rows.
        """
        from .._kernels import _foldin

        d = self.user_table_.n_cols
        k_keep = int(min(d, max(1, round(self.user_table_.nnz / max(self.n_users_, 1)))))
        U = np.zeros((X.shape[0], d), np.float32)
        M = np.zeros((X.shape[0], d), np.bool_)
        items = self.item_table_
        if self._loss() == "ials":
            self._fold_in_ials(X, k_keep, U, M)
            return self._rows_table(U, M)
        if self._loss() in ("softmax", "ccl"):
            self._fold_in_softmax(X, k_keep, U, M)
            return self._rows_table(U, M)
        with numba_threads(self.n_threads):
            _foldin.fold_in_bpr(
                X.indptr.astype(np.int64), X.indices.astype(np.int32),
                X.data.astype(np.float32), items.indptr, items.indices, items.weights,
                self.item_bias_, self.n_items_,
                _FOLD_IN_PASSES, _FOLD_IN_REFINE, k_keep, np.float32(self.learning_rate),
                np.float32(self.alpha), np.uint64(_FOLD_IN_KEY), U, M,
            )
        return self._rows_table(U, M)

    def _fold_in_softmax(self, X, k_keep, U, M):
        """Rows for ``X`` by full-row Adagrad steps of the model's loss (see ``_fold_in``).

        The sampled softmax, or (``loss="ccl"``) the cosine contrastive loss
        with the fitted ``margin`` and ``negative_weight``, negatives from
        the proposal of the fit.
        """
        from .._kernels import _softmax
        from ..backends.cpu_softmax import CCL_NEGATIVE_BETA, NEGATIVE_BETA, proposal

        items = self.item_table_
        n_neg = self._n_negatives()
        ccl = self._loss() == "ccl"
        cdf, logq = proposal(np.asarray(self.seen_.getnnz(axis=0)), n_neg,
                             CCL_NEGATIVE_BETA if ccl else NEGATIVE_BETA)
        norms = np.ones(items.n_rows)
        if ccl:
            sq = np.bincount(np.repeat(np.arange(items.n_rows), np.diff(items.indptr)),
                             weights=items.weights.astype(np.float64) ** 2,
                             minlength=items.n_rows)
            norms = np.where(sq > 1e-24, np.sqrt(sq), 1.0)
        d = U.shape[1]
        nb = max(1, min(X.shape[0], 64))
        with numba_threads(self.n_threads):
            _softmax.fold_in_softmax(
                X.indptr.astype(np.int64), X.indices.astype(np.int32),
                X.data.astype(np.float32), items.indptr, items.indices, items.weights,
                cdf, logq, n_neg, 1.0 / float(self.temperature), ccl, norms,
                float(getattr(self, "margin", 0.0)), self._negative_weight() if ccl else 0.0,
                _FOLD_IN_PASSES,
                _FOLD_IN_REFINE, k_keep, np.float32(self.learning_rate),
                np.float32(self.alpha), np.uint64(_FOLD_IN_KEY), U, M,
                np.empty((nb, n_neg), np.int64), np.empty((nb, n_neg)),
                np.empty((nb, d), np.float32), np.empty((nb, d), np.float32),
            )

    def _fold_in_ials(self, X, k_keep, U, M, other="item"):
        """Rows for ``X`` solved exactly against the fixed ``other`` side ("item" or "user")."""
        from .._kernels import _ials

        items = self.item_table_ if other == "item" else self.user_table_
        cache = self.__dict__.setdefault("_cache", {})
        key = f"{other}_gram"
        # Unobserved weight of (row, other row j): w0 * wr_factor * wo[j], with
        # the item side's popularity factors as in fit.
        expo = self._popularity_exponent()
        w0 = self._unobserved_weight()
        # Items' training counts (only when weighted: a CSC copy per call).
        trained = (np.diff(sp.csc_matrix(self.seen_).indptr) if expo
                   else np.zeros(self.seen_.shape[1]))
        if other == "item":
            wo = _ials.ials_item_factors(trained, expo)
            wr = np.full(X.shape[0], w0)
        else:
            wo = np.ones(items.n_rows)
            wr = w0 * _ials.ials_item_factors(np.diff(X.indptr), expo, reference=trained)
        with numba_threads(self.n_threads):
            if key not in cache:
                cache[key] = _ials.gram(items.indptr, items.indices, items.values_buf,
                                        items.n_cols, wo)
            # Confidences relative to the row's mean value, as in fit (mean 1).
            counts = np.diff(X.indptr)
            sums = np.bincount(np.repeat(np.arange(X.shape[0]), counts),
                               weights=X.data.astype(np.float64), minlength=X.shape[0])
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)
            conf = (X.data / np.repeat(mean, counts)).astype(np.float32)
            _ials.fold_in_ials(
                X.indptr.astype(np.int64), X.indices.astype(np.int32), conf, items.indptr,
                items.indices, items.values_buf, cache[key], wr, wo,
                self._regularization(), k_keep, U, M,
            )

    def _rows_table(self, U, M):
        """A table of the rows ``U`` on their masks ``M``."""
        rows, cols = np.nonzero(M)
        indptr = np.zeros(U.shape[0] + 1, np.int64)
        np.cumsum(M.sum(axis=1), out=indptr[1:])
        return SparseEmbeddingTable(
            indptr, cols.astype(self.user_table_.indices.dtype),
            U[rows, cols][:, None].astype(np.float32), U.shape[1],
        )

    def _similar(self, rows, n):
        be = backends.get_backend("cpu")
        tab = self.item_table_
        row_of = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
        norms = np.sqrt(np.bincount(row_of, weights=tab.weights.astype(np.float64) ** 2,
                                    minlength=tab.n_rows))
        inv = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0).astype(np.float32)
        unit = SparseEmbeddingTable(
            tab.indptr, tab.indices.copy(),
            (tab.weights * inv[row_of])[:, None].astype(np.float32),
            tab.n_cols,
        )
        t = unit.transposed()
        ex = np.zeros(len(rows) + 1, np.int64), np.zeros(0, np.int32)
        allowed = np.ones(self.n_items_, np.bool_)
        with numba_threads(self.n_threads):
            return be.top_n(
                rows, n, unit, t, np.zeros(self.n_items_, np.float32), *ex, allowed,
                self_exclude=True, items=unit,
            )

    # --- workflow hooks (sparse_rec._workflows) --------------------------------
    def _user_vectors(self):
        return self.user_table_.to_csr()

    def _explain(self, user, item, hist_items, hist_values):
        # Project the user's row on the history items' rows (minimum-norm
        # least squares): p ~ sum_j a_j q_j, so item j gives a_j q_j . q_i and
        # the bias plus the residual of p make up the rest of the score.
        p = self.user_table_.dense_rows([user])[0].astype(np.float64)
        Q = self.item_table_.dense_rows(hist_items).astype(np.float64)
        a = np.linalg.lstsq(Q.T, p, rcond=None)[0]
        q_i = self.item_table_.dense_rows([item])[0].astype(np.float64)
        contrib = a * (Q @ q_i)
        score = float(self._score(np.array([user]), np.array([[item]], np.int64))[0, 0])
        return contrib, score

    def _partial_user_tables(self, X):
        return {"user_table_": self._fold_in(X)}

    def _partial_item_rows(self, items, X_cols):
        """Item rows and biases for the user columns ``X_cols``, users and other items fixed.

        ``loss="ials"``: the exact iALS solve of each item against the user
        side on the fitted mean number of active weights per item (as
        ``_fold_in`` for users), bias 0. ``loss="bpr"``: the mirror of
        ``_fold_in``: ``_FOLD_IN_PASSES`` Adagrad passes of
        the BPR loss over the item's users (one negative per user among the
        fitted items outside its history) and over ``nnz / n_items`` random
        interactions of other users in which the item is the negative (as
        often as a uniform negative is drawn in an epoch of fit), the fitted
        mean number of active weights per item kept, ``_FOLD_IN_REFINE``
        passes on those.
        """
        from .._kernels import _foldin

        if self._loss() in ("softmax", "ccl"):
            raise NotImplementedError(
                f"partial_fit_items is not available for loss={self._loss()!r} yet (no item "
                "solve of the sampled losses); refit the model, or use loss='ials' or 'bpr'."
            )
        d = self.item_table_.n_cols
        k_keep = int(min(d, max(1, round(self.item_table_.nnz / max(self.n_items_, 1)))))
        C = X_cols.T.tocsr()
        C.sort_indices()
        m = C.shape[0]
        if self._loss() == "ials":
            # The mirror of the iALS fold-in: the exact solve against the
            # fixed user side; iALS has no item bias.
            Q = np.zeros((m, d), np.float32)
            M = np.zeros((m, d), np.bool_)
            self._fold_in_ials(C, k_keep, Q, M, other="user")
            tab = self._rows_table(Q, M)
            return {"item_table_": tab}, {"item_bias_": np.zeros(m, np.float32)}
        Q = np.zeros((m, d), np.float32)
        M = np.zeros((m, d), np.bool_)
        B = np.zeros(m, np.float32)
        seen = self.seen_
        self_items = np.where(items < self.n_items_, items, -1).astype(np.int64)
        u, it = self.user_table_, self.item_table_
        with numba_threads(self.n_threads):
            _foldin.fold_in_items_bpr(
                C.indptr.astype(np.int64), C.indices.astype(np.int32), C.data.astype(np.float32),
                u.indptr, u.indices, u.weights, it.indptr, it.indices, it.weights,
                self.item_bias_, seen.indptr.astype(np.int64), seen.indices.astype(np.int32),
                np.repeat(np.arange(self.n_users_, dtype=np.int32), np.diff(seen.indptr)),
                int(max(1, round(seen.nnz / max(self.n_items_, 1)))), self_items,
                self.n_items_, _FOLD_IN_PASSES, _FOLD_IN_REFINE, k_keep,
                np.float32(self.learning_rate), np.float32(self.alpha),
                np.uint64(_FOLD_IN_KEY), Q, M, B,
            )
        rows, cols = np.nonzero(M)
        indptr = np.zeros(m + 1, np.int64)
        np.cumsum(M.sum(axis=1), out=indptr[1:])
        tab = SparseEmbeddingTable(indptr, cols.astype(it.indices.dtype),
                                   Q[rows, cols][:, None].astype(np.float32), d)
        return {"item_table_": tab}, {"item_bias_": B}
