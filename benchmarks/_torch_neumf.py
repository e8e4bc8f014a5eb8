"""A PyTorch NeuMF (He et al., WWW 2017) used as the dense reference of ``ncf_reference.py``.

Benchmark-only: torch (the CPU build is enough) is an optional dependency that
``sparse_rec`` itself never imports. The model follows the paper without
pre-training: a GMF branch (element-wise product of its own user and item
embeddings), an MLP branch (its own user and item embeddings, concatenated,
then ReLU layers), and a linear fusion layer over ``[gmf_product, mlp_out]``
giving one logit. Training: binary cross-entropy on each observed pair and
``n_negatives`` uniform negatives per pair, redrawn every epoch, Adam,
mini-batches of shuffled samples.

The negative sampler skips a user's training items *and* the pairs given as
``exclude`` (the held-out item and its evaluation negatives), like DSLNCF's
``fit(X, exclude=...)``. Initialisation follows the paper's code: embeddings
N(0, 0.01), Glorot-uniform ReLU layers, LeCun-uniform fusion layer, zero biases.
"""

import time

import numpy as np
import scipy.sparse as sp

try:
    import torch
    from torch import nn
except ImportError:  # the caller decides whether a missing torch is fatal
    torch = None
    nn = None

__all__ = ["TorchNeuMF", "forbidden_keys", "fused_adam", "sample_negatives", "torch_available"]


def torch_available():
    """True when PyTorch can be imported."""
    return torch is not None


def forbidden_keys(X, exclude=None):
    """Sorted int64 keys ``user * n_items + item`` of the pairs never drawn as negatives.

    Parameters
    ----------
    X : sparse matrix of shape (n_users, n_items)
        Training interactions.
    exclude : sparse matrix of shape (n_users, n_items), optional
        Further pairs never to sample (held-out candidates).

    Returns
    -------
    ndarray of int64
        Distinct keys, increasing.
    """
    F = sp.csr_matrix(X, copy=True)
    if exclude is not None:
        if exclude.shape != X.shape:
            raise ValueError(
                f"exclude must have the shape of X {X.shape}; got {exclude.shape}. Build it "
                "for the same users and items (LeaveOneOutSplit.exclude does)."
            )
        F = (F + sp.csr_matrix(exclude)).tocsr()
    F.sum_duplicates()
    rows = np.repeat(np.arange(F.shape[0], dtype=np.int64), np.diff(F.indptr))
    return np.unique(rows * F.shape[1] + F.indices.astype(np.int64))


def sample_negatives(keys, users, n_items, rng):
    """One uniform item per entry of ``users`` whose (user, item) key is not in ``keys``.

    Vectorised rejection sampling: every rejected draw is redrawn until none
    is left, so each negative is uniform over the user's allowed items.

    Parameters
    ----------
    keys : ndarray of int64
        Sorted forbidden keys from :func:`forbidden_keys`.
    users : ndarray of int64
        The user of each negative to draw.
    n_items : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int64, shape like ``users``
    """
    items = rng.integers(0, n_items, size=users.size)
    todo = np.arange(users.size)
    while todo.size:
        k = users[todo] * n_items + items[todo]
        pos = np.minimum(np.searchsorted(keys, k), keys.size - 1)
        todo = todo[keys[pos] == k]
        items[todo] = rng.integers(0, n_items, size=todo.size)
    return items


def fused_adam():
    """True when this torch has the fused CPU Adam kernel (torch >= 2.4)."""
    if torch is None:
        return False
    try:
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def _fused_kwargs():
    return {"fused": True} if fused_adam() else {}


if torch is not None:

    class _NeuMFModule(nn.Module):
        def __init__(self, n_users, n_items, n_components, hidden_layer_sizes):
            super().__init__()
            d = n_components
            self.gmf_user = nn.Embedding(n_users, d)
            self.gmf_item = nn.Embedding(n_items, d)
            self.mlp_user = nn.Embedding(n_users, d)
            self.mlp_item = nn.Embedding(n_items, d)
            layers, width = [], 2 * d
            for h in hidden_layer_sizes:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.mlp = nn.Sequential(*layers)
            self.fusion = nn.Linear(d + width, 1)
            for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
                nn.init.normal_(emb.weight, std=0.01)
            for m in self.mlp:
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            # LeCun uniform: U(-sqrt(3 / fan_in), sqrt(3 / fan_in)).
            bound = float(np.sqrt(3.0 / self.fusion.in_features))
            nn.init.uniform_(self.fusion.weight, -bound, bound)
            nn.init.zeros_(self.fusion.bias)

        def forward(self, u, i):
            gmf = self.gmf_user(u) * self.gmf_item(i)
            mlp = self.mlp(torch.cat([self.mlp_user(u), self.mlp_item(i)], dim=1))
            return self.fusion(torch.cat([gmf, mlp], dim=1)).squeeze(1)


class TorchNeuMF:
    """NeuMF in PyTorch with the interface the benchmark needs (``fit``, ``score_items``).

    Parameters
    ----------
    n_components : int, default=16
        Embedding size of each of the four tables (GMF and MLP, users and items).
    hidden_layer_sizes : tuple of int, default=(32, 16, 8)
        Widths of the ReLU layers of the MLP branch; its input is the
        concatenation of the two MLP embeddings (``2 * n_components``).
    n_negatives : int, default=4
        Negatives per training pair, redrawn every epoch.
    learning_rate : float, default=0.001
        Adam step size.
    batch_size : int, default=256
    max_iter : int, default=20
        Epochs.
    random_state : int, default=0
        Seeds torch's initialisation and the NumPy negative sampler / shuffler.
    n_threads : int, default=2
        ``torch.set_num_threads`` for the duration of ``fit`` and ``score_items``.

    Attributes
    ----------
    history_ : list of dict
        Per epoch: ``epoch``, ``loss`` (mean BCE), ``seconds`` (sampling,
        shuffling and the mini-batch loop) and, when ``fit`` got an
        ``on_epoch`` callback, what it returned under ``"eval"``.
    n_active_ : int
        Parameters (every one is active in a dense model).
    nbytes_ : int
        Bytes of the parameters (float32).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> X = sp.random(30, 20, density=0.3, format="csr", random_state=0)
    >>> m = TorchNeuMF(n_components=4, hidden_layer_sizes=(8, 4), max_iter=2).fit(X)
    >>> m.score_items([0, 1], [[0, 1, 2], [3, 4, 5]]).shape
    (2, 3)
    """

    def __init__(self, n_components=16, hidden_layer_sizes=(32, 16, 8), n_negatives=4,
                 learning_rate=0.001, batch_size=256, max_iter=20, random_state=0,
                 n_threads=2):
        self.n_components = n_components
        self.hidden_layer_sizes = tuple(hidden_layer_sizes)
        self.n_negatives = n_negatives
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.random_state = random_state
        self.n_threads = n_threads

    def _threads(self):
        previous = torch.get_num_threads()
        torch.set_num_threads(self.n_threads)
        return previous

    def fit(self, X, exclude=None, on_epoch=None):
        """Train on users x items ``X``; negatives avoid ``X`` and ``exclude``.

        ``on_epoch(self, epoch)`` is called after every epoch, outside the timing.
        """
        if torch is None:
            raise ImportError(
                "TorchNeuMF needs PyTorch, which is missing. Install the CPU build, e.g. "
                "pip install torch --index-url https://download.pytorch.org/whl/cpu."
            )
        X = sp.csr_matrix(X)
        X.sum_duplicates()
        X.eliminate_zeros()
        n_users, n_items = X.shape
        keys = forbidden_keys(X, exclude)
        free = n_items - np.bincount(keys // n_items, minlength=n_users)
        pos_u = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(X.indptr))
        if X.nnz and free[pos_u].min() == 0:
            raise ValueError(
                "every user with a training item needs an item it may take as a negative; "
                "some users have interacted with or excluded every item. Drop those users."
            )
        pos_i = X.indices.astype(np.int64)
        k = self.n_negatives
        labels = np.concatenate([np.ones(pos_u.size), np.zeros(k * pos_u.size)]).astype(
            np.float32)
        rng = np.random.default_rng(self.random_state)
        previous = self._threads()
        try:
            torch.manual_seed(self.random_state)
            self.module_ = _NeuMFModule(n_users, n_items, self.n_components,
                                        self.hidden_layer_sizes)
            # The fused CPU kernel (torch >= 2.4) is 2-3x faster per step on models this
            # small; the update is the same Adam.
            opt = torch.optim.Adam(self.module_.parameters(), lr=self.learning_rate,
                                   **_fused_kwargs())
            loss_fn = nn.BCEWithLogitsLoss()
            y_all = torch.from_numpy(labels)
            self.history_ = []
            for epoch in range(self.max_iter):
                t0 = time.perf_counter()
                self.module_.train()
                neg_u = np.tile(pos_u, k)
                neg_i = sample_negatives(keys, neg_u, n_items, rng)
                perm = torch.from_numpy(rng.permutation(labels.size))
                u = torch.from_numpy(np.concatenate([pos_u, neg_u]))[perm]
                i = torch.from_numpy(np.concatenate([pos_i, neg_i]))[perm]
                y = y_all[perm]
                total = torch.zeros((), dtype=torch.float64)
                for s in range(0, labels.size, self.batch_size):
                    e = s + self.batch_size
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(self.module_(u[s:e], i[s:e]), y[s:e])
                    loss.backward()
                    opt.step()
                    total += loss.detach() * (min(e, labels.size) - s)
                rec = {"epoch": epoch, "loss": float(total) / max(labels.size, 1),
                       "seconds": time.perf_counter() - t0}
                if on_epoch is not None:
                    rec["eval"] = on_epoch(self, epoch)
                self.history_.append(rec)
        finally:
            torch.set_num_threads(previous)
        params = list(self.module_.parameters())
        self.n_active_ = int(sum(p.numel() for p in params))
        self.nbytes_ = int(sum(p.numel() * p.element_size() for p in params))
        return self

    def score_items(self, users, items):
        """Logits for ``items`` (shape (len(users), m)) of each user; higher is better."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if items.ndim != 2 or items.shape[0] != users.size:
            raise ValueError(
                f"items must have shape (len(users), m) = ({users.size}, m); got {items.shape}."
            )
        u = torch.from_numpy(np.repeat(users, items.shape[1]))
        i = torch.from_numpy(items.ravel())
        previous = self._threads()
        try:
            self.module_.eval()
            with torch.no_grad():
                out = torch.cat([self.module_(u[s:s + 65536], i[s:s + 65536])
                                 for s in range(0, u.numel(), 65536)])
        finally:
            torch.set_num_threads(previous)
        return out.numpy().astype(np.float64).reshape(items.shape)
