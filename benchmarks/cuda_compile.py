"""Compile every CUDA engine's kernels to PTX with the argument types it launches them with, no GPU.

Numba's CUDA simulator runs kernels as Python, so it never checks that a
kernel (and the CPU helpers it compiles as device functions) types and
lowers for a real GPU. This script does, without one: device arrays are
stood in for by host arrays and each kernel launch is intercepted, its
arguments typed and the kernel compiled with NVVM for a compute capability
(default 9.0, H100/H200) instead of run. Every engine (DSL-MF BPR, iALS,
softmax and CCL, DSLNCF, DSLMultVAE with the full and the sampled softmax,
DSLLightGCN with BPR and softmax) is driven through one epoch, its growth
scorers (histogram and collect) and its prune scores (histogram, bin, mask,
ties) on tiny data; the kernels do not run, so the numbers the engines see
are meaningless and nothing is checked but compilation.

It needs numba-cuda's NVVM and NVRTC libraries (for example the
``nvidia-cuda-nvrtc-cu12`` wheel's ``lib`` folder on ``LD_LIBRARY_PATH``),
not a driver, and refuses under the simulator. It times nothing and
writes nothing: run it before spending GPU time on
``benchmarks/cuda_all.py``.

Run from the repository root::

    python benchmarks/cuda_compile.py                  # every engine
    python benchmarks/cuda_compile.py --only ials,vae  # some
"""

import argparse
import os
import sys
import time
import types
import warnings

import numpy as np

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
    sys.exit("cuda_compile.py checks compilation for a real GPU: unset NUMBA_ENABLE_CUDASIM.")

import numba  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda import dispatcher as _dispatcher  # noqa: E402


class HostDevice(np.ndarray):
    """A host array standing in for a device array (the copies are host copies)."""

    def copy_to_host(self, out=None):
        if out is None:
            return np.array(self)
        np.copyto(out, self)
        return out

    def copy_to_device(self, src):
        self[...] = src


def _host(a):
    return np.ascontiguousarray(a).view(HostDevice)


class Recorder:
    """Intercepts kernel launches: compiles each (kernel, argument types) once."""

    def __init__(self, cc):
        self.cc, self.seen, self.failures = cc, {}, 0

    def launch(self, kernel, args):
        sig = tuple(numba.typeof(np.asarray(a) if isinstance(a, HostDevice) else a)
                    for a in args)
        key = (kernel.py_func.__module__, kernel.py_func.__name__, sig)
        if key in self.seen:
            return
        t0 = time.perf_counter()
        name = f"{kernel.py_func.__module__.rsplit('.', 1)[-1]}.{kernel.py_func.__name__}"
        try:
            cuda.compile_ptx(kernel.py_func, sig, device=False, cc=self.cc)
            self.seen[key] = True
            print(f"ok    {name} ({time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception as e:  # report every kernel, then fail
            self.seen[key] = False
            self.failures += 1
            print(f"FAIL  {name} {sig}: {type(e).__name__}: {e}", flush=True)


def install(recorder, cc):
    """Replace the device API the engines use by host stand-ins and the recorder."""
    from sparse_rec.backends import cuda as cuda_backend

    cuda.to_device = _host
    cuda.device_array = lambda shape, dtype=np.float64: np.zeros(shape, dtype).view(HostDevice)
    cuda.get_current_device = lambda: types.SimpleNamespace(MULTIPROCESSOR_COUNT=2,
                                                            compute_capability=cc)
    # Device functions ask the current device for its compute capability.
    _dispatcher.get_current_device = cuda.get_current_device
    _dispatcher.CUDADispatcher.__getitem__ = (
        lambda self, grid: (lambda *args: recorder.launch(self, args)))
    cuda_backend.is_available = lambda: True


def drive(engine):
    """One epoch, every growth scorer and every prune score of ``engine``."""
    engine.epoch(np.uint64(1))
    engine.download()
    for fn in engine.grow_fns(np.uint64(2)):
        if hasattr(fn, "histogram"):
            n = fn._indptr.shape[0] - 1
            fn.histogram(0, n)
            fn.collect(0, n, 0)  # bin 0: every unmasked score, so the kernel runs
    for p in engine.prune_scores() or []:
        if hasattr(p, "histogram"):
            p.histogram()
            p.in_bin(0, 1)
            p.mask(np.float32(0.5))
            p.ties(np.float32(0.5), 1)
    engine.rebuild()


def engines():
    """Model name -> a function building its CUDA engine on tiny data."""
    from sparse_rec import DSLNCF, DSLLightGCN, DSLMatrixFactorization, DSLMultVAE
    from sparse_rec._base import TrainData
    from sparse_rec.datasets import make_interactions

    X = make_interactions(12, 9, 40, random_state=0)

    def build(est):
        def make():
            data = TrainData.from_matrix(X)
            params = est._init_params(*X.shape, 0)
            est.backend = "cuda"
            est.seen_ = X  # what iALS's data-derived unobserved weight reads
            return est._make_engine(data, params)
        return make

    return {
        "mf-bpr": build(DSLMatrixFactorization(loss="bpr", n_components=4, learning_rate=0.05,
                                               alpha=0.0, optimizer="adagrad")),
        "ials": build(DSLMatrixFactorization(loss="ials", n_components=4)),
        "mf-softmax": build(DSLMatrixFactorization(loss="softmax", n_components=4,
                                                   n_negatives=8)),
        "mf-ccl": build(DSLMatrixFactorization(loss="ccl", n_components=4, n_negatives=8)),
        "ncf": build(DSLNCF(n_components=4, hidden_layer_sizes=(6, 3), batch_size=16)),
        "vae": build(DSLMultVAE(hidden_layer_sizes=(6,), n_components=3, batch_size=8)),
        "vae-sampled": build(DSLMultVAE(hidden_layer_sizes=(6,), n_components=3, batch_size=8,
                                        n_sampled=4)),
        "lightgcn": build(DSLLightGCN(n_components=4, batch_size=16)),
        "lightgcn-softmax": build(DSLLightGCN(n_components=4, batch_size=16, loss="softmax",
                                              n_negatives=8)),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None,
                   help="comma-separated: " + ",".join(engines()))
    p.add_argument("--cc", default="9.0", help="compute capability (default 9.0)")
    args = p.parse_args(argv)
    cc = tuple(int(x) for x in args.cc.split("."))
    recorder = Recorder(cc)
    install(recorder, cc)
    makers = engines()
    names = args.only.split(",") if args.only else list(makers)
    for name in names:
        print(f"--- {name}", flush=True)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # the host stand-ins hold meaningless numbers
            drive(makers[name]())
    print(f"{len(recorder.seen)} kernel specialisations, {recorder.failures} failure(s)")
    return 1 if recorder.failures else 0


if __name__ == "__main__":
    sys.exit(main())
