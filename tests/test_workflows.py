"""Everyday workflows (issue 15): frames, raw ids, similar users, explanations, partial fits."""

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec import DSLNCF, DSLMatrixFactorization
from sparse_rec.datasets import InteractionDataset, from_frame, make_interactions
from sparse_rec.metrics import evaluate
from sparse_rec.serving import load_model


def _pandas():
    return pytest.importorskip("pandas")


def _mf(**kw):
    return DSLMatrixFactorization(**{"n_components": 8, "max_iter": 4, "random_state": 0,
                                     "n_threads": 1, **kw})


def _ncf(**kw):
    return DSLNCF(**{"n_components": 4, "hidden_layer_sizes": (8, 4), "max_iter": 2,
                     "batch_size": 64, "density": 0.5, "random_state": 0, "n_threads": 1, **kw})


@pytest.fixture(scope="module")
def X():
    return make_interactions(60, 40, 700, random_state=0)


@pytest.fixture(scope="module")
def frame(X):
    pd = _pandas()
    C = X.tocoo()
    return pd.DataFrame({"user": [f"u{r:02d}" for r in C.row],
                         "item": [f"i{c:02d}" for c in C.col], "w": C.data})


# --- 1. from_frame -------------------------------------------------------------
def test_from_frame_string_ids_sum_duplicates_and_latest_time():
    pd = _pandas()
    df = pd.DataFrame({"user_id": ["b", "a", "b", "b", "c"],
                       "item_id": ["y", "x", "y", "x", "y"],
                       "plays": [1.0, 2.0, 3.0, 4.0, 0.0],
                       "t": pd.to_datetime(["2020-01-03", "2020-01-01", "2020-01-02",
                                            "2020-01-05", "2020-01-06"])})
    ds = from_frame(df, weight="plays", timestamp="t")
    assert isinstance(ds, InteractionDataset)
    assert ds.user_ids.tolist() == ["a", "b", "c"] and ds.user_ids.dtype.kind == "U"
    assert ds.item_ids.tolist() == ["x", "y"]
    # b-y appears twice: weights summed (1 + 3), the latest time kept; c-y sums to 0: dropped.
    assert ds.X.toarray().tolist() == [[2.0, 0.0], [4.0, 4.0], [0.0, 0.0]]
    day = 86400
    assert ds.timestamps[1, 1] == 1577836800 + 2 * day  # 2020-01-03 (not 01-02)
    assert ds.timestamps.nnz == ds.X.nnz
    assert ds.user_index("b") == 1 and ds.item_index(["y", "x"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="'zz'"):
        ds.user_index(["zz"])


def test_from_frame_mapping_and_integer_ids_keep_their_type():
    ds = from_frame({"user_id": np.array([30, 10, 30], np.int32), "item_id": [7, 7, 8]})
    assert ds.user_ids.dtype == np.int32 and ds.user_ids.tolist() == [10, 30]
    assert ds.X.toarray().tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert ds.X.dtype == np.float32 and ds.timestamps is None


def test_from_frame_errors_say_what_to_do():
    pd = _pandas()
    with pytest.raises(KeyError, match="columns are"):
        from_frame({"u": [1], "item_id": [2]})
    with pytest.raises(ValueError, match="missing ids"):
        from_frame(pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "y"]}))
    with pytest.raises(ValueError, match="missing ids"):
        from_frame(pd.DataFrame({"user_id": pd.array(["a", None], dtype="string"),
                                 "item_id": ["x", "y"]}))
    with pytest.raises(ValueError, match="non-negative"):
        from_frame({"user_id": [1, 2], "item_id": [1, 2], "w": [1.0, -1.0]}, weight="w")
    with pytest.raises(ValueError, match="no rows"):
        from_frame({"user_id": [], "item_id": []})
    with pytest.raises(ValueError, match="mixes id types"):
        from_frame({"user_id": np.array(["a", 1], object), "item_id": [1, 2]})


# --- 2. fit(dataset) -------------------------------------------------------------
@pytest.mark.parametrize("make", [_mf, _ncf])
def test_fit_on_a_dataset_trains_on_X_and_keeps_raw_ids(make, frame, tmp_path):
    ds = from_frame(frame, user="user", item="item", weight="w")
    est = make().fit(ds)
    ref = make().fit(ds.X)
    np.testing.assert_array_equal(est.recommend([0, 1], n=5)[0], ref.recommend([0, 1], n=5)[0])
    np.testing.assert_array_equal(est.user_ids_, ds.user_ids)
    np.testing.assert_array_equal(est.item_ids_, ds.item_ids)
    assert not hasattr(ref, "user_ids_")
    served = load_model(est.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(served.item_ids_, ds.item_ids)
    # A later fit on a plain matrix drops the ids of the old data.
    est.fit(ds.X)
    assert not hasattr(est, "user_ids_")


@pytest.fixture(scope="module")
def fitted(frame):
    ds = from_frame(frame, user="user", item="item", weight="w")
    return ds, _mf().fit(ds)


# --- 3. recommend_ids ------------------------------------------------------------------
def test_recommend_ids_maps_raw_ids_both_ways_on_estimator_and_served(fitted, tmp_path):
    ds, mf = fitted
    served = load_model(mf.save(tmp_path / "m.npz"))
    for model in (mf, served):
        items, scores = model.recommend_ids(["u03", "u00"], n=5)
        ids, ref = mf.recommend(ds.user_index(["u03", "u00"]), n=5)
        np.testing.assert_array_equal(items, ds.item_ids[ids])
        np.testing.assert_array_equal(scores, ref)
        # A restriction to raw items.
        allowed = ["i01", "i05", "i07"]
        items, _ = model.recommend_ids(["u03"], n=10, items=allowed, filter_seen=False)
        assert set(items[0][:3]) == set(allowed) and (items[0][3:] == "").all()
        with pytest.raises(KeyError, match="'nobody'"):
            model.recommend_ids(["u03", "nobody"])
        with pytest.raises(KeyError, match="'i99'"):
            model.recommend_ids(["u03"], items=["i99"])


def test_recommend_ids_as_frame(fitted):
    ds, mf = fitted
    df = mf.recommend_ids(["u01", "u02"], n=3, as_frame=True)
    assert list(df.columns) == ["user", "item", "score", "rank"]
    assert df["user"].tolist() == ["u01"] * 3 + ["u02"] * 3
    assert df["rank"].tolist() == [1, 2, 3] * 2
    items, scores = mf.recommend_ids(["u01", "u02"], n=3)
    assert df["item"].tolist() == items.ravel().tolist()
    np.testing.assert_array_equal(df["score"].to_numpy(), scores.ravel())


def test_recommend_ids_without_raw_ids_uses_indices(X):
    mf = _mf().fit(X)
    items, _ = mf.recommend_ids([2], n=4)
    np.testing.assert_array_equal(items, mf.recommend([2], n=4)[0])
    with pytest.raises(KeyError, match="60"):
        mf.recommend_ids([60])


# --- 4. evaluate(per_user=True) ----------------------------------------------------------
def test_evaluate_per_user_arrays_average_to_the_summary(X):
    from sparse_rec.model_selection import random_split

    train, test = random_split(X, test_size=0.3, random_state=0)
    mf = _mf().fit(train)
    out = evaluate(mf, train, test, k=5, batch_size=7, auc=True, per_user=True)
    per = out["per_user"]
    assert per["users"].tolist() == np.flatnonzero(np.diff(test.indptr)).tolist()
    for name in ("precision", "recall", "ndcg", "hit_rate", "map", "mrr"):
        assert len(per[name]) == out["n_users_evaluated"]
        assert np.isclose(per[name].mean(), out[name])
    assert np.isclose(np.nanmean(per["auc"]), out["auc"])
    # One user's values are that user's own metrics.
    u = per["users"][3]
    ids, _ = mf.recommend([u], n=5, filter_seen=train[[u]])
    hits = np.isin(ids[0], test[u].indices).sum()
    assert per["precision"][3] == hits / 5 and per["recall"][3] == hits / test[u].nnz
    assert "per_user" not in evaluate(mf, train, test, k=5)


# --- 5. similar_users and explain ------------------------------------------------------
@pytest.mark.parametrize("make", [_mf, _ncf])
def test_similar_users_is_cosine_of_user_vectors(make, X):
    est = make().fit(X)
    V = est._user_vectors()
    V = V.toarray() if sp.issparse(V) else V
    norms = np.linalg.norm(V, axis=1)
    U = V / np.where(norms > 0, norms, 1)[:, None]
    S = U @ U.T
    ids, scores = est.similar_users([0, 5, 7], n=4)
    for b, u in enumerate([0, 5, 7]):
        assert u not in ids[b]
        s = S[u].copy()
        s[u] = -np.inf
        np.testing.assert_allclose(scores[b], np.sort(s)[::-1][:4], atol=1e-5)
        np.testing.assert_allclose(S[u, ids[b]], scores[b], atol=1e-5)


def test_explain_mf_decomposes_the_score_exactly(X):
    mf = _mf(max_iter=10, density=0.5).fit(X)
    user, hist = 4, X[4].indices
    for item in (0, 13, int(hist[0])):
        full = mf.explain(user, item, n=len(hist))
        score = mf.score_items([user], [[item]])[0, 0]
        assert set(full.items.tolist()) == set(hist.tolist())
        assert np.isclose(full.score, score, atol=1e-5)
        assert np.isclose(full.contributions.sum() + full.rest, score, atol=1e-4)
        assert (np.diff(full.contributions) <= 1e-7).all()  # largest first
        top = mf.explain(user, item, n=2)
        np.testing.assert_array_equal(top.items, full.items[:2])
    # An unbiased item with the user's own row: the projection recovers the
    # user's vector when the history spans it, so the rest is the bias alone.
    p = mf.user_table_.dense_rows([user])[0]
    Q = mf.item_table_.dense_rows(hist)
    if np.linalg.matrix_rank(Q) == Q.shape[1] and p.any():
        e = mf.explain(user, 0, n=len(hist))
        assert np.isclose(e.rest, mf.item_bias_[0], atol=1e-4)


def test_explain_occlusion_is_the_score_drop_of_leaving_an_item_out(X):
    ncf = _ncf().fit(X)
    user, item = 2, 11
    e = ncf.explain(user, item, n=3)
    hist = X[user]
    full = ncf.decision_function(hist)[0, item]
    assert np.isclose(e.score, full, atol=1e-5)
    j = e.items[0]
    keep = hist.indices != j
    without = sp.csr_matrix((hist.data[keep], hist.indices[keep], [0, keep.sum()]),
                            shape=hist.shape)
    assert np.isclose(e.contributions[0], full - ncf.decision_function(without)[0, item],
                      atol=1e-5)
    assert len(e.items) == 3 and (np.diff(e.contributions) <= 0).all()


# --- 6. partial_fit_users / partial_fit_items --------------------------------------------
@pytest.mark.parametrize("make", [_mf, _ncf])
def test_partial_fit_users_adds_and_refits_rows_as_fold_in(make, X):
    est = make().fit(X[:50])
    H = sp.csr_matrix(X[50:])
    expected = est.recommend_for_history(H, n=6)
    other = est.recommend(np.arange(3, 50), n=6)
    n_active = est.n_active_
    est.partial_fit_users([2, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59], sp.vstack([H[:1], H]))
    assert est.n_users_ == 60 and est.seen_.shape == (60, 40)
    np.testing.assert_array_equal(est.seen_[50:].toarray(), H.toarray())
    np.testing.assert_array_equal(est.seen_[2].toarray(), H[:1].toarray())
    ids, scores = est.recommend(np.arange(50, 60), n=6)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(est.recommend([2], n=6)[0], expected[0][:1])
    # Everyone else is unchanged.
    np.testing.assert_array_equal(est.recommend(np.arange(3, 50), n=6)[0], other[0])
    assert est.n_active_ > n_active
    assert est.n_active_ == sum(getattr(est, a).nnz for a in est._snapshot_attributes
                                if hasattr(getattr(est, a), "nnz"))


def test_partial_fit_users_checks_indices_and_raw_ids(fitted):
    ds, _ = fitted
    mf = _mf().fit(ds)
    row = sp.csr_matrix(ds.X[:1])
    with pytest.raises(ValueError, match="next indices 60"):
        mf.partial_fit_users([61], row, ids=["new"])
    with pytest.raises(ValueError, match="pass ids"):
        mf.partial_fit_users([60], row)
    with pytest.raises(ValueError, match="40 features"):
        mf.partial_fit_users([60], sp.csr_matrix((1, 41)), ids=["new"])
    with pytest.raises(ValueError, match="must be new"):
        mf.partial_fit_users([60], row, ids=["u01"])
    with pytest.raises(ValueError, match="of the type of user_ids_"):
        mf.partial_fit_users([60], row, ids=[7])
    with pytest.raises(ValueError, match=r"shape \(n_users_, len\(items\)\)"):
        mf.partial_fit_items([40], sp.csr_matrix((59, 1)), ids=["i40"])
    mf.partial_fit_users([60], row, ids=["newcomer"])
    assert mf.user_ids_[-1] == "newcomer" and mf.n_users_ == 60 + 1
    items, _ = mf.recommend_ids(["newcomer"], n=3)
    np.testing.assert_array_equal(items, ds.item_ids[mf.recommend_for_history(row, n=3)[0]])


def test_partial_fit_items_adds_a_copy_of_an_item_next_to_it(X, tmp_path):
    mf = _mf(max_iter=10, density=0.5).fit(X)
    col = sp.csr_matrix(X[:, [7]])
    before = mf.recommend(np.arange(60), n=5, filter_seen=False)
    mf.partial_fit_items([40], col)
    assert mf.n_items_ == mf.n_features_in_ == 41 and mf.item_bias_.shape == (41,)
    np.testing.assert_array_equal(mf.seen_[:, 40].toarray(), col.toarray())
    np.testing.assert_array_equal(mf.seen_[:, :40].toarray(), X.toarray())
    # The solve of item 7's users lands the copy among the items most similar to 7.
    assert 40 in mf.similar_items([7], n=5)[0][0]
    s = mf.score_items(np.arange(60), np.tile([7, 40], (60, 1)))
    assert np.corrcoef(s[:, 0], s[:, 1])[0, 1] > 0.8
    # Old items keep their scores: the user side did not move.
    s = mf.score_items(np.arange(60), before[0])
    np.testing.assert_allclose(s, before[1], rtol=1e-6)
    # Refitting an existing item from its own column moves it little.
    mf.partial_fit_items([7], col)
    assert mf.n_items_ == 41
    served = load_model(mf.save(tmp_path / "grown.npz"))
    np.testing.assert_array_equal(served.recommend([0, 1], n=5)[0], mf.recommend([0, 1], n=5)[0])


def test_ncf_has_no_item_solve(X):
    ncf = _ncf().fit(X)
    with pytest.raises(NotImplementedError, match="DSLNCF cannot add or refit items"):
        ncf.partial_fit_items([40], sp.csr_matrix(X[:, [1]]))


@pytest.mark.slow
def test_partial_fit_users_keeps_fold_in_recall_on_ml100k():
    from conftest import shared_dataset

    from sparse_rec.datasets import load_movielens
    from sparse_rec.metrics import ranking_metrics
    from sparse_rec.model_selection import random_split, train_test_split_users

    X = load_movielens(shared_dataset("ml-100k"), binarize=True).X
    old, new = train_test_split_users(X, test_size=0.2, random_state=0)
    H, T = random_split(X[new], test_size=0.2, random_state=0)
    mf = DSLMatrixFactorization(n_components=32, max_iter=15, random_state=0,
                                n_threads=2).fit(X[old])
    fold = ranking_metrics(mf.recommend_for_history(H, n=20)[0], T, k=20)["recall"]
    rows = np.arange(len(old), len(old) + len(new))
    mf.partial_fit_users(rows, H)
    added = ranking_metrics(mf.recommend(rows, n=20)[0], T, k=20)["recall"]
    pop = np.asarray(X[old].sum(axis=0)).ravel()
    S = np.tile(pop, (H.shape[0], 1)).astype(float)
    S[H.nonzero()] = -np.inf
    popular = ranking_metrics(np.argsort(-S, axis=1, kind="stable")[:, :20], T, k=20)["recall"]
    assert fold > popular  # the model learned something worth keeping
    assert added >= 0.9 * fold


# --- 7. the guide's example ----------------------------------------------------------------
def test_example_from_data_to_service_runs(capsys):
    _pandas()
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "from_data_to_service.py"
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert "user-601" in out and "unknown before the update" in out


def test_implicit_wrapper_has_the_read_only_workflows(frame):
    from sparse_rec.interop import ImplicitRecommender

    ds = from_frame(frame, user="user", item="item", weight="w")
    als = ImplicitRecommender("als", factors=8, iterations=3, random_state=0,
                              n_threads=1).fit(ds)
    np.testing.assert_array_equal(als.item_ids_, ds.item_ids)
    items, _ = als.recommend_ids(["u05"], n=4)
    np.testing.assert_array_equal(items, ds.item_ids[als.recommend(ds.user_index(["u05"]),
                                                                   n=4)[0]])
    ids, _ = als.similar_users([5], n=3)
    assert ids.shape == (1, 3) and 5 not in ids[0]
    e = als.explain(5, 0, n=2)
    assert len(e.items) == 2 and set(e.items) <= set(ds.X[5].indices)
    als.fit(ds.X)
    assert not hasattr(als, "user_ids_")
