"""The shared fit of every DSL estimator: one rule for warm starts and raw ids."""

import numpy as np
import pytest

from sparse_rec import DSLNCF, DSLMatrixFactorization, load
from sparse_rec.datasets import make_interactions

SMALL = {
    DSLMatrixFactorization: dict(n_components=4, density=0.5, max_iter=2, random_state=0,
                                 n_threads=1),
    DSLNCF: dict(n_components=4, hidden_layer_sizes=(4,), density=0.5, max_iter=2,
                 batch_size=32, random_state=0, n_threads=1),
}
ESTIMATORS = pytest.mark.parametrize("cls", list(SMALL), ids=["mf", "ncf"])


@ESTIMATORS
def test_fresh_fit_of_a_loaded_model_drops_its_raw_ids(cls, tmp_path):
    X = make_interactions(20, 12, 120, random_state=0)
    est = cls(**SMALL[cls]).fit(X)
    path = est.save(tmp_path / "m.npz", user_ids=[f"u{i}" for i in range(20)],
                    item_ids=np.arange(100, 112))
    loaded = load(path)
    assert loaded.user_ids_[0] == "u0"
    # Warm start on the same shape continues the same users and items: ids stay.
    loaded.set_params(warm_start=True).fit(X)
    assert loaded.user_ids_[0] == "u0" and loaded.item_ids_[0] == 100
    # A fresh fit is of other data: the old mappings would be wrong.
    loaded.set_params(warm_start=False).fit(X)
    assert not hasattr(loaded, "user_ids_") and not hasattr(loaded, "item_ids_")
    again = load(loaded.save(tmp_path / "again.npz"))
    assert not hasattr(again, "user_ids_")


@pytest.mark.parametrize("cls, change", [(DSLMatrixFactorization, "n_components"),
                                          (DSLNCF, "n_components"),
                                          (DSLNCF, "hidden_layer_sizes")])
def test_warm_start_with_other_table_shapes_is_refused_by_every_estimator(cls, change):
    X = make_interactions(20, 12, 120, random_state=0)
    est = cls(**SMALL[cls], warm_start=True).fit(X)
    before = est.n_iter_
    new = {"n_components": 6, "hidden_layer_sizes": (6, 3)}[change]
    with pytest.raises(ValueError, match=f"warm_start=True needs the fitted {change}"):
        est.set_params(**{change: new}).fit(X)
    # Refused before training: the fitted model is untouched.
    assert est.n_iter_ == before


@ESTIMATORS
def test_warm_start_with_another_shape_of_X_starts_over_in_every_estimator(cls):
    X = make_interactions(20, 12, 120, random_state=0)
    est = cls(**SMALL[cls], warm_start=True).fit(X)
    est.fit(make_interactions(15, 12, 90, random_state=1))
    assert est.n_iter_ == 2 and est.n_users_ == 15


@ESTIMATORS
def test_warm_start_continues_epochs_in_every_estimator(cls):
    X = make_interactions(20, 12, 120, random_state=0)
    est = cls(**SMALL[cls], warm_start=True).fit(X)
    budget = est.n_active_
    est.fit(X)
    assert est.n_iter_ == 4 and [r["epoch"] for r in est.history_] == [1, 2, 3, 4]
    assert est.n_active_ == budget


def test_ncf_has_a_backend_parameter_with_the_engines_devices():
    X = make_interactions(20, 12, 120, random_state=0)
    assert DSLNCF().get_params()["backend"] == "cpu"
    with pytest.raises(ValueError, match=r"backend must be one of \('cpu', 'cuda'\); got 'tpu'"):
        DSLNCF(**SMALL[DSLNCF], backend="tpu").fit(X)
