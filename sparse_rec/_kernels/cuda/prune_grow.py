"""CUDA kernels that select growth scores where they are computed (numba-cuda).

The device twins of what :class:`~sparse_rec._dsl.PruneGrow` does on the host
with a chunk of dense growth scores (``_prune_grow.abs_mask_active``,
``bin_counts``, ``collect_at_least``): take ``|G|`` with the table's active
coordinates masked to -1, count the float32 bit patterns per bin, and list
the coordinates at or above a bin in row-major order. Only the bin counts and
the listed coordinates come back to the host, not the dense chunk.
"""

import numpy as np
from numba import cuda

from .._prune_grow import BIN_SHIFT, N_BINS


@cuda.jit
def abs_mask_kernel(G, r0, indptr, indices):
    """``|G|`` in place, the active coordinates of rows ``r0 + r`` set to -1."""
    for r in range(cuda.grid(1), G.shape[0], cuda.gridsize(1)):
        row = G[r]
        for k in range(row.shape[0]):
            row[k] = abs(row[k])
        for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
            row[indices[p]] = -1.0


@cuda.jit
def bin_counts_kernel(bits, hist):
    """Add the bin of every non-negative bit pattern of ``bits`` (int32, 2-D) to ``hist``."""
    for r in range(cuda.grid(1), bits.shape[0], cuda.gridsize(1)):
        for k in range(bits.shape[1]):
            b = bits[r, k]
            if b >= 0:
                cuda.atomic.add(hist, b >> BIN_SHIFT, 1)


@cuda.jit
def row_counts_kernel(bits, lowest, counts):
    """``counts[r]``: entries of row ``r`` whose bit pattern is ``lowest`` or above."""
    for r in range(cuda.grid(1), bits.shape[0], cuda.gridsize(1)):
        c = 0
        for k in range(bits.shape[1]):
            if bits[r, k] >= lowest:
                c += 1
        counts[r] = c


@cuda.jit
def collect_kernel(G, bits, r0, lowest, offsets, rows, cols, vals):
    """Row ``r``'s qualifying entries at ``offsets[r]`` onwards (row-major order)."""
    for r in range(cuda.grid(1), G.shape[0], cuda.gridsize(1)):
        n = offsets[r]
        for k in range(G.shape[1]):
            if bits[r, k] >= lowest:
                rows[n] = r0 + r
                cols[n] = k
                vals[n] = G[r, k]
                n += 1


class DeviceScores:
    """Growth scores of one table, computed and selected on the GPU.

    A growth callback for :meth:`PruneGrow.step <sparse_rec._dsl.PruneGrow.step>`:
    called as ``fill(r0, r1, G)`` it copies the dense scores to the host
    like any callback; PruneGrow instead calls :meth:`histogram` and
    :meth:`collect`, so that only bin counts and the kept coordinates cross
    the bus. ``launch(r0, r1, G_d)`` fills the device array ``G_d`` with the
    scores of rows ``r0:r1``; ``indptr``, ``indices`` are the table's
    pattern on the device; ``buffer(n_rows)`` gives a device array of
    ``(n_rows, n_cols)`` float32, which the tables' scorers may share:
    ``held`` (a one-item list, shared by them) says what it holds.
    """

    def __init__(self, launch, indptr, indices, buffer, held, grid):
        self._launch, self._indptr, self._indices = launch, indptr, indices
        self._buffer, self._held, self._grid = buffer, held, grid

    def _scores(self, r0, r1):
        G_d = self._buffer(r1 - r0)
        self._launch(r0, r1, G_d)
        self._held[0] = None
        return G_d

    def __call__(self, r0, r1, G):
        self._scores(r0, r1).copy_to_host(G)

    def _masked(self, r0, r1):
        # Recompute unless the shared buffer still holds this chunk, masked.
        if self._held[0] != (id(self), r0, r1):
            G_d = self._scores(r0, r1)
            abs_mask_kernel[self._grid](G_d, np.int64(r0), self._indptr, self._indices)
            self._held[0] = (id(self), r0, r1)
        return self._buffer(r1 - r0)

    def histogram(self, r0, r1):
        """Counts per bin (int64, ``N_BINS``) of the masked scores of rows ``r0:r1``."""
        G_d = self._masked(r0, r1)
        hist = cuda.to_device(np.zeros(N_BINS, np.int32))
        bin_counts_kernel[self._grid](G_d.view(np.int32), hist)
        return hist.copy_to_host().astype(np.int64)

    def collect(self, r0, r1, lo):
        """``(rows, cols, scores)`` of the masked scores at or above bin ``lo``, row-major."""
        G_d = self._masked(r0, r1)
        bits = G_d.view(np.int32)
        lowest = np.int32(lo << BIN_SHIFT)
        counts = cuda.device_array(r1 - r0, np.int64)
        row_counts_kernel[self._grid](bits, lowest, counts)
        c = counts.copy_to_host()
        offsets = np.zeros(r1 - r0, np.int64)
        np.cumsum(c[:-1], out=offsets[1:])
        n = int(c.sum())
        if n == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
        rows = cuda.device_array(n, np.int32)
        cols = cuda.device_array(n, np.int32)
        vals = cuda.device_array(n, np.float32)
        collect_kernel[self._grid](G_d, bits, np.int64(r0), lowest, cuda.to_device(offsets),
                                   rows, cols, vals)
        return rows.copy_to_host(), cols.copy_to_host(), vals.copy_to_host()


# --- The prune threshold on the device ------------------------------------------
@cuda.jit
def magnitude_bins_kernel(bits, hist):
    """Add the bin of ``|x|`` for every pattern ``bits[p, 0]`` (int32) to ``hist``."""
    for p in range(cuda.grid(1), bits.shape[0], cuda.gridsize(1)):
        cuda.atomic.add(hist, (bits[p, 0] & 0x7FFFFFFF) >> BIN_SHIFT, 1)


@cuda.jit
def magnitudes_in_bin_kernel(bits, b, out, fill):
    """Append the ``|x|`` patterns of ``bits[:, 0]`` in bin ``b`` to ``out`` (any order)."""
    for p in range(cuda.grid(1), bits.shape[0], cuda.gridsize(1)):
        m = bits[p, 0] & 0x7FFFFFFF
        if m >> BIN_SHIFT == b:
            at = cuda.atomic.add(fill, 0, 1)
            if at < out.shape[0]:
                out[at] = m


@cuda.jit
def prune_mask_kernel(bits, threshold, keep, ties):
    """``keep[p] = |x_p| > threshold`` (bit patterns); ``ties[0]`` counts those equal to it."""
    for p in range(cuda.grid(1), bits.shape[0], cuda.gridsize(1)):
        m = bits[p, 0] & 0x7FFFFFFF
        keep[p] = m > threshold
        if m == threshold:
            cuda.atomic.add(ties, 0, 1)


@cuda.jit
def ties_kernel(bits, threshold, out, fill):
    """Append the positions ``p`` with ``|x_p| == threshold`` to ``out`` (any order)."""
    for p in range(cuda.grid(1), bits.shape[0], cuda.gridsize(1)):
        if bits[p, 0] & 0x7FFFFFFF == threshold:
            at = cuda.atomic.add(fill, 0, 1)
            if at < out.shape[0]:
                out[at] = p


class DevicePrune:
    """Prune scores of one table on the GPU: the magnitudes of ``values[:, 0]``.

    An entry of ``prune_scores`` for :meth:`PruneGrow.step
    <sparse_rec._dsl.PruneGrow.step>`: instead of reading host scores,
    PruneGrow asks it for bin counts (:meth:`histogram`), the patterns of
    one bin (:meth:`in_bin`, for the exact k-th smallest), the keep mask at
    the threshold (:meth:`mask`) and the positions of ties (:meth:`ties`).
    Only those cross the bus: one byte per weight for the mask, not the
    scores. ``values`` is a 2-D float32 device array (a table's value
    slots, or scores as one column); the magnitude ``|x|`` is compared
    through the float32 bit pattern with the sign cleared, which orders
    non-negative floats as the host's comparisons do.
    """

    def __init__(self, values, grid):
        self.values = values  # the device array the scores are read from
        self._bits = values.view(np.int32)
        self._grid = grid
        self.n = values.shape[0]

    def histogram(self):
        """Counts per bin (int64, ``N_BINS``) of the magnitudes' bit patterns."""
        hist = cuda.to_device(np.zeros(N_BINS, np.int32))
        magnitude_bins_kernel[self._grid](self._bits, hist)
        return hist.copy_to_host().astype(np.int64)

    def _append(self, kernel, arg, n, dtype):
        out = cuda.device_array(max(int(n), 1), dtype)
        fill = cuda.to_device(np.zeros(1, np.int64))
        kernel[self._grid](self._bits, arg, out, fill)
        return out.copy_to_host()[: min(int(fill.copy_to_host()[0]), int(n))]

    def in_bin(self, b, count):
        """The ``count`` magnitude patterns (int32) in bin ``b``, in no particular order."""
        return self._append(magnitudes_in_bin_kernel, np.int32(b), count, np.int32)

    def mask(self, threshold):
        """``(keep, n_ties)``: ``keep[p] = |x_p| > threshold`` (host bool) and ties counted."""
        thr = np.float32(threshold).view(np.int32)
        keep = cuda.device_array(self.n, np.bool_)
        ties = cuda.to_device(np.zeros(1, np.int64))
        prune_mask_kernel[self._grid](self._bits, thr, keep, ties)
        return keep.copy_to_host(), int(ties.copy_to_host()[0])

    def ties(self, threshold, count):
        """Positions (sorted, int64) of the ``count`` entries with ``|x| == threshold``."""
        thr = np.float32(threshold).view(np.int32)
        return np.sort(self._append(ties_kernel, thr, count, np.int64))
