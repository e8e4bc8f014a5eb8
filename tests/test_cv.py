"""Tests for the cross-validation splitters and the fold-in search protocols."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from sparse_rec import DSLMatrixFactorization
from sparse_rec.datasets import make_interactions
from sparse_rec.metrics import make_ranking_scorer
from sparse_rec.model_selection import (
    HoldOutSplit,
    SparseTarget,
    UserKFold,
    fold_in_split,
    random_split,
    temporal_split,
)


class Popularity(BaseEstimator):
    """Ranks by shrunk item popularity; enough to tell training sets apart."""

    def __init__(self, shrink=0.0):
        self.shrink = shrink

    def fit(self, X, y=None):
        X = sp.csr_matrix(X)
        counts = np.asarray((X != 0).sum(axis=0), dtype=np.float64).ravel()
        # A shrink towards the mean changes the ranking only through ties.
        self.score_ = counts / (counts + self.shrink + 1.0) + 1e-6 * np.arange(X.shape[1])
        self.fit_rows_ = X.shape[0]
        return self

    def recommend_for_history(self, X, n=10, filter_seen=True):
        S = np.tile(self.score_, (X.shape[0], 1))
        if filter_seen:
            S[sp.csr_matrix(X).toarray() != 0] = -np.inf
        ids = np.argsort(-S, axis=1, kind="stable")[:, :n]
        return np.where(np.isfinite(np.take_along_axis(S, ids, 1)), ids, -1), None


def _data(n_users=50, n_items=30, seed=0):
    R = make_interactions(n_users, n_items, 12 * n_users, random_state=seed)
    return fold_in_split(R, 0.25, random_state=seed)


def _empty_rows(y, rows):
    """``y`` with nothing held out for ``rows``."""
    keep = np.ones(y.shape[0])
    keep[rows] = 0.0
    out = (sp.diags(keep) @ y).tocsr()
    out.eliminate_zeros()
    return out


def _has_fold_in():
    return hasattr(DSLMatrixFactorization, "recommend_for_history")


# -- fold_in_split -------------------------------------------------------------


def test_fold_in_split_is_random_or_temporal_split():
    R = make_interactions(30, 20, 200, random_state=1)
    X_in, y = fold_in_split(R, 0.3, random_state=4, min_history=2)
    A, B = random_split(R, 0.3, random_state=4, min_train=2)
    assert (X_in != A).nnz == 0 and (y != B).nnz == 0
    T = R.copy()
    T.data = np.arange(T.nnz, dtype=np.float64)[::-1]
    X_in, y = fold_in_split(R, 0.3, timestamps=T)
    A, B = temporal_split(R, T, 0.3)
    assert (X_in != A).nnz == 0 and (y != B).nnz == 0


# -- UserKFold -----------------------------------------------------------------


def test_user_kfold_partitions_users_with_held_out_items():
    X_in, y = _data()
    # Three users with nothing held out.
    y = _empty_rows(y, [0, 3, y.shape[0] - 1])
    active = np.flatnonzero(np.diff(y.indptr))
    assert active.size == y.shape[0] - 3
    cv = UserKFold(n_splits=4, random_state=0)
    folds = list(cv.split(X_in + y, y))
    assert len(folds) == cv.get_n_splits() == 4
    tests = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tests), active)
    for train, test in folds:
        assert np.array_equal(np.union1d(train, test), np.arange(y.shape[0]))
        assert np.intersect1d(train, test).size == 0
        assert {0, 3, y.shape[0] - 1} <= set(train.tolist())
        assert abs(test.size - active.size / 4) < 1
    # An int seed gives the same folds on every call; another seed others.
    again = list(cv.split(X_in + y, y))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    other = list(UserKFold(4, random_state=1).split(X_in + y, y))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_user_kfold_without_shuffle_cuts_in_row_order():
    X_in, y = _data(n_users=12)
    active = np.flatnonzero(np.diff(y.indptr))
    folds = [te for _, te in UserKFold(3, shuffle=False).split(X_in + y, SparseTarget(y))]
    assert np.array_equal(np.concatenate(folds), active)


def test_user_kfold_bad_input():
    X_in, y = _data(n_users=12)
    with pytest.raises(ValueError, match="X must also hold the held-out interactions"):
        UserKFold(3).split(X_in, y)
    with pytest.raises(ValueError, match="UserKFold needs y, the held-out interactions"):
        UserKFold(3).split(X_in + y, None)
    with pytest.raises(ValueError, match=r"y must have the shape of X .*got X \(12, 30\) and y"):
        UserKFold(3).split(X_in + y, y[:, :10])
    with pytest.raises(ValueError, match="n_splits must be an integer >= 2; got 1"):
        UserKFold(1).split(X_in + y, y)
    few = _empty_rows(y, np.arange(2, 12))
    with pytest.raises(ValueError, match="at least 3 users with held-out interactions; got 2"):
        UserKFold(3).split(X_in + few, few)


def test_user_kfold_repr():
    expected = "UserKFold(n_splits=3, random_state=0, shuffle=True)"
    assert repr(UserKFold(3, random_state=0)) == expected


# -- HoldOutSplit --------------------------------------------------------------


def test_hold_out_split_one_split_over_all_users():
    X_in, y = _data(n_users=12)
    y = _empty_rows(y, [0])
    cv = HoldOutSplit()
    (train, test), = list(cv.split(X_in, y))
    assert cv.get_n_splits() == 1
    assert np.array_equal(train, np.arange(12))
    assert np.array_equal(test, np.flatnonzero(np.diff(y.indptr)))
    assert 0 not in test


def test_hold_out_split_bad_input():
    X_in, y = _data(n_users=12)
    with pytest.raises(ValueError, match="12 of y's 12 held-out|of y's .* are also in X"):
        HoldOutSplit().split(X_in + y, y)
    with pytest.raises(ValueError, match="HoldOutSplit needs y"):
        HoldOutSplit().split(X_in, None)
    with pytest.raises(ValueError, match="at least one user with a held-out interaction"):
        HoldOutSplit().split(X_in, sp.csr_matrix(y.shape))
    assert repr(HoldOutSplit()) == "HoldOutSplit()"


# -- SparseTarget --------------------------------------------------------------


def test_sparse_target_indexes_rows():
    _, y = _data(n_users=12)
    t = SparseTarget(y.tocoo())
    assert len(t) == 12 and t.shape == y.shape
    rows = np.array([3, 0, 7])
    assert (t[rows].matrix != y[rows]).nnz == 0
    assert (t[2:5].matrix != y[2:5]).nnz == 0
    assert SparseTarget(t).matrix is t.matrix
    # scikit-learn's row indexing form; anything else is refused.
    assert (t[[1, 4], ...].matrix != y[[1, 4]]).nnz == 0
    assert (t[[1, 4], :].matrix != y[[1, 4]]).nnz == 0
    with pytest.raises(IndexError, match="indexed by rows only"):
        t[1, 2]
    assert repr(t) == f"SparseTarget(<12 x 30, {y.nnz} held-out interactions>)"


def _manual_scores(est, X, y, folds, scorer):
    """Fit and score each fold by hand, as the search should."""
    return [scorer(clone(est).fit(X[tr]), X[te], y[te]) for tr, te in folds]


def test_cross_val_score_with_sparse_target():
    X_in, y = _data()
    X = X_in + y
    cv = UserKFold(3, random_state=0)
    scorer = make_ranking_scorer("recall", 5)
    got = cross_val_score(Popularity(), X, SparseTarget(y), cv=cv, scoring=scorer)
    expected = _manual_scores(Popularity(), X, y, list(cv.split(X, y)), scorer)
    assert got.tolist() == expected


# -- GridSearchCV with the two protocols ---------------------------------------


@pytest.mark.parametrize("wrap", [False, True])
def test_grid_search_new_users_matches_manual_folds(wrap):
    X_in, y = _data()
    X = X_in + y
    cv = UserKFold(3, random_state=0)
    scorer = make_ranking_scorer("ndcg", 5)
    grid = {"shrink": [0.0, 50.0]}
    search = GridSearchCV(Popularity(), grid, cv=cv, scoring=scorer)
    search.fit(X, SparseTarget(y) if wrap else y)
    folds = list(cv.split(X, y))
    for i, shrink in enumerate(grid["shrink"]):
        expected = _manual_scores(Popularity(shrink=shrink), X, y, folds, scorer)
        got = [search.cv_results_[f"split{j}_test_score"][i] for j in range(3)]
        assert got == expected
    # Training users learned from their complete rows: the held-out items too.
    assert search.best_estimator_.fit_rows_ == X.shape[0]


def test_grid_search_with_stock_kfold_matches_manual_folds():
    X_in, y = _data()
    X = X_in + y
    cv = KFold(3, shuffle=True, random_state=0)
    scorer = make_ranking_scorer("map", 5)
    search = GridSearchCV(Popularity(), {"shrink": [0.0]}, cv=cv, scoring=scorer).fit(X, y)
    expected = _manual_scores(Popularity(), X, y, list(cv.split(X)), scorer)
    assert [search.cv_results_[f"split{j}_test_score"][0] for j in range(3)] == expected


def test_grid_search_same_users_matches_manual():
    X_in, y = _data()
    scorer = make_ranking_scorer("precision", 5)
    search = GridSearchCV(Popularity(), {"shrink": [0.0, 50.0]}, cv=HoldOutSplit(),
                          scoring=scorer).fit(X_in, y)
    for i, shrink in enumerate([0.0, 50.0]):
        expected = scorer(Popularity(shrink=shrink).fit(X_in), X_in, y)
        assert search.cv_results_["split0_test_score"][i] == expected


def test_grid_search_density_on_dsl_mf():
    """The issue's check: GridSearchCV over density, NDCG@10, k-fold over users."""
    X_in, y = _data(n_users=80, n_items=40)
    X = X_in + y
    est = DSLMatrixFactorization(n_components=8, max_iter=4, update_interval=2,
                                 random_state=0, n_threads=1)
    cv = UserKFold(2, random_state=0)
    scorer = make_ranking_scorer("ndcg", k=10)
    densities = [0.25, 1.0]
    search = GridSearchCV(est, {"density": densities}, cv=cv, scoring=scorer).fit(X, y)
    folds = list(cv.split(X, y))
    for i, density in enumerate(densities):
        expected = _manual_scores(clone(est).set_params(density=density), X, y, folds, scorer)
        got = [search.cv_results_[f"split{j}_test_score"][i] for j in range(2)]
        assert got == expected
        assert all(0 < s <= 1 for s in got)
    assert search.best_params_["density"] == densities[int(np.argmax(
        search.cv_results_["mean_test_score"]))]
    assert search.best_estimator_.n_users_ == X.shape[0]


def test_pipeline_grid_search_over_mf_density():
    from sklearn.pipeline import Pipeline

    from sparse_rec import preprocessing

    X_in, y = _data(n_users=60, n_items=30)
    X = X_in + y
    # Counts that differ per entry, binarised by the pipeline: raw, they
    # would weight both training and fold-in differently.
    X.data = np.random.default_rng(0).integers(1, 6, X.nnz).astype(np.float32)
    pipe = Pipeline([
        ("binarize", preprocessing.BinarizeInteractions()),
        ("mf", DSLMatrixFactorization(n_components=8, max_iter=3, random_state=0, n_threads=1)),
    ])
    cv = UserKFold(2, random_state=0)
    scorer = make_ranking_scorer("ndcg", k=10)
    search = GridSearchCV(pipe, {"mf__density": [0.25, 0.5]}, cv=cv, scoring=scorer).fit(X, y)
    # Same as the bare model on binarised data: the scorer transforms the
    # histories through the pipeline before folding them in.
    Xb = (X != 0).astype(np.float32)
    bare = GridSearchCV(pipe.named_steps["mf"], {"density": [0.25, 0.5]}, cv=cv,
                        scoring=scorer).fit(Xb, y)
    assert np.array_equal(search.cv_results_["mean_test_score"],
                          bare.cv_results_["mean_test_score"])
