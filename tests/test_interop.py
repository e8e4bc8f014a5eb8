"""implicit interop: the adapter under implicit's evaluation, the ImplicitRecommender wrapper."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.evaluation import ranking_metrics_at_k
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparse_rec.datasets import make_interactions
from sparse_rec.interop import ImplicitAdapter, ImplicitRecommender, as_implicit
from sparse_rec.metrics import evaluate, make_ranking_scorer, ranking_metrics
from sparse_rec.model_selection import UserKFold, fold_in_split, random_split
from sparse_rec.preprocessing import BM25Weighting

N_USERS, N_ITEMS = 80, 40


@pytest.fixture(scope="module")
def split():
    X = make_interactions(N_USERS, N_ITEMS, 1200, random_state=0)
    return random_split(X, test_size=0.3, random_state=0)


@pytest.fixture(scope="module", params=["als", "bpr"])
def fitted(request, split):
    X_train, _ = split
    est = ImplicitRecommender(request.param, factors=6, iterations=8, learning_rate=0.05,
                              random_state=0, n_threads=1)
    return est.fit(X_train)


def implicit_metrics(model, X_train, X_test, K):
    return ranking_metrics_at_k(model, X_train, X_test, K=K, show_progress=False)


def hand_metrics(top, X_test, K):
    """implicit's definitions written out from its source (evaluation.pyx)."""
    hits = pos = 0
    ndcg = ap_sum = auc_sum = 0.0
    n = 0
    for u in range(X_test.shape[0]):
        T = set(X_test[u].indices.tolist())
        if not T:
            continue
        n += 1
        h, ap, dcg, miss, auc = 0, 0.0, 0.0, 0, 0.0
        for r, item in enumerate(top[u, :K]):
            if item in T:  # a repeated id counts at every position
                h += 1
                ap += h / (r + 1)
                dcg += 1 / np.log2(r + 2)
            else:  # padding (-1) counts as a listed negative
                miss += 1
                auc += h
        # Negatives below the list: listed positives win, unlisted ones half.
        n_neg = X_test.shape[1] - len(T)
        auc += (h + len(T)) / 2 * (n_neg - miss)
        auc_sum += auc / (len(T) * n_neg)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(K, len(T))))
        hits += h
        pos += min(K, len(T))
        ndcg += dcg / idcg
        ap_sum += ap / min(K, len(T))
    return {"precision": hits / pos, "ndcg": ndcg / n, "map": ap_sum / n, "auc": auc_sum / n}


class FixedLists:
    """A recommender returning preset lists, to pin the metric definitions."""

    n_items_ = 6

    def __init__(self, top):
        self.top = np.asarray(top)

    def recommend(self, users, n=10, filter_seen=True, items=None):
        ids = self.top[np.asarray(users), :n]
        return ids, np.where(ids >= 0, -np.arange(n, dtype=np.float32), -np.inf)


# --------------------------------------------------------------------------- metric definitions
def test_implicit_metric_definitions_against_ours():
    top = np.array([[0, 1, 2], [3, 4, 5], [1, 0, -1], [5, 5, 2], [0, 1, 2]])
    y = sp.csr_matrix(np.array([
        [1, 0, 1, 0, 0, 0],   # 2 held out, hits at ranks 0 and 2
        [1, 1, 0, 0, 0, 1],   # 3 held out (= K), hit at rank 2
        [1, 1, 1, 1, 1, 0],   # 5 held out (> K), -1 padding
        [0, 0, 0, 0, 0, 1],   # one held out, recommended twice
        [0, 0, 0, 0, 0, 0],   # no held-out items: skipped by both
    ]))
    train = sp.csr_matrix(y.shape)
    K = 3
    theirs = implicit_metrics(as_implicit(FixedLists(top)), train, y, K)
    hand = hand_metrics(top, y, K)
    for name in ("precision", "ndcg", "map", "auc"):
        assert theirs[name] == pytest.approx(hand[name], abs=1e-12), name
    ours = ranking_metrics(top, y, k=K, metrics=("precision", "ndcg", "map"))
    # Rows without a repeated id: ndcg and map agree with ours.
    clean = np.array([0, 1, 2])
    ours_clean = ranking_metrics(top[clean], y[clean], k=K, metrics=("ndcg", "map"))
    theirs_clean = implicit_metrics(as_implicit(FixedLists(top[clean])), train[clean],
                                    y[clean], K)
    for name in ("ndcg", "map"):
        assert theirs_clean[name] == pytest.approx(ours_clean[name], abs=1e-12)
    # implicit's repeated id scores twice, ours once.
    assert theirs["ndcg"] > ours["ndcg"]
    # implicit's precision divides all hits by sum(min(K, |T|)) (a micro-average).
    assert theirs["precision"] == pytest.approx((2 + 1 + 2 + 2) / (2 + 3 + 3 + 1))
    assert ours["precision"] == pytest.approx(np.mean([2 / 3, 1 / 3, 2 / 3, 1 / 3]))


@pytest.mark.parametrize("kind", ["dsl", "implicit"])
def test_adapter_under_implicit_evaluation_matches_evaluate(kind, split):
    X_train, X_test = split
    if kind == "dsl":
        from sparse_rec import DSLMatrixFactorization

        est = DSLMatrixFactorization(n_components=8, max_iter=5, random_state=0, n_threads=1)
    else:
        est = ImplicitRecommender("bpr", factors=6, iterations=5, random_state=0, n_threads=1)
    est.fit(X_train)
    K = 10
    theirs = implicit_metrics(as_implicit(est), X_train, X_test, K)
    ours = evaluate(est, X_train, X_test, k=K, metrics=("precision", "ndcg", "map"))
    assert theirs["ndcg"] == pytest.approx(ours["ndcg"], abs=1e-12)
    assert theirs["map"] == pytest.approx(ours["map"], abs=1e-12)
    n_true = np.diff(X_test.indptr)
    n_true = n_true[n_true > 0]
    # Same hits counted, different denominators: sum(min(K, |T|)) versus K * n_users.
    assert theirs["precision"] * np.minimum(K, n_true).sum() == pytest.approx(
        ours["precision"] * K * ours["n_users_evaluated"])


def test_implicit_own_model_scores_like_our_wrapper(fitted, split):
    X_train, X_test = split
    K = 10
    theirs = implicit_metrics(fitted.model_, X_train, X_test, K)
    ours = evaluate(fitted, X_train, X_test, k=K, metrics=("ndcg", "map"))
    assert theirs["ndcg"] == pytest.approx(ours["ndcg"], abs=1e-6)
    assert theirs["map"] == pytest.approx(ours["map"], abs=1e-6)


# --------------------------------------------------------------------------- adapter API
def test_adapter_recommend_api(fitted, split):
    X_train, _ = split
    adapter = as_implicit(fitted)
    assert isinstance(adapter, ImplicitAdapter) and adapter.estimator is fitted
    users = np.array([3, 0, 7])
    ids, scores = adapter.recommend(users, X_train[users], N=5)
    assert ids.dtype == np.int32 and scores.dtype == np.float32 and ids.shape == (3, 5)
    ref_ids, ref_scores = fitted.recommend(users, n=5, filter_seen=X_train[users])
    np.testing.assert_array_equal(ids, ref_ids)
    # Scalar user: 1-D results.
    one_ids, one_scores = adapter.recommend(7, X_train[7], N=5)
    np.testing.assert_array_equal(one_ids, ref_ids[2])
    # filter_items removes items for everyone; liked items may come back unfiltered.
    banned = ref_ids[:, 0]
    ids2, _ = adapter.recommend(users, X_train[users], N=5, filter_items=banned)
    assert not np.isin(ids2, banned).any()
    ids3, _ = adapter.recommend(users, X_train[users], N=N_ITEMS,
                                filter_already_liked_items=False)
    assert (ids3 >= 0).all()
    np.testing.assert_array_equal(np.sort(ids3, axis=1), np.tile(np.arange(N_ITEMS), (3, 1)))
    # items: N shrinks to len(items), as in implicit.
    ids4, _ = adapter.recommend(users, X_train[users], N=10, items=[1, 2, 3],
                                filter_already_liked_items=False)
    assert ids4.shape == (3, 3) and set(ids4.ravel()) == {1, 2, 3}
    # recalculate_user folds the rows in as new users.
    ids5, _ = adapter.recommend(users, X_train[users], N=5, recalculate_user=True)
    np.testing.assert_array_equal(ids5, fitted.recommend_for_history(X_train[users], n=5)[0])


def test_adapter_errors(fitted, split):
    X_train, _ = split
    adapter = as_implicit(fitted)
    with pytest.raises(ValueError, match="one row per user in userid"):
        adapter.recommend([0, 1], X_train[[0]], N=3)
    with pytest.raises(ValueError, match="items and filter_items cannot both be set"):
        adapter.recommend([0], X_train[[0]], items=[1, 2], filter_items=[3])
    with pytest.raises(ValueError, match=r"filter_items must be item ids in \[0, 40\)"):
        adapter.recommend([0], X_train[[0]], filter_items=[40])
    with pytest.raises(TypeError, match="needs a recommender"):
        as_implicit(object())


# --------------------------------------------------------------------------- wrapper
# Every scikit-learn common check passes; list a check that starts failing here with
# a one-line reason.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(
    [ImplicitRecommender(m, factors=4, iterations=3, random_state=0, n_threads=1)
     for m in ("als", "bpr")],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_recommend_matches_implicit(fitted, split):
    X_train, _ = split
    users = np.arange(N_USERS)
    ours_ids, ours_scores = fitted.recommend(users, n=8)
    theirs_ids, theirs_scores = fitted.model_.recommend(users, X_train[users], N=8)
    np.testing.assert_array_equal(ours_ids, theirs_ids)
    np.testing.assert_allclose(ours_scores, theirs_scores, rtol=1e-5, atol=1e-6)
    # Scores are the factor dot products (implicit's bias column included for BPR).
    U, V = fitted.model_.user_factors, fitted.model_.item_factors
    cand = np.array([[0, 5, 9], [1, 2, 3]])
    expected = np.einsum("bd,bmd->bm", U[[4, 11]], V[cand])
    np.testing.assert_allclose(fitted.score_items([4, 11], cand), expected, rtol=1e-5)


def test_recommend_conventions(fitted, split):
    X_train, _ = split
    ids, scores = fitted.recommend([0, 1], n=5, items=[2, 3, 4])
    assert ids.shape == (2, 5)
    for u, (row, sc) in enumerate(zip(ids, scores, strict=True)):
        kept = row[row >= 0]
        eligible = {2, 3, 4} - set(X_train[u].indices.tolist())
        assert set(kept) == eligible  # all eligible items, none seen in training
        assert (row[len(kept):] == -1).all() and np.isneginf(sc[len(kept):]).all()
        assert (np.diff(sc[:len(kept)]) <= 0).all()
    with pytest.raises(ValueError, match=r"users must be user ids in \[0, 80\)"):
        fitted.recommend([N_USERS])


def test_top_n_ties_go_to_the_lower_index():
    from sparse_rec.interop import _select_top_n

    # argpartition alone keeps item 11 rather than 10 among the tied 2s here.
    S = np.array([[2, 0, 2, 2, 0, 1, 1, 0, 1, 1, 2, 2],
                  [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                  [0, -np.inf, 3, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf,
                   -np.inf, -np.inf, -np.inf]], np.float32)
    ids, vals = _select_top_n(S.copy(), 4)
    ref = np.argsort(-S, axis=1, kind="stable")[:, :4]
    ref[2, 2:] = -1  # only two finite scores
    np.testing.assert_array_equal(ids, ref)
    assert np.isneginf(vals[2, 2:]).all()


def test_fold_in_als_uses_implicit_recalculate(split):
    X_train, X_test = split
    est = ImplicitRecommender("als", factors=6, iterations=8, random_state=0,
                              n_threads=1).fit(X_train)
    H = X_test[:10] + X_train[:10]
    ours, _ = est.recommend_for_history(H, n=6)
    theirs, _ = est.model_.recommend(np.arange(10), H.tocsr(), N=6, recalculate_user=True)
    np.testing.assert_array_equal(ours, theirs)
    U = est.model_.recalculate_user(np.arange(10), H.tocsr())
    np.testing.assert_allclose(est.decision_function(H), U @ est.item_factors_.T, rtol=1e-5,
                               atol=1e-6)


def test_fold_in_bpr_is_ridge_regression(split):
    X_train, X_test = split
    est = ImplicitRecommender("bpr", factors=6, iterations=5, regularization=0.3,
                              random_state=0, n_threads=1).fit(X_train)
    H = (X_test[:12] + X_train[:12]).toarray()
    H[3] = 0  # an empty history
    V = est.item_factors_.astype(np.float64)
    d = V.shape[1]
    # Ridge as an augmented least-squares problem (no normal equations).
    A = np.vstack([V, np.sqrt(0.3) * np.eye(d)])
    U = np.stack([np.linalg.lstsq(A, np.r_[h, np.zeros(d)], rcond=None)[0] for h in H])
    scores = est.decision_function(sp.csr_matrix(H))
    assert scores.shape == (12, N_ITEMS) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, U @ V.T, rtol=1e-4, atol=1e-5)
    assert not scores[3].any()
    ids, _ = est.recommend_for_history(sp.csr_matrix(H), n=5)
    masked = np.where(H > 0, -np.inf, U @ V.T)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :5]
    ok = np.arange(12) != 3
    np.testing.assert_array_equal(ids[ok], top[ok])
    np.testing.assert_array_equal(ids[3], np.arange(5))  # all tied: lower index first
    np.testing.assert_array_equal(est.predict(sp.csr_matrix(H))[ok], top[ok, 0])


def test_fold_in_checks_item_count(fitted):
    with pytest.raises(ValueError, match="one column per item of the fitted model"):
        fitted.recommend_for_history(sp.csr_matrix((2, N_ITEMS + 1)))


def test_similar_items_is_cosine(fitted):
    V = fitted.item_factors_.astype(np.float64)
    unit = V / np.linalg.norm(V, axis=1, keepdims=True)
    ids, scores = fitted.similar_items([0, 5], n=4)
    S = unit[[0, 5]] @ unit.T
    S[[0, 1], [0, 5]] = -np.inf
    np.testing.assert_array_equal(ids, np.argsort(-S, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(scores, np.sort(S, axis=1)[:, ::-1][:, :4], rtol=1e-5)


def test_reproducible_and_picklable(split):
    X_train, _ = split
    est = ImplicitRecommender("als", factors=5, iterations=4, random_state=3, n_threads=1)
    a, b = clone(est).fit(X_train), clone(est).fit(X_train)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    c = pickle.loads(pickle.dumps(a))
    assert "_model" not in c.__dict__  # the implicit object is rebuilt from the factors
    np.testing.assert_array_equal(c.recommend_for_history(X_train[:5])[0],
                                  a.recommend_for_history(X_train[:5])[0])


def test_model_file_round_trip(fitted, split, tmp_path):
    from sparse_rec._io import load

    X_train, _ = split
    fitted.save(tmp_path / "model.npz")
    loaded = load(tmp_path / "model.npz")
    assert isinstance(loaded, ImplicitRecommender) and loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.item_factors_, fitted.item_factors_)
    users = np.arange(10)
    np.testing.assert_array_equal(loaded.recommend(users)[0], fitted.recommend(users)[0])
    H = X_train[:6]
    np.testing.assert_allclose(loaded.decision_function(H), fitted.decision_function(H),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"model": "lmf"}, r"model must be one of \('als', 'bpr'\)"),
        ({"factors": 0}, "factors must be an integer >= 1"),
        ({"iterations": 0}, "iterations must be an integer >= 1"),
        ({"regularization": -1.0}, "regularization must be a finite number >= 0"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"n_threads": 0}, "n_threads must be None, -1 or an integer >= 1"),
    ],
)
def test_bad_parameters(params, match, split):
    with pytest.raises(ValueError, match=match):
        ImplicitRecommender(**params).fit(split[0])


def test_bad_input(split):
    X = split[0].toarray()
    X[0, 0] = -1
    with pytest.raises(ValueError, match="must be non-negative"):
        ImplicitRecommender(factors=2, iterations=1).fit(X)


def test_grid_search_over_a_pipeline(split):
    X_in, y = fold_in_split(split[0] + split[1], test_size=0.3, random_state=0)
    pipe = make_pipeline(BM25Weighting(), ImplicitRecommender(factors=4, iterations=3,
                                                              random_state=0, n_threads=1))
    grid = GridSearchCV(
        pipe,
        {"implicitrecommender__model": ["als", "bpr"], "bm25weighting__K1": [1.2, 100]},
        scoring=make_ranking_scorer("ndcg", k=10), cv=UserKFold(2, random_state=0),
        error_score="raise",
    ).fit(X_in + y, y)
    assert len(grid.cv_results_["mean_test_score"]) == 4
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    best = grid.best_estimator_[-1]
    assert best.model in ("als", "bpr") and best.n_users_ == N_USERS
