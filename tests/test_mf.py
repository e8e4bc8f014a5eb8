"""DSLMatrixFactorization: behaviour on data with a known answer, errors, API."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from sparse_rec import DSLMatrixFactorization
from sparse_rec.exceptions import DivergenceError, NotFittedError


def blocks(n_groups=4, per_group=10, items_per_group=6, hold=1, seed=0):
    """Users in group g like the items of group g; one liked item held out each."""
    rng = np.random.default_rng(seed)
    n_users, n_items = n_groups * per_group, n_groups * items_per_group
    X = np.zeros((n_users, n_items), np.float32)
    held = np.zeros(n_users, np.int64)
    for u in range(n_users):
        g = u // per_group
        items = np.arange(g * items_per_group, (g + 1) * items_per_group)
        held[u] = rng.choice(items)
        X[u, items] = 1
        X[u, held[u]] = 0
    return sp.csr_matrix(X), held


def fast(**kw):
    # The BPR model (learning_rate, optimizer, item bias); iALS: test_ials.py.
    params = dict(loss="bpr", n_components=8, density=0.5, max_iter=30, learning_rate=0.1,
                  update_interval=3, random_state=0, n_threads=1)
    params.update(kw)
    return DSLMatrixFactorization(**params)


@pytest.mark.parametrize("density", [1.0, 0.5])
def test_recovers_held_out_item_of_the_users_group(density):
    X, held = blocks()
    mf = fast(density=density, max_iter=60).fit(X)
    ids, _ = mf.recommend(np.arange(X.shape[0]), n=1)
    # The only unseen item of a user's own group is the held-out one.
    assert np.mean(ids[:, 0] == held) >= 0.9


def test_budget_is_exact_after_every_epoch_and_history_is_complete():
    X, _ = blocks()
    mf = fast(density=0.3).fit(X)
    budget = round(0.3 * 8 * (X.shape[0] + X.shape[1]))
    assert mf.n_active_ == budget
    assert len(mf.history_) == mf.n_iter_ == 30
    assert all(h["nnz"] == budget for h in mf.history_)
    assert sum(h["grown"] for h in mf.history_) > 0
    assert all(h["pruned"] == h["grown"] for h in mf.history_)
    assert mf.history_[-1]["coverage"] > 0.3
    assert mf.user_factors_.nnz + mf.item_factors_.nnz == budget
    assert mf.nbytes_ < mf.dense_nbytes_


def test_static_sparse_never_changes_the_pattern():
    X, _ = blocks()
    mf = fast(update_ratio=0.0).fit(X)
    assert all(h["grown"] == 0 for h in mf.history_)
    assert mf.history_[-1]["coverage"] == pytest.approx(0.5, abs=1e-9)


def test_table_budget_keeps_each_table_count():
    X, _ = blocks()
    mf = fast(budget="table", grow="random").fit(X)
    counts = {(h["nnz_user"], h["nnz_item"]) for h in mf.history_}
    assert len(counts) == 1


def test_one_thread_fit_is_bitwise_reproducible():
    X, _ = blocks()
    a = fast().fit(X)
    b = fast().fit(X)
    np.testing.assert_array_equal(a.user_factors_.toarray(), b.user_factors_.toarray())
    np.testing.assert_array_equal(a.item_factors_.toarray(), b.item_factors_.toarray())
    c = fast(random_state=1).fit(X)
    assert not np.array_equal(a.user_factors_.toarray(), c.user_factors_.toarray())


def test_recommend_filters_and_restricts():
    X, held = blocks()
    mf = fast().fit(X)
    users = np.array([0, 15])
    ids, scores = mf.recommend(users, n=5)
    assert ids.shape == scores.shape == (2, 5)
    for row, u in enumerate(users):
        assert not set(ids[row]) & set(X[u].indices)
        assert np.all(np.diff(scores[row]) <= 0)
    ids, _ = mf.recommend(users, n=30, items=[1, 2, 3])
    assert set(ids[0][ids[0] >= 0]) <= {1, 2, 3}
    assert np.all(ids[:, 3:] == -1)
    ids_all, _ = mf.recommend(users, n=3, filter_seen=False)
    assert ids_all.shape == (2, 3)
    # A custom exclusion matrix overrides the training pattern.
    E = sp.csr_matrix((2, X.shape[1]))
    ids_e, _ = mf.recommend(users, n=3, filter_seen=E)
    np.testing.assert_array_equal(ids_e, ids_all)


def test_score_items_agrees_with_recommend():
    X, _ = blocks()
    mf = fast().fit(X)
    ids, scores = mf.recommend([3, 4], n=4)
    np.testing.assert_allclose(mf.score_items([3, 4], ids), scores, rtol=1e-5)


def test_similar_items_prefers_the_same_group():
    X, _ = blocks()
    mf = fast(density=1.0, max_iter=60).fit(X)
    ids, scores = mf.similar_items([0, 7], n=3)
    assert 0 not in ids[0]
    assert np.mean(ids[0] // 6 == 0) >= 2 / 3
    assert np.all(scores <= 1.0001)


def test_params_clone_and_pickle_round_trip():
    X, _ = blocks()
    mf = fast(density=0.25)
    assert clone(mf).get_params() == mf.get_params()
    mf.fit(X)
    mf2 = pickle.loads(pickle.dumps(mf))
    np.testing.assert_array_equal(mf.recommend([1, 2])[0], mf2.recommend([1, 2])[0])
    mf.set_params(density=0.4)
    assert mf.density == 0.4


def test_fit_does_not_modify_input_and_accepts_formats():
    X, _ = blocks()
    coo = X.tocoo()
    coo.data *= 3
    before = coo.copy()
    fast(max_iter=2).fit(coo)
    assert (coo != before).nnz == 0
    dense = X.toarray()
    d0 = dense.copy()
    fast(max_iter=2).fit(dense)
    np.testing.assert_array_equal(dense, d0)


@pytest.mark.parametrize(
    ("X", "err", "match"),
    [
        (np.array([[1.0, -1.0]]), ValueError, "non-negative"),
        (np.array([[1.0, np.nan]]), ValueError, "finite"),
        (np.array([[1.0, np.inf]]), ValueError, "finite"),
        (np.array([1.0, 2.0]), ValueError, "2-D"),
        (np.zeros((0, 3)), ValueError, "empty"),
        (np.zeros((3, 3)), ValueError, "no non-zero"),
    ],
)
def test_bad_input_is_rejected(X, err, match):
    with pytest.raises(err, match=match):
        fast().fit(X)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"density": 1.5}, r"density must be in \(0, 1\]; got 1.5"),
        ({"density": 0}, "density must be in"),
        ({"n_components": 0}, "n_components must be an integer >= 1"),
        ({"update_ratio": 1.0}, "update_ratio must be in"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"grow": "magnitude"}, "grow must be one of"),
        ({"budget": "row"}, "budget must be one of"),
        ({"learning_rate": -1}, "learning_rate must be"),
        ({"n_threads": 0}, "n_threads must be"),
        ({"max_iter": 0}, "max_iter must be"),
        ({"optimizer": "adam"}, r"optimizer must be one of \('adagrad', 'sgd'\)"),
    ],
)
def test_bad_parameters_are_rejected(params, match):
    X, _ = blocks()
    with pytest.raises(ValueError, match=match):
        fast(**params).fit(X)


def test_bad_query_arguments():
    X, _ = blocks()
    mf = fast(max_iter=2)
    with pytest.raises(NotFittedError):
        mf.recommend([0])
    mf.fit(X)
    with pytest.raises(ValueError, match=r"users must be user ids in \[0, 40\)"):
        mf.recommend([40])
    with pytest.raises(ValueError, match="users must be user ids"):
        mf.recommend([-1])
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        mf.recommend([0], n=0)
    with pytest.raises(ValueError, match="items must have shape"):
        mf.score_items([0, 1], [[1, 2]])
    with pytest.raises(ValueError, match="filter_seen as a matrix"):
        mf.recommend([0], filter_seen=sp.csr_matrix((2, 2)))


def test_divergence_raises_with_epoch_and_remedy():
    X, _ = blocks()
    with pytest.raises(DivergenceError, match=r"epoch \d+.*Lower learning_rate"):
        fast(learning_rate=1e30, density=1.0).fit(X)


def test_exclude_pairs_are_never_negatives():
    # With every unseen item excluded no negative can be drawn: no step runs.
    X, _ = blocks(n_groups=2, per_group=3, items_per_group=3)
    excl = sp.csr_matrix(1 - X.toarray())
    mf = fast(max_iter=3, update_ratio=0.0).fit(X, exclude=excl)
    ref = fast(max_iter=3, update_ratio=0.0, learning_rate=1e-12).fit(X)
    np.testing.assert_allclose(mf.item_bias_, 0)
    np.testing.assert_allclose(mf.user_factors_.toarray(), ref.user_factors_.toarray(), atol=1e-6)
