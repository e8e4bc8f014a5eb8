"""Full-ranking speed of DSLNCF: top-20 over all items for every user of an ML-1M-sized data set.

Synthetic power-law data of ML-1M's size (6,040 users x 3,706 items, 1M
interactions, ``make_interactions``). A short fit (the weights do not change
the cost of scoring), then ``recommend(all users, n=20)`` is timed three
times; the median is reported next to the target of the issue (< 60 s on
two cores) and next to DSL-MF at the same density for scale.

Run from the repository root::

    python benchmarks/ncf_scoring.py            # writes docs/benchmarks.md
    python benchmarks/ncf_scoring.py --quick --no-write
"""

import argparse
import time

import numpy as np
from _report import markdown_table, median, section_text, write_section

from sparse_rec import DSLNCF, DSLMatrixFactorization
from sparse_rec.datasets import make_interactions

N_USERS, N_ITEMS, NNZ = 6040, 3706, 1_000_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a tenth of the users, 1 repeat")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    return p.parse_args(argv)


def timed_recommend(model, users, repeats):
    model.recommend(users[:10], n=20)  # compile outside the timing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids, _ = model.recommend(users, n=20)
        times.append(time.perf_counter() - t0)
    assert ids.shape == (len(users), 20) and (ids >= 0).all()
    return median(times)


def main(argv=None):
    args = parse_args(argv)
    n_users = N_USERS // 10 if args.quick else N_USERS
    nnz = NNZ // 10 if args.quick else NNZ
    repeats = 1 if args.quick else args.repeats
    X = make_interactions(n_users, N_ITEMS, nnz, random_state=0)
    users = np.arange(n_users)
    rows = []
    for density in (0.2, 1.0):
        for name, make in (
            ("DSLNCF (16, (32, 16, 8))", lambda d=density: DSLNCF(
                density=d, max_iter=2, random_state=0, n_threads=args.threads)),
            ("DSL-MF (64)", lambda d=density: DSLMatrixFactorization(
                loss="bpr", density=d, max_iter=2, random_state=0, n_threads=args.threads)),
        ):
            model = make().fit(X)
            s = timed_recommend(model, users, repeats)
            rows.append([name, f"{density:g}", f"{s:.2f}", f"{1e3 * s / n_users:.2f}",
                         "yes" if s < 60 else "NO"])
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(
        ["model", "density", "top-20 for all users (s, median)", "ms per user", "< 60 s"], rows)
    print(table)
    body = (
        f"Full ranking: `recommend(all users, n=20)` over all {N_ITEMS:,} items for "
        f"{n_users:,} users ({X.nnz:,} synthetic interactions, ML-1M's size), seen items "
        f"excluded, {args.threads} threads, median of {repeats} runs after a warm-up call. "
        "DSLNCF computes the first MLP layer once per user and once per item, then runs the "
        "rest of the network per pair.\n\n" + table
    )
    if not (args.quick or args.no_write):
        write_section("ncf_scoring", section_text("DSLNCF full-ranking speed", body))


if __name__ == "__main__":
    main()
