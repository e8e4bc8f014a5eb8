"""Working side by side with the `implicit` library.

- :func:`as_implicit` wraps a fitted recommender of this package so that
  implicit's evaluation functions (``implicit.evaluation.
  ranking_metrics_at_k`` and friends) can score it: they call
  ``model.recommend(userids, user_items, N=K)``.
- :class:`ImplicitRecommender` is a scikit-learn estimator around implicit's
  CPU ALS and BPR models with the recommender interface of this package
  (``recommend``, ``score_items``, fold-in of new users), so both libraries'
  models fit the same pipelines, grid searches and metrics.

See the user guide page "Pipelines and implicit" for how implicit's metric
definitions relate to :mod:`sparse_rec.metrics`.
"""

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from ._base import RecommenderMixin, SaveMixin, check_random_seed
from ._validation import check_interactions, check_positive_int, check_structure
from ._workflows import WorkflowMixin, unpack_dataset
from .exceptions import DivergenceError

__all__ = ["ImplicitAdapter", "ImplicitRecommender", "as_implicit"]

_MODELS = ("als", "bpr")
_DEFAULT_ITERATIONS = {"als": 15, "bpr": 100}
# Bound on the float32 elements of one dense score or gather block (64 MiB).
_BLOCK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- adapter
class ImplicitAdapter:
    """A fitted sparse_rec recommender seen through implicit's model interface.

    Made by :func:`as_implicit`; see there. ``estimator`` is the wrapped
    recommender.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def __repr__(self):
        return f"ImplicitAdapter({self.estimator!r})"

    def fit(self, user_items, show_progress=True, callback=None):
        """Fit the wrapped estimator on ``user_items`` (implicit's signature).

        ``show_progress`` and ``callback`` are accepted for compatibility and
        ignored; use the estimator's ``verbose`` and ``callbacks``.
        """
        self.estimator.fit(user_items)

    def recommend(
        self,
        userid,
        user_items,
        N=10,
        filter_already_liked_items=True,
        filter_items=None,
        recalculate_user=False,
        items=None,
    ):
        """Top-``N`` items with implicit's ``RecommenderBase.recommend`` signature.

        Parameters
        ----------
        userid : int or array-like of int
            User indices of the fitted model. Ignored when
            ``recalculate_user`` (the rows of ``user_items`` are the users).
        user_items : sparse matrix, shape (n_users_in_call, n_items)
            One row per user in ``userid``: the items to filter (and with
            ``recalculate_user``, the history to fold in).
        N : int, default=10
        filter_already_liked_items : bool, default=True
            Exclude the non-zeros of each user's ``user_items`` row.
        filter_items : array-like of int, optional
            Items excluded for every user.
        recalculate_user : bool, default=False
            Fold the ``user_items`` rows in as new users
            (``recommend_for_history``) instead of using the trained rows.
        items : array-like of int, optional
            Rank only these items; ``N`` is then at most ``len(items)``.

        Returns
        -------
        ids : ndarray of int32, shape (N,) for a scalar ``userid``, else (n, N)
            ``-1`` where fewer than ``N`` items are eligible (implicit
            instead repeats filtered items with score ``-FLT_MAX``).
        scores : ndarray of float32, same shape
            ``-inf`` for padding.
        """
        scalar = np.ndim(userid) == 0
        users = np.atleast_1d(np.asarray(userid))
        if items is not None and filter_items is not None and len(filter_items):
            raise ValueError(
                "items and filter_items cannot both be set (as in implicit); got both. Drop "
                "the filtered ids from items instead."
            )
        if items is not None:
            items = np.asarray(items)
            N = min(N, len(items))
        n_rows = user_items.shape[0] if recalculate_user else len(users)
        if (filter_already_liked_items or recalculate_user) and not sp.issparse(user_items):
            raise ValueError(
                f"user_items must be a sparse (n_users, n_items) matrix; got "
                f"{type(user_items).__name__}. Pass train_matrix[userids]."
            )
        if (filter_already_liked_items or recalculate_user) and user_items.shape[0] != n_rows:
            raise ValueError(
                f"user_items must have one row per user in userid ({n_rows}); got "
                f"{user_items.shape[0]} rows. Pass train_matrix[userids]."
            )
        check_structure(user_items, "user_items")  # scipy slices and adds it below
        exclude = self._exclusion(n_rows, user_items, filter_already_liked_items, filter_items)
        if recalculate_user:
            ids, scores = self.estimator.recommend_for_history(
                user_items, n=N, filter_seen=exclude, items=items
            )
        else:
            ids, scores = self.estimator.recommend(users, n=N, filter_seen=exclude, items=items)
        # implicit's evaluation reads the ids through a C int buffer.
        ids, scores = ids.astype(np.int32), scores.astype(np.float32, copy=False)
        return (ids[0], scores[0]) if scalar else (ids, scores)

    def _exclusion(self, n_rows, user_items, filter_liked, filter_items):
        """``False`` or a CSR (n_rows, n_items) of items to exclude per row."""
        n_items = self.estimator.n_items_
        parts = []
        if filter_liked:
            liked = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
            liked.data[:] = 1.0  # only the pattern matters; keeps signs from cancelling
            parts.append(liked)
        if filter_items is not None and len(filter_items):
            cols = np.unique(np.asarray(filter_items, dtype=np.int64))
            if cols.min() < 0 or cols.max() >= n_items:
                raise ValueError(
                    f"filter_items must be item ids in [0, {n_items}); got "
                    f"{cols[(cols < 0) | (cols >= n_items)][:5].tolist()}."
                )
            rows = np.repeat(np.arange(n_rows), cols.size)
            data = np.ones(rows.size, np.float32)
            parts.append(sp.csr_matrix((data, (rows, np.tile(cols, n_rows))),
                                       shape=(n_rows, n_items)))
        if not parts:
            return False
        return parts[0] if len(parts) == 1 else (parts[0] + parts[1]).tocsr()


def as_implicit(estimator):
    """Expose a fitted recommender through implicit's ``recommend`` API.

    implicit's ``ranking_metrics_at_k(model, train, test, K)`` (and
    ``precision_at_k``, ``ndcg_at_k``, ``mean_average_precision_at_k``,
    ``AUC_at_k``) call ``model.recommend(userids, train[userids], N=K)`` in
    batches and read the ids as 32-bit integers; the adapter maps that call
    to ``estimator.recommend(userids, n=K, filter_seen=train[userids])``.
    With ``recalculate_user=True`` it folds the ``user_items`` rows in as new
    users through ``estimator.recommend_for_history``.

    Parameters
    ----------
    estimator : recommender
        Any object with this package's ``recommend(users, n, filter_seen,
        items)`` (and ``recommend_for_history`` for ``recalculate_user``)
        and ``n_items_``: the estimators of this package or
        :class:`ImplicitRecommender`.

    Returns
    -------
    ImplicitAdapter

    Examples
    --------
    >>> from implicit.evaluation import ranking_metrics_at_k
    >>> from sparse_rec import DSLMatrixFactorization
    >>> from sparse_rec.datasets import make_interactions
    >>> from sparse_rec.interop import as_implicit
    >>> from sparse_rec.metrics import evaluate
    >>> from sparse_rec.model_selection import random_split
    >>> X = make_interactions(100, 50, 1500, random_state=0)
    >>> X_train, X_test = random_split(X, test_size=0.2, random_state=0)
    >>> mf = DSLMatrixFactorization(n_components=8, max_iter=5, random_state=0,
    ...                             n_threads=1).fit(X_train)
    >>> theirs = ranking_metrics_at_k(as_implicit(mf), X_train, X_test, K=10,
    ...                               show_progress=False)
    >>> ours = evaluate(mf, X_train, X_test, k=10, metrics=("ndcg", "map"))
    >>> [abs(theirs[m] - ours[m]) < 1e-12 for m in ("ndcg", "map")]
    [True, True]
    """
    if not hasattr(estimator, "recommend"):
        raise TypeError(
            f"as_implicit needs a recommender with a recommend(users, n, filter_seen) method; "
            f"got {type(estimator).__name__}."
        )
    return ImplicitAdapter(estimator)


# --------------------------------------------------------------------------- wrapper
def _blas_limit(n_threads):
    """BLAS thread limit for ``n_threads`` (None or -1: leave BLAS alone)."""
    return None if n_threads is None or n_threads == -1 else int(n_threads)


def _select_top_n(S, n):
    """Top ``n`` of each row of ``S``, best first, ties by lower index; -1 / -inf pad."""
    n_rows, n_cols = S.shape
    m = min(n, n_cols)
    if m < n_cols:
        cand = np.argpartition(-S, m - 1, axis=1)[:, :m]
        # argpartition keeps an arbitrary subset of the items tied at the
        # cut; rows with such ties are sorted in full for the lower indices.
        cut = np.take_along_axis(S, cand, axis=1).min(axis=1)
        tied = np.flatnonzero(np.isfinite(cut) & ((S >= cut[:, None]).sum(axis=1) > m))
        if tied.size:
            cand[tied] = np.argsort(-S[tied], axis=1, kind="stable")[:, :m]
    else:
        cand = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    vals = np.take_along_axis(S, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=1)
    ids = np.take_along_axis(cand, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1)
    invalid = ~np.isfinite(vals)
    ids[invalid] = -1
    vals[invalid] = -np.inf
    out_ids = np.full((n_rows, n), -1, np.int64)
    out_val = np.full((n_rows, n), -np.inf, np.float32)
    out_ids[:, :m] = ids
    out_val[:, :m] = vals
    return out_ids, out_val


class ImplicitRecommender(WorkflowMixin, SaveMixin, RecommenderMixin, BaseEstimator):
    """implicit's ALS or BPR as a scikit-learn estimator with this package's interface.

    ``fit(X)`` trains ``implicit.cpu.als.AlternatingLeastSquares`` or
    ``implicit.cpu.bpr.BayesianPersonalizedRanking`` on the users x items
    matrix ``X`` (ALS reads the values as confidences; implicit's BPR uses
    only the pattern). Weight ``X`` with :mod:`sparse_rec.preprocessing` in
    a pipeline. The
    fitted model then offers the methods of this package's estimators, with
    the same conventions (``-1`` / ``-inf`` padding, ``filter_seen``,
    errors): :meth:`recommend`, :meth:`score_items`, :meth:`similar_items`,
    and for users not in ``X`` :meth:`recommend_for_history`,
    :meth:`decision_function` and :meth:`predict`. ``get_params`` /
    ``set_params`` / ``clone`` work, so it can be tuned by ``GridSearchCV``
    next to this package's models.

    Fold-in of a new user with history row :math:`h`:

    - ALS: implicit's own ``recalculate_user`` (the exact ALS user step for
      :math:`h` against the fitted item factors, as
      ``recommend(..., recalculate_user=True)``).
    - BPR (implicit has no fold-in for it): the ridge regression of
      :math:`h` (zeros included) onto the item factors,
      :math:`u = (V^\\top V + \\lambda I)^{-1} V^\\top h` with
      :math:`\\lambda` = ``regularization``. :math:`V` includes implicit's
      item-bias column, so the weight of popularity is fitted per user too;
      fixing that coordinate to 1 as for trained users ranked worse than
      popularity in our trials, since ridge vectors live on a different
      scale from BPR's. An empty history gets all-zero scores.

    Parameters
    ----------
    model : {"als", "bpr"}, default="als"
        Which implicit model to train.
    factors : int, default=64
        Latent dimensions (BPR adds one for the item bias).
    regularization : float, default=0.01
        L2 penalty (implicit's ``regularization``); also the ridge penalty
        of BPR fold-in.
    iterations : int or None, default=None
        Epochs; None uses implicit's defaults (15 for ALS, 100 for BPR).
    learning_rate : float, default=0.01
        BPR step size; ignored by ALS.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seed of the initial factors (and BPR's sampler).
    n_threads : int or None, default=None
        implicit's ``num_threads`` for fit and fold-in (None or -1: all
        cores), and the BLAS threads of scoring. BLAS runs single-threaded
        during ``fit``, as implicit recommends. BPR is reproducible only
        with 1 thread.
    verbose : int, default=0
        1 shows implicit's progress bar.

    Attributes
    ----------
    user_factors_ : ndarray of float32, shape (n_users, d)
    item_factors_ : ndarray of float32, shape (n_items, d)
        Scores are ``user_factors_ @ item_factors_.T``; for BPR ``d`` is
        ``factors + 1`` (users hold 1 and items their bias in the last
        column).
    model_ : implicit model
        The fitted implicit model (rebuilt from the factors when missing,
        e.g. after loading a model file).
    seen_ : scipy.sparse.csr_matrix, shape (n_users, n_items)
        The training matrix (what ``filter_seen=True`` excludes).
    n_users_, n_items_ : int
    n_features_in_ : int
        ``n_items_``, for scikit-learn.

    Examples
    --------
    >>> from sparse_rec.datasets import make_interactions
    >>> from sparse_rec.interop import ImplicitRecommender
    >>> X = make_interactions(60, 30, 600, random_state=0)
    >>> als = ImplicitRecommender("als", factors=8, iterations=5, random_state=0,
    ...                           n_threads=1).fit(X)
    >>> ids, scores = als.recommend([0, 1], n=5)
    >>> ids.shape, scores.dtype
    ((2, 5), dtype('float32'))
    >>> als.recommend_for_history(X[:3], n=4)[0].shape  # rows as new users
    (3, 4)
    """

    _saved_attributes = (
        "user_factors_", "item_factors_", "seen_", "n_users_", "n_items_", "n_features_in_",
    )
    # Shapes checked on load (sparse_rec._io).
    _loaded_shapes = (
        ("user_factors_", ("n_users_", None)),
        ("item_factors_", ("n_items_", None)),
        ("seen_", ("n_users_", "n_items_")),
    )

    def __init__(
        self,
        model="als",
        factors=64,
        regularization=0.01,
        iterations=None,
        learning_rate=0.01,
        random_state=None,
        n_threads=None,
        verbose=0,
    ):
        self.model = model
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    # --- parameters -------------------------------------------------------------
    def _validate_params(self):
        if self.model not in _MODELS:
            raise ValueError(f"model must be one of {_MODELS}; got {self.model!r}.")
        check_positive_int(self.factors, "factors", hint="Use for example factors=64.")
        if self.iterations is not None:
            check_positive_int(self.iterations, "iterations")
        for name, strict in (("regularization", False), ("learning_rate", True)):
            v = getattr(self, name)
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
            if not ok or v < 0 or (strict and v == 0):
                bound = "> 0" if strict else ">= 0"
                raise ValueError(f"{name} must be a finite number {bound}; got {v!r}.")
        if self.n_threads is not None and not (
            isinstance(self.n_threads, numbers.Integral)
            and not isinstance(self.n_threads, bool)
            and (self.n_threads >= 1 or self.n_threads == -1)
        ):
            raise ValueError(
                f"n_threads must be None, -1 or an integer >= 1; got {self.n_threads!r}."
            )

    def _num_threads(self):
        # implicit: 0 means all cores.
        return 0 if self.n_threads is None or self.n_threads == -1 else int(self.n_threads)

    def _new_model(self, seed=None):
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        iterations = self.iterations or _DEFAULT_ITERATIONS[self.model]
        common = dict(
            factors=self.factors, regularization=float(self.regularization),
            iterations=iterations, num_threads=self._num_threads(), random_state=seed,
        )
        # BLAS at one thread while implicit builds and fits, as implicit asks
        # (its own threads do the work; nested BLAS pools slow it down).
        with threadpool_limits(1, "blas"):
            if self.model == "als":
                return AlternatingLeastSquares(**common)
            return BayesianPersonalizedRanking(learning_rate=float(self.learning_rate),
                                               **common)

    # --- fit --------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train the implicit model on ``X``.

        Parameters
        ----------
        X : sparse matrix or array-like, shape (n_users, n_items)
            Non-negative interactions (confidences / weights).
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        X, raw_ids = unpack_dataset(X)
        X = sp.csr_matrix(check_interactions(X))
        seed = check_random_seed(self.random_state)
        model = self._new_model(seed)
        with threadpool_limits(1, "blas"):
            model.fit(X, show_progress=bool(self.verbose))
        U = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        V = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        if not (np.isfinite(U).all() and np.isfinite(V).all()):
            raise DivergenceError(
                f"implicit's {self.model.upper()} produced non-finite factors. Lower "
                "learning_rate or raise regularization."
            )
        self.user_factors_, self.item_factors_ = U, V
        self._model = model
        self.seen_ = X
        self.n_users_, self.n_items_ = X.shape
        self.n_features_in_ = self.n_items_
        self.__dict__.pop("user_ids_", None)
        self.__dict__.pop("item_ids_", None)
        if raw_ids is not None:
            self.user_ids_, self.item_ids_ = raw_ids
        return self

    def _user_vectors(self):
        return self.user_factors_

    @property
    def model_(self):
        if getattr(self, "_model", None) is None:
            if not hasattr(self, "item_factors_"):
                raise AttributeError("model_ exists after fit.")
            model = self._new_model()
            # implicit's kernels need writable buffers (loaded arrays may not be).
            model.user_factors = np.require(self.user_factors_, np.float32, ["C", "W"])
            model.item_factors = np.require(self.item_factors_, np.float32, ["C", "W"])
            self._model = model
        return self._model

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_model", None)  # rebuilt from the factors on demand
        return state

    # --- model hooks for RecommenderMixin -----------------------------------------
    def _query(self, rows, user_side):
        U = self.user_factors_ if user_side is None else user_side
        return U[rows]

    def _fold_in(self, X):
        """User factors for history rows ``X`` (see the class notes)."""
        if X.shape[0] == 0:
            return np.zeros((0, self.item_factors_.shape[1]), np.float32)
        if self.model == "als":
            with threadpool_limits(1, "blas"):
                # implicit insists on the csr_matrix class (not csr_array).
                U = self.model_.recalculate_user(np.arange(X.shape[0]), sp.csr_matrix(X))
            return np.asarray(U, np.float32).reshape(X.shape[0], -1)
        V = self.item_factors_.astype(np.float64)
        A = V.T @ V + float(self.regularization) * np.eye(V.shape[1])
        B = np.asarray((X @ V).T)  # (d, n_rows): V^T h per row
        # lstsq, not solve: with regularization=0 the Gram matrix may be singular.
        U = np.linalg.lstsq(A, B, rcond=None)[0].T
        return np.ascontiguousarray(U, dtype=np.float32)

    def _top_n(self, rows, n, ex_indptr, ex_indices, allowed, user_side=None):
        Q = self._query(np.asarray(rows), user_side)
        V = self.item_factors_
        out_ids = np.empty((len(Q), n), np.int64)
        out_val = np.empty((len(Q), n), np.float32)
        block = max(1, _BLOCK_ELEMENTS // max(self.n_items_, 1))
        with threadpool_limits(_blas_limit(self.n_threads), "blas"):
            for b0 in range(0, len(Q), block):
                b1 = min(len(Q), b0 + block)
                S = Q[b0:b1] @ V.T
                S[:, ~allowed] = -np.inf
                e0, e1 = ex_indptr[b0], ex_indptr[b1]
                r = np.repeat(np.arange(b1 - b0), np.diff(ex_indptr[b0:b1 + 1]))
                S[r, ex_indices[e0:e1]] = -np.inf
                out_ids[b0:b1], out_val[b0:b1] = _select_top_n(S, n)
        return out_ids, out_val

    def _score(self, rows, cand, user_side=None):
        Q = self._query(np.asarray(rows), user_side)
        V = self.item_factors_
        out = np.empty(cand.shape, np.float32)
        per_row = max(1, cand.shape[1] * V.shape[1])
        block = max(1, _BLOCK_ELEMENTS // per_row)
        for b0 in range(0, len(Q), block):
            b1 = min(len(Q), b0 + block)
            out[b0:b1] = np.einsum("bd,bmd->bm", Q[b0:b1], V[cand[b0:b1]])
        return out

    def _similar(self, rows, n):
        V = self.item_factors_
        norms = np.linalg.norm(V, axis=1)
        unit = V / np.where(norms > 0, norms, 1.0)[:, None]
        out_ids = np.empty((len(rows), n), np.int64)
        out_val = np.empty((len(rows), n), np.float32)
        block = max(1, _BLOCK_ELEMENTS // max(self.n_items_, 1))
        with threadpool_limits(_blas_limit(self.n_threads), "blas"):
            for b0 in range(0, len(rows), block):
                b1 = min(len(rows), b0 + block)
                S = unit[rows[b0:b1]] @ unit.T
                S[np.arange(b1 - b0), rows[b0:b1]] = -np.inf
                out_ids[b0:b1], out_val[b0:b1] = _select_top_n(S, n)
        return out_ids, out_val
