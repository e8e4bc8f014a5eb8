"""Compile CPU kernel helpers again as CUDA device functions (one source, two targets)."""

import types

from numba import cuda


def device_versions(helpers, device=None):
    """CUDA device functions of the ``(module, name)`` njit helpers, in call order.

    Each helper's Python source is rebuilt with globals that point at the
    device versions of the helpers before it (and of those in ``device``),
    so a helper calling another calls its device twin.
    """
    device = dict(device or {})
    for module, name in helpers:
        py = getattr(module, name).py_func
        scope = dict(py.__globals__)
        scope.update(device)
        retargeted = types.FunctionType(py.__code__, scope, name, py.__defaults__, py.__closure__)
        device[name] = cuda.jit(device=True)(retargeted)
    return device
