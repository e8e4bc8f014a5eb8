import os
from pathlib import Path

import pytest

# CUDA kernels run in Numba's simulator unless a real GPU is asked for; the
# variable must be set before numba is first imported.
if os.environ.get("SPARSE_REC_TEST_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

SHARED = Path(os.environ.get("SPARSE_REC_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def shared_dataset(name):
    """Path of a data set in ../shared/data (or $SPARSE_REC_DATA), or skip the test."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} not present (data sets stay outside the package)")
    return path
