"""Dynamic Sparse Learning: update-ratio schedules, prune and grow.

Model- and device-agnostic: :meth:`PruneGrow.step` receives the growth
scores as callbacks that fill dense rows for a chunk of table rows (and,
optionally, prune scores per active weight), so any engine plugs in.
"""

import math

import numba
import numpy as np

from ._kernels import _prune_grow as K

SCHEDULES = ("cosine", "linear", "constant")
GROW_RULES = ("gradient", "random")
BUDGETS = ("global", "table")
#: Floor of the decaying schedules (the paper's code uses 0.005).
RHO_MIN = 0.005
# One-pass growth keeps at most 3k + this many candidate scores.
_HOLD_SLACK = 1 << 16


def update_ratio_at(t, total, rho0, schedule="cosine", rho_min=RHO_MIN):
    """Fraction of active weights to prune and regrow at epoch ``t`` of ``total``.

    ``cosine``: rho_min + (rho0 - rho_min) * (1 + cos(pi * t / T)) / 2 (the
    paper's schedule); ``linear``: straight from rho0 down to rho_min;
    ``constant``: rho0 throughout. The floor never exceeds ``rho0``, so
    ``rho0 = 0`` gives static sparse training.

    Examples
    --------
    >>> from sparse_rec._dsl import update_ratio_at
    >>> update_ratio_at(0, 100, 0.5)
    0.5
    >>> round(update_ratio_at(100, 100, 0.5), 4)
    0.005
    """
    floor = min(rho_min, rho0)
    frac = min(max(t / max(total, 1), 0.0), 1.0)
    if schedule == "cosine":
        return floor + (rho0 - floor) * (1.0 + math.cos(math.pi * frac)) / 2.0
    if schedule == "linear":
        return rho0 + (floor - rho0) * frac
    if schedule == "constant":
        return float(rho0)
    raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}.")


def _chunks(n_rows, n_cols, chunk_bytes):
    step = max(1, int(chunk_bytes // (4 * max(n_cols, 1))))
    for r0 in range(0, n_rows, step):
        yield r0, min(n_rows, r0 + step)


def _tie_hash(seed, table_id, rows, cols):
    # Random but reproducible order among equal scores.
    h = (rows.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
        cols.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
    )
    return h ^ np.uint64((seed * 1000003 + table_id) & 0xFFFFFFFFFFFFFFFF)


def _boundary_bin(hist, k):
    """Bin of the ``k``-th largest counted score (0 when fewer than ``k`` are counted)."""
    from_top = np.cumsum(hist[::-1])
    return max(K.N_BINS - 1 - int(np.searchsorted(from_top, k)), 0)


def _counts(G, hist, local):
    # Bit patterns of the scores, counted per part of whole rows; masked
    # (-1) entries are skipped.
    K.bin_counts(G.reshape(-1, 1).view(np.int32), G.size, hist, local, G.shape[1], False)


def _collect_chunk(G, r0, lo, local):
    """Coordinates and scores of ``G`` at or above bin ``lo``, given its counts ``local``."""
    # int32 coordinates: these lists hold up to about rho * nnz entries.
    n = int(local[:, lo:].sum())
    rows = np.empty(n, np.int32)
    cols = np.empty(n, np.int32)
    vals = np.empty(n, np.float32)
    got = K.collect_at_least(G, r0, lo, local, rows, cols, vals, 0)
    return rows[:got], cols[:got], vals[:got]


def _drop_below(found, lo):
    """Keep only the kept scores at or above bin ``lo``; return how many are left."""
    held = 0
    for parts in found.values():
        for i, (rows, cols, vals) in enumerate(parts):
            keep = (vals.view(np.int32) >> K.BIN_SHIFT) >= lo
            parts[i] = (rows[keep], cols[keep], vals[keep])
            held += int(keep.sum())
    return held


def _split(parts, bstar):
    """Row-major kept scores split into those above bin ``bstar`` and those inside it."""
    if len(parts) == 1:
        rows, cols, vals = parts[0]
    elif parts:
        rows, cols, vals = (np.concatenate([p[i] for p in parts]) for i in range(3))
    else:
        rows, cols, vals = np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    return K.split_at_bin(rows, cols, vals, vals.view(np.int32), bstar)


class PruneGrow:
    """Prune-and-regrow steps over a fixed set of tables.

    Parameters
    ----------
    tables : list of SparseEmbeddingTable
    budget : {"global", "table"}
        One budget across all tables, or a fixed count per table.
    grow : {"gradient", "random"}
    chunk_bytes : int
        Size of the dense score buffer, the only O(rows x n_cols) memory.

    Examples
    --------
    >>> import numpy as np
    >>> from sparse_rec._dsl import PruneGrow
    >>> from sparse_rec._table import SparseEmbeddingTable
    >>> t = SparseEmbeddingTable.random(6, 4, nnz=8, seed=0)
    >>> def grad(r0, r1, G):  # growth scores of rows r0:r1 (here: made up)
    ...     G[:] = np.arange(r0 * 4, r1 * 4, dtype=np.float32).reshape(r1 - r0, 4)
    >>> pruned, grown = PruneGrow([t]).step(0.25, seed=0, grow_fns=[grad])
    >>> int(pruned[0]), int(grown[0]), t.nnz
    (2, 2, 8)
    """

    def __init__(self, tables, *, budget="global", grow="gradient", chunk_bytes=32 << 20):
        self.tables = tables
        self.budget = budget
        self.grow = grow
        self.chunk_bytes = chunk_bytes
        # One bit per coordinate of each table: was it ever active? Growth
        # is the only way in, so each step marks just the grown coordinates.
        self._ever_bits = [np.zeros((t.n_rows * t.n_cols + 7) // 8, np.uint8) for t in tables]
        self.ever_active = sum(
            K.mark_coverage(t.indptr, t.indices, t.n_cols, b)
            for t, b in zip(tables, self._ever_bits, strict=True)
        )

    @property
    def coverage(self):
        """Fraction of all coordinates that were active at some point since construction."""
        total = sum(t.n_rows * t.n_cols for t in self.tables)
        return self.ever_active / max(total, 1)

    def groups(self):
        ids = list(range(len(self.tables)))
        return [ids] if self.budget == "global" else [[t] for t in ids]

    def step(self, rho, seed, grow_fns=None, *, prune_scores=None, rebuild=None):
        """Prune ``round(rho * nnz)`` weights per group and grow as many.

        Parameters
        ----------
        rho : float
            Fraction of each group's active weights to replace.
        seed : int
            Seed of tie-breaking and random growth.
        grow_fns : list of callable, optional
            ``grow_fns[t](r0, r1, G)`` fills ``G`` (float32, ``(r1 - r0,
            n_cols)``) for rows ``r0:r1`` of table ``t`` with values whose
            magnitude is the growth score (dL/dW for magnitude growth; a
            curvature-scaled gradient for other losses). It must be
            deterministic: growth may call it twice for a chunk (when a
            crowded boundary bin makes it fall back to a second pass).
            Needed when ``grow="gradient"``. A callback that also has the
            methods ``histogram(r0, r1)`` (int64 counts per score bin of
            the chunk, its active coordinates left out) and ``collect(r0,
            r1, lo)`` (``rows, cols, scores`` at or above bin ``lo``,
            row-major) is asked for those instead, so scores computed on a
            device are selected there.
        prune_scores : list of ndarray, optional
            ``prune_scores[t]``: a non-negative float32 score per active
            weight of table ``t`` (in storage order); the smallest are
            pruned. Default: ``|w|``. An entry with the methods
            ``histogram()``, ``in_bin(b, count)``, ``mask(threshold)`` and
            ``ties(threshold, count)`` (scores on a device,
            :class:`~sparse_rec._kernels.cuda.prune_grow.DevicePrune`) is
            asked for bin counts, one bin's patterns and the keep mask
            instead, so the threshold is found where the scores are.
        rebuild : callable, optional
            Called once at the end of the step, after the tables were
            rebuilt (to refresh arrays derived from them).

        Returns
        -------
        pruned, grown : ndarray of int64
            Per-table counts.
        """
        if self.grow == "gradient" and grow_fns is None:
            raise ValueError("grow='gradient' needs grow_fns, one growth-score callback per "
                             "table.")
        n_t = len(self.tables)
        pruned = np.zeros(n_t, np.int64)
        grown = np.zeros(n_t, np.int64)
        rng = np.random.default_rng(seed)
        new_coords = [None] * n_t
        keeps = [None] * n_t
        for group in self.groups():
            nnz = sum(self.tables[t].nnz for t in group)
            inactive = sum(
                self.tables[t].n_rows * self.tables[t].n_cols - self.tables[t].nnz for t in group
            )
            k = min(int(round(rho * nnz)), inactive, nnz)
            if k <= 0:
                continue
            if self.grow == "gradient":
                coords = self._grow_by_gradient(group, k, seed, rng, grow_fns)
            else:
                coords = self._grow_random(group, k, seed, rng, {})
            for t in group:
                new_coords[t] = coords[t]
                grown[t] = len(coords[t][0])
            masks = self._prune_smallest(group, k, rng, prune_scores)
            for t in group:
                keeps[t] = masks[t]
                pruned[t] = masks[t].size - int(masks[t].sum())
        for t in range(n_t):
            if keeps[t] is not None:
                tab = self.tables[t]
                tab.rebuild(keeps[t], *new_coords[t])
                self.ever_active += K.mark_coords(*new_coords[t], tab.n_cols, self._ever_bits[t])
        if rebuild is not None:
            rebuild()
        return pruned, grown

    # --- prune --------------------------------------------------------------
    def _prune_scores(self, t, prune_scores):
        return self.tables[t].weights if prune_scores is None else prune_scores[t]

    def _prune_smallest(self, group, k, rng, prune_scores=None):
        """Masks keeping all but the ``k`` smallest scores (default |w|) of the group."""
        thr = self._kth_smallest_magnitude(group, k, prune_scores)
        masks = {}
        below = 0
        ties = []
        for t in group:
            w = self._prune_scores(t, prune_scores)
            if hasattr(w, "mask"):  # scores on a device: the mask comes back
                keep, n_tie = w.mask(thr)
            else:
                keep = np.empty(w.shape[0], np.bool_)
                n_tie = K.prune_mask(w, np.float32(thr), keep)
            masks[t] = keep
            below += keep.shape[0] - int(keep.sum()) - n_tie
            if n_tie:
                ties.append((t, w.ties(thr, n_tie) if hasattr(w, "ties")
                             else np.flatnonzero(np.abs(w) == thr)))
        # keep= |w| > thr drops every tie; give back the ties not needed.
        n_ties = sum(len(p) for _, p in ties)
        restore = n_ties - (k - below)
        if restore > 0:
            owner = np.concatenate([np.full(len(p), t) for t, p in ties])
            pos = np.concatenate([p for _, p in ties])
            pick = rng.choice(n_ties, restore, replace=False)
            for t in group:
                sel = pos[pick[owner[pick] == t]]
                masks[t][sel] = True
        return masks

    def _kth_smallest_magnitude(self, group, k, prune_scores=None):
        # Bin |w| by bit pattern in parallel (as growth bins its scores),
        # then sort out only the bin that holds the k-th smallest.
        # Scores with a ``histogram`` method live on a device and bin themselves.
        device = [t for t in group if prune_scores is not None
                  and hasattr(prune_scores[t], "histogram")]
        if prune_scores is None:
            bits = [(self.tables[t].values_buf.view(np.int32), self.tables[t].nnz)
                    for t in group]
        else:
            bits = [(np.ascontiguousarray(prune_scores[t], np.float32).reshape(-1, 1)
                     .view(np.int32), self.tables[t].nnz) for t in group if t not in device]
        hist = np.zeros(K.N_BINS, np.int64)
        local = np.empty((numba.get_num_threads(), K.N_BINS), np.int64)
        for b, n in bits:
            K.bin_counts(b, n, hist, local, 1, True)
        dev_hist = {t: prune_scores[t].histogram() for t in device}
        for h in dev_hist.values():
            hist += h
        cum = np.cumsum(hist)
        bin_k = int(np.searchsorted(cum, k))
        below = int(cum[bin_k - 1]) if bin_k else 0
        inside = np.empty(int(hist[bin_k]), np.int32)
        filled = 0
        for b, n in bits:
            filled = K.magnitudes_in_bin(b, n, bin_k, inside, filled)
        for t, h in dev_hist.items():
            got = prune_scores[t].in_bin(bin_k, int(h[bin_k]))
            inside[filled:filled + len(got)] = got
            filled += len(got)
        inside.partition(k - below - 1)
        return inside[k - below - 1:k - below].view(np.float32)[0]

    # --- grow -----------------------------------------------------------------
    def _scores(self, t, r0, r1, buf, fill):
        tab = self.tables[t]
        G = buf[: (r1 - r0) * tab.n_cols].reshape(r1 - r0, tab.n_cols)
        fill(r0, r1, G)
        K.abs_mask_active(G, r0, tab.indptr, tab.indices)
        return G

    def _chunk_scores(self, t, r0, r1, buf, local, fill):
        """Bin counts of a chunk's scores and ``collect(lo)``, its scores at or above bin ``lo``.

        A callback with ``histogram(r0, r1)`` and ``collect(r0, r1, lo)``
        methods masks, counts and selects its scores itself (a GPU engine,
        where they are computed); otherwise they are filled into ``buf``.
        ``collect`` must be called before the next chunk is scored.
        """
        if hasattr(fill, "histogram"):
            return fill.histogram(r0, r1), lambda lo: fill.collect(r0, r1, lo)
        G = self._scores(t, r0, r1, buf, fill)
        hist = np.zeros(K.N_BINS, np.int64)
        _counts(G, hist, local)
        return hist, lambda lo: _collect_chunk(G, r0, lo, local)

    def _buffer(self, group):
        rows = max(
            min(self.tables[t].n_rows, max(1, self.chunk_bytes // (4 * self.tables[t].n_cols)))
            * self.tables[t].n_cols
            for t in group
        )
        return np.empty(rows, np.float32)

    def _grow_by_gradient(self, group, k, seed, rng, fns):
        """The ``k`` largest scores of the group, one pass over the gradient if possible.

        Each chunk is counted into the histogram and then keeps only its
        scores at or above the boundary bin of everything counted so far.
        That boundary never falls as counts are added, so every score at
        or above the final one is kept. If a crowded boundary bin would
        make the kept list too long, the gradient is computed again in a
        second pass instead.
        """
        buf = self._buffer(group)
        local = np.empty((numba.get_num_threads(), K.N_BINS), np.int64)
        total = np.zeros(K.N_BINS, np.int64)
        found = {t: [] for t in group}
        held = 0
        limit = 3 * k + _HOLD_SLACK
        for t in group:
            tab = self.tables[t]
            for r0, r1 in _chunks(tab.n_rows, tab.n_cols, self.chunk_bytes):
                hist, collect = self._chunk_scores(t, r0, r1, buf, local, fns[t])
                total += hist
                if found is None:
                    continue
                lo = max(_boundary_bin(total, k), 1)
                n_new = int(hist[lo:].sum())
                if held + n_new > 2 * k:
                    held = _drop_below(found, lo)
                if held + n_new > limit:
                    found = None  # too many near-equal scores: two passes
                    continue
                found[t].append(collect(lo))
                held += n_new
        bstar = _boundary_bin(total, k)
        lo = max(bstar, 1)
        if found is None:
            found = {t: self._collect(t, buf, lo, local, fns[t]) for t in group}
        return self._select(group, k, seed, rng, bstar, {t: _split(found[t], bstar) for t in group})

    def _select(self, group, k, seed, rng, bstar, got):
        # got[t]: (rows, cols) above the boundary bin, (rows, cols, values) inside it.
        out = {}
        if bstar == 0:
            # Scores this small are (near) zero: no gradient prefers any
            # coordinate, so the rest is grown at random.
            n_hi = sum(len(got[t][0]) for t in group)
            taken = {t: (got[t][0], got[t][1]) for t in group}
            rest = self._grow_random(group, k - n_hi, seed, rng, taken)
            for t in group:
                out[t] = K.merge_sorted_coords(got[t][0], got[t][1], *rest[t])
            return out
        n_hi = sum(len(got[t][0]) for t in group)
        need = k - n_hi
        # Exact choice inside the boundary bin: by score, ties by a hash.
        owner = np.concatenate([np.full(len(got[t][2]), t) for t in group])
        b_rows = np.concatenate([got[t][2] for t in group])
        b_cols = np.concatenate([got[t][3] for t in group])
        b_vals = np.concatenate([got[t][4] for t in group])
        tie = np.concatenate(
            [_tie_hash(seed, t, got[t][2], got[t][3]) for t in group]
        ) if len(b_rows) else np.zeros(0, np.uint64)
        order = np.lexsort((tie, -b_vals))[:need]
        for t in group:
            sel = order[owner[order] == t]
            br, bc = b_rows[sel], b_cols[sel]
            o = np.lexsort((bc, br))
            out[t] = K.merge_sorted_coords(got[t][0], got[t][1], br[o], bc[o])
        return out

    def _collect(self, t, buf, lo, local, fill):
        """Second pass: the scores of table ``t`` at or above bin ``lo``."""
        tab = self.tables[t]
        parts = []
        for r0, r1 in _chunks(tab.n_rows, tab.n_cols, self.chunk_bytes):
            _, collect = self._chunk_scores(t, r0, r1, buf, local, fill)
            parts.append(collect(lo))
        return parts

    def _grow_random(self, group, k, seed, rng, taken):
        """``k`` inactive coordinates uniformly over the group's tables."""
        inactive = np.array(
            [self.tables[t].n_rows * self.tables[t].n_cols - self.tables[t].nnz for t in group],
            np.int64,
        )
        inactive -= np.array([len(taken[t][0]) if t in taken else 0 for t in group], np.int64)
        split = rng.multivariate_hypergeometric(inactive, k) if len(group) > 1 else [k]
        out = {}
        for t, k_t in zip(group, split, strict=True):
            tab = self.tables[t]
            tr, tc = taken.get(t, (np.zeros(0, np.int32), np.zeros(0, np.int32)))
            rows, cols = K.random_inactive(
                tab.indptr, tab.indices, tab.n_cols, int(k_t),
                np.uint64((seed * 7919 + t) & 0xFFFFFFFFFFFFFFFF), tr, tc,
            )
            o = np.lexsort((cols, rows))
            out[t] = (rows[o], cols[o])
        return out
