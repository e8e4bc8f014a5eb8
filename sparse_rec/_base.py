"""Shared machinery of the estimators: data preparation, recommend, tags."""

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._validation import check_ids, check_interactions, check_positive_int


@dataclass
class TrainData:
    """Interaction arrays the kernels read during one fit."""

    x_indptr: np.ndarray
    x_indices: np.ndarray
    x_weight: np.ndarray
    x_rows: np.ndarray
    xt_indptr: np.ndarray
    xt_indices: np.ndarray
    xt_weight: np.ndarray
    f_indptr: np.ndarray
    f_indices: np.ndarray

    @property
    def nnz(self):
        return self.x_indices.shape[0]

    @classmethod
    def from_matrix(cls, X, exclude=None):
        """Build from canonical CSR ``X``; ``exclude`` adds forbidden negatives.

        Weights are scaled to mean 1, so binary data trains exactly as
        unweighted BPR and the learning rate keeps its meaning.
        """
        w = (X.data / X.data.mean()).astype(np.float32)
        # asarray: no copy when the dtype already fits (these arrays are as
        # large as the input).
        x_indptr = np.asarray(X.indptr, np.int64)
        x_indices = np.asarray(X.indices, np.int32)
        rows = np.repeat(np.arange(X.shape[0], dtype=np.int32), np.diff(X.indptr))
        Xt = sp.csr_matrix((w, x_indices, X.indptr), shape=X.shape).T.tocsr()
        Xt.sort_indices()
        if exclude is not None:
            F = (X + exclude).tocsr()
            F.sum_duplicates()
            F.sort_indices()
            f_indptr, f_indices = np.asarray(F.indptr, np.int64), np.asarray(F.indices, np.int32)
        else:
            f_indptr, f_indices = x_indptr, x_indices
        return cls(
            x_indptr, x_indices, w, rows,
            np.asarray(Xt.indptr, np.int64), np.asarray(Xt.indices, np.int32),
            np.asarray(Xt.data, np.float32), f_indptr, f_indices,
        )


class RecommenderMixin:
    """``recommend``, ``score_items``, ``similar_items`` over model hooks.

    Subclasses provide ``_top_n(rows, n, ex_indptr, ex_indices, allowed)``,
    ``_score(rows, cand)``, ``_similar(rows, n)`` and set ``n_users_``,
    ``n_items_`` and ``seen_`` (the training pattern, CSR) in ``fit``.
    """

    def _check_users(self, users):
        check_is_fitted(self)
        return check_ids(users, self.n_users_, "users", "user")

    def _check_n(self, n):
        return check_positive_int(n, "n", hint="Ask for at least one recommendation.")

    def _exclusion(self, users, filter_seen):
        if filter_seen is None or isinstance(filter_seen, (bool, np.bool_)):
            if not filter_seen:
                return np.zeros(len(users) + 1, np.int64), np.zeros(0, np.int32)
            E = self.seen_[users]
        elif sp.issparse(filter_seen):
            E = filter_seen.tocsr()
            if E.shape != (len(users), self.n_items_):
                raise ValueError(
                    f"filter_seen as a matrix must have shape (len(users), n_items) = "
                    f"({len(users)}, {self.n_items_}); got {E.shape}. Pass the rows of the "
                    "items to exclude for exactly these users."
                )
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
            Number of items per user.
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

    def similar_items(self, items, n=10):
        """The ``n`` items most similar to each given item (cosine), itself excluded.

        Returns
        -------
        ids : ndarray of int64, shape (len(items), n)
        scores : ndarray of float32, shape (len(items), n)
        """
        check_is_fitted(self)
        items = check_ids(items, self.n_items_, "items", "item")
        n = self._check_n(n)
        return self._similar(items, n)


def check_random_seed(random_state):
    """A 63-bit seed from ``None``, an int or a numpy random generator."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0; got {random_state}.")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**62))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**62))
    raise ValueError(
        f"random_state must be None, an int or a numpy random generator; got {random_state!r}."
    )


class BaseDSLEstimator(RecommenderMixin, BaseEstimator):
    """Parameter checks common to DSL estimators."""

    def _validate_common(self, **choices):
        """Check the shared parameters, and each ``name=options`` choice given."""
        from ._dsl import BUDGETS, GROW_RULES, SCHEDULES
        from ._validation import check_fraction

        check_positive_int(self.n_components, "n_components",
                           hint="Use for example n_components=64.")
        check_fraction(self.density, "density", hint="Pass a fraction such as 0.2.")
        check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.update_interval, "update_interval",
                           hint="Prune and grow every that many epochs, e.g. 5.")
        if not (isinstance(self.update_ratio, numbers.Real) and 0 <= self.update_ratio < 1):
            raise ValueError(
                f"update_ratio must be in [0, 1); got {self.update_ratio!r}. "
                "Use 0.5 (the paper's default) or 0 for static sparse training."
            )
        choices = {"schedule": SCHEDULES, "grow": GROW_RULES, "budget": BUDGETS, **choices}
        for name, options in choices.items():
            value = getattr(self, name)
            if value not in options:
                raise ValueError(f"{name} must be one of {options}; got {value!r}.")
        for name in ("learning_rate", "alpha"):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Real) and np.isfinite(v) and v >= 0) or (
                name == "learning_rate" and v == 0
            ):
                bound = "> 0" if name == "learning_rate" else ">= 0"
                raise ValueError(f"{name} must be a finite number {bound}; got {v!r}.")
        if self.n_threads is not None and not (
            isinstance(self.n_threads, numbers.Integral)
            and (self.n_threads >= 1 or self.n_threads == -1)
        ):
            raise ValueError(
                f"n_threads must be None, -1 or an integer >= 1; got {self.n_threads!r}."
            )

    def _prepare_X(self, X, exclude):
        X = check_interactions(X)
        if exclude is not None:
            exclude = check_interactions(exclude, name="exclude", allow_empty=True)
            if exclude.shape != X.shape:
                raise ValueError(
                    f"exclude must have the shape of X {X.shape}; got {exclude.shape}."
                )
        return X, exclude

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.target_tags.required = False
        tags.requires_fit = True
        return tags
