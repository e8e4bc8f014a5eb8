"""Weighting transformers: references (implicit, hand formulas), sklearn checks, errors."""

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.nearest_neighbours import bm25_weight, tfidf_weight
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparse_rec.preprocessing import (
    BinarizeInteractions,
    BM25Weighting,
    LogScaling,
    TfidfWeighting,
)

ALL = [
    BinarizeInteractions(),
    BinarizeInteractions(threshold=0.5),
    LogScaling(),
    LogScaling(alpha=3.0, epsilon=0.5),
    BM25Weighting(),
    BM25Weighting(K1=1.2, B=0.75),
    BM25Weighting(documents="items"),
    TfidfWeighting(),
    TfidfWeighting(tf="log", norm="l2"),
]

# Every scikit-learn common check passes; a check that starts failing must be
# listed here with a one-line reason.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(ALL, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def counts(n_users=40, n_items=15, density=0.3, seed=1):
    """Random integer counts in 1..10 with no item in every row."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_users, n_items, density=density, random_state=rng, format="lil")
    X[0, :] = 0  # an empty user keeps every df below n_users
    X = X.tocsr()
    X.data = np.ceil(X.data * 10)
    return X


def bm25_reference(X, idf, avg, K1, B):
    """Entry-by-entry BM25 with given statistics (dense loops)."""
    D = X.toarray()
    out = np.zeros_like(D)
    for u in range(D.shape[0]):
        length = D[u].sum()
        for i in np.flatnonzero(D[u]):
            tf = D[u, i]
            out[u, i] = tf * (K1 + 1) / (K1 * (1 - B + B * length / avg) + tf) * idf[i]
    return out


# --------------------------------------------------------------------------- BM25
@pytest.mark.parametrize("K1, B", [(100, 0.8), (1.2, 0.75), (0.0, 0.5), (3.0, 0.0), (10, 1.0)])
def test_bm25_matches_implicit(K1, B):
    X = counts()
    ours = BM25Weighting(K1=K1, B=B).fit_transform(X)
    theirs = bm25_weight(X, K1=K1, B=B).tocsr()
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("K1, B", [(100, 0.8), (1.2, 0.75)])
def test_bm25_items_as_documents_matches_implicit_transposed(K1, B):
    X = counts(seed=11)
    ours = BM25Weighting(K1=K1, B=B, documents="items").fit_transform(X)
    theirs = bm25_weight(X.T.tocsr(), K1=K1, B=B).T
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-6, atol=1e-7)


def test_bm25_items_as_documents_new_rows():
    X_fit, X_new = counts(seed=12), counts(n_users=5, seed=13)
    bm25 = BM25Weighting(K1=3.0, B=0.5, documents="items").fit(X_fit)
    D = X_fit.toarray()
    np.testing.assert_allclose(bm25.item_length_, D.sum(axis=0))
    assert bm25.avg_length_ == pytest.approx(D.sum() / D.shape[1])
    assert not hasattr(bm25, "idf_")
    N = X_new.toarray()
    expected = np.zeros_like(N)
    for u, i in zip(*np.nonzero(N), strict=True):
        idf = max(0.0, np.log(N.shape[1]) - np.log(1 + np.count_nonzero(N[u])))
        norm = 0.5 + 0.5 * D[:, i].sum() / bm25.avg_length_
        expected[u, i] = N[u, i] * 4.0 / (3.0 * norm + N[u, i]) * idf
    np.testing.assert_allclose(bm25.transform(X_new).toarray(), expected, rtol=1e-6)


def test_bm25_statistics_and_new_rows():
    X_fit, X_new = counts(seed=2), counts(n_users=7, seed=3)
    bm25 = BM25Weighting(K1=2.0, B=0.6).fit(X_fit)
    D = X_fit.toarray()
    df = (D > 0).sum(axis=0)
    np.testing.assert_allclose(bm25.idf_, np.log(D.shape[0] / (1.0 + df)))
    assert bm25.avg_length_ == pytest.approx(D.sum() / D.shape[0])
    # New rows are weighted with the training statistics, not their own.
    expected = bm25_reference(X_new, bm25.idf_, bm25.avg_length_, 2.0, 0.6)
    np.testing.assert_allclose(bm25.transform(X_new).toarray(), expected, rtol=1e-6)


def test_bm25_clips_negative_idf():
    X = counts().tolil()
    X[:, 3] = 2.0  # item 3 in every row: implicit's idf is log(N / (N + 1)) < 0
    X = X.tocsr()
    ours = BM25Weighting().fit_transform(X).toarray()
    theirs = bm25_weight(X).toarray()
    assert (theirs[:, 3] < 0).all()
    assert (ours[:, 3] == 0).all()
    keep = np.ones(X.shape[1], bool)
    keep[3] = False
    np.testing.assert_allclose(ours[:, keep], theirs[:, keep], rtol=1e-6, atol=1e-7)


def test_bm25_needs_interactions():
    with pytest.raises(ValueError, match="at least one non-zero interaction"):
        BM25Weighting().fit(sp.csr_matrix((3, 4)))


# --------------------------------------------------------------------------- TF-IDF
def test_tfidf_matches_implicit():
    X = counts(seed=4)
    ours = TfidfWeighting().fit_transform(X).toarray()
    np.testing.assert_allclose(ours, tfidf_weight(X).toarray(), rtol=1e-6, atol=1e-7)


def test_tfidf_l2_rows_and_log_tf():
    X_fit, X_new = counts(seed=5), counts(n_users=6, seed=6)
    model = TfidfWeighting(tf="log", norm="l2").fit(X_fit)
    D = X_new.toarray()
    tf = np.where(D >= 1, 1 + np.log(np.maximum(D, 1)), D)
    W = tf * model.idf_
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    expected = np.divide(W, norms, out=np.zeros_like(W), where=norms > 0)
    out = model.transform(X_new).toarray()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    nonempty = np.diff(X_new.indptr) > 0
    np.testing.assert_allclose(np.linalg.norm(out[nonempty], axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("tf, f", [("raw", lambda x: x), ("sqrt", np.sqrt)])
def test_tfidf_term_frequencies(tf, f):
    X = counts(seed=7)
    model = TfidfWeighting(tf=tf).fit(X)
    D = X.toarray()
    np.testing.assert_allclose(model.transform(X).toarray(), f(D) * model.idf_, rtol=1e-6)


# --------------------------------------------------------------------------- stateless
def test_log_scaling_values():
    X = counts(seed=8)
    out = LogScaling(alpha=2.5, epsilon=0.5).fit_transform(X).toarray()
    D = X.toarray()
    expected = np.where(D > 0, 1 + 2.5 * np.log(1 + D / 0.5), 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # Stateless: works before fit, on any number of items.
    np.testing.assert_allclose(LogScaling(alpha=2.5, epsilon=0.5).transform(X).toarray(),
                               expected, rtol=1e-6)


def test_binarize_threshold():
    X = sp.csr_matrix(np.array([[0.0, 1.0, 3.0], [3.5, 0.0, 2.9]]))
    out = BinarizeInteractions(threshold=3.0).fit_transform(X)
    np.testing.assert_array_equal(out.toarray(), [[0, 0, 0], [1, 0, 0]])
    assert out.nnz == 1  # values at or below the threshold leave the matrix
    np.testing.assert_array_equal(BinarizeInteractions().transform(X).toarray(),
                                  (X.toarray() > 0).astype(np.float32))


# --------------------------------------------------------------------------- shared
@pytest.mark.parametrize("est", ALL, ids=repr)
def test_output_is_canonical_csr_and_row_pure(est):
    X = counts(seed=9)
    X_dup = sp.coo_matrix((np.r_[X.tocoo().data, 1.0], (np.r_[X.tocoo().row, 5],
                           np.r_[X.tocoo().col, 2])), shape=X.shape)  # a duplicate entry
    out = est.fit(X).transform(X_dup)
    assert sp.isspmatrix_csr(out) and out.dtype == np.float32 and out.shape == X.shape
    assert out.has_canonical_format and (out.data > 0).all()
    rows = np.array([7, 3, 20])
    np.testing.assert_allclose(est.transform(X[rows]).toarray(), est.transform(X)[rows].toarray())
    dense = est.transform(X.toarray())
    np.testing.assert_array_equal(dense.toarray(), est.transform(X).toarray())


@pytest.mark.parametrize("est", ALL, ids=repr)
def test_negative_input_is_refused(est):
    X = counts(seed=10).toarray()
    X[2, 3] = -1.5
    with pytest.raises(ValueError, match=r"must be non-negative.*got 1 negative entries"):
        est.fit(X)
    est.fit(np.abs(X))
    with pytest.raises(ValueError, match="Negative values in data passed to"):
        est.transform(X)


@pytest.mark.parametrize(
    "est, match",
    [
        (BinarizeInteractions(threshold=-1), r"threshold must be a finite number in \[0, inf\)"),
        (LogScaling(alpha=np.nan), "alpha must be a finite number"),
        (LogScaling(epsilon=0), r"epsilon must be a finite number in \(0, inf\)"),
        (BM25Weighting(K1=-1), "K1 must be"),
        (BM25Weighting(B=1.5), r"B must be a finite number in \[0, 1\]; got 1.5"),
        (BM25Weighting(documents="terms"), "documents must be one of"),
        (TfidfWeighting(tf="bm25"), "tf must be one of"),
        (TfidfWeighting(norm="l1"), "norm must be one of"),
    ],
)
def test_bad_parameters(est, match):
    with pytest.raises(ValueError, match=match):
        est.fit(counts())


def test_transform_checks_item_count():
    est = BM25Weighting().fit(counts())
    with pytest.raises(ValueError, match="features"):
        est.transform(counts(n_items=14))
