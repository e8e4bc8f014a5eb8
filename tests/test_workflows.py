"""Everyday workflows (issue 15): frames, raw ids, similar users, explanations, partial fits."""

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec import DSLNCF, DSLMatrixFactorization
from sparse_rec.datasets import InteractionDataset, from_frame, make_interactions
from sparse_rec.metrics import evaluate
from sparse_rec.serving import load_model

pd = pytest.importorskip("pandas")


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
    C = X.tocoo()
    return pd.DataFrame({"user": [f"u{r:02d}" for r in C.row],
                         "item": [f"i{c:02d}" for c in C.col], "w": C.data})


# --- 1. from_frame -------------------------------------------------------------
def test_from_frame_string_ids_sum_duplicates_and_latest_time():
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
    with pytest.raises(KeyError, match="columns are"):
        from_frame({"u": [1], "item_id": [2]})
    with pytest.raises(ValueError, match="missing ids"):
        from_frame(pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "y"]}))
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
