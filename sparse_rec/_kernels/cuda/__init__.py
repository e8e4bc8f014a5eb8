"""CUDA kernels (numba-cuda); importing a module here needs numba-cuda."""
