"""The tuning split of benchmarks/ncf_reference.py never uses the test items."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec.model_selection import leave_one_out_split

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    # The split needs no torch; keep its slow import out (the module runs without it).
    saved = {m: sys.modules.get(m) for m in ("torch", "_torch_neumf")}
    sys.modules["torch"] = None
    sys.modules.pop("_torch_neumf", None)
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("ncf_reference", BENCH / "ncf_reference.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
        for m, v in saved.items():
            if v is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = v
    return mod


def test_validation_split_holds_out_a_training_item_never_the_test_item(bench):
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 200
    X = sp.random(n_users, n_items, density=0.1, random_state=1, format="csr")
    X.data[:] = 1.0
    X.sort_indices()
    T = X.copy()
    T.data = rng.permutation(X.nnz).astype(np.float64) + 1.0
    split = leave_one_out_split(X, T, n_negatives=100, random_state=0)
    val = bench.validation_split(X, T, split)
    test = {(u, i) for u, i in zip(split.users, split.test_items, strict=True)}
    train = set(zip(*val.train.nonzero(), strict=True))
    held = set(zip(val.users, val.test_items, strict=True))
    assert not test & train and not test & held and not held & train
    # The validation item is each user's latest training interaction.
    for u, i in held:
        row = split.train[u]
        stamps = {j: T[u, j] for j in row.indices}
        assert i == max(stamps, key=lambda j: (stamps[j], j))
    # Candidates: items the user never interacted with (so never the test item).
    for u, neg in zip(val.users, val.negatives, strict=True):
        assert not set(neg) & set(X[u].indices)
    # Neither the validation nor the test candidates are drawn as training negatives.
    ex = val.exclude.tocsr()
    for u, i in test | held:
        assert ex[u, i] == 1
    assert train == set(zip(*split.train.nonzero(), strict=True)) - held
