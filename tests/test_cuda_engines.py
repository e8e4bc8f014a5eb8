"""GPU engines and kernels against their CPU twins, in Numba's CUDA simulator.

Growth gradients of DSL-MF computed on the device, the NCF engine
(epoch, lazy Adam grouped by row, whole fits), iALS, DSLMultVAE (full and
sampled softmax), DSLLightGCN (BPR and softmax), DSL-MF's softmax and CCL
losses, and the prune threshold on the device. Tiny data: the simulator runs
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
        expected = [_fill(f, t.n_rows, t.n_cols, *chunk) for f, t in zip(ref, (U, I), strict=True)]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    engine = cuda_backend.MFEngine(data, U, I, b, n_blocks=1, threads_per_block=4, **opts)
    fns = engine.grow_fns(key)
    got = [_fill(f, t.n_rows, t.n_cols, *chunk) for f, t in zip(fns, (U, I), strict=True)]
    for g, e in zip(got, expected, strict=True):
        assert np.count_nonzero(e) > 0.3 * e.size  # the check compares real gradients
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_bytes", [32 << 20, 6 * 4 * 5])
def test_mf_scores_selected_on_the_device_give_the_cpu_step(chunk_bytes):
    # PruneGrow asks the device scorers for bin counts and kept coordinates
    # (no dense scores); the step must grow and prune what the CPU's does,
    # in one chunk and in chunks of 5 rows.
    import copy

    from sparse_rec._dsl import PruneGrow

    X, data, U, I, b = small_problem(seed=6, n_users=24, n_items=18, d=6)
    U2, I2, b2 = copy.deepcopy(U), copy.deepcopy(I), b.copy()
    key = np.uint64(11)
    opts = dict(learning_rate=0.05, alpha=0.0, optimizer="adagrad")
    numba.set_num_threads(1)
    try:
        cpu_fns = cpu.MFEngine(data, U, I, b, **opts).grow_fns(key)
        out_cpu = PruneGrow([U, I], chunk_bytes=chunk_bytes).step(0.3, 5, cpu_fns)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    engine = cuda_backend.MFEngine(data, U2, I2, b2, n_blocks=1, threads_per_block=4, **opts)
    fns = engine.grow_fns(key)
    assert all(hasattr(f, "histogram") and hasattr(f, "collect") for f in fns)
    out_gpu = PruneGrow([U2, I2], chunk_bytes=chunk_bytes).step(0.3, 5, fns)
    assert out_gpu[1].sum() > 0
    for a, c in zip(out_gpu, out_cpu, strict=True):
        np.testing.assert_array_equal(a, c)
    for t_gpu, t_cpu in ((U2, U), (I2, I)):
        np.testing.assert_array_equal(t_gpu.indptr, t_cpu.indptr)
        np.testing.assert_array_equal(t_gpu.indices, t_cpu.indices)


def test_device_bin_counts_and_collect_equal_the_host_kernels():
    from sparse_rec._dsl import _collect_chunk, _counts
    from sparse_rec._kernels import _prune_grow as K

    X, data, U, I, b = small_problem(seed=7, n_users=24, n_items=18, d=6)
    engine = cuda_backend.MFEngine(data, U, I, b, learning_rate=0.05, alpha=0.0,
                                   optimizer="sgd", n_blocks=1, threads_per_block=4)
    scorer = engine.grow_fns(np.uint64(3))[0]
    r0, r1 = 4, 19
    G = _fill(scorer, U.n_rows, U.n_cols, r0, r1)
    K.abs_mask_active(G, r0, U.indptr, U.indices)
    hist = np.zeros(K.N_BINS, np.int64)
    local = np.empty((numba.get_num_threads(), K.N_BINS), np.int64)
    _counts(G, hist, local)
    np.testing.assert_array_equal(scorer.histogram(r0, r1), hist)
    for lo in np.flatnonzero(hist)[[0, len(np.flatnonzero(hist)) // 2, -1]]:
        _counts(G, np.zeros(K.N_BINS, np.int64), local)
        want = _collect_chunk(G, r0, int(lo), local)
        got = scorer.collect(r0, r1, int(lo))
        assert len(want[0]) > 0
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_mf_fit_on_one_cuda_thread_is_the_serial_cpu_fit(monkeypatch):
    # One GPU thread runs the samples in the serial order and growth is
    # computed on the device: the whole fit must follow the CPU fit.
    from sparse_rec import DSLMatrixFactorization

    # The simulator's grid, one thread, also on a real GPU (SPARSE_REC_TEST_GPU=1).
    monkeypatch.setattr(cuda_backend, "_simulated", lambda: True)
    monkeypatch.setattr(cuda_backend, "_SIM_MF_GRID", (1, 1))
    X = small_problem(seed=1, n_users=20, n_items=16)[0]
    fits = [DSLMatrixFactorization(loss="bpr", n_components=6, density=0.4, max_iter=4,
                                   update_interval=1, update_ratio=0.3, random_state=0,
                                   n_threads=1,
                                   backend=b).fit(X) for b in ("cpu", "cuda")]
    h_cpu, h_gpu = ([h["loss"] for h in f.history_] for f in fits)
    assert h_gpu == pytest.approx(h_cpu, rel=1e-4)
    assert sum(h["grown"] for h in fits[1].history_) > 0
    for name in ("user_table_", "item_table_"):
        a, b = getattr(fits[1], name), getattr(fits[0], name)
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-3, atol=1e-5)


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
    for got, want, start in zip(_ncf_state(params_gpu), _ncf_state(params), before, strict=True):
        moved += want.size > 0 and not np.allclose(want[:, 0], start[:, 0])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert moved >= 4  # GMF tables, MLP layers and dense parameters were trained


@pytest.mark.parametrize("grow_scores", ["raw", "frequency"])
@pytest.mark.parametrize("chunk", [(0, None), (3, 9)])
def test_ncf_device_growth_gradient_equals_cpu(chunk, grow_scores):
    import copy

    # Dense and at the initial point: with empty MLP embeddings, or after an
    # epoch on this tiny problem, the MLP branch is dead (every ReLU off) and
    # its embedding gradients are zero, which would check nothing.
    data, params = _ncf_problem(seed=2, density=1.0)
    params_gpu = copy.deepcopy(params)
    key = np.uint64(_rng.epoch_key(np.uint64(2), np.uint64(3)))
    numba.set_num_threads(1)
    try:
        ref = cpu.NCFEngine(data, params.tables[:4], params.layout, grow_scores=grow_scores,
                            **NCF_OPTS)
        expected = [_fill(f, t.n_rows, t.n_cols, *chunk)
                    for f, t in zip(ref.grow_fns(key)[:4], params.tables[:4], strict=True)]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    gpu = cuda_backend.NCFEngine(data, params_gpu.tables[:4], params_gpu.layout, n_blocks=1,
                                 threads_per_block=4, grow_scores=grow_scores, **NCF_OPTS)
    # The embedding tables' callbacks run on the device (the MLP layers'
    # are the CPU engine's own).
    got = [_fill(f, t.n_rows, t.n_cols, *chunk)
           for f, t in zip(gpu.grow_fns(key)[:4], params_gpu.tables[:4], strict=True)]
    for g, e in zip(got, expected, strict=True):
        assert np.count_nonzero(e) > 0.3 * e.size
        np.testing.assert_allclose(g, e, rtol=2e-3, atol=1e-6)
    # Prune scores: |w| on the device, or the CPU engine's frequency-scaled ones.
    want = ref.prune_scores()
    have = gpu.prune_scores()
    if grow_scores == "raw":
        assert want is None
    else:
        for h, w in zip(have, want, strict=True):
            np.testing.assert_allclose(h, w, rtol=1e-6)


def test_ncf_blocks_in_parallel_stay_close_to_cpu_serial():
    import copy

    data, params = _ncf_problem(seed=3)
    params_gpu = copy.deepcopy(params)
    key = np.uint64(5)
    numba.set_num_threads(1)
    try:
        loss_cpu = cpu.NCFEngine(data, params.tables[:4], params.layout, **NCF_OPTS).epoch(key)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    gpu = cuda_backend.NCFEngine(data, params_gpu.tables[:4], params_gpu.layout, n_blocks=3,
                                 threads_per_block=4, **NCF_OPTS)
    loss_gpu = gpu.epoch(key)
    gpu.download()
    # Same instances, batches in another order (Hogwild): Adam's steps on a
    # weight come in another order, so the weights are close, not equal;
    # the changes an epoch made must point the same way.
    assert loss_gpu == pytest.approx(loss_cpu, rel=0.02)
    start = _ncf_state(_ncf_problem(seed=3)[1])
    d_gpu, d_cpu = (np.concatenate([(a[:, 0] - b[:, 0]) for a, b in zip(st, start, strict=True)])
                    for st in (_ncf_state(params_gpu), _ncf_state(params)))
    assert np.corrcoef(d_gpu, d_cpu)[0, 1] > 0.8


def _ncf_fit(backend, **kw):
    from sparse_rec import DSLNCF
    from sparse_rec.datasets import make_interactions

    X = make_interactions(16, 12, 70, random_state=4)
    params = dict(n_components=4, hidden_layer_sizes=(6, 3), density=0.4, n_negatives=2,
                  batch_size=16, learning_rate=0.01, max_iter=6, update_interval=2,
                  update_ratio=0.3, random_state=0, n_threads=1, backend=backend)
    params.update(kw)
    return DSLNCF(**params).fit(X), X


def test_ncf_fit_on_cuda_lands_near_the_cpu_fit():
    cpu_fit, X = _ncf_fit("cpu")
    gpu_fit, _ = _ncf_fit("cuda")
    budget = cpu_fit.n_active_
    assert gpu_fit.n_active_ == budget
    assert all(h["nnz"] == budget for h in gpu_fit.history_)
    assert sum(h["grown"] for h in gpu_fit.history_) > 0  # prune/grow ran on the device fit
    loss_cpu = [h["loss"] for h in cpu_fit.history_]
    loss_gpu = [h["loss"] for h in gpu_fit.history_]
    assert loss_gpu[-1] < loss_gpu[0]
    # Two blocks train batches in another order than the serial CPU fit (as
    # the CPU's own threads do): on this problem the CPU's 2-thread fits end
    # 2.7% from its serial fit, seeds 0-5 of the serial fit span 2.7%.
    assert loss_gpu[-1] == pytest.approx(loss_cpu[-1], rel=0.05)


@pytest.mark.parametrize("grow_scores", ["raw", "frequency"])
def test_ncf_fit_on_one_cuda_block_is_the_serial_cpu_fit(monkeypatch, grow_scores):
    # One block trains the batches in the serial order: the whole fit
    # (epochs, downloads, prune/grow, repacking and uploads) must then
    # follow the CPU fit up to the order of float32 sums.
    monkeypatch.setattr(cuda_backend, "_simulated", lambda: True)  # also on a real GPU
    monkeypatch.setattr(cuda_backend, "_SIM_NCF_GRID", (1, 4))
    cpu_fit, _ = _ncf_fit("cpu", grow_scores=grow_scores)
    gpu_fit, _ = _ncf_fit("cuda", grow_scores=grow_scores)
    assert [h["loss"] for h in gpu_fit.history_] == pytest.approx(
        [h["loss"] for h in cpu_fit.history_], rel=1e-4)
    assert [h["grown"] for h in gpu_fit.history_] == [h["grown"] for h in cpu_fit.history_]
    for name in ("user_gmf_table_", "item_gmf_table_", "mlp_table_"):
        a, b = getattr(gpu_fit, name), getattr(cpu_fit, name)
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gpu_fit.fusion_weights_, cpu_fit.fusion_weights_, atol=1e-5)


def test_ncf_cuda_without_gpu_is_the_mf_error(monkeypatch):
    monkeypatch.setattr(cuda_backend, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="backend='cuda' needs numba-cuda and a CUDA GPU"):
        _ncf_fit("cuda", max_iter=1)


# --- DSL-MF iALS on the device ------------------------------------------------------
def _ials_problem(seed=0, n_users=14, n_items=10, nnz=50, d=5, density=0.5, exclude=False):
    import scipy.sparse as sp

    from sparse_rec._base import TrainData
    from sparse_rec._table import SparseEmbeddingTable
    from sparse_rec.datasets import make_interactions

    X = make_interactions(n_users, n_items, nnz, random_state=seed).tocsr().astype(np.float32)
    X.data = np.random.default_rng(seed).uniform(0.5, 3.0, X.nnz).astype(np.float32)
    ex = None
    if exclude:  # a few excluded pairs: confidence 0 on the solves' patterns
        ex = sp.random(n_users, n_items, density=0.1, random_state=seed + 9, format="csr")
        ex = (ex - ex.multiply(X > 0)).tocsr()
        ex.eliminate_zeros()
    data = TrainData.from_matrix(X, ex)
    users = SparseEmbeddingTable.random(n_users, d, int(density * n_users * d), n_slots=1,
                                        scale=0.5, seed=seed + 1)
    items = SparseEmbeddingTable.random(n_items, d, int(density * n_items * d), n_slots=1,
                                        scale=0.5, seed=seed + 2)
    return data, users, items


IALS_OPTS = dict(regularization=0.02, unobserved_weight=0.3)


def test_ials_device_gram_equals_cpu_gram():
    from numba import cuda

    from sparse_rec._kernels import _ials
    from sparse_rec._kernels.cuda import ials as K

    _, users, _ = _ials_problem(n_users=70, d=4)  # more rows than segments of the product
    # Row weights of the unobserved pairs (popularity weighting), not all 1.
    wo = np.random.default_rng(0).uniform(0.2, 3.0, users.n_rows)
    to = cuda.to_device
    G, _, _ = K.gram(to(users.indptr), to(users.indices),
                     to(np.ascontiguousarray(users.values_buf[: users.nnz])), users.n_rows,
                     users.n_cols, (2, 8), to(wo))
    want = _ials.gram(users.indptr, users.indices, users.values_buf, users.n_cols, wo)
    assert np.count_nonzero(want) == want.size
    np.testing.assert_allclose(G.copy_to_host(), want, rtol=1e-12)


@pytest.mark.parametrize("exclude, expo", [(False, 0.0), (True, 0.0), (True, 0.5)])
def test_ials_epochs_on_the_device_equal_the_cpu_epochs(exclude, expo):
    import copy

    data, users, items = _ials_problem(seed=1, exclude=exclude)
    users2, items2 = copy.deepcopy(users), copy.deepcopy(items)
    opts = dict(IALS_OPTS, popularity_exponent=expo)
    ref = cpu.IALSEngine(data, users, items, None, **opts)
    # A small gather width: rows with more interactions than it take several passes.
    gpu = cuda_backend.IALSEngine(data, users2, items2, None, n_blocks=2, threads_per_block=3,
                                  gather=3, **opts)
    assert gpu.scratch.H.shape[1] < max(np.diff(data.x_indptr))
    key = np.uint64(1)
    losses = [(ref.epoch(key), gpu.epoch(key)) for _ in range(2)]
    gpu.download()
    for want, got in losses:
        assert got == pytest.approx(want, rel=1e-9)
    assert losses[1][0] < losses[0][0]
    for a, b in ((users2, users), (items2, items)):
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("expo", [0.0, 0.5])
def test_ials_device_scores_equal_the_cpu_scores(expo):
    import copy

    data, users, items = _ials_problem(seed=2, exclude=True)
    users2, items2 = copy.deepcopy(users), copy.deepcopy(items)
    opts = dict(IALS_OPTS, popularity_exponent=expo)
    ref = cpu.IALSEngine(data, users, items, None, **opts)
    gpu = cuda_backend.IALSEngine(data, users2, items2, None, n_blocks=1, threads_per_block=4,
                                  **opts)
    key = np.uint64(3)
    want_prune = ref.prune_scores()
    # The device scores (on which the prune threshold is then found).
    got_prune = [p.values.copy_to_host()[:, 0] for p in gpu.prune_scores()]
    for g, w in zip(got_prune, want_prune, strict=True):
        assert np.count_nonzero(w) > 0.5 * w.size
        np.testing.assert_allclose(g, w, rtol=1e-5)
    for (f_cpu, f_gpu), t in zip(zip(ref.grow_fns(key), gpu.grow_fns(key), strict=True),
                                 (users, items), strict=True):
        for chunk in ((0, t.n_rows), (3, 8)):
            want = _fill(f_cpu, t.n_rows, t.n_cols, *chunk)
            assert np.count_nonzero(want) > 0.5 * want.size
            np.testing.assert_allclose(_fill(f_gpu, t.n_rows, t.n_cols, *chunk), want,
                                       rtol=1e-5, atol=1e-7)


def _ials_fit(backend, **kw):
    from sparse_rec import DSLMatrixFactorization
    from sparse_rec.datasets import make_interactions

    X = make_interactions(18, 12, 80, random_state=5)
    params = dict(loss="ials", n_components=5, density=0.4, max_iter=4, update_interval=1,
                  update_ratio=0.3, random_state=0, n_threads=1, backend=backend)
    params.update(kw)
    return DSLMatrixFactorization(**params).fit(X)


@pytest.mark.parametrize("expo", [None, 0.5])
def test_ials_fit_on_cuda_follows_the_cpu_fit(expo):
    # iALS has no sampling: the device fit (solves, scores selected on the
    # device, prune on the host) follows the CPU fit up to rounding.
    cpu_fit = _ials_fit("cpu", popularity_exponent=expo)
    gpu_fit = _ials_fit("cuda", popularity_exponent=expo)
    assert all(h["nnz"] == cpu_fit.n_active_ for h in gpu_fit.history_)
    assert sum(h["grown"] for h in gpu_fit.history_) > 0
    assert [h["grown"] for h in gpu_fit.history_] == [h["grown"] for h in cpu_fit.history_]
    loss_cpu = [h["loss"] for h in cpu_fit.history_]
    assert [h["loss"] for h in gpu_fit.history_] == pytest.approx(loss_cpu, rel=1e-6)
    for name in ("user_table_", "item_table_"):
        a, b = getattr(gpu_fit, name), getattr(cpu_fit, name)
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-4, atol=1e-6)


def test_ials_cuda_without_gpu_is_the_mf_error(monkeypatch):
    monkeypatch.setattr(cuda_backend, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="backend='cuda' needs numba-cuda and a CUDA GPU"):
        _ials_fit("cuda", max_iter=1)


# --- DSLMultVAE on the device ---------------------------------------------------------
def _vae_problem(seed=0, n_users=12, n_items=9, nnz=45, density=0.5):
    from sparse_rec import DSLMultVAE
    from sparse_rec._base import TrainData
    from sparse_rec.datasets import make_interactions

    X = make_interactions(n_users, n_items, nnz, random_state=seed)
    est = DSLMultVAE(hidden_layer_sizes=(6,), n_components=3, density=density)
    params = est._init_params(n_users, n_items, seed)
    return TrainData.from_matrix(X), params


VAE_OPTS = dict(learning_rate=0.01, alpha=0.001, dropout=0.3, beta=0.2, anneal_steps=4,
                batch_size=5, table_learning_rate=0.02)


@pytest.mark.parametrize("density", [0.5, 1.0])
def test_vae_epochs_on_the_device_equal_the_cpu_epochs(density):
    # Same generator, same batches, dropout and noise: two epochs (three
    # batches each, the last one short) and their Adam steps must agree.
    import copy

    from sparse_rec.backends import vae_cpu, vae_cuda

    data, params = _vae_problem(density=density)
    p_gpu = copy.deepcopy(params)
    numba.set_num_threads(1)
    try:
        ref = vae_cpu.VAEEngine(data, *params.tables, params.layout, **VAE_OPTS)
        want = [ref.epoch(np.uint64(e)) for e in (1, 2)]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    gpu = vae_cuda.VAEEngine(data, *p_gpu.tables, p_gpu.layout, n_blocks=2, threads_per_block=4,
                             **VAE_OPTS)
    got = [gpu.epoch(np.uint64(e)) for e in (1, 2)]
    gpu.download()
    assert got == pytest.approx(want, rel=1e-5)
    assert p_gpu.layout.n_updates == params.layout.n_updates == 6
    for a, b in zip(p_gpu.tables, params.tables, strict=True):
        np.testing.assert_allclose(a.values_buf[: a.nnz], b.values_buf[: b.nnz], rtol=1e-4,
                                   atol=1e-6)
    np.testing.assert_allclose(p_gpu.layout.dense, params.layout.dense, rtol=1e-4, atol=1e-6)
    start = _vae_problem(density=density)[1]
    assert not np.allclose(p_gpu.tables[1].values_buf[:, 0], start.tables[1].values_buf[:, 0])


@pytest.mark.parametrize("density", [0.5, 1.0])
def test_vae_sampled_softmax_epochs_on_the_device_equal_the_cpu_epochs(monkeypatch, density):
    # n_sampled: each batch's candidates (its positives and the shared
    # draws) are the CPU's draws; logits, likelihood, decoder gradients and
    # the decoder's input gradient over the candidates only. With 9 items
    # and 3 draws a batch's candidates leave some items out.
    import copy

    from sparse_rec.backends import vae_cpu, vae_cuda

    data, params = _vae_problem(density=density, n_users=14, nnz=40)
    p_gpu = copy.deepcopy(params)
    opts = dict(VAE_OPTS, n_sampled=3, batch_size=4)
    sizes = []  # candidates per batch, both engines
    draw = vae_cpu.sampled_candidates

    def recorded(*args):
        out = draw(*args)
        sizes.append(len(out[0]))
        return out

    monkeypatch.setattr(vae_cpu, "sampled_candidates", recorded)
    numba.set_num_threads(1)
    try:
        ref = vae_cpu.VAEEngine(data, *params.tables, params.layout, **opts)
        want = [ref.epoch(np.uint64(e)) for e in (1, 2)]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    gpu = vae_cuda.VAEEngine(data, *p_gpu.tables, p_gpu.layout, n_blocks=2, threads_per_block=4,
                             **opts)
    got = [gpu.epoch(np.uint64(e)) for e in (1, 2)]
    gpu.download()
    n_batches = 2 * -(-len(ref.users) // 4)  # two epochs' batches
    assert len(sizes) == 2 * n_batches  # every batch of both engines sampled its candidates
    assert sizes[:n_batches] == sizes[n_batches:]  # the same draws on both
    assert min(sizes) < ref.X.shape[1]  # some batches leave items out of their candidates
    assert got == pytest.approx(want, rel=1e-5)
    for a, b in zip(p_gpu.tables, params.tables, strict=True):
        np.testing.assert_allclose(a.values_buf[: a.nnz], b.values_buf[: b.nnz], rtol=1e-4,
                                   atol=1e-6)
    np.testing.assert_allclose(p_gpu.layout.dense, params.layout.dense, rtol=1e-4, atol=1e-6)
    # The sampled epochs differ from the full softmax's (the option is not ignored).
    full = vae_cpu.VAEEngine(data, *_vae_problem(density=density, n_users=14, nnz=40)[1].tables,
                             _vae_problem(density=density, n_users=14, nnz=40)[1].layout,
                             **dict(opts, n_sampled=None))
    assert full.epoch(np.uint64(1)) != pytest.approx(want[0], rel=1e-3)


def test_vae_device_growth_scores_equal_the_cpu_scores():
    import copy

    from sparse_rec.backends import vae_cpu, vae_cuda

    data, params = _vae_problem(seed=1, n_users=14)
    p_gpu = copy.deepcopy(params)
    ref = vae_cpu.VAEEngine(data, *params.tables, params.layout, **VAE_OPTS)
    gpu = vae_cuda.VAEEngine(data, *p_gpu.tables, p_gpu.layout, n_blocks=2, threads_per_block=4,
                             **VAE_OPTS)
    key = np.uint64(4)
    for f_cpu, f_gpu, t in zip(ref.grow_fns(key), gpu.grow_fns(key), params.tables,
                               strict=True):
        for chunk in ((0, t.n_rows), (2, 7)):
            want = _fill(f_cpu, t.n_rows, t.n_cols, *chunk)
            assert np.count_nonzero(want) > 0.5 * want.size
            np.testing.assert_allclose(_fill(f_gpu, t.n_rows, t.n_cols, *chunk), want,
                                       rtol=1e-4, atol=1e-6)


def _vae_fit(backend, **kw):
    from sparse_rec import DSLMultVAE
    from sparse_rec.datasets import make_interactions

    X = make_interactions(20, 12, 90, random_state=3)
    params = dict(hidden_layer_sizes=(6,), n_components=3, density=0.4, max_iter=4,
                  update_interval=2, batch_size=8, random_state=0, n_threads=1, backend=backend)
    params.update(kw)
    return DSLMultVAE(**params).fit(X)


def _assert_fit_follows(cpu_fit, gpu_fit, tables):
    """The device fit keeps the budget and follows the CPU fit (growth, loss, patterns)."""
    assert all(h["nnz"] == cpu_fit.n_active_ for h in gpu_fit.history_)
    assert sum(h["grown"] for h in gpu_fit.history_) > 0
    assert [h["grown"] for h in gpu_fit.history_] == [h["grown"] for h in cpu_fit.history_]
    assert [h["loss"] for h in gpu_fit.history_] == pytest.approx(
        [h["loss"] for h in cpu_fit.history_], rel=1e-4)
    for name in tables:
        a, b = getattr(gpu_fit, name), getattr(cpu_fit, name)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-3, atol=1e-5)


def test_vae_fit_on_cuda_follows_the_cpu_fit():
    _assert_fit_follows(_vae_fit("cpu"), _vae_fit("cuda"), ("encoder_table_", "decoder_table_"))


def test_vae_sampled_softmax_fit_on_cuda_follows_the_cpu_fit():
    _assert_fit_follows(_vae_fit("cpu", n_sampled=4), _vae_fit("cuda", n_sampled=4),
                        ("encoder_table_", "decoder_table_"))


def test_vae_cuda_without_gpu_is_the_mf_error(monkeypatch):
    monkeypatch.setattr(cuda_backend, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="backend='cuda' needs numba-cuda and a CUDA GPU"):
        _vae_fit("cuda", max_iter=1)


# --- DSLLightGCN on the device ----------------------------------------------------------
def _lightgcn_problem(seed=0, n_users=12, n_items=9, nnz=45, density=0.5, n_layers=2):
    from sparse_rec import DSLLightGCN
    from sparse_rec._base import TrainData
    from sparse_rec.backends.cpu_lightgcn import Graph
    from sparse_rec.datasets import make_interactions

    X = make_interactions(n_users, n_items, nnz, random_state=seed)
    data = TrainData.from_matrix(X)
    est = DSLLightGCN(n_components=4, density=density, n_layers=n_layers)
    params = est._init_params(n_users, n_items, seed)
    graph = Graph.from_pattern(data.x_indptr, data.x_indices, n_items)
    return data, params, graph


def _lightgcn_engines(optimizer="adam", n_layers=2, density=0.5, seed=0, propagate_every=1,
                      **kw):
    import copy

    from sparse_rec.backends import cpu_lightgcn, cuda_lightgcn

    data, params, graph = _lightgcn_problem(seed=seed, density=density, n_layers=n_layers)
    p_gpu = copy.deepcopy(params)
    opts = dict(n_layers=n_layers, learning_rate=0.01, alpha=0.01, optimizer=optimizer,
                batch_size=16, propagate_every=propagate_every, **kw)
    ref = cpu_lightgcn.LightGCNEngine(data, *params.tables, graph, **opts)
    gpu = cuda_lightgcn.LightGCNEngine(data, *p_gpu.tables, graph, n_blocks=2,
                                       threads_per_block=4, **opts)
    return ref, gpu, params, p_gpu


@pytest.mark.parametrize("optimizer, n_layers, propagate_every, weights",
                         [("adam", 2, 1, None), ("adagrad", 0, 1, None), ("adam", 2, 2, None),
                          ("adam", 2, 1, [0.0, 0.25, 0.75])])
def test_lightgcn_epochs_on_the_device_equal_the_cpu_epochs(optimizer, n_layers,
                                                            propagate_every, weights):
    ref, gpu, params, p_gpu = _lightgcn_engines(optimizer, n_layers,
                                                propagate_every=propagate_every,
                                                layer_weights=weights)
    want = [ref.epoch(np.uint64(e)) for e in (1, 2)]  # three batches each
    got = [gpu.epoch(np.uint64(e)) for e in (1, 2)]
    gpu.download()
    assert got == pytest.approx(want, rel=1e-5)
    for a, b in zip(p_gpu.tables, params.tables, strict=True):
        np.testing.assert_allclose(a.values_buf[: a.nnz], b.values_buf[: b.nnz], rtol=1e-4,
                                   atol=1e-6)
    start = _lightgcn_problem(n_layers=n_layers)[1]
    assert not np.allclose(params.tables[0].weights, start.tables[0].weights)


@pytest.mark.parametrize("weights", [None, [0.1, 0.2, 0.3, 0.4]])
def test_lightgcn_device_growth_scores_equal_the_cpu_scores(weights):
    ref, gpu, params, _ = _lightgcn_engines("adam", 3, density=0.4, seed=1,
                                            layer_weights=weights)
    key = np.uint64(9)
    for f_cpu, f_gpu, t in zip(ref.grow_fns(key), gpu.grow_fns(key), params.tables,
                               strict=True):
        for chunk in ((0, t.n_rows), (2, 7)):
            want = _fill(f_cpu, t.n_rows, t.n_cols, *chunk)
            assert np.count_nonzero(want) > 0.5 * want.size
            np.testing.assert_allclose(_fill(f_gpu, t.n_rows, t.n_cols, *chunk), want,
                                       rtol=1e-4, atol=1e-7)


def _lightgcn_fit(backend, **kw):
    from sparse_rec import DSLLightGCN
    from sparse_rec.datasets import make_interactions

    X = make_interactions(16, 12, 70, random_state=2)
    params = dict(n_components=4, density=0.4, n_layers=2, max_iter=4, update_interval=2,
                  batch_size=32, random_state=0, n_threads=1, backend=backend)
    params.update(kw)
    return DSLLightGCN(**params).fit(X)


@pytest.mark.parametrize("kw", [dict(propagate_every=1), dict(propagate_every=2),
                                dict(layer_weights=[1, 2, 3])])
def test_lightgcn_fit_on_cuda_follows_the_cpu_fit(kw):
    _assert_fit_follows(_lightgcn_fit("cpu", **kw), _lightgcn_fit("cuda", **kw),
                        ("user_table_", "item_table_"))


LIGHTGCN_SOFTMAX = dict(loss="softmax", n_negatives=6, temperature=0.3)


@pytest.mark.parametrize("optimizer, n_layers", [("adam", 2), ("adagrad", 0)])
def test_lightgcn_softmax_epochs_on_the_device_equal_the_cpu_epochs(optimizer, n_layers):
    # Three batches an epoch, each with its shared negatives (some of them
    # hits), cosines, the softmax and the gradients through the norms.
    ref, gpu, params, p_gpu = _lightgcn_engines(optimizer, n_layers, **LIGHTGCN_SOFTMAX)
    want = [ref.epoch(np.uint64(e)) for e in (1, 2)]
    got = [gpu.epoch(np.uint64(e)) for e in (1, 2)]
    gpu.download()
    assert got == pytest.approx(want, rel=1e-5)
    for a, b in zip(p_gpu.tables, params.tables, strict=True):
        np.testing.assert_allclose(a.values_buf[: a.nnz], b.values_buf[: b.nnz], rtol=1e-4,
                                   atol=1e-6)
    start = _lightgcn_problem(n_layers=n_layers)[1]
    for t, s in zip(params.tables, start.tables, strict=True):
        assert not np.allclose(t.weights, s.weights)


def test_lightgcn_softmax_device_growth_scores_equal_the_cpu_scores():
    ref, gpu, params, _ = _lightgcn_engines("adam", 3, density=0.4, seed=1, **LIGHTGCN_SOFTMAX)
    key = np.uint64(9)
    for f_cpu, f_gpu, t in zip(ref.grow_fns(key), gpu.grow_fns(key), params.tables,
                               strict=True):
        for chunk in ((0, t.n_rows), (2, 7)):
            want = _fill(f_cpu, t.n_rows, t.n_cols, *chunk)
            assert np.count_nonzero(want) > 0.5 * want.size
            np.testing.assert_allclose(_fill(f_gpu, t.n_rows, t.n_cols, *chunk), want,
                                       rtol=1e-4, atol=1e-6)


def test_lightgcn_softmax_fit_on_cuda_follows_the_cpu_fit():
    kw = dict(LIGHTGCN_SOFTMAX, n_negatives=8)
    _assert_fit_follows(_lightgcn_fit("cpu", **kw), _lightgcn_fit("cuda", **kw),
                        ("user_table_", "item_table_"))


def test_lightgcn_cuda_without_gpu_is_the_mf_error(monkeypatch):
    monkeypatch.setattr(cuda_backend, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="backend='cuda' needs numba-cuda and a CUDA GPU"):
        _lightgcn_fit("cuda", max_iter=1)


# --- The prune threshold on the device ---------------------------------------------
@pytest.mark.parametrize("scores", ["weights", "iALS scores"])
def test_device_prune_threshold_and_mask_equal_the_host_ones(scores):
    # Coarse magnitudes (many ties at the threshold, signs mixed): the
    # k-th smallest, the masks and the ties given back must be the host's.
    from numba import cuda

    from sparse_rec._dsl import PruneGrow
    from sparse_rec._kernels.cuda.prune_grow import DevicePrune
    from sparse_rec._table import SparseEmbeddingTable

    rng = np.random.default_rng(0)
    tabs = [SparseEmbeddingTable.random(n, 6, nnz, n_slots=2, seed=s)
            for n, nnz, s in ((20, 50, 1), (15, 40, 2))]
    for t in tabs:
        t.values_buf[: t.nnz, 0] = rng.integers(-4, 5, t.nnz) * 0.25
    host = [t.weights if scores == "weights" else (t.weights ** 2).astype(np.float32)
            for t in tabs]
    dev = [cuda.to_device(np.ascontiguousarray(t.values_buf[: t.nnz])) if scores == "weights"
           else cuda.to_device(h.reshape(-1, 1)) for t, h in zip(tabs, host, strict=True)]
    pg = PruneGrow(tabs)
    for k in (7, 30, 61):
        want = pg._prune_smallest([0, 1], k, np.random.default_rng(k), host)
        mixed = [DevicePrune(dev[0], (1, 8)), host[1]]  # one table on a device, one not
        for given in ([DevicePrune(d, (2, 4)) for d in dev], mixed):
            got = pg._prune_smallest([0, 1], k, np.random.default_rng(k), given)
            assert sum(int((~m).sum()) for m in got.values()) == k
            for t in (0, 1):
                np.testing.assert_array_equal(got[t], want[t])


# --- DSL-MF's softmax and CCL losses on the device ---------------------------------
SOFTMAX_FAMILY = {
    "softmax": ("SoftmaxEngine", dict(n_negatives=8, temperature=0.5)),
    "ccl": ("CCLEngine", dict(n_negatives=8, margin=0.3, negative_weight=2.0)),
}


def _softmax_family_engines(loss, seed=0, batch=16, **grid):
    import copy

    from sparse_rec.backends import cpu_softmax, cuda_softmax

    name, opts = SOFTMAX_FAMILY[loss]
    _, data, U, I, b = small_problem(seed=seed, n_users=24, n_items=18, d=6, density=0.5)
    U2, I2 = copy.deepcopy(U), copy.deepcopy(I)
    opts = dict(opts, learning_rate=0.05, alpha=0.001, batch=batch)
    ref = getattr(cpu_softmax, name)(data, U, I, b, **opts)
    gpu = getattr(cuda_softmax, name)(data, U2, I2, b.copy(), **grid, **opts)
    return ref, gpu, (U, I), (U2, I2)


@pytest.mark.parametrize("loss", ["softmax", "ccl"])
def test_softmax_family_one_gpu_thread_epochs_equal_the_serial_cpu_epochs(loss):
    # One GPU thread trains every batch in the serial order: two epochs
    # (several batches each, CCL's row scaling after each) must follow the
    # CPU's serial epochs, weights and Adagrad slots alike.
    numba.set_num_threads(1)
    try:
        ref, gpu, (U, I), (U2, I2) = _softmax_family_engines(loss, n_blocks=1,
                                                             threads_per_block=1)
        start = [t.values_buf[: t.nnz].copy() for t in (U, I)]
        want = [ref.epoch(np.uint64(e)) for e in (1, 2)]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert gpu.n_threads == 1
    assert (U.n_rows + ref.user_batch - 1) // ref.user_batch >= 3
    got = [gpu.epoch(np.uint64(e)) for e in (1, 2)]
    gpu.download()
    assert got == pytest.approx(want, rel=1e-5)
    for a, b, s in zip((U2, I2), (U, I), start, strict=True):
        assert not np.allclose(b.values_buf[: b.nnz], s)  # the epochs trained both tables
        np.testing.assert_allclose(a.values_buf[: a.nnz], b.values_buf[: b.nnz], rtol=1e-4,
                                   atol=1e-5)
    if loss == "ccl":  # rows scaled to their target norms on the device
        norms = np.sqrt(np.add.reduceat(U2.weights.astype(np.float64) ** 2, U2.indptr[:-1]))
        has = np.diff(U2.indptr) > 0
        np.testing.assert_allclose(norms[has], gpu.target_norms[0][has], rtol=1e-5)


@pytest.mark.parametrize("loss", ["softmax", "ccl"])
def test_softmax_family_gpu_threads_in_parallel_stay_close_to_the_serial_cpu(loss):
    # Three threads train their runs of batches side by side (Hogwild, as
    # the CPU's threads; the simulator interleaves them differently from run
    # to run): every user the serial epoch trained must be trained (no run
    # left out or run twice), and the loss and the weights' changes must
    # stay near the serial epoch's. Over 12 runs here the loss came within
    # 0.5% (softmax) and 1.9% (CCL) and the changes' correlation was
    # 0.88-1.0 and 0.86-1.0.
    numba.set_num_threads(1)
    try:
        ref, gpu, (U, I), (U2, I2) = _softmax_family_engines(loss, seed=3, batch=8, n_blocks=1,
                                                             threads_per_block=3)
        start = [t.weights.copy() for t in (U, I)]
        want = ref.epoch(np.uint64(5))
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert gpu.n_threads == 3
    assert (U.n_rows + ref.user_batch - 1) // ref.user_batch >= 6  # two batches a thread
    got = gpu.epoch(np.uint64(5))
    gpu.download()
    rows = np.repeat(np.arange(U.n_rows), np.diff(U.indptr))
    moved = [np.bincount(rows, np.abs(t.weights - start[0]) > 0, U.n_rows) > 0 for t in (U, U2)]
    assert moved[0].sum() > U.n_rows // 2
    np.testing.assert_array_equal(moved[1], moved[0])
    assert got == pytest.approx(want, rel=0.05)
    d_cpu, d_gpu = (np.concatenate([t.weights - s for t, s in zip(tabs, start, strict=True)])
                    for tabs in ((U, I), (U2, I2)))
    assert np.corrcoef(d_cpu, d_gpu)[0, 1] > 0.75


def test_softmax_device_growth_scores_equal_the_cpu_scores():
    # The users' log-partitions and both tables' growth scores on the device
    # (three threads striding over the rows), against the CPU kernels.
    from sparse_rec._dsl import PruneGrow

    ref, gpu, (U, I), (U2, I2) = _softmax_family_engines("softmax", seed=4, n_blocks=1,
                                                         threads_per_block=3)
    assert gpu.n_threads == 3
    key = np.uint64(8)
    fns = gpu.grow_fns(key)
    assert all(hasattr(f, "histogram") and hasattr(f, "collect") for f in fns)
    for f_cpu, f_gpu, t in zip(ref.grow_fns(key), fns, (U, I), strict=True):
        for chunk in ((0, t.n_rows), (5, 14)):
            want = _fill(f_cpu, t.n_rows, t.n_cols, *chunk)
            assert np.count_nonzero(want) > 0.5 * want.size
            np.testing.assert_allclose(_fill(f_gpu, t.n_rows, t.n_cols, *chunk), want,
                                       rtol=1e-4, atol=1e-6)
    # Selected on the device (bin counts and kept coordinates): the CPU's step.
    out_cpu = PruneGrow([U, I]).step(0.3, 5, ref.grow_fns(key))
    out_gpu = PruneGrow([U2, I2]).step(0.3, 5, gpu.grow_fns(key),
                                       prune_scores=gpu.prune_scores())
    assert out_gpu[1].sum() > 0
    for a, c in zip(out_gpu, out_cpu, strict=True):
        np.testing.assert_array_equal(a, c)
    for t_gpu, t_cpu in ((U2, U), (I2, I)):
        np.testing.assert_array_equal(t_gpu.indptr, t_cpu.indptr)
        np.testing.assert_array_equal(t_gpu.indices, t_cpu.indices)


def _softmax_family_fit(loss, backend, **kw):
    from sparse_rec import DSLMatrixFactorization
    from sparse_rec.datasets import make_interactions

    X = make_interactions(60, 30, 600, random_state=6)
    params = dict(loss=loss, n_components=6, density=0.4, n_negatives=8, max_iter=4,
                  update_interval=1, update_ratio=0.3, random_state=0, n_threads=1,
                  backend=backend)
    params.update(kw)
    return DSLMatrixFactorization(**params).fit(X)


@pytest.mark.parametrize("loss", ["softmax", "ccl"])
def test_softmax_family_fit_on_one_cuda_thread_is_the_serial_cpu_fit(monkeypatch, loss):
    # One GPU thread: epochs on the device, downloads, growth on the host,
    # uploads after each rebuild; the fit must follow the serial CPU fit.
    # Three epochs (two prune/grow steps): the weights then differ by 3e-8,
    # and in a fourth epoch of the softmax fit a growth step meets scores
    # that close and picks another coordinate (the fits then drift apart,
    # as two CPU builds with other rounding would).
    from sparse_rec.backends import cuda_softmax

    monkeypatch.setattr(cuda_backend, "_simulated", lambda: True)  # also on a real GPU
    monkeypatch.setattr(cuda_softmax, "_SIM_GRID", (1, 1))
    _assert_fit_follows(_softmax_family_fit(loss, "cpu", max_iter=3),
                        _softmax_family_fit(loss, "cuda", max_iter=3),
                        ("user_table_", "item_table_"))


@pytest.mark.parametrize("loss", ["softmax", "ccl"])
def test_softmax_family_fit_on_cuda_lands_near_the_cpu_fit(loss):
    from sparse_rec.backends import cpu_softmax, cuda_softmax

    # Six epochs, prune/grow every two. On this problem the serial CPU fit's
    # final loss spans 2.33-2.95 (softmax) and 0.49-0.70 (CCL) over seeds
    # 0-3, and a 2-thread CPU fit ends 0.6% (softmax) and 5% (CCL) from the
    # serial one; the simulator's 4 GPU threads (Hogwild, interleaved
    # differently per run) ended within 0.9% (softmax) and 2.1% (CCL) of it
    # over 8 runs.
    cpu_fit = _softmax_family_fit(loss, "cpu", max_iter=6, update_interval=2)
    gpu_fit = _softmax_family_fit(loss, "cuda", max_iter=6, update_interval=2)
    # The simulator's grid trains several runs of batches side by side.
    data_users, nnz = 60, cpu_fit.seen_.nnz
    n_batches = -(-data_users // max(1, round(cpu_softmax.SOFTMAX_BATCH * data_users / nnz)))
    assert min(n_batches, np.prod(cuda_softmax._SIM_GRID)) >= 2
    assert all(h["nnz"] == cpu_fit.n_active_ for h in gpu_fit.history_)
    assert sum(h["grown"] for h in gpu_fit.history_) > 0
    loss_cpu = [h["loss"] for h in cpu_fit.history_]
    loss_gpu = [h["loss"] for h in gpu_fit.history_]
    assert loss_gpu[-1] < loss_gpu[0]
    assert loss_gpu[-1] == pytest.approx(loss_cpu[-1], rel=0.05)


@pytest.mark.parametrize("loss", ["softmax", "ccl"])
def test_softmax_family_cuda_without_gpu_is_the_mf_error(monkeypatch, loss):
    monkeypatch.setattr(cuda_backend, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="backend='cuda' needs numba-cuda and a CUDA GPU"):
        _softmax_family_fit(loss, "cuda", max_iter=1)


def test_softmax_batches_of_positives_are_refused_on_cuda():
    with pytest.raises(ValueError, match="per_user=False .* has no CUDA kernel"):
        from sparse_rec.backends import cuda_softmax

        _, data, U, I, b = small_problem(seed=0, n_users=12, n_items=9, d=4)
        cuda_softmax.SoftmaxEngine(data, U, I, b, learning_rate=0.05, alpha=0.0, n_negatives=4,
                                   temperature=0.5, per_user=False)
