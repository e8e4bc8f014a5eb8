"""The ``sparse-rec`` command line.

``sparse-rec fit`` with no arguments is the main job: DSL matrix
factorisation at density 0.2 on the built-in MovieLens latest-small, scored
on a per-user 20% hold-out and saved as a safe ``.npz`` model file.
``sparse-rec evaluate`` scores a saved model on the same hold-out, and
``sparse-rec recommend`` prints top items for raw user ids.

Every user error (a bad option, a missing or unreadable file or folder, an
output path that cannot be written, data the model does not fit) exits
with status 2 and one ``error:`` line on stderr, never a traceback; paths
are checked before any training starts.
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "sparse_rec_model.npz"


class UsageError(ValueError):
    """A user error found by the CLI itself (message is final)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_arg(minimum, maximum=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}; got {value}")
        return value

    return parse


def _fraction_arg(name, high_closed):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number; got {text!r}") from None
        if not (0 < value < 1 or (high_closed and value == 1)):
            raise argparse.ArgumentTypeError(
                f"{name} must be in (0, {'1]' if high_closed else '1)'}; got {text}")
        return value

    return parse


def _threads_arg(text):
    value = _int_arg(-1)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be -1 (all cores) or an integer >= 1; got 0")
    return value


def _check_data_folder(path):
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--data {path}: no such folder. Give a MovieLens or LightGCN folder.")
    if not p.is_dir():
        raise UsageError(f"--data {path} is a file; it must be a folder (MovieLens or LightGCN "
                         "layout). Give the folder that holds the data files.")
    if not os.access(p, os.R_OK | os.X_OK):
        raise UsageError(f"--data {path}: the folder is not readable (permissions).")


def _check_model_file(path):
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--model {path}: no such file. Train one with `sparse-rec fit` first.")
    if p.is_dir():
        raise UsageError(f"--model {path} is a folder; it must be a model file (.npz) "
                         "written by `sparse-rec fit`.")


def _check_output_file(path):
    """Before training: ``path`` must be a file we can create or replace."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--output {path} is a folder; give a file name such as "
                         f"{Path(path) / DEFAULT_MODEL}.")
    folder = p.parent
    if not folder.is_dir():
        raise UsageError(f"--output {path}: the folder {folder} does not exist; create it first.")
    try:  # the only reliable test of writability: create a file there
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".check", dir=folder)
    except OSError as e:
        raise UsageError(f"--output {path}: cannot write in {folder} ({e.strerror}). Choose a "
                         "writable location.") from None
    os.close(fd)
    os.unlink(tmp)


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


def _split(args):
    """``(X_train, X_test, name, dataset)`` as ``fit`` and ``evaluate`` both make it."""
    from .model_selection import random_split

    ds, tt = _load_data(args.data)
    if tt is not None:
        return tt.train, tt.test, tt.name, None
    X_train, X_test = random_split(ds.X, test_size=args.test_size, random_state=args.seed)
    return X_train, X_test, ds.name, ds


def _print_table(rows):
    width = max(len(r[0]) for r in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _quality_rows(model, X_train, X_test, k):
    from .metrics import evaluate

    scores = evaluate(model, X_train, X_test, k=k, metrics=("recall", "ndcg"))
    rows = []
    if hasattr(model, "dense_nbytes_"):  # sparse_rec's DSL estimators
        if hasattr(model, "item_table_"):  # MF: the factor tables' coordinates
            dense_params = model.n_components * (model.n_users_ + model.n_items_)
            of = "of"
        else:  # counted from the dense bytes, which include the dense parts
            dense_params, of = model.dense_nbytes_ // 4, "of about"
        rows += [
            ("active weights", f"{model.n_active_:,} {of} {dense_params:,} "
                               f"({model.n_active_ / dense_params:.1%})"),
            ("model bytes", f"{_fmt_bytes(model.nbytes_)} vs {_fmt_bytes(model.dense_nbytes_)} "
                            f"dense float32 ({model.nbytes_ / model.dense_nbytes_:.2f}x)"),
        ]
    return rows + [
        (f"Recall@{k}", f"{scores['recall']:.4f}"),
        (f"NDCG@{k}", f"{scores['ndcg']:.4f}"),
        ("users evaluated", f"{scores['n_users_evaluated']}"),
    ]


def cmd_fit(args):
    from . import _registry

    _check_data_folder(args.data)
    _check_output_file(args.output)
    X_train, X_test, name, ds = _split(args)
    print(f"data: {name}: {X_train.shape[0]} users, {X_train.shape[1]} items, "
          f"{X_train.nnz} training and {X_test.nnz} held-out interactions")
    cls = _registry.load_class(_registry.MODELS[_registry.cli_estimators()[args.estimator]]
                               .estimator)
    if args.loss is not None and "loss" not in cls().get_params():
        raise UsageError(f"--loss is an option of --estimator mf and lightgcn only; got "
                         f"--estimator {args.estimator}. Leave --loss out.")
    # Options left out keep the estimator's defaults.
    given = dict(n_components=args.n_components, density=args.density, max_iter=args.epochs,
                 loss=args.loss)
    model = cls(**{k: v for k, v in given.items() if v is not None},
                random_state=args.seed, n_threads=args.threads, verbose=0 if args.quiet else 1)
    t0 = time.perf_counter()
    model.fit(X_train)
    fit_s = time.perf_counter() - t0
    rows = _quality_rows(model, X_train, X_test, 20)
    rows.append(("fit time", f"{fit_s:.2f} s ({model.n_iter_} epochs)"))
    _print_table(rows)
    out = Path(args.output)
    model.save(out, user_ids=None if ds is None else ds.user_ids,
               item_ids=None if ds is None else ds.item_ids)
    print(f"\nmodel saved to {out}")
    return 0


def _load_model(path):
    from ._io import load

    return load(path)


def _check_same_items(model, X_train, ds):
    if model.n_items_ != X_train.shape[1] or model.n_users_ != X_train.shape[0]:
        raise ValueError(
            f"the model was fitted on {model.n_users_} users x {model.n_items_} items but the "
            f"data has {X_train.shape[0]} x {X_train.shape[1]}. Evaluate on the data set the "
            "model was trained on (--data)."
        )
    seen = getattr(model, "seen_", None)
    if seen is not None and (seen != X_train).nnz:
        # Another split would hold out interactions the model trained on.
        raise ValueError(
            "the model was not trained on this split's training part, so its held-out "
            "figures would include interactions it was trained on. Pass the --data, "
            "--test-size and --seed used with `sparse-rec fit`."
        )
    mapped = getattr(model, "item_ids_", None)
    if ds is not None and mapped is not None and not np.array_equal(
        np.asarray(mapped).astype(str), np.asarray(ds.item_ids).astype(str)
    ):
        raise ValueError(
            "the model's raw item ids differ from the data set's: it was trained on other "
            "data. Pass the data set it was trained on with --data."
        )


def cmd_evaluate(args):
    _check_model_file(args.model)
    _check_data_folder(args.data)
    model = _load_model(args.model)
    if args.k > model.n_items_:
        raise UsageError(f"-k {args.k} is more than the model's {model.n_items_} items; give "
                         f"a cut-off of at most {model.n_items_}.")
    X_train, X_test, name, ds = _split(args)
    _check_same_items(model, X_train, ds)
    if ds is not None:
        print(f"data: {name}, hold-out of {args.test_size:.0%} per user (seed {args.seed}), "
              "the split `sparse-rec fit` made with these options")
    _print_table(_quality_rows(model, X_train, X_test, args.k))
    return 0


def cmd_recommend(args):
    _check_model_file(args.model)
    _check_data_folder(args.data)
    model = _load_model(args.model)
    user_ids = getattr(model, "user_ids_", None)
    item_ids = getattr(model, "item_ids_", None)
    raw = [str(u) for u in args.users]
    if user_ids is None:
        users = _user_indices(raw, model.n_users_)
    else:
        lookup = {str(r): k for k, r in enumerate(user_ids)}
        unknown = [r for r in raw if r not in lookup]
        if unknown:
            print(f"error: unknown user ids {unknown[:5]}; the model knows "
                  f"{len(user_ids)} users with raw ids such as {list(user_ids[:3])}.",
                  file=sys.stderr)
            return 2
        users = np.array([lookup[r] for r in raw])
    names = _item_names(args.data, item_ids)
    ids, scores = model.recommend(users, n=args.n)
    for r, row, srow in zip(raw, ids, scores, strict=True):
        print(f"user {r}:")
        for rank, (i, s) in enumerate(zip(row, srow, strict=True), 1):
            if i < 0:
                break
            label = str(item_ids[i]) if item_ids is not None else str(i)
            if names is not None and names.get(label):
                label += f"  {names[label]}"
            print(f"  {rank:>2}. {label}  ({s:.3f})")
    return 0


def _user_indices(raw, n_users):
    """User indices given on the command line for a model without raw ids."""
    bad = [r for r in raw if not (re.fullmatch(r"[0-9]{1,19}", r) and int(r) < n_users)]
    if bad:
        raise UsageError(f"unknown user ids {bad[:5]}: this model has no raw ids, so users are "
                         f"the indices 0 to {n_users - 1}.")
    return np.array([int(r) for r in raw], np.int64)


def _item_names(data, item_ids):
    """Raw item id -> title from the data set, when it has titles."""
    if item_ids is None:
        return None
    ds, _ = _load_data(data)
    if ds is None or ds.item_names is None:
        return None
    return {str(r): str(n) for r, n in zip(ds.item_ids, ds.item_names, strict=True)}


def _data_options(p, with_split=True):
    p.add_argument("--data", default=None,
                   help="MovieLens folder (100K, 1M or latest) or LightGCN folder with "
                        "train.txt/test.txt; default: the built-in MovieLens latest-small")
    if with_split:
        p.add_argument("--test-size", type=_fraction_arg("test size", False), default=0.2,
                       help="fraction of each user's interactions held out (default 0.2)")
        p.add_argument("--seed", type=_int_arg(0, 2**32 - 1), default=0,
                       help="seed of the split (and the fit), in [0, 2**32 - 1]")


def build_parser():
    from . import _registry

    p = _Parser(prog="sparse-rec", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="train a model (DSL-MF by default), evaluate on a hold-out "
                                   "split, save the model")
    _data_options(f)
    choices = list(_registry.cli_estimators())
    f.add_argument("--estimator", choices=choices, default=choices[0],
                   help="model to train (default: %(default)s)")
    f.add_argument("--density", type=_fraction_arg("density", True), default=None,
                   help="fraction of active weights (default: the estimator's, 0.2)")
    f.add_argument("--n-components", type=_int_arg(1), default=None,
                   help="embedding size (default: the estimator's; 64 for mf)")
    f.add_argument("--epochs", type=_int_arg(1), default=None,
                   help="training epochs (default: the estimator's; for mf 14 with the iALS "
                        "loss, 100 with --loss bpr, 40 with --loss softmax, 80 with --loss ccl)")
    f.add_argument("--loss", choices=("ials", "bpr", "softmax", "ccl"), default=None,
                   help="loss of --estimator mf (default: ials, exact row solves; bpr: "
                        "sampled pairs, Adagrad; softmax: sampled softmax, Adagrad; ccl: cosine "
                        "contrastive loss, Adagrad) or lightgcn (bpr, the default, or softmax)")
    f.add_argument("--threads", type=_threads_arg, default=None)
    f.add_argument("--output", default=DEFAULT_MODEL, help="model file (.npz)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_fit)
    e = sub.add_parser("evaluate", help="score a saved model on the hold-out split of its data")
    e.add_argument("--model", default=DEFAULT_MODEL)
    _data_options(e)
    e.add_argument("-k", type=_int_arg(1), default=20,
                   help="cut-off of Recall and NDCG (default 20)")
    e.set_defaults(func=cmd_evaluate)
    r = sub.add_parser("recommend", help="print top-n items for raw user ids")
    r.add_argument("users", nargs="+", help="raw user ids (as in the data set)")
    r.add_argument("--model", default=DEFAULT_MODEL)
    r.add_argument("-n", type=_int_arg(1), default=10,
                   help="items per user (at most the model's number of items)")
    _data_options(r, with_split=False)
    r.set_defaults(func=cmd_recommend)
    return p


def main(argv=None):
    from .exceptions import DivergenceError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (2) and --help (0): a status, as for any error
        return e.code
    try:
        return args.func(args)
    except (ValueError, OSError, DivergenceError) as exc:
        # User errors (bad data, files, options): one line, no traceback.
        text = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
        print(f"error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
