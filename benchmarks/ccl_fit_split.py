"""Where a DSL-MF CCL fit's time goes: epochs against growth steps, on a validation split.

Wraps ``CCLEngine.epoch`` and the growth callbacks of ``grow_fns`` with
timers, fits density 0.2, 64 components, seed 0, 2 threads on
``quality.py``'s validation split (after a small warm-up fit that compiles
the kernels) and prints the fit, epoch and growth seconds and Recall@20 /
NDCG@20. Parameters and ``sparse_rec.backends.cpu_softmax`` constants as
in ``ccl_screen.py``; ``CCL_GROW_SAMPLES=None`` times the exact growth.

    python benchmarks/ccl_fit_split.py gowalla "n_negatives=3200" ""
    python benchmarks/ccl_fit_split.py gowalla "n_negatives=3200" "CCL_GROW_SAMPLES=None"
"""

import sys
import time

import numba
from ccl_screen import parse, set_constants
from quality import load_set, validation_split

from sparse_rec import DSLMatrixFactorization
from sparse_rec.backends import cpu_softmax
from sparse_rec.datasets import make_interactions
from sparse_rec.metrics import evaluate

SECONDS = {"epoch": 0.0, "grow": 0.0}


def _timed(f, what):
    def g(*args):
        t0 = time.perf_counter()
        out = f(*args)
        SECONDS[what] += time.perf_counter() - t0
        return out
    return g


def _install_timers():
    epoch, grow_fns = cpu_softmax.CCLEngine.epoch, cpu_softmax.CCLEngine.grow_fns
    cpu_softmax.CCLEngine.epoch = _timed(epoch, "epoch")
    cpu_softmax.CCLEngine.grow_fns = lambda self, key: [
        _timed(f, "grow") for f in grow_fns(self, key)]


def main(argv):
    name = argv[0]
    kw = parse(argv[1]) if len(argv) > 1 else {}
    constants = parse(argv[2]) if len(argv) > 2 else {}
    set_constants(constants)
    _install_timers()
    numba.set_num_threads(2)
    train, test = validation_split(load_set(name, False)[0])
    DSLMatrixFactorization(n_components=8, density=0.5, loss="ccl", max_iter=2,
                           update_interval=1, n_threads=2).fit(
        make_interactions(300, 200, 5000, random_state=0))
    SECONDS.update(epoch=0.0, grow=0.0)
    est = DSLMatrixFactorization(n_components=64, density=0.2, loss="ccl", random_state=0,
                                 n_threads=2, **kw)
    t0 = time.perf_counter()
    est.fit(train)
    fit_s = time.perf_counter() - t0
    r = evaluate(est, train, test, k=20, metrics=("recall", "ndcg"))
    print(name, kw, constants, f"fit {fit_s:.1f}s epoch {SECONDS['epoch']:.1f}s grow "
          f"{SECONDS['grow']:.1f}s recall {r['recall']:.4f} ndcg {r['ndcg']:.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
