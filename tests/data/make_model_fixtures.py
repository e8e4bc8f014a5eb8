"""Write the model-file fixtures that ``tests/test_io.py`` loads.

Model files written by one version of sparse_rec must keep loading in later
versions. The fixtures freeze one file of each format version (full and
compact storage) together with the recommendations and scores the model
gave when it was saved; the tests load the files with the current code and
compare. Never regenerate an existing ``model_v<N>*.npz``: when the format
version changes, add files for the new version next to the old ones.

Run from the repository root (writes into ``tests/data``)::

    python tests/data/make_model_fixtures.py

The model is a 30-user x 20-item DSL-MF (8 components, density 0.5, five
epochs, one thread) on synthetic interactions; raw user ids are strings
``"u0" .. "u29"``, raw item ids the integers ``1000 .. 1019``.
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from sparse_rec import DSLMatrixFactorization  # noqa: E402
from sparse_rec._io import FORMAT_VERSION, load, save_model  # noqa: E402
from sparse_rec.datasets import make_interactions  # noqa: E402

N_USERS, N_ITEMS = 30, 20


def make_fixtures(folder=HERE, version=FORMAT_VERSION):
    """Fit the fixture model and write ``model_v{version}{,_compact}.npz`` and expected values.

    Expected values (``model_v{version}_expected.npz``, a plain array archive)
    are computed from each file as loaded right after saving: for every user,
    ``recommend(n=N_ITEMS, filter_seen=True)`` ids and scores, and the scores
    of candidates ``cand`` (every item, in a per-user shuffled order).
    """
    folder = Path(folder)
    X = make_interactions(N_USERS, N_ITEMS, 200, random_state=0)
    mf = DSLMatrixFactorization(n_components=8, density=0.5, max_iter=5, update_interval=2,
                                random_state=0, n_threads=1).fit(X)
    user_ids = np.array([f"u{u}" for u in range(N_USERS)])
    item_ids = np.arange(1000, 1000 + N_ITEMS)
    users = np.arange(N_USERS)
    rng = np.random.default_rng(0)
    cand = np.stack([rng.permutation(N_ITEMS) for _ in users])
    expected = {"users": users, "cand": cand}
    for suffix, compact in (("", False), ("_compact", True)):
        path = folder / f"model_v{version}{suffix}.npz"
        save_model(mf, path, user_ids=user_ids, item_ids=item_ids, compact=compact)
        model = load(path)
        ids, scores = model.recommend(users, n=N_ITEMS)
        key = "compact" if compact else "full"
        expected[f"{key}_ids"] = ids
        expected[f"{key}_scores"] = scores
        expected[f"{key}_cand_scores"] = model.score_items(users, cand)
    np.savez_compressed(folder / f"model_v{version}_expected.npz", **expected)
    return folder


if __name__ == "__main__":
    out = make_fixtures()
    print(f"wrote model_v{FORMAT_VERSION}*.npz into {out}")
