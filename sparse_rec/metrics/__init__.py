"""Ranking metrics for recommenders evaluated on held-out interactions.

Top-k metrics (:func:`ranking_metrics` and the ``*_at_k`` functions) score
recommended id lists against a sparse held-out matrix; :func:`evaluate`
runs the full-ranking protocol on a model in user batches, and
:func:`evaluate_sampled` the NCF protocol with sampled negatives.
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

__all__ = [
    "METRIC_NAMES",
    "auc_score",
    "evaluate",
    "evaluate_sampled",
    "hit_rate_at_k",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "sampled_ranking_metrics",
]
