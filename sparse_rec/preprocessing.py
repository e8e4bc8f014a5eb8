"""Weighting transformers for interaction matrices (users x items).

Each transformer takes a non-negative users x items matrix (sparse or dense)
and returns a canonical float32 CSR matrix with the same shape and at most
the same non-zeros, so it fits in a :class:`~sklearn.pipeline.Pipeline`
before any recommender of this package or
:class:`sparse_rec.interop.ImplicitRecommender`. Every output row is a
function of the same input row alone; statistics that span rows (item
document frequencies, the average row length) are learned in ``fit`` and
reused by ``transform``, so held-out or new users are weighted exactly like
the training users.

- :class:`BinarizeInteractions`: 1 where the value exceeds a threshold.
- :class:`BM25Weighting`: Okapi BM25 with users (or items) as documents
  (the form of ``implicit.nearest_neighbours.bm25_weight``).
- :class:`TfidfWeighting`: TF-IDF (by default as
  ``implicit.nearest_neighbours.tfidf_weight``).
- :class:`LogScaling`: the confidence :math:`1 + \\alpha \\log(1 + x/\\epsilon)`
  of Hu, Koren and Volinsky (ICDM 2008).
"""

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._validation import check_structure

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, X, reset, **kw):
        return est._validate_data(X, reset=reset, **kw)


__all__ = ["BM25Weighting", "BinarizeInteractions", "LogScaling", "TfidfWeighting"]


def _check_real(value, name, *, low, low_open=False, high=None, hint=""):
    """A finite real number in [low, high] (``low_open``: (low, ...)); raise otherwise."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = f"({low:g}" if low_open else f"[{low:g}"
        hi = f"{high:g}]" if high is not None else "inf)"
        raise ValueError(f"{name} must be a finite number in {lo}, {hi}; got {value!r}. {hint}"
                         .rstrip())
    return float(value)


class _InteractionTransformer(TransformerMixin, BaseEstimator):
    """Input checks, CSR output and tags shared by the weighting transformers."""

    _stateless = False

    def _check_X(self, X, reset):
        check_structure(X)  # before scipy's compiled code sorts or sums it
        X = _validate_data(
            self, X, reset=reset, accept_sparse="csr", dtype=(np.float64, np.float32)
        )
        X = sp.csr_matrix(X, dtype=np.float64, copy=True)
        X.sum_duplicates()
        X.sort_indices()
        if X.nnz and X.data.min() < 0:
            bad = int(np.count_nonzero(X.data < 0))
            # "Negative values in data" is the phrase scikit-learn's checks expect.
            raise ValueError(
                f"Negative values in data passed to {type(self).__name__}: X must be "
                f"non-negative (interaction counts or weights); got {bad} negative entries "
                f"(min {X.data.min():g}). Shift, clip or binarise the data first."
            )
        return X

    @staticmethod
    def _finish(X, data):
        """``X``'s pattern with new values, zeros dropped, as float32 CSR."""
        out = sp.csr_matrix((data.astype(np.float32), X.indices, X.indptr), shape=X.shape)
        out.eliminate_zeros()
        return out

    def _validate_params(self):
        """Check the constructor parameters (override)."""

    def fit(self, X, y=None):
        """Check ``X`` and learn the statistics of the weighting.

        Parameters
        ----------
        X : sparse matrix or array-like, shape (n_users, n_items)
            Non-negative interactions.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        self._fit(self._check_X(X, reset=True))
        return self

    def _fit(self, X):
        """Learn statistics from canonical float64 CSR ``X`` (override)."""

    def transform(self, X):
        """Weight the interactions of ``X``.

        Parameters
        ----------
        X : sparse matrix or array-like, shape (n_users, n_items)
            Non-negative interactions; ``n_items`` as in ``fit``.

        Returns
        -------
        X_new : scipy.sparse.csr_matrix of float32, shape (n_users, n_items)
            Non-negative; zero wherever ``X`` is zero.
        """
        if self._stateless:
            self._validate_params()
        else:
            check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return self._finish(X, self._weights(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.requires_fit = not self._stateless
        # Outputs are float32 whatever the input, like the estimators' tables.
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


class BinarizeInteractions(_InteractionTransformer):
    """Set interactions above a threshold to 1 and drop the others.

    Turns counts or ratings into implicit feedback: ``x > threshold`` becomes
    1, anything else (including ratings at or below the threshold) leaves the
    matrix. Stateless: ``fit`` only checks the input.

    Parameters
    ----------
    threshold : float, default=0.0
        Values strictly above it count as interactions. Must be >= 0 so that
        missing entries (zeros) stay missing.

    Attributes
    ----------
    n_features_in_ : int
        Items seen in ``fit`` (when fitted).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from sparse_rec.preprocessing import BinarizeInteractions
    >>> X = sp.csr_matrix([[5.0, 0.0, 2.0], [0.0, 3.5, 4.0]])
    >>> BinarizeInteractions(threshold=3.0).fit_transform(X).toarray()
    array([[1., 0., 0.],
           [0., 1., 1.]], dtype=float32)
    """

    _stateless = True

    def __init__(self, threshold=0.0):
        self.threshold = threshold

    def _validate_params(self):
        _check_real(self.threshold, "threshold", low=0.0,
                    hint="Binarising at a negative threshold would fill every empty entry.")

    def _weights(self, X):
        return (X.data > self.threshold).astype(np.float64)


class LogScaling(_InteractionTransformer):
    r"""Confidence weights :math:`c = 1 + \alpha \log(1 + x / \epsilon)` on stored entries.

    The logarithmic confidence of Hu, Koren and Volinsky (ICDM 2008) for
    implicit-feedback ALS: repeated interactions raise the confidence slowly,
    and every observed entry gets at least 1. Zeros stay zero (unobserved).
    Stateless: ``fit`` only checks the input.

    Parameters
    ----------
    alpha : float, default=1.0
        Scale of the logarithmic term, >= 0 (0 gives binary data).
    epsilon : float, default=1.0
        Count scale inside the logarithm, > 0.

    Attributes
    ----------
    n_features_in_ : int
        Items seen in ``fit`` (when fitted).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparse_rec.preprocessing import LogScaling
    >>> X = sp.csr_matrix([[np.e - 1, 0.0], [0.0, 0.0]])
    >>> LogScaling(alpha=2.0).fit_transform(X).toarray()
    array([[3., 0.],
           [0., 0.]], dtype=float32)
    """

    _stateless = True

    def __init__(self, alpha=1.0, epsilon=1.0):
        self.alpha = alpha
        self.epsilon = epsilon

    def _validate_params(self):
        _check_real(self.alpha, "alpha", low=0.0, hint="Use for example alpha=1.0.")
        _check_real(self.epsilon, "epsilon", low=0.0, low_open=True,
                    hint="Use for example epsilon=1.0.")

    def _weights(self, X):
        return 1.0 + self.alpha * np.log1p(X.data / self.epsilon)


def _idf(X):
    """``log(N) - log(1 + df)`` per item, clipped at 0 (see BM25Weighting)."""
    df = np.bincount(X.indices, minlength=X.shape[1])
    return np.maximum(np.log(X.shape[0]) - np.log1p(df), 0.0)


class BM25Weighting(_InteractionTransformer):
    r"""Okapi BM25 weighting of interactions.

    With ``documents="users"`` (the default) each user's row is a document
    and items are terms. For user :math:`u` and item :math:`i` with value
    (term frequency) :math:`x_{ui}`:

    .. math::

       w_{ui} = \frac{x_{ui} (K_1 + 1)}{K_1 \left(1 - B + B \frac{|u|}{\overline{|u|}}\right)
                + x_{ui}} \cdot \mathrm{idf}_i,
       \qquad \mathrm{idf}_i = \max\left(0, \log N - \log(1 + \mathrm{df}_i)\right),

    where :math:`|u| = \sum_i x_{ui}` is the row's length. ``fit`` learns
    :math:`N` (rows), :math:`\mathrm{df}_i` (rows holding item :math:`i`)
    and the mean row length :math:`\overline{|u|}` from the training matrix;
    ``transform`` weights any rows with them. Popular items and heavy users
    are damped.

    With ``documents="items"`` the roles swap, as in implicit's last.fm ALS
    example, which weights the items x users matrix: the length is the
    item's total :math:`|i| = \sum_u x_{ui}` over the training users
    (learned in ``fit``, with its mean over items), and the IDF belongs to
    the user, :math:`\max(0, \log n_\mathrm{items} - \log(1 + n_u))` with
    :math:`n_u` the items in the user's row. Each output row is still a
    function of its input row and the fitted item lengths.

    On the training matrix ``X`` (users x items) this equals
    ``implicit.nearest_neighbours.bm25_weight(X, K1, B)`` for
    ``documents="users"`` and ``bm25_weight(X.T, K1, B).T`` for
    ``documents="items"``, except that the IDF is clipped at 0: implicit's
    :math:`\log(N / (1 + \mathrm{df}))` is slightly negative for a term in
    every document, and a negative weight is not a valid interaction. Such
    entries get weight 0 and leave the matrix.

    Parameters
    ----------
    K1 : float, default=100
        Term-frequency saturation, >= 0 (0: binary term frequency). implicit's
        default for ALS inputs; text retrieval uses about 1.2.
    B : float in [0, 1], default=0.8
        Strength of the length normalisation (0: none).
    documents : {"users", "items"}, default="users"
        What a document is (see above).

    Attributes
    ----------
    idf_ : ndarray of float64, shape (n_items,)
        Item IDF learned in ``fit`` (``documents="users"`` only).
    item_length_ : ndarray of float64, shape (n_items,)
        Item totals learned in ``fit`` (``documents="items"`` only).
    avg_length_ : float
        Mean document length in the training matrix.
    n_features_in_ : int
        Items seen in ``fit``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparse_rec.preprocessing import BM25Weighting
    >>> X = sp.csr_matrix([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    >>> bm25 = BM25Weighting(K1=1.0, B=0.0).fit(X)
    >>> bool(np.allclose(bm25.idf_, np.log(3 / 2)))
    True
    >>> bool(np.allclose(bm25.transform(X).data, np.log(3 / 2) * np.array([1, 4 / 3, 1])))
    True
    """

    _DOCUMENTS = ("users", "items")

    def __init__(self, K1=100, B=0.8, documents="users"):
        self.K1 = K1
        self.B = B
        self.documents = documents

    def _validate_params(self):
        _check_real(self.K1, "K1", low=0.0, hint="Use for example K1=100 (implicit) or 1.2.")
        _check_real(self.B, "B", low=0.0, high=1.0, hint="Use for example B=0.8.")
        if self.documents not in self._DOCUMENTS:
            raise ValueError(
                f"documents must be one of {self._DOCUMENTS}; got {self.documents!r}."
            )

    def _fit(self, X):
        total = float(X.data.sum())
        if total <= 0:
            raise ValueError(
                f"BM25Weighting needs at least one non-zero interaction to learn the average "
                f"document length; got a {X.shape} matrix without any. Fit on the training "
                "matrix."
            )
        # Attributes of the other orientation would be stale after a refit.
        for name in ("idf_", "item_length_"):
            self.__dict__.pop(name, None)
        if self.documents == "users":
            self.idf_ = _idf(X)
            self.avg_length_ = total / X.shape[0]
        else:
            self.item_length_ = np.bincount(X.indices, weights=X.data, minlength=X.shape[1])
            self.avg_length_ = total / X.shape[1]

    def _weights(self, X):
        counts = np.diff(X.indptr)
        rows = np.repeat(np.arange(X.shape[0]), counts)
        if self.documents == "users":
            lengths = np.bincount(rows, weights=X.data, minlength=X.shape[0])[rows]
            idf = self.idf_[X.indices]
        else:
            lengths = self.item_length_[X.indices]
            idf = np.maximum(np.log(X.shape[1]) - np.log1p(counts), 0.0)[rows]
        K1, B = float(self.K1), float(self.B)
        norm = (1.0 - B) + B * lengths / self.avg_length_
        tf = X.data
        return tf * (K1 + 1.0) / (K1 * norm + tf) * idf


class TfidfWeighting(_InteractionTransformer):
    r"""TF-IDF weighting: users are documents, items are terms.

    :math:`w_{ui} = \mathrm{tf}(x_{ui}) \cdot \mathrm{idf}_i` with
    :math:`\mathrm{idf}_i = \max(0, \log N - \log(1 + \mathrm{df}_i))` learned
    in ``fit`` (:math:`N` rows, :math:`\mathrm{df}_i` rows holding item
    :math:`i`), optionally followed by L2 normalisation of each row.

    With the defaults this equals ``implicit.nearest_neighbours.
    tfidf_weight(X)`` (``sqrt`` term frequency), apart from the IDF clipped
    at 0 as in :class:`BM25Weighting`; ``norm="l2"`` then gives the rows
    implicit's ``TFIDFRecommender`` compares.

    Parameters
    ----------
    tf : {"sqrt", "log", "raw"}, default="sqrt"
        Term frequency: :math:`\sqrt{x}`, :math:`1 + \log x` for
        :math:`x \ge 1` (and :math:`x` below 1, so it stays positive and
        continuous), or :math:`x`.
    norm : {None, "l2"}, default=None
        Scale each row to unit Euclidean norm.

    Attributes
    ----------
    idf_ : ndarray of float64, shape (n_items,)
        Item weights learned in ``fit``.
    n_features_in_ : int
        Items seen in ``fit``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparse_rec.preprocessing import TfidfWeighting
    >>> X = sp.csr_matrix([[4.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> W = TfidfWeighting().fit_transform(X)
    >>> bool(np.allclose(W.toarray(), [[2 * np.log(3 / 2), 0], [0, np.log(3 / 2)], [0, 0]]))
    True
    """

    _TF = ("sqrt", "log", "raw")
    _NORMS = (None, "l2")

    def __init__(self, tf="sqrt", norm=None):
        self.tf = tf
        self.norm = norm

    def _validate_params(self):
        if self.tf not in self._TF:
            raise ValueError(f"tf must be one of {self._TF}; got {self.tf!r}.")
        if self.norm not in self._NORMS:
            raise ValueError(f"norm must be one of {self._NORMS}; got {self.norm!r}.")

    def _fit(self, X):
        self.idf_ = _idf(X)

    def _weights(self, X):
        x = X.data
        if self.tf == "sqrt":
            tf = np.sqrt(x)
        elif self.tf == "log":
            tf = np.where(x >= 1.0, 1.0 + np.log(np.maximum(x, 1.0)), x)
        else:
            tf = x
        w = tf * self.idf_[X.indices]
        if self.norm == "l2":
            counts = np.diff(X.indptr)
            rows = np.repeat(np.arange(X.shape[0]), counts)
            sq = np.bincount(rows, weights=w * w, minlength=X.shape[0])
            scale = np.where(sq > 0, 1.0 / np.sqrt(np.maximum(sq, 1e-300)), 0.0)
            w = w * scale[rows]
        return w
