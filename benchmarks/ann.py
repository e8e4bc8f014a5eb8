"""Approximate top-k (``sparse_rec.ann.ApproximateTopK``) against exact top-k on a large catalogue.

A synthetic DSL-MF model (served, as loaded from a file): 1M items and
10k users with 64 components at density 0.2 (13 active weights a row),
factor rows drawn around 256 cluster centres (real embeddings cluster; on
structureless Gaussian vectors every index does worse), item biases
N(0, 0.1), 20 seen items per user. 2,000 query users ask for their top 20,
seen items excluded. Recall@20 is the overlap with the exact top 20 of
``recommend``; queries per second are measured for ``recommend`` (the
package's exact sparse kernel), for an exact dense numpy product
(reference), and for each index setting, with the same threads.

Run from the repository root (needs hnswlib and/or faiss-cpu)::

    python benchmarks/ann.py                 # writes docs/benchmarks.md
    python benchmarks/ann.py --quick --no-write
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp
from _report import markdown_table, section_text, write_section

from sparse_rec._table import SparseEmbeddingTable
from sparse_rec.ann import ApproximateTopK
from sparse_rec.serving import ServedMF

D, K, N = 64, 13, 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engines", default="faiss,hnswlib")
    p.add_argument("--quick", action="store_true", help="100k items, 500 queries")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    return p.parse_args(argv)


def sparse_rows(centres, n, rng):
    """``n`` rows near random centres, keeping the K largest |w| of each (a CSR table)."""
    out_idx = np.empty((n, K), np.int16)
    out_w = np.empty((n, K), np.float32)
    for r0 in range(0, n, 100_000):
        r1 = min(n, r0 + 100_000)
        W = centres[rng.integers(0, len(centres), r1 - r0)] + 0.5 * rng.standard_normal(
            (r1 - r0, D), dtype=np.float32)
        top = np.sort(np.argpartition(-np.abs(W), K - 1, axis=1)[:, :K], axis=1)
        out_idx[r0:r1] = top
        out_w[r0:r1] = np.take_along_axis(W, top, axis=1) / np.sqrt(K)
    indptr = np.arange(0, (n + 1) * K, K, dtype=np.int64)
    return SparseEmbeddingTable(indptr, out_idx.ravel(), out_w.reshape(-1, 1), D)


def synthetic_model(n_items, n_users, threads):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, D), dtype=np.float32)
    m = ServedMF()
    m.n_components, m.n_threads = D, threads
    m.learning_rate, m.alpha = 0.05, 0.03
    m.item_table_ = sparse_rows(centres, n_items, rng)
    m.user_table_ = sparse_rows(centres, n_users, rng)
    m.item_bias_ = (0.1 * rng.standard_normal(n_items)).astype(np.float32)
    seen = np.sort(rng.integers(0, n_items, (n_users, 20)), axis=1)
    seen = sp.csr_matrix((np.ones(seen.size, np.float32), seen.ravel(),
                          np.arange(0, seen.size + 1, 20)), shape=(n_users, n_items))
    seen.sum_duplicates()
    m.seen_ = seen
    m.n_users_, m.n_items_ = n_users, n_items
    m.n_features_in_ = n_items
    return m


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def recall(ids, exact):
    return float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / N
                          for a, b in zip(ids, exact, strict=True)]))


def dense_exact(model, users, V):
    out = np.empty((len(users), N), np.int64)
    for b0 in range(0, len(users), 64):
        rows = users[b0:b0 + 64]
        Qu = np.hstack([model.user_table_.dense_rows(rows), np.ones((len(rows), 1), np.float32)])
        S = Qu @ V.T
        E = model.seen_[rows]
        S[np.repeat(np.arange(len(rows)), np.diff(E.indptr)), E.indices] = -np.inf
        part = np.argpartition(-S, N - 1, axis=1)[:, :N]
        out[b0:b0 + len(rows)] = np.take_along_axis(
            part, np.argsort(-np.take_along_axis(S, part, axis=1), axis=1), axis=1)
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.items, args.queries = 100_000, 500
    model, t_model = timed(lambda: synthetic_model(args.items, args.users, args.threads))
    users = np.random.default_rng(1).choice(args.users, args.queries, replace=False)
    model.recommend(users[:10], n=N)  # compile
    (exact, _), t_exact = timed(lambda: model.recommend(users, n=N))
    rows = [["exact `recommend` (sparse kernel)", "-", "1.000",
             f"{len(users) / t_exact:,.0f}", "1.0x"]]
    print(" | ".join(rows[-1]), flush=True)
    from sparse_rec.ann import _factors

    V = _factors(model)[1]
    dense, t_dense = timed(lambda: dense_exact(model, users, V))
    rows.append(["exact dense numpy product", "-", f"{recall(dense, exact):.3f}",
                 f"{len(users) / t_dense:,.0f}", f"{t_exact / t_dense:.1f}x"])
    print(" | ".join(rows[-1]), flush=True)
    settings = {"hnswlib": [{"ef": ef} for ef in (50, 100, 200, 400)],
                "faiss": [{"n_probe": p} for p in (4, 8, 16, 32, 64)]}
    for engine in args.engines.split(","):
        try:
            index, t_build = timed(lambda e=engine: ApproximateTopK(
                model, engine=e, n_threads=args.threads))
        except ImportError as e:
            print(f"{engine}: skipped ({e})")
            continue
        for s in settings[engine]:
            index.params.update(s)
            if engine == "faiss":
                index._index.nprobe = s["n_probe"]
            (ids, _), t = timed(lambda ix=index: ix.recommend(users, n=N))
            label = ", ".join(f"{k}={v}" for k, v in s.items())
            rows.append([f"{engine} ({label})", f"{t_build:.0f}", f"{recall(ids, exact):.3f}",
                         f"{len(users) / t:,.0f}", f"{t_exact / t:.1f}x"])
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["method", "build s", "Recall@20 vs exact", "queries/s",
                            "speed vs exact"], rows)
    print(table)
    body = (
        f"Synthetic served DSL-MF model: {args.items:,} items, {args.users:,} users, "
        f"{D} components at {K} active weights a row (density 0.2), rows clustered around 256 "
        f"centres, 20 seen items a user (excluded); {len(users):,} query users, top {N}. "
        f"{args.threads} threads for every method. Model built in {t_model:.0f} s.\n\n"
        + table
    )
    if not (args.quick or args.no_write):
        name = "ann" if args.items == 1_000_000 else f"ann_{args.items}"
        write_section(name, section_text(
            f"Approximate top-k for large catalogues ({args.items:,} items)", body))


if __name__ == "__main__":
    main()
