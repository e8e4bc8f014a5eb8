"""Tests for sparse_rec.datasets: shipped data, folder readers and synthetic data."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_rec.datasets import (
    InteractionDataset,
    TrainTestDataset,
    load_lightgcn,
    load_movielens,
    load_movielens_small,
    make_interactions,
)
from sparse_rec.exceptions import DataFormatError

# The real data sets live next to the repository and are never shipped.
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_ml100k = pytest.mark.skipif(
    not (SHARED / "ml-100k").exists(),
    reason="../shared/data/ml-100k not present (data sets stay outside the package)",
)
needs_ml_small = pytest.mark.skipif(
    not (SHARED / "ml-latest-small").exists(),
    reason="../shared/data/ml-latest-small not present (data sets stay outside the package)",
)
needs_gowalla = pytest.mark.skipif(
    not (SHARED / "gowalla").exists(),
    reason="../shared/data/gowalla not present (data sets stay outside the package)",
)


def _same_csr(A, B):
    return A.shape == B.shape and A.dtype == B.dtype and (A != B).nnz == 0


# --------------------------------------------------------------------------- built-in set


@pytest.fixture(scope="module")
def small():
    return load_movielens_small()


def test_small_shape_and_values(small):
    X = small.X
    assert sp.issparse(X) and X.format == "csr"
    assert X.shape == (610, 9724)
    assert X.nnz == 100_836
    assert X.dtype == np.float32
    assert X.has_canonical_format
    assert X.data.min() == 0.5 and X.data.max() == 5.0
    assert np.all(X.data * 2 == np.rint(X.data * 2))  # half stars
    assert small.n_users == 610 and small.n_items == 9724
    assert small.name == "ml-latest-small"
    assert "GroupLens" in small.description and "Harper" in small.description


def test_small_timestamps_share_pattern(small):
    T = small.timestamps
    assert T.dtype == np.int64 and T.shape == small.X.shape
    assert np.array_equal(T.indptr, small.X.indptr)
    assert np.array_equal(T.indices, small.X.indices)
    # March 1996 to September 2018.
    assert T.data.min() >= 820_000_000 and T.data.max() <= 1_538_000_000
    # Separate arrays: editing X in place must not touch the times.
    assert not np.shares_memory(T.indices, small.X.indices)


def test_small_ids_and_names(small):
    assert small.user_ids.dtype == np.int64 and small.item_ids.dtype == np.int64
    assert np.array_equal(small.user_ids, np.arange(1, 611))
    assert np.all(np.diff(small.item_ids) > 0)
    assert small.item_names.shape == (9724,) and small.item_names.dtype.kind == "U"
    assert small.item_genres.shape == (9724,)
    j = small.item_index(1)
    assert small.item_names[j] == "Toy Story (1995)"
    assert "Animation" in small.item_genres[j]
    assert np.all(small.item_names != "")


def test_small_raw_id_round_trip(small):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, small.n_users, 50)
    cols = rng.integers(0, small.n_items, 50)
    assert np.array_equal(small.user_index(small.user_ids[rows]), rows)
    assert np.array_equal(small.item_index(small.item_ids[cols]), cols)
    assert small.item_index(small.item_ids[cols].reshape(5, 10)).shape == (5, 10)
    assert isinstance(small.user_index(int(small.user_ids[3])), int)
    assert small.user_index(np.float64(small.user_ids[3])) == 3


def test_small_unknown_ids_are_listed(small):
    with pytest.raises(ValueError, match=r"2 do not: 0, 611"):
        small.user_index([1, 611, 0])
    with pytest.raises(ValueError, match="must be integers"):
        small.item_index(1.5)


def test_small_binarize(small):
    ds = load_movielens_small(binarize=True)
    assert ds.X.nnz == small.X.nnz
    assert np.all(ds.X.data == 1.0) and ds.X.dtype == np.float32
    assert np.array_equal(ds.X.indices, small.X.indices)
    with pytest.raises(TypeError, match="binarize must be True or False"):
        load_movielens_small(binarize="yes")


def test_small_is_frozen_and_repr(small):
    with pytest.raises(dataclasses.FrozenInstanceError):
        small.name = "other"
    assert repr(small) == (
        "InteractionDataset(name='ml-latest-small', n_users=610, n_items=9724, nnz=100836)"
    )


def test_shipped_files_are_plain_and_small():
    data = Path(__import__("sparse_rec.datasets").datasets.__file__).parent / "data"
    npz = data / "ml-latest-small.npz"
    assert npz.stat().st_size < 1_000_000
    assert "Usage License" in (data / "ml-latest-small-README.txt").read_text(encoding="utf-8")
    with np.load(npz, allow_pickle=False) as z:
        assert all(z[key].dtype != object for key in z.files)
        assert z["rating_x2"].dtype == np.uint8


@needs_ml_small
def test_small_matches_folder_reader(small):
    ds = load_movielens(SHARED / "ml-latest-small")
    assert _same_csr(ds.X, small.X)
    assert _same_csr(ds.timestamps, small.timestamps)
    assert np.array_equal(ds.user_ids, small.user_ids)
    assert np.array_equal(ds.item_ids, small.item_ids)
    assert np.array_equal(ds.item_names, small.item_names)
    assert np.array_equal(ds.item_genres, small.item_genres)


def test_dataset_checks_consistency():
    X = sp.csr_matrix(np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match=r"X must have shape \(len\(user_ids\), len\(item_ids\)\)"):
        InteractionDataset(X, None, np.arange(3), np.arange(2), None, "x", "")
    with pytest.raises(ValueError, match="sparsity pattern of X"):
        InteractionDataset(X, sp.csr_matrix((2, 2), dtype=np.int64), np.arange(2),
                           np.arange(2), None, "x", "")
    with pytest.raises(ValueError, match="item_names must have one entry per item"):
        InteractionDataset(X, None, np.arange(2), np.arange(2), np.array(["a"]), "x", "")


# --------------------------------------------------------------------------- MovieLens folders


def _write_100k(folder):
    folder.mkdir()
    (folder / "u.data").write_text(
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881250950\n"
    )
    flags = "|".join(["0"] * 19)
    lines = [
        f"242|Kolya (1996)|24-Jan-1997||http://x|{flags}",
        "302|L.A. Confidential (1997)|01-Jan-1997||http://y|" + "|".join(
            ["0"] * 6 + ["1"] + ["0"] * 9 + ["1"] + ["0"] * 2
        ),
        f"999|Caf\xe9 Society (1999)|01-Jan-1999||http://z|{flags}",
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.genre").write_text(
        "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\nCrime|6\n"
        "Documentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\nMusical|12\nMystery|13\n"
        "Romance|14\nSci-Fi|15\nThriller|16\nWar|17\nWestern|18\n\n"
    )
    return folder


def test_movielens_100k_layout(tmp_path):
    ds = load_movielens(_write_100k(tmp_path / "ml-100k"))
    assert isinstance(ds, InteractionDataset)
    assert ds.name == "ml-100k"
    assert ds.X.shape == (2, 2) and ds.X.nnz == 3
    assert ds.user_ids.tolist() == [186, 196] and ds.item_ids.tolist() == [242, 302]
    assert ds.X.toarray().tolist() == [[0, 3], [3, 5]]
    assert ds.timestamps.toarray().tolist() == [[0, 891717742], [881250949, 881250950]]
    # Movies without ratings (999) are not items.
    assert ds.item_names.tolist() == ["Kolya (1996)", "L.A. Confidential (1997)"]
    assert ds.item_genres.tolist() == ["", "Crime|Thriller"]


def test_movielens_1m_layout(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
    )
    (folder / "movies.dat").write_bytes(
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "2000::Am\xe9lie (2001)::Comedy\n".encode("latin-1")
    )
    ds = load_movielens(folder, binarize=True)
    assert ds.X.shape == (2, 2) and ds.X.nnz == 3
    assert np.all(ds.X.data == 1.0)
    assert ds.item_ids.tolist() == [661, 1193]
    assert ds.item_names[1] == "One Flew Over the Cuckoo's Nest (1975)"
    assert ds.item_genres[0] == "Animation|Children's|Musical"
    assert ds.timestamps[1, 1] == 978298413


def test_movielens_latest_layout(tmp_path):
    folder = tmp_path / "ml-latest"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
        "\n5,3,0.5,847434962\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        '7,"Sabrina ""Fair"" (1995)",Comedy\n',
        encoding="utf-8",
    )
    ds = load_movielens(str(folder))
    assert ds.X.toarray().tolist() == [[4.0, 4.5], [0.0, 0.5]]
    assert ds.item_names.tolist() == ["Toy Story (1995)", "American President, The (1995)"]
    assert ds.user_ids.tolist() == [1, 5]


def test_movielens_without_movies_file(tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "u.data").write_text("1 2 3 4\n")
    ds = load_movielens(folder)
    assert ds.item_names is None and ds.item_genres is None
    assert ds.X.shape == (1, 1)


def test_movielens_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="MovieLens folder must exist.*Pass the unpacked"):
        load_movielens(tmp_path / "nowhere")
    (tmp_path / "u.data").write_text("1 2 3 4\n")
    with pytest.raises(NotADirectoryError, match="not a file"):
        load_movielens(tmp_path / "u.data")
    with pytest.raises(TypeError, match="str or os.PathLike"):
        load_movielens(3)


def test_movielens_unknown_layout_lists_expected_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match=r"ratings\.csv.*ratings\.dat.*u\.data.*notes\.txt"):
        load_movielens(tmp_path)


@pytest.mark.parametrize(
    "name, text, line",
    [
        ("u.data", "1\t2\t3\t4\n1\t3\tx\t5\n", 2),
        ("u.data", "1\t2\t3\t4\n\n1\t3\t5\n", 3),
        ("ratings.dat", "1::2::3::4\n1::3::4::5::6\n", 2),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1;3;4;5\n", 3),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,0,5\n", 3),
    ],
)
def test_movielens_malformed_line_is_named(tmp_path, name, text, line):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataFormatError, match=rf"{name}, line {line}:"):
        load_movielens(tmp_path)


def test_movielens_repeated_pair_and_empty_file(tmp_path):
    (tmp_path / "u.data").write_text("1 2 3 4\n1 2 5 6\n")
    with pytest.raises(DataFormatError, match="must be rated once.*user 1 and item 2"):
        load_movielens(tmp_path)
    (tmp_path / "u.data").write_text("")
    with pytest.raises(DataFormatError, match="at least one rating"):
        load_movielens(tmp_path)


def test_movielens_malformed_movies_file(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3,4\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n2,Heat (1995)\n")
    with pytest.raises(DataFormatError, match=r"movies\.csv, line 2: each line must be movieId"):
        load_movielens(tmp_path)
    (tmp_path / "movies.csv").write_text("movieId,title,genres\nabc,Heat (1995),Action\n")
    with pytest.raises(DataFormatError, match=r"movies\.csv, line 2"):
        load_movielens(tmp_path)


@needs_ml100k
def test_movielens_real_100k():
    ds = load_movielens(SHARED / "ml-100k")
    assert ds.X.shape == (943, 1682)
    assert ds.X.nnz == 100_000
    assert set(np.unique(ds.X.data).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ds.item_names[ds.item_index(1)] == "Toy Story (1995)"
    assert ds.item_genres[ds.item_index(1)] == "Animation|Children's|Comedy"
    assert np.array_equal(ds.timestamps.indices, ds.X.indices)


# --------------------------------------------------------------------------- LightGCN folders


def _write_lightgcn(folder, train, test):
    folder.mkdir()
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    return folder


def test_lightgcn_small_folder(tmp_path):
    folder = _write_lightgcn(tmp_path / "toy", "0 0 1 1\n1 2\n2\n\n", "0 3\n1 0\n3 4\n")
    split = load_lightgcn(folder)
    assert isinstance(split, TrainTestDataset)
    assert split.name == "toy"
    assert split.train.shape == split.test.shape == (4, 5)
    assert split.train.dtype == split.test.dtype == np.float32
    assert split.train.toarray().tolist() == [
        [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0],
    ]
    assert split.test.nnz == 3 and split.test[3, 4] == 1
    assert split.train.has_canonical_format
    assert split.n_users == 4 and split.n_items == 5


def test_lightgcn_empty_test_and_whitespace(tmp_path):
    folder = _write_lightgcn(tmp_path / "ws", "  0\t1  2 \r\n1 0\n", "")
    split = load_lightgcn(folder)
    assert split.train.shape == (2, 3) and split.train.nnz == 3
    assert split.test.nnz == 0


@pytest.mark.parametrize(
    "train, line, match",
    [
        ("0 1\n1 x\n", 2, "integer ids"),
        ("0 1\n\n2 1.5\n", 3, "integer ids"),
        ("0 1\n1 -2\n", 2, "non-negative"),
    ],
)
def test_lightgcn_malformed_line_is_named(tmp_path, train, line, match):
    folder = _write_lightgcn(tmp_path / "bad", train, "0 1\n")
    with pytest.raises(DataFormatError, match=rf"train\.txt, line {line}: .*{match}"):
        load_lightgcn(folder)


def test_lightgcn_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="LightGCN folder must exist"):
        load_lightgcn(tmp_path / "nowhere")
    (tmp_path / "train.txt").write_text("0 1\n")
    with pytest.raises(FileNotFoundError, match=r"test\.txt' is missing"):
        load_lightgcn(tmp_path)
    (tmp_path / "test.txt").write_text("0 1\n")
    (tmp_path / "train.txt").write_text("0\n1\n")
    with pytest.raises(DataFormatError, match="at least one 'user item' pair"):
        load_lightgcn(tmp_path)


def test_train_test_dataset_checks_shapes():
    with pytest.raises(ValueError, match="same shape"):
        TrainTestDataset(sp.csr_matrix((2, 3)), sp.csr_matrix((2, 4)), "x")


@needs_gowalla
def test_lightgcn_real_gowalla():
    split = load_lightgcn(SHARED / "gowalla")
    assert split.train.shape == split.test.shape == (29_858, 40_981)
    assert split.train.nnz == 810_128
    assert split.test.nnz == 217_242
    assert np.all(split.train.data == 1.0)


# --------------------------------------------------------------------------- synthetic


def test_make_interactions_shape_and_nnz():
    X = make_interactions(random_state=0)
    assert X.shape == (1000, 500)
    assert X.nnz == 20_000
    assert X.dtype == np.float32 and X.format == "csr"
    assert X.has_canonical_format
    assert np.all(X.data == 1.0)


def test_make_interactions_is_seeded():
    a = make_interactions(300, 200, 5000, random_state=7)
    b = make_interactions(300, 200, 5000, random_state=7)
    c = make_interactions(300, 200, 5000, random_state=8)
    assert _same_csr(a, b)
    assert not _same_csr(a, c)
    g1 = make_interactions(300, 200, 5000, random_state=np.random.default_rng(3))
    g2 = make_interactions(300, 200, 5000, random_state=np.random.default_rng(3))
    assert _same_csr(g1, g2)
    assert make_interactions(300, 200, 5000, random_state=np.random.RandomState(1)).nnz == 5000


def _top_decile_share(counts):
    counts = np.sort(counts)[::-1]
    return counts[: max(1, counts.size // 10)].sum() / counts.sum()


def test_make_interactions_power_law_skew():
    X = make_interactions(2000, 1000, 30_000, alpha=1.0, random_state=0)
    item_share = _top_decile_share(np.asarray(X.sum(axis=0)).ravel())
    user_share = _top_decile_share(np.asarray(X.sum(axis=1)).ravel())
    assert item_share > 0.4  # uniform popularity would give about 0.1
    assert user_share > 0.15
    # A larger exponent concentrates more; alpha=0 is close to uniform.
    steep = make_interactions(2000, 1000, 30_000, alpha=1.5, random_state=0)
    flat = make_interactions(2000, 1000, 30_000, alpha=0.0, random_state=0)
    assert _top_decile_share(np.asarray(steep.sum(axis=0)).ravel()) > item_share
    assert _top_decile_share(np.asarray(flat.sum(axis=0)).ravel()) < 0.15


@pytest.mark.parametrize(
    "shape, n", [((10, 10), 100), ((10, 10), 95), ((1, 1), 1), ((40, 30), 1100)]
)
def test_make_interactions_dense_requests_are_exact(shape, n):
    X = make_interactions(*shape, n_interactions=n, alpha=2.0, random_state=0)
    assert X.shape == shape and X.nnz == n
    assert X.has_canonical_format


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_users": 0}, "n_users must be an integer >= 1"),
        ({"n_items": 2.5}, "n_items must be an integer >= 1"),
        ({"n_interactions": -3}, "n_interactions must be an integer >= 1"),
        ({"n_users": 3, "n_items": 3, "n_interactions": 10}, r"at most n_users \* n_items = 9"),
        ({"alpha": -0.5}, "alpha must be a finite number >= 0"),
        ({"alpha": float("nan")}, "alpha must be a finite number >= 0"),
    ],
)
def test_make_interactions_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_interactions(**kwargs)
