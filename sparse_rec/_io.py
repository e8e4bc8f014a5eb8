"""Model files: a fitted estimator in a versioned ``.npz`` archive, loaded without pickle.

The layout is specified in ``docs/user_guide/model_files.rst``. In short: a
zip archive of ``.npy`` members (so ``numpy.load(path, allow_pickle=False)``
can inspect it) holding

* ``__header__.npy``: UTF-8 JSON ``{"format", "format_version", "sha256"}``;
* ``meta.npy``: UTF-8 JSON with the class name, hyper-parameters, the
  attribute manifest and the list of arrays (name, dtype, shape) in a fixed
  order;
* one member per array of that list.

``sha256`` is the SHA-256 of the ``meta`` bytes followed, for each listed
array in order, by its UTF-8 name, a zero byte and its raw C-order bytes as
stored. Reading never unpickles: members are parsed as ``.npy`` by hand and
only boolean, integer, floating and unicode dtypes are accepted.
"""

import hashlib
import importlib
import io
import json
import lzma
import numbers
import os
import re
import struct
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import _registry
from ._table import SparseEmbeddingTable, _index_dtype
from ._validation import (
    canonical_rows,
    check_compressed,
    check_n_negatives,
    check_n_threads,
    check_positive_int,
    check_real,
)
from .exceptions import NotFittedError

__all__ = ["save_model", "load", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "sparse_rec.model"
# Bump on any change an older reader would misread; readers keep decoding
# every version up to their own.
FORMAT_VERSION = 1

_HEADER = "__header__"
_META = "meta"
_USER_IDS, _ITEM_IDS = "raw.user_ids", "raw.item_ids"

# Estimators a file may name (the model registry), looked up by class name: a
# file can never make ``load`` import or build anything else.
_ESTIMATORS = _registry.estimators()
# Parameters that cannot be stored as JSON but do not change a fitted model:
# they are saved as None and listed in the file's ``dropped_params``.
_DROPPABLE_PARAMS = ("callbacks", "random_state")

# Only these dtypes may appear in a file: no object, void or datetime arrays.
_DTYPE_RE = re.compile(r"^[<>|=](b1|i[1248]|u[1248]|f[248]|U[0-9]{1,6})$")
# Fitted-attribute names: lowercase, trailing underscore, no leading one, so
# a file cannot name a method or a dunder.
_ATTR_RE = re.compile(r"^[a-z][a-z0-9_]*_$")
# Largest ``.npy`` header ``numpy.lib.format`` writes for our arrays, with room.
_NPY_HEADER_MAX = 4096
_JSON_MEMBER_MAX = 64 << 20
# JSON nesting our files use is at most 4 deep; deeper input would only
# exhaust the parser's recursion.
_JSON_MAX_DEPTH = 16
# Loading inflates members in chunks of this size, so a member whose stream
# inflates beyond its declared size is stopped after one chunk.
_READ_CHUNK = 1 << 20
# Default cap on the bytes all members of one file may inflate to (see load).
MAX_LOAD_BYTES = 16 << 30
# Deflate cannot expand more than about 1032:1; a member declaring more is forged.
_MAX_DEFLATE_RATIO = 1100
# Errors that reading a damaged archive can raise inside zipfile, zlib, lzma,
# bz2 (OSError) and numpy's header parser: all mean "corrupted".
_DECODE_ERRORS = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, KeyError, ValueError,
    UnicodeError, NotImplementedError, RuntimeError, struct.error, OverflowError, IndexError,
    TypeError, SyntaxError,
)
_RESAVE = "Save the model again, or copy the file again if it was transferred."


class _FormatError(ValueError):
    """A file that is readable but not a valid model file (message is final)."""


def _fail(path, what):
    raise _FormatError(f"{path}: {what}")


# --- saving --------------------------------------------------------------------
def save_model(est, path, *, user_ids=None, item_ids=None, compact=False):
    """Write a fitted estimator to a model file (a versioned ``.npz``).

    Stores the class name, the hyper-parameters (``get_params``), the fitted
    attributes the class lists in ``_saved_attributes`` and, optionally, the
    raw ids of the users and items. Factor tables keep only their active
    weights (no optimiser state). The file is written to a temporary name and
    renamed, so an interrupted save never leaves a partial file at ``path``.

    Parameters
    ----------
    est : estimator
        A fitted sparse_rec estimator (``DSLMatrixFactorization``, ``DSLNCF``).
    path : str or os.PathLike
        Destination, written as given (``.npz`` is the conventional suffix).
    user_ids, item_ids : array-like of int or str, optional
        Raw id of each user row / item column, restored as ``user_ids_`` and
        ``item_ids_``. They must be unique, one per row (column). Default:
        the estimator's own ``user_ids_`` / ``item_ids_`` if it has them.
    compact : bool, default=False
        Store weights and float arrays as float16 (rounded, relative error at
        most 2**-11) and every index in the narrowest unsigned type (uint8
        column indices when ``n_components <= 256``). Indices, interaction
        patterns and raw ids stay exact. The loaded model computes in float32
        as usual.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    NotFittedError
        If ``est`` is not fitted.
    TypeError
        If ``est`` is not a sparse_rec estimator that ``load`` can rebuild.
    ValueError
        If a parameter is not JSON-able, raw ids are invalid, or a weight
        overflows float16 with ``compact=True``.

    See Also
    --------
    load : read the file back.

    Notes
    -----
    ``callbacks`` and a numpy ``Generator``/``RandomState`` given as
    ``random_state`` cannot be stored: they are saved as None (with a
    warning) and listed in the file's ``dropped_params``. They matter only
    for fitting again.

    Examples
    --------
    >>> import tempfile, os
    >>> import numpy as np
    >>> from sparse_rec import DSLMatrixFactorization
    >>> from sparse_rec._io import load, save_model
    >>> from sparse_rec.datasets import make_interactions
    >>> X = make_interactions(50, 30, 400, random_state=0)
    >>> mf = DSLMatrixFactorization(n_components=8, max_iter=3, random_state=0,
    ...                             n_threads=1).fit(X)
    >>> folder = tempfile.mkdtemp()
    >>> path = save_model(mf, os.path.join(folder, "model.npz"),
    ...                   item_ids=[f"movie{j}" for j in range(30)])
    >>> loaded = load(path)
    >>> ids, scores = loaded.recommend([0, 1], n=5)
    >>> bool(np.array_equal(ids, mf.recommend([0, 1], n=5)[0]))
    True
    >>> str(loaded.item_ids_[ids[0, 0]]).startswith("movie")
    True
    """
    cls_name = _check_saveable(est)
    names = _attribute_names(type(est))
    missing = [n for n in names if not hasattr(est, n)]
    if len(missing) == len(names):
        raise NotFittedError(
            f"This {cls_name} instance is not fitted yet; call fit before saving it."
        )
    if missing:
        raise ValueError(
            f"{cls_name} lists fitted attributes {missing} in _saved_attributes but the "
            "estimator lacks them; fit it again before saving."
        )
    params, tuples, dropped = _encode_params(est.get_params(deep=False))
    if dropped:
        warnings.warn(
            f"{cls_name}: parameters {dropped} cannot be stored in a model file and are saved "
            "as None; they only matter for fitting again.", UserWarning, stacklevel=2,
        )
    arrays = {}
    # A class may ask for its indices in the narrowest type even without
    # compact (exact: only index types change, restored on load).
    narrow = compact or getattr(type(est), "_narrow_indices", False)
    manifest = {name: _encode_attribute(name, getattr(est, name), arrays, compact, narrow)
                for name in names}
    raw_ids = {}
    for key, member, given, count in (
        ("user_ids", _USER_IDS, user_ids, getattr(est, "n_users_", None)),
        ("item_ids", _ITEM_IDS, item_ids, getattr(est, "n_items_", None)),
    ):
        if given is None:
            given = getattr(est, key + "_", None)
        if given is not None:
            arrays[member] = _check_raw_ids(given, key, count)
            raw_ids[key] = member
    meta = {
        "sparse_rec_version": _package_version(),
        "class": cls_name,
        "params": params,
        "tuple_params": tuples,
        "dropped_params": dropped,
        "compact": bool(compact),
        "attributes": manifest,
        "raw_ids": raw_ids,
        "arrays": [
            {"name": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()
        ],
    }
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    digest = _digest(meta_bytes, ((k, np.ascontiguousarray(a)) for k, a in arrays.items()))
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "sha256": digest}
    members = [(_HEADER, _json_bytes_array(header)),
               (_META, np.frombuffer(meta_bytes, np.uint8))]
    members += list(arrays.items())
    return _write_archive(Path(path), members)


def _check_saveable(est):
    name = type(est).__name__
    if name not in _ESTIMATORS or _estimator_class(name) is not type(est):
        known = ", ".join(sorted(_ESTIMATORS))
        raise TypeError(
            f"save_model stores sparse_rec estimators only ({known}); got "
            f"{type(est).__module__}.{type(est).__qualname__}. A subclass or another library's "
            "model cannot be rebuilt by load: use that library's own persistence."
        )
    return name


def _estimator_class(name, classes=_ESTIMATORS):
    module, attr = classes[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return None
    return getattr(mod, attr, None)


def _attribute_names(cls):
    return tuple(getattr(cls, "_saved_attributes", ()))


def _package_version():
    from . import __version__

    return __version__


def _json_scalar(value, what):
    """``value`` as a plain JSON scalar (numpy scalars converted), else TypeError."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{what} must be None, a bool, a number or a string; got {value!r}.")


def _encode_params(params):
    """``(values, tuple_names, dropped_names)`` of ``get_params()`` as JSON values."""
    values, tuples, dropped = {}, [], []
    for key in sorted(params):
        value = params[key]
        droppable = (bool(value) if key == "callbacks" else
                     value is not None and not isinstance(value, numbers.Integral))
        if key in _DROPPABLE_PARAMS and droppable:
            values[key] = None
            dropped.append(key)
            continue
        try:
            if isinstance(value, (tuple, list)):
                if isinstance(value, tuple):
                    tuples.append(key)
                values[key] = [_json_scalar(v, f"parameter {key}") for v in value]
            else:
                values[key] = _json_scalar(value, f"parameter {key}")
        except TypeError:
            raise ValueError(
                f"cannot save parameter {key}={value!r}: model files store parameters as JSON "
                "(None, bools, numbers, strings, or tuples/lists of those). Set it to such a "
                f"value first, e.g. est.set_params({key}=...)."
            ) from None
    return values, tuples, dropped


def _uint_for(max_value):
    for t in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(t).max:
            return np.dtype(t)
    return np.dtype(np.uint64)


def _to_float16(values, what):
    with np.errstate(over="ignore"):  # overflow is reported below, with a remedy
        out = np.asarray(values).astype(np.float16)
    if not np.all(np.isfinite(out)):
        raise ValueError(
            f"compact=True stores {what} as float16, whose largest magnitude is 65504; the "
            f"largest here is {float(np.max(np.abs(values))):g}. Save with compact=False."
        )
    return out


def _encode_rows(name, indptr, arrays, compact, n_cols):
    """Store the row structure; returns the manifest's ``rows`` field."""
    if compact:
        counts = np.diff(np.asarray(indptr, np.int64))
        arrays[f"{name}.row_nnz"] = counts.astype(_uint_for(max(n_cols, 1)))
        return "row_nnz"
    arrays[f"{name}.indptr"] = np.asarray(indptr)
    return "indptr"


def stored_nbytes(value, narrow=True):
    """Bytes of the arrays a model file stores for ``value`` (not compact).

    With ``narrow``, as for a class with ``_narrow_indices``: row counts and
    indices in the narrowest unsigned type, no values for a binary CSR.
    """
    arrays = {}
    _encode_attribute("x", value, arrays, False, narrow)
    return int(sum(a.nbytes for a in arrays.values()))


def _encode_attribute(name, value, arrays, compact, narrow=None):
    narrow = compact if narrow is None else narrow
    if isinstance(value, SparseEmbeddingTable):
        n_rows, n_cols = value.shape
        entry = {"kind": "table", "n_rows": n_rows, "n_cols": n_cols,
                 "weight_dtype": value.values_buf.dtype.str}
        entry["rows"] = _encode_rows(name, value.indptr, arrays, narrow, n_cols)
        ind, w = value.indices, value.weights
        arrays[f"{name}.indices"] = ind.astype(_uint_for(max(n_cols - 1, 0))) if narrow else ind
        arrays[f"{name}.weights"] = _to_float16(w, name) if compact else w
        return entry
    if sp.issparse(value):
        if value.format != "csr":
            raise TypeError(f"sparse attribute {name} must be CSR; got {value.format}.")
        if not value.has_canonical_format:
            value = value.copy()
            value.sum_duplicates()
        n_rows, n_cols = value.shape
        entry = {"kind": "csr", "n_rows": n_rows, "n_cols": n_cols,
                 "class": "csr_array" if isinstance(value, sp.sparray) else "csr_matrix",
                 "dtype": value.data.dtype.str, "index_dtype": value.indices.dtype.str,
                 "indptr_dtype": value.indptr.dtype.str}
        _check_stored_dtype(value.data.dtype, f"{name}.data")
        entry["rows"] = _encode_rows(name, value.indptr, arrays, narrow, n_cols)
        arrays[f"{name}.indices"] = (value.indices.astype(_uint_for(max(n_cols - 1, 0)))
                                     if narrow else value.indices)
        # Binary interactions (the usual case) need no values at all.
        if narrow and np.all(value.data == 1):
            entry["data"] = "ones"
        else:
            entry["data"] = "stored"
            arrays[f"{name}.data"] = value.data
        return entry
    if isinstance(value, np.ndarray):
        _check_stored_dtype(value.dtype, name)
        stored = value
        if compact and value.dtype.kind == "f":
            stored = _to_float16(value, name)
        arrays[name] = stored
        return {"kind": "array", "dtype": value.dtype.str}
    if isinstance(value, tuple):
        return {"kind": "tuple", "value": [_json_scalar(v, f"{name} items") for v in value]}
    if isinstance(value, list) and not any(isinstance(v, dict) for v in value):
        return {"kind": "list", "value": [_json_scalar(v, f"{name} items") for v in value]}
    if isinstance(value, list):
        records = []
        for row in value:
            if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
                raise TypeError(f"{name} must be a list of dicts with string keys.")
            records.append({k: _json_scalar(v, f"{name} values") for k, v in row.items()})
        text = json.dumps(records, separators=(",", ":")).encode("utf-8")
        arrays[f"{name}.json"] = np.frombuffer(text, np.uint8)
        return {"kind": "records"}
    try:
        return {"kind": "value", "value": _json_scalar(value, name)}
    except TypeError:
        raise TypeError(
            f"cannot store fitted attribute {name} of type {type(value).__name__}: model files "
            "hold tables, numeric or unicode arrays, CSR matrices, scalars, tuples and lists "
            "of dicts of scalars."
        ) from None


def _check_stored_dtype(dtype, what):
    if not _DTYPE_RE.match(np.dtype(dtype).str):
        raise TypeError(
            f"{what} has dtype {dtype}; model files store bool, integer, float and unicode "
            "arrays only."
        )


def _check_raw_ids(ids, what, count):
    arr = np.asarray(ids)
    if arr.dtype == object:
        if all(isinstance(v, str) for v in arr.ravel()):
            arr = arr.astype(str)
        elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr.ravel()):
            arr = arr.astype(np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D; got shape {arr.shape}.")
    if arr.dtype.kind in "iu":
        if arr.size and arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{what} must fit in int64; got a value above 2**63 - 1.")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind != "U":
        raise ValueError(
            f"{what} must hold integers or strings (one raw id per row); got dtype {arr.dtype}. "
            "Convert them, e.g. [str(v) for v in ids]."
        )
    if count is not None and len(arr) != count:
        raise ValueError(
            f"{what} must have one raw id per {'user' if what == 'user_ids' else 'item'} "
            f"({count}); got {len(arr)}."
        )
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"{what} must be unique; got {len(arr) - len(np.unique(arr))} repeats.")
    return arr


def _json_bytes_array(obj):
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode("utf-8"), np.uint8)


def _digest(meta_bytes, named_arrays):
    h = hashlib.sha256(meta_bytes)
    for name, payload in named_arrays:
        h.update(name.encode("utf-8") + b"\0")
        h.update(_raw_bytes(payload))
    return h.hexdigest()


def _raw_bytes(arr):
    """The array's C-order bytes as stored (a view, no copy)."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def _write_archive(path, members):
    """Write to a unique temporary file beside ``path``, fsync it, then rename.

    Concurrent saves to one path each use their own temporary file, so the
    last ``os.replace`` wins and ``path`` always holds one complete file.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "w+b") as raw:
            with zipfile.ZipFile(raw, "w") as zf:
                for name, arr in members:
                    # A fixed timestamp makes the same model give the same bytes.
                    info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with zf.open(info, "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, np.ascontiguousarray(arr),
                                                  allow_pickle=False)
            raw.flush()
            os.fsync(raw.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _read_umask():
    # os.umask can only be read by setting it: done once, at import.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(folder):
    """Make the rename durable where the platform allows it (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- loading -------------------------------------------------------------------
def load(path, *, max_bytes=None):
    """Read a model file written by :func:`save_model`; never unpickles.

    The archive, its format name and version, the SHA-256 checksum, every
    array's dtype and shape, the table and CSR invariants (rows sorted,
    indices in range) and the shapes of the attributes are checked before
    the estimator is returned. Only sparse_rec estimator classes can be
    named by a file, and only boolean, integer, float and unicode arrays are
    read, so an untrusted file cannot run code.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``save_model`` (or ``est.save``).
    max_bytes : int, optional
        Most bytes all the file's members may inflate to (default
        ``MAX_LOAD_BYTES``, 16 GiB). Members are inflated in 1 MiB chunks
        and a member is refused as soon as it exceeds its declared size, so
        a forged file ("zip bomb") never inflates past these bounds.

    Returns
    -------
    estimator
        Fitted, with the saved hyper-parameters and attributes, plus
        ``user_ids_`` / ``item_ids_`` when the file holds raw ids. Factor
        tables hold weights only: optimiser state restarts at zero if the
        model is trained further.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a sparse_rec model file (a pickle, another
        archive), is truncated or corrupted, fails its checksum, was written
        by a newer format version, or holds inconsistent arrays.

    Examples
    --------
    >>> import os, tempfile
    >>> from sparse_rec import DSLMatrixFactorization
    >>> from sparse_rec._io import load, save_model
    >>> from sparse_rec.datasets import make_interactions
    >>> X = make_interactions(40, 20, 300, random_state=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> _ = save_model(DSLMatrixFactorization(n_components=4, max_iter=2, random_state=0,
    ...                                       n_threads=1).fit(X), path)
    >>> model = load(path)
    >>> model.recommend([3], n=4)[0].shape
    (1, 4)
    >>> with open(path, "r+b") as f:   # damage one byte of the file
    ...     _ = f.seek(100); b = f.read(1); _ = f.seek(100); _ = f.write(bytes([b[0] ^ 1]))
    >>> try:
    ...     load(path)
    ... except ValueError as e:
    ...     print("refused")
    refused
    """
    return _load(path, max_bytes=max_bytes)


def _load(path, classes=None, max_bytes=None):
    path = Path(path)
    cap = MAX_LOAD_BYTES if max_bytes is None else check_positive_int(max_bytes, "max_bytes")
    with open(path, "rb") as f:
        start = f.read(4)
        if start != b"PK\x03\x04":
            raise ValueError(_not_a_model_message(path, start))
        f.seek(0)
        try:
            header, meta, arrays = _read_archive(f, path, [cap])
        except _FormatError:
            raise
        except _DECODE_ERRORS as e:
            raise ValueError(
                f"{path}: the model file is truncated or corrupted ({type(e).__name__}: {e}). "
                + _RESAVE
            ) from e
    try:
        return _build(meta, arrays, path, classes)
    except _FormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise ValueError(
            f"{path}: the model file passed its checksum but its contents are inconsistent "
            f"({type(e).__name__}: {e}); it was not written by save_model. " + _RESAVE
        ) from e


def _not_a_model_message(path, start):
    if start[:1] == b"\x80" or start[:1] in (b"(", b"]", b"}"):
        kind = "it looks like a Python pickle (joblib or pickle dump), which is refused: "
        kind += "unpickling an untrusted file can run arbitrary code"
    elif start[:4] == b"\x93NUM":
        kind = "it is a single .npy array, not a model archive"
    elif len(start) < 4:
        kind = f"it is only {len(start)} bytes long (truncated or empty)"
    else:
        kind = "it is not a zip archive"
    return (
        f"{path} is not a sparse_rec model file: {kind}. Load files written by "
        "sparse_rec's save_model / est.save; re-save models kept as pickles with save_model."
    )


def _read_archive(f, path, budget):
    with zipfile.ZipFile(f) as zf:
        names = [i.filename for i in zf.infolist()]
        if len(set(names)) != len(names):
            _fail(path, "the archive holds the same entry twice; it was not written by save_model.")
        if _HEADER + ".npy" not in names:
            _fail(path, "there is no __header__ entry, so this is not a sparse_rec model file "
                        "(perhaps a plain .npz). Load files written by save_model.")
        header = _read_json(zf, _HEADER, path, budget)
        _check_header(header, path)
        meta_raw = _read_member(zf, _META, np.dtype(np.uint8), None, path, budget).tobytes()
        meta = _parse_json(meta_raw, _META, path)
        specs = _check_meta(meta, path)
        expected = {_HEADER + ".npy", _META + ".npy"} | {s[0] + ".npy" for s in specs}
        if set(names) != expected:
            extra, absent = sorted(set(names) - expected), sorted(expected - set(names))
            _fail(path, f"entries do not match the manifest (unexpected {extra}, missing "
                        f"{absent}). " + _RESAVE)
        arrays = {}
        h = hashlib.sha256(meta_raw)
        for name, dtype, shape in specs:
            arr = _read_member(zf, name, dtype, shape, path, budget)
            h.update(name.encode("utf-8") + b"\0")
            h.update(_raw_bytes(arr))
            arrays[name] = arr
    if h.hexdigest() != header["sha256"]:
        _fail(path, "checksum mismatch: the contents were changed after saving (corrupted or "
                    "edited). " + _RESAVE)
    return header, meta, arrays


def _parse_json(raw, name, path):
    """JSON from bytes, its nesting depth checked before the recursive parser runs."""
    text = raw.decode("utf-8")
    # Depth counted outside strings: brackets inside them do not nest.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text).encode("utf-8")
    b = np.frombuffer(bare, np.uint8)
    step = (np.isin(b, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(b, (ord("]"), ord("}"))))
    depth = int(np.cumsum(step).max()) if step.size else 0
    if depth > _JSON_MAX_DEPTH:
        _fail(path, f"entry {name} nests JSON {depth} levels deep; model files nest at most "
                    f"{_JSON_MAX_DEPTH}. " + _RESAVE)
    return json.loads(text)


def _read_json(zf, name, path, budget):
    raw = _read_member(zf, name, np.dtype(np.uint8), None, path, budget)
    obj = _parse_json(raw.tobytes(), name, path)
    if not isinstance(obj, dict):
        _fail(path, f"entry {name} is not a JSON object. " + _RESAVE)
    return obj


def _check_header(header, path):
    if header.get("format") != FORMAT_NAME:
        _fail(path, f"format is {header.get('format')!r}, not {FORMAT_NAME!r}; this is not a "
                    "sparse_rec model file.")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(path, f"invalid format_version {version!r}. " + _RESAVE)
    if version > FORMAT_VERSION:
        _fail(path, f"the file uses model format version {version}, newer than the version "
                    f"{FORMAT_VERSION} this sparse_rec ({_package_version()}) reads. Upgrade "
                    "sparse_rec (pip install -U sparse-rec) to load it.")
    digest = header.get("sha256")
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        _fail(path, "the header has no valid sha256 checksum. " + _RESAVE)


def _check_meta(meta, path):
    """Validate the structure of ``meta``; return ``[(name, dtype, shape)]``."""
    if not isinstance(meta, dict):
        _fail(path, "meta is not a JSON object. " + _RESAVE)
    for key, typ in (("class", str), ("params", dict), ("tuple_params", list),
                     ("attributes", dict), ("raw_ids", dict), ("arrays", list)):
        if not isinstance(meta.get(key), typ):
            _fail(path, f"meta field {key!r} is missing or not a {typ.__name__}. " + _RESAVE)
    specs = []
    for spec in meta["arrays"]:
        ok = (isinstance(spec, dict) and isinstance(spec.get("name"), str)
              and isinstance(spec.get("dtype"), str) and isinstance(spec.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                      for d in spec["shape"]))
        if not ok:
            _fail(path, f"invalid array entry {spec!r} in meta. " + _RESAVE)
        specs.append((spec["name"], _parse_dtype(spec["dtype"], spec["name"], path),
                      tuple(spec["shape"])))
    return specs


def _parse_dtype(text, what, path):
    if not isinstance(text, str) or not _DTYPE_RE.match(text):
        _fail(path, f"{what} has dtype {text!r}; only bool, integer, float and unicode arrays "
                    "are allowed in model files (object arrays would need pickle and are "
                    "refused).")
    return np.dtype(text)


def _inflate(zf, info, name, path, budget):
    """The member's bytes, inflated in bounded chunks (never past its declared size)."""
    size = info.file_size
    if size > budget[0]:
        _fail(path, f"entry {name} declares {size} bytes, more than the {budget[0]} left of "
                    "the load limit (max_bytes); pass a larger max_bytes to load if the file "
                    "is trusted.")
    budget[0] -= size
    if info.compress_type != zipfile.ZIP_STORED and size > _MAX_DEFLATE_RATIO * max(
        info.compress_size, 1
    ):
        _fail(path, f"entry {name} declares {size} bytes from {info.compress_size} compressed "
                    "ones, beyond what deflate can produce: the file is forged. " + _RESAVE)
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    with zf.open(info) as f:
        while got < size:
            chunk = f.read(min(_READ_CHUNK, size - got))
            if not chunk:
                break
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
        if got != size:
            _fail(path, f"entry {name} holds {got} bytes, fewer than the {size} declared "
                        "(truncated). " + _RESAVE)
        # Reading to the end runs zipfile's CRC check; more data is forged.
        if f.read(1):
            _fail(path, f"entry {name} inflates beyond its declared {size} bytes. " + _RESAVE)
    return data


def _read_member(zf, name, dtype, shape, path, budget):
    """One ``.npy`` member parsed by hand: header checked, data never unpickled."""
    info = zf.getinfo(name + ".npy")
    if shape is None:  # a JSON entry: 1-D uint8 of unknown length
        limit = _JSON_MEMBER_MAX
    else:
        limit = dtype.itemsize * int(np.prod(shape, dtype=object)) + _NPY_HEADER_MAX
    # Checked before decompressing: a file cannot make us inflate more than
    # its manifest announces.
    if info.file_size > limit:
        _fail(path, f"entry {name} is larger ({info.file_size} bytes) than its manifest allows "
                    f"({limit}). " + _RESAVE)
    data = _inflate(zf, info, name, path, budget)
    buf = io.BytesIO(bytes(data[:_NPY_HEADER_MAX]))  # the header only: no copy of the data
    version = np.lib.format.read_magic(buf)
    if version == (1, 0):
        got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(buf)
    elif version in ((2, 0), (3, 0)):
        got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(buf)
    else:
        _fail(path, f"entry {name} has unknown .npy version {version}. " + _RESAVE)
    if got_dtype.hasobject or got_dtype != dtype or fortran or (
        shape is not None and tuple(got_shape) != shape
    ) or (shape is None and len(got_shape) != 1):
        _fail(path, f"entry {name} holds a {got_dtype} array of shape {got_shape}, not the "
                    f"{dtype} array of shape {shape} its manifest lists; object arrays are "
                    "refused (they need pickle). " + _RESAVE)
    offset = buf.tell()
    count = int(np.prod(got_shape, dtype=object))
    if len(data) - offset != count * dtype.itemsize:
        _fail(path, f"entry {name} has {len(data) - offset} data bytes for {count} values of "
                    f"{dtype}. " + _RESAVE)
    return np.frombuffer(data, dtype, count, offset).reshape(got_shape)


# --- rebuilding the estimator ----------------------------------------------------
def _build(meta, arrays, path, classes=None):
    classes = _ESTIMATORS if classes is None else classes
    cls_name = meta["class"]
    cls = _estimator_class(cls_name, classes) if cls_name in classes else None
    if cls is None:
        _fail(path, f"class {cls_name!r} is not a sparse_rec estimator this version can load "
                    f"here (known: {', '.join(sorted(classes))}). Upgrade sparse_rec if the "
                    "file comes from a newer version.")
    est = cls()
    _set_params(est, meta, path)
    allowed = set(_attribute_names(cls))
    skipped = []
    for name, entry in meta["attributes"].items():
        if not _ATTR_RE.match(name) or not isinstance(entry, dict):
            _fail(path, f"{name!r} is not a fitted-attribute name (lowercase, ending in '_'). "
                        + _RESAVE)
        if name not in allowed:
            skipped.append(name)
            continue
        setattr(est, name, _decode_attribute(name, entry, arrays, path))
    required = [n for n in _attribute_names(cls) if n in _required_attributes(cls)]
    missing = [n for n in required if n not in meta["attributes"]]
    if missing:
        _fail(path, f"the file names class {cls_name} but lacks its fitted arrays {missing} "
                    f"(it holds {sorted(meta['attributes'])[:8]}): the class does not match "
                    "the arrays. " + _RESAVE)
    if skipped:
        warnings.warn(f"{path}: attributes {skipped} are unknown to {cls_name} in this version "
                      "of sparse_rec and were ignored.", UserWarning, stacklevel=3)
    for key, count_attr in (("user_ids", "n_users_"), ("item_ids", "n_items_")):
        member = meta["raw_ids"].get(key)
        if member is None:
            continue
        if member not in (_USER_IDS, _ITEM_IDS) or member not in arrays:
            _fail(path, f"raw id entry {member!r} is not valid. " + _RESAVE)
        ids = arrays[member]
        if ids.ndim != 1 or ids.dtype.kind not in "iU":
            _fail(path, f"{key} must be a 1-D int or unicode array; got {ids.dtype}.")
        count = getattr(est, count_attr, None)
        if count is not None and len(ids) != count:
            _fail(path, f"{key} has {len(ids)} entries for {count_attr}={count}. " + _RESAVE)
        setattr(est, key + "_", ids.astype(ids.dtype.newbyteorder("=")))
    _check_consistency(est, path)
    _check_loaded_params(est, path)
    if hasattr(est, "_clear_caches"):
        est._clear_caches()
    return est


def _required_attributes(cls):
    """Fitted attributes without which ``cls`` cannot score: a file must hold them all."""
    return (set(getattr(cls, "_snapshot_attributes", ())) | {"n_users_", "n_items_", "seen_"}
            | {name for name, _ in getattr(cls, "_loaded_shapes", ())})


def _check_loaded_params(est, path):
    """The saved hyper-parameters, through the estimator's own validation."""
    try:
        if getattr(type(est), "_served", False):
            # Served models have no fit: check what scoring and fold-in read.
            check_positive_int(getattr(est, "n_components", None), "n_components")
            check_real(getattr(est, "learning_rate", None), "learning_rate", low=0,
                       low_open=True)
            alpha = getattr(est, "alpha", None)
            if not (getattr(type(est), "_alpha_auto", False) and alpha == "auto"):
                check_real(alpha, "alpha", low=0)
            check_n_threads(getattr(est, "n_threads", None))
        else:
            for hook in ("_validate", "_validate_params"):
                if hasattr(est, hook):
                    getattr(est, hook)()
                    break
        if getattr(est, "n_negatives", None) is not None or hasattr(est, "hidden_layer_sizes_"):
            check_n_negatives(getattr(est, "n_negatives", None), est.n_items_)
    except ValueError as e:
        _fail(path, f"a saved hyper-parameter is invalid: {e} " + _RESAVE)


def _set_params(est, meta, path):
    params = meta["params"]
    # A served model (sparse_rec.serving) keeps every saved parameter as is.
    known = params if getattr(type(est), "_served", False) else est.get_params(deep=False)
    unknown = sorted(set(params) - set(known))
    if unknown:
        warnings.warn(f"{path}: parameters {unknown} are unknown to {type(est).__name__} in "
                      "this version of sparse_rec and were ignored.", UserWarning, stacklevel=4)
    values = {}
    for key in sorted(set(params) & set(known)):
        value = params[key]
        if isinstance(value, list):
            if not all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
                _fail(path, f"parameter {key} holds nested values. " + _RESAVE)
            value = tuple(value) if key in meta["tuple_params"] else value
        elif isinstance(value, dict):
            _fail(path, f"parameter {key} is a JSON object; parameters are scalars or lists. "
                        + _RESAVE)
        values[key] = value
    # A parameter added later: what files written before it existed mean
    # (DSL-MF files without ``loss`` hold BPR models; the default is now iALS).
    for key, value in getattr(type(est), "_absent_params", {}).items():
        values.setdefault(key, value)
    if getattr(type(est), "_served", False):
        est.__dict__.update(values)
    else:
        est.set_params(**values)


def _restore_dtype(text, path, what):
    dt = _parse_dtype(text, what, path)
    return dt.newbyteorder("=")


def _int_field(entry, key, path, name):
    v = entry.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        _fail(path, f"{name}: field {key!r} must be a non-negative int; got {v!r}. " + _RESAVE)
    return v


def _decode_rows(name, entry, arrays, n_rows, path):
    if entry.get("rows") == "indptr":
        rows = arrays[f"{name}.indptr"]
        if rows.dtype.kind not in "iu" or rows.shape != (n_rows + 1,):
            _fail(path, f"{name}.indptr must be {n_rows + 1} integers; got {rows.dtype} "
                        f"{rows.shape}. " + _RESAVE)
        indptr = rows.astype(np.int64)
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            _fail(path, f"{name}.indptr must start at 0 and never decrease. " + _RESAVE)
        return indptr
    if entry.get("rows") == "row_nnz":
        counts = arrays[f"{name}.row_nnz"]
        if counts.dtype.kind != "u" or counts.shape != (n_rows,):
            _fail(path, f"{name}.row_nnz must be {n_rows} unsigned integers. " + _RESAVE)
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr
    _fail(path, f"{name}: unknown row encoding {entry.get('rows')!r}. " + _RESAVE)


def _check_canonical_rows(name, indptr, indices, n_cols, path):
    """Indices in range and strictly increasing within each row (kernels rely on both).

    The same structure checks as every matrix entering the package
    (``sparse_rec._validation``).
    """
    nnz = int(indptr[-1])
    if indices.ndim != 1 or indices.dtype.kind not in "iu" or indices.shape[0] != nnz:
        _fail(path, f"{name}.indices must be {nnz} integers; got {indices.dtype} "
                    f"{indices.shape}. " + _RESAVE)
    try:
        check_compressed(indptr, indices, indptr.shape[0] - 1, n_cols, name)
    except ValueError as e:
        _fail(path, f"{name} has column indices outside [0, {n_cols}) or bad row pointers "
                    f"({e}) " + _RESAVE)
    if not canonical_rows(indptr, indices):
        _fail(path, f"{name} has a row whose column indices are not strictly increasing. "
                    + _RESAVE)


def _check_finite(name, values, path):
    """Weights and biases must be finite: NaN or inf would poison every score."""
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        _fail(path, f"{name} holds {int(np.count_nonzero(~np.isfinite(values)))} NaN or "
                    "infinite values; a model needs finite numbers. " + _RESAVE)


def _decode_attribute(name, entry, arrays, path):
    kind = entry.get("kind")
    if kind == "value":
        value = entry.get("value")
        if not (value is None or isinstance(value, (bool, int, float, str))):
            _fail(path, f"{name}: a value must be a JSON scalar. " + _RESAVE)
        if isinstance(value, float):
            _check_finite(name, np.array(value), path)
        return value
    if kind in ("tuple", "list"):
        value = entry.get("value")
        if not isinstance(value, list) or not all(
            v is None or isinstance(v, (bool, int, float, str)) for v in value
        ):
            _fail(path, f"{name}: a {kind} must be a JSON list of scalars. " + _RESAVE)
        return tuple(value) if kind == "tuple" else value
    if kind == "records":
        records = _parse_json(arrays[f"{name}.json"].tobytes(), f"{name}.json", path)
        if not isinstance(records, list) or not all(
            isinstance(r, dict) and all(
                v is None or isinstance(v, (bool, int, float, str)) for v in r.values()
            ) for r in records
        ):
            _fail(path, f"{name} must be a list of objects of scalars. " + _RESAVE)
        return records
    if kind == "array":
        dt = _restore_dtype(entry.get("dtype"), path, name)
        stored = arrays[name]
        if stored.dtype.kind != dt.kind and not (stored.dtype.kind in "iu" and dt.kind in "iu"):
            _fail(path, f"{name} is stored as {stored.dtype} for a {dt} attribute. " + _RESAVE)
        _check_finite(name, stored, path)
        return stored.astype(dt)  # always a writable copy
    if kind == "table":
        n_rows = _int_field(entry, "n_rows", path, name)
        n_cols = _int_field(entry, "n_cols", path, name)
        indptr = _decode_rows(name, entry, arrays, n_rows, path)
        indices = arrays[f"{name}.indices"]
        _check_canonical_rows(name, indptr, indices, n_cols, path)
        weights = arrays[f"{name}.weights"]
        wdt = _restore_dtype(entry.get("weight_dtype"), path, name)
        if weights.dtype.kind != "f" or wdt.kind != "f" or weights.shape != indices.shape:
            _fail(path, f"{name}.weights must be {indices.shape[0]} floats. " + _RESAVE)
        if not np.all(np.isfinite(weights)):
            _fail(path, f"{name} has non-finite weights. " + _RESAVE)
        values = np.ascontiguousarray(weights.astype(wdt)[:, None])
        table = SparseEmbeddingTable(indptr, indices.astype(_index_dtype(n_cols)), values,
                                     n_cols)
        try:
            table.check()
        except AssertionError as e:
            _fail(path, f"{name} is not a canonical table ({e}). " + _RESAVE)
        return table
    if kind == "csr":
        n_rows = _int_field(entry, "n_rows", path, name)
        n_cols = _int_field(entry, "n_cols", path, name)
        indptr = _decode_rows(name, entry, arrays, n_rows, path)
        indices = arrays[f"{name}.indices"]
        _check_canonical_rows(name, indptr, indices, n_cols, path)
        dt = _restore_dtype(entry.get("dtype"), path, name)
        if entry.get("data") == "ones":
            data = np.ones(indices.shape[0], dt)
        elif entry.get("data") == "stored":
            data = arrays[f"{name}.data"]
            if data.shape != indices.shape or data.dtype.kind not in "biuf":
                _fail(path, f"{name}.data must be {indices.shape[0]} numbers. " + _RESAVE)
            _check_finite(f"{name}.data", data, path)
            data = data.astype(dt)
        else:
            _fail(path, f"{name}: unknown data encoding {entry.get('data')!r}. " + _RESAVE)
        ind_dt = _restore_dtype(entry.get("index_dtype"), path, name)
        ptr_dt = _restore_dtype(entry.get("indptr_dtype"), path, name)
        if ind_dt.kind != "i" or ptr_dt.kind != "i":
            _fail(path, f"{name}: CSR index dtypes must be signed integers. " + _RESAVE)
        make = sp.csr_array if entry.get("class") == "csr_array" else sp.csr_matrix
        M = make((data, indices.astype(ind_dt), indptr.astype(ptr_dt)), shape=(n_rows, n_cols))
        M.has_canonical_format = True  # checked above: sorted, no duplicates
        return M
    _fail(path, f"{name}: unknown attribute kind {kind!r}; the file may come from a newer "
                "sparse_rec. Upgrade sparse_rec to load it.")


def _check_consistency(est, path):
    # Each model class lists the shapes of its array attributes (as
    # ``(attribute, (attribute each dimension must equal, or None))``) and
    # checks the rest in ``_check_loaded``: no kernel may index out of bounds.
    for name, dims in getattr(type(est), "_loaded_shapes", ()):
        value = getattr(type(est), name, None)
        if isinstance(value, property):
            continue  # a view computed from other attributes
        value = getattr(est, name, None)
        if value is None:
            continue
        shape = tuple(value.shape)
        want = tuple(None if d is None else getattr(est, d, None) for d in dims)
        for d, w in zip(dims, want, strict=True):
            # A missing or odd size would let a kernel index out of bounds.
            if d is not None and not (isinstance(w, numbers.Integral) and w > 0):
                _fail(path, f"{d} must be a positive integer to check {name}; got {w!r}. "
                      + _RESAVE)
        if len(shape) != len(want) or any(
            w is not None and s != w for s, w in zip(shape, want, strict=True)
        ):
            _fail(path, f"{name} has shape {shape}, inconsistent with {dims} = {want}. "
                  + _RESAVE)
    if hasattr(est, "_check_loaded"):
        est._check_loaded()
