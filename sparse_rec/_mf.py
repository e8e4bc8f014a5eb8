"""DSLMatrixFactorization: BPR matrix factorisation under a fixed sparse budget."""

import time

import numpy as np

from . import backends
from ._base import BaseDSLEstimator, TrainData, check_random_seed
from ._dsl import PruneGrow, update_ratio_at
from ._kernels import _rng
from ._mf_model import MFModel
from ._table import SparseEmbeddingTable
from ._threads import numba_threads
from ._validation import check_budget
from .exceptions import DivergenceError

# Initial weights are uniform in [-s, s] with s chosen so a user-item score
# starts near +-_INIT_SCORE whatever the density and n_components.
_INIT_SCORE = 0.05
# Interactions per row that growth looks at (reweighted to a full epoch).
# An item's sample costs more than a user's (positive and negative draws,
# more scattered reads), so items look at fewer: prune/grow then stays
# below a tenth of the fit time at the default update_interval.
_GROW_SAMPLES_USER = 8
_GROW_SAMPLES_ITEM = 4
_GROW_SAMPLES_ITEM_NEG = 4


class DSLMatrixFactorization(MFModel, BaseDSLEstimator):
    """Matrix factorisation with BPR loss, trained sparse from scratch (DSL).

    User and item factors are CSR tables holding only the active weights.
    Training starts from a uniformly random pattern with exactly
    ``round(density * n_components * (n_users + n_items))`` active weights
    and keeps that count after every epoch. Every ``update_interval`` epochs
    the ``rho_t`` fraction of smallest-magnitude weights is pruned and as many
    inactive coordinates with the largest loss gradient are grown (at zero),
    with ``rho_t`` decaying from ``update_ratio`` on ``schedule``.

    Each epoch draws ``nnz(X)`` BPR samples: a positive interaction uniformly
    at random (weighted by its value, scaled to mean 1) and a negative item
    uniformly among the items the user did not interact with. Steps use
    Adagrad with L2 penalty ``alpha`` on the touched weights and a dense item
    bias.

    Parameters
    ----------
    n_components : int, default=64
        Columns of the user and item factor tables.
    density : float in (0, 1], default=0.2
        Fraction of the ``n_components * (n_users + n_items)`` weights that
        are active. 1.0 trains a dense model (no prune/grow).
    max_iter : int, default=100
        Epochs.
    learning_rate : float, default=0.05
        Step size (Adagrad: the largest step of a weight).
    alpha : float, default=0.03
        L2 penalty on each weight touched by a step. Strong by habit of
        dense BPR: sparse models overfit popular items' rows otherwise.
    optimizer : {"adagrad", "sgd"}, default="adagrad"
        Step rule. Adagrad keeps one accumulator per active weight (stored
        on the same pattern, dropped after ``fit``); plain SGD keeps none.
    update_ratio : float in [0, 1), default=0.5
        Initial fraction of active weights pruned and regrown per update.
        0 gives static sparse training (the pattern never changes).
    update_interval : int, default=5
        Epochs between prune/grow updates. Updates happen after epochs
        ``update_interval, 2 * update_interval, ...`` but never after the
        last one, so a fit with ``max_iter <= update_interval`` is static.
    schedule : {"cosine", "linear", "constant"}, default="cosine"
        How the update ratio decays over the run (to 0.005).
    grow : {"gradient", "random"}, default="gradient"
        Grow where the loss gradient is largest, or at random (ablation).
    budget : {"global", "table"}, default="global"
        ``"global"``: one budget across the user and item tables, so the
        split between users, items and dimensions is learned; ``"table"``:
        each table keeps its own count.
    random_state : int, numpy Generator or None, default=None
        Seed of the pattern, the initial weights and the sampler.
    n_threads : int or None, default=None
        Numba threads during ``fit`` and scoring (None: all). With 1 thread
        and a fixed ``random_state`` a fit is bitwise reproducible.
    backend : {"cpu", "cuda"}, default="cpu"
        Where training epochs run. ``"cuda"`` needs numba-cuda and a GPU
        (``pip install sparse-rec[cuda]``); prune/grow and scoring stay on
        the CPU, and the tables travel to the host at each update.
    verbose : int, default=0
        1 shows a progress bar with the loss.
    callbacks : list of callable or None, default=None
        Each is called after every epoch as ``cb(estimator, info)`` with the
        epoch's ``history_`` row; returning True stops training.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of each user's interactions, score
        NDCG@10 on them after every epoch, stop after ``n_iter_no_change``
        epochs without an improvement above ``tol`` and keep the best
        epoch's weights. The held-out part is not trained on.
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=5
    tol : float, default=1e-4
    warm_start : bool, default=False
        Refit from the current weights and pattern when ``X`` has the fitted
        shape: ``max_iter`` more epochs, the update-ratio schedule starting
        again (lower ``update_ratio`` for a gentle continuation) and the
        optimiser state from zero; ``history_`` and ``n_iter_`` continue.

    Attributes
    ----------
    user_factors_ : scipy.sparse.csr_matrix of shape (n_users, n_components)
    item_factors_ : scipy.sparse.csr_matrix of shape (n_items, n_components)
    item_bias_ : ndarray of shape (n_items,)
    n_iter_ : int
        Epochs run (over all warm-started fits).
    validation_scores_ : list of float or None
        NDCG@10 on the validation split after each epoch (early stopping).
    best_validation_score_ : float or None
    history_ : list of dict
        One entry per epoch: ``loss`` (mean per sample), ``nnz_user``,
        ``nnz_item``, ``nnz``, ``empty_users`` and ``empty_items`` (rows
        with no active weight), ``pruned``, ``grown``, ``update_ratio``,
        ``coverage`` (fraction of coordinates ever active), ``seconds`` and
        ``prune_grow_seconds``.
    n_active_ : int
        Active weights (the budget).
    nbytes_ : int
        Bytes of the stored factors (indptr, indices, weights) and bias.
    dense_nbytes_ : int
        Bytes of the same model as dense float32 tables and bias.

    Examples
    --------
    >>> import numpy as np
    >>> from sparse_rec import DSLMatrixFactorization
    >>> from sparse_rec.datasets import make_interactions
    >>> X = make_interactions(200, 100, 3000, random_state=0)
    >>> mf = DSLMatrixFactorization(n_components=16, density=0.25, max_iter=10,
    ...                             random_state=0, n_threads=1).fit(X)
    >>> mf.n_active_ == round(0.25 * 16 * (200 + 100))
    True
    >>> ids, scores = mf.recommend([0, 1], n=5)
    >>> ids.shape
    (2, 5)
    """

    def __init__(
        self,
        n_components=64,
        density=0.2,
        max_iter=100,
        learning_rate=0.05,
        alpha=0.03,
        optimizer="adagrad",
        update_ratio=0.5,
        update_interval=5,
        schedule="cosine",
        grow="gradient",
        budget="global",
        random_state=None,
        n_threads=None,
        backend="cpu",
        verbose=0,
        callbacks=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        tol=1e-4,
        warm_start=False,
    ):
        self.n_components = n_components
        self.density = density
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.optimizer = optimizer
        self.update_ratio = update_ratio
        self.update_interval = update_interval
        self.schedule = schedule
        self.grow = grow
        self.budget = budget
        self.random_state = random_state
        self.n_threads = n_threads
        self.backend = backend
        self.verbose = verbose
        self.callbacks = callbacks
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start

    def _validate(self):
        # Also run on every loaded model file (sparse_rec._io).
        self._validate_common(optimizer=("adagrad", "sgd"), backend=("cpu", "cuda"))

    # --- fitting ---------------------------------------------------------------
    def fit(self, X, y=None, exclude=None):
        """Train on a users x items interaction matrix.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_users, n_items)
            Non-negative interactions; values weight the positives.
        y : ignored
        exclude : sparse matrix of shape (n_users, n_items), optional
            Pairs never drawn as negatives (for example held-out candidates).

        Returns
        -------
        self
        """
        self._validate()
        X, exclude = self._prepare_X(X, exclude)
        seed = check_random_seed(self.random_state)
        n_users, n_items = X.shape
        d = int(self.n_components)
        warm = self._can_warm_start(X)
        if warm and self.user_table_.n_cols != d:
            raise ValueError(
                f"warm_start=True needs the fitted n_components ({self.user_table_.n_cols}); "
                f"got n_components={d}. Set warm_start=False to train a new model."
            )
        if not warm:
            # Raw-id mappings (from a loaded file) describe the old data only.
            self.__dict__.pop("user_ids_", None)
            self.__dict__.pop("item_ids_", None)
        first_epoch = self.n_iter_ if warm else 0
        X_fit, X_val = self._validation_split(X, seed)
        data = TrainData.from_matrix(X_fit, exclude)
        try:
            with numba_threads(self.n_threads):
                if warm:
                    # Keep the pattern and weights; optimiser state restarts.
                    users, items = self.user_table_, self.item_table_
                    for tab in (users, items):
                        tab.add_state(2)
                    bias_v = np.zeros((n_items, 2), np.float32)
                    bias_v[:, 0] = self.item_bias_
                else:
                    users, items = self._init_tables(n_users, n_items, d, seed)
                    # Bias and its optimiser state side by side, as in the tables.
                    bias_v = np.zeros((n_items, 2), np.float32)
                # Live fitted state: early stopping and callbacks read it mid-fit.
                self.user_table_, self.item_table_ = users, items
                self.item_bias_ = bias_v[:, 0].copy()
                self.n_users_, self.n_items_ = n_users, n_items
                self.seen_, self.n_features_in_ = X, n_items
                self._cache = {}
                self._train(data, users, items, bias_v, seed, X_fit, X_val, first_epoch)
        except BaseException:
            # A failed fit leaves no half-trained model behind.
            self._discard_fit()
            raise
        # The optimiser state is only needed while training: keep weights.
        # (After early stopping these are the best epoch's tables.)
        users, items, bias = self.user_table_, self.item_table_, self.item_bias_
        for tab in (users, items):
            tab.drop_state()
        self.n_active_ = users.nnz + items.nnz
        self.nbytes_ = users.nbytes + items.nbytes + bias.nbytes
        self.dense_nbytes_ = 4 * d * (n_users + n_items) + bias.nbytes
        self._cache = {}
        return self

    def _init_tables(self, n_users, n_items, d, seed):
        total = d * (n_users + n_items)
        nnz = check_budget(int(round(self.density * total)), total, n_users + n_items)
        rng = np.random.default_rng(seed)
        # One uniform pattern over both tables: split the budget as a
        # hypergeometric draw, then each table draws its rows.
        n_u = int(rng.hypergeometric(d * n_users, d * n_items, nnz)) if nnz < total else d * n_users
        scale = np.sqrt(_INIT_SCORE / (self.density * d)) if d else 0.0
        users = SparseEmbeddingTable.random(n_users, d, n_u, scale=scale, seed=seed)
        items = SparseEmbeddingTable.random(n_items, d, nnz - n_u, scale=scale, seed=seed + 1)
        return users, items

    def _train(self, data, users, items, bias_v, seed, X_fit, X_val, first_epoch):
        be = backends.get_backend("cpu")
        optimizer = be.ADAGRAD if self.optimizer == "adagrad" else be.SGD
        device = self._device_state(data, users, items, bias_v)
        tables = [users, items]
        # The dense gradient buffer of growth: large enough to score Gowalla-
        # sized tables in one chunk, never above 16x the weights' bytes.
        chunk = int(min(32 << 20, max(4 << 20, 16 * (users.nnz + items.nnz))))
        pg = PruneGrow(tables, [None, None], budget=self.budget, grow=self.grow,
                       chunk_bytes=chunk)
        total = users.n_rows * users.n_cols + items.n_rows * items.n_cols
        budget = users.nnz + items.nnz
        dynamic = self.update_ratio > 0 and budget < total
        # Weights must be on the host whenever something reads them mid-fit.
        watch = X_val is not None or bool(self.callbacks)

        def run_epoch(epoch):
            t0 = time.perf_counter()
            # Keys continue across warm starts, so a continuation draws new samples.
            step = first_epoch + epoch
            key = np.uint64(_rng.epoch_key(np.uint64(seed), np.uint64(2 * step)))
            if device is None:
                loss = be.bpr_epoch(data, users, items, bias_v, data.nnz, key,
                                    self.learning_rate, self.alpha, optimizer)
            else:
                loss = device.epoch(data.nnz, key, self.learning_rate, self.alpha, optimizer)
            done = epoch + 1
            update = dynamic and done % self.update_interval == 0 and done < self.max_iter
            if device is not None and (update or watch or done == self.max_iter):
                device.download(users, items, bias_v)
            mean_loss = loss / max(data.nnz, 1)
            # On the GPU the weights are checked whenever they come back.
            if not np.isfinite(mean_loss) or not (
                np.isfinite(users.weights).all() and np.isfinite(items.weights).all()
            ):
                raise DivergenceError(
                    f"training diverged at epoch {step + 1}: the loss or the weights are "
                    f"not finite (learning_rate={self.learning_rate}). Lower learning_rate "
                    "(for example by 10x) or raise alpha."
                )
            t1 = time.perf_counter()
            pruned = grown = np.zeros(2, np.int64)
            rho = 0.0
            if update:
                rho = update_ratio_at(done, self.max_iter, self.update_ratio, self.schedule)
                gkey = np.uint64(_rng.epoch_key(np.uint64(seed), np.uint64(2 * step + 1)))
                pg.grad_fns = [
                    be.grad_users(data, users, items, bias_v, _GROW_SAMPLES_USER, gkey),
                    be.grad_items(data, users, items, bias_v, _GROW_SAMPLES_ITEM, gkey,
                                  _GROW_SAMPLES_ITEM_NEG),
                ]
                pruned, grown = pg.step(rho, seed + step + 1)
                if device is not None:
                    device.upload(users, items, bias_v)
            self.item_bias_ = bias_v[:, 0].copy()
            self._cache = {}
            t2 = time.perf_counter()
            return {
                "loss": float(mean_loss),
                "nnz_user": users.nnz,
                "nnz_item": items.nnz,
                "nnz": users.nnz + items.nnz,
                "empty_users": int(np.count_nonzero(users.row_nnz() == 0)),
                "empty_items": int(np.count_nonzero(items.row_nnz() == 0)),
                "pruned": int(pruned.sum()),
                "grown": int(grown.sum()),
                "update_ratio": rho,
                "coverage": pg.coverage,
                "seconds": t2 - t0,
                "prune_grow_seconds": t2 - t1,
            }

        self._run_epochs(run_epoch, X_fit, X_val, "DSL-MF", first_epoch=first_epoch)

    def _device_state(self, data, users, items, bias_v):
        if self.backend != "cuda":
            return None
        from .backends import cuda as cuda_backend

        if not cuda_backend.is_available():
            raise RuntimeError(
                "backend='cuda' needs numba-cuda and a CUDA GPU, and none was found. Install "
                "the extra (pip install 'sparse-rec[cuda]') on a machine with a GPU, or use "
                "backend='cpu'."
            )
        return cuda_backend.DeviceState(data, users, items, bias_v)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = {}  # derived data: rebuilt on demand
        return state
