"""Every model on the GPU against the CPU: epoch time, whole fits, prune/grow share, quality.

One prepared run for each model that has a CUDA engine (DSL-MF with BPR,
iALS, softmax and CCL, DSLNCF, DSLMultVAE with the full and the sampled
softmax, DSLLightGCN with BPR and softmax), at densities 0.2
and 1.0 on Gowalla (LightGCN split, the largest shared data set). The CPU
epochs set the time: DSL-MF's BPR and iALS and DSLNCF fit in about 5
minutes on one GPU machine; with the softmax-family losses (whose growth
scores run on the host), DSLMultVAE and DSLLightGCN (about 45 s per CPU
epoch on 2 threads) it takes longer, so run the models in parts with
``--only`` (for example ``--only mf-softmax,mf-ccl``):

* seconds per epoch on 2 CPU threads, on all CPU threads of the machine and
  on the GPU: the median over timed epochs of a fit without prune/grow
  (``update_ratio=0``), after a warm-up fit that compiled every kernel;
* whole fits with the defaults (prune/grow on) on all CPU threads and on the
  GPU: wall time and prune/grow share (``history_`` prune_grow_seconds over
  the wall time);
* final quality: Recall@20 and NDCG@20 (full ranking, training items
  excluded) over a fixed sample of test users, for CPU fits with seeds 0 and
  1 (their difference is the seed noise; at density 0.2 only) and the GPU
  fit with seed 0.

A model is one entry of ``MODELS``. Needs a CUDA GPU and refuses without
one (and in Numba's CUDA simulator, whose timings mean nothing, unless
``--smoke`` checks the script on tiny synthetic data without writing).

Run from the repository root::

    python benchmarks/cuda_all.py               # writes docs/benchmarks.md
    python benchmarks/cuda_all.py --only vae --no-write --out /tmp/vae.md
    python benchmarks/cuda_all.py --no-write --out /tmp/cuda_all.md
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/cuda_all.py --smoke
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
from _report import DATA, markdown_table, median, section_text, skip, write_section

from sparse_rec import DSLNCF, DSLLightGCN, DSLMatrixFactorization, DSLMultVAE
from sparse_rec.backends import cuda as cuda_backend
from sparse_rec.datasets import load_lightgcn, make_interactions
from sparse_rec.metrics import evaluate

GOWALLA = DATA / "gowalla"
DENSITIES = (0.2, 1.0)
EVAL_USERS = 2000


@dataclass
class Model:
    """One benchmarked model: how to build it, and how long each measurement runs."""

    label: str
    cls: type
    params: dict  # estimator parameters beyond density, max_iter, seed, threads, backend
    fit_epochs: int  # whole fits
    timed_epochs: int = 3  # timed epochs (after one left out) per epoch-time figure
    smoke_params: dict = field(default_factory=dict)  # overrides for --smoke

    def make(self, density, backend, threads, epochs, seed, smoke=False, **overrides):
        params = {**self.params, **(self.smoke_params if smoke else {}), **overrides}
        return self.cls(density=density, max_iter=epochs, random_state=seed, n_threads=threads,
                        backend=backend, **params)


# Add a model with one line: its estimator must accept backend="cuda".
MODELS = {
    "mf-bpr": Model("DSL-MF (BPR)", DSLMatrixFactorization, {"n_components": 64, "loss": "bpr"},
                    fit_epochs=20, smoke_params={"n_components": 8}),
    # iALS with its defaults (20 epochs, updates every 2): exact solves make
    # an epoch costlier than BPR's, so 2 timed epochs and 10-epoch fits.
    "mf-ials": Model("DSL-MF (iALS)", DSLMatrixFactorization,
                     {"n_components": 64, "loss": "ials"}, fit_epochs=10, timed_epochs=2,
                     smoke_params={"n_components": 8}),
    # The softmax-family losses: 2 timed epochs and 10-epoch fits (2 updates
    # at their update_interval 4), as iALS. On Gowalla at density 0.2, 2
    # threads of the loaded 2-core machine here: softmax about 2 s an epoch
    # and 9 s a prune/grow step, CCL about 6 s an epoch and 83 s a step
    # (its exact growth scores, dense cosine blocks, run on the host even in
    # a GPU fit: its prune/grow share is expected far above 10%). Both
    # together take about 5 minutes on a 16-thread GPU machine (estimated).
    "mf-softmax": Model("DSL-MF (softmax)", DSLMatrixFactorization,
                        {"n_components": 64, "loss": "softmax"}, fit_epochs=10,
                        timed_epochs=2, smoke_params={"n_components": 8, "n_negatives": 16}),
    "mf-ccl": Model("DSL-MF (CCL)", DSLMatrixFactorization, {"n_components": 64, "loss": "ccl"},
                    fit_epochs=10, timed_epochs=2,
                    smoke_params={"n_components": 8, "n_negatives": 16}),
    # On Gowalla an NCF epoch takes 25 s on 2 threads at density 0.2 and
    # about 60 s dense (the 2-core development machine, loaded): one timed
    # epoch each and 4-epoch fits keep the run within 5 minutes.
    "ncf": Model("DSLNCF", DSLNCF, {}, fit_epochs=4, timed_epochs=1,
                 smoke_params={"n_components": 4, "hidden_layer_sizes": (8, 4),
                               "batch_size": 32, "n_negatives": 1}),
    # Defaults (hidden 600, latent 200, batch 500). Not yet timed on Gowalla
    # on the CPU: one timed epoch and 3-epoch fits, as NCF.
    "vae": Model("DSLMultVAE", DSLMultVAE, {}, fit_epochs=3, timed_epochs=1,
                 smoke_params={"hidden_layer_sizes": (16,), "n_components": 4,
                               "batch_size": 16}),
    # The sampled softmax (2000 shared draws a batch plus its positives, out
    # of Gowalla's 40,981 items): timed as the full softmax.
    "vae-sampled": Model("DSLMultVAE (n_sampled=2000)", DSLMultVAE, {"n_sampled": 2000},
                         fit_epochs=3, timed_epochs=1,
                         smoke_params={"hidden_layer_sizes": (16,), "n_components": 4,
                                       "batch_size": 16, "n_sampled": 5}),
    # About 45 s per epoch on 2 CPU threads at density 0.2 (docs/benchmarks.md,
    # LightGCN on Gowalla): one timed epoch and 2-epoch fits. With every model
    # the run exceeds 5 minutes on such CPUs: run it in parts with --only.
    "lightgcn": Model("DSLLightGCN", DSLLightGCN, {}, fit_epochs=2, timed_epochs=1,
                      smoke_params={"n_components": 8, "batch_size": 64}),
    # The sampled softmax over cosines (256 shared negatives a batch): the
    # same propagation and backward as BPR, so timed as it is.
    "lightgcn-softmax": Model("DSLLightGCN (softmax)", DSLLightGCN, {"loss": "softmax"},
                              fit_epochs=2, timed_epochs=1,
                              smoke_params={"n_components": 8, "batch_size": 64,
                                            "n_negatives": 16}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help=f"comma-separated models: {','.join(MODELS)}")
    p.add_argument("--smoke", action="store_true",
                   help="tiny synthetic data, 3 epochs (runs in the simulator); never writes docs")
    p.add_argument("--gowalla", default=str(GOWALLA),
                   help=f"folder of the Gowalla LightGCN split (default {GOWALLA})")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    p.add_argument("--out", default=None, help="also write the section text to this file")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.only.split(",")] if args.only else list(MODELS)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    return args


def refuse_without_gpu(smoke):
    if not cuda_backend.is_available():
        sys.exit("cuda_all.py needs a CUDA GPU and numba-cuda (pip install 'sparse-rec[cuda]'); "
                 "none was found, so no figure was measured.")
    if cuda_backend._simulated() and not smoke:
        sys.exit("cuda_all.py: NUMBA_ENABLE_CUDASIM=1 runs Numba's CUDA simulator, whose "
                 "timings mean nothing. Unset it on a GPU machine, or pass --smoke to check the "
                 "script on tiny data (nothing is written).")


def load_data(smoke, folder):
    if smoke:
        X = make_interactions(30, 20, 150, random_state=0)
        rng = np.random.default_rng(0)
        test = X.copy()
        test.data[:] = rng.random(X.nnz) < 0.2
        test.eliminate_zeros()
        train = (X - X.multiply(test)).tocsr()
        train.eliminate_zeros()
        return train, test.tocsr(), "synthetic smoke data"
    folder = Path(folder)
    if not (folder / "train.txt").is_file() or not (folder / "test.txt").is_file():
        skip(f"Gowalla (LightGCN split) not present in {folder} (pass --gowalla)")
    split = load_lightgcn(folder)
    return split.train, split.test, "Gowalla (LightGCN split)"


def fit(model, X, density, backend, threads, epochs, seed=0, smoke=False, **overrides):
    est = model.make(density, backend, threads, epochs, seed, smoke, **overrides)
    t0 = time.perf_counter()
    est.fit(X)
    return est, time.perf_counter() - t0


def epoch_seconds(model, X, density, backend, threads, smoke):
    """Median epoch time of a static fit (no prune/grow).

    With more than one timed epoch the first epoch is left out as well (the
    kernels were compiled by the warm-up, but a first call still loads them).
    """
    n = model.timed_epochs
    est, _ = fit(model, X, density, backend, threads, n + (n > 1), smoke=smoke,
                 update_ratio=0.0)
    return median([h["seconds"] - h["prune_grow_seconds"] for h in est.history_[-n:]])


def quality(est, train, test, users):
    r = evaluate(est, train, test, k=20, metrics=("recall", "ndcg"), users=users)
    return r["recall"], r["ndcg"]


def run_model(name, train, test, users, smoke, checks):
    model = MODELS[name]
    all_threads = numba.config.NUMBA_NUM_THREADS
    two = min(2, all_threads)
    # Compile every kernel (epochs, growth, scoring) outside the timed runs,
    # on the first users (every item: the same array types as the real runs).
    head = train[: min(500, train.shape[0])]
    for backend in ("cpu", "cuda"):
        est, _ = fit(model, head, 0.2, backend, None, 3, smoke=smoke, update_interval=2)
        quality(est, head, test[: head.shape[0]], np.arange(4))
    epoch_rows, fit_rows = [], []
    for density in DENSITIES:
        s2 = epoch_seconds(model, train, density, "cpu", two, smoke)
        s_all = epoch_seconds(model, train, density, "cpu", None, smoke)
        s_gpu = max(epoch_seconds(model, train, density, "cuda", None, smoke), 1e-9)
        epoch_rows.append((model.label, density, f"{s2:.3f}", f"{s_all:.3f}", f"{s_gpu:.4f}",
                           f"{s_all / s_gpu:.1f}x", f"{s2 / s_gpu:.1f}x"))
        print(epoch_rows[-1], flush=True)
        epochs = 3 if smoke else model.fit_epochs
        q = {}
        # The seed noise only where the quality target is (0.2).
        runs = (("cpu", 0), ("cpu", 1), ("cuda", 0)) if density == 0.2 else (("cpu", 0),
                                                                            ("cuda", 0))
        for backend, seed in runs:
            est, wall = fit(model, train, density, backend, None, epochs, seed=seed, smoke=smoke)
            pg = sum(h["prune_grow_seconds"] for h in est.history_)
            q[backend, seed] = quality(est, train, test, users)
            if seed == 0:
                fit_rows.append([model.label, density, backend, epochs, f"{wall:.1f}",
                                 f"{pg / wall:.0%}", f"{q[backend, seed][0]:.4f}",
                                 f"{q[backend, seed][1]:.4f}"])
        noise = abs(q["cpu", 0][0] - q["cpu", 1][0]) if ("cpu", 1) in q else float("nan")
        for row in fit_rows[-2:]:
            row.append(f"{q['cpu', 1][0]:.4f} (difference {noise:.4f})" if ("cpu", 1) in q
                       else "not run")
        print(fit_rows[-2:], flush=True)
        if density == 0.2:
            share = float(fit_rows[-1][5].rstrip("%")) / 100
            gap = abs(q["cuda", 0][0] - q["cpu", 0][0])
            checks.append(
                f"{model.label} at density 0.2: GPU epoch {s_all / s_gpu:.1f}x all "
                f"{all_threads} CPU threads (target >= 10x: {s_all / s_gpu >= 10}); prune/grow "
                f"{share:.0%} of the GPU fit (target <= 10%: {share <= 0.10}); Recall@20 GPU - "
                f"CPU {q['cuda', 0][0] - q['cpu', 0][0]:+.4f} against a seed-0 / seed-1 "
                f"difference of {noise:.4f} (within it: {gap <= noise})")
    return epoch_rows, fit_rows


def main(argv=None):
    args = parse_args(argv)
    refuse_without_gpu(args.smoke)
    t_start = time.perf_counter()
    train, test, data_name = load_data(args.smoke, args.gowalla)
    rng = np.random.default_rng(0)
    with_test = np.flatnonzero(np.diff(test.tocsr().indptr) > 0)
    users = np.sort(rng.choice(with_test, min(EVAL_USERS, len(with_test)), replace=False))
    epoch_rows, fit_rows, checks = [], [], []
    for name in args.models:
        e, f = run_model(name, train, test, users, args.smoke, checks)
        epoch_rows += e
        fit_rows += f
    all_threads = numba.config.NUMBA_NUM_THREADS
    device = "simulator" if cuda_backend._simulated() else _device_name()
    epoch_table = markdown_table(
        ("model", "density", "CPU 2 threads s/epoch", f"CPU all {all_threads} threads s/epoch",
         "GPU s/epoch", f"GPU speed-up vs {all_threads} threads", "vs 2 threads"), epoch_rows)
    fit_table = markdown_table(
        ("model", "density", "backend", "epochs", "fit s", "prune/grow share", "Recall@20",
         "NDCG@20", "CPU seed 1 Recall@20 (seed noise)"), fit_rows)
    elapsed = time.perf_counter() - t_start
    timed = "; ".join(
        f"{MODELS[m].label}: {MODELS[m].timed_epochs}" + (", after one left out"
                                                          if MODELS[m].timed_epochs > 1 else "")
        for m in args.models)
    fits = ", ".join(f"{MODELS[m].label} {MODELS[m].fit_epochs}" for m in args.models)
    body = (
        f"{data_name}: {train.shape[0]:,} users x {train.shape[1]:,} items, {train.nnz:,} "
        f"training interactions; GPU: {device}. Epoch times: median of timed epochs of a fit "
        f"without prune/grow after a warm-up that compiled the kernels ({timed}). Whole fits: "
        f"{fits} epochs with the other "
        f"estimators' defaults, CPU on all {all_threads} threads; quality over "
        f"{len(users):,} sampled test users (full ranking, training items excluded); seed "
        f"noise: the CPU fits with seeds 0 and 1 (density 0.2). Whole run: {elapsed:.0f} s.\n\n"
        f"{epoch_table}\n\n{fit_table}\n\nAgainst the targets of issue 14:\n\n"
        + "".join(f"- {c}\n" for c in checks)
    )
    print(body)
    text = section_text("Every model on the GPU (numba-cuda) against the CPU", body)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if not args.no_write and not args.smoke:
        write_section("cuda_all", text)


def _device_name():
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


if __name__ == "__main__":
    main()
