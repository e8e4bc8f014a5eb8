"""Fit time of DSL-MF's default (iALS) at density 0.2 against implicit ALS-64, same run.

Issue 11's target: the default fit at density 0.2 takes at most 3x implicit
ALS-64's fit (15 iterations), same threads. Each set: one warm-up fit of
each, then ``--repeats`` alternating timed fits; medians and their ratio.
The 1-minute load average before and after says how shared the machine was.

    python benchmarks/ials_fit_time.py --sets ml-100k,builtin,gowalla
"""

import argparse
import os
import time

import numba
import numpy as np
from _report import markdown_table, median, section_text, write_section
from quality import ALS_ITERS, IALS, SEED, SETS, D, _als, load_set
from threadpoolctl import threadpool_limits

from sparse_rec import DSLMatrixFactorization


def fit_ials(train, threads):
    est = DSLMatrixFactorization(n_components=D, **IALS, density=0.2, random_state=SEED,
                                 n_threads=threads)
    t0 = time.perf_counter()
    est.fit(train)
    return time.perf_counter() - t0


def fit_als(train, threads):
    # alpha does not change the work of an ALS iteration; BLAS as in quality.py.
    with threadpool_limits(1, "blas"):
        return _als(train, 64, 1.0, threads)[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="ml-100k,builtin", help=f"comma-separated: {','.join(SETS)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = p.parse_args()
    sets = [s.strip() for s in args.sets.split(",")]
    bad = [s for s in sets if s not in SETS]
    if bad:
        p.error(f"unknown sets {bad}; choose from {SETS}")
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rows = []
    for name in sets:
        data = load_set(name, False)
        if data is None:
            continue
        train = data[0]
        fit_ials(train, args.threads)
        fit_als(train, args.threads)
        load0 = os.getloadavg()[0]
        ials, als = [], []
        for _ in range(args.repeats):
            ials.append(fit_ials(train, args.threads))
            als.append(fit_als(train, args.threads))
        load1 = os.getloadavg()[0]
        mi, ma = median(ials), median(als)
        rows.append([name, f"{train.shape[0]} x {train.shape[1]}, {train.nnz:,}",
                     " / ".join(f"{t:.2f}" for t in ials), f"{mi:.2f}",
                     " / ".join(f"{t:.2f}" for t in als), f"{ma:.2f}", f"{mi / ma:.2f}x",
                     "yes" if mi / ma <= 3.0 else "NO", f"{load0:.1f} / {load1:.1f}"])
        print(" | ".join(rows[-1]), flush=True)
    headers = ["data", "train users x items, nnz", "iALS-0.2 fit s (runs)", "median",
               "ALS-64 fit s (runs)", "median", "ratio", "<= 3x", "load before / after"]
    text = markdown_table(headers, rows)
    print(text)
    if not args.no_write and rows:
        body = (f"DSL-MF defaults (loss='ials', max_iter={IALS['max_iter']}, "
                f"update_interval={IALS['update_interval']}), 64 components, density 0.2, "
                f"against implicit ALS-64 ({ALS_ITERS} iterations, BLAS at 1 thread as in "
                f"`quality.py`), {args.threads} threads each, training part of each set's "
                f"test split. One warm-up fit of each, then {args.repeats} alternating timed "
                "fits; the ratio is of the medians. Load: 1-minute load average before and "
                "after the timed fits (the benchmark's own threads count for about "
                f"{args.threads}).\n\n" + text)
        write_section("ials-fit-time", section_text("iALS fit time against implicit ALS-64",
                                                    body))
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
