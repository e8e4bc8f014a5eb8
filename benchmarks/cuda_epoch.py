"""BPR epoch on the GPU (numba-cuda) against the CPU kernel, same data and samples.

Synthetic power-law interactions (``make_interactions``), n_components=64,
densities 0.2 and 1.0. Each row is the median of timed epochs after one
warm-up epoch (compilation); the GPU time includes copying the loss back,
which waits for the kernel. A second table times whole fits (``max_iter``
epochs, prune/grow on the CPU in both cases). Needs a CUDA GPU.

Run from the repository root::

    python benchmarks/cuda_epoch.py               # writes docs/benchmarks.md
    python benchmarks/cuda_epoch.py --no-write --out /tmp/cuda.md
"""

import argparse
import time

import numba
import numpy as np
from _report import markdown_table, median, section_text, write_section

from sparse_rec import DSLMatrixFactorization
from sparse_rec._base import TrainData
from sparse_rec._kernels import _rng
from sparse_rec.backends import cpu
from sparse_rec.backends import cuda as cuda_backend
from sparse_rec.datasets import make_interactions


def epoch_times(X, density, target, repeats, threads):
    # BPR's tables (two slots: weights and Adagrad state); the GPU engine is BPR's.
    est = DSLMatrixFactorization(loss="bpr", density=density, random_state=0)
    users, items = est._init_tables(X.shape[0], X.shape[1], est.n_components, 0)
    bias_v = np.zeros((X.shape[1], 2), np.float32)
    data = TrainData.from_matrix(X)
    if target == "gpu":
        engine = cuda_backend.MFEngine(data, users, items, bias_v, learning_rate=0.05,
                                       alpha=0.03, optimizer="adagrad")

        def run(e):
            key = _rng.epoch_key(np.uint64(0), np.uint64(e))
            return engine.epoch(key)
    else:
        numba.set_num_threads(threads)

        def run(e):
            key = np.uint64(_rng.epoch_key(np.uint64(0), np.uint64(e)))
            return cpu.bpr_epoch(data, users, items, bias_v, data.nnz, key, 0.05, 0.03,
                                 cpu.ADAGRAD)
    run(0)
    times, losses = [], []
    for e in range(1, repeats + 1):
        t0 = time.perf_counter()
        losses.append(run(e) / data.nnz)
        times.append(time.perf_counter() - t0)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return median(times), losses[-1]


def fit_time(X, density, backend, epochs):
    est = DSLMatrixFactorization(loss="bpr", density=density, max_iter=epochs, random_state=0,
                                 backend=backend)
    t0 = time.perf_counter()
    est.fit(X)
    seconds = time.perf_counter() - t0
    pg = sum(h["prune_grow_seconds"] for h in est.history_)
    return seconds, pg, est.history_[-1]["loss"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=40_000)
    p.add_argument("--interactions", type=int, default=5_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fit-epochs", type=int, default=10)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--out", default=None, help="also write the section text to this file")
    args = p.parse_args(argv)
    if not cuda_backend.is_available():
        print("skipped: no CUDA GPU (numba-cuda sees none)")
        return
    X = make_interactions(args.users, args.items, args.interactions, random_state=0)
    all_threads = numba.config.NUMBA_NUM_THREADS
    rows = []
    for density in (0.2, 1.0):
        cpu_all, l_cpu = epoch_times(X, density, "cpu", args.repeats, all_threads)
        cpu_2, _ = epoch_times(X, density, "cpu", args.repeats, min(2, all_threads))
        gpu, l_gpu = epoch_times(X, density, "gpu", args.repeats, None)
        rows.append((density, f"{cpu_2:.3f}", f"{cpu_all:.3f}", f"{gpu:.4f}",
                     f"{X.nnz / gpu / 1e6:.1f}", f"{cpu_all / gpu:.1f}x",
                     f"{l_cpu:.4f} / {l_gpu:.4f}"))
        print(rows[-1])
    table = markdown_table(
        ("density", "CPU 2 threads s/epoch", f"CPU {all_threads} threads s/epoch",
         "GPU s/epoch", "GPU M samples/s", f"GPU speed-up vs {all_threads} threads",
         "mean loss after 4 epochs CPU / GPU"), rows)
    fit_rows = []
    for density in (0.2,):
        for backend in ("cpu", "cuda"):
            s, pg, loss = fit_time(X, density, backend, args.fit_epochs)
            fit_rows.append((density, backend, f"{s:.1f}", f"{pg / s:.0%}", f"{loss:.4f}"))
            print(fit_rows[-1])
    fit_table = markdown_table(
        ("density", "backend", f"fit s ({args.fit_epochs} epochs)", "prune/grow share",
         "final loss"), fit_rows)
    body = (f"{X.shape[0]:,} users x {X.shape[1]:,} items, {X.nnz:,} interactions "
            f"(synthetic power law), n_components=64.\n\n{table}\n\nWhole fits (CPU: all "
            f"{all_threads} threads; prune/grow runs on the CPU for both):\n\n{fit_table}\n")
    print(body)
    text = section_text("BPR epoch on the GPU (numba-cuda) against the CPU", body)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if not args.no_write:
        write_section("cuda", text)


if __name__ == "__main__":
    main()
