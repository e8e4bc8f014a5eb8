"""Shared machinery of the estimators: data preparation, recommend, tags."""

import copy
import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from ._recommend import RecommenderMixin, check_fitted
from ._validation import (
    check_interactions,
    check_n_negatives,
    check_n_threads,
    check_positive_int,
    check_random_seed,  # noqa: F401  (imported from here by the estimators)
    check_real,
)

# Early stopping scores NDCG at this cut-off on at most this many users.
_VALIDATION_K = 10
_VALIDATION_USERS = 2000


@dataclass
class TrainData:
    """Interaction arrays the kernels read during one fit."""

    x_indptr: np.ndarray
    x_indices: np.ndarray
    x_weight: np.ndarray
    x_rows: np.ndarray
    xt_indptr: np.ndarray
    xt_indices: np.ndarray
    xt_weight: np.ndarray
    f_indptr: np.ndarray
    f_indices: np.ndarray

    @property
    def nnz(self):
        return self.x_indices.shape[0]

    @classmethod
    def from_matrix(cls, X, exclude=None):
        """Build from canonical CSR ``X``; ``exclude`` adds forbidden negatives.

        Weights are scaled to mean 1, so binary data trains exactly as
        unweighted BPR and the learning rate keeps its meaning.
        """
        # The mean accumulates in float64: a float32 sum of large weights
        # overflows to inf (and every weight would become 0).
        w = (X.data / np.float32(X.data.mean(dtype=np.float64))).astype(np.float32)
        # asarray: no copy when the dtype already fits (these arrays are as
        # large as the input).
        x_indptr = np.asarray(X.indptr, np.int64)
        x_indices = np.asarray(X.indices, np.int32)
        rows = np.repeat(np.arange(X.shape[0], dtype=np.int32), np.diff(X.indptr))
        Xt = sp.csr_matrix((w, x_indices, X.indptr), shape=X.shape).T.tocsr()
        Xt.sort_indices()
        if exclude is not None:
            F = (X + exclude).tocsr()
            F.sum_duplicates()
            F.sort_indices()
            f_indptr, f_indices = np.asarray(F.indptr, np.int64), np.asarray(F.indices, np.int32)
        else:
            f_indptr, f_indices = x_indptr, x_indices
        return cls(
            x_indptr, x_indices, w, rows,
            np.asarray(Xt.indptr, np.int64), np.asarray(Xt.indices, np.int32),
            np.asarray(Xt.data, np.float32), f_indptr, f_indices,
        )


class SaveMixin:
    """``save``: write a fitted model to a model file (see ``sparse_rec._io``)."""

    def save(self, path, *, user_ids=None, item_ids=None, compact=False):
        """Write the fitted model to a safe, versioned ``.npz`` file.

        See :func:`sparse_rec.load` and the model-files guide for the format:
        the class's ``_saved_attributes`` and the parameters are stored, never
        a pickle.

        Parameters
        ----------
        path : str or path-like
        user_ids, item_ids : array-like, optional
            Raw ids of the rows and columns of ``X``, stored as mappings.
        compact : bool, default=False
            Smaller indices and float16 weights (slightly lossy).

        Returns
        -------
        path : pathlib.Path
            The file written.
        """
        from ._io import save_model

        check_fitted(self)
        return save_model(self, path, user_ids=user_ids, item_ids=item_ids, compact=compact)

    @classmethod
    def _stored_nbytes(cls, value):
        """Bytes a (non-compact) model file of this class stores for ``value``.

        Models count ``nbytes_`` with it, so the figure is the file's own,
        whatever index types the writer picks (``_narrow_indices``).
        """
        from ._io import stored_nbytes

        return stored_nbytes(value, narrow=bool(getattr(cls, "_narrow_indices", False)))


class BaseDSLEstimator(SaveMixin, RecommenderMixin, BaseEstimator):
    """Parameter checks common to DSL estimators."""

    #: Whether ``alpha="auto"`` (a penalty the model derives from the data) is accepted.
    _alpha_auto = False

    def _param_defaults(self):
        """``{name: value}`` for parameters whose default depends on others (None given)."""
        return {}

    def _resolved(self, name):
        """Parameter ``name`` as training uses it: its value, or the model's default for None."""
        value = getattr(self, name)
        return self._param_defaults().get(name) if value is None else value

    def _validate_common(self, **choices):
        """Check the shared parameters, and each ``name=options`` choice given."""
        from ._dsl import BUDGETS, GROW_RULES, SCHEDULES
        from ._validation import check_fraction

        check_positive_int(self.n_components, "n_components",
                           hint="Use for example n_components=64.")
        check_fraction(self.density, "density", hint="Pass a fraction such as 0.2.")
        check_positive_int(self._resolved("max_iter"), "max_iter")
        check_positive_int(self._resolved("update_interval"), "update_interval",
                           hint="Prune and grow every that many epochs, e.g. 5.")
        if not (isinstance(self.update_ratio, numbers.Real)
                and not isinstance(self.update_ratio, (bool, np.bool_))
                and 0 <= self.update_ratio < 1):
            raise ValueError(
                f"update_ratio must be in [0, 1); got {self.update_ratio!r}. "
                "Use 0.5 (the paper's default) or 0 for static sparse training."
            )
        choices = {"schedule": SCHEDULES, "grow": GROW_RULES, "budget": BUDGETS, **choices}
        for name, options in choices.items():
            value = getattr(self, name)
            if value not in options:
                raise ValueError(f"{name} must be one of {options}; got {value!r}.")
        check_real(self.learning_rate, "learning_rate", low=0, low_open=True,
                   hint="Use for example learning_rate=0.05.")
        if not (self._alpha_auto and isinstance(self.alpha, str) and self.alpha == "auto"):
            check_real(self.alpha, "alpha", low=0, hint=(
                'Use for example alpha=1e-3, 0 for none, or "auto".' if self._alpha_auto else ""))
        check_n_threads(self.n_threads)

        self._validate_controls()

    def _validate_controls(self):
        cbs = self.callbacks
        if cbs is not None and (callable(cbs) or not all(callable(c) for c in cbs)):
            raise ValueError(
                "callbacks must be None or a list of callables cb(estimator, epoch_info); got "
                f"{cbs!r}. Wrap a single function in a list."
            )
        if not (isinstance(self.validation_fraction, numbers.Real)
                and not isinstance(self.validation_fraction, (bool, np.bool_))
                and 0 < self.validation_fraction < 1):
            raise ValueError(
                f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}. "
                "Use for example 0.1."
            )
        check_positive_int(self.n_iter_no_change, "n_iter_no_change",
                           hint="Use for example n_iter_no_change=5.")
        check_real(self.tol, "tol")

    # --- training controls shared by the estimators ------------------------------
    def _can_warm_start(self, X):
        """True when ``warm_start`` is set and the model was fitted on ``X``'s shape."""
        return bool(self.warm_start) and getattr(self, "seen_", None) is not None and (
            self.seen_.shape == X.shape
        )

    def _validation_split(self, X, seed):
        """``(X_fit, X_val)``: a per-user hold-out when ``early_stopping`` is on."""
        if not self.early_stopping:
            return X, None
        from .model_selection import random_split

        X_fit, X_val = random_split(X, test_size=self.validation_fraction,
                                    random_state=seed % (2**32))
        if X_val.nnz == 0:
            raise ValueError(
                "early_stopping needs validation interactions, but validation_fraction="
                f"{self.validation_fraction} of each user's items rounds to none on X with "
                f"{X.nnz} interactions. Raise validation_fraction or set early_stopping=False."
            )
        return X_fit, X_val

    def _validation_score(self, X_fit, X_val, k=_VALIDATION_K):
        """NDCG@k on held-out interactions, training items excluded."""
        from .metrics import ndcg_at_k

        users = np.flatnonzero(np.diff(X_val.indptr))
        if len(users) > _VALIDATION_USERS:
            # A fixed subset: the same users every epoch keep scores comparable.
            users = users[np.linspace(0, len(users) - 1, _VALIDATION_USERS).astype(np.int64)]
        self._clear_caches()
        E = X_fit[users]
        ids, _ = self._top_n(users, k, E.indptr.astype(np.int64), E.indices.astype(np.int32),
                             np.ones(self.n_items_, np.bool_))
        return float(ndcg_at_k(ids, X_val[users], k=k))

    def _discard_fit(self):
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, name)
        self.__dict__.pop("_cache", None)

    def _clear_caches(self):
        """Drop what scoring derived from the weights (before scoring mid-fit)."""
        self._cache = {}

    def _snapshot(self):
        return {name: copy.deepcopy(getattr(self, name)) for name in self._snapshot_attributes}

    def _restore(self, state):
        for name, value in state.items():
            setattr(self, name, value)

    def _run_epochs(self, run_epoch, X_fit, X_val, desc, first_epoch=0):
        """Train epochs with progress bar, history, callbacks and early stopping.

        ``run_epoch(epoch)`` trains one epoch (and any prune/grow after it)
        and returns its history row. Returns the number of epochs run.
        """
        if not (self.warm_start and first_epoch):
            self.history_ = []
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=self._resolved("max_iter"), desc=desc, unit="epoch")
        best, best_state, stall = -np.inf, None, 0
        self.best_validation_score_ = None
        self.validation_scores_ = [] if X_val is not None else None
        done = 0
        try:
            for epoch in range(self._resolved("max_iter")):
                row = run_epoch(epoch)
                done = epoch + 1
                row = {"epoch": first_epoch + done, **row}
                stop = False
                if X_val is not None:
                    score = self._validation_score(X_fit, X_val)
                    row["validation_ndcg"] = score
                    self.validation_scores_.append(score)
                    if score > best + self.tol:
                        best, stall = score, 0
                        best_state = self._snapshot()
                        self.best_validation_score_ = score
                    else:
                        stall += 1
                        stop = stall >= self.n_iter_no_change
                self.history_.append(row)
                if bar is not None:
                    post = {"loss": f"{row['loss']:.4f}"}
                    if X_val is not None:
                        post["val_ndcg"] = f"{row['validation_ndcg']:.4f}"
                    bar.set_postfix(post)
                    bar.update(1)
                for cb in self.callbacks or ():
                    if cb(self, row):
                        stop = True
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        if best_state is not None and stall > 0:
            # As scikit-learn's MLP: keep the weights of the best epoch.
            self._restore(best_state)
        self.n_iter_ = first_epoch + done
        return done

    def _prepare_X(self, X, exclude):
        X = check_interactions(X)
        # Bounded by the data: 10**9 would hang (None: a model's data-derived default).
        if getattr(self, "n_negatives", None) is not None:
            check_n_negatives(self.n_negatives, X.shape[1])
        if exclude is not None:
            exclude = check_interactions(exclude, name="exclude", allow_empty=True)
            if exclude.shape != X.shape:
                raise ValueError(
                    f"exclude must have the shape of X {X.shape}; got {exclude.shape}."
                )
        return X, exclude
