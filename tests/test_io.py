"""Model files (sparse_rec._io): exact round trips, compact storage, damaged and hostile files.

Hostile files are built here with zipfile, hashlib and numpy's ``.npy``
writer following the format spec in ``docs/user_guide/model_files.rst``, an
implementation independent of ``_io``'s own writer.
"""

import hashlib
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse as sp

import sparse_rec
from sparse_rec import DSLMatrixFactorization
from sparse_rec._io import FORMAT_NAME, FORMAT_VERSION, _encode_params, load, save_model
from sparse_rec._table import SparseEmbeddingTable
from sparse_rec.datasets import make_interactions
from sparse_rec.exceptions import NotFittedError

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[1]
ATTRS = ("user_table_", "item_table_", "item_bias_", "seen_", "n_users_", "n_items_",
         "n_features_in_", "n_active_", "nbytes_", "dense_nbytes_", "n_iter_", "history_")


def fit_small(n_users=40, n_items=25, nnz=400, **kw):
    X = make_interactions(n_users, n_items, nnz, random_state=0)
    params = dict(n_components=8, density=0.5, max_iter=4, update_interval=2, random_state=0,
                  n_threads=1)
    params.update(kw)
    return DSLMatrixFactorization(**params).fit(X), X


@pytest.fixture(scope="module")
def fitted():
    return fit_small()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """The smallest useful model file (the byte-flip test loads it once per byte)."""
    mf, _ = fit_small(12, 8, 50, n_components=4, max_iter=1)
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    save_model(mf, path)
    return path


# --- an independent reader/writer of the documented layout ---------------------------
def read_members(path):
    """``{entry: ndarray}`` of a model file, read with allow_pickle=True (trusted files only)."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            out[name[:-4]] = np.lib.format.read_array(io.BytesIO(zf.read(name)),
                                                      allow_pickle=True)
    return out


def json_of(arr):
    return json.loads(arr.tobytes().decode("utf-8"))


def documented_sha256(members):
    """SHA-256 as specified: the meta bytes, then per listed array: name, 0 byte, raw bytes."""
    h = hashlib.sha256(members["meta"].tobytes())
    for spec in json_of(members["meta"])["arrays"]:
        h.update(spec["name"].encode() + b"\0")
        h.update(np.ascontiguousarray(members[spec["name"]]).tobytes())
    return h.hexdigest()


def write_members(path, members, *, header=None, rehash=True):
    """Write ``members`` as a model archive; recompute the checksum unless told not to."""
    members = dict(members)
    if header is None:
        header = json_of(members["__header__"])
    if rehash:
        header = dict(header, sha256=documented_sha256(members))
    members["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in members.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=True)
            zf.writestr(name + ".npy", buf.getvalue())
    return path


def edited(src, dst, edit_meta=None, edit_arrays=None, **kw):
    members = read_members(src)
    meta = json_of(members["meta"])
    if edit_meta is not None:
        edit_meta(meta)
    if edit_arrays is not None:
        edit_arrays(members, meta)
    members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return write_members(dst, members, **kw)


def dense(table):
    """Weights of a SparseEmbeddingTable as a dense float64 matrix, from its CSR arrays."""
    out = np.zeros(table.shape)
    rows = np.repeat(np.arange(table.n_rows), np.diff(table.indptr))
    out[rows, table.indices.astype(np.int64)] = table.weights
    return out


def assert_same_model(a, b, users, n=10):
    for kw in ({}, {"filter_seen": False}, {"items": np.arange(0, a.n_items_, 2)}):
        ra, rb = a.recommend(users, n=n, **kw), b.recommend(users, n=n, **kw)
        np.testing.assert_array_equal(ra[0], rb[0])
        np.testing.assert_array_equal(ra[1], rb[1])
    cand = np.tile(np.arange(a.n_items_), (len(users), 1))
    np.testing.assert_array_equal(a.score_items(users, cand), b.score_items(users, cand))
    for x, y in zip(a.similar_items(np.arange(5), n=4), b.similar_items(np.arange(5), n=4),
                    strict=True):
        np.testing.assert_array_equal(x, y)


# --- round trips -----------------------------------------------------------------------
def test_round_trip_is_exact(fitted, tmp_path):
    mf, X = fitted
    loaded = load(save_model(mf, tmp_path / "m.npz"))
    assert type(loaded) is DSLMatrixFactorization
    assert loaded.get_params() == mf.get_params()
    for name in ("user_table_", "item_table_"):
        a, b = getattr(mf, name), getattr(loaded, name)
        assert b.shape == a.shape
        for x, y in ((a.indptr, b.indptr), (a.indices, b.indices), (a.weights, b.weights)):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        b.check()
    assert loaded.item_bias_.dtype == mf.item_bias_.dtype
    np.testing.assert_array_equal(loaded.item_bias_, mf.item_bias_)
    assert type(loaded.seen_) is type(mf.seen_) and loaded.seen_.shape == mf.seen_.shape
    for part in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(loaded.seen_, part), getattr(mf.seen_, part))
    assert loaded.seen_.dtype == mf.seen_.dtype
    for name in ATTRS[4:]:
        assert getattr(loaded, name) == getattr(mf, name), name
    assert_same_model(mf, loaded, np.arange(X.shape[0]))
    if hasattr(mf, "recommend_for_history"):
        ra, rb = mf.recommend_for_history(X[:5], n=5), loaded.recommend_for_history(X[:5], n=5)
        np.testing.assert_array_equal(ra[0], rb[0])
        np.testing.assert_array_equal(ra[1], rb[1])


def test_same_model_gives_same_bytes_and_resaving_a_loaded_model_too(fitted, tmp_path):
    mf, _ = fitted
    a = save_model(mf, tmp_path / "a.npz", item_ids=np.arange(mf.n_items_) * 10).read_bytes()
    b = save_model(mf, tmp_path / "b.npz", item_ids=np.arange(mf.n_items_) * 10).read_bytes()
    assert a == b
    # The loaded model's item_ids_ are saved again by default.
    c = save_model(load(tmp_path / "a.npz"), tmp_path / "c.npz").read_bytes()
    assert c == a


def test_file_is_a_plain_npz_without_object_arrays_and_the_documented_checksum(fitted, tmp_path):
    mf, _ = fitted
    path = save_model(mf, tmp_path / "m.npz", user_ids=[f"u{i}" for i in range(mf.n_users_)])
    with np.load(path, allow_pickle=False) as npz:  # would raise on an object array
        kinds = {k: npz[k].dtype.kind for k in npz.files}
    assert set(kinds.values()) <= set("biufU")
    members = read_members(path)
    header = json_of(members["__header__"])
    assert header["format"] == FORMAT_NAME and header["format_version"] == FORMAT_VERSION == 1
    assert header["sha256"] == documented_sha256(members)
    meta = json_of(members["meta"])
    assert meta["class"] == "DSLMatrixFactorization"
    assert meta["sparse_rec_version"] == sparse_rec.__version__
    assert meta["params"]["n_components"] == 8
    assert meta["attributes"]["user_table_"]["kind"] == "table"
    assert meta["attributes"]["seen_"]["kind"] == "csr"
    assert meta["attributes"]["history_"]["kind"] == "records"
    assert [a["name"] for a in meta["arrays"]] == [k for k in members
                                                  if k not in ("__header__", "meta")]
    # Only the active weights are stored: no optimiser slot, no spare capacity.
    assert members["user_table_.weights"].shape == (mf.user_table_.nnz,)
    # Rewriting the same contents with an independent writer still loads.
    edited(path, tmp_path / "again.npz")
    assert_same_model(mf, load(tmp_path / "again.npz"), np.arange(5))


def test_save_uses_the_class_list_of_saved_attributes(fitted, tmp_path, monkeypatch):
    mf, _ = fitted
    monkeypatch.setattr(DSLMatrixFactorization, "_saved_attributes", ATTRS[:6], raising=False)
    meta = json_of(read_members(save_model(mf, tmp_path / "m.npz"))["meta"])
    assert sorted(meta["attributes"]) == sorted(ATTRS[:6])


# --- raw ids -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["str", "int", "object-str"])
def test_raw_ids_round_trip_as_unicode_or_int64(fitted, tmp_path, kind):
    mf, _ = fitted
    if kind == "int":
        users = np.arange(mf.n_users_, dtype=np.int32) * 7 + 3
    else:
        users = [f"user-{i}-é" for i in range(mf.n_users_)]
        users = np.array(users, dtype=object) if kind == "object-str" else users
    items = np.arange(mf.n_items_)[::-1].astype(np.uint16)
    loaded = load(save_model(mf, tmp_path / "m.npz", user_ids=users, item_ids=items))
    assert loaded.user_ids_.dtype == (np.int64 if kind == "int" else np.dtype("<U9"))
    assert list(loaded.user_ids_) == list(users)
    assert loaded.item_ids_.dtype == np.int64
    np.testing.assert_array_equal(loaded.item_ids_, items)
    assert not hasattr(load(save_model(mf, tmp_path / "n.npz")), "user_ids_")


@pytest.mark.parametrize("ids, match", [
    (list(range(3)), "one raw id per user"),
    ([0] * 40, "unique"),
    (np.linspace(0, 1, 40), "integers or strings"),
    (np.arange(80).reshape(40, 2), "1-D"),
    ([b"x%d" % i for i in range(40)], "integers or strings"),
])
def test_bad_raw_ids_are_refused(fitted, tmp_path, ids, match):
    with pytest.raises(ValueError, match=match):
        save_model(fitted[0], tmp_path / "m.npz", user_ids=ids)
    assert not (tmp_path / "m.npz").exists()


# --- compact storage -------------------------------------------------------------------
def test_compact_is_smaller_and_only_rounds_weights_to_float16(fitted, tmp_path):
    mf, X = fitted
    full = save_model(mf, tmp_path / "full.npz")
    compact = save_model(mf, tmp_path / "compact.npz", compact=True)
    assert compact.stat().st_size < full.stat().st_size
    members = read_members(compact)
    assert members["user_table_.indices"].dtype == np.uint8  # n_components = 8 <= 256
    assert members["user_table_.weights"].dtype == np.float16
    assert members["user_table_.row_nnz"].dtype == np.uint8
    assert members["seen_.indices"].dtype == np.uint8  # 25 items
    assert "seen_.data" not in members  # binary interactions: all ones, not stored
    loaded = load(compact)
    for name in ("user_table_", "item_table_"):
        a, b = getattr(mf, name), getattr(loaded, name)
        np.testing.assert_array_equal(b.indptr, a.indptr)
        np.testing.assert_array_equal(b.indices, a.indices)
        assert b.indices.dtype == a.indices.dtype and b.weights.dtype == np.float32
        np.testing.assert_array_equal(b.weights, a.weights.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(loaded.item_bias_,
                                  mf.item_bias_.astype(np.float16).astype(np.float32))
    assert (loaded.seen_ != mf.seen_).nnz == 0
    # Scores: the loaded model's equal a NumPy reference on its own weights, and differ
    # from the full model's by at most float16 rounding (2**-11 relative per factor).
    users = np.arange(X.shape[0])
    cand = np.tile(np.arange(X.shape[1]), (len(users), 1))
    U, V = dense(loaded.user_table_), dense(loaded.item_table_)
    ref = U @ V.T + loaded.item_bias_
    np.testing.assert_allclose(loaded.score_items(users, cand), ref, rtol=1e-5, atol=1e-6)
    Uf, Vf = dense(mf.user_table_), dense(mf.item_table_)
    bound = 2.0**-10 * (np.abs(Uf) @ np.abs(Vf).T) + 2.0**-11 * np.abs(mf.item_bias_) + 1e-6
    diff = np.abs(loaded.score_items(users, cand) - mf.score_items(users, cand))
    assert np.all(diff <= bound)
    assert diff.max() > 0  # the rounding is real, so the bound is being tested


def test_compact_indices_widen_above_256_components(tmp_path):
    mf, _ = fit_small(10, 8, 40, n_components=300, density=0.1, max_iter=1)
    path = save_model(mf, tmp_path / "m.npz", compact=True)
    assert read_members(path)["item_table_.indices"].dtype == np.uint16
    loaded = load(path)
    np.testing.assert_array_equal(loaded.item_table_.indices, mf.item_table_.indices)


def test_compact_refuses_weights_beyond_float16(tmp_path):
    mf, _ = fit_small(10, 8, 40, max_iter=1)
    mf.item_table_.weights[0] = 1e6
    with pytest.raises(ValueError, match="float16.*compact=False"):
        save_model(mf, tmp_path / "m.npz", compact=True)
    save_model(mf, tmp_path / "m.npz")  # full storage keeps it
    assert load(tmp_path / "m.npz").item_table_.weights[0] == np.float32(1e6)


# --- damaged files -------------------------------------------------------------------------
def test_truncated_files_raise_value_error(tiny_file, tmp_path):
    data = tiny_file.read_bytes()
    cuts = sorted({0, 1, 3, 4, 30, len(data) // 2, len(data) - 22, len(data) - 1}
                  | set(range(0, len(data), 97)))
    for cut in cuts:
        bad = tmp_path / "cut.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|corrupted|not a sparse_rec model"):
            load(bad)


def test_every_flipped_byte_raises_value_error_or_loads_the_same_model(tiny_file, tmp_path):
    data = tiny_file.read_bytes()
    original = load(tiny_file)
    users = np.arange(original.n_users_)
    expected = original.recommend(users, n=8, filter_seen=False)
    # Bytes of the entries' compressed contents: a flip there must be refused, except
    # in a stream's last byte, whose trailing bits may only follow the end of the data.
    with zipfile.ZipFile(tiny_file) as zf:
        content = np.zeros(len(data), bool)
        for info in zf.infolist():
            n_name, n_extra = np.frombuffer(data[info.header_offset + 26:
                                                 info.header_offset + 30], "<u2")
            start = info.header_offset + 30 + int(n_name) + int(n_extra)
            content[start:start + info.compress_size - 1] = True
    assert content.sum() > len(data) / 4
    refused = 0
    bad = tmp_path / "flip.npz"
    for pos in range(len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        bad.write_bytes(flipped)
        try:
            model = load(bad)
        except ValueError:
            refused += 1
            continue
        # Only zip bookkeeping the reader does not use (timestamps, local copies of
        # sizes, bits after the end of a stream) may change unnoticed: the model must
        # then be the same. A flip inside a compressed stream can also be void (a
        # Huffman code length of a symbol the stream never uses): then every member
        # must inflate to the very same bytes.
        if content[pos]:
            with zipfile.ZipFile(tiny_file) as zf0, zipfile.ZipFile(bad) as zf1:
                for name in zf0.namelist():
                    assert zf0.read(name) == zf1.read(name), (
                        f"flip at byte {pos} changed entry {name} and was not detected")
        got = model.recommend(users, n=8, filter_seen=False)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    assert refused > content.sum()


def test_changed_contents_with_a_valid_zip_fail_the_checksum(fitted, tmp_path):
    path = save_model(fitted[0], tmp_path / "m.npz")

    def nudge(members, meta):
        w = members["item_bias_"].copy()
        w[0] += 1
        members["item_bias_"] = w

    edited(path, tmp_path / "bad.npz", edit_arrays=nudge, rehash=False)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load(tmp_path / "bad.npz")


# --- hostile files: nothing is ever unpickled ---------------------------------------------------
class Payload:
    """Unpickling this object creates the file ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_payload_really_runs_when_unpickled(tmp_path):
    # The check that the hostile-file tests below can fail.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("how", ["pickle", "joblib", "npz-object", "npy-object"])
def test_pickles_disguised_as_model_files_are_refused_without_running(tmp_path, how):
    marker = tmp_path / "ran"
    path = tmp_path / "model.npz"
    evil = {"model": Payload(marker)}
    if how == "pickle":
        path.write_bytes(pickle.dumps(evil))
    elif how == "joblib":
        joblib.dump(evil, path)
    elif how == "npz-object":
        np.savez(path, model=np.array([Payload(marker)], dtype=object))
    else:
        with open(path, "wb") as f:
            np.save(f, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle|not a sparse_rec model file|no __header__"):
        load(path)
    assert not marker.exists()


@pytest.mark.parametrize("declared", ["|O", "<f4"])
def test_object_array_inside_a_valid_model_file_is_refused(fitted, tmp_path, declared):
    marker = tmp_path / "ran"
    path = save_model(fitted[0], tmp_path / "m.npz")

    def inject(members, meta):
        members["item_bias_"] = np.array([Payload(marker)] * fitted[0].n_items_, dtype=object)
        for spec in meta["arrays"]:
            if spec["name"] == "item_bias_":
                spec["dtype"] = declared

    edited(path, tmp_path / "bad.npz", edit_arrays=inject)  # checksum recomputed
    with pytest.raises(ValueError, match="object arrays|pickle"):
        load(tmp_path / "bad.npz")
    assert not marker.exists()


# --- format checks ---------------------------------------------------------------------
def test_newer_format_version_asks_to_upgrade(fitted, tmp_path):
    path = save_model(fitted[0], tmp_path / "m.npz")
    members = read_members(path)
    header = dict(json_of(members["__header__"]), format_version=FORMAT_VERSION + 1)
    write_members(tmp_path / "new.npz", members, header=header)
    with pytest.raises(ValueError, match=r"version 2.*Upgrade sparse_rec"):
        load(tmp_path / "new.npz")
    write_members(tmp_path / "other.npz", members, header=dict(header, format="other"))
    with pytest.raises(ValueError, match="not a sparse_rec model file"):
        load(tmp_path / "other.npz")


def test_plain_npz_is_not_a_model_file(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.arange(3))
    with pytest.raises(ValueError, match="no __header__ entry"):
        load(tmp_path / "plain.npz")


def _set_attr(name, key, value):
    return lambda meta: meta["attributes"][name].__setitem__(key, value)


def _replace(name, fn):
    def edit(members, meta):
        members[name] = fn(members[name].copy())
    return edit


def _out_of_range(ind):
    ind[-1] = 200
    return ind


def _unsorted(ind):
    ind[0], ind[1] = ind[1], ind[0]
    return ind


def _non_finite(w):
    w[3] = np.inf
    return w


def _rename_attribute(meta):
    meta["attributes"]["_top_n"] = meta["attributes"].pop("n_iter_")


def _short_bias(members, meta):
    members["item_bias_"] = members["item_bias_"][:-1].copy()
    for spec in meta["arrays"]:
        if spec["name"] == "item_bias_":
            spec["shape"] = [spec["shape"][0] - 1]


def _extra_entry(members, meta):
    members["surprise"] = np.zeros(3)


def _other_class(meta):
    meta["class"] = "Pipeline"


@pytest.mark.parametrize("edit_meta, edit_arrays, match", [
    (None, _replace("user_table_.indices", _out_of_range), "outside"),
    (None, _replace("item_table_.indices", _unsorted), "not strictly increasing"),
    (None, _replace("seen_.indices", _out_of_range), "outside"),
    (None, _replace("user_table_.weights", _non_finite), "non-finite"),
    (None, _replace("seen_.indptr", lambda p: p[::-1].copy()), "indptr"),
    (None, _short_bias, "item_bias_ has shape"),
    (None, _extra_entry, "do not match the manifest"),
    (_rename_attribute, None, "not a fitted-attribute name"),
    (_other_class, None, "not a sparse_rec estimator"),
    (_set_attr("user_table_", "n_cols", 3), None, "outside"),
    (_set_attr("n_users_", "value", 39), None, "shape"),
    (_set_attr("user_table_", "kind", "pickle"), None, "unknown attribute kind"),
    (lambda meta: meta["arrays"][0].__setitem__("dtype", "|V8"), None, "dtype"),
])
def test_inconsistent_contents_are_refused_even_with_a_valid_checksum(
    fitted, tmp_path, edit_meta, edit_arrays, match
):
    path = save_model(fitted[0], tmp_path / "m.npz")
    edited(path, tmp_path / "bad.npz", edit_meta=edit_meta, edit_arrays=edit_arrays)
    with pytest.raises(ValueError, match=match):
        load(tmp_path / "bad.npz")


def test_unknown_attributes_and_parameters_are_ignored_with_a_warning(fitted, tmp_path):
    mf, _ = fitted
    path = save_model(mf, tmp_path / "m.npz")

    def add(meta):
        meta["attributes"]["later_attribute_"] = {"kind": "value", "value": 1}
        meta["params"]["later_param"] = 2

    edited(path, tmp_path / "later.npz", edit_meta=add)
    with pytest.warns(UserWarning, match="later_attribute_"), \
            pytest.warns(UserWarning, match="later_param"):
        loaded = load(tmp_path / "later.npz")
    assert not hasattr(loaded, "later_attribute_")
    assert_same_model(mf, loaded, np.arange(5))


# --- parameters -----------------------------------------------------------------------
def test_parameters_that_json_cannot_hold(tmp_path):
    mf, _ = fit_small(10, 8, 40, max_iter=1, random_state=np.random.default_rng(0))
    with pytest.warns(UserWarning, match="random_state"):
        path = save_model(mf, tmp_path / "m.npz")
    loaded = load(path)
    assert loaded.random_state is None
    assert json_of(read_members(path)["meta"])["dropped_params"] == ["random_state"]
    mf.set_params(alpha=object())
    with pytest.raises(ValueError, match="cannot save parameter alpha"):
        save_model(mf, tmp_path / "m2.npz")


def test_callbacks_are_stored_as_none(tmp_path):
    mf, _ = fit_small(10, 8, 40, max_iter=1, callbacks=[lambda est, row: False])
    with pytest.warns(UserWarning, match="callbacks"):
        loaded = load(save_model(mf, tmp_path / "m.npz"))
    assert loaded.callbacks is None


def test_tuple_parameters_keep_their_type():
    values, tuples, dropped = _encode_params(
        {"hidden_layer_sizes": (64, 32), "ids": [1, 2], "x": np.float64(0.5), "n": np.int32(3),
         "callbacks": (print,)})
    assert values == {"hidden_layer_sizes": [64, 32], "ids": [1, 2], "x": 0.5, "n": 3,
                      "callbacks": None}
    assert type(values["n"]) is int and tuples == ["hidden_layer_sizes"]
    assert dropped == ["callbacks"]


# --- what can be saved -------------------------------------------------------------------
def test_unfitted_and_foreign_estimators_are_refused(tmp_path):
    with pytest.raises(NotFittedError, match="not fitted"):
        save_model(DSLMatrixFactorization(), tmp_path / "m.npz")

    class Custom(DSLMatrixFactorization):
        pass

    from sklearn.decomposition import TruncatedSVD

    for est in (Custom(), TruncatedSVD()):
        with pytest.raises(TypeError, match="sparse_rec estimators only"):
            save_model(est, tmp_path / "m.npz")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.npz")


def test_failed_save_keeps_the_previous_file(fitted, tmp_path, monkeypatch):
    mf, _ = fitted
    path = save_model(mf, tmp_path / "m.npz")
    before = path.read_bytes()
    calls = []

    def broken(f, arr, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(f, arr, **kw)

    real = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(mf, path, compact=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_loaded_model_trains_further_with_warm_start(tmp_path):
    mf, X = fit_small(20, 12, 120, max_iter=2)
    loaded = load(save_model(mf, tmp_path / "m.npz"))
    loaded.set_params(warm_start=True, max_iter=2).fit(X)
    assert loaded.n_iter_ == 4 and loaded.n_active_ == mf.n_active_


# --- files written by earlier versions ----------------------------------------------------------
@pytest.mark.parametrize("version, key", [(1, "full"), (1, "compact")])
def test_fixture_files_of_earlier_versions_still_load(version, key):
    suffix = "" if key == "full" else "_compact"
    path = DATA / f"model_v{version}{suffix}.npz"
    assert json_of(read_members(path)["__header__"])["format_version"] == version
    model = load(path)
    with np.load(DATA / f"model_v{version}_expected.npz", allow_pickle=False) as exp:
        users, cand = exp["users"], exp["cand"]
        ids, scores = model.recommend(users, n=model.n_items_)
        np.testing.assert_array_equal(ids, exp[f"{key}_ids"])
        # Same weights, same kernels: scores agree to float32 rounding across compilers.
        # A score near zero is a cancelled sum of larger products, so its rounding
        # error is absolute (the products' scale), not relative to the score.
        np.testing.assert_allclose(scores, exp[f"{key}_scores"], rtol=1e-6, atol=1e-7)
        got = model.score_items(users, cand)
        np.testing.assert_allclose(got, exp[f"{key}_cand_scores"], rtol=1e-6, atol=1e-7)
    ref = dense(model.user_table_) @ dense(model.item_table_).T + model.item_bias_
    np.testing.assert_allclose(got, np.take_along_axis(ref, cand, axis=1), rtol=1e-5, atol=1e-6)
    assert list(model.user_ids_[:3]) == ["u0", "u1", "u2"]
    np.testing.assert_array_equal(model.item_ids_, np.arange(1000, 1000 + model.n_items_))
    assert isinstance(model.user_table_, SparseEmbeddingTable) and sp.issparse(model.seen_)


def test_serving_needs_no_torch_implicit_or_dask():
    code = (
        "import sys\n"
        "from sparse_rec._io import load\n"
        f"m = load({str(DATA / 'model_v1.npz')!r})\n"
        "m.recommend([0, 1], n=3)\n"
        "print(sorted(k for k in ('torch', 'implicit', 'dask') if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# --- the estimator methods (added by the base class) ------------------------------------------
def test_estimator_save_and_package_load(fitted, tmp_path):
    mf, X = fitted
    mf.save(tmp_path / "m.npz", item_ids=np.arange(mf.n_items_) + 5, compact=False)
    loader = getattr(sparse_rec, "load", load)
    loaded = loader(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.item_ids_, np.arange(mf.n_items_) + 5)
    assert_same_model(mf, loaded, np.arange(X.shape[0]))
    mf.save(tmp_path / "c.npz", compact=True)
    assert (tmp_path / "c.npz").stat().st_size < (tmp_path / "m.npz").stat().st_size


@pytest.mark.parametrize("n_components", [None, 4])
def test_tables_of_other_widths_are_refused_before_any_kernel_runs(tmp_path, n_components):
    # A file whose user table is wider than its item table would make the
    # scoring kernels read out of bounds; it must fail at load.
    mf, _ = fit_small(20, 12, 120, n_components=4, max_iter=1)
    mf.user_table_ = SparseEmbeddingTable.random(20, 400, 2000, n_slots=1, seed=1)
    mf.n_components = n_components
    path = save_model(mf, tmp_path / "m.npz")
    with pytest.raises(ValueError):
        load(path)


def test_refit_of_a_loaded_model_drops_its_raw_ids(fitted, tmp_path):
    mf, X = fitted
    loaded = load(save_model(mf, tmp_path / "m.npz", user_ids=np.arange(mf.n_users_) + 7))
    assert loaded.user_ids_[0] == "7" or loaded.user_ids_[0] == 7
    loaded.fit(X)
    assert not hasattr(loaded, "user_ids_")
