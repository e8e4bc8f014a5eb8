"""DSLNCF in scikit-learn's tools and model files: the checks of the integration issue."""

import pickle
import struct
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import sparse_rec
from sparse_rec._ncf import DSLNCF
from sparse_rec.datasets import make_interactions
from sparse_rec.metrics import make_ranking_scorer
from sparse_rec.model_selection import UserKFold, fold_in_split
from sparse_rec.preprocessing import BinarizeInteractions


def small(**kw):
    params = dict(n_components=4, hidden_layer_sizes=(8, 4), density=0.5, max_iter=3,
                  update_interval=1, batch_size=64, random_state=0, n_threads=1)
    params.update(kw)
    return DSLNCF(**params)


@pytest.fixture(scope="module")
def data():
    R = make_interactions(60, 30, 700, random_state=0)
    return fold_in_split(R, test_size=0.25, random_state=0)


@pytest.fixture(scope="module")
def fitted(data):
    X_in, y = data
    return small().fit(X_in + y), X_in + y


def test_grid_search_over_density_with_user_folds(data):
    X_in, y = data
    X = X_in + y
    search = GridSearchCV(small(), {"density": [0.25, 1.0]}, cv=UserKFold(2, random_state=0),
                          scoring=make_ranking_scorer("ndcg", k=10)).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores > 0) & (scores <= 1))
    assert search.best_estimator_.n_users_ == X.shape[0]


def test_pipeline_search_over_density(data):
    X_in, y = data
    pipe = Pipeline([("binarize", BinarizeInteractions()), ("ncf", small())])
    search = GridSearchCV(pipe, {"ncf__density": [0.25, 0.5]}, cv=UserKFold(2, random_state=0),
                          scoring=make_ranking_scorer("recall", k=10)).fit(X_in + y, y)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_clone_pickle_and_joblib_round_trips_recommend_the_same(fitted, tmp_path):
    ncf, X = fitted
    users = np.arange(X.shape[0])
    ids, scores = ncf.recommend(users, n=5)
    again = clone(ncf).fit(X)  # serial fit with a fixed seed: bitwise the same
    np.testing.assert_array_equal(again.recommend(users, n=5)[0], ids)
    for copy in (pickle.loads(pickle.dumps(ncf)),
                 joblib.load(joblib.dump(ncf, tmp_path / "m.joblib")[0])):
        got_ids, got_scores = copy.recommend(users, n=5)
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got_scores, scores)


def test_model_file_round_trip_is_exact(fitted, tmp_path):
    ncf, X = fitted
    path = ncf.save(tmp_path / "ncf.npz", user_ids=np.arange(X.shape[0]) + 100)
    loaded = sparse_rec.load(path)
    assert isinstance(loaded, DSLNCF)
    users = np.arange(X.shape[0])
    for a, b in zip(ncf.recommend(users, n=6), loaded.recommend(users, n=6), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ncf.score_items([0, 1], [[0, 1, 2], [3, 4, 5]]),
                                  loaded.score_items([0, 1], [[0, 1, 2], [3, 4, 5]]))
    np.testing.assert_array_equal(ncf.decision_function(X[:4]), loaded.decision_function(X[:4]))
    assert loaded.n_active_ == ncf.n_active_


def test_damaged_model_file_is_refused(fitted, tmp_path):
    ncf, _ = fitted
    path = ncf.save(tmp_path / "ncf.npz")
    raw = bytearray(path.read_bytes())
    # Flip a byte in the middle of the largest entry's stored data (a flip in
    # a zip header field such as a timestamp may be harmless).
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                   info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        sparse_rec.load(bad)
    bad.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(ValueError):
        sparse_rec.load(bad)


def test_crafted_file_with_inconsistent_layers_is_refused(fitted, tmp_path):
    ncf, _ = fitted
    bad = pickle.loads(pickle.dumps(ncf))
    bad.fusion_weights_ = np.zeros(3, np.float32)  # the fusion layer needs d + last width
    with pytest.raises(ValueError, match="fusion_weights_"):
        sparse_rec.load(bad.save(tmp_path / "a.npz"))
    bad = pickle.loads(pickle.dumps(ncf))
    bad.hidden_layer_sizes_ = (8, 2)  # the packed MLP has weights for 4 outputs
    with pytest.raises(ValueError):
        sparse_rec.load(bad.save(tmp_path / "b.npz"))
