"""DSLLightGCN: LightGCN (He et al., SIGIR 2020) with sparse layer-0 embeddings (DSL)."""

import numbers

import numpy as np
import scipy.sparse as sp

from .. import backends
from .._recommend import check_fitted
from .._table import SparseEmbeddingTable
from .._training import DSLEstimator, Params
from .._validation import check_budget, check_positive_int
from ..backends.cpu_lightgcn import Graph, final_layer_weights
from .scoring import LightGCNModel

#: Losses with an engine, and the engine key of each (other losses plug in here).
# loss -> engine key (both losses have a CPU and a CUDA engine).
LOSSES = {"bpr": "lightgcn", "softmax": "lightgcn-softmax"}
_SLOTS = {"adam": 3, "adagrad": 2}
# Layer-0 weights start uniform with this standard deviation (the LightGCN
# code's N(0, 0.1)), whatever the density: Adam rescales steps anyway.
_INIT_STD = 0.1
# batch_size="auto": an epoch takes at most this many mini-batches (each costs
# about 2 * n_layers products over the whole graph, whatever its size), and
# none smaller than _MIN_BATCH samples. An epoch then costs a fixed number of
# graph passes, so a fit's time grows with nnz(X) only linearly.
_MAX_BATCHES = 16
_MIN_BATCH = 8192


def auto_batch_size(n_samples):
    """The mini-batch of ``batch_size="auto"`` for an epoch of ``n_samples`` samples.

    Examples
    --------
    >>> from sparse_rec._lightgcn.estimator import auto_batch_size
    >>> auto_batch_size(80_000), auto_batch_size(810_128)
    (8192, 50633)
    """
    return int(max(_MIN_BATCH, -(-int(n_samples) // _MAX_BATCHES)))


class DSLLightGCN(LightGCNModel, DSLEstimator):
    """LightGCN (BPR or sampled-softmax loss), layer-0 embeddings trained sparse (DSL).

    The model of He et al. (SIGIR 2020): one embedding table ``E0`` of
    ``(n_users + n_items) x n_components``, propagated through the
    normalised user-item graph ``A_hat = D^-1/2 A D^-1/2`` (``A`` the binary
    bipartite adjacency of ``X``), ``E(l+1) = A_hat E(l)``; the final
    embeddings are the mean of ``E0 .. E_L`` and a user's score of an item
    is the dot product of their final embeddings.

    Only ``E0`` is a parameter. It is kept as two CSR tables (users, items)
    holding exactly ``round(density * n_components * (n_users + n_items))``
    active weights under one budget; every ``update_interval`` epochs the
    ``rho_t`` fraction of smallest-magnitude weights is pruned and as many
    inactive coordinates with the largest loss gradient (through the
    propagation) are grown, with ``rho_t`` decaying from ``update_ratio`` on
    ``schedule``.

    Each epoch draws ``nnz(X)`` samples (a positive interaction uniformly at
    random, weighted by its value scaled to mean 1; BPR adds a negative item
    drawn uniformly among those the user did not interact with, the softmax
    loss negatives shared by the mini-batch) in mini-batches of
    ``batch_size``. Every mini-batch propagates the current
    ``E0`` through the whole graph (or, with ``propagate_every > 1``, reuses
    the last propagated embeddings) and takes the exact gradient of the
    batch's mean loss back through it (``A_hat`` is symmetric: ``dL/dE0 =
    sum_l A_hat^l G / (L + 1)``), plus an L2 penalty ``alpha`` on the batch's
    ``E0`` rows, then one optimiser step of every active weight.

    Parameters
    ----------
    n_components : int, default=64
        Columns of the layer-0 tables.
    n_layers : int, default=3
        Propagation layers ``L`` (0 gives matrix factorisation without
        biases).
    layer_weights : None or array-like of ``n_layers + 1`` floats, default=None
        Weights ``w_0 .. w_L`` of the layers in the final embeddings,
        ``F = sum_l w_l E_l``, normalised to sum 1 (the fitted ones are
        ``layer_weights_``). None is LightGCN's mean of the layers. They must
        be finite and non-negative with ``w_L > 0`` (a zero last weight
        is a model with fewer layers).
    density : float in (0, 1], default=0.2
        Fraction of the ``n_components * (n_users + n_items)`` layer-0
        weights that are active. 1.0 trains a dense model (no prune/grow).
    loss : {"bpr", "softmax"}, default="bpr"
        Training loss on the final embeddings. ``"bpr"``: one uniform
        negative per sample, ``softplus(-F_u . (F_i - F_j))``.
        ``"softmax"``: sampled softmax over cosine similarities (as SimpleX
        and the SSM loss): the mini-batch shares ``n_negatives`` items drawn
        uniformly, logits are ``cos(F_u, F_i) / temperature`` and, for the
        negatives, the same minus ``log(n_negatives / n_items)`` (the log-q
        correction of uniform sampling), and a sample's loss is
        ``logsumexp(logits) - logit of its positive`` (a negative equal to
        the sample's positive is left out). A softmax model ranks by
        ``F_u . F_i / |F_i|`` (the cosine's order for each user).
    n_negatives : int, default=256
        Negatives shared by a mini-batch (``loss="softmax"`` only).
    temperature : float, default=0.2
        Temperature of the cosine logits (``loss="softmax"`` only).
    optimizer : {"adam", "adagrad"}, default="adam"
        Step rule; its state is stored on the tables' pattern (moves with
        prune/grow, grown weights start at zero state) and dropped after
        ``fit``.
    learning_rate : float, default=0.03
        Step size. Large for LightGCN (its code uses 0.001 with batches of
        2048) because the batches are large.
    alpha : float, default=1e-3
        L2 penalty on the layer-0 rows of each mini-batch (the LightGCN
        code's weight decay, 1e-4 there): ``alpha / 2 * sum ||E0_row||^2``
        over the batch's user, positive and negative rows, over the batch
        size.
    batch_size : int or "auto", default="auto"
        Samples per mini-batch. Each mini-batch costs two propagations over
        the whole graph whatever its size, so large batches keep an epoch
        cheap on a few cores. ``"auto"`` follows the data: ``max(8192, ceil(nnz(X)
        / 16))``, at most 16 mini-batches an epoch (8192 on MovieLens 100K,
        50633 on Gowalla's 810k interactions).
    propagate_every : int, default=1
        Mini-batches that share one forward propagation: the final
        embeddings are recomputed at the first mini-batch of every epoch and
        then every ``propagate_every`` mini-batches; the batches in between
        read them up to ``propagate_every - 1`` steps stale, with the
        backward exact for those embeddings (the propagation is linear).
        A forward costs about as much as the backward, so 2 saves about a
        quarter of an epoch's products and large values up to half.
    max_iter : int, default=60
        Epochs.
    update_ratio : float in [0, 1), default=0.5
        Initial fraction of active weights pruned and regrown per update.
        0 gives static sparse training.
    update_interval : int, default=5
        Epochs between prune/grow updates (never after the last epoch).
    schedule : {"cosine", "linear", "constant"}, default="cosine"
    grow : {"gradient", "random"}, default="gradient"
    budget : {"global", "table"}, default="global"
        One budget over users, items and dimensions (as the DSL authors'
        code masks the one embedding table), or a fixed count per table.
    random_state : int, numpy Generator or None, default=None
    n_threads : int or None, default=None
        Numba threads during ``fit`` and scoring (None: all). Products are
        row-parallel and gradients scattered in sample order, so a fit does
        not depend on the number of threads.
    backend : {"cpu", "cuda"}, default="cpu"
        Where training runs. ``"cuda"`` (numba-cuda and a GPU, ``pip install
        sparse-rec[cuda]``) keeps the graph and both tables on the device
        and propagates there (either loss); growth scores are computed and
        selected on the device, the prune threshold too; the rebuild and
        scoring run on the CPU.
    verbose : int, default=0
    callbacks : list of callable or None, default=None
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of each user's interactions (not in
        the training graph), score NDCG@10 on them after every epoch and keep
        the best epoch's weights.
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=5
    tol : float, default=1e-4
    warm_start : bool, default=False
        Refit from the current tables when ``X`` has the fitted shape
        (optimiser state from zero); another ``n_components`` or
        ``n_layers`` raises ValueError.

    Attributes
    ----------
    user_table_, item_table_ : SparseEmbeddingTable
        Layer-0 embeddings (the parameters).
    user_factors_, item_factors_ : scipy.sparse.csr_matrix
        The same as CSR matrices.
    user_embeddings_, item_embeddings_ : ndarray of float32
        Final embeddings (propagated over ``seen_``).
    seen_ : scipy.sparse.csr_matrix
        ``X``: the graph a fitted model propagates over, and the items
        ``recommend`` filters.
    folded_users_ : ndarray of int64
        Users added or refitted by :meth:`partial_fit_users` (empty after
        ``fit``): their final embedding is the fold-in of their ``seen_`` row.
    folded_graph_ : scipy.sparse.csr_matrix
        Their rows of the graph the model propagates over (the fitted
        history of a refitted user, empty for an added one), so that the
        item embeddings stay the fitted ones.
    batch_size_ : int
        The mini-batch the fit used (``batch_size`` or its data-following
        value).
    n_layers_ : int
        The propagation layers the model was fitted with (scoring uses them).
    layer_weights_ : ndarray of float32
        The layer weights the model was fitted with, summing to 1 (scoring
        and new users use them).
    unit_items_ : bool
        Whether scoring reads unit-length final item embeddings (models
        trained with ``loss="softmax"``, on cosines).
    n_iter_ : int
    history_ : list of dict
        Per epoch as in :class:`~sparse_rec.DSLMatrixFactorization`
        (``loss`` is the mean weighted BPR loss, without the L2 term).
    n_active_ : int
        Active layer-0 weights (the budget).
    nbytes_ : int
        Bytes a model file needs to recommend: the layer-0 tables (indptr,
        indices, weights) and the graph's pattern (``seen_``'s indptr and
        indices, and its values when they are not all 1).
    dense_nbytes_ : int
        The same with dense float32 layer-0 tables.

    Notes
    -----
    Serving. The propagated embeddings are dense and depend on the graph, so
    a model file holds ``E0`` and ``seen_``; on first use after a fit or a
    load the normalised graph (``R`` and ``R^T``: 8 bytes per interaction
    each, plus row pointers) and the final embeddings (``4 * n_components *
    (n_users + 2 * n_items)`` bytes: users, items and the items' summed
    lower layers for new users) are built once and kept. Scoring is then a
    dense dot product.

    New users (:meth:`recommend_for_history`): their final embedding is one
    propagation step of their history over the fitted items' layers, with a
    zero layer-0 row (see ``_fold_in``); nothing is trained.

    Examples
    --------
    >>> from sparse_rec import DSLLightGCN
    >>> from sparse_rec.datasets import make_interactions
    >>> X = make_interactions(200, 100, 3000, random_state=0)
    >>> gcn = DSLLightGCN(n_components=16, density=0.25, max_iter=4, batch_size=1024,
    ...                   random_state=0, n_threads=1).fit(X)
    >>> gcn.n_active_ == round(0.25 * 16 * (200 + 100))
    True
    >>> ids, scores = gcn.recommend([0, 1], n=5)
    >>> ids.shape
    (2, 5)
    >>> soft = DSLLightGCN(n_components=16, density=0.25, loss="softmax", n_negatives=32,
    ...                    max_iter=4, batch_size=1024, random_state=0, n_threads=1).fit(X)
    >>> soft.unit_items_, soft.recommend([0, 1], n=5)[0].shape
    (True, (2, 5))
    """

    _progress_name = "DSL-LightGCN"
    # Model files store row counts and indices in the narrowest exact type
    # (sparse_rec._io): the graph is a large part of a LightGCN file.
    _narrow_indices = True

    def __init__(
        self,
        n_components=64,
        n_layers=3,
        layer_weights=None,
        density=0.2,
        loss="bpr",
        n_negatives=256,
        temperature=0.2,
        optimizer="adam",
        learning_rate=0.03,
        alpha=1e-3,
        batch_size="auto",
        propagate_every=1,
        max_iter=60,
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
        self.n_layers = n_layers
        self.layer_weights = layer_weights
        self.density = density
        self.loss = loss
        self.n_negatives = n_negatives
        self.temperature = temperature
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.batch_size = batch_size
        self.propagate_every = propagate_every
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

    # --- model hooks of the shared fit (sparse_rec._training) -------------------
    def _engine_key(self):
        return LOSSES.get(self.loss, "lightgcn")

    def _validate(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}; got {self.loss!r}.")
        self._validate_common(optimizer=tuple(_SLOTS),
                              backend=backends.devices(self._engine_key()))
        L = self.n_layers
        if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 0:
            raise ValueError(f"n_layers must be an integer >= 0; got {L!r}. Use for example "
                             "n_layers=3 (the LightGCN paper's).")
        self._normalised_layer_weights()
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            check_positive_int(self.batch_size, "batch_size",
                               hint='Use for example 8192, or "auto" to follow the data.')
        check_positive_int(self.propagate_every, "propagate_every",
                           hint="Use 1 (a forward per mini-batch) or for example 2.")
        check_positive_int(self.n_negatives, "n_negatives", hint="Use for example 256.")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not (0 < t < np.inf):
            raise ValueError(f"temperature must be a positive finite number; got {t!r}. Use "
                             "for example temperature=0.2.")

    def _normalised_layer_weights(self):
        """``layer_weights`` checked and normalised to sum 1 (float32), or None."""
        w, L = self.layer_weights, int(self.n_layers)
        if w is None:
            return None
        hint = (f"Use None (the mean of the layers) or {L + 1} finite non-negative numbers, "
                f"one per layer 0..{L}, the last positive, for example "
                f"{list(range(1, L + 2))}.")
        try:
            arr = np.asarray(w, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if (arr is None or arr.ndim != 1 or len(arr) != L + 1 or not np.isfinite(arr).all()
                or (arr < 0).any() or arr[-1] <= 0):
            raise ValueError(f"layer_weights must hold n_layers + 1 = {L + 1} finite "
                             f"non-negative weights with a positive last one; got {w!r}. "
                             + hint)
        return (arr / arr.sum()).astype(np.float32)

    def _structure(self):
        return {"n_components": int(self.n_components), "n_layers": int(self.n_layers)}

    def _fitted_structure(self):
        return {"n_components": self.user_table_.n_cols, "n_layers": int(self.n_layers_)}

    def _init_params(self, n_users, n_items, seed):
        d = int(self.n_components)
        total = d * (n_users + n_items)
        nnz = check_budget(int(round(self.density * total)), total, n_users + n_items)
        rng = np.random.default_rng(seed)
        # One uniform pattern over both tables (as DSL-MF): a hypergeometric
        # split of the budget, then each table draws its rows.
        n_u = int(rng.hypergeometric(d * n_users, d * n_items, nnz)) if nnz < total else d * n_users
        slots, scale = _SLOTS[self.optimizer], _INIT_STD * np.sqrt(3.0)
        users = SparseEmbeddingTable.random(n_users, d, n_u, n_slots=slots, scale=scale, seed=seed)
        items = SparseEmbeddingTable.random(n_items, d, nnz - n_u, n_slots=slots, scale=scale,
                                            seed=seed + 1)
        return self._params(users, items)

    def _warm_params(self):
        users, items = self.user_table_, self.item_table_
        for tab in (users, items):
            tab.add_state(_SLOTS[self.optimizer])
        return self._params(users, items)

    @staticmethod
    def _params(users, items):
        return Params([users, items], ["user", "item"], user_tables=[0], item_tables=[1])

    def _make_engine(self, data, params):
        graph = Graph.from_pattern(data.x_indptr, data.x_indices, params.tables[1].n_rows)
        # Mid-fit scoring (early stopping, callbacks) propagates over the
        # training split, never over held-out interactions.
        self._train_graph = graph
        # The softmax loss ranks by cosine: scoring reads unit item embeddings.
        self.unit_items_ = self.loss == "softmax"
        self._clear_caches()
        self.batch_size_ = (auto_batch_size(data.nnz) if self.batch_size == "auto"
                            else int(self.batch_size))
        engine = backends.engine_class(self._engine_key(), self.backend)
        return engine(data, *params.tables, graph, n_layers=int(self.n_layers),
                      learning_rate=self.learning_rate, alpha=self.alpha,
                      optimizer=self.optimizer, batch_size=self.batch_size_, loss=self.loss,
                      n_negatives=self.n_negatives, temperature=self.temperature,
                      propagate_every=int(self.propagate_every),
                      layer_weights=self._normalised_layer_weights())

    def _publish(self, params):
        self.user_table_, self.item_table_ = params.tables
        self.n_layers_ = int(self.n_layers)
        self.layer_weights_ = final_layer_weights(self.n_layers_,
                                                  self._normalised_layer_weights())
        # A fit propagates over all of seen_: no user is folded in.
        self.folded_users_ = np.zeros(0, np.int64)
        self.folded_graph_ = sp.csr_matrix((0, self.item_table_.n_rows), dtype=np.float32)
        self._clear_caches()

    def _account(self, params):
        super()._account(params)
        d = self.user_table_.n_cols
        graph = self._graph_nbytes()
        tabs = self._stored_nbytes(self.user_table_) + self._stored_nbytes(self.item_table_)
        self.nbytes_ = int(tabs + graph)
        self.dense_nbytes_ = int(4 * d * (self.user_table_.n_rows + self.item_table_.n_rows)
                                 + graph)

    def _graph_nbytes(self):
        """Bytes the file stores for the graph: ``seen_`` (and the folded users' rows)."""
        out = self._stored_nbytes(self.seen_)
        users, G = self._folded()
        if G is not None:
            out += int(users.nbytes) + self._stored_nbytes(G)
        return out

    # --- workflow hooks (sparse_rec._workflows) --------------------------------
    def _partial_user_tables(self, X):
        # No layer-0 row is solved: partial_fit_users folds users in (below).
        return {}

    def _partial_item_rows(self, items, X_cols):
        raise NotImplementedError(
            "DSLLightGCN cannot add or refit items without a refit: an item's interactions are "
            "edges of the graph every final embedding is propagated over, so they would change "
            "the degrees and embeddings of its users and, through them, of other items; no "
            "solve of item rows against a fixed user side is defined. Users can be added with "
            "partial_fit_users; refit with the new items."
        )

    def partial_fit_users(self, users, X_rows, *, ids=None):
        """Add users and refit users' histories by fold-in, without training.

        A folded user's final embedding is one propagation step of its
        history over the fitted items' layers, exactly as
        :meth:`recommend_for_history` computes it (``_fold_in``; its own
        layer-0 term is dropped). The graph the items are propagated over
        does not change: an added user has no edges in it and an empty
        layer-0 row, a refitted user keeps its fitted edges and layer-0 row
        (they shape the item embeddings). So item embeddings, every other
        user and ``n_active_`` are unchanged; ``seen_`` takes the new
        histories (what ``recommend`` filters and ``explain`` reads) and the
        fitted edges of refitted users are kept in ``folded_graph_``
        (``folded_users_`` lists the folded users), counted in ``nbytes_``
        and saved with the model.

        Parameters
        ----------
        users : array-like of int
            User indices, existing (< ``n_users_``) or new (``n_users_``,
            ``n_users_ + 1``, ...).
        X_rows : sparse matrix or array-like of shape (len(users), ``n_items_``)
            The whole history of each user.
        ids : array-like, optional
            Raw id of each entry of ``users``; required for new users when
            the model keeps ``user_ids_``.

        Returns
        -------
        self

        Examples
        --------
        >>> import numpy as np
        >>> from sparse_rec import DSLLightGCN
        >>> from sparse_rec.datasets import make_interactions
        >>> X = make_interactions(60, 40, 600, random_state=0)
        >>> gcn = DSLLightGCN(n_components=8, max_iter=2, batch_size=256, random_state=0,
        ...                   n_threads=1).fit(X[:50])
        >>> want = gcn.recommend_for_history(X[50:], n=3)[0]
        >>> _ = gcn.partial_fit_users(np.arange(50, 60), X[50:])
        >>> bool(np.array_equal(gcn.recommend(np.arange(50, 60), n=3)[0], want))
        True
        """
        check_fitted(self)
        n_old, old_seen = self.n_users_, self.seen_
        was, was_rows = self._folded()
        super().partial_fit_users(users, X_rows, ids=ids)
        users = np.asarray(users, np.int64).reshape(-1)
        tab, d = self.user_table_, self.user_table_.n_cols
        if self.n_users_ > n_old:
            # Added users: empty layer-0 rows (nothing of theirs enters the graph).
            indptr = np.concatenate([tab.indptr, np.full(self.n_users_ - n_old, tab.indptr[-1])])
            self.user_table_ = SparseEmbeddingTable(
                indptr.astype(np.int64), tab.indices_buf[:tab.nnz].copy(),
                np.ascontiguousarray(tab.values_buf[:tab.nnz, :1]), d)
        # The graph rows of the folded users: kept from before, else the
        # fitted seen_ row of a user folded for the first time, else none.
        folded = np.union1d(was, users)
        src = np.full(len(folded), -1, np.int64)
        old = folded < n_old
        src[old] = len(was) + folded[old]
        src[np.isin(folded, was)] = np.searchsorted(was, folded[np.isin(folded, was)])
        pool = sp.vstack([sp.csr_matrix((0, self.n_items_), dtype=np.float32)
                          if was_rows is None else sp.csr_matrix(was_rows, dtype=np.float32),
                          sp.csr_matrix(old_seen, dtype=np.float32),
                          sp.csr_matrix((1, self.n_items_), dtype=np.float32)]).tocsr()
        src[src < 0] = pool.shape[0] - 1
        G = pool[src]
        G.data[:] = 1.0
        G.sort_indices()
        self.folded_users_, self.folded_graph_ = folded.astype(np.int64), G
        graph = self._graph_nbytes()
        tabs = self._stored_nbytes(self.user_table_) + self._stored_nbytes(self.item_table_)
        self.nbytes_ = int(tabs + graph)
        self.dense_nbytes_ = int(4 * d * (self.n_users_ + self.n_items_) + graph)
        self._clear_caches()
        return self

    def fit(self, X, y=None, exclude=None):
        try:
            return super().fit(X, y, exclude)
        finally:
            # After fit the model propagates over seen_ (as a loaded one does).
            self.__dict__.pop("_train_graph", None)
            self._clear_caches()
