"""Counter-based random numbers (splitmix64), identical on every target.

A draw is a pure function of ``(seed, epoch, sample, stream)``, so negative
sampling does not depend on thread scheduling, and a NumPy reference (or a
CUDA twin) reproduces it exactly.
"""

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_ONE = np.uint64(1)
_STREAMS = np.uint64(16)


@njit(cache=True, inline="always")
def splitmix64(z):
    """One splitmix64 step: a bijective 64-bit mix of ``z``."""
    z = z + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def epoch_key(seed, epoch):
    """Key for one epoch (or one prune/grow step) of a given seed."""
    return splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(epoch)))


@njit(cache=True, inline="always")
def draw(key, sample, stream):
    """64 random bits for ``sample`` and ``stream`` (< 16) under ``key``."""
    return splitmix64(key + splitmix64(np.uint64(sample) * _STREAMS + np.uint64(stream)))


@njit(cache=True, inline="always")
def randint(bits, n):
    """Map 64 random bits to an integer in ``[0, n)`` (bias below 2**-40)."""
    return np.int64(bits >> _ONE) % n

