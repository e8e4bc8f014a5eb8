"""Rebuild the shipped copy of MovieLens latest-small from the GroupLens download.

Run once from the repository root, pointing at the unpacked ``ml-latest-small``
folder (the one holding ``ratings.csv``, ``movies.csv`` and ``README.txt``)::

    python -m sparse_rec.datasets._make_builtin ../shared/data/ml-latest-small

It writes ``data/ml-latest-small.npz`` next to this file and copies the licence
as ``data/ml-latest-small-README.txt``. The npz holds plain arrays only (no
pickled objects), so the loader can use ``np.load(..., allow_pickle=False)``:

``user_id`` int32, ``movie_id`` int32
    Raw ids of each rating, sorted by user then movie.
``rating_x2`` uint8
    Rating in half stars (0.5 stars -> 1, 5 stars -> 10).
``timestamp`` int64
    Unix time of each rating.
``movies_movie_id`` int32, ``movies_title`` <U, ``movies_genres`` <U
    The whole movies.csv table, sorted by movie id.

The file is parsed with the csv module rather than the package's own reader so
the two can be checked against each other in the tests.
"""

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
NPZ_NAME = "ml-latest-small.npz"
README_NAME = "ml-latest-small-README.txt"


def _read_ratings(path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header != ["userId", "movieId", "rating", "timestamp"]:
            raise SystemExit(f"{path}: unexpected header {header}")
        rows = list(reader)
    users = np.array([r[0] for r in rows], dtype=np.int64)
    movies = np.array([r[1] for r in rows], dtype=np.int64)
    stars = np.array([r[2] for r in rows], dtype=np.float64)
    times = np.array([r[3] for r in rows], dtype=np.int64)
    half = np.rint(stars * 2)
    # Half stars must be exact, otherwise uint8 storage would lose information.
    if not np.array_equal(half / 2, stars) or half.min() < 1 or half.max() > 10:
        raise SystemExit(f"{path}: ratings are not half stars in [0.5, 5]")
    return users, movies, half.astype(np.uint8), times


def _read_movies(path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        if next(reader) != ["movieId", "title", "genres"]:
            raise SystemExit(f"{path}: unexpected header")
        rows = list(reader)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    titles = np.array([r[1] for r in rows], dtype=str)[order]
    genres = np.array([r[2] for r in rows], dtype=str)[order]
    return ids[order], titles, genres


def build(source, dest=DATA_DIR):
    """Write the npz and the licence copy from the folder ``source``."""
    source, dest = Path(source), Path(dest)
    users, movies, half, times = _read_ratings(source / "ratings.csv")
    order = np.lexsort((movies, users))
    movie_ids, titles, genres = _read_movies(source / "movies.csv")
    if max(users.max(), movies.max(), movie_ids.max()) >= 2**31:
        raise SystemExit("ids do not fit int32")
    dest.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        dest / NPZ_NAME,
        user_id=users[order].astype(np.int32),
        movie_id=movies[order].astype(np.int32),
        rating_x2=half[order],
        timestamp=times[order],
        movies_movie_id=movie_ids.astype(np.int32),
        movies_title=titles,
        movies_genres=genres,
    )
    shutil.copyfile(source / "README.txt", dest / README_NAME)
    return dest / NPZ_NAME


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the unpacked ml-latest-small folder")
    args = parser.parse_args(argv)
    out = build(args.source)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
