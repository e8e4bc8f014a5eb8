"""Numba thread count for the duration of a call."""

import contextlib

import numba


def resolve_n_threads(n_threads):
    """``None`` or -1 mean all Numba threads; otherwise 1..max."""
    limit = numba.config.NUMBA_NUM_THREADS
    if n_threads is None or n_threads == -1:
        return limit
    return max(1, min(int(n_threads), limit))


@contextlib.contextmanager
def numba_threads(n_threads):
    """Set Numba's thread count inside the block and restore it after."""
    previous = numba.get_num_threads()
    numba.set_num_threads(resolve_n_threads(n_threads))
    try:
        yield numba.get_num_threads()
    finally:
        numba.set_num_threads(previous)
