"""Hardening (issue 16): one regression test per failure class, plus property tests.

Classes: malformed sparse input, duplicates summed in a narrow dtype,
unbounded allocation, concurrent saves, zip bombs, unvalidated loaded
values, CLI tracebacks, parameters validated as scikit-learn does.
"""

import os
import struct
import subprocess
import sys
import threading
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_io import edited, read_members, write_members

from sparse_rec import DSLNCF, DSLMatrixFactorization
from sparse_rec._io import load, save_model
from sparse_rec._validation import check_interactions, check_random_seed
from sparse_rec.cli import main
from sparse_rec.datasets import make_interactions
from sparse_rec.serving import load_model

ROOT = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def small_mf(seed=0, **kw):
    X = make_interactions(30, 20, 250, random_state=0)
    params = dict(n_components=4, density=0.5, max_iter=2, random_state=seed, n_threads=1)
    params.update(kw)
    return DSLMatrixFactorization(**params).fit(X), X


@pytest.fixture(scope="module")
def mf():
    return small_mf()


@pytest.fixture(scope="module")
def ncf():
    X = make_interactions(30, 20, 250, random_state=0)
    return DSLNCF(n_components=4, hidden_layer_sizes=(4,), density=0.5, max_iter=1,
                  random_state=0, n_threads=1).fit(X)


def corrupted(X, how):
    """A copy of CSR ``X`` whose raw arrays were edited as a careless user would."""
    A = X.copy()
    A.indices, A.indptr = A.indices.copy(), A.indptr.copy()
    if how == "index too large":
        A.indices[-1] = 10**6
    elif how == "negative index":
        A.indices[0] = -3
    elif how == "index equal to n_cols":
        A.indices[-1] = A.shape[1]
    elif how == "indptr too long":
        A.indptr = np.append(A.indptr, A.indptr[-1])
    elif how == "indptr decreasing":
        A.indptr[1] = A.indptr[2] + 1
    elif how == "indptr beyond indices":
        A.indptr[-1] = A.indices.shape[0] + 10
    return A


MALFORMED = ["index too large", "negative index", "index equal to n_cols", "indptr too long",
             "indptr decreasing", "indptr beyond indices"]


# --- class 1: malformed sparse input never reaches scipy's C code or a kernel ----------
@pytest.mark.parametrize("how", MALFORMED)
def test_malformed_csr_is_refused_everywhere_it_enters(mf, how):
    model, X = mf
    bad = corrupted(X, how)
    with pytest.raises(ValueError, match="malformed"):
        check_interactions(bad)
    with pytest.raises(ValueError, match="malformed"):
        DSLMatrixFactorization(max_iter=1, n_threads=1).fit(bad)
    with pytest.raises(ValueError, match="malformed"):
        DSLMatrixFactorization(max_iter=1, n_threads=1).fit(X, exclude=bad)
    with pytest.raises(ValueError, match="malformed"):
        model.recommend_for_history(bad)
    rows = np.arange(X.shape[0])
    with pytest.raises(ValueError, match="malformed"):
        model.recommend(rows, filter_seen=bad)
    with pytest.raises(ValueError, match="malformed"):
        model.recommend_for_history(X, filter_seen=bad)


def test_malformed_coo_csc_and_bsr_are_refused(mf):
    _, X = mf
    C = X.tocoo()
    C.col = C.col.copy()
    C.col[0] = -1
    with pytest.raises(ValueError, match="malformed"):
        check_interactions(C)
    K = X.tocsc()
    K.indices = K.indices.copy()
    K.indices[-1] = 10**6
    with pytest.raises(ValueError, match="malformed"):
        check_interactions(K)
    B = sp.bsr_matrix(X.toarray()[:30, :20], blocksize=(2, 2))
    B.indices = B.indices.copy()
    B.indices[0] = 99
    with pytest.raises(ValueError, match="malformed"):
        check_interactions(B)


def test_negative_filter_index_no_longer_wraps_around(mf):
    model, X = mf
    E = sp.csr_matrix((np.ones(1), np.array([-1]), np.array([0, 1])), shape=(1, X.shape[1]))
    with pytest.raises(ValueError, match="outside"):
        model.recommend([0], filter_seen=E)


# --- class 2: duplicates summed in a wide dtype, after no narrow overflow ---------------
@pytest.mark.parametrize("dtype, values, expected", [
    (np.int8, [100, 100], 200.0),
    (np.uint8, [200, 200], 400.0),
    (np.int64, [2**62, 2**62], 2.0**63),
    (np.int16, [30000, 30000], 60000.0),
])
def test_duplicates_are_summed_without_wrapping(dtype, values, expected):
    rows, cols = np.zeros(len(values), int), np.ones(len(values), int)
    data = np.array(values, dtype)
    for X in (sp.coo_matrix((data, (rows, cols)), shape=(2, 3)),
              sp.csr_matrix((data, np.ones(2, np.int32), np.array([0, 2, 2])), shape=(2, 3))):
        out = check_interactions(X)
        assert out.nnz == 1 and out.dtype == np.float32
        assert out[0, 1] == np.float32(expected)


def test_weights_rounding_to_zero_in_float32_are_refused_not_dropped():
    with pytest.raises(ValueError, match="round to zero"):
        check_interactions(sp.csr_matrix(np.array([[1e-50, 1.0]])))


def test_large_weights_are_scaled_without_overflow():
    from sparse_rec._base import TrainData

    X = check_interactions(np.array([[3e38, 0, 3e38], [0, 3e38, 0]], np.float32))
    np.testing.assert_array_equal(TrainData.from_matrix(X).x_weight, np.ones(3, np.float32))


def test_sums_beyond_float32_are_refused_not_made_inf():
    X = sp.coo_matrix((np.array([3e38, 3e38]), ([0, 0], [1, 1])), shape=(2, 2))
    with pytest.raises(ValueError, match="float32"):
        check_interactions(X)
    with pytest.raises(ValueError, match="float32"):
        check_interactions(np.array([[1e39, 0.0]]))


# --- class 3: no unbounded allocation --------------------------------------------------
def test_huge_n_is_clipped_to_the_candidates(mf):
    model, X = mf
    ids, scores = model.recommend([0], n=10**10)
    assert ids.shape == scores.shape == (1, model.n_items_)
    ids, _ = model.similar_items([0, 1], n=10**12)
    assert ids.shape == (2, model.n_items_ - 1) and 0 not in ids[0]
    ids, _ = model.recommend_for_history(X[:2], n=2**62)
    assert ids.shape == (2, model.n_items_)
    # Clipping keeps the ranking: the first columns are those of a small n.
    np.testing.assert_array_equal(model.recommend([0], n=10**10)[0][:, :5],
                                  model.recommend([0], n=5)[0])


# --- class 4: concurrent saves to one path ---------------------------------------------
def test_concurrent_saves_leave_one_complete_file(tmp_path):
    models = [small_mf(seed)[0] for seed in range(4)]
    path = tmp_path / "m.npz"
    errors = []

    def work(m):
        try:
            for _ in range(5):
                save_model(m, path)
        except Exception as e:  # noqa: BLE001 - any failure is reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    loaded = load(path)
    top = loaded.recommend([0, 1], n=5)[0]
    assert any(np.array_equal(top, m.recommend([0, 1], n=5)[0]) for m in models)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# --- class 5: zip bombs ----------------------------------------------------------------
def _bomb(path, inflated, declared):
    """A zip whose __header__ member inflates to ``inflated`` bytes but declares ``declared``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("__header__.npy", b"\0" * inflated)
    data = bytearray(path.read_bytes())
    # Uncompressed size: offset 22 of the local header, offset 24 of the central one.
    data[22:26] = struct.pack("<I", declared)
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = struct.pack("<I", declared)
    path.write_bytes(bytes(data))
    return path


def test_a_member_inflating_beyond_its_declared_size_is_stopped_early(tmp_path):
    path = _bomb(tmp_path / "bomb.npz", 256 << 20, 1000)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20  # a full inflation would take 256 MiB


def test_forged_ratios_and_the_global_cap_are_refused(mf, tmp_path):
    with pytest.raises(ValueError, match="forged"):
        load(_bomb(tmp_path / "ratio.npz", 1000, 60 << 20))
    path = save_model(mf[0], tmp_path / "m.npz")
    with pytest.raises(ValueError, match="max_bytes"):
        load(path, max_bytes=2000)
    assert load(path, max_bytes=10 << 20).n_items_ == mf[0].n_items_
    # serving takes the same cap
    with pytest.raises(ValueError, match="max_bytes"):
        load_model(path, max_bytes=2000)
    assert load_model(path, max_bytes=10 << 20).n_items_ == mf[0].n_items_


# --- class 6: loaded values validated ------------------------------------------------
def _set_param(key, value):
    return lambda meta: meta["params"].__setitem__(key, value)


def _poison(name, value=np.nan):
    def edit(members, meta):
        arr = members[name].copy()
        arr.reshape(-1)[0] = value
        members[name] = arr
    return edit


@pytest.mark.parametrize("edit_meta, edit_arrays, match", [
    (None, _poison("item_bias_"), "NaN or infinite"),
    (None, _poison("item_bias_", np.inf), "NaN or infinite"),
    (_set_param("n_threads", "abc"), None, "n_threads"),
    (_set_param("learning_rate", "abc"), None, "learning_rate"),
    (_set_param("learning_rate", True), None, "learning_rate"),
    (_set_param("alpha", -1.0), None, "alpha"),
    (_set_param("n_components", 0), None, "n_components"),
    (lambda meta: meta.__setitem__("class", "DSLNCF"), None, "does not match"),
    (lambda meta: meta.__setitem__("class", "ImplicitRecommender"), None, "does not match"),
])
def test_loaded_values_are_validated(mf, tmp_path, edit_meta, edit_arrays, match):
    path = save_model(mf[0], tmp_path / "m.npz")
    edited(path, tmp_path / "bad.npz", edit_meta=edit_meta, edit_arrays=edit_arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match):
            load(tmp_path / "bad.npz")


@pytest.mark.parametrize("edit_meta, edit_arrays, match", [
    (None, _poison("intercepts_"), "NaN or infinite"),
    (None, _poison("fusion_weights_", -np.inf), "NaN or infinite"),
    (lambda meta: meta["attributes"]["fusion_bias_"].__setitem__("value", float("nan")), None,
     "NaN or infinite"),
    (_set_param("n_negatives", 10**9), None, "n_negatives"),
    (_set_param("hidden_layer_sizes", "x"), None, "hidden_layer_sizes"),
])
def test_loaded_ncf_values_are_validated(ncf, tmp_path, edit_meta, edit_arrays, match):
    from sparse_rec.serving import load_model

    path = save_model(ncf, tmp_path / "m.npz")
    edited(path, tmp_path / "bad.npz", edit_meta=edit_meta, edit_arrays=edit_arrays)
    with pytest.raises(ValueError, match=match):
        load(tmp_path / "bad.npz")
    if "hidden" not in match:  # served models keep parameters but check what they use
        with pytest.raises(ValueError, match=match):
            load_model(tmp_path / "bad.npz")


def test_deeply_nested_json_is_refused_without_recursion_error(mf, tmp_path):
    path = save_model(mf[0], tmp_path / "m.npz")

    def nest(members, meta):
        text = "[" * 100_000 + "]" * 100_000
        members["history_.json"] = np.frombuffer(text.encode(), np.uint8)
        for spec in meta["arrays"]:
            if spec["name"] == "history_.json":
                spec["shape"] = [len(text)]

    edited(path, tmp_path / "deep.npz", edit_arrays=nest)
    with pytest.raises(ValueError, match="nests JSON"):
        load(tmp_path / "deep.npz")


# --- class 7: the CLI never shows a traceback for a user error ------------------------
@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "m.npz"
    assert main(["fit", "--epochs", "1", "--quiet", "--n-components", "8",
                 "--output", str(path), "--threads", "1"]) == 0
    return path


@pytest.fixture(scope="module")
def model_without_ids(tmp_path_factory, mf):
    return save_model(mf[0], tmp_path_factory.mktemp("noids") / "m.npz")


def assert_user_error(argv, capsys, match=None):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    if match:
        assert match in lines[0], lines[0]
    return captured


def test_cli_user_errors_exit_2_with_one_line(cli_model, model_without_ids, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        (["evaluate", "--model", str(folder)], "is a folder"),
        (["recommend", "1", "--model", str(folder)], "is a folder"),
        (["evaluate", "--model", str(tmp_path / "none.npz")], "no such file"),
        (["evaluate", "--model", str(cli_model), "--data", str(cli_model)], "is a file"),
        (["recommend", "1", "--model", str(cli_model), "-n", "0"], "-n"),
        (["recommend", "1", "--model", str(model_without_ids)], None),
        (["recommend", "99999999999999999999999", "--model", str(model_without_ids)],
         "unknown user"),
        (["recommend", "abc", "--model", str(model_without_ids)], "unknown user"),
        (["recommend", "-1", "--model", str(model_without_ids)], "unknown user"),
        (["fit", "--seed", "-1"], "--seed"),
        (["fit", "--seed", str(2**64)], "--seed"),
        (["fit", "--density", "0"], "--density"),
        (["fit", "--threads", "0"], "--threads"),
        (["fit", "--test-size", "nan"], "--test-size"),
        (["evaluate", "--model", str(cli_model), "-k", "x"], "-k"),
        (["evaluate", "--model", str(cli_model), "-k", str(10**10)], "-k"),
    ]
    for argv, match in cases:
        if argv[1:2] == ["1"] and match is None:
            assert main(argv) == 0  # index 1 exists in a model without raw ids
            capsys.readouterr()
            continue
        assert_user_error(argv, capsys, match)


def test_cli_huge_n_recommends_every_item_once(cli_model, capsys):
    assert main(["recommend", "1", "--model", str(cli_model), "-n", "10000000000"]) == 0
    assert "user 1:" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["folder", "missing folder", "read-only folder"])
def test_cli_output_is_checked_before_training(tmp_path, capsys, where):
    out = tmp_path
    if where == "missing folder":
        out = tmp_path / "nope" / "m.npz"
    elif where == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "m.npz"
    captured = assert_user_error(["fit", "--quiet", "--epochs", "1", "--output", str(out)],
                                 capsys, "--output")
    assert "data:" not in captured.out  # refused before loading data or training


def test_cli_as_a_process_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sparse_rec.cli", "evaluate", "--model", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:")


# --- class 8: parameters --------------------------------------------------------------
@pytest.mark.parametrize("seed", [2**32 - 1, 2**63, 2**64 - 1, 10**40, np.uint64(2**64 - 1)])
def test_any_non_negative_seed_is_accepted_and_deterministic(seed):
    a = check_random_seed(seed)
    assert a == check_random_seed(seed) and 0 <= a < 2**62
    m1, _ = small_mf(seed=seed, max_iter=1)
    m2, _ = small_mf(seed=seed, max_iter=1)
    np.testing.assert_array_equal(m1.recommend([0], n=5)[0], m2.recommend([0], n=5)[0])


def test_small_seeds_keep_their_value():
    assert check_random_seed(12345) == 12345
    with pytest.raises(ValueError, match="non-negative"):
        check_random_seed(-1)


@pytest.mark.parametrize("param", ["learning_rate", "alpha", "n_threads", "tol", "update_ratio",
                                   "validation_fraction", "n_components", "density"])
def test_bools_are_not_numbers(param):
    X = make_interactions(10, 8, 40, random_state=0)
    with pytest.raises(ValueError, match=param):
        DSLMatrixFactorization(**{param: True}).fit(X)


def test_budget_zero_is_refused_and_below_one_per_row_warns():
    X = make_interactions(30, 20, 250, random_state=0)
    with pytest.raises(ValueError, match="budget of 0"):
        DSLMatrixFactorization(n_components=4, density=1e-6, max_iter=1).fit(X)
    with pytest.warns(UserWarning, match="embedding rows"):
        DSLMatrixFactorization(n_components=4, density=0.1, max_iter=1, n_threads=1).fit(X)


@pytest.mark.parametrize("make", [
    lambda: DSLMatrixFactorization(n_components=10**12, max_iter=1),
    lambda: DSLNCF(n_components=10**9, max_iter=1),
    lambda: DSLNCF(hidden_layer_sizes=(10**9,), max_iter=1),
])
def test_absurd_table_sizes_are_refused_before_allocating(make):
    X = make_interactions(30, 20, 250, random_state=0)
    with pytest.raises(ValueError, match="coordinates"):
        make().fit(X)


def test_absurd_n_negatives_is_refused():
    X = make_interactions(30, 20, 250, random_state=0)
    with pytest.raises(ValueError, match="n_negatives"):
        DSLNCF(n_negatives=10**9, max_iter=1).fit(X)


# --- property-based tests -------------------------------------------------------------
@st.composite
def raw_csr(draw):
    """CSR arrays of any structure, valid or not, over a small shape."""
    n_rows, n_cols = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    nnz = draw(st.integers(0, 12))
    indices = draw(st.lists(st.integers(-3, 7), min_size=nnz, max_size=nnz))
    cuts = sorted(draw(st.lists(st.integers(-1, nnz + 1), min_size=max(n_rows - 1, 0),
                                max_size=max(n_rows - 1, 0))))
    indptr = [0] + cuts + [nnz] if n_rows else [0]
    if draw(st.booleans()):  # shuffle: indptr may decrease
        indptr = draw(st.permutations(indptr))
    dtype = draw(st.sampled_from([np.int8, np.uint8, np.int64, np.float32, np.float64]))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (0, int(info.max)) if info else (0.0, 1e38)
    values = draw(st.lists(st.integers(lo, hi) if info else st.floats(lo, hi), min_size=nnz,
                           max_size=nnz))
    return n_rows, n_cols, np.array(indptr), np.array(indices, np.int64), np.array(values, dtype)


def reference(n_rows, n_cols, indptr, indices, values):
    """Dense float64 sums of a structurally valid CSR, by plain Python loops."""
    out = np.zeros((n_rows, n_cols))
    for r in range(n_rows):
        for p in range(indptr[r], indptr[r + 1]):
            out[r, indices[p]] += float(values[p])
    return out


@FAST
@given(raw_csr())
def test_check_interactions_either_refuses_or_sums_exactly(case):
    n_rows, n_cols, indptr, indices, values = case
    A = sp.csr_matrix((n_rows, n_cols), dtype=values.dtype)
    A.indptr, A.indices, A.data = indptr.astype(np.int32), indices.astype(np.int32), values
    valid = (len(indptr) == n_rows + 1 and indptr[0] == 0 and np.all(np.diff(indptr) >= 0)
             and indptr[-1] <= len(indices)
             and np.all((indices[:indptr[-1]] >= 0) & (indices[:indptr[-1]] < n_cols)))
    if not valid:
        with pytest.raises(ValueError, match="malformed"):
            check_interactions(A, allow_empty=True)
        return
    ref = reference(n_rows, n_cols, indptr, indices, values)
    if ref.max(initial=0) > np.finfo(np.float32).max:
        with pytest.raises(ValueError, match="float32"):
            check_interactions(A, allow_empty=True)
        return
    out = check_interactions(A, allow_empty=True)
    assert out.dtype == np.float32 and out.has_canonical_format
    assert np.all(out.data != 0)
    np.testing.assert_array_equal(out.toarray(), ref.astype(np.float32))


@FAST
@given(st.one_of(st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                 st.text(max_size=3), st.none()))
def test_seed_validator_accepts_exactly_non_negative_ints_and_none(value):
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    if ok:
        assert 0 <= check_random_seed(value) < 2**62
    else:
        with pytest.raises(ValueError, match="random_state"):
            check_random_seed(value)


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory):
    mf, _ = small_mf(max_iter=1)
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    save_model(mf, path)
    return path.read_bytes(), mf


@FAST
@given(data=st.data())
def test_loader_refuses_or_reproduces_any_truncated_or_flipped_file(tiny_bytes, tmp_path, data):
    raw, model = tiny_bytes
    blob = bytearray(raw)
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob) - 1)))
    if cut is not None:
        del blob[cut:]
    for pos in data.draw(st.lists(st.integers(0, max(len(blob) - 1, 0)), max_size=4)):
        if blob:
            blob[pos] ^= data.draw(st.integers(1, 255))
    path = tmp_path / f"f{data.draw(st.integers(0, 10**9))}.npz"
    path.write_bytes(bytes(blob))
    try:
        loaded = load(path)
    except ValueError:
        return
    np.testing.assert_array_equal(loaded.recommend([0, 1], n=5)[0],
                                  model.recommend([0, 1], n=5)[0])


MEMBERS = ["item_bias_", "seen_.indptr", "seen_.indices", "user_table_.indptr",
           "user_table_.indices", "user_table_.weights", "item_table_.indices"]


@FAST
@given(data=st.data())
def test_loader_refuses_crafted_members_with_a_valid_checksum(tiny_bytes, tmp_path, data):
    raw, model = tiny_bytes
    src = tmp_path / "src.npz"
    src.write_bytes(raw)
    members = read_members(src)
    name = data.draw(st.sampled_from(MEMBERS))
    arr = members[name].copy()
    flat = arr.reshape(-1)
    i = data.draw(st.integers(0, flat.size - 1))
    if flat.dtype.kind == "f":
        flat[i] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    else:
        info = np.iinfo(flat.dtype)
        flat[i] = data.draw(st.integers(int(info.min), int(info.max)))
    members[name] = arr
    bad = write_members(tmp_path / "bad.npz", members)
    try:
        loaded = load(bad)
    except ValueError:
        return
    # Accepted only when still a consistent model: every kernel path must run.
    loaded.recommend(np.arange(loaded.n_users_), n=3)
    loaded.recommend_for_history(model.seen_[:3], n=3)
    loaded.similar_items([0], n=3)


ARGS = st.sampled_from(["--seed", "-n", "-k", "--test-size", "--data", "--model", "--density",
                        "--threads", "0", "-1", "1", "2.5", "abc", "1e400", "nan", "",
                        str(2**64), "/", "/nonexistent", "--bogus"])


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from(["recommend", "evaluate"]), extra=st.lists(ARGS, max_size=5))
def test_cli_never_shows_a_traceback(cli_model, capsys, cmd, extra):
    argv = [cmd] + (["1"] if cmd == "recommend" else []) + ["--model", str(cli_model)] + extra
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc in (0, 2), captured
    assert "Traceback" not in captured.err
    if rc == 2:
        assert len(captured.err.strip().splitlines()) == 1, captured.err


ANY_VALUE = st.one_of(st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=3), st.none(), st.just(np.bool_(True)),
                      st.integers(-5, 5).map(np.int64), st.floats(-5, 5).map(np.float32))


@FAST
@given(ANY_VALUE)
def test_number_validators_refuse_bools_and_accept_exactly_their_range(value):
    from sparse_rec._validation import check_n_threads, check_positive_int, check_real

    is_bool = isinstance(value, (bool, np.bool_))
    is_int = isinstance(value, (int, np.integer)) and not is_bool
    is_real = (is_int or isinstance(value, (float, np.floating))) and not is_bool
    cases = [
        (lambda: check_positive_int(value, "p"), is_int and value >= 1),
        (lambda: check_real(value, "r", low=0, low_open=True),
         is_real and (is_int or np.isfinite(value)) and value > 0),
        (lambda: check_n_threads(value), value is None or (is_int and (value >= 1 or value == -1))),
    ]
    for call, ok in cases:
        if ok:
            call()
        else:
            with pytest.raises(ValueError):
                call()


@FAST
@given(st.lists(st.one_of(st.integers(-2**65, 2**65), st.floats(allow_nan=True)), max_size=6),
       st.integers(1, 50))
def test_check_ids_returns_exactly_the_valid_ids_or_refuses(ids, n):
    from sparse_rec._validation import check_ids

    valid = all(float(v).is_integer() and 0 <= v < n for v in ids
                if not (isinstance(v, float) and not np.isfinite(v))) and all(
        not (isinstance(v, float) and not np.isfinite(v)) for v in ids)
    arr = np.array(ids, dtype=object)
    try:
        as_array = np.asarray(arr.tolist()) if ids else np.zeros(0, np.int64)
    except OverflowError:
        as_array = arr
    if valid:
        out = check_ids(as_array, n)
        assert out.dtype == np.int64 and out.tolist() == [int(v) for v in ids]
    else:
        with pytest.raises(ValueError):
            check_ids(as_array, n)


@pytest.mark.parametrize("how", MALFORMED)
def test_transformers_and_splitters_refuse_malformed_input(mf, how):
    from sparse_rec.model_selection import temporal_split
    from sparse_rec.preprocessing import BM25Weighting, LogScaling

    _, X = mf
    bad = corrupted(X, how)
    for transformer in (LogScaling(), BM25Weighting()):
        with pytest.raises(ValueError, match="malformed"):
            transformer.fit_transform(bad)
    with pytest.raises(ValueError, match="malformed"):
        temporal_split(X, bad)
