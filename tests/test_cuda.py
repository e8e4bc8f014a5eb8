"""CUDA twin of the BPR epoch against the NumPy reference and the CPU kernel.

Runs in Numba's CUDA simulator (set up in conftest) unless
``SPARSE_REC_TEST_GPU=1`` asks for a real GPU.
"""

import warnings

import numba
import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda not installed (pip install sparse-rec[cuda])")

from test_kernels import bpr_epoch_ref, small_problem  # noqa: E402
from test_mf import blocks  # noqa: E402
from test_table import dense  # noqa: E402

from sparse_rec import DSLMatrixFactorization  # noqa: E402
from sparse_rec._kernels import _rng  # noqa: E402
from sparse_rec.backends import cpu  # noqa: E402
from sparse_rec.backends import cuda as cuda_backend  # noqa: E402

pytestmark = pytest.mark.skipif(not cuda_backend.is_available(), reason="no CUDA device")


@pytest.fixture(autouse=True)
def _quiet_simulator():
    # The simulator runs the uint64 RNG on NumPy scalars, which warn on the
    # wrap-around that the compiled code relies on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="overflow")
        yield


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_one_gpu_thread_matches_reference(optimizer):
    X, data, U, I, b = small_problem()
    key = int(_rng.epoch_key(np.uint64(7), np.uint64(0)))
    ref = bpr_epoch_ref(data, U, I, b, 300, key, 0.05, 0.01, optimizer == "adagrad")
    engine = cuda_backend.MFEngine(data, U, I, b, learning_rate=0.05, alpha=0.01,
                                   optimizer=optimizer, n_blocks=1, threads_per_block=1)
    engine.n_samples = 300
    loss = engine.epoch(key)
    engine.download()
    assert loss == pytest.approx(ref[0], rel=1e-4)
    np.testing.assert_allclose(dense(U), ref[1], atol=2e-5)
    np.testing.assert_allclose(dense(I), ref[2], atol=2e-5)
    np.testing.assert_allclose(b[:, 0], ref[3], atol=2e-5)


def test_many_gpu_threads_close_to_cpu_serial():
    out = []
    for target in ("cpu", "gpu"):
        X, data, U, I, b = small_problem(seed=5, n_users=60, n_items=40)
        if target == "cpu":
            numba.set_num_threads(1)
            loss = cpu.bpr_epoch(data, U, I, b, data.nnz, np.uint64(3), 0.01, 0.0, cpu.SGD)
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        else:
            engine = cuda_backend.MFEngine(data, U, I, b, learning_rate=0.01, alpha=0.0,
                                           optimizer="sgd", n_blocks=2, threads_per_block=4)
            loss = engine.epoch(np.uint64(3))
            engine.download()
        out.append((loss, dense(U)))
    # Same samples, different interleaving (Hogwild): close, not equal.
    assert out[0][0] == pytest.approx(out[1][0], rel=0.02)
    np.testing.assert_allclose(out[0][1], out[1][1], atol=0.05)


def test_estimator_on_cuda_keeps_budget_and_learns():
    X, held = blocks(n_groups=3, per_group=6, items_per_group=5)
    mf = DSLMatrixFactorization(n_components=8, density=0.5, max_iter=40, update_interval=4,
                                learning_rate=0.1, alpha=0.0, random_state=0, backend="cuda",
                                loss="bpr")
    mf.fit(X)
    budget = round(0.5 * 8 * sum(X.shape))
    assert all(h["nnz"] == budget for h in mf.history_)
    assert sum(h["grown"] for h in mf.history_) > 0
    assert mf.history_[-1]["loss"] < mf.history_[0]["loss"]
    ids, _ = mf.recommend(np.arange(X.shape[0]), n=1)
    assert np.mean(ids[:, 0] == held) >= 0.7


def test_cuda_backend_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cuda_backend, "is_available", lambda: False)
    X, _ = blocks()
    with pytest.raises(RuntimeError, match="backend='cuda' needs numba-cuda and a CUDA GPU"):
        DSLMatrixFactorization(loss="bpr", max_iter=1, backend="cuda").fit(X)


def test_unknown_backend_is_rejected():
    X, _ = blocks()
    with pytest.raises(ValueError, match=r"backend must be one of \('cpu', 'cuda'\); got 'tpu'"):
        DSLMatrixFactorization(loss="bpr", max_iter=1, backend="tpu").fit(X)
