"""Epoch time and peak memory of DSL-MF from 0.1M to 10M synthetic interactions.

Each configuration runs in a fresh subprocess (``--one SIZE DENSITY``) that
prints one JSON line, so every peak belongs to that configuration alone. In the
child the input is built and the kernels compiled first; then the process's
peak-RSS mark is reset (``/proc/self/clear_refs``), and only ``fit`` runs while
it is measured:

- tracemalloc peak: allocations made through Python (numpy arrays created in
  Python code). Arrays allocated inside Numba-compiled functions bypass it.
- RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after ``fit`` (the peak,
  Numba allocations included), and its rise above the RSS just before ``fit``.

Also the memory check: 1M users, 200k items, 10M interactions, n_components=128,
peak memory during fit at density 0.1 against 1.0.

Run from the repository root::

    python benchmarks/scaling.py                    # writes docs/benchmarks.md
    python benchmarks/scaling.py --max-size 1M --no-write
    python benchmarks/scaling.py --quick --no-write
"""

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc

from _report import (
    fmt_bytes,
    markdown_table,
    median,
    section_text,
    write_section,
)

SEED = 0
DENSITIES = (1.0, 0.2, 0.05)
MEMORY_DENSITIES = (0.1, 1.0)
MEMORY_TARGET = 0.3


def parse_size(text):
    """'0.1M' -> 100000, '10M' -> 10000000, '5k' -> 5000."""
    t = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(round(float(t.rstrip("km")) * scale))


def shape_of(n_interactions):
    # 10 interactions per user and 50 per item: 10M -> 1M users x 200k items.
    return max(1, n_interactions // 10), max(1, n_interactions // 50)


def label(n):
    return f"{n / 1e6:g}M"


# --------------------------------------------------------------------------- child
def run_one(size, density, n_components, epochs, threads):
    """Fit one configuration and return its measurements (runs in the subprocess)."""
    from sparse_rec import DSLMatrixFactorization
    from sparse_rec.datasets import make_interactions

    n = parse_size(size)
    n_users, n_items = shape_of(n)
    X = make_interactions(n_users, n_items, n, random_state=SEED)
    from sparse_rec._mf.estimator import LOSS_DEFAULTS

    # The BPR model, as measured in docs/benchmarks.md (the default loss is iALS).
    params = dict(loss="bpr", n_components=n_components, density=density, random_state=SEED,
                  n_threads=threads)
    if epochs is None:
        # One prune/grow step happens only when max_iter > update_interval, and it
        # belongs in the memory peak.
        epochs = LOSS_DEFAULTS["bpr"]["update_interval"] + 1
    # Compile (or load) the kernels on a tiny problem so compilation stays out of the peak.
    tiny = make_interactions(300, 200, 5000, random_state=SEED)
    DSLMatrixFactorization(**params, max_iter=epochs).fit(tiny)
    del tiny
    gc.collect()

    rss_before = _status_kb("VmRSS") * 1024
    reset = _reset_peak_rss()
    est = DSLMatrixFactorization(**params, max_iter=epochs)
    tracemalloc.start()
    t0 = time.perf_counter()
    est.fit(X)
    fit_s = time.perf_counter() - t0
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Linux reports ru_maxrss in KiB.
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    train_s = [h["seconds"] - h["prune_grow_seconds"] for h in est.history_]
    return {
        "size": n, "n_users": n_users, "n_items": n_items, "nnz": int(X.nnz),
        "density": density, "n_components": n_components, "epochs": epochs,
        "threads": threads, "fit_s": fit_s, "epoch_s": median(train_s),
        "prune_grow_s": sum(h["prune_grow_seconds"] for h in est.history_),
        "tracemalloc_peak": tm_peak, "rss_before": rss_before, "rss_peak": rss_peak,
        "rss_delta": rss_peak - rss_before, "peak_reset": reset,
        "n_active": int(est.n_active_), "nbytes": int(est.nbytes_),
        "dense_nbytes": int(est.dense_nbytes_),
    }


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss():
    """Reset the peak-RSS mark (Linux >= 4.0) so ru_maxrss covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- parent
def spawn(size, density, n_components, epochs, threads):
    cmd = [sys.executable, __file__, "--one", size, repr(density),
           "--components", str(n_components), "--threads", str(threads)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"size": parse_size(size), "density": density, "n_components": n_components,
                "error": f"exit {proc.returncode}: {' / '.join(tail)}"}
    return json.loads(lines[-1])


def scaling_table(results):
    dense = {r["size"]: r for r in results if r["density"] == 1.0 and "error" not in r}
    rows = []
    for r in results:
        n = r["size"]
        if "error" in r:
            rows.append([label(n), "", f"{r['density']:g}", r["error"]] + [""] * 9)
            continue
        ref = dense.get(n)
        rows.append([
            label(n), f"{r['n_users']:,} x {r['n_items']:,}", f"{r['density']:g}",
            f"{r['n_active']:,}", fmt_bytes(r["nbytes"]), f"{r['epoch_s']:.3f}",
            f"{r['nnz'] / r['epoch_s'] / 1e6:.2f}M",
            "-" if ref is None else f"{r['epoch_s'] / ref['epoch_s']:.2f}",
            f"{r['prune_grow_s']:.2f}", fmt_bytes(r["tracemalloc_peak"]),
            fmt_bytes(r["rss_peak"]), fmt_bytes(r["rss_delta"]),
            "-" if ref is None else f"{r['rss_delta'] / max(ref['rss_delta'], 1):.2f}",
        ])
    return markdown_table(
        ["Interactions", "Users x items", "Density", "Active weights", "Model bytes",
         "Median epoch s", "Interactions/s", "Epoch time / dense", "Prune/grow s (total)",
         "tracemalloc peak", "RSS peak", "RSS rise in fit", "RSS rise / dense"],
        rows,
    )


def memory_table(results):
    ok = {r["density"]: r for r in results if "error" not in r}
    rows = []
    for r in results:
        if "error" in r:
            rows.append([f"{r['density']:g}", r["error"]] + [""] * 5)
            continue
        rows.append([
            f"{r['density']:g}", f"{r['n_active']:,}", fmt_bytes(r["nbytes"]),
            fmt_bytes(r["tracemalloc_peak"]), fmt_bytes(r["rss_peak"]),
            fmt_bytes(r["rss_delta"]), f"{r['fit_s']:.1f}",
        ])
    table = markdown_table(
        ["Density", "Active weights", "Model bytes", "tracemalloc peak", "RSS peak",
         "RSS rise in fit", "Fit s"],
        rows,
    )
    lo, hi = ok.get(MEMORY_DENSITIES[0]), ok.get(MEMORY_DENSITIES[1])
    if lo is None or hi is None:
        return table, "Memory check: n/a (a configuration failed)."
    ratio = lo["rss_delta"] / max(hi["rss_delta"], 1)
    check = (
        f"Memory check: peak RSS rise during fit at density {MEMORY_DENSITIES[0]:g} / "
        f"{MEMORY_DENSITIES[1]:g} = {fmt_bytes(lo['rss_delta'])} / {fmt_bytes(hi['rss_delta'])}"
        f" = {ratio:.3f} (target <= {MEMORY_TARGET}: {ratio <= MEMORY_TARGET}); whole-process "
        f"peak ratio {lo['rss_peak'] / hi['rss_peak']:.3f}; tracemalloc peak ratio "
        f"{lo['tracemalloc_peak'] / max(hi['tracemalloc_peak'], 1):.3f}."
    )
    return table, check


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="0.1M,1M,10M",
                   help="interaction counts (users = n/10, items = n/50); default 0.1M,1M,10M")
    p.add_argument("--max-size", default=None, help="skip sizes above this, e.g. 1M")
    p.add_argument("--densities", default=",".join(f"{d:g}" for d in DENSITIES),
                   help="densities of the scaling table (default 1,0.2,0.05)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per fit (default update_interval + 1, so one prune/grow step "
                        "is measured)")
    p.add_argument("--threads", type=int, default=2, help="Numba threads (default 2)")
    p.add_argument("--memory-size", default="10M",
                   help="size of the memory check (default 10M: 1M users x 200k items)")
    p.add_argument("--skip-memory", action="store_true", help="leave out the memory check")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 0.1M only, memory check at 0.1M; never writes docs")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    # Internal: one configuration in this process, printed as a JSON line.
    p.add_argument("--one", nargs=2, metavar=("SIZE", "DENSITY"), help=argparse.SUPPRESS)
    p.add_argument("--components", type=int, default=64, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        size, density = args.one
        out = run_one(size, float(density), args.components, args.epochs, args.threads)
        print(json.dumps(out))
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    memory_size = args.memory_size
    if args.quick:
        sizes, memory_size = ["0.1M"], "0.1M"
    if args.max_size:
        cap = parse_size(args.max_size)
        sizes = [s for s in sizes if parse_size(s) <= cap]
    densities = [float(d) for d in args.densities.split(",")]

    results = []
    for size in sizes:
        for density in densities:
            print(f"  {size} interactions, density {density:g} ...", end=" ", flush=True)
            r = spawn(size, density, 64, args.epochs, args.threads)
            results.append(r)
            print(r.get("error") or f"epoch {r['epoch_s']:.3f} s, RSS rise "
                  f"{fmt_bytes(r['rss_delta'])}", flush=True)
    mem = []
    if not args.skip_memory:
        for density in MEMORY_DENSITIES:
            print(f"  memory check {memory_size}, n_components 128, density {density:g} ...",
                  end=" ", flush=True)
            r = spawn(memory_size, density, 128, args.epochs, args.threads)
            mem.append(r)
            print(r.get("error") or f"RSS rise {fmt_bytes(r['rss_delta'])}", flush=True)

    done = [r for r in results + mem if "error" not in r]
    epochs = done[0]["epochs"] if done else args.epochs
    reset = all(r["peak_reset"] for r in done)
    body = (
        "Synthetic power-law interactions (`make_interactions`, alpha=1, seed 0; users = "
        f"interactions / 10, items = interactions / 50), n_components=64, {epochs} epochs per "
        f"fit (one prune/grow step), {args.threads} Numba threads, one fresh process per row. "
        "Median epoch s: median over epochs of the training time without prune/grow. "
        "tracemalloc peak: Python-side allocations during fit only; arrays that Numba "
        "allocates inside compiled functions are invisible to it. RSS peak: "
        "`getrusage(RUSAGE_SELF).ru_maxrss` after fit (whole process, including the "
        "interpreter, Numba and the input matrix); RSS rise: that peak minus the RSS just "
        "before fit (it can undercount small allocations that reuse memory freed earlier; "
        "the gradient buffer of prune/grow is a fixed 32 MiB, which dominates small sizes). "
        + ("The peak-RSS mark was reset after building the input, so the peak is that of fit."
           if reset else "WARNING: the peak-RSS mark could not be reset, so the RSS peak may "
           "come from building the input.")
    )
    body += "\n\n" + (scaling_table(results) if results else "(no scaling rows)")
    if mem:
        table, check = memory_table(mem)
        m = next((r for r in mem if "error" not in r), mem[0])
        shape = (f"{m['n_users']:,} users x {m['n_items']:,} items, {m['nnz']:,} interactions"
                 if "n_users" in m else memory_size)
        body += (f"\n\nMemory check ({shape}, n_components=128, {epochs} epochs):\n\n"
                 + table + "\n\n" + check)
    print()
    print(body)
    if args.quick:
        print("\n(--quick: docs/benchmarks.md left untouched)")
    elif not args.no_write:
        path = write_section("scaling", section_text("Scaling: epoch time and memory", body))
        print(f"\nwrote section 'scaling' of {path}")


if __name__ == "__main__":
    main()
