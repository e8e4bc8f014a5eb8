"""Tests for sparse_rec.model_selection."""

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec.model_selection import (
    LeaveOneOutSplit,
    leave_one_out_split,
    random_split,
    temporal_split,
    train_test_split_users,
)


def _random_X(n_users=60, n_items=300, density=0.05, seed=0, fmt="csr"):
    rng = np.random.default_rng(seed)
    X = sp.random(n_users, n_items, density=density, format=fmt, random_state=rng)
    X.data = np.round(X.data * 5 + 1).astype(np.float64)  # weights 1..6
    return X


def _timestamps(X, seed=1):
    T = X.tocsr(copy=True)
    T.data = np.random.default_rng(seed).integers(1, 10, T.nnz).astype(np.float64)
    return T


def _triples(M):
    M = M.tocoo()
    return set(zip(M.row.tolist(), M.col.tolist(), M.data.tolist(), strict=True))


def _check_canonical(M, shape):
    assert sp.isspmatrix_csr(M) or isinstance(M, sp.csr_array)
    assert M.shape == shape
    assert M.dtype == np.float32
    assert M.has_canonical_format


def _check_partition(X, X_train, X_test):
    _check_canonical(X_train, X.shape)
    _check_canonical(X_test, X.shape)
    full = _triples(sp.csr_matrix(X).astype(np.float32))
    train, test = _triples(X_train), _triples(X_test)
    assert not train & test
    assert train | test == full
    assert X_train.nnz + X_test.nnz == X.nnz


# -- random_split ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csr", "coo", "csc"])
@pytest.mark.parametrize("test_size, min_train", [(0.2, 1), (0.5, 1), (0.7, 3), (0.9, 0)])
def test_random_split_partition_and_counts(fmt, test_size, min_train):
    X = _random_X(fmt=fmt)
    X_train, X_test = random_split(X, test_size, random_state=0, min_train=min_train)
    _check_partition(X, X_train, X_test)
    n = np.diff(X.tocsr().indptr)
    expected = np.array([min(round(test_size * k), max(k - min_train, 0)) for k in n])
    np.testing.assert_array_equal(X_test.getnnz(axis=1), expected)
    assert np.all(X_train.getnnz(axis=1) >= np.minimum(n, min_train))


def test_random_split_reproducible_and_seed_dependent():
    X = _random_X()
    a = random_split(X, random_state=42)
    b = random_split(X, random_state=42)
    c = random_split(X, random_state=43)
    assert _triples(a[1]) == _triples(b[1])
    assert _triples(a[1]) != _triples(c[1])
    g = random_split(X, random_state=np.random.default_rng(42))
    h = random_split(X, random_state=np.random.RandomState(42))
    _check_partition(X, *g)
    _check_partition(X, *h)


def test_random_split_is_roughly_uniform():
    # One user with 4 items, 1 held out: every item should be held out ~1/4 of the time.
    X = sp.csr_matrix(np.ones((1, 4)))
    hits = np.zeros(4)
    for seed in range(400):
        hits += random_split(X, 0.25, random_state=seed)[1].toarray()[0]
    assert hits.sum() == 400
    assert np.all(np.abs(hits / 400 - 0.25) < 0.08)


def test_random_split_does_not_modify_input():
    X = _random_X(fmt="coo")
    before = (X.row.copy(), X.col.copy(), X.data.copy())
    random_split(X, random_state=0)
    for old, new in zip(before, (X.row, X.col, X.data), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, np.nan, "0.2"])
def test_random_split_bad_test_size(bad):
    with pytest.raises(ValueError, match=r"test_size must be in \(0, 1\)"):
        random_split(_random_X(), test_size=bad)


def test_random_split_bad_input():
    X = sp.csr_matrix(np.array([[1.0, -1.0]]))
    with pytest.raises(ValueError, match="non-negative"):
        random_split(X)
    with pytest.raises(ValueError, match="min_train must be an integer >= 0"):
        random_split(_random_X(), min_train=-1)
    with pytest.raises(TypeError, match="random_state must be"):
        random_split(_random_X(), random_state="seed")


# -- temporal_split ----------------------------------------------------------


@pytest.mark.parametrize("test_size", [0.2, 0.5])
def test_temporal_split_holds_out_latest(test_size):
    X = _random_X()
    T = _timestamps(X)
    X_train, X_test = temporal_split(X, T, test_size)
    _check_partition(X, X_train, X_test)
    n = np.diff(X.indptr)
    expected = np.array([min(round(test_size * k), max(k - 1, 0)) for k in n])
    np.testing.assert_array_equal(X_test.getnnz(axis=1), expected)
    Td = T.toarray()
    for u in range(X.shape[0]):
        tr, te = X_train[u].indices, X_test[u].indices
        if te.size:
            # (timestamp, item) of every test item beats every train item.
            latest_train = max((Td[u, i], i) for i in tr)
            assert min((Td[u, i], i) for i in te) > latest_train


def test_temporal_split_ties_by_item_index():
    X = sp.csr_matrix(np.ones((1, 4)))
    T = sp.csr_matrix(np.full((1, 4), 7.0))
    _, X_test = temporal_split(X, T, test_size=0.5)
    assert X_test.indices.tolist() == [2, 3]


def test_temporal_split_pattern_mismatch():
    X = _random_X()
    T = _timestamps(X).tolil()
    T[0, 0] = 0 if X[0, 0] else 5.0  # adds or drops one entry
    with pytest.raises(ValueError, match="same shape and sparsity pattern"):
        temporal_split(X, sp.csr_matrix(T))
    with pytest.raises(ValueError, match="same shape and sparsity pattern"):
        temporal_split(X, _timestamps(_random_X(seed=5)))
    with pytest.raises(TypeError, match="scipy sparse matrix"):
        temporal_split(X, np.zeros(X.nnz))


def _reverse_rows(M):
    """Same matrix with each row's indices stored in reverse (non-canonical) order."""
    M = M.tocsr()
    idx = np.concatenate(
        [np.arange(M.indptr[u + 1] - 1, M.indptr[u] - 1, -1) for u in range(M.shape[0])]
    ).astype(np.int64)
    return sp.csr_matrix((M.data[idx], M.indices[idx], M.indptr.copy()), shape=M.shape)


def test_unsorted_inputs_are_not_modified():
    X0 = _random_X()
    X, T = _reverse_rows(X0), _reverse_rows(_timestamps(X0))
    assert not X.has_sorted_indices and not T.has_sorted_indices
    saved = [(M.data.copy(), M.indices.copy()) for M in (X, T)]
    X_train, X_test = temporal_split(X, T)
    _check_partition(X, X_train, X_test)
    leave_one_out_split(X, T, n_negatives=5)
    for M, (data, indices) in zip((X, T), saved, strict=True):
        np.testing.assert_array_equal(M.data, data)
        np.testing.assert_array_equal(M.indices, indices)


# -- leave_one_out_split -----------------------------------------------------


def test_leave_one_out_random():
    X = _random_X(n_items=400).tolil()
    X[3] = 0  # a user without items
    X[4] = 0
    X[4, 7] = 2.0  # a user with a single item
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    split = leave_one_out_split(X, n_negatives=50, random_state=0)
    assert isinstance(split, LeaveOneOutSplit)
    deg = np.diff(X.indptr)
    np.testing.assert_array_equal(split.users, np.flatnonzero(deg >= 2))
    assert split.users.dtype == split.test_items.dtype == split.negatives.dtype == np.int64
    assert split.negatives.shape == (split.users.size, 50)
    _check_canonical(split.train, X.shape)

    test = sp.csr_matrix(
        (np.asarray(X[split.users, split.test_items]).ravel(), (split.users, split.test_items)),
        shape=X.shape,
    ).astype(np.float32)
    test.sort_indices()
    _check_partition(X, split.train, test)
    Xd = X.toarray()
    for k, u in enumerate(split.users):
        assert Xd[u, split.test_items[k]] > 0
        negs = split.negatives[k]
        assert np.unique(negs).size == negs.size
        assert np.all(Xd[u, negs] == 0)
        assert np.all((negs >= 0) & (negs < X.shape[1]))

    cand = split.candidates
    assert cand.shape == (split.users.size, 51)
    np.testing.assert_array_equal(cand[:, 0], split.test_items)
    ex = split.exclude
    _check_canonical(ex, X.shape)
    assert ex.nnz == cand.size
    expected = {(u, i) for u, row in zip(split.users, cand, strict=True) for i in row}
    assert set(zip(*ex.nonzero(), strict=True)) == expected


def test_leave_one_out_latest_with_timestamps():
    X = _random_X()
    T = _timestamps(X)
    split = leave_one_out_split(X, T, n_negatives=10, random_state=0)
    Td = T.toarray()
    for u, item in zip(split.users, split.test_items, strict=True):
        row = X[u].indices
        assert (Td[u, item], item) == max((Td[u, i], i) for i in row)


def test_leave_one_out_dense_users_and_exact_count():
    # User 0 leaves exactly n_negatives free items (exact fallback path);
    # user 1 leaves few free items relative to n_items (high rejection rate).
    n_items = 200
    X = np.zeros((3, n_items))
    X[0, :190] = 1
    X[1, :170] = 1
    X[2, :5] = 1
    split = leave_one_out_split(sp.csr_matrix(X), n_negatives=10, random_state=1)
    assert sorted(split.negatives[0].tolist()) == list(range(190, 200))
    for k in range(3):
        negs = split.negatives[k]
        assert np.unique(negs).size == 10 and np.all(X[k, negs] == 0)


def test_leave_one_out_negatives_roughly_uniform():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0]]))
    counts = np.zeros(6)
    for seed in range(300):
        split = leave_one_out_split(X, n_negatives=2, random_state=seed)
        counts += np.bincount(split.negatives[0], minlength=6)
    assert counts[:2].sum() == 0
    assert np.all(np.abs(counts[2:] / 300 - 0.5) < 0.12)


def test_leave_one_out_reproducible():
    X = _random_X()
    a = leave_one_out_split(X, n_negatives=20, random_state=7)
    b = leave_one_out_split(X, n_negatives=20, random_state=7)
    c = leave_one_out_split(X, n_negatives=20, random_state=8)
    np.testing.assert_array_equal(a.test_items, b.test_items)
    np.testing.assert_array_equal(a.negatives, b.negatives)
    assert not np.array_equal(a.negatives, c.negatives)


def test_leave_one_out_errors_and_input_untouched():
    X = _random_X(n_items=30, density=0.3)
    before = X.copy()
    with pytest.raises(ValueError, match="at least n_negatives=25 items it never interacted"):
        leave_one_out_split(X, n_negatives=25)
    with pytest.raises(ValueError, match="n_negatives must be an integer >= 1"):
        leave_one_out_split(X, n_negatives=0)
    T = _timestamps(_random_X(n_items=30, density=0.3, seed=9))
    with pytest.raises(ValueError, match="sparsity pattern"):
        leave_one_out_split(X, T, n_negatives=1)
    leave_one_out_split(X, n_negatives=1, random_state=0)
    assert (X != before).nnz == 0


# -- train_test_split_users --------------------------------------------------


def test_train_test_split_users():
    X = _random_X(n_users=50)
    X = sp.lil_matrix(X)
    X[10] = 0  # inactive user is excluded
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    tr, te = train_test_split_users(X, 0.2, random_state=0)
    active = np.flatnonzero(X.getnnz(axis=1))
    assert tr.dtype == te.dtype == np.int64
    assert te.size == round(0.2 * active.size)
    assert not set(tr) & set(te)
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), active)
    tr2, te2 = train_test_split_users(X, 0.2, random_state=0)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, train_test_split_users(X, 0.2, random_state=1)[1])
    with pytest.raises(ValueError, match=r"test_size must be in \(0, 1\)"):
        train_test_split_users(X, 1.0)
    with pytest.raises(ValueError, match="at least 2 users"):
        train_test_split_users(sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 0.0]])))
