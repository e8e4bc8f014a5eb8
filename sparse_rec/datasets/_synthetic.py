"""Synthetic implicit-feedback matrices with power-law popularity."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state

from .._validation import check_positive_int

__all__ = ["make_interactions"]

# Below this share of new pairs per draw, power-law sampling is mostly hitting
# pairs that exist already; the rest is then filled uniformly so that the loop ends.
_MIN_YIELD = 0.02
_MAX_ROUNDS = 200


def make_interactions(n_users=1000, n_items=500, n_interactions=20000, alpha=1.0,
                      random_state=None):
    """Generate a random binary users x items matrix with skewed popularity.

    Item popularity follows a Zipf-like power law: the item of popularity rank
    ``r`` (1-based) is drawn with probability proportional to ``r ** -alpha``.
    User activity is skewed too, more mildly, with exponent ``alpha / 2``.
    Ranks are assigned to user and item indices at random, so index order says
    nothing about popularity. Pairs are drawn independently from these two
    distributions, repeats are merged, and fresh pairs are drawn until there
    are exactly ``n_interactions`` distinct ones; surplus pairs of the last draw
    are dropped at random. When the requested density is so high that the
    power-law draws keep hitting existing pairs (fewer than 2 % new), the
    remaining pairs are drawn uniformly among the empty cells. Some users or
    items may have no interaction at all.

    The draws are vectorised: 10 million interactions of 1 million users with
    200,000 items take a few seconds and a few hundred MB.

    Parameters
    ----------
    n_users : int, default=1000
        Number of rows.
    n_items : int, default=500
        Number of columns.
    n_interactions : int, default=20000
        Exact number of non-zeros; at most ``n_users * n_items``.
    alpha : float, default=1.0
        Power-law exponent of item popularity (0 gives uniform popularity;
        larger values concentrate interactions on fewer items).
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None
        Seed or generator, for reproducible output.

    Returns
    -------
    X : scipy.sparse.csr_matrix of float32, shape (n_users, n_items)
        Canonical CSR (sorted indices, no repeats) with ``n_interactions``
        entries, all 1.0.

    Examples
    --------
    >>> import numpy as np
    >>> from sparse_rec.datasets import make_interactions
    >>> X = make_interactions(n_users=200, n_items=100, n_interactions=3000, random_state=0)
    >>> X.shape, X.nnz, X.dtype
    ((200, 100), 3000, dtype('float32'))
    >>> counts = np.sort(np.asarray(X.sum(axis=0)).ravel())[::-1]
    >>> bool(counts[:10].sum() > 0.2 * X.nnz)  # the top 10 % of items hold over 20 %
    True
    """
    n_users = check_positive_int(n_users, "n_users")
    n_items = check_positive_int(n_items, "n_items")
    n_interactions = check_positive_int(n_interactions, "n_interactions")
    if n_interactions > n_users * n_items:
        raise ValueError(
            f"n_interactions must be at most n_users * n_items = {n_users * n_items:,} "
            f"(every cell filled); got {n_interactions:,}. Ask for fewer interactions or a "
            "larger matrix."
        )
    if (
        not isinstance(alpha, numbers.Real)
        or isinstance(alpha, bool)
        or not np.isfinite(alpha)
        or alpha < 0
    ):
        raise ValueError(
            f"alpha must be a finite number >= 0 (0 means uniform popularity); got {alpha!r}."
        )
    rng = _as_generator(random_state)
    shape = (n_users, n_items)
    user_p = _power_law(n_users, alpha / 2, rng)
    item_p = _power_law(n_items, alpha, rng)

    def draw_power_law(k):
        # Per-index counts from one multinomial, expanded and paired at random:
        # the same distribution as k independent draws, without a binary search each.
        rows = np.repeat(np.arange(n_users, dtype=np.int32), rng.multinomial(k, user_p))
        cols = np.repeat(np.arange(n_items, dtype=np.int32), rng.multinomial(k, item_p))
        rng.shuffle(cols)
        return rows, cols

    def draw_uniform(k):
        return (rng.integers(0, n_users, k, dtype=np.int32),
                rng.integers(0, n_items, k, dtype=np.int32))

    draw = draw_power_law
    X = sp.csr_matrix(shape, dtype=np.float32)
    k = n_interactions
    for _ in range(_MAX_ROUNDS):
        before = X.nnz
        rows, cols = draw(k)
        new = sp.csr_matrix((np.ones(k, dtype=np.float32), (rows, cols)), shape=shape)
        del rows, cols
        X = X + new if before else new
        X.sum_duplicates()
        need = n_interactions - X.nnz
        if need <= 0:
            break
        share_new = (X.nnz - before) / k
        if share_new < _MIN_YIELD and draw is draw_power_law:
            draw = draw_uniform
            share_new = 1.0 - X.nnz / (n_users * n_items)
        # Draw enough to cover the gap at the rate of new pairs seen so far.
        k = int(min(need / max(share_new, 1e-3) * 1.1 + 16, 4 * n_interactions + 1024))
    else:  # pragma: no cover - reaching here would need a near-full matrix of > 10^8 cells
        raise RuntimeError(
            f"could not place {n_interactions:,} distinct interactions in {_MAX_ROUNDS} rounds; "
            "ask for a lower density."
        )
    surplus = X.nnz - n_interactions
    if surplus:
        X.data[rng.choice(X.nnz, surplus, replace=False)] = 0
        X.eliminate_zeros()
    X.data[:] = 1.0
    X.sort_indices()
    return X


def _power_law(n, exponent, rng):
    """Probabilities proportional to rank ** -exponent, ranks shuffled over indices."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    weights = weights[rng.permutation(n)]
    return weights / weights.sum()


def _as_generator(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    # sklearn's convention (None, int or RandomState), turned into a fast Generator.
    seed = check_random_state(random_state).randint(0, 2**31 - 1, size=4)
    return np.random.default_rng(seed)
