"""Model files: bytes, save/load time and recommendation quality of full vs compact storage.

For each data set a DSL-MF (64 components, default epochs) is fitted on an
80% per-user random split (``random_split``, seed 0) and written with
``save_model`` twice: full (exact float32 weights) and ``compact=True``
(float16 weights, narrowest index types). Each file is loaded back and
scored with full-ranking Recall@20 / NDCG@20 (training items excluded);
"top-20 as saved" is the share of users whose loaded top-20 list equals the
original model's, "top-20 overlap" the mean share of items in common. The
pickle row is the model pickled with the standard library, for scale.

Data: the built-in MovieLens latest-small, and ``../shared/data/ml-100k``
when present.

Run from the repository root::

    python benchmarks/model_files.py              # writes docs/benchmarks.md
    python benchmarks/model_files.py --no-write --densities 0.2
"""

import argparse
import pickle
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from _report import DATA, fmt_bytes, markdown_table, median, section_text, write_section

from sparse_rec import DSLMatrixFactorization
from sparse_rec._io import load, save_model
from sparse_rec.datasets import load_movielens, load_movielens_small
from sparse_rec.metrics import evaluate
from sparse_rec.model_selection import random_split

K = 20
SEED = 0


def datasets():
    yield "MovieLens latest-small (built-in)", load_movielens_small(binarize=True).X
    path = DATA / "ml-100k"
    if path.exists():
        yield "MovieLens 100K", load_movielens(path, binarize=True).X
    else:
        print(f"note: {path} absent, ml-100k rows skipped")


def entry_bytes(path):
    """Compressed bytes of the factor tables, of ``seen_`` and of everything else."""
    parts = {"tables": 0, "seen_": 0, "other": 0}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename
            key = ("tables" if name.startswith(("user_table_.", "item_table_."))
                   else "seen_" if name.startswith("seen_.") else "other")
            parts[key] += info.compress_size
    return parts


def timed(fn, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, median(times)


def top_lists(model, X_train):
    users = np.arange(X_train.shape[0])
    return model.recommend(users, n=K, filter_seen=X_train)[0]


def measure(name, X, density, folder):
    X_train, X_test = random_split(X, test_size=0.2, random_state=SEED)
    model = DSLMatrixFactorization(loss="bpr", max_iter=100, n_components=64, density=density,
                                   random_state=SEED)
    t0 = time.perf_counter()
    model.fit(X_train)
    fit_s = time.perf_counter() - t0
    base = evaluate(model, X_train, X_test, k=K, metrics=("recall", "ndcg"))
    base_top = top_lists(model, X_train)
    rows = [(name, density, "in memory (nbytes_)", fmt_bytes(model.nbytes_), "", "", "",
             f"{base['recall']:.4f}", f"{base['ndcg']:.4f}", "", "")]
    pick = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    rows.append((name, density, "pickle (for scale)", fmt_bytes(len(pick)), "", "", "",
                 "", "", "", ""))
    for label, compact in (("full", False), ("compact", True)):
        path = Path(folder) / f"{label}.npz"
        _, save_s = timed(lambda p=path, c=compact: save_model(model, p, compact=c))
        loaded, load_s = timed(lambda p=path: load(p))
        scores = evaluate(loaded, X_train, X_test, k=K, metrics=("recall", "ndcg"))
        top = top_lists(loaded, X_train)
        same = float(np.mean(np.all(top == base_top, axis=1)))
        overlap = float(np.mean([len(np.intersect1d(a, b)) / K
                                 for a, b in zip(top, base_top, strict=True)]))
        parts = entry_bytes(path)
        split = " / ".join(fmt_bytes(parts[k]) for k in ("tables", "seen_", "other"))
        rows.append((name, density, f"{label} .npz", fmt_bytes(path.stat().st_size), split,
                     f"{save_s:.3f}", f"{load_s:.3f}", f"{scores['recall']:.4f}",
                     f"{scores['ndcg']:.4f}", f"{same:.1%}", f"{overlap:.1%}"))
    print(f"{name} density {density}: fit {fit_s:.1f} s")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--densities", default="0.2,1.0")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    densities = [float(d) for d in args.densities.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, X in datasets():
            for density in densities:
                rows += measure(name, X, density, folder)
    table = markdown_table(
        ("data", "density", "storage", "bytes", "tables / seen_ / other (in file)", "save s",
         "load s", f"Recall@{K}", f"NDCG@{K}", f"top-{K} as saved", f"top-{K} overlap"),
        rows,
    )
    print(table)
    if not args.no_write:
        body = (
            "DSL-MF, 64 components, default epochs, fitted on an 80% per-user random split "
            f"(seed {SEED}); Recall/NDCG@{K} full ranking on the held-out 20%. Full files "
            "hold exact float32 weights; compact files float16 weights and the narrowest "
            "index types. Save/load times are medians of 3. \"top-20 as saved\": share of "
            "users whose top-20 list after loading equals the original model's; "
            "\"overlap\": mean share of items in common.\n\n" + table
        )
        write_section("model_files", section_text(
            "Model files: size and quality of full vs compact storage", body))


if __name__ == "__main__":
    main()
