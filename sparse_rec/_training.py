"""The one fit of every DSL estimator: warm start, epochs, prune/grow, accounting.

:class:`DSLEstimator.fit` runs the same steps for every model; a model
supplies only what is its own through a few hooks (see the Architecture
page of the docs):

``_engine_model``, ``_engine_key()``
    Key of the model's engines in :mod:`sparse_rec.backends` (``"mf"``);
    ``_engine_key()`` returns it and may choose by a parameter (a second
    loss of the same model registers engines under its own key).
``_validate()``
    Check the parameters (:meth:`BaseDSLEstimator._validate_common` and the
    model's own).
``_structure()``, ``_fitted_structure()``
    The parameters that fix the tables' shapes, as asked and as fitted: a
    warm start needs them equal.
``_init_params(n_users, n_items, seed)``, ``_warm_params()``
    The :class:`Params` to train: fresh, or the fitted ones with optimiser
    state added.
``_make_engine(data, params)``
    The engine (:class:`sparse_rec.backends.Engine`) that trains them.
``_publish(params)``
    Set the fitted attributes from the live parameters (after every epoch,
    so early stopping and callbacks see the current model).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ._base import BaseDSLEstimator, TrainData, check_random_seed
from ._dsl import PruneGrow, update_ratio_at
from ._kernels import _rng
from ._table import SparseEmbeddingTable
from ._threads import numba_threads
from ._workflows import PartialFitMixin, WorkflowMixin, unpack_dataset
from .exceptions import DivergenceError


@dataclass
class Params:
    """What one fit trains, in place.

    Attributes
    ----------
    tables : list of SparseEmbeddingTable
        The sparse tables, in PruneGrow order (one budget covers them).
    names : list of str
        History name of each table (``nnz_<name>``).
    user_tables, item_tables : list of int
        Tables with one row per user (item): a user with no active weight in
        any of them counts in ``empty_users``.
    dense : list of ndarray
        Dense weights outside the budget, checked for divergence.
    layout : object
        The model's own view of the parameters (the engine's input).
    """

    tables: list
    names: list
    user_tables: list
    item_tables: list
    dense: list = field(default_factory=list)
    layout: object = None


def _grow_chunk_bytes(tables):
    # The dense score buffer of growth: large enough to score Gowalla-sized
    # tables in one chunk, never above 16x the weights' bytes.
    return int(min(32 << 20, max(4 << 20, 16 * sum(t.nnz for t in tables))))


class DSLEstimator(PartialFitMixin, WorkflowMixin, BaseDSLEstimator):
    """``fit`` shared by the DSL estimators; the model supplies the hooks above.

    The workflow methods (``recommend_ids``, ``similar_users``, ``explain``,
    ``partial_fit_users``, ``partial_fit_items``) come from
    :mod:`sparse_rec._workflows` over their own model hooks.
    """

    _engine_model = None

    def _engine_key(self):
        """The model key of this fit's engines in :mod:`sparse_rec.backends`."""
        return self._engine_model

    def _warm_start_allowed(self, X):
        """True for a warm start; the same refusal rule for every model.

        A warm start needs a fitted model and ``X`` of its shape (otherwise
        the fit starts over, as documented), and every shape-fixing
        parameter as fitted (otherwise it is refused: silently dropping the
        fitted model would surprise).
        """
        if not self._can_warm_start(X):
            return False
        fitted = self._fitted_structure()
        for name, value in self._structure().items():
            if fitted[name] != value:
                raise ValueError(
                    f"warm_start=True needs the fitted {name} ({fitted[name]!r}); got "
                    f"{name}={getattr(self, name)!r}. Set warm_start=False to train a new model."
                )
        return True

    def fit(self, X, y=None, exclude=None):
        """Train on a users x items interaction matrix.

        Parameters
        ----------
        X : sparse matrix, array-like of shape (n_users, n_items) or InteractionDataset
            Non-negative interactions; values weight the positives (scaled
            to mean 1). An :class:`~sparse_rec.datasets.InteractionDataset`
            (for example from :func:`~sparse_rec.datasets.from_frame`)
            trains on its ``X`` and keeps its raw ids as ``user_ids_`` and
            ``item_ids_`` (saved with the model; used by ``recommend_ids``).
        y : ignored
        exclude : sparse matrix of shape (n_users, n_items), optional
            Pairs never drawn as negatives (for example held-out candidates).

        Returns
        -------
        self
        """
        self._validate()
        X, raw_ids = unpack_dataset(X)
        X, exclude = self._prepare_X(X, exclude)
        seed = check_random_seed(self.random_state)
        n_users, n_items = X.shape
        warm = self._warm_start_allowed(X)
        if not warm:
            # Raw-id mappings (from a loaded file) describe the old data only.
            self.__dict__.pop("user_ids_", None)
            self.__dict__.pop("item_ids_", None)
        first_epoch = self.n_iter_ if warm else 0
        X_fit, X_val = self._validation_split(X, seed)
        data = TrainData.from_matrix(X_fit, exclude)
        try:
            with numba_threads(self.n_threads):
                params = self._warm_params() if warm else self._init_params(n_users, n_items,
                                                                             seed)
                # Live fitted state: early stopping and callbacks read it mid-fit.
                self.n_users_, self.n_items_ = n_users, n_items
                self.seen_, self.n_features_in_ = X, n_items
                self._publish(params)
                self._train(data, params, seed, X_fit, X_val, first_epoch)
        except BaseException:
            # A failed fit leaves no half-trained model behind.
            self._discard_fit()
            raise
        self._account(params)
        if raw_ids is not None:
            self.user_ids_, self.item_ids_ = raw_ids
        self._clear_caches()
        return self

    def _account(self, params):
        """Drop optimiser state; ``n_active_``, ``nbytes_`` and ``dense_nbytes_``.

        Reads the fitted attributes (after early stopping: the best epoch's),
        not ``params``: tables count as sparse, arrays and floats as dense.
        """
        sparse, dense_bytes = [], 0
        for name in self._snapshot_attributes:
            value = getattr(self, name)
            if isinstance(value, SparseEmbeddingTable):
                value.drop_state()
                sparse.append(value)
            elif isinstance(value, np.ndarray):
                dense_bytes += value.nbytes
            else:
                dense_bytes += 4  # a float32 scalar
        self.n_active_ = sum(t.nnz for t in sparse)
        self.nbytes_ = sum(t.nbytes for t in sparse) + dense_bytes
        total = sum(t.n_rows * t.n_cols for t in params.tables)
        self.dense_nbytes_ = 4 * total + dense_bytes

    def _train(self, data, params, seed, X_fit, X_val, first_epoch):
        engine = self._make_engine(data, params)
        tables = params.tables
        pg = PruneGrow(tables, budget=self.budget, grow=self.grow,
                       chunk_bytes=_grow_chunk_bytes(tables))
        total = sum(t.n_rows * t.n_cols for t in tables)
        dynamic = self.update_ratio > 0 and sum(t.nnz for t in tables) < total
        # Weights must be on the host whenever something reads them mid-fit.
        watch = X_val is not None or bool(self.callbacks)
        max_iter, interval = self._resolved("max_iter"), self._resolved("update_interval")

        def run_epoch(epoch):
            t0 = time.perf_counter()
            # Keys continue across warm starts, so a continuation draws new samples.
            step = first_epoch + epoch
            key = np.uint64(_rng.epoch_key(np.uint64(seed), np.uint64(2 * step)))
            loss = engine.epoch(key)
            done = epoch + 1
            update = dynamic and done % interval == 0 and done < max_iter
            if update or watch or done == max_iter:
                engine.download()
            mean_loss = loss / max(engine.n_samples, 1)
            # On a device the weights are checked whenever they come back.
            if not np.isfinite(mean_loss) or not all(
                np.isfinite(w).all() for w in [t.weights for t in tables] + params.dense
            ):
                raise DivergenceError(
                    f"training diverged at epoch {step + 1}: the loss or the weights are "
                    f"not finite (learning_rate={self.learning_rate}). Lower learning_rate "
                    "(for example by 10x) or raise alpha."
                )
            t1 = time.perf_counter()
            pruned = grown = np.zeros(len(tables), np.int64)
            rho = 0.0
            if update:
                rho = update_ratio_at(done, max_iter, self.update_ratio, self.schedule)
                gkey = np.uint64(_rng.epoch_key(np.uint64(seed), np.uint64(2 * step + 1)))
                fns = engine.grow_fns(gkey) if self.grow == "gradient" else None
                pruned, grown = pg.step(rho, seed + step + 1, fns,
                                        prune_scores=engine.prune_scores(),
                                        rebuild=engine.rebuild)
            self._publish(params)
            t2 = time.perf_counter()
            return {"loss": float(mean_loss), **self._history_row(params), "pruned":
                    int(pruned.sum()), "grown": int(grown.sum()), "update_ratio": rho,
                    "coverage": pg.coverage, "seconds": t2 - t0, "prune_grow_seconds": t2 - t1}

        self._run_epochs(run_epoch, X_fit, X_val, self._progress_name, first_epoch=first_epoch)

    @staticmethod
    def _history_row(params):
        row = {f"nnz_{name}": t.nnz for name, t in zip(params.names, params.tables, strict=True)}
        row["nnz"] = sum(t.nnz for t in params.tables)
        for key, which in (("empty_users", params.user_tables),
                           ("empty_items", params.item_tables)):
            if not which:  # a model without such rows (Mult-VAE has no user tables)
                row[key] = 0
                continue
            empty = np.logical_and.reduce([params.tables[t].row_nnz() == 0 for t in which])
            row[key] = int(np.count_nonzero(empty))
        return row

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = {}  # derived data: rebuilt on demand
        return state
