"""GPU engines and kernels against their CPU twins, in Numba's CUDA simulator.

Growth gradients of DSL-MF computed on the device, and the NCF engine
(epoch, lazy Adam grouped by row, whole fits). Tiny data: the simulator runs
every GPU thread as a Python thread. ``SPARSE_REC_TEST_GPU=1`` runs the same
tests on a real GPU (see conftest).
"""

import warnings

import numba
import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda not installed (pip install sparse-rec[cuda])")

from test_kernels import small_problem  # noqa: E402

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


def _fill(fn, n_rows, n_cols, r0=0, r1=None):
    r1 = n_rows if r1 is None else r1
    G = np.full((r1 - r0, n_cols), np.nan, np.float32)
    fn(r0, r1, G)
    return G


# --- DSL-MF growth gradients on the device ------------------------------------
@pytest.mark.parametrize("chunk", [(0, None), (5, 17)])
def test_mf_device_growth_gradient_equals_cpu(chunk):
    X, data, U, I, b = small_problem(seed=2, n_users=24, n_items=18, d=6)
    key = np.uint64(_rng.epoch_key(np.uint64(4), np.uint64(1)))
    opts = dict(learning_rate=0.05, alpha=0.0, optimizer="adagrad")
    numba.set_num_threads(1)
    try:
        ref = cpu.MFEngine(data, U, I, b, **opts).grow_fns(key)
        expected = [_fill(f, t.n_rows, t.n_cols, *chunk) for f, t in zip(ref, (U, I))]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    engine = cuda_backend.MFEngine(data, U, I, b, n_blocks=1, threads_per_block=4, **opts)
    got = [_fill(f, t.n_rows, t.n_cols, *chunk) for f, t in zip(engine.grow_fns(key), (U, I))]
    for g, e in zip(got, expected):
        assert np.count_nonzero(e) > 0.3 * e.size  # the check compares real gradients
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


# --- NCF on the device ----------------------------------------------------------
def _ncf_problem(n_users=12, n_items=10, nnz=40, density=0.5, seed=0):
    from sparse_rec import DSLNCF
    from sparse_rec._base import TrainData
    from sparse_rec.datasets import make_interactions

    X = make_interactions(n_users, n_items, nnz, random_state=seed)
    est = DSLNCF(n_components=4, hidden_layer_sizes=(6, 3), density=density, random_state=seed)
    params = est._init_params(n_users, n_items, seed)
    return TrainData.from_matrix(X), params


def _ncf_state(params):
    net = params.layout
    return [t.values_buf[: t.nnz].copy() for t in params.tables[:4]] + [
        net.m_v.copy(), net.dense_v.copy()]


NCF_OPTS = dict(learning_rate=0.01, alpha=0.001, n_negatives=2, batch_size=16)


def test_ncf_one_block_epoch_matches_cpu_serial_epoch():
    import copy

    data, params = _ncf_problem()
    params_gpu = copy.deepcopy(params)
    key = np.uint64(_rng.epoch_key(np.uint64(1), np.uint64(0)))
    numba.set_num_threads(1)
    try:
        ref = cpu.NCFEngine(data, params.tables[:4], params.layout, **NCF_OPTS)
        losses_cpu = [ref.epoch(key), ref.epoch(key + np.uint64(1))]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    gpu = cuda_backend.NCFEngine(data, params_gpu.tables[:4], params_gpu.layout, n_blocks=1,
                                 threads_per_block=4, **NCF_OPTS)
    losses_gpu = [gpu.epoch(key), gpu.epoch(key + np.uint64(1))]
    gpu.download()
    # Two epochs of 5 batches each: the lazy row steps and the dense steps all ran.
    assert losses_gpu == pytest.approx(losses_cpu, rel=1e-5)
    before = _ncf_state(_ncf_problem()[1])
    moved = 0
    for got, want, start in zip(_ncf_state(params_gpu), _ncf_state(params), before):
        moved += want.size > 0 and not np.allclose(want[:, 0], start[:, 0])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert moved >= 4  # GMF tables, MLP layers and dense parameters were trained
