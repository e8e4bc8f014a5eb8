"""Quality of serving new users by fold-in, against training them and against popularity.

20% of the users are held out as new users: each one's history is 80% of
its interactions and the other 20% are ranked (full ranking over all items,
history excluded, Recall@20 and NDCG@20). Models train on the other users
only and fold the new users in (``recommend_for_history``). For reference,
the same models are also trained *with* the new users' histories and score
them from their trained rows (``recommend``): the gap is what fold-in
costs. Data (``--sets``): the built-in MovieLens latest-small and ml-100k
from ``../shared/data`` when present (the default), and Gowalla's training
part (LightGCN's ``train.txt``; its test file is never read).

implicit's ALS-64 (regularization 0.1, 15 iterations, as in
``quality.py``) takes its ``alpha`` among 1, 5 and 20 by fold-in Recall@20
on a validation split of the *training* users (20% of them folded in with
80% of their items as history), never the new users' held-out items.

Run from the repository root::

    python benchmarks/fold_in.py            # writes docs/benchmarks.md
    python benchmarks/fold_in.py --losses ials --sets gowalla
    python benchmarks/fold_in.py --quick --no-write
    python benchmarks/fold_in.py --losses ials --sets gowalla --thin 0.25   # sparser data
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _report import DATA, markdown_table, section_text, write_section
from quality import thin

from sparse_rec import DSLMatrixFactorization
from sparse_rec._mf.estimator import LOSS_DEFAULTS
from sparse_rec.datasets import load_lightgcn, load_movielens, load_movielens_small
from sparse_rec.interop import ImplicitRecommender
from sparse_rec.metrics import ranking_metrics
from sparse_rec.model_selection import random_split, train_test_split_users

# iALS's default schedule (the benchmark fits the defaults).
IALS = LOSS_DEFAULTS["ials"]

# The shared data folder, or SPARSE_REC_DATA when set (a checkout elsewhere).
DATA = Path(os.environ.get("SPARSE_REC_DATA", DATA))
SEED = 0
SETS = ("builtin", "ml-100k", "gowalla")
DEFAULT_SETS = ("builtin", "ml-100k")
# implicit ALS as in quality.py: alpha chosen on a validation split of the training users.
ALS_ALPHAS = (1.0, 5.0, 20.0)
ALS_REG = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=100, help="DSL-MF epochs (default 100)")
    p.add_argument("--quick", action="store_true", help="10 epochs, built-in data only")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    p.add_argument("--losses", default="bpr,ials",
                   help="DSL-MF losses to run (default bpr,ials; iALS: 14 epochs, update "
                        "after each); another choice writes its own section")
    p.add_argument("--thin", type=float, default=None, metavar="F",
                   help="keep each interaction with probability F in (0, 1] (sparser data, "
                        "as quality.py --thin); writes its own section")
    p.add_argument("--sets", default=",".join(DEFAULT_SETS),
                   help=f"comma-separated, of {','.join(SETS)} (default "
                        f"{','.join(DEFAULT_SETS)}); another choice writes its own section")
    args = p.parse_args(argv)
    args.losses = [x.strip() for x in args.losses.split(",") if x.strip()]
    args.sets = [x.strip() for x in args.sets.split(",") if x.strip()]
    bad = [x for x in args.sets if x not in SETS]
    if bad:
        p.error(f"unknown sets {bad}; choose from {SETS}")
    if args.thin is not None and not 0 < args.thin <= 1:
        p.error(f"--thin must be in (0, 1]; got {args.thin}")
    return args


def section_name(losses, sets, keep=None):
    """The docs/benchmarks.md section of a run: one per choice of losses and of data sets."""
    name = "fold_in" if list(losses) == ["bpr", "ials"] else "fold_in-" + "-".join(losses)
    if list(sets) != list(DEFAULT_SETS):
        name += "-" + "-".join(sets)
    if keep is not None:
        name += f"-thin{keep:g}"
    return name


def data_sets(sets, quick):
    """``(name, X)`` per requested set whose files are present (built-in only with --quick)."""
    for key in sets:
        if key == "builtin":
            yield "MovieLens latest-small", load_movielens_small(binarize=True).X
        elif quick:
            continue
        elif key == "ml-100k" and (DATA / "ml-100k" / "u.data").is_file():
            yield "ml-100k", load_movielens(DATA / "ml-100k", binarize=True).X
        elif key == "gowalla" and (DATA / "gowalla" / "train.txt").is_file():
            X = load_lightgcn(DATA / "gowalla").train.tocsr().astype(np.float32)
            yield "Gowalla (training part)", X
        else:
            print(f"skip {key}: its files are not under {DATA}")


def models(args):
    epochs = 10 if args.quick else args.epochs
    if "bpr" in args.losses:
        for density in (0.2, 1.0):
            yield f"DSL-MF density {density:g}", lambda d=density: DSLMatrixFactorization(
                loss="bpr", density=d, max_iter=epochs, random_state=SEED,
                n_threads=args.threads)
    if "ials" in args.losses:
        for density in (0.2, 1.0):
            yield f"DSL-MF iALS density {density:g}", lambda d=density: DSLMatrixFactorization(
                density=d, loss="ials", max_iter=4 if args.quick else IALS["max_iter"],
                update_interval=IALS["update_interval"],
                random_state=SEED, n_threads=args.threads)
    yield "implicit ALS-64", None


def implicit_als(args, alpha):
    """implicit's ALS-64 through the wrapper; ``alpha`` scales the confidences it is fitted on."""
    return ImplicitRecommender("als", factors=64, regularization=ALS_REG,
                               iterations=3 if args.quick else None, random_state=SEED,
                               n_threads=args.threads), alpha


def split_new_users(X):
    """Training users, new users' histories and their held-out items."""
    old, new = train_test_split_users(X, test_size=0.2, random_state=SEED)
    H, T = random_split(X[new], test_size=0.2, random_state=SEED)
    return old, new, H, T


def tune_als_alpha(X_old, args):
    """The alpha of ``ALS_ALPHAS`` whose fold-in Recall@20 is best among the training users."""
    old, _, H, T = split_new_users(X_old)
    best = None
    for alpha in ALS_ALPHAS:
        est, a = implicit_als(args, alpha)
        est.fit(X_old[old] * a)
        r = scores(est.recommend_for_history(H * a, n=20)[0], T)[0]
        print(f"  ALS-64 alpha {alpha:g}: validation fold-in Recall@20 {r:.4f}", flush=True)
        if best is None or r > best[1]:
            best = (alpha, r)
    return best[0]


def scores(ids, truth):
    r = ranking_metrics(ids, truth, k=20, metrics=("recall", "ndcg"))
    return r["recall"], r["ndcg"], r["n_users_evaluated"]


def run_one(name, X, args):
    old, new, H, T = split_new_users(X)
    rows = []
    pop = np.asarray(X[old].sum(axis=0)).ravel().astype(np.float64)
    S = np.tile(pop, (H.shape[0], 1))
    S[H.nonzero()] = -np.inf
    r, n, users = scores(np.argsort(-S, axis=1, kind="stable")[:, :20], T)
    rows.append([name, "popularity of the training users", "-", f"{r:.4f}", f"{n:.4f}", "-"])
    # The trained reference: new users' histories are training rows too.
    X_ref = sp.vstack([X[old], H]).tocsr()
    ref_rows = np.arange(len(old), len(old) + len(new))
    results = {}
    for label, make in models(args):
        scale = 1.0
        if make is None:  # implicit ALS: alpha from the training users, then fitted with it
            alpha = tune_als_alpha(X[old], args)
            label = f"{label} (alpha={alpha:g})"

            def make(alpha=alpha):
                return implicit_als(args, alpha)[0]
            scale = alpha
        est = make().fit(X[old] * scale)
        t0 = time.perf_counter()
        ids = est.recommend_for_history(H * scale, n=20)[0]
        fold_s = time.perf_counter() - t0
        r_f, n_f, _ = scores(ids, T)
        ref = make().fit(X_ref * scale)
        r_t, n_t, _ = scores(ref.recommend(ref_rows, n=20)[0], T)
        results[label] = r_f
        rows.append([name, label, f"{fold_s:.2f}", f"{r_f:.4f}", f"{n_f:.4f}",
                     f"{r_t:.4f} / {n_t:.4f} ({n_f / n_t:.2f}x)"])
        print(" | ".join(rows[-1]), flush=True)
    als = next(v for k, v in results.items() if k.startswith("implicit ALS"))
    ratios = [f"{k} / implicit ALS-64 fold-in Recall@20 {v / max(als, 1e-12):.3f}x"
              for k, v in results.items() if k.startswith("DSL-MF")]
    return rows, users, len(new), ratios


def main(argv=None):
    args = parse_args(argv)
    all_rows, notes, summary = [], [], []
    for name, X in data_sets(args.sets, args.quick):
        if args.thin is not None:
            X = thin(X, args.thin, np.random.default_rng(2))
            name = f"{name} (thinned to {args.thin:g})"
        rows, users, n_new, ratios = run_one(name, X, args)
        all_rows += rows
        notes.append(f"{name}: {n_new} new users, {users} with held-out items")
        summary += [f"{name}: {r}" for r in ratios]
    table = markdown_table(
        ["data", "model", "fold-in s", "fold-in Recall@20", "fold-in NDCG@20",
         "trained Recall / NDCG (fold-in NDCG ratio)"],
        all_rows,
    )
    print(table)
    print("\n".join(summary))
    body = (
        "New users served by fold-in (`recommend_for_history`), against the same model "
        "trained with their histories (`recommend` on their trained rows) and against "
        "popularity. 20% of the users are new; 80% of each one's interactions are its "
        "history and the other 20% are ranked over all items, history excluded. "
        f"DSL-MF: defaults, {10 if args.quick else args.epochs} epochs (iALS: "
        f"{IALS['max_iter']} epochs, update_interval={IALS['update_interval']}); implicit "
        f"ALS-64: regularization {ALS_REG}, 15 iterations, alpha best of {ALS_ALPHAS} by "
        "fold-in Recall@20 on a validation split of the training users, fold-in by "
        "implicit's `recalculate_user`. "
        "'fold-in s' is the time to fold in and rank all new users. "
        + "; ".join(notes) + ".\n\n" + table + "\n\n" + "\n".join(f"- {s}" for s in summary)
    )
    if not (args.quick or args.no_write):
        write_section(section_name(args.losses, args.sets, args.thin),
                      section_text("Fold-in of new users: " + ", ".join(args.sets)
                                   + ("" if args.thin is None else
                                      f" (each interaction kept with probability "
                                      f"{args.thin:g}, seed 2)"), body))


if __name__ == "__main__":
    main()
