"""The ``sparse-rec`` command line.

``sparse-rec fit`` with no arguments is the main job: DSL matrix
factorisation at density 0.2 on the built-in MovieLens latest-small, scored
on a per-user 20% hold-out. ``sparse-rec recommend`` prints top items for
raw user ids from a saved model.
"""

import argparse
import sys
import time
from pathlib import Path

import joblib
import numpy as np

DEFAULT_MODEL = "sparse_rec_model.joblib"


def _load_data(path):
    from .datasets import load_lightgcn, load_movielens, load_movielens_small

    if path is None:
        return load_movielens_small(binarize=True), None
    path = Path(path)
    if (path / "train.txt").exists():
        tt = load_lightgcn(path)
        return None, tt
    return load_movielens(path, binarize=True), None


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def cmd_fit(args):
    from . import DSLMatrixFactorization
    from .metrics import evaluate
    from .model_selection import random_split

    ds, tt = _load_data(args.data)
    if tt is not None:
        X_train, X_test, name = tt.train, tt.test, tt.name
        user_ids = item_ids = item_names = None
    else:
        X_train, X_test = random_split(ds.X, test_size=0.2, random_state=args.seed)
        name, user_ids, item_ids, item_names = ds.name, ds.user_ids, ds.item_ids, ds.item_names
    print(f"data: {name}: {X_train.shape[0]} users, {X_train.shape[1]} items, "
          f"{X_train.nnz} training and {X_test.nnz} held-out interactions")
    model = DSLMatrixFactorization(
        n_components=args.n_components, density=args.density, max_iter=args.epochs,
        random_state=args.seed, n_threads=args.threads, verbose=0 if args.quiet else 1,
    )
    t0 = time.perf_counter()
    model.fit(X_train)
    fit_s = time.perf_counter() - t0
    scores = evaluate(model, X_train, X_test, k=20, metrics=("recall", "ndcg"))
    dense_params = args.n_components * (X_train.shape[0] + X_train.shape[1])
    rows = [
        ("active weights", f"{model.n_active_:,} of {dense_params:,} "
                           f"({model.n_active_ / dense_params:.1%})"),
        ("model bytes", f"{_fmt_bytes(model.nbytes_)} vs {_fmt_bytes(model.dense_nbytes_)} dense "
                        f"float32 ({model.nbytes_ / model.dense_nbytes_:.2f}x)"),
        ("Recall@20", f"{scores['recall']:.4f}"),
        ("NDCG@20", f"{scores['ndcg']:.4f}"),
        ("users evaluated", f"{scores['n_users_evaluated']}"),
        ("fit time", f"{fit_s:.2f} s ({args.epochs} epochs)"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    out = Path(args.output)
    joblib.dump({"model": model, "user_ids": user_ids, "item_ids": item_ids,
                 "item_names": item_names, "data": name}, out)
    print(f"\nmodel saved to {out}")
    return 0


def cmd_recommend(args):
    bundle = joblib.load(args.model)
    model = bundle["model"]
    user_ids, item_ids, names = bundle["user_ids"], bundle["item_ids"], bundle["item_names"]
    raw = np.asarray(args.users, dtype=np.int64)
    if user_ids is None:
        users = raw
    else:
        lookup = {int(r): k for k, r in enumerate(user_ids)}
        unknown = [int(r) for r in raw if int(r) not in lookup]
        if unknown:
            print(f"error: unknown user ids {unknown[:5]}; the model knows "
                  f"{len(user_ids)} users with raw ids {int(user_ids.min())}.."
                  f"{int(user_ids.max())}.", file=sys.stderr)
            return 2
        users = np.array([lookup[int(r)] for r in raw])
    ids, scores = model.recommend(users, n=args.n)
    for r, row, srow in zip(raw, ids, scores, strict=True):
        print(f"user {r}:")
        for rank, (i, s) in enumerate(zip(row, srow, strict=True), 1):
            if i < 0:
                break
            label = str(item_ids[i]) if item_ids is not None else str(i)
            if names is not None and names[i]:
                label += f"  {names[i]}"
            print(f"  {rank:>2}. {label}  ({s:.3f})")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="sparse-rec", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="train DSL-MF, evaluate on a hold-out split, save the model")
    f.add_argument("--data", default=None,
                   help="MovieLens folder (100K, 1M or latest) or LightGCN folder with "
                        "train.txt/test.txt; default: the built-in MovieLens latest-small")
    f.add_argument("--density", type=float, default=0.2)
    f.add_argument("--n-components", type=int, default=64)
    f.add_argument("--epochs", type=int, default=100)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=None)
    f.add_argument("--output", default=DEFAULT_MODEL)
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_fit)
    r = sub.add_parser("recommend", help="print top-n items for raw user ids")
    r.add_argument("users", nargs="+", type=int, help="raw user ids")
    r.add_argument("--model", default=DEFAULT_MODEL)
    r.add_argument("-n", type=int, default=10)
    r.set_defaults(func=cmd_recommend)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
