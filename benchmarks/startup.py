"""Start-up cost: 20 epochs on the built-in data set in a fresh process.

Each run is a new Python process that imports sparse_rec, loads the built-in
MovieLens latest-small and fits 20 epochs at the defaults. The cold run uses
an empty Numba cache folder (first-ever run: every kernel compiles); the warm
runs reuse that folder. Targets: warm < 5 s, cold < 60 s (whole process).

Run from the repository root::

    python benchmarks/startup.py             # writes docs/benchmarks.md
    python benchmarks/startup.py --no-write
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _report import ROOT, markdown_table, median, section_text, write_section

CHILD = """
import time
t0 = time.perf_counter()
from sparse_rec import DSLMatrixFactorization
from sparse_rec.datasets import load_movielens_small
X = load_movielens_small(binarize=True).X
t1 = time.perf_counter()
DSLMatrixFactorization(loss="bpr", max_iter=20, random_state=0).fit(X)
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def run_once(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, check=True)
    total = time.perf_counter() - t0
    imp, fit = (float(v) for v in out.stdout.split())
    return total, imp, fit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warm-runs", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        cold = run_once(cache)
        warm = [run_once(cache) for _ in range(args.warm_runs)]
    rows = [
        ("cold cache (first-ever run)", f"{cold[0]:.1f}", f"{cold[1]:.2f}", f"{cold[2]:.1f}",
         "< 60 s", "yes" if cold[0] < 60 else "NO"),
    ]
    w_total = median([w[0] for w in warm])
    rows.append((f"warm cache (median of {len(warm)})", f"{w_total:.1f}",
                 f"{median([w[1] for w in warm]):.2f}", f"{median([w[2] for w in warm]):.1f}",
                 "< 5 s", "yes" if w_total < 5 else "NO"))
    table = markdown_table(
        ("run", "process s", "import + load s", "fit s (20 epochs)", "target", "met"), rows)
    print(table)
    if not args.no_write:
        write_section("startup", section_text(
            "Start-up: 20 epochs on the built-in data in a fresh process", table))


if __name__ == "__main__":
    main()
