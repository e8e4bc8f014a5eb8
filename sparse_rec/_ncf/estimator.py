"""DSLNCF: neural collaborative filtering (NeuMF) trained sparse end to end."""


import numpy as np

from .. import backends
from .._table import SparseEmbeddingTable
from .._training import DSLEstimator, Params
from .._validation import check_budget, check_layer_sizes
from .scoring import NCFModel, _Net

#: Names of the sparse tables, in PruneGrow order (the MLP layers follow).
EMBEDDINGS = ("user_gmf", "item_gmf", "user_mlp", "item_mlp")
#: How growth and prune scores are scaled (``grow_scores``).
GROW_SCORES = ("frequency", "raw")
# Embedding weights start uniform with this standard deviation (NCF's
# N(0, 0.01)), whatever the density: Adam rescales steps anyway.
_INIT_STD = 0.01


def _split_budget(total, weights, caps):
    """Integer counts summing to ``total``, proportional to ``weights``, capped by ``caps``."""
    counts = np.zeros(len(caps), np.int64)
    weights = np.asarray(weights, np.float64)
    free = np.ones(len(caps), bool)
    left = int(total)
    while left > 0 and free.any():
        share = weights * free
        want = share / share.sum() * left
        add = np.minimum(np.floor(want).astype(np.int64), caps - counts)
        # Hand out what rounding left over, largest remainders first.
        rem = left - add.sum()
        order = np.argsort(-(want - np.floor(want)), kind="stable")
        for t in order:
            if rem <= 0:
                break
            if free[t] and counts[t] + add[t] < caps[t]:
                add[t] += 1
                rem -= 1
        counts += add
        left = int(total - counts.sum())
        free &= counts < caps
    return counts


def _leading_columns_table(n_rows, n_cols, nnz, rng, seed):
    """``nnz`` coordinates spread evenly over the rows, each row on its first columns.

    Rows get ``nnz // n_rows`` coordinates, a random ``nnz % n_rows`` of
    them one more. Weights are uniform with standard deviation ``_INIT_STD``.
    """
    counts = np.full(n_rows, nnz // n_rows, np.int64)
    counts[rng.permutation(n_rows)[: nnz % n_rows]] += 1
    tab = SparseEmbeddingTable.random(n_rows, n_cols, nnz, n_slots=3,
                                      scale=_INIT_STD * np.sqrt(3.0), seed=seed,
                                      row_counts=counts)
    rank = np.arange(tab.nnz) - np.repeat(tab.indptr[:-1], counts)
    tab.indices_buf[: tab.nnz] = rank.astype(tab.indices_buf.dtype)
    return tab


class DSLNCF(NCFModel, DSLEstimator):
    """Neural collaborative filtering (NeuMF), trained sparse from scratch (DSL).

    The model of He et al. (WWW 2017) without pre-training: a GMF branch
    (element-wise product of its own user and item embeddings), an MLP
    branch (its own user and item embeddings, concatenated, through ReLU
    layers) and a linear fusion layer over ``[GMF product, last MLP layer]``
    giving one logit. Training minimises binary cross-entropy on every
    interaction and ``n_negatives`` negatives per interaction, drawn each
    epoch uniformly among the items the user did not interact with (nor
    ``exclude``), in shuffled mini-batches, with Adam.

    Everything with a size of users, items or layer widths is sparse: the
    four embedding tables and every MLP weight matrix are CSR tables holding
    only their active weights, with Adam's two moments stored on the same
    pattern. One budget of ``round(density * total)`` active weights covers
    them all; it is kept exactly after every epoch while every
    ``update_interval`` epochs the ``rho_t`` fraction of weights with the
    smallest magnitude is pruned and as many inactive coordinates with the
    largest loss gradient are grown (at zero weight and zero optimiser
    state), both scaled by their row's curvature (``grow_scores``), with
    ``rho_t`` decaying from ``update_ratio`` on ``schedule``. The biases and
    the fusion layer (``sum(hidden_layer_sizes) + n_components +
    hidden_layer_sizes[-1] + 1`` numbers) stay dense and outside the budget.

    Embedding rows follow *lazy* Adam: a mini-batch steps only the rows it
    touches (their moments decay only then; the bias correction uses the
    global step), so an epoch costs the batch's rows, not the tables. The
    MLP and the dense parameters take a plain Adam step every batch.

    Parameters
    ----------
    n_components : int, default=16
        Embedding size of each branch (GMF and MLP, users and items).
    hidden_layer_sizes : tuple of int, default=(32, 16, 8)
        Widths of the ReLU layers of the MLP branch; the first one reads the
        concatenated MLP embeddings (``2 * n_components`` inputs), as in
        the NCF paper's code.
    density : float in (0, 1], default=0.2
        Fraction of all embedding and MLP weights that are active. 1.0
        trains a dense model (no prune/grow).
    n_negatives : int, default=4
        Negatives per interaction and epoch.
    learning_rate : float, default=0.003
        Adam's step size (the NCF code's 0.001 gives the same dense model
        but slows sparse ones down: on MovieLens 100K at density 0.2, HR@10
        0.538 after 20 epochs against 0.546 at 0.003).
    alpha : float, default=0.0
        L2 penalty added to the gradient of every weight a step touches
        (embedding rows in the batch, MLP and fusion weights; not biases).
    batch_size : int, default=256
        Instances (interactions and negatives) per Adam step.
    max_iter : int, default=20
        Epochs.
    update_ratio : float in [0, 1), default=0.2
        Initial fraction of active weights pruned and regrown per update.
        0 gives static sparse training. Lower than the DSL paper's 0.5,
        which wipes out too much of a 20-epoch fit.
    update_interval : int, default=2
        Epochs between prune/grow updates (after epochs ``update_interval``,
        ``2 * update_interval``, ..., never after the last one).
    schedule : {"cosine", "linear", "constant"}, default="cosine"
        How the update ratio decays over the run (to 0.005).
    grow : {"gradient", "random"}, default="gradient"
        Grow where the loss gradient is largest, or at random (ablation).
    budget : {"global", "table"}, default="global"
        ``"global"``: one budget over all tables, so the split between the
        branches, users, items and layers is learned; ``"table"``: each
        table keeps its own count.
    grow_scores : {"frequency", "raw"}, default="frequency"
        ``"frequency"``: each score is scaled by its row's curvature,
        estimated as ``n_r``, the sum over an epoch's training instances of
        the squared input that the row's weights multiply: for an
        embedding row (a one-hot input) the instances that reach it (a
        user's interactions and their negatives, an item's interactions and
        its expected draws as a negative), for row ``k`` of an MLP layer
        the sum of ``z_k**2`` over the epoch (estimated at the current
        weights from 4,096 instances). Growth ranks ``|g| / sqrt(n_r)``,
        pruning ``|w| * sqrt(n_r)``, the first-order change of the loss
        sum with ``H ~ n_r`` (see Notes). ``"raw"``: ``|g|`` and ``|w|``,
        which let frequent rows win growth only because their gradient
        sums more instances.
    random_state : int, numpy Generator or None, default=None
        Seed of the pattern, the initial weights, the order and the sampler.
    n_threads : int or None, default=None
        Numba threads during ``fit`` and scoring (None: all). Each thread
        trains its own mini-batches and steps the shared weights without
        locks (Hogwild); with 1 thread and a fixed ``random_state`` a fit is
        bitwise reproducible.
    backend : {"cpu", "cuda"}, default="cpu"
        Where training epochs run. ``"cuda"`` needs numba-cuda and a GPU
        (``pip install sparse-rec[cuda]``): one thread block per mini-batch
        (Hogwild between blocks), the embeddings' growth scores on the
        GPU, the prune threshold too; the rebuild and scoring stay on the
        CPU.
    verbose : int, default=0
        1 shows a progress bar with the loss.
    callbacks : list of callable, optional
        Each is called as ``cb(estimator, epoch_row)`` after every epoch;
        returning True stops training.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of each user's interactions, score
        NDCG@10 on them after every epoch and stop after
        ``n_iter_no_change`` epochs without an improvement of ``tol``,
        keeping the best epoch's weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
    tol : float, default=1e-4
    warm_start : bool, default=False
        Refitting on data of the same shape continues from the fitted
        weights and pattern (optimiser state restarts at zero); another
        ``n_components`` or ``hidden_layer_sizes`` than fitted raises
        ValueError. Data of another shape starts a new model.

    Attributes
    ----------
    user_gmf_table_, item_gmf_table_, user_mlp_table_, item_mlp_table_ : SparseEmbeddingTable
        The embedding tables (``n_components`` columns).
    mlp_table_ : SparseEmbeddingTable
        The MLP weights, one row per input unit of every layer in order
        (first ``2 * n_components`` rows: layer 1), columns = output units.
    coefs_ : list of scipy.sparse.csr_matrix
        The same per layer, shape ``(n_in, n_out)``.
    intercepts_ : ndarray of float32, shape (sum(hidden_layer_sizes),)
        Biases of the MLP layers, concatenated.
    fusion_weights_ : ndarray of float32, shape (n_components + hidden_layer_sizes[-1],)
        Weights of the fusion layer over ``[GMF product, last MLP layer]``.
    fusion_bias_ : float
    hidden_layer_sizes_ : ndarray of int64
        The MLP layer widths the model was fitted with.
    n_iter_ : int
        Epochs run.
    history_ : list of dict
        One entry per epoch: ``epoch``, ``loss`` (binary cross-entropy summed
        over the trained instances, divided by all drawn instances: negatives
        skipped for users who have seen almost every item count as zero),
        ``nnz_<table>`` for every table (``user_gmf``,
        ``item_gmf``, ``user_mlp``, ``item_mlp``, ``layer_1``, ...),
        ``nnz``, ``empty_users`` and ``empty_items`` (rows with no active
        weight in either branch), ``pruned``, ``grown``, ``update_ratio``,
        ``coverage`` (fraction of coordinates ever active), ``seconds`` and
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
    Initial pattern. A uniformly random pattern is a poor start for a
    factorisation: two rows interact only on the coordinates both hold, so
    at density 0.2 a user and an item share 0.2 * 0.2 * 16 = 0.6 GMF
    coordinates on average and most pairs cannot interact at all (HR@10
    0.43 after 20 epochs on MovieLens 100K). So the MLP layers start dense
    (a few percent of the weights, used by every instance); the rest of the
    budget fills the GMF tables first and the MLP embedding tables with what
    is left, each table's share spread evenly over its rows, each row on its
    *leading* columns. Every user and item then starts in one shared
    low-dimensional space. An empty MLP embedding still has a gradient
    (through the first layer), so prune/grow can activate the MLP branch
    where it pays; at density 0.2 on MovieLens it grows little (a few
    hundred coordinates on MovieLens 100K), and the sparse model is close
    to GMF plus a small MLP branch, which is
    the better use of that budget: HR@10 0.558 on MovieLens 100K, against
    0.543 with 80% GMF / 20% MLP and 0.541 with an even split (three seeds
    each). Embedding weights start uniform with standard
    deviation 0.01 (the NCF code's N(0, 0.01)); MLP weights Glorot-uniform,
    the fusion layer LeCun-uniform, biases at zero.

    Growth and prune scores. A row's summed epoch gradient grows with the
    instances that reach it, so raw ``|g|`` hands growth to frequent users
    and items. ``grow_scores="frequency"`` divides each row's gradient by
    ``sqrt(n_r)`` and multiplies its weights by it (the first-order loss
    changes with the curvature taken proportional to ``n_r``, as DSL-MF's
    iALS scores use the exact one). For an MLP weight ``n_r`` is the
    epoch's sum of its input squared, so the first layer's weights that
    read MLP embedding columns no row holds (their input is always 0)
    cost nothing to prune and go first: at density 0.2 the sparse model
    ends as a GMF model with a small MLP branch, and the budget the dense
    MLP layers held (1,664 weights, about a tenth of it on MovieLens 100K)
    goes to the embeddings. On validation items
    (``benchmarks/ncf_reference.py --split validation``, density 0.2, seeds
    0-2, one session) HR@10 on MovieLens 100K went from 0.637, 0.636, 0.627
    (every MLP weight scaled by the epoch's instance count) to 0.645,
    0.650, 0.649, and stayed level on latest-small (0.698, 0.693, 0.712
    against 0.697, 0.703, 0.705), where the layers held a smaller share.
    Against raw scores the frequency-scaled ones were at or above in two
    earlier sessions, within the 0.02-0.03 by which two-thread (Hogwild)
    fits of one seed differ from run to run.

    Scores are logits (before the sigmoid), so they do not saturate. Full
    ranking splits the first MLP layer into a user part and an item part,
    each computed once (per user, per item); a pair then costs the GMF dot
    product and the layers after the first.

    Examples
    --------
    >>> from sparse_rec import DSLNCF
    >>> from sparse_rec.datasets import make_interactions
    >>> X = make_interactions(200, 100, 3000, random_state=0)
    >>> ncf = DSLNCF(n_components=8, hidden_layer_sizes=(16, 8), density=0.25, max_iter=4,
    ...              random_state=0, n_threads=1).fit(X)
    >>> ncf.n_active_ == round(0.25 * (2 * 8 * (200 + 100) + 16 * 16 + 16 * 8))
    True
    >>> ids, scores = ncf.recommend([0, 1], n=5)
    >>> ids.shape
    (2, 5)
    """

    _engine_model = "ncf"
    _progress_name = "DSL-NCF"
    # Model files written before grow_scores existed hold raw-score fits.
    _absent_params = {"grow_scores": "raw"}

    def __init__(
        self,
        n_components=16,
        hidden_layer_sizes=(32, 16, 8),
        density=0.2,
        n_negatives=4,
        learning_rate=0.003,
        alpha=0.0,
        batch_size=256,
        max_iter=20,
        update_ratio=0.2,
        update_interval=2,
        schedule="cosine",
        grow="gradient",
        budget="global",
        grow_scores="frequency",
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.density = density
        self.n_negatives = n_negatives
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.update_ratio = update_ratio
        self.update_interval = update_interval
        self.schedule = schedule
        self.grow = grow
        self.budget = budget
        self.grow_scores = grow_scores
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
        return check_layer_sizes(self.hidden_layer_sizes, what="MLP layers", example="(32, 16, 8)")

    def _validate(self):
        from .._validation import check_positive_int

        self._validate_common(backend=backends.devices(self._engine_key()),
                              grow_scores=GROW_SCORES)
        hidden = self._check_hidden()
        check_positive_int(self.n_negatives, "n_negatives",
                           hint="Binary cross-entropy needs negatives: use e.g. 4.")
        check_positive_int(self.batch_size, "batch_size", hint="Use for example 256.")
        return hidden

    # --- model hooks of the shared fit (sparse_rec._training) -------------------
    def _structure(self):
        return {"n_components": int(self.n_components),
                "hidden_layer_sizes": self._check_hidden()}

    def _fitted_structure(self):
        return {"n_components": self.user_gmf_table_.n_cols,
                "hidden_layer_sizes": tuple(int(h) for h in self.hidden_layer_sizes_)}

    def _init_params(self, n_users, n_items, seed):
        embeddings, net = self._init_tables(n_users, n_items, int(self.n_components),
                                            self._check_hidden(), seed)
        return self._params(embeddings, net)

    def _warm_params(self):
        # Keep the patterns and weights; Adam's state restarts.
        embeddings = [getattr(self, f"{name}_table_") for name in EMBEDDINGS]
        for tab in embeddings:
            tab.add_state(3)
        return self._params(embeddings, _Net.from_fitted(self, n_slots=3))

    @staticmethod
    def _params(embeddings, net):
        names = list(EMBEDDINGS) + [f"layer_{t + 1}" for t in range(len(net.layers))]
        return Params(list(embeddings) + list(net.layers), names, user_tables=[0, 2],
                      item_tables=[1, 3], dense=[net.dense_v[:, 0]], layout=net)

    def _make_engine(self, data, params):
        engine = backends.engine_class(self._engine_key(), self.backend)
        return engine(data, params.tables[:4], params.layout, learning_rate=self.learning_rate,
                      alpha=self.alpha, n_negatives=self.n_negatives,
                      batch_size=self.batch_size, grow_scores=self.grow_scores)

    def _init_tables(self, n_users, n_items, d, hidden, seed):
        """The initial pattern and weights (see the class notes)."""
        rng = np.random.default_rng(seed)
        n_in = (2 * d,) + hidden[:-1]
        shapes = [(n_users, d), (n_items, d), (n_users, d), (n_items, d)] + list(
            zip(n_in, hidden, strict=True))
        sizes = np.array([r * c for r, c in shapes], np.int64)
        nnz = check_budget(int(round(self.density * sizes.sum())), int(sizes.sum()),
                           2 * (n_users + n_items))
        n_mlp = int(sizes[4:].sum())
        counts = sizes.copy()
        if nnz < sizes.sum():
            if nnz - n_mlp >= n_users + n_items:
                # GMF tables first, the MLP embedding tables get what is left.
                rows = np.array([n_users, n_items], np.float64)
                gmf = min(nnz - n_mlp, int(sizes[:2].sum()))
                counts[:2] = _split_budget(gmf, rows, sizes[:2])
                counts[2:4] = _split_budget(nnz - n_mlp - gmf, rows, sizes[2:4])
            else:
                # Too small a budget for a dense MLP: one uniform draw.
                counts = rng.multivariate_hypergeometric(sizes, nnz, method="marginals")
        tables = []
        for t, ((n_rows, n_cols), k) in enumerate(zip(shapes, counts, strict=True)):
            if t < 4:
                tables.append(_leading_columns_table(n_rows, n_cols, int(k), rng, seed + 7 * t))
                continue
            # Glorot uniform for the weights a unit actually has: with a
            # fraction rho active, fan-in and fan-out shrink by rho.
            rho = max(k / (n_rows * n_cols), 1.0 / (n_rows * n_cols))
            tables.append(SparseEmbeddingTable.random(
                n_rows, n_cols, int(k), n_slots=3, scale=np.sqrt(6.0 / (rho * (n_rows + n_cols))),
                seed=seed + 7 * t + 1))
        dense = np.zeros((_Net.n_dense(d, hidden), 3), np.float32)
        net = _Net(d, hidden, tables[4:], dense)
        # LeCun uniform for the fusion layer, biases at zero (the paper's code).
        fan_in = d + hidden[-1]
        lim = np.sqrt(3.0 / fan_in)
        dense[net.h_off: net.h_off + fan_in, 0] = rng.uniform(-lim, lim, fan_in)
        return tables[:4], net

    def _publish(self, params):
        """Expose the current weights as fitted attributes."""
        net = params.layout
        for name, tab in zip(EMBEDDINGS, params.tables[:4], strict=True):
            setattr(self, f"{name}_table_", tab)
        self.hidden_layer_sizes_ = np.array(net.hidden, np.int64)
        self.mlp_table_ = net.packed_table()
        w = net.dense_v[:, 0]
        self.intercepts_ = w[: net.h_off].copy()
        self.fusion_weights_ = w[net.h_off: net.o_off].copy()
        self.fusion_bias_ = float(w[net.o_off])
        self._clear_caches()
