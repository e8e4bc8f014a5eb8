"""Everyday workflows shared by every model: raw ids, similar users, explanations,
adding users and items to a fitted model.

:class:`WorkflowMixin` (read-only, so the served models of
:mod:`sparse_rec.serving` have it too) and :class:`PartialFitMixin` (the
estimators) implement the public methods once over a few model hooks:

``_user_vectors()``
    One row per user (dense array or sparse matrix) whose cosine
    similarity defines :meth:`WorkflowMixin.similar_users`.
``_explain(user, item, hist_items, hist_values)``
    ``(contributions, score)`` of each history item to the model's score
    of ``item`` for ``user``; the default leaves each history item out of
    a fold-in (``_fold_in``) in turn, a model overrides it when it has an
    exact decomposition.
``_partial_user_tables(X)``
    ``{attribute: SparseEmbeddingTable}`` of user rows solved for the
    histories ``X`` against the fixed item side.
``_partial_item_rows(items, X_cols)``
    ``({attribute: table}, {attribute: dense values})`` of item rows solved
    for the users ``X_cols`` against the fixed user side.

A model without a hook raises NotImplementedError naming what it lacks.
Imports numpy and scipy only (pandas when a frame is asked for).
"""

from collections import namedtuple

import numpy as np
import scipy.sparse as sp

from ._recommend import check_fitted
from ._validation import check_ids, check_interactions, check_positive_int

__all__ = ["Explanation", "PartialFitMixin", "WorkflowMixin", "occluded", "unpack_dataset"]

Explanation = namedtuple("Explanation", ["items", "contributions", "score", "rest"])
Explanation.__doc__ = """What :meth:`explain` returns.

items : ndarray of int64
    Up to ``n`` history items of the user, largest contribution first.
contributions : ndarray of float32
    Their contributions to ``score``.
score : float
    The score being explained.
rest : float
    ``score`` minus the contributions of *all* history items (the part no
    history item accounts for, such as an item bias).
"""

_BLOCK = 4096


def unpack_dataset(X):
    """``(X, raw_ids)``: the matrix of an InteractionDataset and its ``(user_ids,
    item_ids)``, or ``X`` itself and None."""
    if all(hasattr(X, a) for a in ("X", "user_ids", "item_ids")) and not sp.issparse(X):
        return X.X, (np.asarray(X.user_ids), np.asarray(X.item_ids))
    return X, None


class _IdIndex:
    """Raw id -> index of one id array (a dict: ids of any hashable type)."""

    def __init__(self, ids):
        self.ids = ids
        self.index = {v: k for k, v in enumerate(ids.tolist())}

    def lookup(self, raw, what):
        arr = np.asarray(raw, dtype=object if not isinstance(raw, np.ndarray) else None)
        flat = arr.reshape(-1).tolist()
        out = np.empty(len(flat), np.int64)
        for k, v in enumerate(flat):
            pos = self.index.get(v)
            if pos is None:
                raise KeyError(
                    f"{what} id {v!r} is not known to this model. Known {what}s are the "
                    f"{what}_ids_ given at fit; add new {what}s with partial_fit_{what}s."
                )
            out[k] = pos
        return out


def occluded(hist_items, hist_values, n_items, drop):
    """CSR rows of one history, row ``k`` without its entry ``drop[k]`` (-1: whole)."""
    h, m = len(hist_items), len(drop)
    keep = np.ones(m * h, bool)
    d = np.flatnonzero(drop >= 0)
    keep[d * h + drop[d]] = False
    rows = np.repeat(np.arange(m), h)[keep]
    return sp.csr_matrix((np.tile(hist_values, m)[keep], (rows, np.tile(hist_items, m)[keep])),
                         shape=(m, n_items))


def _pad_value(dtype):
    return {"U": "", "S": b"", "O": None, "f": np.nan}.get(dtype.kind, -1)


class WorkflowMixin:
    """Raw-id recommendations, similar users and explanations (read-only)."""

    # --- raw ids ----------------------------------------------------------------
    def _id_index(self, what):
        ids = getattr(self, f"{what}_ids_", None)
        if ids is None:
            return None
        cache = self.__dict__.setdefault("_id_cache", {})
        hit = cache.get(what)
        if hit is None or hit.ids is not ids:
            hit = cache[what] = _IdIndex(np.asarray(ids))
        return hit

    def _index_of(self, raw, what, n):
        check_fitted(self)
        index = self._id_index(what)
        if index is not None:
            return index.lookup(raw, what)
        # Without raw ids (a model fitted on a matrix) the raw ids are the indices.
        arr = np.asarray(raw).reshape(-1)
        if arr.size and arr.dtype.kind not in "iu":
            raise KeyError(
                f"{what} ids {arr[:3].tolist()!r} are not indices, and this model has no "
                f"{what}_ids_: fit it on a dataset (sparse_rec.datasets.from_frame) to use raw ids."
            )
        bad = arr[(arr < 0) | (arr >= n)]
        if bad.size:
            raise KeyError(f"{what} id {bad[0]!r} is not known to this model "
                           f"(no {what}_ids_; valid ids are 0..{n - 1}).")
        return arr.astype(np.int64)

    def user_index(self, user_ids):
        """Row indices of raw user ids (``user_ids_``; the indices themselves without it).

        Raises
        ------
        KeyError
            Naming the first unknown id.
        """
        return self._index_of(user_ids, "user", self.n_users_ if hasattr(self, "n_users_")
                              else 0)

    def item_index(self, item_ids):
        """Column indices of raw item ids (``item_ids_``); see :meth:`user_index`."""
        return self._index_of(item_ids, "item", self.n_items_ if hasattr(self, "n_items_")
                              else 0)

    def _raw_items(self, ids):
        item_ids = getattr(self, "item_ids_", None)
        if item_ids is None:
            return ids
        item_ids = np.asarray(item_ids)
        out = item_ids[np.maximum(ids, 0)]
        if (ids < 0).any():
            out[ids < 0] = _pad_value(item_ids.dtype)
        return out

    def recommend_ids(self, user_ids, n=10, filter_seen=True, items=None, *, as_frame=False):
        """:meth:`recommend` in raw ids: raw user ids in, raw item ids out.

        Parameters
        ----------
        user_ids : array-like
            Raw user ids (the ``user_ids_`` of the model, set by fitting an
            :class:`~sparse_rec.datasets.InteractionDataset` or loading a file
            that has them; without them the row indices).
        n : int, default=10
        filter_seen : bool or sparse matrix, default=True
            As in :meth:`recommend`.
        items : array-like, optional
            Raw item ids to restrict the ranking to.
        as_frame : bool, default=False
            Return a pandas DataFrame with columns ``user``, ``item``,
            ``score`` and ``rank`` (1 = best), one row per recommendation,
            padding left out. Needs pandas.

        Returns
        -------
        items : ndarray, shape (len(user_ids), n)
            Raw item ids, best first. Where fewer than ``n`` items are
            eligible the score is ``-inf`` and the id is a filler (-1, ""
            or None by the ids' type).
        scores : ndarray of float32, shape (len(user_ids), n)
        or a DataFrame when ``as_frame=True``.

        Raises
        ------
        KeyError
            If a user or item id is unknown; the message names it.

        Examples
        --------
        >>> from sparse_rec import DSLMatrixFactorization
        >>> from sparse_rec.datasets import from_frame
        >>> ds = from_frame({"user_id": ["ann", "ann", "bob", "cat"],
        ...                  "item_id": ["tea", "jam", "tea", "jam"]})
        >>> mf = DSLMatrixFactorization(n_components=4, density=1.0, max_iter=2,
        ...                             random_state=0, n_threads=1).fit(ds)
        >>> items, scores = mf.recommend_ids(["bob"], n=1)
        >>> items.tolist()
        [['jam']]
        """
        rows = self.user_index(user_ids)
        allowed = None if items is None else self.item_index(items)
        ids, scores = self.recommend(rows, n=n, filter_seen=filter_seen, items=allowed)
        raw = self._raw_items(ids)
        if not as_frame:
            return raw, scores
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is optional
            raise ImportError("as_frame=True needs pandas (pip install pandas); or use the "
                              "arrays returned with as_frame=False.") from None
        users = np.asarray(user_ids, dtype=object if not isinstance(user_ids, np.ndarray)
                           else None).reshape(-1)
        keep = ids >= 0
        ranks = np.broadcast_to(np.arange(1, ids.shape[1] + 1), ids.shape)
        return pd.DataFrame({
            "user": np.repeat(users, ids.shape[1]).reshape(ids.shape)[keep],
            "item": raw[keep], "score": scores[keep], "rank": ranks[keep],
        })

    # --- similar users ------------------------------------------------------------
    def _user_vectors(self):
        raise NotImplementedError(
            f"{type(self).__name__} has no user vectors, so similar_users is not defined for it."
        )

    def similar_users(self, users, n=10):
        """The ``n`` users most similar to each given user, itself excluded.

        Similarity is the cosine of the model's user vectors (for
        DSL-MF its user factors; for DSLNCF the GMF and MLP user
        embeddings side by side; for DSLMultVAE the encoder means ``mu`` of
        the users' histories); a user without active weights (DSLMultVAE:
        without history) is similar to no one (score 0). ``n`` is clipped
        to ``n_users_ - 1``.

        Parameters
        ----------
        users : array-like of int
            User indices (see :meth:`user_index` for raw ids).
        n : int, default=10

        Returns
        -------
        ids : ndarray of int64, shape (len(users), n)
        scores : ndarray of float32, shape (len(users), n)

        Examples
        --------
        >>> from sparse_rec import DSLMatrixFactorization
        >>> from sparse_rec.datasets import make_interactions
        >>> X = make_interactions(60, 40, 600, random_state=0)
        >>> mf = DSLMatrixFactorization(n_components=8, max_iter=3, random_state=0,
        ...                             n_threads=1).fit(X)
        >>> ids, scores = mf.similar_users([0, 1], n=3)
        >>> ids.shape, bool((ids != [[0], [1]]).all())
        ((2, 3), True)
        """
        check_fitted(self)
        users = check_ids(users, self.n_users_, "users", "user")
        n = check_positive_int(n, "n", hint="Ask for at least one similar user.")
        n = min(n, max(1, self.n_users_ - 1))
        cache = self.__dict__.setdefault("_cache", {})
        if "user_unit" not in cache:
            V = self._user_vectors()
            if sp.issparse(V):
                V = sp.csr_matrix(V, dtype=np.float32)
                norms = np.sqrt(np.asarray(V.multiply(V).sum(axis=1)).ravel())
                inv = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0)
                V = sp.diags(inv.astype(np.float32)) @ V
            else:
                V = np.asarray(V, np.float32)
                norms = np.linalg.norm(V, axis=1)
                V = V * np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0)[:, None]
            cache["user_unit"] = V
        V = cache["user_unit"]
        out_idx = np.empty((len(users), n), np.int64)
        out_val = np.empty((len(users), n), np.float32)
        # Blocks of users bound the dense similarity block to ~64 MB.
        block = max(1, min(_BLOCK, (1 << 24) // max(self.n_users_, 1)))
        for b0 in range(0, len(users), block):
            rows = users[b0:b0 + block]
            S = V[rows] @ V.T
            S = np.asarray(S.toarray() if sp.issparse(S) else S, np.float32)
            S[np.arange(len(rows)), rows] = -np.inf
            part = np.argpartition(-S, n - 1, axis=1)[:, :n] if n < S.shape[1] else \
                np.tile(np.arange(S.shape[1]), (len(rows), 1))
            vals = np.take_along_axis(S, part, axis=1)
            # Ties broken by the smaller index, as the item rankings do.
            order = np.lexsort((part, -vals), axis=1)
            out_idx[b0:b0 + len(rows)] = np.take_along_axis(part, order, axis=1)[:, :n]
            out_val[b0:b0 + len(rows)] = np.take_along_axis(vals, order, axis=1)[:, :n]
        return out_idx, out_val

    # --- explanations -------------------------------------------------------------
    def _explain(self, user, item, hist_items, hist_values):
        """Occlusion: the drop of the fold-in score when a history item is left out."""
        h = len(hist_items)
        X = occluded(hist_items, hist_values, self.n_items_, np.arange(-1, h))
        side = self._fold_in(X)
        s = self._score(np.arange(h + 1), np.full((h + 1, 1), item, np.int64),
                        user_side=side)[:, 0].astype(np.float64)
        return s[0] - s[1:], float(s[0])

    def explain(self, user, item, n=5):
        """The user's history items that contribute most to the score of ``item``.

        What a contribution is depends on the model:

        * DSL-MF: the user's factor row ``p`` is projected on the factor
          rows ``q_j`` of the history items (minimum-norm least squares,
          ``p ~ sum_j a_j q_j``); item ``j`` contributes ``a_j q_j . q_i``.
          The contributions of all history items plus ``rest`` (the item
          bias and the part of ``p`` outside the history's span) add up to
          the model's score exactly.
        * Other models (DSLNCF): occlusion. The history is folded in
          (as :meth:`recommend_for_history`) with and without each history
          item; item ``j`` contributes the drop of the score of ``item``
          when ``j`` is left out, and ``score`` is the score of the whole
          history's fold-in. This costs ``len(history) + 1`` fold-ins.
        * DSLLightGCN: exact split over the last propagation step; item
          ``j`` contributes ``a c_uj P_j . F_i`` and ``rest`` is the user's
          own layer-0 term (see the LightGCN user guide).
        * DSLMultVAE: occlusion of the encoder's input (the history is
          re-normalised without ``j``); ``j`` contributes the drop of the
          logit of ``item``. The network is not additive: ``rest`` also
          holds what history items do together.

        Parameters
        ----------
        user : int
            User index (see :meth:`user_index` for raw ids).
        item : int
            Item index.
        n : int, default=5
            At most this many history items, largest contribution first.

        Returns
        -------
        Explanation
            Named tuple ``(items, contributions, score, rest)``.

        Examples
        --------
        >>> import numpy as np
        >>> from sparse_rec import DSLMatrixFactorization
        >>> from sparse_rec.datasets import make_interactions
        >>> X = make_interactions(60, 40, 600, random_state=0)
        >>> mf = DSLMatrixFactorization(n_components=8, max_iter=3, random_state=0,
        ...                             n_threads=1).fit(X)
        >>> e = mf.explain(0, 5, n=len(X[0].indices))
        >>> bool(np.isclose(e.contributions.sum() + e.rest, mf.score_items([0], [[5]])[0, 0],
        ...                 atol=1e-4))
        True
        """
        check_fitted(self)
        user = int(check_ids(user, self.n_users_, "user", "user")[0])
        item = int(check_ids(item, self.n_items_, "item", "item")[0])
        n = check_positive_int(n, "n", hint="Ask for at least one history item.")
        row = self.seen_[user]
        hist, values = row.indices.astype(np.int64), row.data.astype(np.float32)
        if hist.size == 0:
            score = float(self.score_items([user], [[item]])[0, 0])
            return Explanation(np.zeros(0, np.int64), np.zeros(0, np.float32), score, score)
        contrib, score = self._explain(user, item, hist, values)
        contrib = np.asarray(contrib, np.float64)
        rest = float(score - contrib.sum())
        order = np.lexsort((hist, -contrib))[:n]
        return Explanation(hist[order], contrib[order].astype(np.float32), float(score), rest)


def _check_new_indices(idx, n, what):
    """``idx`` as int64; new indices (>= n) must be n, n+1, ... without gaps or repeats."""
    arr = np.asarray(idx)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{what}s must be a 1-D array of integer {what} indices; got "
                         f"{arr.dtype} of shape {arr.shape}.")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{what}s must be non-negative indices; got {int(arr.min())}.")
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"{what}s must not repeat; give each {what}'s whole row once.")
    new = np.sort(arr[arr >= n])
    if new.size and not np.array_equal(new, np.arange(n, n + new.size)):
        raise ValueError(
            f"new {what}s must take the next indices {n}, {n + 1}, ... without gaps; got "
            f"{new[:5].tolist()}. Index new {what}s from n_{what}s_={n}."
        )
    return arr, n + new.size


def _gather_rows(indptr, indices, values, src):
    """CSR arrays of the rows ``src`` of ``(indptr, indices, values)`` (-1: empty row)."""
    ok = src >= 0
    s = np.where(ok, src, 0)
    starts = indptr[s]
    counts = np.where(ok, indptr[s + 1] - starts, 0)
    out_ptr = np.zeros(len(src) + 1, np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    offsets = out_ptr[:-1]
    pos = np.repeat(starts - offsets, counts) + np.arange(out_ptr[-1])
    return out_ptr, indices[pos], values[pos]


def _drop_zeros(tab):
    """The table without its zero weights (a solve leaves an empty history's row at 0)."""
    from ._table import SparseEmbeddingTable

    w = tab.weights
    if (w != 0).all():
        return tab
    keep = w != 0
    row_of = np.repeat(np.arange(tab.n_rows), tab.row_nnz())
    indptr = np.zeros(tab.n_rows + 1, np.int64)
    np.cumsum(np.bincount(row_of[keep], minlength=tab.n_rows), out=indptr[1:])
    return SparseEmbeddingTable(indptr, tab.indices[keep], tab.values_buf[:tab.nnz][keep],
                                tab.n_cols)


def _splice_table(old, rows, new, n_total):
    """A table whose rows ``rows`` come from ``new`` (in order), the others from ``old``."""
    from ._table import SparseEmbeddingTable

    indptr = np.concatenate([old.indptr, old.indptr[-1] + new.indptr[1:]]).astype(np.int64)
    indices = np.concatenate([old.indices, new.indices.astype(old.indices.dtype)])
    values = np.concatenate([old.values_buf[:old.nnz, :1], new.values_buf[:new.nnz, :1]])
    src = np.full(n_total, -1, np.int64)
    src[:old.n_rows] = np.arange(old.n_rows)
    src[rows] = old.n_rows + np.arange(len(rows))
    p, i, v = _gather_rows(indptr, indices, values, src)
    return SparseEmbeddingTable(p, i, np.ascontiguousarray(v, np.float32), old.n_cols)


def _splice_csr_rows(old, rows, new, n_total):
    stacked = sp.vstack([sp.csr_matrix(old), sp.csr_matrix(new, dtype=old.dtype)]).tocsr()
    src = np.full(n_total, -1, np.int64)
    src[:old.shape[0]] = np.arange(old.shape[0])
    src[rows] = old.shape[0] + np.arange(len(rows))
    p, i, v = _gather_rows(stacked.indptr.astype(np.int64), stacked.indices, stacked.data, src)
    return sp.csr_matrix((v, i, p), shape=(n_total, old.shape[1]))


class PartialFitMixin:
    """``partial_fit_users`` / ``partial_fit_items`` over the model's solve hooks."""

    def _partial_user_tables(self, X):
        raise NotImplementedError(
            f"{type(self).__name__} cannot add or refit users without a refit: it has no "
            "fold-in of user rows."
        )

    def _partial_item_rows(self, items, X_cols):
        raise NotImplementedError(
            f"{type(self).__name__} cannot add or refit items without a refit: it has no "
            "solve of item rows against a fixed user side."
        )

    def _check_raw(self, what, idx, n_old, ids):
        """The ``{what}_ids_`` after adding; raw ids must come with new rows when kept."""
        known = getattr(self, f"{what}_ids_", None)
        n_new = int((idx >= n_old).sum())
        if ids is None:
            if known is not None and n_new:
                raise ValueError(
                    f"this model keeps raw {what} ids ({what}_ids_): pass ids=[...] with one "
                    f"raw id per entry of {what}s to add new {what}s."
                )
            return known
        ids = np.asarray(ids)
        if ids.shape != idx.shape:
            raise ValueError(f"ids must have one raw id per entry of {what}s ({len(idx)}); got "
                             f"shape {ids.shape}.")
        if known is None:
            raise ValueError(f"ids were given but this model has no {what}_ids_ (it was fitted "
                             "on a matrix); leave ids out.")
        known = np.asarray(known)
        old = idx < n_old
        if old.any() and not np.array_equal(known[idx[old]], ids[old].astype(known.dtype)):
            raise ValueError(f"ids of existing {what}s must be their {what}_ids_.")
        order = np.argsort(idx[~old])
        added = ids[~old][order]
        if (known.dtype.kind in "US") != (added.dtype.kind in "US"):
            raise ValueError(f"ids of new {what}s must be of the type of {what}_ids_ "
                             f"({known.dtype}); got {added.dtype}.")
        out = np.concatenate([known, added.astype(np.result_type(known, added))])
        if len(np.unique(out)) != len(out):
            raise ValueError(f"ids of new {what}s must be new; some are already {what}_ids_.")
        return out

    def _replace_tables(self, tables, rows, n_total):
        for name, tab in tables.items():
            old = getattr(self, name)
            spliced = _splice_table(old, rows, _drop_zeros(tab), n_total)
            self.n_active_ += spliced.nnz - old.nnz
            self.nbytes_ += spliced.nbytes - old.nbytes
            self.dense_nbytes_ += 4 * (spliced.n_rows - old.n_rows) * old.n_cols
            setattr(self, name, spliced)

    def partial_fit_users(self, users, X_rows, *, ids=None):
        """Refit the rows of some users and add new users, without a refit.

        Each row of ``X_rows`` is the whole history of ``users[k]``; its
        user row is solved from scratch against the fixed item side by the
        model's fold-in (the very solve of :meth:`recommend_for_history`,
        with the fitted model's mean number of active weights per user, so
        the per-row budget policy holds and ``n_active_`` grows by about
        that much per new user). Indices at or past ``n_users_`` add users
        (they must be ``n_users_, n_users_ + 1, ...``); ``seen_`` takes the
        new histories. Items and every other user are unchanged.

        Defined for DSL-MF and DSLNCF (both fold users in) and
        DSLMultVAE, whose users are their histories: it only writes
        ``seen_`` (no solve, ``n_active_`` unchanged), after which
        :meth:`recommend` on them is :meth:`recommend_for_history` of the
        rows.

        Parameters
        ----------
        users : array-like of int
            User indices, existing (< ``n_users_``) or new.
        X_rows : sparse matrix or array-like of shape (len(users), ``n_items_``)
        ids : array-like, optional
            Raw id of each entry of ``users``; required for new users when
            the model keeps ``user_ids_``.

        Returns
        -------
        self

        Examples
        --------
        >>> import scipy.sparse as sp
        >>> from sparse_rec import DSLMatrixFactorization
        >>> from sparse_rec.datasets import make_interactions
        >>> X = make_interactions(60, 40, 600, random_state=0)
        >>> mf = DSLMatrixFactorization(n_components=8, max_iter=3, random_state=0,
        ...                             n_threads=1).fit(X)
        >>> _ = mf.partial_fit_users([60], sp.csr_matrix(X[:1]))
        >>> mf.n_users_
        61
        """
        check_fitted(self)
        users, n_total = _check_new_indices(users, self.n_users_, "user")
        X = self._check_history(X_rows)
        if X.shape[0] != len(users):
            raise ValueError(f"X_rows must have one row per user ({len(users)}); got "
                             f"{X.shape[0]}.")
        raw = self._check_raw("user", users, self.n_users_, ids)
        tables = self._partial_user_tables(X)
        self._replace_tables(tables, users, n_total)
        self.seen_ = _splice_csr_rows(self.seen_, users, X, n_total)
        self.n_users_ = n_total
        if raw is not None:
            self.user_ids_ = raw
        self._clear_caches()
        return self

    def partial_fit_items(self, items, X_cols, *, ids=None):
        """Refit the rows of some items and add new items, without a refit.

        Column ``k`` of ``X_cols`` lists every user of ``items[k]``; its
        item row (and bias) is solved from scratch against the fixed user
        side and the other items, with the fitted model's mean number of
        active weights per item. Indices at or past ``n_items_`` add items;
        ``seen_`` takes the new columns.

        Defined for DSL-MF (BPR: the mirror of its user fold-in). DSLNCF
        raises NotImplementedError: its item rows feed the MLP and it has no
        item solve; so does DSLMultVAE: a new item needs an encoder row, a
        decoder row and an output bias, tied to every item by the softmax.

        Parameters
        ----------
        items : array-like of int
            Item indices, existing (< ``n_items_``) or new.
        X_cols : sparse matrix or array-like of shape (``n_users_``, len(items))
        ids : array-like, optional
            Raw id of each entry of ``items``; required for new items when
            the model keeps ``item_ids_``.

        Returns
        -------
        self
        """
        check_fitted(self)
        items, n_total = _check_new_indices(items, self.n_items_, "item")
        X = check_interactions(X_cols, name="X_cols", allow_empty=True)
        if X.shape != (self.n_users_, len(items)):
            raise ValueError(f"X_cols must have shape (n_users_, len(items)) = "
                             f"({self.n_users_}, {len(items)}); got {X.shape}.")
        raw = self._check_raw("item", items, self.n_items_, ids)
        tables, dense = self._partial_item_rows(items, X)
        self._replace_tables(tables, items, n_total)
        for name, values in dense.items():
            old = np.asarray(getattr(self, name))
            new = np.zeros((n_total,) + old.shape[1:], old.dtype)
            new[:len(old)] = old
            new[items] = values
            self.nbytes_ += new.nbytes - old.nbytes
            self.dense_nbytes_ += new.nbytes - old.nbytes
            setattr(self, name, new)
        # seen_: the given columns replace theirs, new columns are appended.
        S = sp.csr_matrix(self.seen_).tocoo()
        drop = np.isin(S.col, items[items < self.n_items_])
        C = X.tocoo()
        data = np.concatenate([S.data[~drop], C.data.astype(S.dtype)])
        seen = sp.csr_matrix(
            (data, (np.concatenate([S.row[~drop], C.row]),
                    np.concatenate([S.col[~drop], items[C.col]]))),
            shape=(self.n_users_, n_total))
        seen.sort_indices()
        self.seen_ = seen
        self.n_items_ = self.n_features_in_ = n_total
        if raw is not None:
            self.item_ids_ = raw
        self._clear_caches()
        return self
