"""Training throughput of DSL-MF against implicit's BPR on the same data, epochs and threads.

Both models run alternately in one process, after one discarded warm-up run
each (Numba compilation, page faults), so drifts of the machine hit both.
Data: the Gowalla training split from ``../shared/data/gowalla`` when present,
otherwise the built-in MovieLens latest-small (binarised).

Run from the repository root::

    python benchmarks/throughput.py                  # writes docs/benchmarks.md
    python benchmarks/throughput.py --quick --no-write
"""

import argparse
import time

import numpy as np
from _report import (
    DATA,
    markdown_table,
    median,
    section_text,
    write_section,
)
from threadpoolctl import threadpool_limits

from sparse_rec import DSLMatrixFactorization
from sparse_rec._mf.estimator import LOSS_DEFAULTS
from sparse_rec.datasets import load_lightgcn, load_movielens_small

GOWALLA = DATA / "gowalla"
D = 64
SEED = 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs of every fit (default 10)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads of both libraries (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each model (default 5)")
    p.add_argument("--density", type=float, default=0.2, help="sparse DSL-MF density (0.2)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: first 2000 users, update_interval+1 epochs, 2 repeats; "
                        "never writes docs")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    return p.parse_args(argv)


def load_data(quick):
    if (GOWALLA / "train.txt").is_file() and (GOWALLA / "test.txt").is_file():
        X, name = load_lightgcn(GOWALLA).train, "Gowalla train (LightGCN split)"
    else:
        X, name = load_movielens_small(binarize=True).X, "MovieLens latest-small (binarised)"
    if quick:
        X, name = X[:2000], name + ", first 2000 users"
    return X.tocsr(), name


def weights_touched(est, X):
    """Mean active weights in the rows one BPR sample reads (user, positive, negative).

    Users and positives are drawn in proportion to their interactions; the
    negative is close to uniform over items. A random pattern gives
    3 * density * n_components; growth moves weights to frequent rows.
    """
    deg_u = np.diff(X.indptr)
    deg_i = np.bincount(X.indices, minlength=X.shape[1])
    nnz_u = np.diff(est.user_factors_.indptr)
    nnz_i = np.diff(est.item_factors_.indptr)
    return (deg_u @ nnz_u + deg_i @ nnz_i) / X.nnz + nnz_i.mean()


class Ours:
    def __init__(self, density, epochs, threads):
        self.name = f"DSL-MF (64), density {density:g}"
        self.density = density
        # The BPR model (the default loss is iALS): this compares sampled epochs.
        self.params = dict(loss="bpr", n_components=D, density=density, max_iter=epochs,
                           random_state=SEED, n_threads=threads)

    def run(self, X):
        est = DSLMatrixFactorization(**self.params)
        t0 = time.perf_counter()
        est.fit(X)
        total = time.perf_counter() - t0
        return {
            "touched": weights_touched(est, X),
            "seconds": total,
            "prune_grow": sum(h["prune_grow_seconds"] for h in est.history_),
            # Epoch loop time; the rest of fit is setup (CSR transposes, tables) and copies.
            "epochs_seconds": sum(h["seconds"] for h in est.history_),
        }


class Theirs:
    density = 1.0

    def __init__(self, epochs, threads):
        # implicit appends an item-bias column: 63 factors store 64 columns like ours.
        self.name = "implicit BPR (63+1)"
        self.params = dict(factors=D - 1, learning_rate=0.01, regularization=0.01,
                           iterations=epochs, num_threads=threads, random_state=SEED)

    def run(self, X):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        # Only implicit's own threads should work; no BLAS pool on top.
        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(**self.params)
            t0 = time.perf_counter()
            model.fit(X, show_progress=False)
            total = time.perf_counter() - t0
        return {"seconds": total, "prune_grow": None, "epochs_seconds": None, "touched": None}


def main(argv=None):
    args = parse_args(argv)
    epochs, repeats = args.epochs, args.repeats
    if args.quick:
        # One prune/grow step happens only when max_iter > update_interval.
        epochs, repeats = LOSS_DEFAULTS["bpr"]["update_interval"] + 1, 2
    X, data_name = load_data(args.quick)
    theirs = Theirs(epochs, args.threads)
    models = [Ours(args.density, epochs, args.threads), theirs, Ours(1.0, epochs, args.threads)]
    print(f"data: {data_name}: {X.shape[0]:,} x {X.shape[1]:,}, nnz {X.nnz:,}; "
          f"{epochs} epochs, {args.threads} threads, {repeats} repeats", flush=True)
    for m in models:  # warm-up, discarded
        m.run(X)
    runs = {m.name: [] for m in models}
    for r in range(repeats):
        for m in models:  # alternate so slow phases of the machine hit every model
            out = m.run(X)
            runs[m.name].append(out)
            print(f"  repeat {r + 1}: {m.name}: {out['seconds']:.2f} s", flush=True)

    def ips(out):
        return epochs * X.nnz / out["seconds"]

    ref = runs[theirs.name]
    ref_ips = median([ips(o) for o in ref])
    rows = []
    for m in models:
        outs = runs[m.name]
        per_epoch = [o["seconds"] / epochs for o in outs]
        m_ips = median([ips(o) for o in outs])
        # Paired ratios compare runs made next to each other.
        paired = median([ips(a) / ips(b) for a, b in zip(outs, ref, strict=True)])
        if outs[0]["prune_grow"] is None:
            pg = setup = touched = "-"
        else:
            pg = f"{100 * median([o['prune_grow'] / o['seconds'] for o in outs]):.1f}%"
            setup = median([1 - o["epochs_seconds"] / o["seconds"] for o in outs])
            setup = f"{100 * setup:.1f}%"
            touched = f"{3 * m.density * D:.1f} -> {median([o['touched'] for o in outs]):.1f}"
        rows.append([
            m.name, f"{m.density:g}", f"{median(per_epoch):.3f}",
            f"{min(per_epoch):.3f}-{max(per_epoch):.3f}", f"{m_ips / 1e6:.2f}M",
            f"{m_ips / ref_ips:.2f}x", f"{paired:.2f}x", pg, setup, touched,
        ])
    table = markdown_table(
        ["Model", "Density", "Median s/epoch", "Range s/epoch", "Interactions/s (median)",
         "Throughput / implicit (ratio of medians)", "Throughput / implicit (median of paired)",
         "Prune/grow share", "Setup share", "Weights per sample (start -> end)"],
        rows,
    )
    body = (
        f"{data_name}: {X.shape[0]:,} users x {X.shape[1]:,} items, {X.nnz:,} interactions; "
        f"{epochs} epochs per fit (one BPR sample per interaction per epoch in both), "
        f"{args.threads} threads for both (`n_threads` / `num_threads`), {repeats} timed runs "
        "of each after one warm-up run each, alternating in one process. Seconds are fit wall "
        "time; interactions/s = epochs x nnz / fit seconds. Prune/grow share: sum of "
        "`history_` prune_grow_seconds / fit seconds; setup share: fit time outside the "
        "epoch loop (data preparation, table set-up and copies). Weights per sample: mean active "
        "weights in the three rows a BPR step reads (user and positive in proportion to their "
        "interactions, negative uniform), for the initial random pattern and after the fit; "
        "growth moves weights to frequent rows, so later epochs do more work.\n\n" + table
    )
    print()
    print(body)
    if args.quick:
        print("\n(--quick: docs/benchmarks.md left untouched)")
    elif not args.no_write:
        path = write_section("throughput", section_text("Training throughput", body))
        print(f"\nwrote section 'throughput' of {path}")


if __name__ == "__main__":
    main()
