"""A model search on a dask.distributed cluster through joblib's dask backend."""

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from sparse_rec import DSLMatrixFactorization
from sparse_rec.datasets import make_interactions
from sparse_rec.metrics import make_ranking_scorer
from sparse_rec.model_selection import UserKFold, fold_in_split

distributed = pytest.importorskip(
    "distributed",
    reason="dask.distributed is not installed (pip install 'sparse-rec[distributed]')",
)


def _search(X, y, n_jobs):
    est = DSLMatrixFactorization(n_components=8, max_iter=4, update_interval=2,
                                 random_state=0, n_threads=1)
    return GridSearchCV(
        est, {"density": [0.25, 0.5]}, cv=UserKFold(2, random_state=0),
        scoring=make_ranking_scorer("ndcg", k=10), n_jobs=n_jobs,
    ).fit(X, y)


@pytest.mark.slow
def test_grid_search_on_local_cluster_matches_local_run():
    R = make_interactions(100, 40, 1200, random_state=0)
    X_in, y = fold_in_split(R, 0.25, random_state=0)
    X = X_in + y
    local = _search(X, y, n_jobs=1)
    # Worker processes (not threads), so estimator, data and scorer really
    # travel by pickle, as on a remote cluster; loopback only.
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 host="127.0.0.1", dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as tasks,
        joblib.parallel_config(backend="dask"),
    ):
        remote = _search(X, y, n_jobs=-1)
        addresses = set(client.scheduler_info()["workers"])
    # The fits and scores ran on the cluster's workers (the task stream is
    # collected when its block closes)...
    workers = {t["worker"] for t in tasks.data}
    assert workers and workers <= addresses
    # ...and, with one Numba thread and a fixed seed, gave bitwise the same scores.
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        assert np.array_equal(remote.cv_results_[key], local.cv_results_[key]), key
    assert remote.best_params_ == local.best_params_
    assert remote.best_estimator_.n_active_ == local.best_estimator_.n_active_
