"""Ranking metrics for recommenders evaluated on held-out interactions.

Top-k metrics (:func:`ranking_metrics` and the ``*_at_k`` functions) score
recommended id lists against a sparse held-out matrix; :func:`evaluate`
runs the full-ranking protocol on a model in user batches, and
:func:`evaluate_sampled` the NCF protocol with sampled negatives.
:func:`make_ranking_scorer` turns a metric into a scikit-learn scorer that
folds in users' histories, for ``GridSearchCV`` and friends.
"""

from ._ranking import (
    METRIC_NAMES,
    auc_score,
    evaluate,
    evaluate_sampled,
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    sampled_ranking_metrics,
)
from ._scorer import make_ranking_scorer

__all__ = [
    "METRIC_NAMES",
    "auc_score",
    "evaluate",
    "evaluate_sampled",
    "hit_rate_at_k",
    "make_ranking_scorer",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "sampled_ranking_metrics",
]
