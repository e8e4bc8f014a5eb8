"""Kernels for prune and grow on a CSR table with aligned value slots.

Growth scores dense chunks of gradient rows. To pick the K largest scores
over all chunks in bounded memory, scores are binned by their float32 bit
pattern (monotonic for non-negative floats): a first pass counts bins, a
second collects everything above the boundary bin and the boundary bin's
entries, from which the exact remainder is chosen.
"""

import numpy as np
from numba import njit, prange

from ._rng import splitmix64

# 2**15 bins of 2**16 bit patterns (a relative width of 2**-7): the counts
# of a thread fit its cache; the boundary bin is resolved exactly later.
N_BINS = 1 << 15
BIN_SHIFT = 16


@njit(cache=True, parallel=True)
def abs_mask_active(G, r0, indptr, indices):
    """|G| in place, with the table's active coordinates set to -1."""
    for r in prange(G.shape[0]):
        row = G[r]
        for k in range(row.shape[0]):
            row[k] = abs(row[k])
        for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
            row[indices[p]] = -1.0


@njit(cache=True)
def part_size(n, n_parts, align):
    """Entries per part when ``n`` entries are split into ``n_parts`` parts of whole rows."""
    return ((n + n_parts - 1) // n_parts + align - 1) // align * align


@njit(cache=True, parallel=True)
def bin_counts(bits, n, hist, local, align, magnitude):
    """Add the bin counts of the float32 bit patterns ``bits[:n, 0]`` to ``hist``.

    ``bits`` is 2-D so that gradient scores (one column) and weights (slot
    0 of the value slots) share one compiled version. ``magnitude``: count
    |x| (the sign bit cleared); otherwise entries with the sign bit set
    (masked scores) are skipped. The entries are split into one part per
    row of ``local`` (one per thread), in multiples of ``align`` entries;
    ``local`` receives each part's own counts (no shared counters), which
    :func:`collect_at_least` uses to place each part's output.
    """
    n_parts = local.shape[0]
    per = part_size(n, n_parts, align)
    for part in prange(n_parts):
        counts = local[part]
        for k in range(counts.shape[0]):
            counts[k] = 0
        for t in range(part * per, min(n, (part + 1) * per)):
            b = bits[t, 0]
            if magnitude:
                b &= 0x7FFFFFFF
            if b >= 0:
                counts[b >> BIN_SHIFT] += 1
    for part in range(n_parts):
        for k in range(hist.shape[0]):
            hist[k] += local[part, k]


@njit(cache=True)
def magnitudes_in_bin(bits, n, b, out, n_out):
    """Append the |x| patterns of ``bits[:n, 0]`` that fall in bin ``b``; return the fill."""
    for t in range(n):
        m = bits[t, 0] & 0x7FFFFFFF
        if m >> BIN_SHIFT == b and n_out < out.shape[0]:
            out[n_out] = np.int32(m)
            n_out += 1
    return n_out


@njit(cache=True, parallel=True)
def collect_at_least(G, r0, lo, local, rows, cols, vals, n):
    """Append the coordinates and scores of ``G`` whose bin is ``lo`` or above.

    ``local`` holds the per-part counts of :func:`bin_counts` over ``G``
    (aligned on rows), so each part knows where its entries go and the
    parts are scanned in parallel. The list stays in row-major order,
    sorted by (row, col); masked entries (negative) never qualify for
    ``lo >= 1``. Returns the new fill count; a part never writes past its
    counted share or the lists' capacity, so a non-deterministic score
    cannot overrun them.
    """
    n_rows, d = G.shape
    n_parts = local.shape[0]
    per = part_size(n_rows * d, n_parts, d) // max(d, 1)
    at = np.empty(n_parts + 1, np.int64)
    at[0] = n
    for part in range(n_parts):
        c = 0
        for b in range(lo, local.shape[1]):
            c += local[part, b]
        at[part + 1] = at[part] + c
    for part in prange(n_parts):
        _collect_rows(G, r0, lo, part * per, min(n_rows, (part + 1) * per), rows, cols, vals,
                      at[part], min(at[part + 1], rows.shape[0]))
    return min(at[n_parts], rows.shape[0])


@njit(cache=True)
def _collect_rows(G, r0, lo, a, b, rows, cols, vals, n, end):
    # Rows a:b of collect_at_least, written from position n up to end.
    d = G.shape[1]
    bits = G.reshape(-1).view(np.int32)
    lowest = np.int32(lo << BIN_SHIFT)
    for r in range(a, b):
        row = bits[r * d:(r + 1) * d]
        # Most rows hold nothing this high, and their maximum is a
        # vectorised scan.
        if row.max() < lowest:
            continue
        for c in range(d):
            if row[c] >= lowest and n < end:
                rows[n] = r0 + r
                cols[n] = c
                vals[n] = G[r, c]
                n += 1


@njit(cache=True)
def split_at_bin(rows, cols, vals, bits, bstar):
    """Kept scores split into those above bin ``bstar`` and those inside it (order kept).

    ``bits`` is ``vals`` viewed as int32.
    """
    n_hi = 0
    n_bd = 0
    for t in range(vals.shape[0]):
        b = bits[t] >> BIN_SHIFT
        if b > bstar:
            n_hi += 1
        elif b == bstar:
            n_bd += 1
    hi_rows = np.empty(n_hi, np.int32)
    hi_cols = np.empty(n_hi, np.int32)
    bd_rows = np.empty(n_bd, np.int32)
    bd_cols = np.empty(n_bd, np.int32)
    bd_vals = np.empty(n_bd, np.float32)
    i = 0
    j = 0
    for t in range(vals.shape[0]):
        b = bits[t] >> BIN_SHIFT
        if b > bstar:
            hi_rows[i] = rows[t]
            hi_cols[i] = cols[t]
            i += 1
        elif b == bstar:
            bd_rows[j] = rows[t]
            bd_cols[j] = cols[t]
            bd_vals[j] = vals[t]
            j += 1
    return hi_rows, hi_cols, bd_rows, bd_cols, bd_vals


@njit(cache=True)
def merge_sorted_coords(a_rows, a_cols, b_rows, b_cols):
    """Merge two (row, col)-sorted coordinate lists into one."""
    n = a_rows.shape[0] + b_rows.shape[0]
    rows = np.empty(n, a_rows.dtype)
    cols = np.empty(n, a_cols.dtype)
    ia = 0
    ib = 0
    for t in range(n):
        take_a = ib >= b_rows.shape[0] or (
            ia < a_rows.shape[0]
            and (a_rows[ia] < b_rows[ib] or (a_rows[ia] == b_rows[ib] and a_cols[ia] < b_cols[ib]))
        )
        if take_a:
            rows[t] = a_rows[ia]
            cols[t] = a_cols[ia]
            ia += 1
        else:
            rows[t] = b_rows[ib]
            cols[t] = b_cols[ib]
            ib += 1
    return rows, cols


@njit(cache=True)
def rebuild_in_place(indptr, indices, values, keep, new_rows, new_cols):
    """Drop entries with ``keep == False`` and insert zero-valued new ones.

    Works inside the existing arrays (which must have room for the new
    count): kept entries are compacted to the front, then each row is merged
    with its new coordinates from the back, last row first, so no write
    overtakes an unread entry. ``new_rows, new_cols`` are sorted and hold
    no active coordinate. ``values`` may be any integer or float view of the
    slots (a zero bit pattern is 0.0). Updates ``indptr`` and returns the
    new nnz.
    """
    n_rows = indptr.shape[0] - 1
    kept = np.zeros(n_rows, np.int64)
    w = 0
    for r in range(n_rows):
        w0 = w
        # Branchless: every entry is copied, the write position advances
        # only past kept ones (about half are dropped early in a fit, so a
        # branch would be mispredicted at random).
        for p in range(indptr[r], indptr[r + 1]):
            indices[w] = indices[p]
            _copy_slots(values, w, p)
            w += np.int64(keep[p])
        kept[r] = w - w0
    added = np.zeros(n_rows, np.int64)
    for t in range(new_rows.shape[0]):
        added[new_rows[t]] += 1
    new_end = w + new_rows.shape[0]
    kept_end = w
    nt = new_rows.shape[0] - 1
    for r in range(n_rows - 1, -1, -1):
        kept_start = kept_end - kept[r]
        row_start = new_end - kept[r] - added[r]
        kp = kept_end - 1
        out = new_end - 1
        nt_stop = nt - added[r]  # the row's new coordinates: nt_stop + 1 .. nt
        # Merge from the back while both lists have entries; then the rest
        # of one list is copied without comparisons (a row with nothing new
        # is only shifted right).
        while nt > nt_stop and kp >= kept_start:
            if new_cols[nt] > indices[kp]:
                indices[out] = new_cols[nt]
                _zero_slots(values, out)
                nt -= 1
            else:
                indices[out] = indices[kp]
                _copy_slots(values, out, kp)
                kp -= 1
            out -= 1
        while nt > nt_stop:
            indices[out] = new_cols[nt]
            _zero_slots(values, out)
            nt -= 1
            out -= 1
        if out > kp:
            while kp >= kept_start:
                indices[out] = indices[kp]
                _copy_slots(values, out, kp)
                kp -= 1
                out -= 1
        indptr[r + 1] = new_end
        new_end = row_start
        kept_end = kept_start
    indptr[0] = 0
    return indptr[n_rows]


@njit(cache=True, inline="always")
def _zero_slots(values, dst):
    for s in range(values.shape[1]):
        values[dst, s] = 0


@njit(cache=True, inline="always")
def _copy_slots(values, dst, src):
    if values.shape[1] == 1:  # the usual case: weight and state in one word
        values[dst, 0] = values[src, 0]
    else:
        for s in range(values.shape[1]):
            values[dst, s] = values[src, s]


@njit(cache=True)
def is_canonical(indptr, indices, n_cols):
    """True when every row's indices are strictly increasing and in range."""
    for r in range(indptr.shape[0] - 1):
        if indptr[r + 1] < indptr[r]:
            return False
        prev = -1
        for p in range(indptr[r], indptr[r + 1]):
            k = indices[p]
            if k <= prev or k >= n_cols:
                return False
            prev = k
    return True


@njit(cache=True)
def random_inactive(indptr, indices, n_cols, count, seed, taken_rows, taken_cols):
    """Draw ``count`` distinct inactive coordinates uniformly (rejection).

    Coordinates already in ``taken_*`` (sorted) are excluded too. Returns
    unsorted ``(rows, cols)``; the caller sorts them.
    """
    n_rows = indptr.shape[0] - 1
    rows = np.empty(count, np.int32)
    cols = np.empty(count, np.int32)
    got = 0
    t = 0
    seen = set()
    while got < count:
        z = splitmix64(np.uint64(seed) + splitmix64(np.uint64(t)))
        t += 1
        flat = np.int64(z >> np.uint64(1)) % (n_rows * n_cols)
        r = flat // n_cols
        c = flat % n_cols
        if flat in seen:
            continue
        lo = indptr[r]
        hi = indptr[r + 1]
        active = False
        while lo < hi:
            mid = (lo + hi) >> 1
            if indices[mid] < c:
                lo = mid + 1
            elif indices[mid] > c:
                hi = mid
            else:
                active = True
                break
        if active or _coord_in(taken_rows, taken_cols, r, c):
            continue
        seen.add(flat)
        rows[got] = r
        cols[got] = c
        got += 1
    return rows, cols


@njit(cache=True, inline="always")
def _coord_in(rows, cols, r, c):
    lo = 0
    hi = rows.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if rows[mid] < r or (rows[mid] == r and cols[mid] < c):
            lo = mid + 1
        else:
            hi = mid
    return lo < rows.shape[0] and rows[lo] == r and cols[lo] == c


@njit(cache=True, parallel=True)
def init_pattern(indptr, n_cols, seed, scale, indices, values):
    """Fill rows with ``indptr[r+1] - indptr[r]`` distinct sorted random columns.

    Weights (slot 0) are uniform in [-scale, scale); other slots are zero.
    """
    for r in prange(indptr.shape[0] - 1):
        start = indptr[r]
        count = indptr[r + 1] - start
        if count == 0:
            continue
        pool = np.arange(n_cols)
        key = splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(r)))
        # Partial Fisher-Yates: the first ``count`` slots are a uniform subset.
        for t in range(count):
            z = splitmix64(key + np.uint64(t))
            pick = t + np.int64(z >> np.uint64(1)) % (n_cols - t)
            pool[t], pool[pick] = pool[pick], pool[t]
        chosen = np.sort(pool[:count])
        for t in range(count):
            p = start + t
            indices[p] = chosen[t]
            z = splitmix64(key ^ splitmix64(np.uint64(n_cols + t)))
            u = np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
            values[p, 0] = scale * (2.0 * u - 1.0)
            for s in range(1, values.shape[1]):
                values[p, s] = 0.0


@njit(cache=True)
def mark_coverage(indptr, indices, n_cols, bits):
    """Set the bit of every active coordinate; return how many were new."""
    new = 0
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            new += _mark(bits, r * n_cols + indices[p])
    return new


@njit(cache=True)
def mark_coords(rows, cols, n_cols, bits):
    """Set the bits of the coordinates ``(rows, cols)``; return how many were new."""
    new = 0
    for t in range(rows.shape[0]):
        new += _mark(bits, np.int64(rows[t]) * n_cols + cols[t])
    return new


@njit(cache=True, inline="always")
def _mark(bits, flat):
    byte = flat >> 3
    mask = np.uint8(1 << (flat & 7))
    if bits[byte] & mask:
        return 0
    bits[byte] |= mask
    return 1


@njit(cache=True, parallel=True)
def prune_mask(w, threshold, keep):
    """keep[p] = |w[p]| > threshold; returns how many are exactly at it."""
    ties = 0
    for p in prange(w.shape[0]):
        a = abs(w[p])
        keep[p] = a > threshold
        if a == threshold:
            ties += 1
    return ties
