"""Input checks shared by estimators, metrics and splitters.

Every message says what must hold, what was given and what to do.
"""

import numbers

import numpy as np
import scipy.sparse as sp


def check_interactions(X, *, name="X", allow_empty=False, copy=False):
    """Return ``X`` as a canonical float32 CSR matrix of interactions.

    Accepts any scipy sparse matrix or array, or a dense 2-D array-like.
    Entries must be finite and non-negative; explicit zeros are dropped.
    The input is never modified: a new matrix is returned whenever
    conversion, de-duplication or sorting is needed, and always when
    ``copy=True``.
    """
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (users x items); got {X.ndim}-D sparse input.")
        Xc = X.tocsr(copy=copy)
        if Xc is X:
            Xc = X.copy()
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
        Xc = sp.csr_matrix(arr)
    if np.issubdtype(Xc.dtype, np.complexfloating):
        raise ValueError(
            f"Complex data not supported: {name} must hold real interaction weights; got dtype "
            f"{Xc.dtype}. Pass the real part or the magnitude."
        )
    if not np.issubdtype(Xc.dtype, np.number) and Xc.dtype != np.bool_:
        raise TypeError(f"{name} must hold real numbers; got dtype {Xc.dtype}.")
    n_rows, n_cols = Xc.shape
    if not allow_empty and (n_rows == 0 or n_cols == 0):
        what = "sample(s)" if n_rows == 0 else "feature(s)"
        raise ValueError(
            f"{name} is empty: found {min(n_rows, n_cols)} {what} (shape={Xc.shape}) while a "
            "minimum of 1 is required; it needs at least one user and one item."
        )
    data = Xc.data
    if data.size and not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise ValueError(
            f"{name} must contain only finite values; got {bad} NaN or infinite entries. "
            "Drop or impute them before fitting."
        )
    if data.size and data.min() < 0:
        bad = int(np.count_nonzero(data < 0))
        raise ValueError(
            f"Negative values in data passed to {name}: it must be non-negative (interaction "
            f"counts or weights); got {bad} negative entries (min {data.min():g}). Shift, clip "
            "or binarise the data first."
        )
    Xc.sum_duplicates()
    Xc.eliminate_zeros()
    Xc.sort_indices()
    Xc = Xc.astype(np.float32, copy=False)
    if not allow_empty and Xc.nnz == 0:
        raise ValueError(
            f"{name} has no non-zero interactions (shape {Xc.shape}); there is nothing to learn."
        )
    return Xc


def check_fraction(value, name, *, low_open=True, high_closed=True, hint=""):
    """Check that ``value`` is a real number in (0, 1] (or a variant)."""
    ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
    lo_ok = ok_type and (value > 0 if low_open else value >= 0)
    hi_ok = ok_type and (value <= 1 if high_closed else value < 1)
    if not (ok_type and lo_ok and hi_ok and np.isfinite(value)):
        lo = "(0" if low_open else "[0"
        hi = "1]" if high_closed else "1)"
        raise ValueError(f"{name} must be in {lo}, {hi}; got {value!r}. {hint}".rstrip())
    return float(value)


def check_positive_int(value, name, *, minimum=1, hint=""):
    """Check that ``value`` is an integer >= ``minimum``."""
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < minimum
    ):
        raise ValueError(
            f"{name} must be an integer >= {minimum}; got {value!r}. {hint}".rstrip()
        )
    return int(value)


def check_ids(ids, n, name="users", what="user"):
    """Return ``ids`` as a 1-D int64 array of valid indices into ``range(n)``."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of {what} ids; got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(
                f"{name} must hold integer {what} ids in [0, {n}); got dtype {arr.dtype}."
            )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][:5].tolist()
        raise ValueError(
            f"{name} must be {what} ids in [0, {n}) as seen in fit; got {bad}. "
            f"Map raw ids to indices with the data set's {what}_index(), and refit to add {what}s."
        )
    return arr
