"""Cross-validation splitters for the two fold-in protocols.

Both protocols give scikit-learn's search tools a pair ``(X, y)`` of
users x items matrices: ``y`` holds each user's held-out interactions and
the scorer (:func:`sparse_rec.metrics.make_ranking_scorer`) folds in the
rest of the user's row of ``X`` as a history. The splitters only choose
rows, so they work with stock ``GridSearchCV``:

- new users (strong generalisation): :class:`UserKFold` over users; the
  training users train on *all* their interactions, so ``X`` must hold the
  held-out ones too (``search.fit(X_in + y, y)``);
- the same users (weak generalisation): :class:`HoldOutSplit`, one split
  that trains on the held-in part of every user (``search.fit(X_in, y)``).

:class:`SparseTarget` wraps a sparse ``y`` for the scikit-learn functions
that reject sparse targets (``cross_validate`` and friends).
"""

import numbers

import numpy as np
from sklearn.model_selection import BaseCrossValidator

from .._validation import check_interactions
from ._split import _check_rng, random_split, temporal_split

__all__ = ["HoldOutSplit", "SparseTarget", "UserKFold", "fold_in_split"]


class SparseTarget:
    """A sparse held-out matrix as a ``y`` that every scikit-learn CV tool accepts.

    ``GridSearchCV``, ``RandomizedSearchCV`` and ``HalvingGridSearchCV`` take
    a scipy sparse ``y`` as it is, but scikit-learn 1.9's parameter checks
    make ``cross_validate``, ``cross_val_score``, ``validation_curve``,
    ``learning_curve`` and ``permutation_test_score`` reject one ("must be an
    array-like"). This wrapper passes those checks and is indexed by rows
    like the matrix, without making it dense; the ranking scorer and the
    splitters of this module unwrap it.

    Parameters
    ----------
    y : sparse matrix or array-like of shape (n_users, n_items)
        Held-out interactions (non-negative; stored as canonical float32 CSR).

    Attributes
    ----------
    matrix : csr_matrix of shape (n_users, n_items)
        The wrapped matrix.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> y = SparseTarget(sp.eye(4, format="csr"))
    >>> len(y), y.shape
    (4, (4, 4))
    >>> y[[1, 3]].matrix.indices.tolist()
    [1, 3]
    """

    def __init__(self, y):
        if isinstance(y, SparseTarget):
            self.matrix = y.matrix
        else:
            self.matrix = check_interactions(y, name="y", allow_empty=True)

    @classmethod
    def _wrap(cls, matrix):
        # Row slices of a checked matrix are canonical already: skip the checks.
        out = cls.__new__(cls)
        out.matrix = matrix
        return out

    @property
    def shape(self):
        """``(n_users, n_items)`` of the wrapped matrix."""
        return self.matrix.shape

    def __len__(self):
        return self.matrix.shape[0]

    def __getitem__(self, rows):
        # scikit-learn indexes samples as y[rows, ...]; all columns either way.
        if isinstance(rows, tuple):
            if len(rows) != 2 or not (
                rows[1] is Ellipsis or rows[1] == slice(None)
            ):
                raise IndexError(
                    "SparseTarget is indexed by rows only (an int array, a boolean mask or a "
                    f"slice, optionally followed by ... or :); got {rows!r}. Index .matrix "
                    "for anything else."
                )
            rows = rows[0]
        return SparseTarget._wrap(self.matrix[rows])

    def __repr__(self):
        n_users, n_items = self.shape
        return f"SparseTarget(<{n_users} x {n_items}, {self.matrix.nnz} held-out interactions>)"


def _held_out(y, who):
    """The held-out matrix given to a splitter or scorer, checked, as CSR."""
    if y is None:
        raise ValueError(
            f"{who} needs y, the held-out interactions (a sparse matrix with the shape of X); "
            "got None. Build (X, y) with sparse_rec.model_selection.fold_in_split and call "
            "search.fit(X, y)."
        )
    if isinstance(y, SparseTarget):
        return y.matrix
    return check_interactions(y, name="y", allow_empty=True)


def _check_pair(X, y, who):
    """Canonical CSR ``X`` and ``y`` of one shape, and the overlap count."""
    X = check_interactions(X, name="X", allow_empty=True)
    y = _held_out(y, who)
    if X.shape != y.shape:
        raise ValueError(
            f"{who}: y must have the shape of X (users x items), one row of held-out "
            f"interactions per row of X; got X {X.shape} and y {y.shape}."
        )
    # Entries are all positive, so the elementwise product keeps exactly the
    # shared (user, item) pairs.
    overlap = (X != 0).multiply(y != 0).nnz
    return X, y, int(overlap)


def fold_in_split(X, test_size=0.2, *, timestamps=None, random_state=None, min_history=1):
    """Split each user's interactions into a history and a held-out part.

    The pair ``(X_in, y)`` is what the fold-in protocols score: a model
    folds in a user's row of ``X_in`` and is judged on the same row of
    ``y`` (see :func:`sparse_rec.metrics.make_ranking_scorer`). It is
    :func:`random_split` (or :func:`temporal_split` when ``timestamps`` are
    given) under a name that says what the parts are for.

    Parameters
    ----------
    X : sparse matrix of shape (n_users, n_items)
        All interactions; any scipy sparse format.
    test_size : float, default=0.2
        Fraction in (0, 1) of each user's interactions held out (rounded).
    timestamps : sparse matrix of shape (n_users, n_items), default=None
        If given (same sparsity pattern as ``X``), hold out each user's
        latest interactions instead of random ones.
    random_state : None, int, numpy Generator or RandomState, default=None
        Seed of the random hold-out (unused with ``timestamps``).
    min_history : int, default=1
        Interactions every user keeps in the history; users with at most
        ``min_history`` interactions hold nothing out (and are not scored).

    Returns
    -------
    X_in, y : csr_matrix of shape (n_users, n_items), float32
        Disjoint histories and held-out interactions, summing to ``X``. Fit
        a search on ``(X_in + y, y)`` with :class:`UserKFold` (new users)
        or on ``(X_in, y)`` with :class:`HoldOutSplit` (the same users).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> R = sp.csr_matrix([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    >>> X_in, y = fold_in_split(R, test_size=0.4, random_state=0)
    >>> X_in.getnnz(axis=1).tolist(), y.getnnz(axis=1).tolist()
    ([3, 1, 1], [2, 1, 0])
    """
    if timestamps is not None:
        return temporal_split(X, timestamps, test_size=test_size, min_train=min_history)
    return random_split(X, test_size=test_size, random_state=random_state, min_train=min_history)


class UserKFold(BaseCrossValidator):
    """K-fold over users for the new-users protocol (strong generalisation).

    Each fold's test users are new to the model: it trains on the other
    users' complete rows of ``X``, and the scorer folds in each test user's
    history (its row of ``X`` without the items in ``y``) and ranks against
    its row of ``y``. Only users with a held-out item are spread over the
    test folds; users without one (nothing to score) train in every fold.

    Use it with ``X`` holding *all* interactions, held-out ones included, so
    that training users learn from everything they did::

        X_in, y = fold_in_split(R, test_size=0.2, random_state=0)
        GridSearchCV(est, grid, cv=UserKFold(5, random_state=0),
                     scoring=make_ranking_scorer("ndcg", 10)).fit(X_in + y, y)

    ``split`` raises if some of ``y``'s interactions are missing from ``X``.
    Stock ``KFold(n_splits, shuffle=True)`` over the rows gives the same
    protocol without these checks (and with empty users in test folds).

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=True
        Shuffle the users before cutting them into folds, so that folds do
        not follow the row order (often sign-up time).
    random_state : None, int, numpy Generator or RandomState, default=None
        Seed of the shuffle; an int gives the same folds on every call.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> R = sp.csr_matrix(np.vstack([np.ones((4, 4)), [[1, 0, 0, 0]]]))
    >>> X_in, y = fold_in_split(R, test_size=0.25, random_state=0)
    >>> cv = UserKFold(n_splits=2, random_state=0)
    >>> [(tr.tolist(), te.tolist()) for tr, te in cv.split(X_in + y, y)]
    [([1, 3, 4], [0, 2]), ([0, 2, 4], [1, 3])]

    User 4 has a single interaction, so nothing of it is held out and it
    trains in both folds.
    """

    def __init__(self, n_splits=5, *, shuffle=True, random_state=None):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def _check_params(self):
        if (
            not isinstance(self.n_splits, numbers.Integral)
            or isinstance(self.n_splits, bool)
            or self.n_splits < 2
        ):
            raise ValueError(
                f"n_splits must be an integer >= 2; got {self.n_splits!r}. Use for example 5."
            )
        if not isinstance(self.shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False; got {self.shuffle!r}.")

    def split(self, X, y=None, groups=None):
        """Generate ``(train_rows, test_rows)`` index arrays, one pair per fold.

        Parameters
        ----------
        X : sparse matrix of shape (n_users, n_items)
            All interactions, including those in ``y``.
        y : sparse matrix or SparseTarget of shape (n_users, n_items)
            Held-out interactions.
        groups : ignored

        Yields
        ------
        train, test : ndarray of int64
            Sorted row indices.
        """
        self._check_params()
        X, y, overlap = _check_pair(X, y, "UserKFold")
        if overlap != y.nnz:
            raise ValueError(
                f"UserKFold trains on the training users' complete rows of X, so X must also "
                f"hold the held-out interactions in y; {y.nnz - overlap} of y's {y.nnz} are "
                "not in X. Call search.fit(X_in + y, y) with X_in, y from fold_in_split (or "
                "use HoldOutSplit to score the training users themselves)."
            )
        active = np.flatnonzero(np.diff(y.indptr)).astype(np.int64)
        if active.size < self.n_splits:
            raise ValueError(
                f"UserKFold(n_splits={self.n_splits}) needs at least {self.n_splits} users with "
                f"held-out interactions; got {active.size}. Lower n_splits or hold out more."
            )
        if self.shuffle:
            active = _check_rng(self.random_state).permutation(active)
        # Computed eagerly so bad input fails at the call, not at first use.
        folds = [np.sort(part) for part in np.array_split(active, self.n_splits)]
        rows = np.arange(X.shape[0], dtype=np.int64)
        return ((np.setdiff1d(rows, test, assume_unique=True), test) for test in folds)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of folds: ``n_splits``."""
        return self.n_splits


class HoldOutSplit:
    """One split for the same-users protocol (weak generalisation).

    The model trains on the history of every user (``X``, which must not
    contain ``y``'s interactions) and is scored on the same users: the
    scorer folds in each user's row of ``X`` and ranks against its row of
    ``y``. Train rows are all users, test rows those with a held-out item::

        X_in, y = fold_in_split(R, test_size=0.2, random_state=0)
        GridSearchCV(est, grid, cv=HoldOutSplit(),
                     scoring=make_ranking_scorer("ndcg", 10)).fit(X_in, y)

    Scores use fold-in rows, not the users' trained rows; for the latter
    evaluate a fitted model with :func:`sparse_rec.metrics.evaluate`.
    ``split`` raises if ``X`` and ``y`` share an interaction: the model
    would have trained on what it is scored against.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> X = sp.csr_matrix([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    >>> y = sp.csr_matrix([[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    >>> [(tr.tolist(), te.tolist()) for tr, te in HoldOutSplit().split(X, y)]
    [([0, 1, 2], [0, 1])]
    """

    def split(self, X, y=None, groups=None):
        """Generate the single ``(train_rows, test_rows)`` pair.

        Parameters
        ----------
        X : sparse matrix of shape (n_users, n_items)
            Held-in interactions (histories).
        y : sparse matrix or SparseTarget of shape (n_users, n_items)
            Held-out interactions, disjoint from ``X``.
        groups : ignored

        Yields
        ------
        train, test : ndarray of int64
            All rows, and the rows with a held-out interaction.
        """
        X, y, overlap = _check_pair(X, y, "HoldOutSplit")
        if overlap:
            raise ValueError(
                f"HoldOutSplit trains and scores the same users, so X must hold only their "
                f"histories; {overlap} of y's {y.nnz} held-out interactions are also in X, and "
                "the model would train on them. Call search.fit(X_in, y) with X_in, y from "
                "fold_in_split (X_in + y is for UserKFold)."
            )
        test = np.flatnonzero(np.diff(y.indptr)).astype(np.int64)
        if test.size == 0:
            raise ValueError(
                "HoldOutSplit needs at least one user with a held-out interaction in y; got none."
            )
        return iter([(np.arange(X.shape[0], dtype=np.int64), test)])

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits: 1."""
        return 1

    def __repr__(self):
        return "HoldOutSplit()"

