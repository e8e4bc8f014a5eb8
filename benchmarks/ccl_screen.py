"""Screen DSL-MF CCL settings on a validation split: one fit, ranked at several item-norm exponents.

Tuning aid for ``loss="ccl"`` (never reads test items): fits density 0.2,
64 components, seed 0, 2 threads on ``quality.py``'s validation split (20%
of each user's training items, seed 1) with the given estimator parameters
and ``sparse_rec.backends.cpu_softmax`` constants, then rescales the item
rows to norms ``(count + 1) ** e`` over their mean (the loss ignores norms)
for e in 0, 0.15, 0.3, 0.5 and prints Recall@20 of each. The fit's own
exponent is ``CCL_ITEM_NORM_EXPONENT`` (0.15), so ``e0.15`` is the fitted
model as it is. The fit seconds include any Numba compilation.

    python benchmarks/ccl_screen.py gowalla "margin=0.7" "CCL_BATCH=1024"
    python benchmarks/ccl_screen.py ml-100k "max_iter=80, update_interval=8"
    python benchmarks/ccl_screen.py builtin "" "CCL_GROW_SAMPLES=None"
"""

import ast
import sys
import time

import numba
import numpy as np
from quality import load_set, validation_split

from sparse_rec import DSLMatrixFactorization
from sparse_rec.backends import cpu_softmax
from sparse_rec.metrics import evaluate

EXPONENTS = (0.0, 0.15, 0.3, 0.5)


def parse(text):
    """``"a=1, b=None"`` -> ``{"a": 1, "b": None}`` (values as Python literals)."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        out[name.strip()] = ast.literal_eval(value.strip())
    return out


def set_constants(constants):
    """Set module constants of ``sparse_rec.backends.cpu_softmax`` (``CCL_BATCH=4096`` ...)."""
    for k, v in constants.items():
        if not hasattr(cpu_softmax, k):
            raise SystemExit(f"unknown constant {k!r} of sparse_rec.backends.cpu_softmax")
        setattr(cpu_softmax, k, v)
    if "CCL_GROW_SAMPLES" in constants:  # a default argument, read at import
        cpu_softmax.CCLEngine.__init__.__kwdefaults__["grow_samples"] = constants[
            "CCL_GROW_SAMPLES"]


def main(argv):
    name = argv[0]
    kw = parse(argv[1]) if len(argv) > 1 else {}
    constants = parse(argv[2]) if len(argv) > 2 else {}
    set_constants(constants)
    numba.set_num_threads(2)
    train, test = validation_split(load_set(name, False)[0])
    params = {"n_components": 64, "density": 0.2, "loss": "ccl", "random_state": 0,
              "n_threads": 2, **kw}
    est = DSLMatrixFactorization(**params)
    t0 = time.perf_counter()
    est.fit(train)
    fit_s = time.perf_counter() - t0
    tab = est.item_table_
    counts = np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float64)
    rows = np.repeat(np.arange(tab.n_rows), np.diff(tab.indptr))
    w0 = tab.values_buf[: tab.nnz, 0].copy()
    sq = np.bincount(rows, weights=w0.astype(np.float64) ** 2, minlength=tab.n_rows)
    norms = np.where(sq > 1e-24, np.sqrt(sq), 1.0)
    out = []
    for e in EXPONENTS:
        s = (counts + 1.0) ** e
        tab.values_buf[: tab.nnz, 0] = (w0 / norms[rows] * (s / s.mean())[rows]).astype(
            np.float32)
        est._clear_caches()
        r = evaluate(est, train, test, k=20, metrics=("recall",))["recall"]
        out.append(f"e{e:g}={r:.4f}")
    print(name, kw, constants, f"fit {fit_s:.0f}s", " ".join(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
