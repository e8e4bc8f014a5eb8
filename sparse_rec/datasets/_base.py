"""Containers returned by the data set loaders, and helpers shared by the readers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..exceptions import DataFormatError

__all__ = ["InteractionDataset", "TrainTestDataset"]


def _lookup(known, raw_ids, what):
    """Map raw ids to positions in the sorted array ``known``."""
    arr = np.asarray(raw_ids)
    if known.dtype.kind not in "iu":
        # Ids of another type (strings from from_frame): exact matches.
        return _lookup_any(known, arr, what)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        # Float ids such as 1.0 are accepted when they are whole numbers.
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr) & (arr % 1 == 0)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(
                f"raw {what} ids must be integers; got an array of dtype {arr.dtype}. "
                f"Pass values taken from the data set's {what}_ids."
            )
    flat = arr.astype(np.int64, copy=False).ravel()
    pos = np.searchsorted(known, flat)
    found = pos < known.size
    found[found] = known[pos[found]] == flat[found]
    if not found.all():
        missing = np.unique(flat[~found])
        shown = ", ".join(str(v) for v in missing[:5]) + (", ..." if missing.size > 5 else "")
        raise ValueError(
            f"every raw {what} id must occur in the data set; {missing.size} do not: {shown}. "
            f"Filter them first, e.g. ids[np.isin(ids, dataset.{what}_ids)]."
        )
    if arr.ndim == 0:
        return int(pos[0])
    return pos.reshape(arr.shape)


def _lookup_any(known, arr, what):
    index = {v: k for k, v in enumerate(known.tolist())}
    flat = arr.ravel().tolist()
    missing = [v for v in flat if v not in index]
    if missing:
        shown = ", ".join(repr(v) for v in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"every raw {what} id must occur in the data set; {len(missing)} do not: {shown}. "
            f"Filter them first, e.g. ids[np.isin(ids, dataset.{what}_ids)]."
        )
    if arr.ndim == 0:
        return index[flat[0]]
    return np.array([index[v] for v in flat], np.int64).reshape(arr.shape)


@dataclass(frozen=True, eq=False, repr=False)
class InteractionDataset:
    """A users x items interaction matrix with the raw ids behind its rows and columns.

    Rows and columns are internal indices ``0..n-1`` given by the sorted raw ids,
    so ``user_ids[u]`` is the raw id of row ``u`` and ``item_ids[i]`` the raw id
    of column ``i``.

    Attributes
    ----------
    X : scipy.sparse.csr_matrix of float32, shape (n_users, n_items)
        Ratings, or 1.0 for every interaction when the data were binarised.
    timestamps : scipy.sparse.csr_matrix of int64 or None
        Unix time of each interaction, with exactly the sparsity pattern of ``X``;
        None when the source has no times.
    user_ids : ndarray, shape (n_users,)
        Raw user id of each row, increasing: int64 for the file readers, the
        ids' own type for :func:`from_frame` (a unicode array for strings).
    item_ids : ndarray, shape (n_items,)
        Raw item id of each column, increasing (typed as ``user_ids``).
    item_names : ndarray of str, shape (n_items,), or None
        Title of each item (empty string where the source lacks one).
    name : str
        Short name of the data set.
    description : str
        What the data are, where they came from and under which licence.
    item_genres : ndarray of str, shape (n_items,), or None
        Genres of each item separated by ``"|"``.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from sparse_rec.datasets import InteractionDataset
    >>> X = sp.csr_matrix(np.array([[5.0, 0.0], [0.0, 3.0]], dtype=np.float32))
    >>> ds = InteractionDataset(X=X, timestamps=None, user_ids=np.array([7, 9]),
    ...                         item_ids=np.array([100, 200]), item_names=None,
    ...                         name="toy", description="Two users, two items.")
    >>> ds.user_index(9), ds.item_index([200, 100]).tolist()
    (1, [1, 0])
    """

    X: sp.csr_matrix
    timestamps: sp.csr_matrix | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_names: np.ndarray | None
    name: str
    description: str
    item_genres: np.ndarray | None = None

    def __post_init__(self):
        # Catch inconsistent hand-built instances early rather than in a model.
        shape = (len(self.user_ids), len(self.item_ids))
        if self.X.shape != shape:
            raise ValueError(
                f"X must have shape (len(user_ids), len(item_ids)) = {shape}; "
                f"got {self.X.shape}. Pass the raw ids of every row and column."
            )
        if self.timestamps is not None and (
            self.timestamps.shape != self.X.shape or self.timestamps.nnz != self.X.nnz
        ):
            raise ValueError(
                "timestamps must have the shape and sparsity pattern of X; got shape "
                f"{self.timestamps.shape} with {self.timestamps.nnz} entries for X of shape "
                f"{self.X.shape} with {self.X.nnz}. Build both from the same (user, item) pairs."
            )
        for field in ("item_names", "item_genres"):
            values = getattr(self, field)
            if values is not None and len(values) != shape[1]:
                raise ValueError(
                    f"{field} must have one entry per item ({shape[1]}); got {len(values)}."
                )

    @property
    def n_users(self):
        """Number of users (rows of ``X``)."""
        return self.X.shape[0]

    @property
    def n_items(self):
        """Number of items (columns of ``X``)."""
        return self.X.shape[1]

    def user_index(self, raw_ids):
        """Map raw user ids to row indices of ``X``.

        Parameters
        ----------
        raw_ids : int or array-like of int
            Raw user ids as found in the source files.

        Returns
        -------
        int or ndarray of int64
            Row indices, with the shape of ``raw_ids``.

        Raises
        ------
        ValueError
            If some raw id is not a user of this data set; the message lists a few.

        Examples
        --------
        >>> from sparse_rec.datasets import load_movielens_small
        >>> ds = load_movielens_small()
        >>> ds.user_index([1, 610]).tolist()
        [0, 609]
        """
        return _lookup(self.user_ids, raw_ids, "user")

    def item_index(self, raw_ids):
        """Map raw item ids to column indices of ``X``.

        Parameters
        ----------
        raw_ids : int or array-like of int
            Raw item ids as found in the source files.

        Returns
        -------
        int or ndarray of int64
            Column indices, with the shape of ``raw_ids``.

        Raises
        ------
        ValueError
            If some raw id is not an item of this data set; the message lists a few.

        Examples
        --------
        >>> from sparse_rec.datasets import load_movielens_small
        >>> ds = load_movielens_small()
        >>> j = ds.item_index(1)
        >>> str(ds.item_names[j])
        'Toy Story (1995)'
        """
        return _lookup(self.item_ids, raw_ids, "item")

    def __repr__(self):
        return (
            f"InteractionDataset(name={self.name!r}, n_users={self.n_users}, "
            f"n_items={self.n_items}, nnz={self.X.nnz})"
        )


@dataclass(frozen=True, eq=False, repr=False)
class TrainTestDataset:
    """A fixed train/test split of binary interactions on one users x items grid.

    Attributes
    ----------
    train, test : scipy.sparse.csr_matrix of float32, shape (n_users, n_items)
        Binary interaction matrices of the same shape; row ``u`` is user id ``u``
        and column ``i`` is item id ``i`` of the source files.
    name : str
        Short name of the data set.
    description : str
        Where the split came from.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from sparse_rec.datasets import TrainTestDataset
    >>> split = TrainTestDataset(train=sp.eye(3, format="csr", dtype="float32"),
    ...                          test=sp.csr_matrix((3, 3), dtype="float32"), name="toy")
    >>> split.n_users, split.n_items
    (3, 3)
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    name: str
    description: str = ""

    def __post_init__(self):
        if self.train.shape != self.test.shape:
            raise ValueError(
                f"train and test must have the same shape; got {self.train.shape} and "
                f"{self.test.shape}. Size both by the largest user and item ids of either."
            )

    @property
    def n_users(self):
        """Number of users (rows)."""
        return self.train.shape[0]

    @property
    def n_items(self):
        """Number of items (columns)."""
        return self.train.shape[1]

    def __repr__(self):
        return (
            f"TrainTestDataset(name={self.name!r}, n_users={self.n_users}, "
            f"n_items={self.n_items}, train_nnz={self.train.nnz}, test_nnz={self.test.nnz})"
        )


def _check_folder(path, what, expected):
    """Return ``path`` as a Path to an existing folder, or raise a helpful error."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path must be a str or os.PathLike naming the {what} folder; "
            f"got {type(path).__name__}."
        )
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(
            f"the {what} folder must exist; {str(folder)!r} does not. "
            f"Pass the unpacked folder that holds {expected}."
        )
    if not folder.is_dir():
        raise NotADirectoryError(
            f"path must be the {what} folder, not a file; got {str(folder)!r}. "
            f"Pass its parent folder {str(folder.parent)!r} instead."
        )
    return folder


def _factorize(values):
    """Return the sorted distinct values and each value's position among them.

    Same result as ``np.unique(values, return_inverse=True)``, written with one
    argsort because that is several times faster on tens of millions of ids.
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.empty(ordered.size, dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    inverse = np.empty(values.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


def _build_dataset(users, items, ratings, times, *, binarize, source, name, description,
                   movie_table=None):
    """Assemble an InteractionDataset from parallel arrays of ratings.

    ``movie_table`` is ``(raw ids, titles, genres or None)`` in any order; only
    items that were rated become columns.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.size == 0:
        raise DataFormatError(
            f"{source} must hold at least one rating; it holds none. Check the file."
        )
    user_ids, rows = _factorize(users)
    item_ids, cols = _factorize(items)
    n_users, n_items = user_ids.size, item_ids.size

    # Row-major order with int64 keys: one argsort both sorts and exposes repeats.
    keys = rows.astype(np.int64) * n_items + cols
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    repeated = np.flatnonzero(keys[1:] == keys[:-1])
    if repeated.size:
        first = order[repeated[0]]
        raise DataFormatError(
            f"each (user, item) pair must be rated once in {source}; {repeated.size} "
            f"pair(s) repeat, e.g. user {users[first]} and item {items[first]}. Keep one "
            "rating per pair (for example the latest) before loading."
        )
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    # int32 indices halve the memory whenever they can hold every position.
    idx_dtype = np.int32 if max(keys.size, n_users, n_items) < 2**31 else np.int64
    indptr = indptr.astype(idx_dtype, copy=False)
    indices = cols[order].astype(idx_dtype)
    if binarize:
        data = np.ones(keys.size, dtype=np.float32)
    else:
        data = np.asarray(ratings, dtype=np.float32)[order]
    X = sp.csr_matrix((data, indices, indptr), shape=(n_users, n_items))
    T = None
    if times is not None:
        # Own copies of the index arrays so that in-place edits of X leave T intact.
        T = sp.csr_matrix(
            (np.asarray(times, dtype=np.int64)[order], indices.copy(), indptr.copy()),
            shape=(n_users, n_items),
        )

    names = genres = None
    if movie_table is not None:
        table_ids, titles, table_genres = movie_table
        table_ids = np.asarray(table_ids, dtype=np.int64)
        table_ids, first = np.unique(table_ids, return_index=True)
        pos = np.searchsorted(table_ids, item_ids)
        found = pos < table_ids.size
        found[found] = table_ids[pos[found]] == item_ids[found]
        src = first[pos[found]]
        titles = np.asarray(titles, dtype=str)
        names = np.zeros(n_items, dtype=titles.dtype)
        names[found] = titles[src]
        if table_genres is not None:
            table_genres = np.asarray(table_genres, dtype=str)
            genres = np.zeros(n_items, dtype=table_genres.dtype)
            genres[found] = table_genres[src]

    return InteractionDataset(
        X=X,
        timestamps=T,
        user_ids=user_ids,
        item_ids=item_ids,
        item_names=names,
        name=name,
        description=description,
        item_genres=genres,
    )
