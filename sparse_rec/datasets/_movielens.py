"""MovieLens loaders: the shipped latest-small copy and readers for downloaded folders."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np

from ..exceptions import DataFormatError
from ._base import _build_dataset, _check_folder

__all__ = ["load_movielens_small", "load_movielens"]

_DATA_DIR = Path(__file__).resolve().parent / "data"
_SMALL_NPZ = _DATA_DIR / "ml-latest-small.npz"
_SMALL_README = _DATA_DIR / "ml-latest-small-README.txt"

_LICENCE = (
    "MovieLens data are (c) GroupLens Research, University of Minnesota: research use "
    "only, no commercial use without permission, redistribution under the same terms, and "
    "publications must cite F. M. Harper and J. A. Konstan (2015), The MovieLens Datasets: "
    "History and Context, ACM TiiS 5(4):19."
)

# (ratings file, movies file, format label, folders that use it); the first match wins.
_LAYOUTS = (
    ("ratings.csv", "movies.csv", "latest", "ml-latest, ml-latest-small, ml-20m, ml-25m, ml-32m"),
    ("ratings.dat", "movies.dat", "1m", "ml-1m, ml-10m"),
    ("u.data", "u.item", "100k", "ml-100k"),
)

# Structured rows keep ids and times exact while ratings may be half stars.
_ROW_DTYPE = np.dtype([("user", "i8"), ("item", "i8"), ("rating", "f8"), ("time", "i8")])
_COLUMNS = "user id, item id, rating, timestamp"


def load_movielens_small(binarize=False):
    """Load MovieLens latest-small, shipped with the package (no download).

    100,836 ratings (0.5 to 5 stars in half-star steps) of 9,724 movies by 610
    users, collected by GroupLens between 1996 and 2018. Only movies that were
    rated become items. The data are under the MovieLens licence (research use,
    no commercial use, cite Harper and Konstan 2015); its full text is in
    ``sparse_rec/datasets/data/ml-latest-small-README.txt``.

    Parameters
    ----------
    binarize : bool, default=False
        If True, every rating becomes 1.0 (implicit feedback); otherwise ``X``
        holds the star ratings.

    Returns
    -------
    InteractionDataset
        ``X`` of shape (610, 9724), with ``timestamps``, raw ``user_ids`` and
        ``item_ids`` (MovieLens movie ids), ``item_names`` (titles) and
        ``item_genres``.

    See Also
    --------
    load_movielens : read another MovieLens release from a folder.

    Examples
    --------
    >>> from sparse_rec.datasets import load_movielens_small
    >>> ds = load_movielens_small()
    >>> ds.X.shape, ds.X.nnz
    ((610, 9724), 100836)
    >>> float(ds.X.data.min()), float(ds.X.data.max())
    (0.5, 5.0)
    >>> str(ds.item_names[ds.item_index(1)])
    'Toy Story (1995)'
    >>> float(load_movielens_small(binarize=True).X.max())
    1.0
    """
    if not isinstance(binarize, (bool, np.bool_)):
        raise TypeError(f"binarize must be True or False; got {binarize!r}.")
    if not _SMALL_NPZ.exists():
        raise FileNotFoundError(
            f"the shipped data file must exist at {_SMALL_NPZ}; it is missing. Reinstall "
            "sparse_rec, or rebuild it with python -m sparse_rec.datasets._make_builtin "
            "<ml-latest-small folder>."
        )
    with np.load(_SMALL_NPZ, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    description = (
        "MovieLens latest-small (ml-latest-small, generated 2018-09-26): 100,836 ratings "
        "(0.5-5 stars) of 9,724 movies by 610 users, 1996-2018. " + _LICENCE
        + f" Full licence: {_SMALL_README}"
    )
    return _build_dataset(
        arrays["user_id"],
        arrays["movie_id"],
        arrays["rating_x2"].astype(np.float32) / 2,
        arrays["timestamp"],
        binarize=binarize,
        source=str(_SMALL_NPZ),
        name="ml-latest-small",
        description=description,
        movie_table=(arrays["movies_movie_id"], arrays["movies_title"], arrays["movies_genres"]),
    )


def load_movielens(path, binarize=False):
    """Read a MovieLens release from its unpacked folder, detecting the format.

    Recognised layouts, tried in this order:

    * ``ratings.csv`` (+ ``movies.csv``): ml-latest, ml-latest-small, ml-20m,
      ml-25m; comma-separated with a header row, titles quoted where needed.
    * ``ratings.dat`` (+ ``movies.dat``): ml-1m and ml-10m; fields separated by
      ``::``, movies in Latin-1 (1M) or UTF-8 (10M).
    * ``u.data`` (+ ``u.item``, ``u.genre``): ml-100k; ratings tab-separated,
      movies ``|``-separated in Latin-1 with 19 genre flags.

    The movies file is optional; without it ``item_names`` is None. Nothing is
    downloaded.

    Parameters
    ----------
    path : str or os.PathLike
        The folder holding the files above (for example the unzipped ``ml-100k``).
    binarize : bool, default=False
        If True, every rating becomes 1.0; otherwise ``X`` holds the ratings.

    Returns
    -------
    InteractionDataset
        Users and items are the raw ids that occur in the ratings file, sorted;
        ``name`` is the folder name.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataFormatError
        If the folder holds none of the layouts above, or a file is malformed
        (the message names the file and line).

    See Also
    --------
    load_movielens_small : the copy of ml-latest-small shipped with the package.

    Examples
    --------
    A tiny folder in the ml-100k layout:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from sparse_rec.datasets import load_movielens
    >>> tmp = tempfile.TemporaryDirectory()
    >>> folder = Path(tmp.name)
    >>> _ = (folder / "u.data").write_text("1\\t10\\t4\\t881250949\\n"
    ...                                    "2\\t10\\t5\\t881250950\\n"
    ...                                    "2\\t20\\t3\\t881250951\\n")
    >>> _ = (folder / "u.item").write_bytes(b"10|Heat (1995)|01-Jan-1995||url|0\\n"
    ...                                     b"20|Ran (1985)|01-Jan-1985||url|0\\n")
    >>> ds = load_movielens(folder)
    >>> ds.X.shape, ds.X.nnz
    ((2, 2), 3)
    >>> ds.item_names.tolist()
    ['Heat (1995)', 'Ran (1985)']
    >>> ds.X.toarray().tolist()
    [[4.0, 0.0], [5.0, 3.0]]
    >>> tmp.cleanup()

    A real download (not shipped with the package):

    >>> ds = load_movielens("ml-100k")  # doctest: +SKIP
    >>> ds.X.shape  # doctest: +SKIP
    (943, 1682)
    """
    if not isinstance(binarize, (bool, np.bool_)):
        raise TypeError(f"binarize must be True or False; got {binarize!r}.")
    expected = " or ".join(f"{r} ({folders})" for r, _, _, folders in _LAYOUTS)
    folder = _check_folder(path, "MovieLens", expected)
    found = [entry for entry in _LAYOUTS if (folder / entry[0]).is_file()]
    if not found:
        present = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "") or "nothing"
        raise DataFormatError(
            f"a MovieLens folder must hold {expected}; {str(folder)!r} holds {shown}. "
            "Pass the unpacked MovieLens folder itself."
        )
    ratings_name, movies_name, layout, _ = found[0]
    ratings_path = folder / ratings_name

    if layout == "latest":
        rows = _read_rating_rows(ratings_path, delimiter=",", header=True)
    elif layout == "1m":
        rows = _read_rating_rows(ratings_path, delimiter="::", header=False)
    else:
        rows = _read_rating_rows(ratings_path, delimiter=None, header=False)
    _check_ratings(rows, ratings_path, header=layout == "latest")

    movies_path = folder / movies_name
    table = None
    if movies_path.is_file():
        if layout == "latest":
            table = _read_movies_csv(movies_path)
        elif layout == "1m":
            table = _read_movies_dat(movies_path)
        else:
            table = _read_u_item(movies_path, folder / "u.genre")

    description = (
        f"MovieLens ratings read from {folder} ({ratings_name}): {rows.size:,} ratings. "
        + _LICENCE + " Full licence: the README in that folder."
    )
    return _build_dataset(
        rows["user"],
        rows["item"],
        rows["rating"],
        rows["time"],
        binarize=binarize,
        source=str(ratings_path),
        name=folder.name,
        description=description,
        movie_table=table,
    )


def _read_rating_rows(path, delimiter, header):
    """Parse a ratings file into a structured array with ``_ROW_DTYPE``.

    The fast path is NumPy's C parser; on failure the file is scanned again in
    Python only to name the offending line.
    """
    try:
        with open(path, encoding="latin-1") as f:
            if header:
                f.readline()
            # loadtxt takes single-character delimiters only, so '::' is rewritten.
            lines = (ln.replace("::", ",") for ln in f) if delimiter == "::" else f
            with warnings.catch_warnings():
                # An empty file only warns; it is reported as an error below.
                warnings.simplefilter("ignore", UserWarning)
                rows = np.loadtxt(
                    lines,
                    dtype=_ROW_DTYPE,
                    delimiter="," if delimiter == "::" else delimiter,
                    comments=None,
                    ndmin=1,
                )
    except ValueError as exc:
        _raise_bad_line(path, delimiter, header)
        raise DataFormatError(f"{path} could not be parsed: {exc}") from exc
    return rows


def _split(line, delimiter):
    return line.split(delimiter) if delimiter is not None else line.split()


def _raise_bad_line(path, delimiter, header):
    """Find the first line that is not four numbers and raise a DataFormatError for it."""
    sep = {None: "whitespace", ",": "comma", "::": "'::'"}.get(delimiter, repr(delimiter))
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, start=1):
            if (header and lineno == 1) or not line.strip():
                continue
            fields = _split(line.strip(), delimiter)
            ok = len(fields) == 4
            if ok:
                try:
                    int(fields[0]), int(fields[1]), float(fields[2]), int(fields[3])
                except ValueError:
                    ok = False
            if not ok:
                raise DataFormatError(
                    f"{path}, line {lineno}: each line must be 4 {sep}-separated numbers "
                    f"({_COLUMNS}); got {line.rstrip()!r}. Fix or delete that line."
                )


def _check_ratings(rows, path, header):
    """Ratings must be positive and finite, since a zero would read as 'not rated'."""
    if rows.size == 0:
        raise DataFormatError(
            f"{path} must hold at least one rating line ({_COLUMNS}); it holds none."
        )
    bad = ~np.isfinite(rows["rating"]) | (rows["rating"] <= 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataFormatError(
            f"{path}, line {_line_of_row(path, k, header)}: every rating must be a positive "
            f"finite number; got {float(rows['rating'][k])} for user {rows['user'][k]} and "
            f"item {rows['item'][k]}. Fix or delete that line (zero would mean 'not rated')."
        )


def _line_of_row(path, k, header):
    """1-based line number of the ``k``-th data row (blank lines and header skipped)."""
    with open(path, encoding="latin-1") as f:
        row = -1
        for lineno, line in enumerate(f, start=1):
            if (header and lineno == 1) or not line.strip():
                continue
            row += 1
            if row == k:
                return lineno
    return "?"


def _decode(path):
    """Read a text file as UTF-8, falling back to Latin-1 as in older MovieLens files."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _movie_error(path, lineno, line, expected):
    return DataFormatError(
        f"{path}, line {lineno}: each line must be {expected}; got {line!r}. "
        "Fix or delete that line, or remove the file to load ratings without titles."
    )


def _to_table(ids, titles, genres):
    return (np.array(ids, dtype=np.int64), np.array(titles, dtype=str),
            np.array(genres, dtype=str) if genres is not None else None)


def _parse_movie_id(path, lineno, line, text, expected):
    try:
        return int(text)
    except ValueError:
        raise _movie_error(path, lineno, line, expected) from None


def _read_movies_csv(path):
    """movies.csv of the latest/20M/25M releases: movieId,title,genres with a header."""
    expected = "movieId,title,genres (title quoted if it holds a comma)"
    ids, titles, genres = [], [], []
    reader = csv.reader(io.StringIO(_decode(path), newline=""))
    for row in reader:
        lineno = reader.line_num
        if lineno == 1 and row and row[0] == "movieId":
            continue
        if not row:
            continue
        if len(row) != 3:
            raise _movie_error(path, lineno, ",".join(row), expected)
        ids.append(_parse_movie_id(path, lineno, ",".join(row), row[0], expected))
        titles.append(row[1])
        genres.append(row[2])
    return _to_table(ids, titles, genres)


def _read_movies_dat(path):
    """movies.dat of 1M/10M: MovieID::Title::Genres."""
    expected = "MovieID::Title::Genres"
    ids, titles, genres = [], [], []
    for lineno, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        head, sep, rest = line.partition("::")
        title, sep2, genre = rest.rpartition("::")
        if not (sep and sep2):
            raise _movie_error(path, lineno, line, expected)
        ids.append(_parse_movie_id(path, lineno, line, head, expected))
        titles.append(title)
        genres.append(genre)
    return _to_table(ids, titles, genres)


def _read_u_item(path, genre_path):
    """u.item of 100K: id|title|release|video release|IMDb URL|19 genre flags, Latin-1."""
    expected = "movie id|title|release date|video release date|IMDb URL|genre flags"
    genre_names = None
    if genre_path.is_file():
        # u.genre lines are 'name|index'; the flags in u.item follow that index.
        pairs = [ln.rsplit("|", 1) for ln in _decode(genre_path).splitlines() if "|" in ln]
        try:
            order = sorted((int(i), name) for name, i in pairs)
        except ValueError:
            order = []
        genre_names = [name for _, name in order] or None
    ids, titles, genres = [], [], []
    for lineno, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 2:
            raise _movie_error(path, lineno, line, expected)
        ids.append(_parse_movie_id(path, lineno, line, fields[0], expected))
        titles.append(fields[1])
        flags = fields[5:]
        if genre_names is not None and len(flags) == len(genre_names):
            named = zip(genre_names, flags, strict=True)
            genres.append("|".join(g for g, flag in named if flag.strip() == "1"))
        else:
            genres.append("")
    return _to_table(ids, titles, genres if genre_names is not None else None)
