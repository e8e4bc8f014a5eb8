"""Tests for sparse_rec.metrics: hand-computed values, AUC vs brute force, evaluate."""

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec.metrics import (
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

# k = 3 over 6 items. The 4th column is a hit for row 0 but lies beyond k.
TOP = np.array(
    [
        [0, 1, 2, 4],  # held out {1, 4}: hit at r=1
        [3, -1, -1, -1],  # held out {3}: hit at r=0, rest padding
        [5, 4, 3, 2],  # held out {}: skipped
        [0, 1, 2, 3],  # held out {0, 2, 3, 4, 5}: hits at r=0 and r=2
        [2, 3, 4, 5],  # held out {0}: no hit
    ]
)
Y = sp.csr_matrix(
    (np.ones(9), ([0, 0, 1, 3, 3, 3, 3, 3, 4], [1, 4, 3, 0, 2, 3, 4, 5, 0])), shape=(5, 6)
)
D1 = 1 / np.log2(3)  # discount at r=1; r=0 gives 1 and r=2 gives 1/2

# Hand computation, mean over the 4 evaluated rows (0, 1, 3, 4):
EXPECTED = {
    # hits / k: 1/3, 1/3, 2/3, 0
    "precision": (1 / 3 + 1 / 3 + 2 / 3 + 0) / 4,
    # hits / |T|: 1/2, 1/1, 2/5, 0
    "recall": (1 / 2 + 1 + 2 / 5 + 0) / 4,
    # row 0: D1 / (1 + D1) (IDCG over min(2, 3) positions); row 1: 1/1;
    # row 3: (1 + 1/2) / (1 + D1 + 1/2) (IDCG over min(5, 3) = 3); row 4: 0
    "ndcg": (D1 / (1 + D1) + 1 + 1.5 / (1.5 + D1) + 0) / 4,
    "hit_rate": 3 / 4,
    # row 0: P@2 / min(2, 3) = (1/2) / 2; row 1: P@1 / 1 = 1;
    # row 3: (P@1 + P@3) / 3 = (1 + 2/3) / 3; row 4: 0
    "map": (1 / 4 + 1 + 5 / 9 + 0) / 4,
    # first hit at r = 1, 0, 0, none -> 1/2, 1, 1, 0
    "mrr": (1 / 2 + 1 + 1 + 0) / 4,
}
SINGLE = {
    "precision": precision_at_k,
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
    "map": map_at_k,
    "mrr": mrr_at_k,
}


def test_ranking_metrics_hand_computed():
    out = ranking_metrics(TOP, Y, k=3)
    assert list(out) == [*METRIC_NAMES, "n_users_evaluated", "n_users_skipped"]
    for name, value in EXPECTED.items():
        assert out[name] == pytest.approx(value), name
    assert out["n_users_evaluated"] == 4
    assert out["n_users_skipped"] == 1


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_single_metric_functions_agree(name):
    assert SINGLE[name](TOP, Y, k=3) == pytest.approx(EXPECTED[name])


@pytest.mark.parametrize(
    "convert", [lambda y: y.tocoo(), lambda y: y.tocsc(), lambda y: y.toarray(), sp.csr_array]
)
def test_y_true_formats(convert):
    out = ranking_metrics(TOP, convert(Y), k=3)
    assert out["ndcg"] == pytest.approx(EXPECTED["ndcg"])


def test_subset_of_metrics_and_single_string():
    out = ranking_metrics(TOP, Y, k=3, metrics=("mrr", "recall"))
    assert list(out) == ["mrr", "recall", "n_users_evaluated", "n_users_skipped"]
    assert ranking_metrics(TOP, Y, k=3, metrics="map")["map"] == pytest.approx(EXPECTED["map"])


def test_padding_and_duplicates():
    y = sp.csr_matrix([[0, 1, 0], [1, 0, 0]])
    # Row 0: only padding -> nothing. Row 1: item 0 three times counts once.
    top = np.array([[-1, -1, -1], [0, 0, 0]])
    out = ranking_metrics(top, y, k=3)
    assert out["precision"] == pytest.approx((0 + 1 / 3) / 2)
    assert out["recall"] == pytest.approx((0 + 1) / 2)
    assert out["map"] == pytest.approx((0 + 1) / 2)


def test_all_rows_skipped_gives_nan():
    out = ranking_metrics(np.zeros((2, 1), dtype=int), sp.csr_matrix((2, 3)), k=1)
    assert np.isnan(out["precision"])
    assert (out["n_users_evaluated"], out["n_users_skipped"]) == (0, 2)


def test_perfect_ranking_scores_one():
    rng = np.random.default_rng(0)
    y = sp.random(20, 30, density=0.2, random_state=1, format="csr")
    top = np.full((20, 10), -1)
    for u in range(20):
        items = rng.permutation(y[u].indices)[:10]
        top[u, : items.size] = items
    out = ranking_metrics(top, y, k=10)
    for name in ("ndcg", "hit_rate", "map", "mrr"):
        assert out[name] == pytest.approx(1.0), name


@pytest.mark.parametrize(
    ("top", "k", "match"),
    [
        (TOP, 0, r"k must be an integer >= 1; got 0"),
        (TOP, 2.0, r"k must be an integer >= 1; got 2.0"),
        (TOP[0], 3, r"top_items must be a 2-D array"),
        (TOP[:2], 3, r"one row per user; got 2 rows in top_items and 5 in y_true"),
        (TOP, 5, r"at least k=5 columns; got 4\. Ask the model for at least k items"),
        (TOP.astype(float), 3, r"integer item ids .* got dtype float64"),
        (TOP - 2, 3, r"item ids in \[0, 6\) or -1 for padding; got \[-2"),
        (TOP + 3, 3, r"item ids in \[0, 6\) or -1 for padding; got \[6"),
    ],
)
def test_ranking_errors(top, k, match):
    with pytest.raises(ValueError, match=match):
        ranking_metrics(top, Y, k=k)


def test_unknown_metric_and_bad_y_true():
    with pytest.raises(ValueError, match=r"metrics must be a non-empty subset of .*'auc'"):
        ranking_metrics(TOP, Y, k=3, metrics=("ndcg", "auc"))
    with pytest.raises(ValueError, match=r"y_true must be a 2-D"):
        ranking_metrics(TOP, np.ones(6), k=3)


# --------------------------------------------------------------------------- AUC
def _auc_brute(scores, y, exclude):
    pos_m = y.toarray() != 0
    ex_m = np.zeros_like(pos_m) if exclude is None else exclude.toarray() != 0
    values = []
    for u in range(scores.shape[0]):
        pos = np.flatnonzero(pos_m[u])
        neg = np.flatnonzero(~pos_m[u] & ~ex_m[u])
        if pos.size == 0 or neg.size == 0:
            continue
        total = 0.0
        for i in pos:
            for j in neg:
                a, b = scores[u, i], scores[u, j]
                total += 1.0 if a > b else 0.5 if a == b else 0.0
        values.append(total / (pos.size * neg.size))
    return np.mean(values)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_brute_force(seed, ties):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(12, 15))
    if ties:
        scores = np.round(scores)  # few distinct values -> many ties
    y = sp.random(12, 15, density=0.2, random_state=seed, format="csr")
    # Overlaps y on purpose: held-out items stay positives even if excluded.
    exclude = sp.random(12, 15, density=0.3, random_state=seed + 100, format="csr")
    assert auc_score(scores, y, exclude) == pytest.approx(_auc_brute(scores, y, exclude))
    assert auc_score(scores, y) == pytest.approx(_auc_brute(scores, y, None))


def test_auc_hand_computed_and_skipped_rows():
    scores = np.array([[3.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]])
    # Row 0: positive item 1 (score 1) vs negatives 0, 2, 3 (3, 1, 0): 0 + 1/2 + 1 -> 1/2.
    # Row 1: no positive, skipped. Row 2: every item excluded but the positive, skipped.
    y = sp.csr_matrix([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    exclude = sp.csr_matrix([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]])
    assert auc_score(scores, y, exclude) == pytest.approx(0.5)
    assert np.isnan(auc_score(scores[1:2], y[1:2]))


def test_auc_errors():
    y = sp.csr_matrix([[0, 1, 0]])
    with pytest.raises(ValueError, match=r"scores must have the shape of y_true \(1, 3\)"):
        auc_score(np.zeros((1, 2)), y)
    with pytest.raises(ValueError, match=r"scores must not contain NaN; got 1"):
        auc_score(np.array([[0.0, np.nan, 1.0]]), y)
    with pytest.raises(ValueError, match=r"exclude must have the shape of y_true"):
        auc_score(np.zeros((1, 3)), y, exclude=sp.csr_matrix((2, 3)))


# --------------------------------------------------------------------------- sampled
def test_sampled_metrics_ties_rank_above_positive():
    s = np.array(
        [
            [2.0, 1.0, 0.0, 0.0],  # rank 0
            [1.0, 1.0, 0.0, 2.0],  # tie and a larger negative: rank 2
            [0.5, 0.5, 0.5, 0.5],  # all tied: rank 3
        ]
    )
    out = sampled_ranking_metrics(s, k=3)
    # HR: rank < 3 for rows 0, 1. NDCG: 1/log2(2) + 1/log2(4) = 1 + 1/2.
    assert out == pytest.approx({"hit_rate": 2 / 3, "ndcg": 1.5 / 3, "n_users_evaluated": 3})
    assert sampled_ranking_metrics(s, k=1)["hit_rate"] == pytest.approx(1 / 3)


def test_sampled_errors():
    with pytest.raises(ValueError, match=r"at least one negative after it; got shape \(3, 1\)"):
        sampled_ranking_metrics(np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"candidate_scores must not contain NaN"):
        sampled_ranking_metrics(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"k must be an integer >= 1; got -1"):
        sampled_ranking_metrics(np.zeros((3, 2)), k=-1)


# --------------------------------------------------------------------------- models
class DenseModel:
    """Scores items by a fixed matrix; records the calls it receives."""

    def __init__(self, S):
        self.S = np.asarray(S, dtype=float)
        self.calls = []

    def recommend(self, users, n, filter_seen):
        assert sp.issparse(filter_seen) and filter_seen.shape == (len(users), self.S.shape[1])
        self.calls.append((users.copy(), filter_seen.copy()))
        s = self.S[users].copy()
        s[filter_seen.toarray() != 0] = -np.inf
        ids = np.argsort(-s, axis=1, kind="stable")[:, :n]
        top = np.take_along_axis(s, ids, axis=1)
        return np.where(np.isinf(top), -1, ids), top

    def score_items(self, users, items):
        users = np.asarray(users)
        return self.S[users[:, None], items]


def _random_split(seed, n_users=40, n_items=25):
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n_users, n_items))
    X = sp.random(n_users, n_items, density=0.3, random_state=seed, format="csr")
    X.data[:] = 1
    test_mask = rng.random(X.nnz) < 0.3
    rows = np.repeat(np.arange(n_users), np.diff(X.indptr))
    train = sp.csr_matrix((X.data[~test_mask], (rows[~test_mask], X.indices[~test_mask])), X.shape)
    test = sp.csr_matrix((X.data[test_mask], (rows[test_mask], X.indices[test_mask])), X.shape)
    return S, train, test


def test_evaluate_excludes_training_items():
    S = np.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    train = sp.csr_matrix([[1, 0, 0, 0], [1, 1, 1, 0]])
    test = sp.csr_matrix([[0, 1, 0, 0], [0, 0, 0, 1]])
    model = DenseModel(S)
    out = evaluate(model, train, test, k=2, batch_size=1, auc=True)
    # User 0: item 0 is filtered, so the list is [1, 2] and item 1 hits at r=0.
    # User 1: only item 3 is left, list [3, -1], hit at r=0. Without the
    # filter both lists would be [0, 1]: one hit at r=1 for user 0, none for 1.
    assert out["hit_rate"] == 1.0 and out["mrr"] == 1.0 and out["precision"] == 0.5
    # AUC user 0: positive 1 (score 2) beats negatives 2, 3; item 0 excluded -> 1.
    # User 1 has no negative left, so it is skipped from AUC.
    assert out["auc"] == 1.0
    assert [c[0].tolist() for c in model.calls] == [[0], [1]]
    for users, seen in model.calls:
        assert (seen != train[users]).nnz == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_batching_invariance_and_reference(seed):
    S, train, test = _random_split(seed)
    results = [
        evaluate(DenseModel(S), train, test, k=5, batch_size=b, auc=True) for b in (1, 7, 1000)
    ]
    for other in results[1:]:
        assert other == pytest.approx(results[0])
    # Reference: rank everything at once by hand.
    users = np.flatnonzero(np.diff(test.indptr))
    s = S[users].copy()
    s[train[users].toarray() != 0] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :5]
    expected = ranking_metrics(top, test[users], k=5)
    expected["auc"] = auc_score(S[users], test[users], exclude=train[users])
    assert results[0] == pytest.approx(expected)
    assert results[0]["n_users_evaluated"] == users.size
    assert results[0]["n_users_skipped"] == 0


def test_evaluate_explicit_users_counts_skipped():
    S, train, test = _random_split(3)
    empty = np.flatnonzero(np.diff(test.indptr) == 0)[:2]
    full = np.flatnonzero(np.diff(test.indptr))[:3]
    out = evaluate(DenseModel(S), train, test, k=3, users=np.concatenate([empty, full]))
    assert (out["n_users_evaluated"], out["n_users_skipped"]) == (3, empty.size)
    ref = evaluate(DenseModel(S), train, test, k=3, users=full)
    assert out["ndcg"] == pytest.approx(ref["ndcg"])


def test_evaluate_errors():
    S, train, test = _random_split(0)
    model = DenseModel(S)
    with pytest.raises(ValueError, match=r"X_train and X_test must have the same shape"):
        evaluate(model, train[:, :-1], test)
    with pytest.raises(ValueError, match=r"X_test must have at least one user with a held-out"):
        evaluate(model, train, sp.csr_matrix(test.shape))
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1; got 0"):
        evaluate(model, train, test, batch_size=0)
    with pytest.raises(ValueError, match=r"users must be user ids in \[0, 40\)"):
        evaluate(model, train, test, users=[0, 40])


def test_evaluate_sampled():
    S = np.arange(12, dtype=float).reshape(2, 6)  # higher item id -> higher score
    users = np.array([0, 1])
    # User 0: positive 5 beats 1, 2 -> rank 0. User 1: positive 0 below 3, 4 -> rank 2.
    out = evaluate_sampled(DenseModel(S), users, [5, 0], [[1, 2], [3, 4]], k=2)
    assert out == pytest.approx({"hit_rate": 0.5, "ndcg": 0.5, "n_users_evaluated": 2})
    with pytest.raises(ValueError, match=r"negatives must have shape \(len\(users\), n_neg"):
        evaluate_sampled(DenseModel(S), users, [5, 0], [1, 2])
    with pytest.raises(ValueError, match=r"users and test_items must be 1-D arrays"):
        evaluate_sampled(DenseModel(S), users, [5], [[1, 2], [3, 4]])
