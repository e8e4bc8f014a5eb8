"""Fold-in of new users, early stopping, callbacks and warm start."""

import numpy as np
import pytest
import scipy.sparse as sp
from test_mf import blocks, fast

from sparse_rec import DSLMatrixFactorization
from sparse_rec.exceptions import DivergenceError, NotFittedError


@pytest.fixture(scope="module")
def fitted():
    X, held = blocks()
    return fast(density=0.5, max_iter=60).fit(X), X, held


def test_fold_in_recovers_the_held_out_item_of_a_new_users_group(fitted):
    mf, X, held = fitted
    # The histories of the training users, presented as new users.
    ids = mf.predict(X)
    assert ids.shape == (X.shape[0],)
    assert np.mean(ids == held) >= 0.9


def test_fold_in_row_is_independent_of_the_other_rows(fitted):
    mf, X, _ = fitted
    full = mf.decision_function(X)
    rows = [7, 3, 30]
    part = mf.decision_function(X[rows])
    np.testing.assert_array_equal(full[rows], part)
    # Order of rows in the batch does not matter either.
    np.testing.assert_array_equal(mf.decision_function(X[rows[::-1]]), part[::-1])


def test_fold_in_rows_keep_the_per_user_budget(fitted):
    mf, X, _ = fitted
    side = mf._fold_in(X)
    side.check()
    k = round(mf.user_table_.nnz / mf.n_users_)
    assert np.all(side.row_nnz() == k)


def test_decision_function_matches_recommend_for_history(fitted):
    mf, X, _ = fitted
    S = mf.decision_function(X[:5])
    ids, scores = mf.recommend_for_history(X[:5], n=4)
    for r in range(5):
        s = S[r].copy()
        s[X[r].indices] = -np.inf
        np.testing.assert_allclose(scores[r], np.sort(s)[::-1][:4], rtol=1e-5, atol=1e-6)
        assert not set(ids[r]) & set(X[r].indices)
    ids_all, _ = mf.recommend_for_history(X[:5], n=4, filter_seen=False)
    np.testing.assert_array_equal(ids_all, np.argsort(-S, axis=1, kind="stable")[:, :4])


def test_empty_history_scores_by_item_bias(fitted):
    mf, _, _ = fitted
    S = mf.decision_function(sp.csr_matrix((1, mf.n_items_)))
    np.testing.assert_allclose(S[0], mf.item_bias_, rtol=0, atol=0)


def test_fold_in_bad_input(fitted):
    mf, X, _ = fitted
    msg = "X has 5 features, but DSLMatrixFactorization is expecting 24"
    with pytest.raises(ValueError, match=msg):
        mf.predict(X[:, :5])
    with pytest.raises(ValueError, match="non-negative"):
        mf.decision_function(-X[:2])
    with pytest.raises(NotFittedError):
        DSLMatrixFactorization().predict(X)


def test_callbacks_see_each_epoch_and_can_stop():
    X, _ = blocks()
    seen = []

    def cb(est, info):
        seen.append((info["epoch"], est.user_table_.nnz + est.item_table_.nnz))
        return info["epoch"] == 4

    mf = fast(density=0.5, callbacks=[cb]).fit(X)
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert mf.n_iter_ == 4 and len(mf.history_) == 4
    assert all(n == mf.n_active_ for _, n in seen)


def test_callbacks_must_be_a_list_of_callables():
    X, _ = blocks()
    with pytest.raises(ValueError, match="callbacks must be None or a list"):
        fast(callbacks=print).fit(X)


def test_early_stopping_stops_and_keeps_the_best_epoch():
    X, _ = blocks(per_group=20)
    mf = fast(density=0.5, max_iter=200, early_stopping=True, validation_fraction=0.3,
              n_iter_no_change=3).fit(X)
    scores = mf.validation_scores_
    # Block data is learned within a few dozen epochs; then the score stalls.
    assert mf.n_iter_ < 200
    assert len(scores) == mf.n_iter_ == len(mf.history_)
    assert mf.best_validation_score_ == max(scores) > 0.5
    best = int(np.argmax(scores))
    assert mf.n_iter_ - 1 - best >= 3
    # The kept weights are the best epoch's: scoring them again on the same
    # split (same seed) gives the best score, not the last one.
    X_fit, X_val = mf._validation_split(mf.seen_, 0)
    assert mf._validation_score(X_fit, X_val) == pytest.approx(mf.best_validation_score_)
    # Validation interactions were held out of training.
    assert X_fit.nnz + X_val.nnz == X.nnz


def test_validation_fraction_is_checked():
    X, _ = blocks()
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        fast(early_stopping=True, validation_fraction=1.5).fit(X)


def test_warm_start_continues_history_and_keeps_the_budget():
    X, held = blocks()
    mf = fast(density=0.5, max_iter=10, warm_start=True).fit(X)
    budget = mf.n_active_
    first = mf.user_factors_.toarray()
    mf.set_params(update_ratio=0.1)
    mf.fit(X)
    assert mf.n_iter_ == 20 and len(mf.history_) == 20
    assert [h["epoch"] for h in mf.history_] == list(range(1, 21))
    assert mf.n_active_ == budget
    assert not np.array_equal(first, mf.user_factors_.toarray())
    cold = fast(density=0.5, max_iter=10, warm_start=False).fit(X)
    # Without warm_start a refit starts over.
    assert cold.fit(X).n_iter_ == 10


def test_warm_start_with_another_shape_starts_over():
    X, _ = blocks()
    mf = fast(density=0.5, max_iter=5, warm_start=True).fit(X)
    mf.fit(X[:, :20])
    assert mf.n_iter_ == 5 and mf.n_items_ == 20


def test_failed_fit_leaves_no_fitted_model():
    X, _ = blocks()
    mf = fast(learning_rate=1e30, optimizer="sgd")
    with pytest.raises(DivergenceError):
        mf.fit(X)
    with pytest.raises(NotFittedError):
        mf.recommend([0])


def test_warm_start_with_other_n_components_is_refused():
    X, _ = blocks()
    mf = fast(max_iter=3, warm_start=True).fit(X)
    with pytest.raises(ValueError, match="warm_start=True needs the fitted n_components"):
        mf.set_params(n_components=16).fit(X)
    # The fitted model is untouched by the refused call.
    assert mf.user_table_.n_cols == 8 and mf.n_iter_ == 3


def test_fold_in_weights_positives_by_value_relative_to_the_row(fitted):
    mf, X, _ = fitted
    H = X[:6].copy()
    base = mf.decision_function(H)
    W = H.copy()
    W.data = np.linspace(0.5, 5.0, W.nnz).astype(np.float32)
    weighted = mf.decision_function(W)
    assert not np.array_equal(base, weighted)
    # Only values relative to the row's mean matter.
    W.data *= 3.0
    np.testing.assert_allclose(mf.decision_function(W), weighted, rtol=1e-5, atol=1e-6)


def test_a_callback_can_recommend_with_the_live_weights():
    X, _ = blocks()
    got = []
    fast(max_iter=2, callbacks=[lambda est, info: got.append(est.recommend([0], n=2)[0])]).fit(X)
    assert len(got) == 2 and got[0].shape == (1, 2)
