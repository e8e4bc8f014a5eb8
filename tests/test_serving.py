"""Serving a saved model with numpy, scipy and numba only."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparse_rec import DSLNCF, DSLLightGCN, DSLMatrixFactorization, DSLMultVAE
from sparse_rec.datasets import make_interactions
from sparse_rec.serving import ServedLightGCN, ServedMF, ServedMultVAE, ServedNCF, load_model

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter where importing any package beyond numpy,
# scipy and numba fails, as in a service that installed only those.
SERVE = r"""
import json, sys
BLOCKED = ("sklearn", "joblib", "implicit", "tqdm", "threadpoolctl", "torch", "dask")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in this service")
sys.meta_path.insert(0, Block())
import numpy as np, scipy.sparse as sp
from sparse_rec.serving import load_model
m = load_model(sys.argv[1])
H = sp.csr_matrix(np.asarray(json.loads(sys.argv[2]), np.float32))
ids, scores = m.recommend([0, 3, 7], n=5)
fold_ids, _ = m.recommend_for_history(H, n=5)
print(json.dumps({"ids": ids.tolist(), "scores": scores.tolist(),
                  "fold_ids": fold_ids.tolist(), "predict": m.predict(H).tolist(),
                  "loaded": sorted({k.split(".")[0] for k in sys.modules} & set(BLOCKED))}))
"""


MODELS = {
    "mf": lambda: DSLMatrixFactorization(n_components=8, density=0.3, max_iter=4,
                                         random_state=0, n_threads=1),
    "ncf": lambda: DSLNCF(n_components=4, hidden_layer_sizes=(8, 4), density=0.5, max_iter=3,
                          update_interval=1, batch_size=64, random_state=0, n_threads=1),
    "lightgcn": lambda: DSLLightGCN(n_components=8, density=0.3, max_iter=3, update_interval=1,
                                    batch_size=256, random_state=0, n_threads=1),
    "vae": lambda: DSLMultVAE(hidden_layer_sizes=(16,), n_components=4, density=0.3, max_iter=3,
                              update_interval=1, batch_size=64, random_state=0, n_threads=1),
}
SERVED = {DSLMatrixFactorization: ServedMF, DSLNCF: ServedNCF, DSLLightGCN: ServedLightGCN,
          DSLMultVAE: ServedMultVAE}


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, tmp_path_factory):
    X = make_interactions(60, 40, 700, random_state=0)
    model = MODELS[request.param]().fit(X)
    path = model.save(tmp_path_factory.mktemp("serve") / "m.npz")
    return model, X, path


def test_serving_runs_without_scikit_learn_and_matches_the_estimator(saved):
    mf, X, path = saved
    H = X[[5, 9]].toarray()
    out = subprocess.run([sys.executable, "-c", SERVE, str(path), json.dumps(H.tolist())],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["loaded"] == []
    ids, scores = mf.recommend([0, 3, 7], n=5)
    assert got["ids"] == ids.tolist()
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-6)
    assert got["fold_ids"] == mf.recommend_for_history(H, n=5)[0].tolist()
    assert got["predict"] == mf.predict(H).tolist()


def test_served_model_has_the_estimator_methods_and_attributes(saved):
    mf, X, path = saved
    served = load_model(path, n_threads=1)
    assert isinstance(served, SERVED[type(mf)])
    assert served.n_active_ == mf.n_active_ and served.nbytes_ == mf.nbytes_
    np.testing.assert_array_equal(served.score_items([1, 2], [[0, 1], [2, 3]]),
                                  mf.score_items([1, 2], [[0, 1], [2, 3]]))
    np.testing.assert_array_equal(served.similar_items([4], n=3)[0],
                                  mf.similar_items([4], n=3)[0])
    np.testing.assert_array_equal(served.decision_function(X[:3]), mf.decision_function(X[:3]))
    # The read-only workflows, on the very scoring code (or refused by both
    # where the model does not define them).
    try:
        want = mf.similar_users([4, 7], n=3)
    except NotImplementedError:
        with pytest.raises(NotImplementedError):
            served.similar_users([4, 7], n=3)
    else:
        for got, ref in zip(served.similar_users([4, 7], n=3), want, strict=True):
            np.testing.assert_array_equal(got, ref)
    got, want = served.explain(5, 2, n=3), mf.explain(5, 2, n=3)
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_allclose(got.contributions, want.contributions, rtol=1e-6, atol=1e-7)
    assert not hasattr(served, "fit") and not hasattr(served, "partial_fit_users")


def test_serving_refuses_a_damaged_file(saved, tmp_path):
    _, _, path = saved
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError):
        load_model(bad)
