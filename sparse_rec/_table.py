"""SparseEmbeddingTable: one CSR pattern with aligned value slots."""

import numpy as np
import scipy.sparse as sp

from ._kernels import _prune_grow as K

# Spare room kept when a table must grow (global budget moves weights
# between tables), so most prune/grow steps rebuild in place.
_SLACK = 0.05


def _index_dtype(n_cols):
    return np.int16 if n_cols <= np.iinfo(np.int16).max else np.int32


class SparseEmbeddingTable:
    """Rows of active coordinates (CSR) with aligned value slots.

    Slot 0 holds the weights; further slots hold optimiser state that must
    move with the weights when coordinates are pruned and grown. Column
    indices use the smallest integer type that fits ``n_cols`` (int16 for
    up to 32,767 components), so an active weight costs 4 + 2 bytes.

    Parameters
    ----------
    indptr : ndarray of int64, shape (n_rows + 1,)
    indices : ndarray of int16 or int32, shape (capacity,)
    values : ndarray of float32, shape (capacity, n_slots)
        Slots of one entry sit side by side, so a training step that reads a
        weight finds its optimiser state in the same cache line.
    n_cols : int
        Number of components (columns).

    Examples
    --------
    >>> from sparse_rec._table import SparseEmbeddingTable
    >>> t = SparseEmbeddingTable.random(4, 8, nnz=10, seed=0)
    >>> t.nnz, t.shape
    (10, (4, 8))
    >>> t.check()
    """

    def __init__(self, indptr, indices, values, n_cols):
        self.indptr = indptr
        self.indices_buf = indices
        self.values_buf = values
        self.n_cols = int(n_cols)

    @classmethod
    def random(cls, n_rows, n_cols, nnz, *, n_slots=2, scale=0.1, seed=0, row_counts=None):
        """Exactly ``nnz`` active coordinates chosen uniformly at random.

        Per-row counts follow the multivariate hypergeometric law, then each
        row draws its columns uniformly, which makes every ``nnz``-subset of
        the ``n_rows x n_cols`` coordinates equally likely.
        """
        total = n_rows * n_cols
        if not 0 <= nnz <= total:
            raise ValueError(f"nnz must be in [0, {total}]; got {nnz}.")
        if row_counts is None:
            rng = np.random.default_rng(seed)
            if nnz == total:
                row_counts = np.full(n_rows, n_cols, np.int64)
            else:
                row_counts = rng.multivariate_hypergeometric(
                    np.full(n_rows, n_cols, np.int64), nnz, method="marginals"
                )
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(row_counts, out=indptr[1:])
        cap = int(nnz)
        indices = np.empty(cap, _index_dtype(n_cols))
        values = np.empty((cap, n_slots), np.float32)
        K.init_pattern(indptr, n_cols, np.uint64(seed), np.float32(scale), indices, values)
        return cls(indptr, indices, values, n_cols)

    # --- views -----------------------------------------------------------
    @property
    def n_rows(self):
        return self.indptr.shape[0] - 1

    @property
    def shape(self):
        return (self.n_rows, self.n_cols)

    @property
    def nnz(self):
        return int(self.indptr[-1])

    @property
    def indices(self):
        return self.indices_buf[: self.nnz]

    @property
    def weights(self):
        return self.values_buf[: self.nnz, 0]

    def slot(self, s):
        """Values of slot ``s`` (0 = weights) for the active coordinates."""
        return self.values_buf[: self.nnz, s]

    @property
    def n_slots(self):
        return self.values_buf.shape[1]

    def row_nnz(self):
        return np.diff(self.indptr)

    @property
    def nbytes(self):
        """Bytes needed to store the model part: indptr, indices, weights."""
        return int(
            self.indptr.nbytes + self.nnz * (self.indices_buf.itemsize + self.values_buf.itemsize)
        )

    def to_csr(self):
        """The weights as a scipy CSR matrix (float32; a copy)."""
        return sp.csr_matrix(
            (self.weights.copy(), self.indices.astype(np.int32), self.indptr.copy()),
            shape=self.shape,
        )

    def dense_rows(self, rows):
        """Weights of ``rows`` as a dense float32 block, read straight from the arrays."""
        rows = np.asarray(rows, np.int64)
        starts = self.indptr[rows]
        counts = self.indptr[rows + 1] - starts
        out = np.zeros((len(rows), self.n_cols), np.float32)
        which = np.repeat(np.arange(len(rows)), counts)
        # Position of each entry: its row's start plus its rank within the row.
        offsets = np.cumsum(counts) - counts
        pos = np.repeat(starts - offsets, counts) + np.arange(counts.sum())
        out[which, self.indices_buf[pos]] = self.values_buf[pos, 0]
        return out

    def transposed(self):
        """``(indptr, rows, weights)`` of the column-major view (for scoring)."""
        t = self.to_csr().tocsc()
        return t.indptr.astype(np.int64), t.indices.astype(np.int32), t.data

    # --- structure changes ------------------------------------------------
    def reserve(self, capacity):
        """Make room for ``capacity`` active entries (keeps the contents)."""
        if capacity <= self.indices_buf.shape[0]:
            return
        capacity = int(capacity * (1 + _SLACK))
        nnz = self.nnz
        indices = np.empty(capacity, self.indices_buf.dtype)
        indices[:nnz] = self.indices_buf[:nnz]
        values = np.empty((capacity, self.n_slots), np.float32)
        values[:nnz] = self.values_buf[:nnz]
        self.indices_buf, self.values_buf = indices, values

    def rebuild(self, keep, new_rows, new_cols):
        """Drop entries where ``keep`` is False and add zero-valued new ones.

        ``new_rows, new_cols`` must be sorted by (row, col) and inactive. New
        weights and their optimiser state start at zero.
        """
        self.reserve(int(keep.sum()) + len(new_rows))
        # Entries move as whole 8-byte words where the slots allow it.
        wide = np.uint64 if self.n_slots % 2 == 0 else np.uint32
        K.rebuild_in_place(
            self.indptr, self.indices_buf, self.values_buf.view(wide), keep,
            np.asarray(new_rows, np.int32), np.asarray(new_cols, np.int32),
        )

    def check(self):
        """Raise AssertionError if the table is not canonical."""
        assert self.indptr[0] == 0 and np.all(np.diff(self.indptr) >= 0), "indptr not monotone"
        assert self.indices_buf.shape[0] >= self.nnz, "capacity below nnz"
        assert self.values_buf.shape[0] == self.indices_buf.shape[0], "slots misaligned"
        assert K.is_canonical(self.indptr, self.indices, self.n_cols), "rows not sorted/unique"

    def add_state(self, n_slots):
        """Give the table ``n_slots`` value slots, new state slots at zero (warm start)."""
        values = np.zeros((self.nnz, n_slots), np.float32)
        keep = min(n_slots, self.n_slots)
        values[:, :keep] = self.values_buf[: self.nnz, :keep]
        self.values_buf = values
        self.indices_buf = self.indices_buf[: self.nnz].copy()

    def drop_state(self):
        """Keep only the weights (after training) and release spare capacity."""
        self.values_buf = np.ascontiguousarray(self.values_buf[: self.nnz, :1])
        self.indices_buf = self.indices_buf[: self.nnz].copy()

    # --- pickling: store only the active part ------------------------------
    def __getstate__(self):
        return {
            "indptr": self.indptr,
            "indices": self.indices_buf[: self.nnz].copy(),
            "values": self.values_buf[: self.nnz].copy(),
            "n_cols": self.n_cols,
        }

    def __setstate__(self, state):
        self.__init__(state["indptr"], state["indices"], state["values"], state["n_cols"])
