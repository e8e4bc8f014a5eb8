"""Recommendation methods shared by the estimators and the served models.

This module imports only numpy and scipy (not scikit-learn), so a model
loaded for serving (:mod:`sparse_rec.serving`) uses the very same code.
"""

import numpy as np
import scipy.sparse as sp

from ._validation import check_ids, check_interactions, check_pattern, check_positive_int
from .exceptions import NotFittedError


def check_fitted(est):
    """Raise NotFittedError unless ``est`` was fitted (or loaded)."""
    if getattr(est, "n_items_", None) is None:
        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )


class RecommenderMixin:
    """``recommend``, ``score_items``, ``similar_items`` over model hooks.

    Subclasses provide ``_top_n(rows, n, ex_indptr, ex_indices, allowed)``,
    ``_score(rows, cand)``, ``_similar(rows, n)`` and set ``n_users_``,
    ``n_items_`` and ``seen_`` (the training pattern, CSR) in ``fit``.
    """

    def _check_users(self, users):
        check_fitted(self)
        return check_ids(users, self.n_users_, "users", "user")

    def _check_n(self, n, n_candidates=None):
        # Clipped to the candidates: more columns would only be padding, and
        # n=10**10 would try to allocate them.
        n = check_positive_int(n, "n", hint="Ask for at least one recommendation.")
        return min(n, max(1, self.n_items_ if n_candidates is None else n_candidates))

    def _exclusion(self, users, filter_seen):
        if filter_seen is None or isinstance(filter_seen, (bool, np.bool_)):
            if not filter_seen:
                return np.zeros(len(users) + 1, np.int64), np.zeros(0, np.int32)
            E = self.seen_[users]
        elif sp.issparse(filter_seen):
            # Structure checked: a kernel indexes with these items.
            E = check_pattern(filter_seen, (len(users), self.n_items_), "filter_seen")
        else:
            raise TypeError(
                "filter_seen must be True, False or a sparse (len(users), n_items) matrix of "
                f"items to exclude; got {type(filter_seen).__name__}."
            )
        return E.indptr.astype(np.int64), E.indices.astype(np.int32)

    def recommend(self, users, n=10, filter_seen=True, items=None):
        """Top-``n`` items for each user, best first.

        Parameters
        ----------
        users : array-like of int
            User indices (rows of the matrix given to ``fit``).
        n : int, default=10
            Number of items per user; a larger ``n`` than ``n_items_`` is
            clipped to ``n_items_``.
        filter_seen : bool or sparse matrix, default=True
            ``True`` excludes the items each user interacted with in ``fit``;
            a sparse ``(len(users), n_items)`` matrix excludes its non-zeros
            instead (for example a training split).
        items : array-like of int, optional
            Restrict the ranking to these items.

        Returns
        -------
        ids : ndarray of int64, shape (len(users), n)
            Item indices, ``-1`` where fewer than ``n`` items are eligible.
        scores : ndarray of float32, shape (len(users), n)
            Their scores, ``-inf`` for padding.
        """
        users = self._check_users(users)
        n = self._check_n(n)
        ex_indptr, ex_indices = self._exclusion(users, filter_seen)
        allowed = np.ones(self.n_items_, np.bool_)
        if items is not None:
            allowed[:] = False
            allowed[check_ids(items, self.n_items_, "items", "item")] = True
        return self._top_n(users, n, ex_indptr, ex_indices, allowed)

    def score_items(self, users, items):
        """Scores of per-user candidate items.

        Parameters
        ----------
        users : array-like of int, shape (n_users,)
        items : array-like of int, shape (n_users, m)
            Row ``b`` lists the candidates of ``users[b]``.

        Returns
        -------
        scores : ndarray of float32, shape (n_users, m)
        """
        users = self._check_users(users)
        cand = np.asarray(items)
        if cand.ndim == 1 and len(users) == 1:
            cand = cand.reshape(1, -1)
        if cand.ndim != 2 or cand.shape[0] != len(users):
            raise ValueError(
                f"items must have shape (len(users), m) = ({len(users)}, m); got {cand.shape}. "
                "Give one row of candidate items per user."
            )
        flat = check_ids(cand.reshape(-1), self.n_items_, "items", "item")
        return self._score(users, flat.reshape(cand.shape))

    # --- new users: fold-in -----------------------------------------------------
    def _check_history(self, X):
        check_fitted(self)
        X = check_interactions(X, name="X", allow_empty=True)
        if X.shape[1] != self.n_items_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_items_} features as input (one column per item of the fitted model). "
                "Build the histories over the same item index as in fit."
            )
        return X

    def recommend_for_history(self, X, n=10, filter_seen=True, items=None):
        """Top-``n`` items for users given by their histories (fold-in).

        Each row of ``X`` is folded in against the fitted item side (see
        ``_fold_in`` in the estimator's notes), without retraining; the result
        for a row depends on that row only. Known users keep using their
        trained rows through :meth:`recommend`.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_rows, n_items)
            Interaction histories over the fitted items.
        n : int, default=10
            Clipped to ``n_items_`` as in :meth:`recommend`.
        filter_seen : bool or sparse matrix, default=True
            ``True`` excludes each row's own history items; a sparse
            ``(n_rows, n_items)`` matrix excludes its non-zeros instead.
        items : array-like of int, optional
            Restrict the ranking to these items.

        Returns
        -------
        ids : ndarray of int64, shape (n_rows, n)
        scores : ndarray of float32, shape (n_rows, n)
        """
        X = self._check_history(X)
        n = self._check_n(n)
        rows = np.arange(X.shape[0])
        if filter_seen is True or (isinstance(filter_seen, np.bool_) and filter_seen):
            ex = X.indptr.astype(np.int64), X.indices.astype(np.int32)
        else:
            ex = self._exclusion(rows, filter_seen)
        allowed = np.ones(self.n_items_, np.bool_)
        if items is not None:
            allowed[:] = False
            allowed[check_ids(items, self.n_items_, "items", "item")] = True
        return self._top_n(rows, n, *ex, allowed, user_side=self._fold_in(X))

    def decision_function(self, X):
        """Scores of every item for users given by their histories (fold-in).

        A pure function of each row of ``X``; history items are scored like
        any other (mask them yourself, or use :meth:`recommend_for_history`).

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_rows, n_items)

        Returns
        -------
        scores : ndarray of float32, shape (n_rows, n_items)
        """
        X = self._check_history(X)
        side = self._fold_in(X)
        out = np.empty(X.shape, np.float32)
        all_items = np.arange(self.n_items_, dtype=np.int64)
        # Blocks of rows bound the candidate index array.
        step = max(1, (1 << 22) // max(self.n_items_, 1))
        for r0 in range(0, X.shape[0], step):
            r1 = min(X.shape[0], r0 + step)
            cand = np.broadcast_to(all_items, (r1 - r0, self.n_items_))
            out[r0:r1] = self._score(np.arange(r0, r1), np.ascontiguousarray(cand),
                                     user_side=side)
        return out

    def predict(self, X):
        """The best item for each user given by a history, history excluded.

        Like a classifier's ``predict`` (one label per row): the top item of
        :meth:`recommend_for_history`; use that method for longer lists.

        Returns
        -------
        ids : ndarray of int64, shape (n_rows,)
            ``-1`` for a row that has seen every item.
        """
        return self.recommend_for_history(X, n=1)[0][:, 0]

    def similar_items(self, items, n=10):
        """The ``n`` items most similar to each given item (cosine), itself excluded.

        ``n`` is clipped to ``n_items_ - 1`` (at least 1).

        Returns
        -------
        ids : ndarray of int64, shape (len(items), n)
        scores : ndarray of float32, shape (len(items), n)
        """
        check_fitted(self)
        items = check_ids(items, self.n_items_, "items", "item")
        n = self._check_n(n, self.n_items_ - 1)  # the item itself is excluded
        return self._similar(items, n)

    def __sklearn_tags__(self):
        # Only called where scikit-learn's BaseEstimator follows in the MRO.
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.target_tags.required = False
        tags.requires_fit = True
        return tags
