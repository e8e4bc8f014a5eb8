"""DSLNCF: neural collaborative filtering (NeuMF) trained sparse end to end."""

import numbers
import time

import numba
import numpy as np

from ._base import BaseDSLEstimator, TrainData, check_random_seed
from ._dsl import PruneGrow, update_ratio_at
from ._kernels import _ncf as KN
from ._kernels import _rng
from ._ncf_model import NCFModel, _Net, _tab
from ._table import SparseEmbeddingTable
from ._threads import numba_threads
from ._validation import check_budget
from .exceptions import DivergenceError

#: Names of the sparse tables, in PruneGrow order (the MLP layers follow).
EMBEDDINGS = ("user_gmf", "item_gmf", "user_mlp", "item_mlp")
# Embedding weights start uniform with this standard deviation (NCF's
# N(0, 0.01)), whatever the density: Adam rescales steps anyway.
_INIT_STD = 0.01
# Interactions per row that growth looks at (reweighted to a full epoch),
# and instances that estimate the MLP layers' dense gradients.
_GROW_SAMPLES = 8
_GROW_MLP_INSTANCES = 4096
_GROW_MLP_BLOCKS = 16
def _half_bits(n):
    """Smallest ``h`` with ``4**h >= n`` (the Feistel permutation's domain)."""
    h = 1
    while 4**h < n:
        h += 1
    return h


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


class DSLNCF(NCFModel, BaseDSLEstimator):
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
    ``update_interval`` epochs the ``rho_t`` fraction of smallest-magnitude
    weights is pruned and as many inactive coordinates with the largest
    loss gradient are grown (at zero weight and zero optimiser state), with
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
    random_state : int, numpy Generator or None, default=None
        Seed of the pattern, the initial weights, the order and the sampler.
    n_threads : int or None, default=None
        Numba threads during ``fit`` and scoring (None: all). Each thread
        trains its own mini-batches and steps the shared weights without
        locks (Hogwild); with 1 thread and a fixed ``random_state`` a fit is
        bitwise reproducible.
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
        weights and pattern (optimiser state restarts at zero).

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
    (through the dense first layer), so prune/grow can activate the MLP
    branch where it pays; at density 0.2 on MovieLens it grows almost none,
    and the sparse model is close to GMF plus a learned constant, which is
    the better use of that budget: HR@10 0.558 on MovieLens 100K, against
    0.543 with 80% GMF / 20% MLP and 0.541 with an even split (three seeds
    each). Embedding weights start uniform with standard
    deviation 0.01 (the NCF code's N(0, 0.01)); MLP weights Glorot-uniform,
    the fusion layer LeCun-uniform, biases at zero.

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
        random_state=None,
        n_threads=None,
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
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose
        self.callbacks = callbacks
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start

    # --- parameters ------------------------------------------------------------
    def _check_hidden(self):
        h = self.hidden_layer_sizes
        if isinstance(h, numbers.Integral) and not isinstance(h, bool):
            h = (h,)
        try:
            sizes = tuple(h)
        except TypeError:
            sizes = None
        if not sizes or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a non-empty sequence of integers >= 1 (the widths "
                f"of the MLP layers); got {self.hidden_layer_sizes!r}. Use for example "
                "(32, 16, 8)."
            )
        return tuple(int(s) for s in sizes)

    def _validate(self):
        from ._validation import check_positive_int

        self._validate_common()
        hidden = self._check_hidden()
        check_positive_int(self.n_negatives, "n_negatives",
                           hint="Binary cross-entropy needs negatives: use e.g. 4.")
        check_positive_int(self.batch_size, "batch_size", hint="Use for example 256.")
        return hidden

    # --- fitting ---------------------------------------------------------------
    def fit(self, X, y=None, exclude=None):
        """Train on a users x items interaction matrix.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_users, n_items)
            Non-negative interactions; values weight the positives' loss
            (scaled to mean 1).
        y : ignored
        exclude : sparse matrix of shape (n_users, n_items), optional
            Pairs never drawn as negatives (for example held-out candidates).

        Returns
        -------
        self
        """
        hidden = self._validate()
        X, exclude = self._prepare_X(X, exclude)
        seed = check_random_seed(self.random_state)
        n_users, n_items = X.shape
        d = int(self.n_components)
        warm = (
            self._can_warm_start(X)
            and tuple(getattr(self, "hidden_layer_sizes_", ())) == hidden
            and self.user_gmf_table_.n_cols == d
        )
        first_epoch = self.n_iter_ if warm else 0
        X_fit, X_val = self._validation_split(X, seed)
        data = TrainData.from_matrix(X_fit, exclude)
        try:
            with numba_threads(self.n_threads):
                if warm:
                    # Keep the patterns and weights; Adam's state restarts.
                    embeddings = [getattr(self, f"{name}_table_") for name in EMBEDDINGS]
                    for tab in embeddings:
                        tab.add_state(3)
                    net = _Net.from_fitted(self, n_slots=3)
                else:
                    embeddings, net = self._init_params(n_users, n_items, d, hidden, seed)
                # Live fitted state: early stopping and callbacks read it mid-fit.
                for name, tab in zip(EMBEDDINGS, embeddings, strict=True):
                    setattr(self, f"{name}_table_", tab)
                self.hidden_layer_sizes_ = np.array(hidden, np.int64)
                self.n_users_, self.n_items_ = n_users, n_items
                self.seen_, self.n_features_in_ = X, n_items
                self._publish(net)
                self._train(data, embeddings, net, seed, X_fit, X_val, first_epoch)
        except BaseException:
            # A failed fit leaves no half-trained model behind.
            self._discard_fit()
            raise
        # Optimiser state is only needed while training: keep the weights.
        # (After early stopping these are the best epoch's tables.)
        tables = [getattr(self, f"{name}_table_") for name in EMBEDDINGS]
        for tab in tables:
            tab.drop_state()
        self.mlp_table_.drop_state()
        self.n_active_ = sum(t.nnz for t in tables) + self.mlp_table_.nnz
        dense_bytes = self.intercepts_.nbytes + self.fusion_weights_.nbytes + 4
        self.nbytes_ = sum(t.nbytes for t in tables) + self.mlp_table_.nbytes + dense_bytes
        n_in = (2 * d,) + hidden[:-1]
        total = 2 * d * (n_users + n_items) + sum(a * b for a, b in zip(n_in, hidden, strict=True))
        self.dense_nbytes_ = 4 * total + dense_bytes
        self._cache = {}
        return self

    def _init_params(self, n_users, n_items, d, hidden, seed):
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

    def _publish(self, net):
        """Expose the network's current weights as fitted attributes."""
        self.mlp_table_ = net.packed_table()
        w = net.dense_v[:, 0]
        self.intercepts_ = w[: net.h_off].copy()
        self.fusion_weights_ = w[net.h_off: net.o_off].copy()
        self.fusion_bias_ = float(w[net.o_off])
        self._cache = {}

    def _train(self, data, embeddings, net, seed, X_fit, X_val, first_epoch):
        d = net.d
        tables = list(embeddings) + list(net.layers)
        names = list(EMBEDDINGS) + [f"layer_{t + 1}" for t in range(len(net.layers))]
        chunk = int(min(32 << 20, max(4 << 20, 16 * sum(t.nnz for t in tables))))
        pgrow = PruneGrow(tables, [None] * len(tables), budget=self.budget, grow=self.grow,
                          chunk_bytes=chunk)
        total = sum(t.n_rows * t.n_cols for t in tables)
        dynamic = self.update_ratio > 0 and sum(t.nnz for t in tables) < total
        k1 = int(self.n_negatives) + 1
        n_inst = data.nnz * k1
        half_bits = _half_bits(n_inst)
        batch = int(min(self.batch_size, max(n_inst, 1)))
        n_items = embeddings[1].n_rows
        n_threads = numba.get_num_threads()
        # Work buffers, one row per thread.
        T = n_threads
        work = dict(
            act=np.zeros((T, net.n_act), np.float32), dact=np.zeros((T, net.n_act), np.float32),
            pg=np.zeros((T, d), np.float32), qg=np.zeros((T, d), np.float32),
            sg=np.zeros((T, batch, 4 * d), np.float32), su=np.zeros((T, batch), np.int64),
            si=np.zeros((T, batch), np.int64),
            gd=np.zeros((T, net.dense_v.shape[0]), np.float32),
            acc=np.zeros((T, d), np.float32),
        )
        state = {"step": 0}

        def run_epoch(epoch):
            t0 = time.perf_counter()
            step = first_epoch + epoch
            key = np.uint64(_rng.epoch_key(np.uint64(seed), np.uint64(2 * step)))
            net.pack()
            gm = np.zeros((T, net.m_w.shape[0]), np.float32)
            args = (
                n_inst, k1, batch, key, half_bits, state["step"], float(self.learning_rate),
                np.float32(self.alpha), data.x_indices, data.x_weight, data.x_rows,
                data.f_indptr, data.f_indices, n_items, d, *[_tab(t) for t in embeddings],
                *net.kernel_args(with_state=True), net.w_range,
            )
            w = work
            if T == 1:
                loss = KN.train_batches(
                    0, 1, *args, w["act"][0], w["dact"][0], w["pg"][0], w["qg"][0],
                    w["sg"][0], w["su"][0], w["si"][0], gm[0], w["gd"][0], w["acc"][0])
            else:
                loss = KN.ncf_epoch_parallel(
                    *args, w["act"], w["dact"], w["pg"], w["qg"], w["sg"], w["su"], w["si"],
                    gm, w["gd"], w["acc"])
            state["step"] += (n_inst + batch - 1) // batch
            net.unpack()
            mean_loss = loss / max(n_inst, 1)
            if not np.isfinite(mean_loss) or not all(
                np.isfinite(t.weights).all() for t in tables
            ) or not np.isfinite(net.dense_v[:, 0]).all():
                raise DivergenceError(
                    f"training diverged at epoch {step + 1}: the loss or the weights are not "
                    f"finite (learning_rate={self.learning_rate}). Lower learning_rate (for "
                    "example by 10x) or raise alpha."
                )
            t1 = time.perf_counter()
            done = epoch + 1
            update = dynamic and done % self.update_interval == 0 and done < self.max_iter
            pruned = grown = np.zeros(len(tables), np.int64)
            rho = 0.0
            if update:
                rho = update_ratio_at(done, self.max_iter, self.update_ratio, self.schedule)
                gkey = np.uint64(_rng.epoch_key(np.uint64(seed), np.uint64(2 * step + 1)))
                pgrow.grad_fns = self._grad_fns(data, embeddings, net, gkey, k1, n_inst,
                                                half_bits)
                pruned, grown = pgrow.step(rho, seed + step + 1)
                net.pack()
            self._publish(net)
            t2 = time.perf_counter()
            row = {"loss": float(mean_loss)}
            for name, t in zip(names, tables, strict=True):
                row[f"nnz_{name}"] = t.nnz
            empty_u = (embeddings[0].row_nnz() == 0) & (embeddings[2].row_nnz() == 0)
            empty_i = (embeddings[1].row_nnz() == 0) & (embeddings[3].row_nnz() == 0)
            row.update({
                "nnz": sum(t.nnz for t in tables),
                "empty_users": int(np.count_nonzero(empty_u)),
                "empty_items": int(np.count_nonzero(empty_i)),
                "pruned": int(pruned.sum()),
                "grown": int(grown.sum()),
                "update_ratio": rho,
                "coverage": pgrow.coverage,
                "seconds": t2 - t0,
                "prune_grow_seconds": t2 - t1,
            })
            return row

        self._run_epochs(run_epoch, X_fit, X_val, "DSL-NCF", first_epoch=first_epoch)

    def _grad_fns(self, data, embeddings, net, key, k1, n_inst, half_bits):
        """Dense-gradient callbacks for PruneGrow, one per table."""
        d = net.d
        n_items = embeddings[1].n_rows
        neg_per_item = (k1 - 1) * data.nnz / max(n_items, 1)
        net.m_w[:] = net.m_v[:, 0]
        emb = [_tab(t) for t in embeddings]

        def rows_fn(which):
            def fill(r0, r1, G):
                KN.grad_embedding_rows(
                    which, r0, r1, G, _GROW_SAMPLES, key, float(k1 - 1), neg_per_item,
                    data.x_indptr, data.x_indices, data.x_weight, data.x_rows,
                    data.xt_indptr, data.xt_indices, data.xt_weight, data.f_indptr,
                    data.f_indices, n_items, d, *emb, *net.kernel_args(), net.n_act,
                )
            return fill

        sizes = [int(a * b) for a, b in zip(net.n_in, net.n_out, strict=True)]
        w_off = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        cache = {}

        def mlp_grads():
            # All layers come from one pass over a sample of the epoch's
            # instances; computed once per update, served row by row.
            if "G" not in cache:
                out = np.zeros(sum(sizes), np.float32)
                n_s = int(min(n_inst, _GROW_MLP_INSTANCES))
                KN.grad_mlp_dense(
                    n_s, min(_GROW_MLP_BLOCKS, max(n_s, 1)), key, n_inst, k1, half_bits, out,
                    data.x_indices, data.x_weight, data.x_rows, data.f_indptr, data.f_indices,
                    n_items, d, *emb, *net.kernel_args(), net.n_act, w_off,
                )
                cache["G"] = out
            return cache["G"]

        def layer_fn(layer):
            def fill(r0, r1, G):
                no = int(net.n_out[layer])
                block = mlp_grads()[w_off[layer]: w_off[layer] + sizes[layer]]
                G[:] = block.reshape(-1, no)[r0:r1]
            return fill

        return [rows_fn(w) for w in range(4)] + [layer_fn(t) for t in range(len(net.layers))]

    # --- fitted views ----------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = {}  # derived data: rebuilt on demand
        return state
