"""Approximate top-k recommendations for large catalogues (optional).

:class:`ApproximateTopK` indexes the items of a fitted or loaded factor
model (:class:`~sparse_rec.DSLMatrixFactorization`, its served model, or
:class:`~sparse_rec.interop.ImplicitRecommender`) for maximum-inner-product
search: item ``i`` is the vector ``[q_i, b_i]`` and user ``u`` the query
``[p_u, 1]``, so the inner product is the model's score. The index proposes
candidates, which are then scored exactly and filtered (seen items), so the
returned scores are the model's and only the *set* of items is approximate.

Two engines, both optional: ``"faiss"`` (faiss-cpu's inverted lists,
``IndexIVFFlat``; the default, ``pip install sparse-rec[ann]``) and
``"hnswlib"`` (an HNSW graph). ``benchmarks/ann.py`` chose faiss: on 100k
items, at Recall@20 0.99 of exact, it answered about 1.8x the queries per
second of hnswlib and built its index 2.2x faster (the tables are on the
benchmarks page; on 1M items faiss at the default ``n_probe=16`` kept
Recall@20 0.992 at 55x the exact queries per second).
pynndescent (Numba, closest to this package's stack) was not measured: it
is not installed here. Serving without an index needs none of them.

Examples
--------
>>> import pytest
>>> _ = pytest.importorskip("faiss")
>>> from sparse_rec import DSLMatrixFactorization
>>> from sparse_rec.ann import ApproximateTopK
>>> from sparse_rec.datasets import make_interactions
>>> X = make_interactions(100, 500, 3000, random_state=0)
>>> mf = DSLMatrixFactorization(n_components=16, loss="bpr", max_iter=5, random_state=0,
...                             n_threads=1).fit(X)
>>> index = ApproximateTopK(mf, n_lists=16, n_probe=4)
>>> ids, scores = index.recommend([0, 1], n=10)
>>> exact = mf.recommend([0, 1], n=10)[0]
>>> float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])) >= 0.9
True
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._recommend import check_fitted
from ._validation import check_ids, check_positive_int

__all__ = ["ApproximateTopK"]

_ENGINES = ("faiss", "hnswlib")


def _factors(model):
    """``(users(rows) -> dense rows, item vectors with the bias column)`` of a factor model."""
    check_fitted(model)
    every = np.arange(model.n_items_)
    if hasattr(model, "item_table_") and hasattr(model, "user_table_"):
        Q = model.item_table_.dense_rows(every)
        b = np.asarray(model.item_bias_, np.float32)

        def users(rows, side=None):
            return (model.user_table_ if side is None else side).dense_rows(rows)
    elif isinstance(getattr(model, "item_factors_", None), np.ndarray):
        Q = np.asarray(model.item_factors_, np.float32)
        b = np.zeros(model.n_items_, np.float32)

        def users(rows, side=None):
            U = model.user_factors_ if side is None else side
            return np.asarray(U, np.float32)[rows]
    else:
        raise TypeError(
            f"ApproximateTopK indexes factor models (DSLMatrixFactorization, its served model, "
            f"ImplicitRecommender), whose score is an inner product; {type(model).__name__} is "
            "not one (DSLNCF scores through an MLP). Use model.recommend."
        )
    V = np.ascontiguousarray(np.hstack([Q, b[:, None]]), np.float32)
    return users, V


def _fingerprint(V):
    return hashlib.sha256(np.ascontiguousarray(V).tobytes()).hexdigest()


class ApproximateTopK:
    """An approximate top-k item index over a fitted or loaded factor model.

    Parameters
    ----------
    model : fitted DSLMatrixFactorization, ServedMF or ImplicitRecommender
    engine : {"faiss", "hnswlib"}, default="faiss"
    M : int, default=16
        hnswlib: links per node (memory and build time grow with it).
    ef_construction : int, default=200
        hnswlib: candidate list size while building.
    ef : int, default=100
        hnswlib: candidate list size of a query (raised to the candidates
        asked for); higher is slower and closer to exact.
    n_lists : int or None, default=None
        faiss: inverted lists (None: ``4 * sqrt(n_items)``), their centroids
        trained by k-means on ``64 * n_lists`` sampled items.
    n_probe : int, default=16
        faiss: lists scanned per query.
    n_threads : int or None, default=None
        Threads of the engine (None: its default).

    Notes
    -----
    A query asks the engine for ``n`` plus the number of the user's seen
    items candidates, drops the seen ones, scores the rest exactly and
    returns the best ``n`` (fewer, padded with -1 and ``-inf``, when the
    index found fewer). Index files (:meth:`save`) are the engine's own
    binary format: load only files you wrote.
    """

    def __init__(self, model, *, engine="faiss", M=16, ef_construction=200, ef=100,
                 n_lists=None, n_probe=16, n_threads=None):
        if engine not in _ENGINES:
            raise ValueError(f"engine must be one of {_ENGINES}; got {engine!r}.")
        self.model = model
        self.engine = engine
        self.params = {"M": int(M), "ef_construction": int(ef_construction), "ef": int(ef),
                       "n_lists": n_lists, "n_probe": int(n_probe)}
        self.n_threads = n_threads
        self._users, self._V = _factors(model)
        self._index = None
        self._build()

    # --- engines ----------------------------------------------------------------------
    def _module(self):
        try:
            if self.engine == "hnswlib":
                import hnswlib as mod
            else:
                import faiss as mod
        except ImportError:
            pkg = "hnswlib" if self.engine == "hnswlib" else "faiss-cpu"
            raise ImportError(
                f"ApproximateTopK(engine={self.engine!r}) needs {pkg}: pip install {pkg} "
                "(or sparse-rec[ann]). Exact serving (model.recommend) needs neither."
            ) from None
        return mod

    def _build(self, path=None):
        mod = self._module()
        n, dim = self._V.shape
        p = self.params
        if self.engine == "hnswlib":
            index = mod.Index(space="ip", dim=dim)
            if path is None:
                index.init_index(max_elements=n, M=p["M"], ef_construction=p["ef_construction"],
                                 random_seed=0)
                index.add_items(self._V, np.arange(n), num_threads=self.n_threads or -1)
            else:
                index.load_index(str(path), max_elements=n)
            if self.n_threads:
                index.set_num_threads(self.n_threads)
        else:
            if self.n_threads:
                mod.omp_set_num_threads(self.n_threads)
            if path is None:
                n_lists = int(p["n_lists"] or max(1, min(n, round(4 * np.sqrt(n)))))
                p["n_lists"] = n_lists
                quant = mod.IndexFlatIP(dim)
                index = mod.IndexIVFFlat(quant, dim, n_lists, mod.METRIC_INNER_PRODUCT)
                # k-means on a sample: 64 points per list are plenty for the centroids.
                rng = np.random.default_rng(0)
                sample = self._V[rng.choice(n, size=min(n, 64 * n_lists), replace=False)]
                index.train(sample)
                index.add(self._V)
            else:
                index = mod.read_index(str(path))
            index.nprobe = p["n_probe"]
        self._index = index

    def _search(self, Qu, k):
        if self.engine == "hnswlib":
            self._index.set_ef(max(self.params["ef"], k))
            labels, _ = self._index.knn_query(Qu, k=k, num_threads=self.n_threads or -1)
            return labels.astype(np.int64)
        _, labels = self._index.search(Qu, k)
        return labels.astype(np.int64)

    # --- queries -------------------------------------------------------------------------
    def recommend(self, users, n=10, filter_seen=True, *, batch_size=1024):
        """Approximate :meth:`recommend` of the model: top-``n`` items per user.

        Parameters
        ----------
        users : array-like of int
        n : int, default=10
        filter_seen : bool, default=True
            Exclude the items each user interacted with in ``fit``.
        batch_size : int, default=1024
            Users per engine call.

        Returns
        -------
        ids : ndarray of int64, shape (len(users), n)
            ``-1`` where fewer than ``n`` candidates remained.
        scores : ndarray of float32, shape (len(users), n)
            The model's exact scores of those items (``-inf`` for padding).
        """
        model = self.model
        users = check_ids(users, model.n_users_, "users", "user")
        n = min(check_positive_int(n, "n"), model.n_items_)
        out_i = np.full((len(users), n), -1, np.int64)
        out_s = np.full((len(users), n), -np.inf, np.float32)
        for b0 in range(0, len(users), batch_size):
            rows = users[b0:b0 + batch_size]
            Qu = np.hstack([self._users(rows), np.ones((len(rows), 1), np.float32)])
            seen = model.seen_[rows] if filter_seen else sp.csr_matrix((len(rows),
                                                                        model.n_items_))
            self._rank(Qu, seen, n, out_i[b0:b0 + len(rows)], out_s[b0:b0 + len(rows)])
        return out_i, out_s

    def _rank(self, Qu, seen, n, out_i, out_s):
        n_items = self._V.shape[0]
        k = int(min(n_items, n + np.diff(seen.indptr).max(initial=0)))
        cand = self._search(np.ascontiguousarray(Qu, np.float32), k)
        B = len(Qu)
        # Seen candidates by one search over sorted (row, item) keys.
        seen_keys = (np.repeat(np.arange(B, dtype=np.int64), np.diff(seen.indptr)) * n_items
                     + seen.indices)
        keys = np.arange(B, dtype=np.int64)[:, None] * n_items + cand
        bad = cand < 0
        if seen_keys.size:
            pos = np.minimum(np.searchsorted(seen_keys, keys), seen_keys.size - 1)
            bad |= seen_keys[pos] == keys
        safe = np.where(bad, 0, cand)
        S = np.einsum("bd,bkd->bk", Qu, self._V[safe]).astype(np.float32)
        S[bad] = -np.inf
        order = np.lexsort((safe, -S), axis=1)[:, :n]
        ids = np.take_along_axis(np.where(bad, -1, cand), order, axis=1)
        sc = np.take_along_axis(S, order, axis=1)
        m = ids.shape[1]
        out_i[:, :m], out_s[:, :m] = ids, sc
        out_i[:, :m][np.isinf(sc)] = -1

    # --- files ---------------------------------------------------------------------------
    def save(self, path):
        """Write the index to ``path`` and its description to ``path + ".json"``.

        Keep them beside the model file (for example ``model.npz.ann``);
        :meth:`load` refuses a model whose item vectors differ from the
        ones indexed.
        """
        path = Path(path)
        if self.engine == "hnswlib":
            self._index.save_index(str(path))
        else:
            self._module().write_index(self._index, str(path))
        meta = {"engine": self.engine, "params": self.params, "n_items": int(self._V.shape[0]),
                "dim": int(self._V.shape[1]), "items_sha256": _fingerprint(self._V)}
        tmp = Path(str(path) + ".json.tmp")
        tmp.write_text(json.dumps(meta, sort_keys=True))
        os.replace(tmp, str(path) + ".json")
        return path

    @classmethod
    def load(cls, path, model, *, n_threads=None):
        """Read an index written by :meth:`save` for ``model`` (checked to match)."""
        meta = json.loads(Path(str(path) + ".json").read_text())
        self = cls.__new__(cls)
        self.model, self.engine, self.params = model, meta["engine"], meta["params"]
        if self.engine not in _ENGINES:
            raise ValueError(f"{path}: unknown engine {self.engine!r}.")
        self.n_threads = n_threads
        self._users, self._V = _factors(model)
        if (self._V.shape != (meta["n_items"], meta["dim"])
                or _fingerprint(self._V) != meta["items_sha256"]):
            raise ValueError(
                f"{path} indexes other item vectors than this model's ({meta['n_items']} items "
                f"x {meta['dim']}); rebuild the index for this model."
            )
        self._build(path)
        return self
