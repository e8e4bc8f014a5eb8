"""Reader for train/test splits in the LightGCN text format (Gowalla, Yelp2018, Amazon-Book)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..exceptions import DataFormatError
from ._base import TrainTestDataset, _check_folder

__all__ = ["load_lightgcn"]

# Bytes that separate tokens: space, \t, \n, \v, \f, \r (what C's isspace accepts).
_SPACE = np.zeros(256, dtype=bool)
_SPACE[[9, 10, 11, 12, 13, 32]] = True
# Ids this large only arise from overflow or garbage; fromstring saturates silently.
_MAX_ID = 2**40


def load_lightgcn(path):
    """Read a LightGCN-style split: ``train.txt`` and ``test.txt`` in one folder.

    Each line of either file lists one user followed by the items they
    interacted with, separated by spaces: ``user item item ...``; a line may
    hold only the user id. Ids are 0-based integers and are used as-is for rows
    and columns, so both matrices have ``max user id + 1`` rows and
    ``max item id + 1`` columns taken over both files. Repeated pairs count
    once; every stored value is 1.0.

    Parameters
    ----------
    path : str or os.PathLike
        Folder holding ``train.txt`` and ``test.txt`` (for example the
        ``gowalla`` folder of the LightGCN repository's data).

    Returns
    -------
    TrainTestDataset
        ``train`` and ``test`` float32 CSR matrices of the same shape, and
        ``name`` (the folder name).

    Raises
    ------
    FileNotFoundError
        If the folder or one of the two files does not exist.
    DataFormatError
        If a line holds something other than non-negative integers (the
        message names the file and line), or ``train.txt`` has no interaction.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sparse_rec.datasets import load_lightgcn
    >>> tmp = tempfile.TemporaryDirectory()
    >>> folder = Path(tmp.name)
    >>> _ = (folder / "train.txt").write_text("0 0 1\\n1 2\\n2\\n")
    >>> _ = (folder / "test.txt").write_text("0 3\\n1 0\\n2 1\\n")
    >>> split = load_lightgcn(folder)
    >>> split.train.shape == split.test.shape == (3, 4)
    True
    >>> split.train.nnz, split.test.nnz
    (3, 3)
    >>> tmp.cleanup()

    A real download (not shipped with the package):

    >>> split = load_lightgcn("gowalla")  # doctest: +SKIP
    >>> split.train.shape  # doctest: +SKIP
    (29858, 40981)
    """
    folder = _check_folder(path, "LightGCN", "train.txt and test.txt")
    parsed = []
    for name in ("train.txt", "test.txt"):
        file = folder / name
        if not file.is_file():
            raise FileNotFoundError(
                f"a LightGCN folder must hold train.txt and test.txt; {str(file)!r} is "
                "missing. Pass the folder that holds both files."
            )
        parsed.append(_read_adjacency_lists(file))
    (tr_users, tr_rows, tr_items), (te_users, te_rows, te_items) = parsed
    if tr_items.size == 0:
        raise DataFormatError(
            f"{folder / 'train.txt'} must hold at least one 'user item' pair; it holds none."
        )
    n_users = int(max(tr_users.max(), te_users.max() if te_users.size else -1)) + 1
    n_items = int(max(tr_items.max(), te_items.max() if te_items.size else -1)) + 1
    train = _binary_csr(tr_rows, tr_items, (n_users, n_items))
    test = _binary_csr(te_rows, te_items, (n_users, n_items))
    description = (
        f"LightGCN-format split read from {folder}: {train.nnz:,} train and {test.nnz:,} test "
        f"interactions of {n_users:,} users with {n_items:,} items. See the data's source for "
        "its licence."
    )
    return TrainTestDataset(train=train, test=test, name=folder.name, description=description)


def _binary_csr(rows, cols, shape):
    idx_dtype = np.int32 if max(shape) < 2**31 and rows.size < 2**31 else np.int64
    X = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows.astype(idx_dtype), cols.astype(idx_dtype))),
        shape=shape,
    )
    # The COO -> CSR conversion sums repeated pairs; an interaction is binary.
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def _read_adjacency_lists(path):
    """Parse ``user item item ...`` lines without a Python loop over tokens.

    Returns the user id of every non-empty line, and the (user, item) pairs.
    """
    raw = path.read_bytes()
    buf = np.frombuffer(raw, dtype=np.uint8)
    space = _SPACE[buf]
    # A token starts at a non-space byte that follows a space or the file start.
    starts = ~space
    starts[1:] &= space[:-1]
    starts = np.flatnonzero(starts)
    newlines = np.flatnonzero(buf == 10)
    line_of = np.searchsorted(newlines, starts)  # 0-based line of each token
    if starts.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    try:
        values = np.fromstring(raw, dtype=np.int64, sep=" ")
    except ValueError:
        values = None
    if values is None or values.size != starts.size:
        _raise_bad_token(path)
        raise DataFormatError(
            f"{path} must hold space-separated integers ('user item item ...' per line); "
            "it could not be parsed. Check its encoding and separators."
        )
    bad = (values < 0) | (values >= _MAX_ID)
    if bad.any():
        k = int(np.argmax(bad))
        lineno = int(line_of[k]) + 1
        raise DataFormatError(
            f"{path}, line {lineno}: ids must be non-negative integers below 2**40; got "
            f"{values[k]}. "
            "Re-index users and items from 0 before loading."
        )
    counts = np.bincount(line_of)
    counts = counts[counts > 0]
    first = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    users = values[first]
    is_item = np.ones(values.size, dtype=bool)
    is_item[first] = False
    rows = np.repeat(users, counts - 1)
    return users, rows, values[is_item]


def _raise_bad_token(path):
    """Name the first line holding something other than an integer."""
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, start=1):
            for token in line.split():
                if not (token.isascii() and token.lstrip("+-").isdigit()):
                    raise DataFormatError(
                        f"{path}, line {lineno}: each line must be 'user item item ...' "
                        f"with integer ids; got {token!r} in {line.rstrip()[:80]!r}. "
                        "Fix or delete that line."
                    )
