"""The optional approximate top-k index (sparse_rec.ann)."""

import subprocess
import sys

import numpy as np
import pytest

from sparse_rec import DSLNCF, DSLMatrixFactorization
from sparse_rec.ann import ApproximateTopK
from sparse_rec.datasets import make_interactions
from sparse_rec.serving import load_model


@pytest.fixture(scope="module")
def mf():
    X = make_interactions(80, 400, 2500, random_state=0)
    return DSLMatrixFactorization(n_components=16, max_iter=5, random_state=0,
                                  n_threads=1).fit(X)


def _overlap(a, b):
    return np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b, strict=True)])


@pytest.mark.parametrize("engine", ["faiss", "hnswlib"])
def test_index_finds_the_exact_top_items_with_exact_scores(engine, mf, tmp_path):
    pytest.importorskip(engine)
    # Settings that scan (almost) everything: the answer must then be the exact one.
    index = ApproximateTopK(mf, engine=engine, n_lists=8, n_probe=8, ef=400, n_threads=1)
    users = np.arange(80)
    ids, scores = index.recommend(users, n=10)
    exact_ids, exact_scores = mf.recommend(users, n=10)
    assert _overlap(ids, exact_ids) >= 0.99
    assert not np.isin(ids[0], mf.seen_[0].indices).any()
    np.testing.assert_allclose(scores, mf.score_items(users, ids), rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()
    # Without filtering the seen items come back.
    ids_all, _ = index.recommend(users, n=10, filter_seen=False)
    assert _overlap(ids_all, mf.recommend(users, n=10, filter_seen=False)[0]) >= 0.99
    # Saved beside the model, loaded for the served model.
    model_path = mf.save(tmp_path / "m.npz")
    index.save(str(model_path) + ".ann")
    served = load_model(model_path)
    again = ApproximateTopK.load(str(model_path) + ".ann", served)
    np.testing.assert_array_equal(again.recommend(users, n=10)[0], ids)


def test_load_refuses_another_model(mf, tmp_path):
    pytest.importorskip("faiss")
    index = ApproximateTopK(mf, n_lists=4, n_probe=4)
    path = index.save(tmp_path / "m.ann")
    other = DSLMatrixFactorization(n_components=16, max_iter=2, random_state=1,
                                   n_threads=1).fit(mf.seen_)
    with pytest.raises(ValueError, match="rebuild the index"):
        ApproximateTopK.load(path, other)


def test_non_factor_models_and_missing_engines_are_refused(mf, monkeypatch):
    X = make_interactions(30, 20, 200, random_state=0)
    ncf = DSLNCF(n_components=4, hidden_layer_sizes=(4,), max_iter=1, density=0.5,
                 random_state=0, n_threads=1).fit(X)
    with pytest.raises(TypeError, match="MLP"):
        ApproximateTopK(ncf)
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        ApproximateTopK(mf, engine="faiss")
    with pytest.raises(ValueError, match="engine must be one of"):
        ApproximateTopK(mf, engine="annoy")


def test_serving_does_not_import_an_index_engine():
    code = ("import sys, sparse_rec.serving; "
            "assert not {'faiss', 'hnswlib'} & set(sys.modules), 'engine imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
