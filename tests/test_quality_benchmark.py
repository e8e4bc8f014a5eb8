"""benchmarks/quality.py: the data transforms behind its sparser stand-ins."""

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
quality = pytest.importorskip("quality")


def _data(seed=0, shape=(40, 60), density=0.2):
    X = sp.random(*shape, density=density, format="csr", random_state=seed, dtype=np.float32)
    X.data[:] = 1.0
    return X


def test_some_items_keeps_whole_columns_of_both_parts():
    train, test = _data(0), _data(1)
    tr, te = quality.some_items(train, test, 0.5, np.random.default_rng(3))
    cols = np.flatnonzero(np.random.default_rng(3).random(60) < 0.5)
    assert tr.shape == te.shape == (40, cols.size)
    # The kept columns are the originals, untouched, in both parts.
    assert (tr != train[:, cols]).nnz == 0 and (te != test[:, cols]).nnz == 0
    full_tr, _ = quality.some_items(train, test, 1.0, np.random.default_rng(3))
    assert (full_tr != train).nnz == 0


def test_thin_keeps_a_subset_of_the_interactions():
    X = _data(2, shape=(200, 300))
    T = quality.thin(X, 0.25, np.random.default_rng(2))
    assert T.shape == X.shape and T.nnz < X.nnz
    assert (T.multiply(X) != T).nnz == 0  # nothing new appears
    assert abs(T.nnz / X.nnz - 0.25) < 0.05


@pytest.mark.parametrize("flag", ["--item-fraction", "--thin"])
@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_fractions_outside_the_unit_interval_are_refused(flag, value, capsys):
    with pytest.raises(SystemExit):
        quality.parse_args([flag, value])
    assert "(0, 1]" in capsys.readouterr().err
    assert getattr(quality.parse_args([flag, "0.5"]), flag[2:].replace("-", "_")) == 0.5
