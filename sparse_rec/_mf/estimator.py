"""DSLMatrixFactorization: matrix factorisation (iALS, BPR, softmax, CCL), sparse budget."""

import numpy as np

from .. import backends
from .._table import SparseEmbeddingTable
from .._training import DSLEstimator, Params
from .._validation import check_budget, check_real
from .scoring import LOSSES, MFModel, check_softmax_params

# Parameters whose good value depends on the loss: ``None`` in ``__init__``
# resolves here (through ``_resolved``, the only reader). iALS epochs are two
# exact alternating solves and converge in about 20; BPR's sampled epochs
# need about 100 (both measured in benchmarks/quality.py).
LOSS_DEFAULTS = {
    "bpr": {"max_iter": 100, "update_interval": 5},
    "ials": {"max_iter": 14, "update_interval": 1},
    "softmax": {"max_iter": 40, "update_interval": 4},
    # CCL: 80 epochs, 9 updates as at 40 / 4 (validation Recall@20 at 0.2,
    # 40 -> 80 epochs: Gowalla 0.142 -> 0.148, ml-100k 0.287 -> 0.289,
    # built-in 0.186 -> 0.188; the docs' CCL section).
    "ccl": {"max_iter": 80, "update_interval": 8},
}
# Initial weights are uniform in [-s, s] with s chosen so a user-item score
# starts near +-_INIT_SCORE whatever the density and n_components.
_INIT_SCORE = 0.05
# Engines of the losses other than BPR (backends._engine).
_ENGINE_KEYS = {"ials": "mf-ials", "softmax": "mf-softmax", "ccl": "mf-ccl"}


class DSLMatrixFactorization(MFModel, DSLEstimator):
    """Matrix factorisation (iALS, BPR, softmax or CCL loss), trained sparse from scratch (DSL).

    User and item factors are CSR tables holding only the active weights.
    Training starts from a uniformly random pattern with exactly
    ``round(density * n_components * (n_users + n_items))`` active weights
    and keeps that count after every epoch. Every ``update_interval`` epochs
    the ``rho_t`` fraction of smallest-magnitude weights is pruned and as many
    inactive coordinates with the largest loss gradient are grown (at zero),
    with ``rho_t`` decaying from ``update_ratio`` on ``schedule``.

    With ``loss="ials"`` (default) each epoch solves every user row exactly
    on its active coordinates (a small Cholesky system through the Gram
    matrix of the item table), then every item row: weighted squared loss
    over all user-item pairs (Hu et al. 2008), observed pairs with target 1
    and their value (scaled to mean 1) as weight, every other pair with
    target 0 and weight ``unobserved_weight``, ridge ``regularization``
    scaled by each row's total weight (Rendle et al. 2021). Pruning drops
    the smallest ``w_j**2 * H_jj`` and growth adds the largest
    ``g_j**2 / H_jj``, with ``g`` the exact full-data gradient and ``H_jj``
    the row's curvature. No sampling, no learning rate and no item bias
    (``item_bias_`` stays zero). It is the default because it ranks better
    than BPR on every benchmark set, at density 0.2 above implicit's dense
    ALS with the same parameter count, in a fifth of BPR's epochs (see
    "Losses" in the Dynamic Sparse Learning guide).

    With ``loss="bpr"`` each epoch draws ``nnz(X)`` BPR samples: a positive
    interaction uniformly at random (weighted by its value, scaled to mean
    1) and a negative item uniformly among the items the user did not
    interact with. Steps use Adagrad with L2 penalty ``alpha`` on the
    touched weights and a dense item bias. It runs on the CPU and the GPU
    (``backend="cuda"``).

    With ``loss="softmax"`` each epoch takes every user once (in random
    order) with all its positives, users in batches that share
    ``n_negatives`` negative items drawn from ``(count + 1) ** 0.5``; the
    loss of a positive is the sampled softmax with the log-q correction
    ``logsumexp(s_i, s_j - log(N q_j)) - s_i`` over scores ``s = <p_u,
    q> / temperature`` (negatives the user interacted with left out).
    Adagrad with L2 ``alpha`` on the touched weights, no item bias. Growth
    uses the full-data gradient at one shared draw of negatives. CPU or GPU
    (``backend="cuda"``).
    On the validation splits it ranks below iALS and BPR (see "Losses" in
    the Dynamic Sparse Learning guide); it is there to compare and build on.

    With ``loss="ccl"`` (the cosine contrastive loss of SimpleX, Mao et al.
    2021) epochs take users as the softmax loss does, against
    ``n_negatives`` negatives shared by a batch and drawn uniformly; the
    loss of a positive is ``1 - cos(p_u, q_i) + (negative_weight /
    n_negatives) * sum_j max(0, cos(p_u, q_j) - margin)`` (negatives the
    user interacted with left out). Rows are scaled to fixed norms after
    every epoch (the loss ignores norms): users to 0.25, items to 0.25 times
    ``(count + 1) ** 0.15`` over its mean, so ``recommend`` ranks by the
    cosine times a mild popularity factor.
    Growth uses the gradient of the loss in expectation over the
    negatives' draws, its negative part estimated (unbiased) from 2048
    sampled items or users per step. Adagrad with L2 ``alpha``, no item
    bias. CPU or GPU (``backend="cuda"``: epochs on the device, growth
    scores on the host).
    It ranks above the softmax loss everywhere; below iALS on both
    MovieLens sets, above iALS and implicit ALS-64 on Gowalla's test split
    at density 0.2 (Recall@20 0.148 against 0.146 and 0.147) at about 25x
    ALS-64's fit time.

    Parameters
    ----------
    n_components : int, default=64
        Columns of the user and item factor tables.
    density : float in (0, 1], default=0.2
        Fraction of the ``n_components * (n_users + n_items)`` weights that
        are active. 1.0 trains a dense model (no prune/grow).
    max_iter : int or None, default=None
        Epochs. None: 100 for ``loss="bpr"``, 14 for ``loss="ials"`` (each
        iALS epoch is two exact alternating solves), 40 for
        ``loss="softmax"`` and 80 for ``loss="ccl"``.
    learning_rate : float, default=0.05
        Step size (Adagrad: the largest step of a weight). BPR, softmax and
        CCL (whose rows are kept at norms near 0.25: a step of up to about
        a fifth of the row).
    alpha : float, default=0.03
        L2 penalty on each weight touched by a step. Strong by habit of
        dense BPR: sparse models overfit popular items' rows otherwise.
        BPR, softmax and CCL (iALS: ``regularization``).
    optimizer : {"adagrad", "sgd"}, default="adagrad"
        Step rule. Adagrad keeps one accumulator per active weight (stored
        on the same pattern, dropped after ``fit``); plain SGD keeps none.
        BPR only (softmax and CCL always use Adagrad).
    loss : {"ials", "bpr", "softmax", "ccl"}, default="ials"
        ``"ials"``: weighted squared loss over all pairs, exact row solves
        (CPU or GPU). ``"bpr"``: sampled pairwise loss with SGD/Adagrad steps
        and a dense item bias (CPU or GPU). ``"softmax"``: sampled softmax
        over negatives shared by a batch of users, Adagrad (CPU or GPU).
        ``"ccl"``: cosine contrastive loss over shared negatives, Adagrad
        (CPU or GPU).
    regularization : float > 0 or None, default=None
        iALS ridge: row ``u`` is penalised by ``regularization * (sum of its
        confidences + unobserved_weight * n_other) * |w_u|^2``, i.e. in
        proportion to the weight of its loss, so frequent and rare rows are
        shrunk alike. None: ``0.01 * max(1, 20 / m)`` with ``m = nnz(X) /
        sqrt(n_users * n_items)`` (the geometric mean of the mean user and
        item counts): 0.01 on the shared data sets (m 23-64), more on
        sparser data, where fewer interactions per row need a stronger
        ridge (on validation splits the best ridge of a data set thinned
        to a half, a quarter and an eighth rose about as ``1 / m``).
        iALS only.
    unobserved_weight : float > 0 or None, default=None
        iALS weight of each unobserved pair (observed pairs weigh their
        value, scaled to mean 1). None: ``10 * nnz(X) / (n_users *
        n_items)``, so all unobserved pairs together weigh ten times the
        observed ones whatever the data's density. iALS only.
    n_negatives : int or None, default=None
        Softmax and CCL: negative items shared by each batch of users (drawn
        with replacement). None: 256 (softmax), or for CCL 8% of the items
        within [800, 4096] (800 on both MovieLens sets, 3278 on Gowalla);
        at most ``n_items - 1``. More CCL negatives ranked better on the
        validation splits at a cost per epoch about proportional to their
        number (see the user guide). Softmax and CCL only.
    temperature : float > 0, default=0.5
        Softmax: scores are divided by it (lower: sharper). Softmax only.
    margin : float in (-1, 1), default=0.5
        CCL: a negative adds to the loss only while its cosine with the user
        exceeds ``margin``. CCL only.
    negative_weight : float > 0 or None, default=None
        CCL: weight of the negative term of each positive (shared by its
        ``n_negatives`` negatives). None: ``n_items / 150``, so each item as
        a uniformly drawn negative weighs 1/150 of a positive whatever the
        catalogue's size. CCL only.
    popularity_exponent : float in [-2, 2] or None, default=None
        iALS: the unobserved pairs of item ``i`` weigh ``unobserved_weight *
        q_i`` with ``q_i`` proportional to ``max(n_i, 1) **
        popularity_exponent`` (``n_i``: the item's training interactions)
        and of mean 1, so all unobserved pairs together keep their weight
        (eALS, He et al. 2016: a popular item a user skipped is a surer
        negative). 0 weighs every unobserved pair alike. None: ``0.25 *
        log10(0.01 / density)`` clipped to [0, 0.5], with ``density =
        nnz(X) / (n_users * n_items)``: 0 for data at least 1% dense, 0.3
        at Gowalla's 0.066%. In sparse data a uniform unobserved weight is
        small against a popular item's many positives, which then ranks
        high for everyone. iALS only.
    update_ratio : float in [0, 1), default=0.5
        Initial fraction of active weights pruned and regrown per update.
        0 gives static sparse training (the pattern never changes).
    update_interval : int or None, default=None
        Epochs between prune/grow updates. None: 5 for ``loss="bpr"``, 1 for
        ``loss="ials"`` (an exact solve refits grown weights at once), 4 for
        ``loss="softmax"`` and 8 for ``loss="ccl"``. Updates happen after epochs
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
        Where training epochs and growth scores run. ``"cuda"`` (every
        loss) needs numba-cuda and a GPU (``pip install sparse-rec[cuda]``).
        Growth scores and the prune threshold are computed on the GPU too,
        except ``"ccl"``'s growth scores (exact, from dense blocks of
        cosines), computed on the host from the tables brought back for
        the update.
        The rebuild and scoring stay on the CPU, and the tables travel to
        the host at each update.
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
        Another ``n_components`` than fitted raises ValueError.

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
        One entry per epoch: ``loss`` (mean per sample; iALS: the whole
        objective over ``nnz(X)``), ``nnz_user``,
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
    >>> mf = DSLMatrixFactorization(n_components=16, density=0.25, random_state=0,
    ...                             n_threads=1).fit(X)
    >>> mf.loss, mf.n_iter_, mf.n_active_ == round(0.25 * 16 * (200 + 100))
    ('ials', 14, True)
    >>> ids, scores = mf.recommend([0, 1], n=5)
    >>> ids.shape
    (2, 5)
    >>> bpr = DSLMatrixFactorization(n_components=16, density=0.25, loss="bpr",
    ...                              max_iter=10, random_state=0, n_threads=1).fit(X)
    >>> bpr.n_active_ == mf.n_active_, bool((mf.item_bias_ == 0).all())
    (True, True)
    >>> sm = DSLMatrixFactorization(n_components=16, density=0.25, loss="softmax",
    ...                             max_iter=8, random_state=0, n_threads=1).fit(X)
    >>> sm.n_active_ == mf.n_active_, sm.recommend([0], n=5)[0].shape
    (True, (1, 5))
    >>> cc = DSLMatrixFactorization(n_components=16, density=0.25, loss="ccl",
    ...                             max_iter=8, random_state=0, n_threads=1).fit(X)
    >>> cc.n_active_ == mf.n_active_, cc.recommend_for_history(X[:2], n=5)[0].shape
    (True, (2, 5))
    """

    _engine_model = "mf"
    _progress_name = "DSL-MF"
    # Saved files without these parameters predate them (sparse_rec._io).
    _absent_params = {"loss": "bpr", "popularity_exponent": 0.0}

    def __init__(
        self,
        n_components=64,
        density=0.2,
        max_iter=None,
        learning_rate=0.05,
        alpha=0.03,
        optimizer="adagrad",
        update_ratio=0.5,
        update_interval=None,
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
        loss="ials",
        regularization=None,
        unobserved_weight=None,
        n_negatives=None,
        temperature=0.5,
        popularity_exponent=None,
        margin=0.5,
        negative_weight=None,
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
        self.loss = loss
        self.regularization = regularization
        self.unobserved_weight = unobserved_weight
        self.n_negatives = n_negatives
        self.temperature = temperature
        self.popularity_exponent = popularity_exponent
        self.margin = margin
        self.negative_weight = negative_weight

    # --- model hooks of the shared fit (sparse_rec._training) -------------------
    def _engine_key(self):
        return _ENGINE_KEYS.get(self.loss, self._engine_model)

    def _param_defaults(self):
        return LOSS_DEFAULTS.get(self.loss, {})

    def _validate(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}. "
                             "Use 'ials' (exact row solves), 'bpr' (sampled pairs) or "
                             "'softmax' (sampled softmax) or 'ccl' (cosine contrastive).")
        self._validate_common(optimizer=("adagrad", "sgd"),
                              backend=backends.devices(self._engine_key()))
        if self.regularization is not None:
            check_real(self.regularization, "regularization", low=0, low_open=True,
                       hint="Use None for the data-derived default, or e.g. 0.01.")
        if self.unobserved_weight is not None:
            check_real(self.unobserved_weight, "unobserved_weight", low=0, low_open=True,
                       hint="Use None for the data-derived default.")
        check_softmax_params(self)
        if self.popularity_exponent is not None:
            expo = check_real(self.popularity_exponent, "popularity_exponent",
                              hint="Use None (by density), 0 (uniform) or e.g. 0.3.")
            if abs(expo) > 2:
                # Counts to a larger power overflow or leave a few items all the weight.
                raise ValueError(f"popularity_exponent must be in [-2, 2]; got {expo!r}. Use "
                                 "None (by density), 0 (uniform) or e.g. 0.3.")

    def _structure(self):
        return {"n_components": int(self.n_components)}

    def _fitted_structure(self):
        return {"n_components": self.user_table_.n_cols}

    def _init_params(self, n_users, n_items, seed):
        users, items = self._init_tables(n_users, n_items, int(self.n_components), seed)
        # Bias and its optimiser state side by side, as in the tables.
        return self._params(users, items, np.zeros((n_items, 2), np.float32))

    def _warm_params(self):
        # Keep the pattern and weights; optimiser state restarts.
        users, items = self.user_table_, self.item_table_
        for tab in (users, items):
            tab.add_state(1 if self.loss == "ials" else 2)
        bias_v = np.zeros((self.n_items_, 2), np.float32)
        if self.loss == "bpr":  # the other losses have no bias (a BPR model continued drops it)
            bias_v[:, 0] = self.item_bias_
        return self._params(users, items, bias_v)

    @staticmethod
    def _params(users, items, bias_v):
        return Params([users, items], ["user", "item"], user_tables=[0], item_tables=[1],
                      dense=[bias_v[:, 0]], layout=bias_v)

    def _make_engine(self, data, params):
        engine = backends.engine_class(self._engine_key(), self.backend)
        if self.loss == "ials":
            return engine(data, *params.tables, params.layout,
                          regularization=self._regularization(),
                          unobserved_weight=self._unobserved_weight(),
                          popularity_exponent=self._popularity_exponent())
        if self.loss == "softmax":
            return engine(data, *params.tables, params.layout, learning_rate=self.learning_rate,
                          alpha=self.alpha, n_negatives=self._n_negatives(),
                          temperature=self.temperature)
        if self.loss == "ccl":
            return engine(data, *params.tables, params.layout, learning_rate=self.learning_rate,
                          alpha=self.alpha, n_negatives=self._n_negatives(),
                          margin=self.margin, negative_weight=self._negative_weight())
        return engine(data, *params.tables, params.layout, learning_rate=self.learning_rate,
                      alpha=self.alpha, optimizer=self.optimizer)

    def _publish(self, params):
        self.user_table_, self.item_table_ = params.tables
        self.item_bias_ = params.layout[:, 0].copy()
        self._clear_caches()

    def _init_tables(self, n_users, n_items, d, seed):
        total = d * (n_users + n_items)
        nnz = check_budget(int(round(self.density * total)), total, n_users + n_items)
        rng = np.random.default_rng(seed)
        # One uniform pattern over both tables: split the budget as a
        # hypergeometric draw, then each table draws its rows.
        n_u = int(rng.hypergeometric(d * n_users, d * n_items, nnz)) if nnz < total else d * n_users
        scale = np.sqrt(_INIT_SCORE / (self.density * d)) if d else 0.0
        # iALS keeps no optimiser state: one slot.
        slots = 1 if self.loss == "ials" else 2
        users = SparseEmbeddingTable.random(n_users, d, n_u, n_slots=slots, scale=scale,
                                            seed=seed)
        items = SparseEmbeddingTable.random(n_items, d, nnz - n_u, n_slots=slots, scale=scale,
                                            seed=seed + 1)
        return users, items
