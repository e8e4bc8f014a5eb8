"""Compile the CUDA kernels of the iALS, Mult-VAE, LightGCN and prune engines to PTX, no GPU.

Numba's CUDA simulator runs kernels as Python, so it never checks that a
kernel (and the CPU helpers it compiles as device functions) types and
lowers for a real GPU. This script does, without one: each kernel is
compiled with NVVM for a compute capability (default 9.0, H100/H200) with
the argument types its engine passes (C-contiguous arrays of the dtypes
below). It needs numba-cuda's NVVM and NVRTC libraries (for example the
``nvidia-cuda-nvrtc-cu12`` wheel on ``LD_LIBRARY_PATH``), not a driver, and
refuses under the simulator. It times nothing and writes nothing: run it
before spending GPU time on ``benchmarks/cuda_all.py``.

Run from the repository root::

    python benchmarks/cuda_compile.py             # every kernel
    python benchmarks/cuda_compile.py ials vae    # names starting so
"""

import argparse
import os
import sys
import time
import types

import numba
import numpy as np

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
    sys.exit("cuda_compile.py checks compilation for a real GPU: unset NUMBA_ENABLE_CUDASIM.")

from numba import cuda  # noqa: E402


def _array(ndim, dtype=np.float32):
    return numba.typeof(np.zeros((2,) * ndim, dtype))


def signatures():
    """Kernel name -> (kernel, argument types)."""
    from sparse_rec._kernels.cuda import ials as KI
    from sparse_rec._kernels.cuda import lightgcn as KL
    from sparse_rec._kernels.cuda import prune_grow as KP
    from sparse_rec._kernels.cuda import vae as KV

    f4, f8, i4, i8 = np.float32, np.float64, np.int32, np.int64
    v1, v2, v3 = (lambda dt=f4, n=n: _array(n, dt) for n in (1, 2, 3))
    I8, F8, F4, U8, I4 = numba.int64, numba.float64, numba.float32, numba.uint64, numba.int32
    tab = (v1(i8), v1(i4), v2())  # indptr, indices, value slots (nnz, slots)
    csr = (v1(i8), v1(i4), v1())  # interactions or a graph block
    return {
        "ials.densify": (KI.densify_kernel, (*tab, v2())),
        "ials.gram": (KI.gram_kernel, (v2(), v3(f8))),
        "ials.gram_reduce": (KI.gram_reduce_kernel, (v3(f8), v2(f8))),
        "ials.solve_rows": (KI.solve_rows_kernel, (
            *tab, *csr, *tab, v2(f8), F8, F8, v1(f8), v1(f8), v2(i8), v2(i8), v3(f8), v2(f8),
            v2(f8), v3(f8), v3(f8))),
        "ials.curvature": (KI.curvature_kernel, (
            I8, I8, v2(), v1(), *tab, *csr, *tab, v2(f8), F8, F8, v2(f8), v2(f8), v2(f8))),
        "vae.encode": (KV.encode_kernel, (*csr, *tab, v1(), v2())),
        "vae.decode": (KV.decode_kernel, (*tab, v2(), v1(), v2())),
        "vae.softmax_stats": (KV.softmax_stats_kernel, (v2(), v1(), v1(f8))),
        "vae.gather": (KV.gather_kernel, (v2(), v1(i8), v1(i8), v1())),
        "vae.softmax_grad": (KV.softmax_grad_kernel, (v2(), v1(), v1())),
        "vae.scatter_sub": (KV.scatter_sub_kernel, (v2(), v1(i8), v1(i8), v1(), F4)),
        "vae.row_sum": (KV.row_sum_kernel, (v2(), v1())),
        "vae.decoder_wgrad": (KV.decoder_wgrad_kernel, (v1(i8), v1(i4), v2(), v2(), v1())),
        "vae.decoder_input": (KV.decoder_input_kernel, (v1(i8), v1(i8), v1(i8), v2(), v2(),
                                                        v2())),
        "vae.encoder_grad": (KV.encoder_grad_kernel, (*csr, v1(i8), v1(i4), v2(), v1())),
        "vae.adam_table": (KV.adam_table_kernel, (v2(), v1(), F8, F8, F4)),
        "vae.encoder_rows": (KV.encoder_rows_kernel, (I8, *csr, v2(), v2())),
        "vae.decoder_rows": (KV.decoder_rows_kernel, (I8, *tab, v2(), v1(), v1(), v1(), *csr,
                                                      v2())),
        "lightgcn.densify": (KL.densify_kernel, (*tab, v2())),
        "lightgcn.add_table": (KL.add_table_kernel, (*tab, F4, v2())),
        "lightgcn.spmm_dense": (KL.spmm_dense_kernel, (*csr, v2(), v2(), numba.boolean, v2())),
        "lightgcn.axpy": (KL.axpy_kernel, (F4, v2(), v2())),
        "lightgcn.scale": (KL.scale_kernel, (F4, v2())),
        "lightgcn.margins": (KL.margins_kernel, (
            U8, I8, I8, I8, v1(i4), v1(), v1(i4), v1(i8), v1(i4), v2(), v2(), v1(i8), v1(i8),
            v1(i8), v1(f8), v1(f8))),
        "lightgcn.scatter_grad": (KL.scatter_grad_kernel, (
            I8, v1(i8), v1(i8), v1(i8), v1(f8), v2(), v2(), v2(), v2(), v1(), v1())),
        "lightgcn.zero": (KL.zero_kernel, (v1(),)),
        "lightgcn.zero2": (KL.zero2_kernel, (v2(),)),
        "lightgcn.gather_pattern": (KL.gather_pattern_kernel, (v1(i8), v1(i4), v2(), F4, v1())),
        "lightgcn.step_table": (KL.step_table_kernel, (v1(i8), v2(), v1(), v1(), F4, F4, F4, F4,
                                                       F4, I8)),
        "lightgcn.rows_dense": (KL.rows_dense_kernel, (*csr, v2(), v2(), F4, I8, v2())),
        "prune.magnitude_bins": (KP.magnitude_bins_kernel, (v2(i4), v1(i4))),
        "prune.in_bin": (KP.magnitudes_in_bin_kernel, (v2(i4), I4, v1(i4), v1(i8))),
        "prune.mask": (KP.prune_mask_kernel, (v2(i4), I4, v1(np.bool_), v1(i8))),
        "prune.ties": (KP.ties_kernel, (v2(i4), I4, v1(i8), v1(i8))),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("only", nargs="*", help="kernel name prefixes (default: all)")
    p.add_argument("--cc", default="9.0", help="compute capability (default 9.0)")
    args = p.parse_args(argv)
    cc = tuple(int(x) for x in args.cc.split("."))
    # Device functions ask the current device for its compute capability;
    # there is none: answer with the target's.
    import numba.cuda.dispatcher as dispatcher

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    failures = 0
    for name, (kernel, sig) in signatures().items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        t0 = time.perf_counter()
        try:
            cuda.compile_ptx(kernel.py_func, sig, device=False, cc=cc)
            print(f"ok    {name} ({time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception as e:  # report every kernel, then fail
            failures += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}", flush=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
