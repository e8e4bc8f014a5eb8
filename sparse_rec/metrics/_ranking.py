"""Top-k ranking metrics, AUC and the sampled (NCF) protocol.

All metrics share one hit matrix: ``hits[u, r]`` is True when the item at
0-based position ``r`` of user ``u``'s list is held out for ``u``. Each
metric is a cheap reduction of that matrix, so computing six costs about as
much as computing one.
"""

import numpy as np
from scipy.stats import rankdata

from .._validation import check_ids, check_interactions, check_positive_int

__all__ = [
    "METRIC_NAMES",
    "auc_score",
    "evaluate",
    "evaluate_sampled",
    "hit_rate_at_k",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "sampled_ranking_metrics",
]

METRIC_NAMES = ("precision", "recall", "ndcg", "hit_rate", "map", "mrr")


# --------------------------------------------------------------------------- checks
def _check_y(y, name):
    # Held-out sets may legitimately be empty for a batch of users.
    return check_interactions(y, name=name, allow_empty=True)


def _check_top_items(top_items, n_users, n_items, k):
    top = np.asarray(top_items)
    if top.ndim != 2:
        raise ValueError(
            f"top_items must be a 2-D array (users x ranked items); got shape {top.shape}."
        )
    if top.size and not np.issubdtype(top.dtype, np.integer):
        raise ValueError(
            f"top_items must hold integer item ids (-1 for padding); got dtype {top.dtype}. "
            "Cast with top_items.astype(np.int64)."
        )
    if top.shape[0] != n_users:
        raise ValueError(
            f"top_items and y_true must have one row per user; got {top.shape[0]} rows "
            f"in top_items and {n_users} in y_true."
        )
    if top.shape[1] < k:
        raise ValueError(
            f"top_items must have at least k={k} columns; got {top.shape[1]}. "
            f"Ask the model for at least k items (recommend(..., n={k}))."
        )
    top = top[:, :k].astype(np.int64, copy=False)
    if top.size and (top.min() < -1 or top.max() >= n_items):
        bad = top[(top < -1) | (top >= n_items)][:5].tolist()
        raise ValueError(
            f"top_items must be item ids in [0, {n_items}) or -1 for padding; got {bad}."
        )
    return top


def _check_metrics(metrics):
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRIC_NAMES}; got {metrics!r}.")
    return metrics


# --------------------------------------------------------------------------- top-k
def _hit_matrix(top, y):
    """Boolean (n_users, k): is ``top[u, r]`` a held-out item of row ``u``?"""
    n_users, n_items = y.shape
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(y.indptr))
    # Canonical CSR is sorted by (row, item), so flat keys are sorted too and
    # membership is one vectorised binary search.
    true_keys = rows * n_items + y.indices
    valid = top >= 0
    keys = np.where(valid, np.arange(n_users, dtype=np.int64)[:, None] * n_items + top, -1)
    if true_keys.size == 0:
        return np.zeros(top.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(true_keys, keys), true_keys.size - 1)
    hits = valid & (true_keys[pos] == keys)
    # A repeated id counts once (at its best position), so a faulty
    # recommender cannot score above the ideal.
    order = np.argsort(keys, axis=1, kind="stable")
    sorted_keys = np.take_along_axis(keys, order, axis=1)
    dup_sorted = np.zeros(top.shape, dtype=bool)
    dup_sorted[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return hits & ~dup


def _per_row(hits, n_true, k, metrics):
    """Per-row metric values from the hit matrix of evaluated rows."""
    n_hits = hits.sum(axis=1)
    positions = np.arange(1, k + 1)
    n_ideal = np.minimum(n_true, k)
    out = {}
    for name in metrics:
        if name == "precision":
            out[name] = n_hits / k
        elif name == "recall":
            out[name] = n_hits / n_true
        elif name == "ndcg":
            discount = 1.0 / np.log2(positions + 1)
            out[name] = (hits @ discount) / np.cumsum(discount)[n_ideal - 1]
        elif name == "hit_rate":
            out[name] = (n_hits > 0).astype(np.float64)
        elif name == "map":
            prec = np.cumsum(hits, axis=1) / positions
            out[name] = np.where(hits, prec, 0.0).sum(axis=1) / n_ideal
        else:  # mrr; argmax finds the first True, guarded for rows without hits
            out[name] = np.where(n_hits > 0, 1.0 / (np.argmax(hits, axis=1) + 1), 0.0)
    return out


def _ranking_sums(top_items, y_true, k, metrics, per_row=None):
    """Sums of per-row metrics and the counts, so batches can be pooled.

    ``per_row``, a list, receives ``(evaluated rows, {metric: values})``.
    """
    k = check_positive_int(k, "k")
    metrics = _check_metrics(metrics)
    y = _check_y(y_true, "y_true")
    top = _check_top_items(top_items, y.shape[0], y.shape[1], k)
    n_true = np.diff(y.indptr)
    keep = n_true > 0
    hits = _hit_matrix(top[keep], y[keep])
    rows = _per_row(hits, n_true[keep], k, metrics)
    if per_row is not None:
        per_row.append((np.flatnonzero(keep), rows))
    sums = {name: float(v.sum()) for name, v in rows.items()}
    return sums, int(keep.sum()), int((~keep).sum())


def _finish(sums, n_eval, n_skipped):
    out = {name: (s / n_eval if n_eval else float("nan")) for name, s in sums.items()}
    out["n_users_evaluated"] = n_eval
    out["n_users_skipped"] = n_skipped
    return out


def ranking_metrics(top_items, y_true, k=20, metrics=METRIC_NAMES):
    """Mean top-k ranking metrics over rows that have held-out items.

    Parameters
    ----------
    top_items : array of int, shape (n_users, >= k)
        Recommended item ids per row, best first; -1 marks padding. Only the
        first ``k`` columns are used; a repeated id counts once.
    y_true : sparse matrix or 2-D array, shape (n_users, n_items)
        Non-zero entries are the held-out relevant items of each row.
    k : int, default=20
        Cut-off.
    metrics : sequence of str, default=METRIC_NAMES
        Any of ``"precision", "recall", "ndcg", "hit_rate", "map", "mrr"``;
        see the ``*_at_k`` functions for the definitions.

    Returns
    -------
    dict
        Metric name -> mean over evaluated rows (NaN when there are none),
        plus ``"n_users_evaluated"`` and ``"n_users_skipped"`` (rows with no
        held-out item).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> top = np.array([[0, 1], [2, -1], [0, 1]])
    >>> y = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 1], [0, 0, 0]]))
    >>> ranking_metrics(top, y, k=2, metrics=("precision", "hit_rate"))
    {'precision': 0.5, 'hit_rate': 1.0, 'n_users_evaluated': 2, 'n_users_skipped': 1}
    """
    return _finish(*_ranking_sums(top_items, y_true, k, metrics))


def _single(name, top_items, y_true, k):
    return ranking_metrics(top_items, y_true, k, metrics=(name,))[name]


def precision_at_k(top_items, y_true, k=20):
    r"""Mean precision at k: :math:`P@k = |\mathrm{top}_k \cap T| / k`.

    ``T`` is the row's held-out set; rows with empty ``T`` are skipped.
    Parameters are as in :func:`ranking_metrics`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> precision_at_k(np.array([[0, 1]]), sp.csr_matrix([[1, 0, 1]]), k=2)
    0.5
    """
    return _single("precision", top_items, y_true, k)


def recall_at_k(top_items, y_true, k=20):
    r"""Mean recall at k: :math:`R@k = |\mathrm{top}_k \cap T| / |T|`.

    The denominator is ``|T|``, not ``min(k, |T|)``, as in the NGCF and
    LightGCN evaluation code. Parameters are as in :func:`ranking_metrics`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> recall_at_k(np.array([[0, 1]]), sp.csr_matrix([[1, 0, 1, 1]]), k=2)
    0.3333333333333333
    """
    return _single("recall", top_items, y_true, k)


def ndcg_at_k(top_items, y_true, k=20):
    r"""Mean NDCG at k with binary relevance.

    :math:`DCG = \sum_{r < k,\ \mathrm{top}[r] \in T} 1 / \log_2(r + 2)` over
    0-based positions ``r``, and :math:`NDCG = DCG / IDCG` with
    :math:`IDCG = \sum_{r < \min(|T|, k)} 1 / \log_2(r + 2)` (LightGCN).
    Parameters are as in :func:`ranking_metrics`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> ndcg_at_k(np.array([[0, 1]]), sp.csr_matrix([[1, 0]]), k=2)
    1.0
    """
    return _single("ndcg", top_items, y_true, k)


def hit_rate_at_k(top_items, y_true, k=20):
    r"""Mean hit rate at k: :math:`HR@k = 1[|\mathrm{top}_k \cap T| > 0]`.

    Parameters are as in :func:`ranking_metrics`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> hit_rate_at_k(np.array([[0, 1], [0, 1]]), sp.csr_matrix([[0, 1], [0, 0]]), k=2)
    1.0
    """
    return _single("hit_rate", top_items, y_true, k)


def map_at_k(top_items, y_true, k=20):
    r"""Mean average precision at k.

    :math:`AP@k = \sum_{r < k,\ \mathrm{top}[r] \in T} P@(r + 1) / \min(|T|, k)`
    over 0-based hit positions ``r``. Parameters are as in
    :func:`ranking_metrics`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> map_at_k(np.array([[1, 0]]), sp.csr_matrix([[1, 0]]), k=2)
    0.5
    """
    return _single("map", top_items, y_true, k)


def mrr_at_k(top_items, y_true, k=20):
    r"""Mean reciprocal rank at k: :math:`1 / (r_1 + 1)`, or 0 without a hit.

    ``r_1`` is the 0-based position of the first hit within the top ``k``.
    Parameters are as in :func:`ranking_metrics`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> mrr_at_k(np.array([[2, 0, 1]]), sp.csr_matrix([[0, 1, 0]]), k=3)
    0.3333333333333333
    """
    return _single("mrr", top_items, y_true, k)


# --------------------------------------------------------------------------- AUC
def _auc_rows(scores, y, exclude, return_rows=False):
    """Per-row AUC of the rows that have a positive and a negative."""
    s = np.array(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(
            f"scores must have the shape of y_true {y.shape}; got {s.shape}. "
            "Score every item of every row."
        )
    if np.isnan(s).any():
        raise ValueError(
            f"scores must not contain NaN; got {int(np.isnan(s).sum())}. Check the model."
        )
    pos = y.toarray() != 0
    if exclude is not None:
        ex = _check_y(exclude, "exclude")
        if ex.shape != y.shape:
            raise ValueError(f"exclude must have the shape of y_true {y.shape}; got {ex.shape}.")
        # NaN marks 'not a candidate'; rankdata then ranks only the rest.
        s[(ex.toarray() != 0) & ~pos] = np.nan
    n_pos = pos.sum(axis=1)
    n_neg = (~np.isnan(s)).sum(axis=1) - n_pos
    ok = (n_pos > 0) & (n_neg > 0)
    # Mann-Whitney: average ranks give ties half a win.
    ranks = rankdata(s[ok], axis=1, nan_policy="omit")
    rank_sum = np.where(pos[ok], ranks, 0.0).sum(axis=1)
    p, n = n_pos[ok], n_neg[ok]
    values = (rank_sum - p * (p + 1) / 2.0) / (p * n)
    return (values, ok) if return_rows else values


def auc_score(scores, y_true, exclude=None):
    r"""Mean per-row ROC AUC of dense scores against held-out items.

    For a row with positives ``T`` (held-out items) and negatives ``N`` (all
    other items not in ``exclude``),
    :math:`AUC = \frac{1}{|T||N|} \sum_{i \in T, j \in N}
    (1[s_i > s_j] + \tfrac12 1[s_i = s_j])`, computed from ranks. Rows without
    a positive or a negative are skipped.

    Parameters
    ----------
    scores : array of float, shape (n_users, n_items)
    y_true : sparse matrix or 2-D array, shape (n_users, n_items)
    exclude : sparse matrix or 2-D array, shape (n_users, n_items), optional
        Items that are not negatives, e.g. training items. Held-out items
        stay positives even if listed here.

    Returns
    -------
    float
        Mean AUC over evaluated rows, NaN when there are none.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> auc_score(np.array([[0.9, 0.5, 0.1]]), sp.csr_matrix([[0, 1, 0]]))
    0.5
    >>> auc_score(np.array([[0.9, 0.5, 0.1]]), sp.csr_matrix([[0, 1, 0]]),
    ...           exclude=sp.csr_matrix([[1, 0, 0]]))
    1.0
    """
    auc = _auc_rows(scores, _check_y(y_true, "y_true"), exclude)
    return float(auc.mean()) if auc.size else float("nan")


# --------------------------------------------------------------------------- full ranking
def evaluate(
    model, X_train, X_test, k=20, metrics=METRIC_NAMES, users=None, batch_size=1024, auc=False,
    per_user=False,
):
    """Full-ranking evaluation of a fitted recommender, in user batches.

    For each batch, ``model.recommend(batch_users, n=k,
    filter_seen=X_train[batch_users])`` gives the top ``k`` items among
    those not seen in training; they are scored against ``X_test``.

    Parameters
    ----------
    model : object
        Has ``recommend(users, n, filter_seen)`` returning ``(ids, scores)``
        with ids of shape (len(users), k), -1 padded; and, if ``auc``,
        ``score_items(users, items)`` returning scores shaped like ``items``.
    X_train, X_test : sparse matrix, shape (n_users, n_items)
        Training interactions (excluded from rankings) and held-out items.
    k : int, default=20
    metrics : sequence of str, default=METRIC_NAMES
    users : array of int, optional
        Users to evaluate; by default every row of ``X_test`` with a
        held-out item.
    batch_size : int, default=1024
        Users per call to the model; results do not depend on it.
    auc : bool, default=False
        Also report ``"auc"`` (training items excluded). Scores every item,
        so it needs ``batch_size * n_items`` floats of memory per batch.
    per_user : bool, default=False
        Also return each evaluated user's values (for significance tests,
        or to compare cold and active users), under ``"per_user"``.

    Returns
    -------
    dict
        As :func:`ranking_metrics`, plus ``"auc"`` when asked. With
        ``per_user=True`` also ``"per_user"``: a dict with ``"users"``
        (int64, the evaluated users in the order given, users without a
        held-out item left out) and one float64 array per metric aligned
        with it (``"auc"`` too when asked, NaN for a user whose AUC is
        undefined: no unseen negative). The means above are the means of
        these arrays.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> class Popular:
    ...     def recommend(self, users, n, filter_seen):
    ...         s = np.tile([3.0, 2.0, 1.0], (len(users), 1))
    ...         s[filter_seen.toarray() != 0] = -np.inf
    ...         ids = np.argsort(-s, axis=1, kind="stable")[:, :n]
    ...         return ids, np.take_along_axis(s, ids, axis=1)
    >>> train = sp.csr_matrix([[1, 0, 0], [0, 0, 0]])
    >>> test = sp.csr_matrix([[0, 1, 0], [0, 0, 1]])
    >>> evaluate(Popular(), train, test, k=1, metrics=("hit_rate",))
    {'hit_rate': 0.5, 'n_users_evaluated': 2, 'n_users_skipped': 0}
    >>> out = evaluate(Popular(), train, test, k=1, metrics=("hit_rate",), per_user=True)
    >>> out["per_user"]["users"].tolist(), out["per_user"]["hit_rate"].tolist()
    ([0, 1], [1.0, 0.0])
    """
    k = check_positive_int(k, "k")
    metrics = _check_metrics(metrics)
    batch_size = check_positive_int(batch_size, "batch_size")
    X_train = _check_y(X_train, "X_train")
    X_test = _check_y(X_test, "X_test")
    if X_train.shape != X_test.shape:
        raise ValueError(
            f"X_train and X_test must have the same shape (users x items); got "
            f"{X_train.shape} and {X_test.shape}. Split with sparse_rec.model_selection "
            "so indices stay aligned."
        )
    n_users, n_items = X_test.shape
    if users is None:
        users = np.flatnonzero(np.diff(X_test.indptr)).astype(np.int64)
        if users.size == 0:
            raise ValueError("X_test must have at least one user with a held-out item; got none.")
    else:
        users = check_ids(users, n_users)

    sums = dict.fromkeys(metrics, 0.0)
    n_eval = n_skipped = 0
    auc_sum, auc_n = 0.0, 0
    rows_out, auc_out = ([], []) if per_user else (None, None)
    for start in range(0, users.size, batch_size):
        batch = users[start : start + batch_size]
        seen, held_out = X_train[batch], X_test[batch]
        ids, _ = model.recommend(batch, n=k, filter_seen=seen)
        # Sums, not means, so pooling batches equals evaluating all at once.
        b_sums, b_eval, b_skip = _ranking_sums(ids, held_out, k, metrics, rows_out)
        for name in metrics:
            sums[name] += b_sums[name]
        n_eval += b_eval
        n_skipped += b_skip
        if auc:
            items = np.tile(np.arange(n_items, dtype=np.int64), (batch.size, 1))
            rows, ok = _auc_rows(model.score_items(batch, items), held_out, seen,
                                 return_rows=True)
            auc_sum += float(rows.sum())
            auc_n += rows.size
            if per_user:
                full = np.full(batch.size, np.nan)
                full[ok] = rows
                auc_out.append(full[np.diff(held_out.indptr) > 0])
    out = _finish(sums, n_eval, n_skipped)
    if auc:
        out["auc"] = auc_sum / auc_n if auc_n else float("nan")
    if per_user:
        offsets = np.cumsum([0] + [batch_size] * max(len(rows_out) - 1, 0))
        per = {"users": np.concatenate([users[o + r] for o, (r, _) in zip(offsets, rows_out,
                                                                           strict=True)])}
        for name in metrics:
            per[name] = np.concatenate([v[name] for _, v in rows_out]).astype(np.float64)
        if auc:
            per["auc"] = np.concatenate(auc_out)
        out["per_user"] = per
    return out


# --------------------------------------------------------------------------- sampled
def sampled_ranking_metrics(candidate_scores, k=10):
    r"""HR@k and NDCG@k under the NCF protocol (one positive, sampled negatives).

    Column 0 holds the held-out positive's score, the other columns the
    sampled negatives'. The positive's 0-based rank is
    :math:`r = \#\{j : s_j \ge s_0\}`: ties are ranked above the positive,
    the pessimistic choice, so a model scoring everything equal gets no
    credit. Then :math:`HR@k = 1[r < k]` and
    :math:`NDCG@k = 1[r < k] / \log_2(r + 2)`.

    Parameters
    ----------
    candidate_scores : array of float, shape (n_users, 1 + n_negatives)
    k : int, default=10

    Returns
    -------
    dict
        ``{"hit_rate": ..., "ndcg": ..., "n_users_evaluated": n_users}``.

    Examples
    --------
    >>> import numpy as np
    >>> sampled_ranking_metrics(np.array([[0.9, 0.1, 0.2], [0.5, 0.5, 0.1]]), k=1)
    {'hit_rate': 0.5, 'ndcg': 0.5, 'n_users_evaluated': 2}
    """
    k = check_positive_int(k, "k")
    s = np.asarray(candidate_scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(
            "candidate_scores must be 2-D with the positive in column 0 and at least one "
            f"negative after it; got shape {s.shape}."
        )
    if np.isnan(s).any():
        raise ValueError(
            f"candidate_scores must not contain NaN; got {int(np.isnan(s).sum())}. Check the model."
        )
    rank = (s[:, 1:] >= s[:, :1]).sum(axis=1)
    hit = rank < k
    ndcg = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    n = s.shape[0]
    return {
        "hit_rate": float(hit.mean()) if n else float("nan"),
        "ndcg": float(ndcg.mean()) if n else float("nan"),
        "n_users_evaluated": n,
    }


def evaluate_sampled(model, users, test_items, negatives, k=10):
    """Sampled evaluation: score each user's positive with its negatives.

    Parameters
    ----------
    model : object
        Has ``score_items(users, items)`` returning scores shaped like
        ``items``.
    users : array of int, shape (n,)
    test_items : array of int, shape (n,)
        The held-out positive of each user.
    negatives : array of int, shape (n, n_negatives)
        Sampled negatives per user, e.g. from
        :func:`sparse_rec.model_selection.leave_one_out_split`.
    k : int, default=10

    Returns
    -------
    dict
        As :func:`sampled_ranking_metrics`.

    Examples
    --------
    >>> import numpy as np
    >>> class ByItemId:
    ...     def score_items(self, users, items):
    ...         return items.astype(float)
    >>> evaluate_sampled(ByItemId(), [0, 1], [5, 0], [[1, 2], [3, 4]], k=1)
    {'hit_rate': 0.5, 'ndcg': 0.5, 'n_users_evaluated': 2}
    """
    users = np.asarray(users, dtype=np.int64)
    test_items = np.asarray(test_items, dtype=np.int64)
    negatives = np.asarray(negatives, dtype=np.int64)
    if users.ndim != 1 or test_items.shape != users.shape:
        raise ValueError(
            "users and test_items must be 1-D arrays of the same length; got shapes "
            f"{users.shape} and {test_items.shape}."
        )
    if negatives.ndim != 2 or negatives.shape[0] != users.size:
        raise ValueError(
            f"negatives must have shape (len(users), n_negatives) = ({users.size}, ...); "
            f"got {negatives.shape}."
        )
    candidates = np.column_stack([test_items, negatives])
    scores = np.asarray(model.score_items(users, candidates))
    if scores.shape != candidates.shape:
        raise ValueError(
            f"model.score_items must return one score per candidate, shape "
            f"{candidates.shape}; got {scores.shape}."
        )
    return sampled_ranking_metrics(scores, k=k)
