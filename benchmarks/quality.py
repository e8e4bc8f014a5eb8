"""Ranking quality per loss and density of DSL-MF against implicit ALS and popularity.

Protocol: full ranking over all items with each user's training items
excluded, Recall@20 and NDCG@20 over the users with held-out items
(``sparse_rec.metrics.evaluate``). Data sets: ml-100k and Gowalla from
``../shared/data`` (skipped when absent) and the built-in ml-latest-small,
all binarised. MovieLens sets hold out 20% of each user's items
(``random_split``, seed 0); Gowalla uses the LightGCN split.

``--split validation`` (for tuning) never reads the test items: it splits
the training part again (20% of each user's items, seed 1) and reports on
that. In the test split, implicit ALS picks its ``alpha`` among 1, 5 and 20
on that validation split first (best Recall@20), then refits on the whole
training part; implicit BPR-64 picks its learning rate, regularization and
iterations from a small grid (``BPR_GRID``) the same way.

Run from the repository root::

    python benchmarks/quality.py                       # all sets, writes docs/benchmarks.md
    python benchmarks/quality.py --sets ml-100k,builtin --split validation --no-write
    python benchmarks/quality.py --only ials-0.2 --set regularization=0.003 --no-write
    python benchmarks/quality.py --quick --no-write    # smoke test, seconds
    python benchmarks/quality.py --thin 0.25 --split validation --no-write
    python benchmarks/quality.py --sets gowalla --max-user-items 15 --split validation --no-write

``--thin F`` keeps each interaction of the loaded training and test parts
with probability ``F`` (seed 2) before anything else, as a stand-in for
sparser data than the shared sets (a quarter of Gowalla's interactions
leaves about 7 training items per user, as in the sparse public sets the
defaults are also judged on). ``--item-fraction F`` keeps each item with
probability ``F`` (seed 3), after thinning: a smaller catalogue at about
the same density and counts per item.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _report import DATA, ImplicitAdapter, fmt_bytes, markdown_table, section_text, write_section
from threadpoolctl import threadpool_limits

from sparse_rec import DSLMatrixFactorization
from sparse_rec.datasets import (
    load_lightgcn,
    load_movielens,
    load_movielens_small,
    make_interactions,
)
from sparse_rec.metrics import evaluate
from sparse_rec.model_selection import random_split

# The shared data folder, or SPARSE_REC_DATA when set (a checkout elsewhere).
DATA = Path(os.environ.get("SPARSE_REC_DATA", DATA))
SEED = 0
K = 20
D = 64
# Each loss's defaults, written out (iALS converges in few epochs: each is
# two exact alternating solves).
BPR = {"loss": "bpr", "max_iter": 100, "update_interval": 5}
IALS = {"loss": "ials", "max_iter": 14, "update_interval": 1}
SOFTMAX = {"loss": "softmax"}
CCL = {"loss": "ccl"}
# name -> (label, DSLMatrixFactorization overrides); the rest are the defaults.
DSL_ROWS = {
    "bpr-1.0": ("DSL-MF BPR (dense)", {**BPR, "density": 1.0}),
    "bpr-0.2": ("DSL-MF BPR", {**BPR, "density": 0.2}),
    "bpr-0.1": ("DSL-MF BPR", {**BPR, "density": 0.1}),
    "ials-1.0": ("DSL-MF iALS (dense)", {**IALS, "density": 1.0}),
    "ials-0.2": ("DSL-MF iALS", {**IALS, "density": 0.2}),
    "ials-0.1": ("DSL-MF iALS", {**IALS, "density": 0.1}),
    # The budget of 64 x 0.2 spent wider.
    "ials-128x0.1": ("DSL-MF iALS, 128 x 0.1", {**IALS, "n_components": 128, "density": 0.1}),
    "ials-static-0.2": ("iALS static sparse", {**IALS, "density": 0.2, "update_ratio": 0.0}),
    # The ridge before it followed the data's counts (thinned data).
    "ials-0.2-reg0.01": ("DSL-MF iALS, former defaults (regularization=0.01, 14 epochs)",
                         {**IALS, "density": 0.2, "regularization": 0.01}),
    # Own dense models with the parameter count of density 0.2 (0.2 x 64 = 13 factors).
    "ials-13x1.0": ("DSL-MF iALS dense, 13 factors", {**IALS, "n_components": 13,
                                                       "density": 1.0}),
    "bpr-13x1.0": ("DSL-MF BPR dense, 13 factors", {**BPR, "n_components": 13, "density": 1.0}),
    "softmax-1.0": ("DSL-MF softmax (dense)", {**SOFTMAX, "density": 1.0}),
    "softmax-0.2": ("DSL-MF softmax", {**SOFTMAX, "density": 0.2}),
    "softmax-0.1": ("DSL-MF softmax", {**SOFTMAX, "density": 0.1}),
    "ccl-1.0": ("DSL-MF CCL (dense)", {**CCL, "density": 1.0}),
    "ccl-0.2": ("DSL-MF CCL", {**CCL, "density": 0.2}),
    "ccl-0.1": ("DSL-MF CCL", {**CCL, "density": 0.1}),
}
# implicit ALS: 64 factors, and 13 (the parameter count of density 0.2).
ALS_ROWS = {"als-64": 64, "als-13": 13}
ALS_ALPHAS = (1.0, 5.0, 20.0)
ALS_REG, ALS_ITERS = 0.1, 15
# implicit BPR at 64 factors, tuned like ALS's alpha: the grid point with the
# best validation Recall@20 is refitted on the whole training part. The grid
# brackets the best region found on ml-100k's validation split (learning rate
# 0.01 with 50 iterations or 0.003 with 200; regularization 0.03 and 0.1 lost
# everywhere there, 0.001 lost to 0.01).
BPR_ROWS = {"implicit-bpr-64": 64}
BPR_GRID = [{"learning_rate": lr, "regularization": reg, "iterations": it}
            for lr in (0.003, 0.01, 0.03) for reg in (0.001, 0.01) for it in (50, 200)]
ALL_ROWS = (*DSL_ROWS, *ALS_ROWS, *BPR_ROWS, "pop")
SETS = ("ml-100k", "builtin", "gowalla")


class Popularity:
    """Items by training count, seen items excluded."""

    def __init__(self, X):
        self.count = np.asarray((X > 0).sum(axis=0)).ravel().astype(np.float64)

    def recommend(self, users, n, filter_seen):
        S = np.tile(self.count, (len(users), 1))
        F = filter_seen.tocsr()
        rows = np.repeat(np.arange(len(users)), np.diff(F.indptr))
        S[rows, F.indices] = -np.inf
        ids = np.argsort(-S, axis=1, kind="stable")[:, :n]
        return ids, np.take_along_axis(S, ids, axis=1)


class FactorsOnly:
    """A fitted DSL-MF ranked by its factor tables alone (item bias zeroed)."""

    def __init__(self, est):
        self.est = est

    def recommend(self, users, n, filter_seen):
        bias = self.est.item_bias_
        self.est.item_bias_ = np.zeros_like(bias)
        self.est._clear_caches()
        try:
            return self.est.recommend(users, n=n, filter_seen=filter_seen)
        finally:
            self.est.item_bias_ = bias
            self.est._clear_caches()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated: {','.join(SETS)}")
    p.add_argument("--only", default=None, help=f"comma-separated rows: {','.join(ALL_ROWS)}")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a DSL-MF parameter in every DSL row (tuning)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: first 300 users, 3 epochs; never writes docs")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    p.add_argument("--thin", type=float, default=None, metavar="F",
                   help="keep each interaction with probability F in (0, 1] (sparser data)")
    p.add_argument("--max-user-items", type=int, default=None, metavar="N",
                   help="keep only the users with at most N training items (and the items "
                        "they hold): data sparse by nature, not by thinning")
    p.add_argument("--item-fraction", type=float, default=None, metavar="F",
                   help="keep each item with probability F in (0, 1] (seed 3): a smaller "
                        "catalogue of the same density")
    p.add_argument("--model-seed", type=int, default=SEED, metavar="S",
                   help=f"random_state of the DSL-MF fits (default {SEED}; the splits keep "
                        "theirs), to repeat a row over seeds")
    p.add_argument("--section", default="quality",
                   help="name of the docs/benchmarks.md section to write (default quality)")
    args = p.parse_args(argv)
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in args.sets if s not in SETS]
    if bad:
        p.error(f"unknown sets {bad}; choose from {SETS}")
    args.rows = [r.strip() for r in args.only.split(",")] if args.only else list(ALL_ROWS)
    bad = [r for r in args.rows if r not in ALL_ROWS]
    if bad:
        p.error(f"unknown rows {bad}; choose from {ALL_ROWS}")
    args.overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            args.overrides[name] = None if value == "None" else float(value)
        except ValueError:
            args.overrides[name] = value
        if isinstance(args.overrides[name], float) and args.overrides[name].is_integer() \
                and name in ("max_iter", "update_interval", "n_components", "n_negatives"):
            args.overrides[name] = int(args.overrides[name])
    if args.thin is not None and not 0 < args.thin <= 1:
        p.error(f"--thin must be in (0, 1]; got {args.thin}")
    if args.item_fraction is not None and not 0 < args.item_fraction <= 1:
        p.error(f"--item-fraction must be in (0, 1]; got {args.item_fraction}")
    if args.max_user_items is not None and args.max_user_items < 1:
        p.error(f"--max-user-items must be at least 1; got {args.max_user_items}")
    if args.quick:
        args.no_write = True
    return args


def light_users(train, test, cap):
    """The rows of users with at most ``cap`` training items, on the items they hold."""
    rows = np.flatnonzero(np.diff(train.indptr) <= cap)
    train, test = train[rows], test[rows]
    cols = np.flatnonzero(np.diff(train.tocsc().indptr))
    return train[:, cols].tocsr(), test[:, cols].tocsr()


def some_items(train, test, keep, rng):
    """``train`` and ``test`` on each item kept with probability ``keep``."""
    cols = np.flatnonzero(rng.random(train.shape[1]) < keep)
    return train[:, cols].tocsr(), test[:, cols].tocsr()


def thin(X, keep, rng):
    """``X`` with each stored interaction kept with probability ``keep``."""
    X = X.tocoo()
    mask = rng.random(X.nnz) < keep
    return sp.csr_matrix((X.data[mask], (X.row[mask], X.col[mask])), shape=X.shape)


def load_set(name, quick):
    """``(train, test)`` of one data set, or None when its files are absent."""
    if name == "gowalla":
        path = DATA / "gowalla"
        if not (path / "train.txt").is_file():
            print(f"skip gowalla: {path} not present")
            return None
        split = load_lightgcn(path)
        train, test = split.train, split.test
    else:
        if name == "ml-100k":
            path = DATA / "ml-100k"
            if not (path / "u.data").is_file():
                print(f"skip ml-100k: {path} not present")
                return None
            X = load_movielens(path, binarize=True).X
        else:
            X = load_movielens_small(binarize=True).X
        train, test = random_split(X, test_size=0.2, random_state=SEED)
    if quick:
        train, test = train[:300], test[:300]
    return train.tocsr().astype(np.float32), test.tocsr().astype(np.float32)


def validation_split(train):
    return random_split(train, test_size=0.2, random_state=1)


def run_dsl(name, train, test, args):
    label, overrides = DSL_ROWS[name]
    return fit_dsl(label, {"n_components": D, **overrides, **args.overrides}, train, test, args)


def fit_dsl(label, params, train, test, args):
    """Fit DSL-MF with ``params`` on ``train``; its row of the table, scored on ``test``."""
    params = dict(params)
    if args.quick:
        params["max_iter"] = 3
        params["update_interval"] = 1
    est = DSLMatrixFactorization(**params, random_state=args.model_seed,
                                 n_threads=args.threads)
    t0 = time.perf_counter()
    est.fit(train)
    fit_s = time.perf_counter() - t0
    full = evaluate(est, train, test, k=K, metrics=("recall", "ndcg"))
    factors = evaluate(FactorsOnly(est), train, test, k=K, metrics=("recall",))
    budget = round(est.density * est.n_components * sum(train.shape))
    return {
        "label": label, "d": est.n_components, "density": est.density,
        "recall": full["recall"], "ndcg": full["ndcg"],
        "factor_ratio": factors["recall"] / max(full["recall"], 1e-12),
        "fit_s": fit_s, "bytes": est.nbytes_, "epochs": est.n_iter_,
        "budget_ok": all(h["nnz"] == budget for h in est.history_),
        "popularity_exponent": est._popularity_exponent() if est.loss == "ials" else None,
    }


def _als(train, factors, alpha, threads, reg=ALS_REG):
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha,
                                    iterations=ALS_ITERS, num_threads=threads,
                                    random_state=SEED)
    t0 = time.perf_counter()
    model.fit(train, show_progress=False)
    return model, time.perf_counter() - t0


def _implicit_bpr(train, factors, params, threads):
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(factors=factors, **params, num_threads=threads,
                                        random_state=SEED)
    t0 = time.perf_counter()
    model.fit(train, show_progress=False)
    return model, time.perf_counter() - t0


def tune_implicit(fit, grid, train, test, args):
    """Pick the grid point with the best validation Recall@20, refit it on ``train``.

    ``fit(train, point) -> (model, seconds)``. In the test split the
    validation split is cut from ``train`` (test items never read); in the
    validation split ``train``/``test`` already are that split. Returns
    ``(point, model, fit seconds, test scores)``.
    """
    with threadpool_limits(1, "blas"):
        fit_part, val = (train, test) if args.split == "validation" else validation_split(train)
        tried = []
        for point in grid:
            model, _ = fit(fit_part, point)
            tried.append(evaluate(ImplicitAdapter(model), fit_part, val, k=K,
                                  metrics=("recall",))["recall"])
        point = grid[int(np.argmax(tried))]
        model, fit_s = fit(train, point)
        scores = evaluate(ImplicitAdapter(model), train, test, k=K, metrics=("recall", "ndcg"))
    return point, model, fit_s, scores


def run_als(name, train, test, args):
    return fit_als(ALS_ROWS[name], train, test, args)


def fit_als(factors, train, test, args, regs=(ALS_REG,)):
    """implicit ALS with ``factors``; ``alpha`` (and reg among ``regs``) best on validation."""
    grid = [(a, r) for a in ALS_ALPHAS for r in regs]
    (alpha, reg), model, fit_s, scores = tune_implicit(
        lambda X, ar: _als(X, factors, ar[0], args.threads, reg=ar[1]), grid, train, test, args)
    tuned = f"alpha={alpha:g}" + (f", reg={reg:g}" if len(regs) > 1 else "")
    return {
        "label": f"implicit ALS-{factors} ({tuned})", "d": factors, "density": 1.0,
        "recall": scores["recall"], "ndcg": scores["ndcg"], "factor_ratio": None,
        "fit_s": fit_s, "bytes": model.user_factors.nbytes + model.item_factors.nbytes,
        "epochs": ALS_ITERS, "budget_ok": None,
    }


def run_implicit_bpr(name, train, test, args):
    factors = BPR_ROWS[name]
    grid = BPR_GRID
    if args.quick:
        grid = [{**g, "iterations": 3} for g in BPR_GRID[:2]]
    point, model, fit_s, scores = tune_implicit(
        lambda X, p: _implicit_bpr(X, factors, p, args.threads), grid, train, test, args)
    return {
        "label": (f"implicit BPR-{factors} (lr={point['learning_rate']:g}, "
                  f"reg={point['regularization']:g})"),
        "d": factors, "density": 1.0, "recall": scores["recall"], "ndcg": scores["ndcg"],
        "factor_ratio": None, "fit_s": fit_s,
        # implicit's BPR adds a bias column to both factor tables.
        "bytes": model.user_factors.nbytes + model.item_factors.nbytes,
        "epochs": point["iterations"], "budget_ok": None,
    }


def run_pop(train, test):
    t0 = time.perf_counter()
    model = Popularity(train)
    fit_s = time.perf_counter() - t0
    scores = evaluate(model, train, test, k=K, metrics=("recall", "ndcg"))
    return {"label": "item popularity", "d": 0, "density": None, "recall": scores["recall"],
            "ndcg": scores["ndcg"], "factor_ratio": None, "fit_s": fit_s,
            "bytes": model.count.astype(np.float32).nbytes, "epochs": 0, "budget_ok": None}


def warm_up(rows, threads):
    """Compile the Numba kernels outside the timed fits (prune/grow and fold-in included)."""
    X = make_interactions(300, 200, 5000, random_state=SEED)
    for loss in {DSL_ROWS[r][1].get("loss", "bpr") for r in rows if r in DSL_ROWS}:
        est = DSLMatrixFactorization(n_components=8, density=0.5, max_iter=3, update_interval=1,
                                     loss=loss, random_state=SEED, n_threads=threads).fit(X)
        est.recommend(np.arange(4), n=20, filter_seen=X[:4])


def _grid_text(grid):
    """``name (values...)`` per parameter of a grid of dicts, for the docs."""
    return ", ".join(f"{k} {tuple(sorted({g[k] for g in grid}))}" for k in grid[0])


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main(argv=None):
    args = parse_args(argv)
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    warm_up(args.rows, args.threads)
    table, summary = [], []
    for set_name in args.sets:
        data = load_set(set_name, args.quick)
        if data is None:
            continue
        train, test = data
        if args.thin is not None:
            rng = np.random.default_rng(2)
            train, test = thin(train, args.thin, rng), thin(test, args.thin, rng)
            set_name = f"{set_name} (thinned to {args.thin:g})"
        if args.item_fraction is not None:
            train, test = some_items(train, test, args.item_fraction, np.random.default_rng(3))
            set_name = f"{set_name} (items kept with probability {args.item_fraction:g})"
        if args.max_user_items is not None:
            train, test = light_users(train, test, args.max_user_items)
            set_name = f"{set_name} (users with at most {args.max_user_items} items)"
        if args.split == "validation":
            train, test = validation_split(train)
        print(f"{set_name}: {train.shape[0]} users, {train.shape[1]} items, {train.nnz} train, "
              f"{test.nnz} held out ({args.split})", flush=True)
        results = {}
        for row in args.rows:
            if row in DSL_ROWS:
                r = run_dsl(row, train, test, args)
            elif row in ALS_ROWS:
                r = run_als(row, train, test, args)
            elif row in BPR_ROWS:
                r = run_implicit_bpr(row, train, test, args)
            else:
                r = run_pop(train, test)
            results[row] = r
            line = [set_name, r["label"], r["d"], fmt(r["density"], "g"), fmt(r["recall"], ".4f"),
                    fmt(r["ndcg"], ".4f"), fmt(r["factor_ratio"], ".2f"), fmt(r["fit_s"], ".1f"),
                    fmt_bytes(r["bytes"]), r["epochs"],
                    {None: "-", True: "yes", False: "NO"}[r["budget_ok"]]]
            table.append(line)
            print("  " + " | ".join(str(c) for c in line[1:]), flush=True)
        for dsl in ("bpr-0.2", "ials-0.2", "softmax-0.2", "ccl-0.2"):
            if dsl in results and "als-64" in results:
                a, b = results[dsl], results["als-64"]
                expo = a.get("popularity_exponent")
                expo = "" if expo is None else f" (popularity_exponent {expo:.3f})"
                summary.append(
                    f"{set_name}: {a['label']} at 0.2{expo} / implicit ALS-64: Recall@20 "
                    f"{a['recall'] / b['recall']:.3f}x, fit time {a['fit_s'] / b['fit_s']:.2f}x")
                print("  " + summary[-1], flush=True)
        for sparse, dense in (("bpr-0.2", "bpr-13x1.0"), ("ials-0.2", "ials-13x1.0"),
                              ("bpr-0.2", "implicit-bpr-64")):
            if sparse in results and dense in results:
                a, b = results[sparse], results[dense]
                summary.append(f"{set_name}: {a['label']} at 0.2 / {b['label']}: Recall@20 "
                               f"{a['recall'] / b['recall']:.3f}x")
                print("  " + summary[-1], flush=True)
    headers = ["data", "model", "d", "density", "Recall@20", "NDCG@20", "factors-only / full",
               "fit s", "bytes", "epochs", "budget exact"]
    text = markdown_table(headers, table)
    print(text)
    print("\n".join(summary))
    if not args.no_write and args.split == "test":
        intro = (
            "Recall@20 and NDCG@20, full ranking with training items excluded, "
            f"{args.threads} threads. DSL rows: defaults with the listed loss and density "
            f"(BPR: max_iter={BPR['max_iter']}, update_interval={BPR['update_interval']}; "
            f"iALS, the default loss: max_iter={IALS['max_iter']}, "
            f"update_interval={IALS['update_interval']}, popularity_exponent by the data's "
            f"density, regularization by its counts); implicit ALS: reg {ALS_REG}, "
            f"{ALS_ITERS} iterations, alpha best of {ALS_ALPHAS} on a validation split of "
            "the training part; implicit BPR: learning rate, regularization and iterations "
            f"best of {_grid_text(BPR_GRID)} on the same validation split. "
            "'factors-only / full': Recall@20 of the ranking by the factor "
            "tables alone (item bias zeroed) over the full model's."
        )
        if args.thin is not None:
            intro += (f" Thinned: each interaction of the loaded training and test parts kept "
                      f"with probability {args.thin:g} (seed 2), a stand-in for sparser data.")
        if args.item_fraction is not None:
            intro += (f" Each item kept with probability {args.item_fraction:g} (seed 3): a "
                      "smaller catalogue.")
        body = intro + "\n\n" + text + "\n\n" + "\n".join(f"- {s}" for s in summary)
        title = "Quality per loss and density: " + ", ".join(args.sets)
        write_section(args.section, section_text(title, body))
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
