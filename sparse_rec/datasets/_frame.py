"""``from_frame``: an InteractionDataset from a table of (user, item[, weight, time]) rows."""

import numpy as np
import scipy.sparse as sp

from ._base import InteractionDataset

__all__ = ["from_frame"]


def _columns_of(frame):
    cols = getattr(frame, "columns", None)
    if cols is None and hasattr(frame, "keys"):
        cols = frame.keys()
    return [str(c) for c in cols] if cols is not None else []


def _column(frame, name, what):
    """Column ``name`` as a 1-D numpy array (pandas, polars or a mapping)."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a column name (str); got {type(name).__name__}.")
    if name not in _columns_of(frame):
        raise KeyError(
            f"{what}={name!r} is not a column of the frame; its columns are "
            f"{_columns_of(frame)}. Pass {what}='<column name>'."
        )
    col = frame[name]
    # pandas Series and polars Series both have to_numpy; a mapping holds arrays or lists.
    arr = col.to_numpy() if hasattr(col, "to_numpy") else np.asarray(col)
    if arr.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D; got shape {arr.shape}.")
    return arr


def _ids(arr, name):
    """Raw ids ready for np.unique: strings as a unicode array, missing values refused."""
    if arr.dtype == object:
        values = arr.tolist()
        # None, NaN, and pandas' NA / NaT (by type name: pandas stays optional).
        if any(v is None or (isinstance(v, float) and v != v)
               or type(v).__name__ in ("NAType", "NaTType") for v in values):
            raise ValueError(
                f"column {name!r} has missing ids (None or NaN); every row needs a "
                "user and an item. Drop those rows first, e.g. frame.dropna()."
            )
        if all(isinstance(v, str) for v in values):
            return np.array(values, dtype=str)
        try:
            np.unique(arr)
        except TypeError:
            raise ValueError(
                f"column {name!r} mixes id types that cannot be ordered (e.g. str and int); "
                "convert them to one type, e.g. frame[col].astype(str)."
            ) from None
        return arr
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(
            f"column {name!r} has missing ids (NaN); drop those rows first, e.g. frame.dropna()."
        )
    return arr


def from_frame(frame, user="user_id", item="item_id", weight=None, timestamp=None, *,
               name="frame"):
    """An :class:`InteractionDataset` from a table of interactions.

    Parameters
    ----------
    frame : pandas.DataFrame, polars.DataFrame or mapping of str to array-like
        One row per interaction. Columns are read through numpy
        (``column.to_numpy()`` or ``np.asarray``), so neither pandas nor
        polars is needed unless the frame is one.
    user, item : str, default="user_id", "item_id"
        Columns of the raw user and item ids, of any orderable type
        (integers, strings, ...).
    weight : str or None, default=None
        Column of non-negative interaction weights (counts, ratings); None
        gives every row weight 1.
    timestamp : str or None, default=None
        Column of times: numbers, or ``datetime64`` (stored as Unix
        seconds).
    name : str, default="frame"
        The data set's ``name``.

    Returns
    -------
    InteractionDataset
        Rows are the distinct raw user ids in increasing order, columns
        the distinct raw item ids; ``user_ids`` / ``item_ids`` keep the
        ids' type (a unicode array for strings).

    Notes
    -----
    A (user, item) pair given in several rows is one interaction whose
    weight is the **sum** of the rows' weights (so repeated plays or clicks
    count up) and whose timestamp is the **latest** of them. Pairs whose
    summed weight is 0 are dropped; their users and items still get a row
    and a column.

    Raises
    ------
    KeyError
        If a named column is missing (the message lists the columns).
    ValueError
        If ids are missing, weights are negative or not finite, or the
        frame is empty.

    Examples
    --------
    >>> from sparse_rec.datasets import from_frame
    >>> ds = from_frame({"user_id": ["ann", "bob", "ann", "ann"],
    ...                  "item_id": ["x", "y", "y", "x"]})
    >>> ds.user_ids.tolist(), ds.item_ids.tolist()
    (['ann', 'bob'], ['x', 'y'])
    >>> ds.X.toarray().tolist()
    [[2.0, 1.0], [0.0, 1.0]]
    """
    users = _ids(_column(frame, user, "user"), user)
    items = _ids(_column(frame, item, "item"), item)
    n = len(users)
    if len(items) != n:
        raise ValueError(f"columns {user!r} and {item!r} must have the same length; got "
                         f"{n} and {len(items)}.")
    if n == 0:
        raise ValueError("the frame must hold at least one interaction; it has no rows.")
    if weight is None:
        w = np.ones(n, np.float64)
    else:
        w = np.asarray(_column(frame, weight, "weight"), dtype=np.float64)
        if len(w) != n:
            raise ValueError(f"column {weight!r} must have one value per row ({n}); got {len(w)}.")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            raise ValueError(
                f"column {weight!r} must hold finite non-negative weights; {int(bad.sum())} "
                f"row(s) do not, e.g. {w[np.flatnonzero(bad)[0]]!r}. Drop or fix them."
            )
    user_ids, rows = np.unique(users, return_inverse=True)
    item_ids, cols = np.unique(items, return_inverse=True)
    rows, cols = rows.ravel(), cols.ravel()
    shape = (len(user_ids), len(item_ids))
    # float64 sums: int8-like counts or many float32 weights must not round or wrap.
    X = sp.csr_matrix((w, (rows, cols)), shape=shape)
    X.sum_duplicates()
    if np.abs(X.data).max(initial=0) > np.finfo(np.float32).max:
        raise ValueError(f"summed weights exceed float32's range; rescale column {weight!r}.")
    X.data = X.data.astype(np.float32)
    T = None
    if timestamp is not None:
        t = _column(frame, timestamp, "timestamp")
        if t.dtype.kind == "M":
            if np.isnat(t).any():
                raise ValueError(f"column {timestamp!r} has missing times (NaT).")
            t = t.astype("datetime64[s]").astype(np.int64)
        else:
            t = np.asarray(t, dtype=np.float64)
            if not np.isfinite(t).all():
                raise ValueError(f"column {timestamp!r} has missing or infinite times.")
            t = t.astype(np.int64)
        # The latest time of a repeated pair: order rows by time, then keep
        # the last row of each pair.
        keys = rows.astype(np.int64) * shape[1] + cols
        order = np.lexsort((t, keys))
        last = np.ones(n, bool)
        last[:-1] = keys[order][1:] != keys[order][:-1]
        sel = order[last]
        T = sp.csr_matrix((t[sel], (rows[sel], cols[sel])), shape=shape)
        T.sort_indices()
    # Zero-sum pairs go (their rows stay): a model would read them as interactions.
    keep = X.data != 0
    if not keep.all():
        X = _drop(X, keep)
        if T is not None:
            T = _drop(T, keep)
    X.sort_indices()
    return InteractionDataset(
        X=X, timestamps=T, user_ids=user_ids, item_ids=item_ids, item_names=None,
        name=name,
        description=f"{X.nnz} interactions of {shape[0]} users with {shape[1]} items, "
                    f"from a {type(frame).__name__}.",
    )


def _drop(M, keep):
    M = M.tocoo()
    return sp.csr_matrix((M.data[keep], (M.row[keep], M.col[keep])), shape=M.shape)
