"""Input checks shared by estimators, metrics and splitters.

Every message says what must hold, what was given and what to do.

Every sparse matrix that enters the package (training data, ``exclude``,
histories, ``filter_seen`` matrices, tables read from model files) passes
:func:`check_compressed` on its raw arrays *before* scipy or a kernel
indexes with them: scipy's compiled routines and our Numba kernels trust
``indptr``/``indices``, and a single index out of range there corrupts
memory or kills the interpreter.
"""

import math
import numbers
import warnings

import numpy as np
import scipy.sparse as sp

_F32_MAX = float(np.finfo(np.float32).max)
# Seeds are mixed into 62 bits: the kernels add small offsets to them and
# pass them as int64 / uint64.
_SEED_BITS = 62


def check_compressed(indptr, indices, n_major, n_minor, name="X", what="column"):
    """Check a CSR/CSC structure; return ``(indptr as int64, indices[:nnz])``.

    ``indptr`` must hold ``n_major + 1`` integers starting at 0 and never
    decreasing, with ``indptr[-1] <= len(indices)``; every used index must
    lie in ``[0, n_minor)``. Raises ValueError otherwise. Reads the arrays
    only, so it is safe on any input.
    """
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    if indptr.ndim != 1 or indptr.dtype.kind not in "iu" or indptr.shape[0] != n_major + 1:
        raise ValueError(
            f"{name} is a malformed sparse matrix: indptr must be {n_major + 1} integers (one "
            f"more than its {n_major} rows); got {indptr.dtype} of shape {indptr.shape}. "
            "Rebuild it with scipy.sparse constructors instead of editing its arrays."
        )
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise ValueError(
            f"{name} is a malformed sparse matrix: indices must be 1-D integers; got "
            f"{indices.dtype} of shape {indices.shape}."
        )
    if indptr.dtype.kind == "u" and indptr.size and indptr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} is a malformed sparse matrix: indptr exceeds int64.")
    ptr = indptr.astype(np.int64)
    if ptr[0] != 0 or np.any(ptr[1:] < ptr[:-1]) or ptr[-1] > indices.shape[0]:
        raise ValueError(
            f"{name} is a malformed sparse matrix: indptr must start at 0, never decrease and "
            f"end at most at len(indices) = {indices.shape[0]}; got first {int(ptr[0])}, last "
            f"{int(ptr[-1])}. Rebuild it with scipy.sparse constructors."
        )
    used = indices[: int(ptr[-1])]
    if used.size and (int(used.min()) < 0 or int(used.max()) >= n_minor):
        bad = used[(used < 0) | (used >= n_minor)][:5].tolist()
        raise ValueError(
            f"{name} is a malformed sparse matrix: {what} indices outside [0, {n_minor}) for "
            f"its shape, e.g. {bad}; they must lie within it. Build it with the right shape, "
            "or drop those entries."
        )
    return ptr, used


def canonical_rows(indptr, indices):
    """True when ``indices`` are strictly increasing within every row."""
    nnz = int(indptr[-1])
    if nnz < 2:
        return True
    within = np.ones(nnz - 1, np.bool_)
    starts = indptr[1:-1]
    starts = starts[(starts > 0) & (starts < nnz)]
    within[starts - 1] = False  # the pair (start - 1, start) spans two rows
    return not np.any(np.diff(indices.astype(np.int64))[within] <= 0)


def _coo_arrays(X, name):
    """``(rows, cols, data, indptr)`` of a scipy sparse ``X``, structure checked.

    ``indptr`` is given (and ``rows`` None) when ``X`` is CSR in canonical
    form already: no row array, sort or copy of the values is needed then.
    """
    n_rows, n_cols = X.shape
    fmt = X.format
    if fmt not in ("csr", "csc", "coo"):
        if fmt == "bsr":
            br, bc = X.blocksize
            check_compressed(X.indptr, X.indices, n_rows // br, n_cols // bc, name, "block")
        # dok, lil, dia and checked bsr convert by copying only.
        X = X.tocoo()
        fmt = "coo"
    if fmt == "coo":
        rows, cols = (np.asarray(a) for a in X.coords) if hasattr(X, "coords") else (
            np.asarray(X.row), np.asarray(X.col))
        data = np.asarray(X.data)
        if not (rows.shape == cols.shape == data.shape and rows.ndim == 1):
            raise ValueError(
                f"{name} is a malformed COO matrix: row, col and data must be 1-D of one "
                f"length; got {rows.shape}, {cols.shape}, {data.shape}."
            )
        for arr, size, what in ((rows, n_rows, "row"), (cols, n_cols, "column")):
            if arr.dtype.kind not in "iu":
                raise ValueError(f"{name}: COO {what} indices must be integers; got {arr.dtype}.")
            if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= size):
                bad = arr[(arr < 0) | (arr >= size)][:5].tolist()
                raise ValueError(
                    f"{name} is a malformed sparse matrix: {what} indices outside [0, {size}) "
                    f"for its shape, e.g. {bad}; they must lie within it. Build it with the "
                    "right shape, or drop those entries."
                )
        return rows, cols, data, None
    n_major, n_minor = (n_rows, n_cols) if fmt == "csr" else (n_cols, n_rows)
    ptr, idx = check_compressed(X.indptr, X.indices, n_major, n_minor, name,
                                "column" if fmt == "csr" else "row")
    data = np.asarray(X.data)
    if data.ndim != 1 or data.shape[0] < idx.shape[0]:
        raise ValueError(
            f"{name} is a malformed sparse matrix: data holds {data.size} values for "
            f"{idx.shape[0]} indices."
        )
    data = data[: idx.shape[0]]
    if fmt == "csr" and canonical_rows(ptr, idx):
        return None, idx, data, ptr
    major = np.repeat(np.arange(n_major, dtype=np.int64), np.diff(ptr))
    return (major, idx, data, None) if fmt == "csr" else (idx, major, data, None)


def check_structure(X, name="X"):
    """Raise ValueError unless scipy sparse ``X``'s index arrays fit its shape.

    For matrices that scipy operates on before they are converted (values
    untouched); :func:`check_interactions` and :func:`check_pattern` do
    this themselves.
    """
    if sp.issparse(X) and X.ndim == 2:
        _coo_arrays(X, name)
    return X


def _check_dtype(dtype, name):
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(
            f"Complex data not supported: {name} must hold real interaction weights; got dtype "
            f"{dtype}. Pass the real part or the magnitude."
        )
    if not np.issubdtype(dtype, np.number) and dtype != np.bool_:
        raise TypeError(f"{name} must hold real numbers; got dtype {dtype}.")


def _check_values(data, name):
    """Each stored value finite and non-negative (before any summing)."""
    if not data.size:
        return
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise ValueError(
            f"{name} must contain only finite values; got {bad} NaN or infinite entries. "
            "Drop or impute them before fitting."
        )
    if data.dtype.kind in "if" and data.min() < 0:
        bad = int(np.count_nonzero(data < 0))
        raise ValueError(
            f"Negative values in data passed to {name}: it must be non-negative (interaction "
            f"counts or weights); got {bad} negative entries (min {data.min():g}). Shift, clip "
            "or binarise the data first."
        )


def _check_float32_range(data, name):
    """Values (non-negative) must survive the cast to float32 the models train in."""
    if not data.size:
        return
    if float(data.max()) > _F32_MAX:
        raise ValueError(
            f"{name} has an interaction weight of {float(data.max()):g} (after summing "
            f"duplicate entries), beyond float32's largest value {_F32_MAX:g}, the precision "
            "the models train in. Rescale the weights (e.g. np.log1p or divide by the maximum)."
        )
    if data.dtype.kind == "f" and data.dtype.itemsize > 4:
        lost = (data > 0) & (data.astype(np.float32) == 0)
        if lost.any():
            raise ValueError(
                f"{name} has {int(lost.sum())} positive weights (smallest "
                f"{float(data[lost].min()):g}) that round to zero in float32, which would "
                "silently drop those interactions. Rescale the weights (e.g. divide by their "
                "minimum) or binarise them."
            )


def check_interactions(X, *, name="X", allow_empty=False, copy=False):
    """Return ``X`` as a canonical float32 CSR matrix of interactions.

    Accepts any scipy sparse matrix or array, or a dense 2-D array-like.
    The structure is checked before anything indexes with it (see
    :func:`check_compressed`); every stored entry must be finite and
    non-negative; duplicate entries are summed in float64 and the sums must
    fit in float32; explicit zeros are dropped. The input is never
    modified: a new matrix is always returned (``copy`` is kept for
    compatibility).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X = sp.coo_matrix((np.array([100, 100], np.int8), ([0, 0], [1, 1])), shape=(1, 2))
    >>> check_interactions(X).toarray()  # summed in float64: no int8 wrap-around
    array([[  0., 200.]], dtype=float32)
    >>> bad = sp.csr_matrix(np.eye(2))
    >>> bad.indices[-1] = 5
    >>> check_interactions(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: X is a malformed sparse matrix: column indices outside [0, 2) ...
    """
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (users x items); got {X.ndim}-D sparse input.")
        _check_dtype(X.dtype, name)
        shape = X.shape
        rows, cols, data, indptr = _coo_arrays(X, name)
    else:
        arr = np.asarray(X)
        if arr.dtype == object:
            # Numbers held as objects convert; anything else raises TypeError.
            arr = arr.astype(np.float64)
        if arr.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D users x items matrix; got an array of shape {arr.shape}. "
                "Reshape your data: a single user's row with X.reshape(1, -1)."
            )
        _check_dtype(arr.dtype, name)
        shape = arr.shape
        rows, cols = np.nonzero(arr)  # row-major: canonical order
        data = arr[rows, cols]
        indptr = np.zeros(shape[0] + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    n_rows, n_cols = shape
    if not allow_empty and (n_rows == 0 or n_cols == 0):
        what = "sample(s)" if n_rows == 0 else "feature(s)"
        raise ValueError(
            f"{name} is empty: found {min(n_rows, n_cols)} {what} (shape={shape}) while a "
            "minimum of 1 is required; it needs at least one user and one item."
        )
    _check_values(data, name)
    idx_dtype = np.int32 if max(n_rows, n_cols, data.size) < 2**31 - 1 else np.int64
    if indptr is not None:
        _check_float32_range(data, name)
        Xc = sp.csr_matrix(  # np.array copies: the input is never modified
            (data.astype(np.float32), np.array(cols, idx_dtype), indptr.astype(idx_dtype)),
            shape=shape,
        )
    else:
        # Duplicates sum in float64: int8 100 + 100 must not wrap, nor float32 overflow.
        Xc = sp.coo_matrix((data.astype(np.float64), (rows, cols)), shape=shape).tocsr()
        Xc.sum_duplicates()
        _check_float32_range(Xc.data, name)
        Xc = Xc.astype(np.float32)
    Xc.eliminate_zeros()
    Xc.sort_indices()
    Xc.has_canonical_format = True
    if not allow_empty and Xc.nnz == 0:
        raise ValueError(
            f"{name} has no non-zero interactions (shape {Xc.shape}); there is nothing to learn."
        )
    return Xc


def check_pattern(X, shape, name="filter_seen"):
    """Return the non-zero pattern of sparse ``X`` as canonical CSR, structure checked.

    For matrices whose values do not matter (items to exclude): any finite
    or not value counts as present unless it is zero.
    """
    if not sp.issparse(X) or X.ndim != 2:
        raise TypeError(f"{name} must be a 2-D scipy sparse matrix; got {type(X).__name__}.")
    if X.shape != tuple(shape):
        raise ValueError(
            f"{name} as a matrix must have shape (len(users), n_items) = {tuple(shape)}; got "
            f"{X.shape}. Pass the rows of the items to exclude for exactly these users."
        )
    rows, cols, data, indptr = _coo_arrays(X, name)
    if rows is None:
        rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(indptr))
    keep = np.asarray(data != 0)
    E = sp.coo_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])),
                      shape=X.shape).tocsr()
    E.sum_duplicates()
    E.sort_indices()
    return E


def check_fraction(value, name, *, low_open=True, high_closed=True, hint=""):
    """Check that ``value`` is a real number in (0, 1] (or a variant)."""
    ok_type = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    lo_ok = ok_type and (value > 0 if low_open else value >= 0)
    hi_ok = ok_type and (value <= 1 if high_closed else value < 1)
    if not (ok_type and lo_ok and hi_ok and np.isfinite(value)):
        lo = "(0" if low_open else "[0"
        hi = "1]" if high_closed else "1)"
        raise ValueError(f"{name} must be in {lo}, {hi}; got {value!r}. {hint}".rstrip())
    return float(value)


def check_positive_int(value, name, *, minimum=1, maximum=None, hint=""):
    """Check that ``value`` is an integer >= ``minimum`` (and <= ``maximum``)."""
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, (bool, np.bool_))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(
            f"{name} must be an integer {bound}; got {value!r}. {hint}".rstrip()
        )
    return int(value)


def check_layer_sizes(value, name="hidden_layer_sizes", *, what="layers", example="(32, 16, 8)"):
    """``value`` (an int or a non-empty sequence of ints >= 1) as a tuple of ints."""
    h = value
    if isinstance(h, numbers.Integral) and not isinstance(h, bool):
        h = (h,)
    try:
        sizes = tuple(h)
    except TypeError:
        sizes = None
    if not sizes or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise ValueError(
            f"{name} must be a non-empty sequence of integers >= 1 (the widths of the "
            f"{what}); got {value!r}. Use for example {example}."
        )
    return tuple(int(s) for s in sizes)


def check_real(value, name, *, low=None, low_open=False, hint=""):
    """Check that ``value`` is a finite real number (not a bool), >= or > ``low``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    # An integer is finite however large (np.isfinite refuses Python ints past int64).
    ok = ok and (isinstance(value, numbers.Integral) or math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        bound = "" if low is None else (f" > {low}" if low_open else f" >= {low}")
        raise ValueError(f"{name} must be a finite number{bound}; got {value!r}. {hint}".rstrip())
    return float(value)


def check_n_threads(value):
    """``None``, ``-1`` or an integer >= 1 (not a bool)."""
    if value is not None and not (
        isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        and (value >= 1 or value == -1)
    ):
        raise ValueError(f"n_threads must be None, -1 or an integer >= 1; got {value!r}.")
    return value


# Negatives per positive: NCF uses a handful; more than this (or than the
# items, if there are more) only multiplies the cost, and 10**9 would hang.
_MAX_NEGATIVES = 1000


def check_n_negatives(value, n_items):
    """An integer in ``[1, max(1000, n_items)]``."""
    return check_positive_int(
        value, "n_negatives", maximum=max(_MAX_NEGATIVES, int(n_items)),
        hint="It is the number of negatives drawn per positive; use for example 4.",
    )


def check_random_seed(random_state):
    """A 62-bit seed from ``None``, any non-negative int or a numpy random generator.

    Seeds below ``2**62`` are used as given; larger ones (any size) are
    mixed into 62 bits by numpy's ``SeedSequence``, deterministically.
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0]
                    >> np.uint64(64 - _SEED_BITS))
    if isinstance(random_state, numbers.Integral) and not isinstance(
        random_state, (bool, np.bool_)
    ):
        seed = int(random_state)
        if seed < 0:
            raise ValueError(
                f"random_state must be None, a non-negative int or a numpy random generator; "
                f"got {random_state}. Use for example random_state=0."
            )
        if seed >= 1 << _SEED_BITS:
            seed = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0]
                       >> np.uint64(64 - _SEED_BITS))
        return seed
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**_SEED_BITS))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**_SEED_BITS))
    raise ValueError(
        f"random_state must be None, a non-negative int or a numpy random generator; got "
        f"{random_state!r}."
    )


# numpy's (multivariate) hypergeometric sampler, which draws start patterns,
# refuses populations of 10**9 or more.
MAX_COORDINATES = 10**9


def check_budget(n_active, n_total, n_rows, name="density"):
    """Refuse a budget of zero active weights or too many coordinates; warn below one per row."""
    if n_total >= MAX_COORDINATES:
        raise ValueError(
            f"the model's tables hold {n_total:,} coordinates (rows x columns); at most "
            f"{MAX_COORDINATES - 1:,} are supported (the random start pattern is drawn with "
            "numpy's hypergeometric sampler). Lower n_components (or the layer sizes)."
        )
    if n_active < 1:
        raise ValueError(
            f"{name} gives a budget of 0 active weights out of {n_total}: the model would "
            f"have no weight to train. Raise {name} to at least {1 / max(n_total, 1):.2g}."
        )
    if n_active < n_rows:
        warnings.warn(
            f"{name} gives {n_active} active weights for {n_rows} embedding rows: many users "
            f"and items get no weight of their own. Raise {name} to at least "
            f"{n_rows / max(n_total, 1):.2g} for one weight per row.", UserWarning, stacklevel=4,
        )
    return n_active


def check_ids(ids, n, name="users", what="user"):
    """Return ``ids`` as a 1-D int64 array of valid indices into ``range(n)``."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of {what} ids; got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if (np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all()
                and np.all(np.mod(arr, 1) == 0)):
            arr = np.where(np.abs(arr) < 2.0**62, arr, -1).astype(np.int64)
        else:
            raise ValueError(
                f"{name} must hold integer {what} ids in [0, {n}); got dtype {arr.dtype}."
            )
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        arr = np.where(arr < n, arr, n).astype(np.int64)  # out of range, reported below
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][:5].tolist()
        raise ValueError(
            f"{name} must be {what} ids in [0, {n}) as seen in fit; got {bad}. "
            f"Map raw ids to indices with the data set's {what}_index(), and refit to add {what}s."
        )
    return arr
