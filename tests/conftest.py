from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name):
    """Path of a data set in ../shared/data, or skip the test."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} not present (data sets stay outside the package)")
    return path
