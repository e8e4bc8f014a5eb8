"""DSLMultVAE: the variational autoencoder of Liang et al. (2018), trained sparse (DSL)."""


import numpy as np

from .. import backends
from .._base import _VALIDATION_K
from .._table import SparseEmbeddingTable
from .._training import DSLEstimator, Params
from .._validation import (
    check_budget,
    check_fraction,
    check_layer_sizes,
    check_positive_int,
    check_real,
)
from ..backends.vae_cpu import Layout, VAEState
from .scoring import VAEModel

#: Names of the sparse tables, in PruneGrow order.
TABLES = ("encoder", "decoder")
#: ``batch_size="auto"``: Liang et al.'s batch, and the fewest Adam updates an epoch.
AUTO_BATCH, AUTO_UPDATES = 500, 4


def auto_batch_size(n_users):
    """The batch ``batch_size="auto"`` trains ``n_users`` users (those with an
    interaction) with: ``min(500, ceil(n_users / 4))``.

    Liang et al.'s 500 users a batch on data sets of 100,000 users and more
    (hundreds of Adam updates an epoch), but at least four updates an epoch
    on small ones, where 500 would make every epoch a single update.

    Examples
    --------
    >>> auto_batch_size(100_000), auto_batch_size(482), auto_batch_size(3)
    (500, 121, 1)
    """
    return int(max(1, min(AUTO_BATCH, -(-int(n_users) // AUTO_UPDATES))))


#: ``alpha="auto"``: the precision of a Gaussian prior on the weights, per user.
AUTO_PRIOR = 0.4


def auto_alpha(n_users):
    """The L2 penalty ``alpha="auto"`` trains ``n_users`` users (those with an
    interaction) with: ``0.4 / n_users``.

    The loss is a mean over users, so a penalty ``alpha`` on it is a Gaussian
    prior of precision ``alpha * n_users`` on the whole data's loss; keeping
    that prior fixed makes the penalty fade as the data grows (1e-3 on the
    built-in set's 386 validation-training users, 1.7e-5 on Gowalla's 23,886),
    so it tames the small sets the 600-unit layers overfit and leaves large
    ones as the paper trains them.

    Examples
    --------
    >>> auto_alpha(400), auto_alpha(40_000)
    (0.001, 1e-05)
    """
    return AUTO_PRIOR / max(1, int(n_users))


# Biases start N(0, 0.001), as in the Mult-VAE code.
_BIAS_STD = 0.001


class DSLMultVAE(VAEModel, DSLEstimator):
    """Mult-VAE (variational autoencoder for collaborative filtering), trained sparse (DSL).

    The model of Liang et al. (WWW 2018): a user's history ``x`` (a row of
    ``X``), L2-normalised and with ``dropout`` applied during training,
    goes through an encoder ``n_items -> hidden_layer_sizes -> (mu,
    logvar)`` (tanh layers, a Gaussian of ``n_components`` dimensions) and a
    decoder ``n_components -> reversed(hidden_layer_sizes) -> n_items``
    logits. Training maximises the multinomial log-likelihood of ``x``
    under the softmax of the logits minus ``beta_t`` times the KL
    divergence from the standard normal prior, with ``z = mu + sigma *
    eps``; ``beta_t = min(beta, updates / anneal_steps)`` grows with each
    Adam update. Scoring uses ``z = mu``, so a user's scores are a pure
    function of their history: :meth:`recommend_for_history`,
    :meth:`decision_function` and :meth:`predict` run one forward pass, no
    fold-in optimisation, and :meth:`recommend` scores a training user from
    their own row of ``X``.

    The two ``n_items x hidden_layer_sizes[0]`` matrices (the encoder's
    input layer and the decoder's output layer), nearly all the
    parameters, are CSR tables holding only their active weights, with
    Adam's two moments stored on the same pattern. A budget of
    ``round(density * 2 * n_items * hidden_layer_sizes[0])`` active weights
    covers both (half each by default); it is kept exactly after every
    epoch while every
    ``update_interval`` epochs the ``rho_t`` fraction of smallest-magnitude
    weights is pruned and as many inactive coordinates with the largest
    loss gradient are grown (at zero weight and zero optimiser state). The
    input layer reads only the rows of a history's items; the decoder
    computes a batch's logits over all items as a sparse-dense product.
    **Dense** (outside the budget, float32): every bias, the Gaussian layer
    ``hidden[-1] -> 2 * n_components``, the decoder's first layer
    ``n_components -> hidden[-1]`` and any layer between hidden layers
    (with the default sizes: ``361,600 + n_items`` numbers; on MovieLens
    100K 363,282 against 2,018,400 in the two tables).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(600,)
        Widths of the encoder's tanh layers (the decoder mirrors them).
    n_components : int, default=200
        Size of the latent Gaussian.
    density : float in (0, 1], default=0.2
        Fraction of the two item tables' weights that are active. 1.0
        trains a dense model (no prune/grow).
    dropout : float in [0, 1), default=0.5
        Fraction of the (normalised) input entries dropped during training.
    beta : float >= 0, default=0.2
        Final weight of the KL term.
    anneal_steps : int >= 0, default=200000
        Updates over which the KL weight rises at slope ``1 / anneal_steps``
        until it reaches ``beta`` (the Mult-VAE schedule; 0: ``beta`` from
        the first update).
    learning_rate : float, default=1e-3
        Adam's step size of the dense parameters; the two tables take
        ``learning_rate / sqrt(density)``. Their weights start that much
        larger (Glorot for the weights a unit has), so the relative step is
        the dense model's: on MovieLens 100K (validation users, 100 epochs)
        density 0.2 reaches Recall@20 0.378 (dense 0.378) against 0.360
        with the unscaled step.
    alpha : float >= 0 or "auto", default=0.0
        L2 penalty added to the gradient of every weight (not biases; the
        loss is the mean over users). ``"auto"`` is ``0.4 / n_users`` over
        the users with an interaction: a fixed Gaussian prior on the
        weights, strong on small data, fading on large (``alpha_`` is the
        value fitted). On validation users of the built-in set (386
        training users, density 0.2, 60 epochs) Recall@20 is 0.274 with 0
        and 0.285 with 1e-3 (seeds 0-2), 0.271 with 3e-3 (seeds 0, 1); on
        MovieLens 100K's (600 users) 0.371 with 0 and 0.379 with 6.7e-4;
        but on Gowalla's (19,109 users, sampled softmax) it loses about 4%
        against 0 (0.102 and 0.107), so 0 stays the default: try
        ``"auto"`` on small data sets (a few thousand users or fewer).
    batch_size : int or "auto", default="auto"
        Users per Adam update. ``"auto"`` is ``min(500, ceil(n_users /
        4))`` over the users with an interaction:
        the paper's 500 on large data, but at least four updates an epoch on
        small data. On validation users of the built-in set (386 training
        users, density 0.2, 60 epochs, seeds 0 and 1) Recall@20 is 0.232 with
        500 (one update an epoch), 0.258 with 50, 0.296 with 100 and 0.282
        with 200.
    n_sampled : int or None, default=None
        None trains with the full softmax over all items. An int trains
        with a sampled softmax: each batch's likelihood is normalised over
        the batch's positives and ``n_sampled`` items drawn (with
        replacement, by training frequency plus one) and shared by the
        batch, with the log-q correction (each candidate's logit minus the
        log of its probability of being a candidate), so the decoder's
        cost per batch follows the candidates, not ``n_items``. Growth
        gradients and scoring stay full. On the CPU and on
        ``backend="cuda"``. See the user guide for what it costs in
        quality.
    max_iter : int, default=50
        Epochs (each visits every user with an interaction once).
    update_ratio : float in [0, 1), default=0.2
        Initial fraction of active weights pruned and regrown per update;
        0 gives static sparse training.
    update_interval : int, default=5
        Epochs between prune/grow updates (never after the last epoch).
    schedule : {"cosine", "linear", "constant"}, default="cosine"
        How the update ratio decays over the run (to 0.005).
    grow : {"gradient", "random"}, default="gradient"
        Grow where the loss gradient is largest, or at random (ablation).
    budget : {"table", "global"}, default="table"
        Each table keeps half the budget, or one budget over both (the
        split is learned). On validation users of the built-in MovieLens
        set (100 epochs, density 0.2) ``"global"`` moves weights into the
        encoder's rare-item rows and loses: Recall@20 0.223 against 0.266
        per table (dense 0.265); on MovieLens 100K both are within 1%.
    random_state : int, numpy Generator or None, default=None
        Seed of the pattern, the initial weights, the order, the dropout
        and the Gaussian noise.
    n_threads : int or None, default=None
        Numba threads during ``fit`` and scoring (None: all); the small
        dense layers use NumPy's BLAS. The kernels are race-free; with 1
        thread and a fixed ``random_state`` a fit is bitwise reproducible.
    backend : {"cpu", "cuda"}, default="cpu"
        Where training runs. ``"cuda"`` (numba-cuda and a GPU, ``pip install
        sparse-rec[cuda]``) keeps the two item tables and each batch's
        logits (full, or with ``n_sampled`` the candidates') on the device,
        computes and selects growth scores and finds the prune threshold
        there; the small dense layers, the rebuild and scoring run on the
        CPU.
    verbose : int, default=0
        1 shows a progress bar with the loss.
    callbacks : list of callable, optional
        Each is called as ``cb(estimator, epoch_row)`` after every epoch;
        returning True stops training.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of each user's interactions, score
        NDCG@10 on them (from the rest of the row) after every epoch and stop
        after ``n_iter_no_change`` epochs without an improvement of ``tol``,
        keeping the best epoch's weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
    tol : float, default=1e-4
    warm_start : bool, default=False
        Refitting on data of the same shape continues from the fitted
        weights and pattern (Adam's state restarts at zero, the KL annealing
        continues); another ``n_components`` or ``hidden_layer_sizes`` than
        fitted raises ValueError. Data of another shape starts a new model.

    Attributes
    ----------
    encoder_table_, decoder_table_ : SparseEmbeddingTable
        The input and output layers, one row per item, ``hidden_layer_sizes[0]``
        columns (the decoder's rows are the items' output embeddings).
    dense_params_ : ndarray of float32
        Every dense parameter in one vector; :attr:`dense_layers_` gives
        them by name: ``b_e`` (first encoder bias), ``enc_W{l}, enc_b{l}``,
        ``q_W, q_b`` (to ``[mu, logvar]``), ``dec_W{l}, dec_b{l}`` (from
        ``z`` on), ``b_d`` (item biases); weights are ``(n_in, n_out)``.
    layer_sizes_ : ndarray of int64
        The hidden layer widths fitted.
    n_components_ : int
    n_updates_ : int
        Adam updates run (what the KL annealing has reached).
    alpha_ : float
        The L2 penalty trained with (``alpha``, or what ``"auto"`` gave).
    batch_size_ : int
        The batch size trained with (``batch_size``, or what ``"auto"`` gave).
    n_iter_ : int
    history_ : list of dict
        One entry per epoch: ``epoch``, ``loss`` (negative log-likelihood
        plus the annealed KL, per user), ``nnz_encoder``, ``nnz_decoder``,
        ``nnz``, ``empty_users`` (0: users have no rows), ``empty_items``
        (items with no active weight in either table), ``pruned``,
        ``grown``, ``update_ratio``, ``coverage``, ``seconds`` and
        ``prune_grow_seconds``.
    n_active_ : int
        Active sparse weights (the budget).
    nbytes_ : int
        Bytes of the stored model: tables (indptr, indices, weights) and the
        dense parameters.
    dense_nbytes_ : int
        Bytes of the same model with dense float32 matrices.

    Notes
    -----
    Weights start Glorot-uniform for the weights a unit actually has (with
    a fraction ``rho`` active, fan-in and fan-out shrink by ``rho``),
    biases ``N(0, 0.001)``; the initial pattern of each table is uniformly
    random, half the budget each. The growth gradient of a table is the
    dense gradient of the mean loss without dropout and with ``z = mu``:
    the decoder's from up to 1024 random users, the encoder's from those
    plus one random interactor of every item (so every item row with an
    interaction gets a gradient), computed once per update and served in
    bounded row chunks.

    Examples
    --------
    >>> from sparse_rec import DSLMultVAE
    >>> from sparse_rec.datasets import make_interactions
    >>> X = make_interactions(200, 100, 3000, random_state=0)
    >>> vae = DSLMultVAE(hidden_layer_sizes=(32,), n_components=8, density=0.25, max_iter=4,
    ...                  update_interval=2, random_state=0, n_threads=1).fit(X)
    >>> vae.n_active_ == round(0.25 * 2 * 100 * 32)
    True
    >>> ids, scores = vae.recommend([0, 1], n=5)
    >>> ids.shape
    (2, 5)
    >>> bool((vae.recommend_for_history(X[[0, 1]], n=5)[0] == ids).all())
    True
    >>> _ = vae.partial_fit_users([200], X[[0]])  # a new user is their history
    >>> bool((vae.recommend([200], n=5)[0] == ids[:1]).all())
    True
    """

    _engine_model = "vae"
    _progress_name = "DSL-MultVAE"

    def __init__(
        self,
        hidden_layer_sizes=(600,),
        n_components=200,
        density=0.2,
        dropout=0.5,
        beta=0.2,
        anneal_steps=200000,
        learning_rate=1e-3,
        alpha=0.0,
        batch_size="auto",
        n_sampled=None,
        max_iter=50,
        update_ratio=0.2,
        update_interval=5,
        schedule="cosine",
        grow="gradient",
        budget="table",
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.n_components = n_components
        self.density = density
        self.dropout = dropout
        self.beta = beta
        self.anneal_steps = anneal_steps
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.batch_size = batch_size
        self.n_sampled = n_sampled
        self.max_iter = max_iter
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

    # --- parameters ------------------------------------------------------------
    def _check_hidden(self):
        return check_layer_sizes(self.hidden_layer_sizes, what="encoder's layers", example="(600,)")

    def _validate(self):
        self._validate_common(backend=backends.devices(self._engine_key()))
        hidden = self._check_hidden()
        check_fraction(self.dropout, "dropout", low_open=False, high_closed=False,
                       hint="It is the fraction of input entries dropped; use e.g. 0.5.")
        check_real(self.beta, "beta", low=0, hint="Use for example beta=0.2.")
        check_positive_int(self.anneal_steps, "anneal_steps", minimum=0,
                           hint="Use for example 200000, or 0 for a constant KL weight.")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            check_positive_int(self.batch_size, "batch_size",
                               hint='Use for example 500, or "auto".')
        if self.n_sampled is not None:
            check_positive_int(self.n_sampled, "n_sampled",
                               hint="Use None for the full softmax, or e.g. 2000 sampled items.")
        return hidden

    # --- model hooks of the shared fit (sparse_rec._training) -------------------
    def _structure(self):
        return {"n_components": int(self.n_components),
                "hidden_layer_sizes": self._check_hidden()}

    def _fitted_structure(self):
        return {"n_components": int(self.n_components_),
                "hidden_layer_sizes": tuple(int(h) for h in self.layer_sizes_)}

    def _init_params(self, n_users, n_items, seed):
        hidden = self._check_hidden()
        d = int(self.n_components)
        rng = np.random.default_rng(seed)
        h0 = hidden[0]
        size = n_items * h0
        nnz = check_budget(int(round(self.density * 2 * size)), 2 * size, 2 * n_items)
        counts = (nnz // 2 + nnz % 2, nnz // 2)
        tables = []
        for t, k in enumerate(counts):
            rho = max(k / size, 1.0 / size)
            tables.append(SparseEmbeddingTable.random(
                n_items, h0, int(k), n_slots=3, scale=np.sqrt(6.0 / (rho * (n_items + h0))),
                seed=seed + 7 * t + 1))
        layout = Layout(n_items, hidden, d)
        dense = np.zeros((3, layout.size), np.float32)
        for name, w in layout.views(dense[0]).items():
            if "_W" in name:
                lim = np.sqrt(6.0 / (w.shape[0] + w.shape[1]))
                w[:] = rng.uniform(-lim, lim, w.shape)
            else:
                w[:] = rng.normal(0.0, _BIAS_STD, w.shape)
        return self._params(tables, VAEState(layout, dense))

    def _warm_params(self):
        # Keep the patterns and weights; Adam's state restarts, the annealing continues.
        tables = [self.encoder_table_, self.decoder_table_]
        for tab in tables:
            tab.add_state(3)
        dense = np.zeros((3, self.dense_params_.shape[0]), np.float32)
        dense[0] = self.dense_params_
        return self._params(tables, VAEState(self._layout(), dense, self.n_updates_))

    @staticmethod
    def _params(tables, state):
        return Params(list(tables), list(TABLES), user_tables=[], item_tables=[0, 1],
                      dense=[state.dense[0]], layout=state)

    def _make_engine(self, data, params):
        engine = backends.engine_class(self._engine_key(), self.backend)
        n_users = np.count_nonzero(np.diff(data.x_indptr))
        self.batch_size_ = (auto_batch_size(n_users) if isinstance(self.batch_size, str)
                            else int(self.batch_size))
        self.alpha_ = auto_alpha(n_users) if isinstance(self.alpha, str) else float(self.alpha)
        return engine(data, params.tables[0], params.tables[1], params.layout,
                      learning_rate=self.learning_rate, alpha=self.alpha_,
                      dropout=self.dropout, beta=self.beta, anneal_steps=self.anneal_steps,
                      batch_size=self.batch_size_, n_sampled=self.n_sampled,
                      table_learning_rate=self.learning_rate / np.sqrt(self.density))

    def _publish(self, params):
        """Expose the current weights as fitted attributes."""
        state = params.layout
        self.encoder_table_, self.decoder_table_ = params.tables
        self.dense_params_ = state.dense[0].copy()
        self.layer_sizes_ = np.array(state.layout.hidden, np.int64)
        self.n_components_ = state.layout.d
        self.n_updates_ = state.n_updates
        self._clear_caches()

    def _validation_score(self, X_fit, X_val, k=_VALIDATION_K):
        # The model reads a user's input from their row: score from the
        # training part only, never from the held-out items themselves.
        seen = self.seen_
        self.seen_ = X_fit
        try:
            return super()._validation_score(X_fit, X_val, k)
        finally:
            self.seen_ = seen
