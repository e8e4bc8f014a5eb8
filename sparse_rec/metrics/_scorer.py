"""A scikit-learn scorer for top-k ranking metrics of folded-in users."""

import numpy as np

from .._validation import check_interactions, check_positive_int
from ..model_selection._cv import SparseTarget
from ._ranking import METRIC_NAMES, _ranking_sums

__all__ = ["make_ranking_scorer"]


def _final_recommender(estimator):
    """The estimator answering ``recommend_for_history`` and the steps before it.

    A scikit-learn ``Pipeline`` only forwards the methods it knows, so the
    scorer runs the pipeline's transformers itself and asks its last step.
    """
    steps = []
    est = estimator
    while not hasattr(est, "recommend_for_history") and hasattr(est, "steps"):
        if len(est.steps) > 1:
            steps.append(est[:-1])
        est = est.steps[-1][1]
    if not hasattr(est, "recommend_for_history"):
        raise TypeError(
            "make_ranking_scorer scores recommenders that fold in new users: the estimator "
            "(or a Pipeline's last step) must have recommend_for_history(X, n, filter_seen); "
            f"got {type(est).__name__}. Use a sparse_rec estimator, or evaluate a fitted "
            "model on its own users with sparse_rec.metrics.evaluate."
        )
    return est, steps


class _RankingScorer:
    """Callable ``(estimator, X, y) -> float``; see :func:`make_ranking_scorer`."""

    def __init__(self, metric, k, batch_size):
        self.metric = metric
        self.k = k
        self.batch_size = batch_size

    def __call__(self, estimator, X, y=None):
        if y is None:
            raise ValueError(
                f"{self!r} needs y, the held-out interactions of X's users (a sparse matrix "
                "with the shape of X); got None. Fit the search with search.fit(X, y), (X, y) "
                "from sparse_rec.model_selection.fold_in_split."
            )
        y = y.matrix if isinstance(y, SparseTarget) else y
        X = check_interactions(X, name="X", allow_empty=True)
        y = check_interactions(y, name="y", allow_empty=True)
        if y.shape != X.shape:
            raise ValueError(
                f"y must have the shape of X (one row of held-out interactions per row of X); "
                f"got X {X.shape} and y {y.shape}."
            )
        recommender, steps = _final_recommender(estimator)
        # Users without held-out items are skipped (as in evaluate): folding
        # them in would cost time for nothing.
        users = np.flatnonzero(np.diff(y.indptr))
        if users.size == 0:
            raise ValueError(
                f"y has no held-out interaction for any of its {y.shape[0]} users, so there is "
                "nothing to score. Hold out part of each user's interactions (fold_in_split)."
            )
        X, y = X[users], y[users]
        # An item held out in y is not part of the history even when X has it
        # too (X may be the users' complete rows): removing it keeps it
        # rankable, since recommend_for_history filters the history.
        history = X - X.multiply(y.astype(bool))
        history.eliminate_zeros()
        total, n_eval = 0.0, 0
        for start in range(0, users.size, self.batch_size):
            block = slice(start, start + self.batch_size)
            H = history[block]
            # With transformers, filter the untransformed history: a step may
            # drop entries (a threshold, a zero IDF), and those items were seen.
            seen = H if steps else True
            for step in steps:
                H = step.transform(H)
            ids = recommender.recommend_for_history(H, n=self.k, filter_seen=seen)[0]
            # Sums, not means, so pooling batches equals scoring all at once.
            b_sums, b_eval, _ = _ranking_sums(ids, y[block], self.k, (self.metric,))
            total += b_sums[self.metric]
            n_eval += b_eval
        return total / n_eval

    def __repr__(self):
        return f"make_ranking_scorer({self.metric!r}, k={self.k})"


def make_ranking_scorer(metric="ndcg", k=10, *, batch_size=1024):
    """A scorer ``(estimator, X, y) -> float`` for scikit-learn's model selection.

    For each user (row) with held-out items in ``y``, the estimator folds in
    the user's history, its row of ``X`` without the items in ``y``, through
    ``estimator.recommend_for_history(history, n=k, filter_seen=True)`` (so
    the history items are never recommended), and the top ``k`` are compared
    with the row of ``y`` by ``metric``, as defined in
    :func:`ranking_metrics`. The score is the mean over those users; users
    without held-out items are skipped, as in :func:`evaluate`. Greater is
    better for every metric, so ``GridSearchCV`` keeps the largest.

    ``X`` may hold the histories only, or the users' complete rows: what is
    also in ``y`` is held out either way. Use it with the splitters of
    :mod:`sparse_rec.model_selection` (:class:`~sparse_rec.model_selection.UserKFold`
    for new users, :class:`~sparse_rec.model_selection.HoldOutSplit` for the
    training users) or with stock ``KFold`` over users. A ``Pipeline`` is
    scored through its last step after its transformers have transformed
    the histories.

    Parameters
    ----------
    metric : {"precision", "recall", "ndcg", "hit_rate", "map", "mrr"}, default="ndcg"
    k : int, default=10
        Cut-off: the length of each recommended list.
    batch_size : int, default=1024
        Users folded in per call; the score does not depend on it.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)`` with ``X`` and ``y`` sparse matrices of
        the same shape (``y`` may also be a
        :class:`~sparse_rec.model_selection.SparseTarget`). It raises when
        ``y`` is missing, has another shape or holds no interaction.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> class MostPopular:
    ...     def fit(self, X, y=None):
    ...         self.order_ = np.argsort(-X.getnnz(axis=0), kind="stable")
    ...         return self
    ...     def recommend_for_history(self, X, n=10, filter_seen=True):
    ...         ids = [[i for i in self.order_ if X[u, i] == 0][:n] for u in range(X.shape[0])]
    ...         return np.array(ids), None
    >>> X = sp.csr_matrix([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]])
    >>> y = sp.csr_matrix([[0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    >>> scorer = make_ranking_scorer("hit_rate", k=1)
    >>> scorer(MostPopular().fit(X), X, y)  # user 0 gets item 2 (a miss), user 1 item 1
    0.5
    """
    if not isinstance(metric, str) or metric not in METRIC_NAMES:
        raise ValueError(
            f"metric must be one of {METRIC_NAMES}; got {metric!r}. For several metrics pass "
            "a dict of scorers, GridSearchCV(scoring={name: make_ranking_scorer(name, k)}, ...)."
        )
    k = check_positive_int(k, "k", hint="Use for example k=10.")
    batch_size = check_positive_int(batch_size, "batch_size")
    return _RankingScorer(metric, k, batch_size)
