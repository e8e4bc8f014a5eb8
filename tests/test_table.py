"""Table invariants: canonical CSR, exact counts, prune and grow."""

import numpy as np
import pytest

from sparse_rec._dsl import PruneGrow, update_ratio_at
from sparse_rec._table import SparseEmbeddingTable


def dense(tab, slot=0):
    out = np.zeros(tab.shape, np.float32)
    rows = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
    out[rows, tab.indices.astype(np.int64)] = tab.slot(slot)
    return out


def active(tab):
    rows = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
    return set(zip(rows.tolist(), tab.indices.astype(np.int64).tolist(), strict=True))


@pytest.mark.parametrize("nnz", [0, 1, 37, 200])
def test_random_table_has_exact_count_and_is_canonical(nnz):
    t = SparseEmbeddingTable.random(20, 10, nnz, seed=3)
    t.check()
    assert t.nnz == nnz
    assert np.count_nonzero(dense(t)) <= nnz
    assert np.all(np.abs(t.weights) <= 0.1)
    assert np.all(t.slot(1) == 0)


def test_random_pattern_is_uniform_over_coordinates():
    hits = np.zeros((4, 6))
    for seed in range(400):
        t = SparseEmbeddingTable.random(4, 6, 6, seed=seed)
        hits += dense(t) != 0
    # Every coordinate is active with probability 6/24 = 0.25.
    assert np.all(np.abs(hits / 400 - 0.25) < 0.08)


def test_random_table_rejects_impossible_count():
    with pytest.raises(ValueError, match="nnz must be in"):
        SparseEmbeddingTable.random(2, 3, 7)


# Slots move as 8-byte words when their count is even, 4-byte ones otherwise.
@pytest.mark.parametrize("n_slots", [1, 2, 3])
def test_rebuild_drops_and_inserts_in_order_with_state(n_slots):
    t = SparseEmbeddingTable.random(6, 8, 20, seed=0, n_slots=n_slots)
    last = n_slots - 1
    t.values_buf[:20, last] = np.arange(20) + 1  # tagged by position
    before = dense(t, last)
    keep = np.ones(20, bool)
    keep[[0, 5, 19]] = False
    act = active(t)
    free = sorted({(r, c) for r in range(6) for c in range(8)} - act)
    new = [free[1], free[7], free[-1], free[20]]
    new.sort()
    rows = np.array([r for r, _ in new])
    cols = np.array([c for _, c in new])
    dropped = [sorted(act)[p] for p in (0, 5, 19)]
    t.rebuild(keep, rows, cols)
    t.check()
    assert t.nnz == 21
    after = dense(t, last)
    expected_active = (act - set(dropped)) | set(new)
    assert active(t) == expected_active
    for r, c in act - set(dropped):
        assert after[r, c] == before[r, c]  # state moved with its weight
    for r, c in new:
        assert all(dense(t, s)[r, c] == 0 for s in range(n_slots))


def test_kth_smallest_magnitude_is_exact_across_tables_and_ties():
    rng = np.random.default_rng(5)
    tabs = [SparseEmbeddingTable.random(40, 10, 150, seed=0),
            SparseEmbeddingTable.random(30, 10, 120, seed=1)]
    # A wide range (many bins), repeated values (ties) and both signs.
    pool = np.concatenate([rng.standard_normal(60) * 10.0 ** rng.integers(-6, 3, 60),
                           [0.0, 1e-30, 0.25, -0.25]]).astype(np.float32)
    for t in tabs:
        t.values_buf[: t.nnz, 0] = rng.choice(pool, t.nnz)
    mags = np.sort(np.abs(np.concatenate([t.weights for t in tabs])))
    pg = PruneGrow(tabs)
    for k in range(1, len(mags) + 1):
        assert pg._kth_smallest_magnitude([0, 1], k) == mags[k - 1]
    masks = pg._prune_smallest([0, 1], 77, np.random.default_rng(0))
    dropped = np.concatenate([np.abs(t.weights)[~masks[i]] for i, t in enumerate(tabs)])
    kept = np.concatenate([np.abs(t.weights)[masks[i]] for i, t in enumerate(tabs)])
    assert len(dropped) == 77 and dropped.max() <= kept.min()


def test_coverage_counts_every_coordinate_ever_active():
    rng = np.random.default_rng(2)
    tabs = [SparseEmbeddingTable.random(12, 6, 20, seed=4),
            SparseEmbeddingTable.random(9, 6, 15, seed=5)]
    seen = [active(t) for t in tabs]
    fns = [lambda r0, r1, G: G.__setitem__(slice(None), rng.random(G.shape))] * 2
    # The scores must repeat when recomputed: a table in one chunk is scored once.
    pg = PruneGrow(tabs)
    assert pg.coverage == sum(len(s) for s in seen) / (12 * 6 + 9 * 6)
    for step in range(5):
        for t in tabs:
            t.values_buf[: t.nnz, 0] = rng.standard_normal(t.nnz)
        pg.step(0.4, seed=step, grow_fns=fns)
        for s, t in zip(seen, tabs, strict=True):
            s |= active(t)
        assert pg.coverage == sum(len(s) for s in seen) / (12 * 6 + 9 * 6)
    assert pg.coverage > 35 / (12 * 6 + 9 * 6)  # growth did add coordinates


def _table_with_weights(w):
    w = np.asarray(w, np.float32)
    n_rows, n_cols = w.shape
    t = SparseEmbeddingTable.random(n_rows, n_cols, n_rows * n_cols, seed=0)
    t.values_buf[:, 0] = w.reshape(-1)
    return t


def test_prune_drops_smallest_magnitudes_and_grow_takes_largest_gradient():
    rng = np.random.default_rng(0)
    t = SparseEmbeddingTable.random(30, 12, 120, seed=1)
    t.values_buf[: t.nnz, 0] = rng.standard_normal(t.nnz).astype(np.float32)
    t.values_buf[: t.nnz, 1] = t.weights * 10  # state follows weights
    scores = rng.random((30, 12)).astype(np.float32)

    def grad(r0, r1, G):
        G[:] = -scores[r0:r1]  # sign must not matter: growth uses |g|

    old_active = active(t)
    old_w = dense(t)
    pg = PruneGrow([t], budget="table", chunk_bytes=4 * 12 * 7)  # 7-row chunks
    pruned, grown = pg.step(0.25, seed=0, grow_fns=[grad])
    t.check()
    assert t.nnz == 120 and pruned[0] == grown[0] == 30
    gone = old_active - active(t)
    kept = old_active & active(t)
    assert len(gone) == 30
    assert max(abs(old_w[c]) for c in gone) <= min(abs(old_w[c]) for c in kept)
    new = active(t) - old_active
    inactive_before = {(r, c) for r in range(30) for c in range(12)} - old_active
    assert new <= inactive_before
    assert min(scores[c] for c in new) >= max(scores[c] for c in inactive_before - new)
    assert all(dense(t)[c] == 0 for c in new)
    assert np.allclose(dense(t, 1)[dense(t) != 0], 10 * dense(t)[dense(t) != 0])


@pytest.mark.parametrize("budget", ["global", "table"])
@pytest.mark.parametrize("grow", ["gradient", "random"])
def test_count_is_constant_over_many_steps(budget, grow):
    rng = np.random.default_rng(1)
    tabs = [SparseEmbeddingTable.random(40, 8, 64, seed=2),
            SparseEmbeddingTable.random(25, 8, 40, seed=3)]
    for t in tabs:
        t.values_buf[: t.nnz, 0] = rng.standard_normal(t.nnz)
    def fn(r0, r1, G, salt):  # deterministic, as PruneGrow requires
        G[:] = np.random.default_rng([r0, salt, step]).random(G.shape)

    fns = [lambda r0, r1, G: fn(r0, r1, G, 0), lambda r0, r1, G: fn(r0, r1, G, 1)]
    pg = PruneGrow(tabs, budget=budget, grow=grow)
    step = 0
    for step in range(6):  # noqa: B007 (read by fn)
        pg.step(update_ratio_at(step, 6, 0.5), seed=step, grow_fns=fns)
        for t in tabs:
            t.check()
        assert tabs[0].nnz + tabs[1].nnz == 104
        if budget == "table":
            assert (tabs[0].nnz, tabs[1].nnz) == (64, 40)
        for t in tabs:  # weights stay finite and state aligned
            assert t.values_buf.shape[0] >= t.nnz


def test_global_budget_moves_weights_towards_larger_gradients():
    tabs = [SparseEmbeddingTable.random(10, 6, 20, seed=0),
            SparseEmbeddingTable.random(10, 6, 20, seed=1)]
    fns = [lambda r0, r1, G: G.fill(0.001), lambda r0, r1, G: G.fill(5.0)]
    pg = PruneGrow(tabs, budget="global")
    pg.step(0.5, seed=0, grow_fns=fns)
    assert tabs[0].nnz + tabs[1].nnz == 40
    assert tabs[1].nnz > tabs[0].nnz


def test_zero_gradients_fall_back_to_random_growth_with_exact_count():
    t = SparseEmbeddingTable.random(50, 10, 100, seed=0)
    pg = PruneGrow([t], budget="table")
    before = active(t)
    pg.step(0.3, seed=4, grow_fns=[lambda r0, r1, G: G.fill(0.0)])
    t.check()
    assert t.nnz == 100
    assert len(active(t) - before) == 30
    # Random growth spreads over rows rather than filling the first ones.
    rows = {r for r, _ in active(t) - before}
    assert len(rows) > 10


def test_dense_rows_matches_dense_reference():
    t = SparseEmbeddingTable.random(12, 7, 30, seed=5)
    rows = np.array([3, 0, 11, 3, 5])
    np.testing.assert_array_equal(t.dense_rows(rows), dense(t)[rows])
    assert t.dense_rows(np.zeros(0, np.int64)).shape == (0, 7)


def test_pickle_keeps_only_active_part():
    import pickle

    t = SparseEmbeddingTable.random(5, 4, 8, seed=0)
    t.reserve(100)
    t2 = pickle.loads(pickle.dumps(t))
    t2.check()
    assert t2.indices_buf.shape[0] == 8
    np.testing.assert_array_equal(t2.weights, t.weights)


# The parts (one per thread) are scanned in parallel; 50 parts: more than rows.
@pytest.mark.parametrize("n_parts", [1, 3, 50])
def test_collect_at_least_keeps_row_major_order_after_earlier_chunks(n_parts):
    from sparse_rec._kernels import _prune_grow as K

    rng = np.random.default_rng(3)
    G = rng.random((23, 9)).astype(np.float32)
    G[rng.random(G.shape) < 0.3] = -1.0  # masked (active) coordinates
    G[4] = 0.0  # a row with nothing to collect
    bins = np.where(G >= 0, G.view(np.int32) >> K.BIN_SHIFT, -1)
    lo = int(np.sort(bins[bins >= 0])[-40])
    want = np.argwhere(bins >= lo)
    # Lists already holding 2 entries, as after an earlier chunk.
    rows, cols = np.full(len(want) + 2, -7, np.int32), np.full(len(want) + 2, -7, np.int32)
    vals = np.zeros(len(want) + 2, np.float32)
    hist = np.zeros(K.N_BINS, np.int64)
    local = np.empty((n_parts, K.N_BINS), np.int64)
    K.bin_counts(G.reshape(-1, 1).view(np.int32), G.size, hist, local, G.shape[1], False)
    np.testing.assert_array_equal(hist, np.bincount(bins[bins >= 0], minlength=K.N_BINS))
    n = K.collect_at_least(G, 100, lo, local, rows, cols, vals, 2)
    assert n == len(want) + 2 and np.all(rows[:2] == -7)
    np.testing.assert_array_equal(np.c_[rows[2:], cols[2:]], want + [100, 0])
    np.testing.assert_array_equal(vals[2:], G[bins >= lo])
    # A list too short for the scores (they changed since counting) is not overrun.
    assert K.collect_at_least(G, 100, lo, local, rows[:5], cols[:5], vals[:5], 0) == 5


@pytest.mark.parametrize("chunk_rows", [200, 7])
def test_growth_in_one_pass_equals_two_passes(monkeypatch, chunk_rows):
    # Scores on a coarse grid: crowded bins and ties across chunks and tables.
    import sparse_rec._dsl as D

    passes = []
    second = PruneGrow._collect
    monkeypatch.setattr(PruneGrow, "_collect",
                        lambda self, *a: passes.append(1) or second(self, *a))

    def run(slack):
        monkeypatch.setattr(D, "_HOLD_SLACK", slack)
        rng = np.random.default_rng(8)
        tabs = [SparseEmbeddingTable.random(60, 8, 100, seed=6),
                SparseEmbeddingTable.random(45, 8, 80, seed=7)]
        for t in tabs:
            t.values_buf[: t.nnz, 0] = rng.standard_normal(t.nnz)
        scores = [np.round(rng.random((t.n_rows, 8)) * 4).astype(np.float32) / 4 for t in tabs]
        fns = [lambda r0, r1, G, s=s: G.__setitem__(slice(None), s[r0:r1]) for s in scores]
        pg = PruneGrow(tabs, chunk_bytes=4 * 8 * chunk_rows)
        for step in range(3):
            pg.step(0.3, seed=step, grow_fns=fns)
        return [active(t) for t in tabs]

    one_pass = run(1 << 16)
    assert not passes
    # Slack -300 leaves no room for candidates: every step takes the second pass.
    assert run(-300) == one_pass
    assert passes


def test_step_prunes_by_given_scores_and_calls_the_rebuild_hook():
    # A loss with its own prune score (e.g. w**2 * H_jj) replaces |w|.
    rng = np.random.default_rng(3)
    t = SparseEmbeddingTable.random(20, 6, 60, seed=2)
    t.values_buf[: t.nnz, 0] = rng.standard_normal(t.nnz)
    before = t.to_csr().toarray()
    scores = (1.0 / (np.abs(t.weights) + 1e-3)).astype(np.float32)  # prune the largest |w|
    calls = []
    pruned, grown = PruneGrow([t], budget="table").step(
        0.2, seed=0, grow_fns=[lambda r0, r1, G: G.fill(1.0)], prune_scores=[scores],
        rebuild=lambda: calls.append(t.nnz))
    assert calls == [60] and pruned[0] == grown[0] == 12
    after = t.to_csr().toarray()
    gone = (before != 0) & (after == 0)
    kept = (before != 0) & (after != 0)
    assert gone.sum() == 12 and np.abs(before[gone]).min() >= np.abs(before[kept]).max()


def test_gradient_growth_without_callbacks_is_refused():
    t = SparseEmbeddingTable.random(5, 4, 8, seed=0)
    with pytest.raises(ValueError, match="needs grow_fns"):
        PruneGrow([t]).step(0.25, seed=0)
