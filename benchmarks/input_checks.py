"""Cost of the input checks: ``check_interactions`` and the streamed model-file loader.

Every sparse matrix that enters sparse_rec has its structure checked
(``indptr`` monotone and of the right length, indices in range), its values
checked (finite, non-negative, representable in float32) and its duplicates
summed in float64 before anything indexes with it. This script times that
path on synthetic CSR and COO inputs of the given sizes, next to
``X.copy()`` for scale (the least any validation that returns a new matrix
costs), and times ``load`` of a model file (members inflated in 1 MiB
chunks) next to ``zipfile.ZipFile.read`` of the same members.

Run from the repository root::

    python benchmarks/input_checks.py                 # writes docs/benchmarks.md
    python benchmarks/input_checks.py --no-write --nnz 1000000
"""

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _report import markdown_table, median, section_text, write_section

from sparse_rec import DSLMatrixFactorization
from sparse_rec._io import load, save_model
from sparse_rec._validation import check_interactions
from sparse_rec.datasets import load_movielens_small


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--nnz", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rows = rng.integers(0, args.users, args.nnz)
    cols = rng.integers(0, args.items, args.nnz)
    ones = np.ones(args.nnz, np.float32)
    coo = sp.coo_matrix((ones, (rows, cols)), shape=(args.users, args.items))
    csr = coo.tocsr()
    csr.sum_duplicates()
    inputs = [("canonical CSR", csr), ("COO with duplicates", coo),
              ("CSR, int8 values", csr.astype(np.int8))]
    out = []
    for name, X in inputs:
        t_check = timed(lambda X=X: check_interactions(X), args.repeats)
        t_copy = timed(X.copy, args.repeats)
        out.append((name, f"{X.nnz:,}", f"{t_check * 1e3:.0f}", f"{t_copy * 1e3:.0f}",
                    f"{t_check / t_copy:.1f}x"))

    ds = load_movielens_small(binarize=True)
    model = DSLMatrixFactorization(loss="bpr", max_iter=5, random_state=0).fit(ds.X)
    with tempfile.TemporaryDirectory() as folder:
        path = save_model(model, Path(folder) / "m.npz")

        def read_all():
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    zf.read(info)

        t_load = timed(lambda: load(path), args.repeats)
        t_zip = timed(read_all, args.repeats)
        size = path.stat().st_size
    out.append((f"load (ml-latest-small model, {size / 1024:.0f} KiB)", "",
                f"{t_load * 1e3:.0f}", f"{t_zip * 1e3:.0f}", f"{t_load / t_zip:.1f}x"))
    table = markdown_table(("input", "stored entries", "checked (ms)", "baseline (ms)",
                            "ratio"), out)
    print(table)
    if not args.no_write:
        body = (
            f"`check_interactions` on {args.users:,} x {args.items:,} synthetic inputs (baseline: "
            "`X.copy()`), and `load` of a DSL-MF model file (5 epochs, density 0.2; baseline: "
            "`zipfile.ZipFile.read` of every member, no checks). Medians of "
            f"{args.repeats}.\n\n" + table
        )
        write_section("input_checks", section_text("Input checks: cost of validation", body))


if __name__ == "__main__":
    main()
