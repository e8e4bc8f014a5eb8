"""New users and items added without a refit (``partial_fit_users`` / ``partial_fit_items``).

Users: 20% of the users are new; 80% of each one's interactions are its
history and 20% are ranked (full ranking over all items, history excluded,
Recall@20 / NDCG@20). The model trains on the other users; the new users
are served by ``recommend_for_history`` on their histories, by
``recommend`` after ``partial_fit_users`` of the same histories, and, for
reference, by a model trained with their histories.

Items: 10% of the items with at least 5 users are new; 80% of each one's
users are given to ``partial_fit_items`` (the model trained without these
items at all), 20% are held out, and every user with a held-out pair ranks
all items (training pairs excluded); a hit is a held-out new-item pair.
Reference: a model trained with the given 80% from the start.

Data: ml-100k from ``../shared/data`` or ``$SPARSE_REC_DATA``.

Run from the repository root::

    python benchmarks/partial_fit.py              # writes docs/benchmarks.md
    python benchmarks/partial_fit.py --quick --no-write
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _report import DATA, markdown_table, section_text, write_section

from sparse_rec import DSLNCF, DSLMatrixFactorization
from sparse_rec.datasets import load_movielens
from sparse_rec.metrics import evaluate, ranking_metrics
from sparse_rec.model_selection import random_split, train_test_split_users

SEED = 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=50, help="DSL-MF epochs (default 50)")
    p.add_argument("--ncf-epochs", type=int, default=10, help="DSLNCF epochs (default 10)")
    p.add_argument("--quick", action="store_true", help="10 DSL-MF epochs, no DSLNCF")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    return p.parse_args(argv)


def models(args):
    epochs = 10 if args.quick else args.epochs
    yield f"DSL-MF density 0.2, {epochs} epochs", lambda: DSLMatrixFactorization(
        loss="bpr", density=0.2, max_iter=epochs, random_state=SEED, n_threads=args.threads)
    if not args.quick:
        yield f"DSLNCF density 0.2, {args.ncf_epochs} epochs", lambda: DSLNCF(
            density=0.2, max_iter=args.ncf_epochs, random_state=SEED, n_threads=args.threads)


def metrics(ids, truth):
    r = ranking_metrics(ids, truth, k=20, metrics=("recall", "ndcg"))
    return r["recall"], r["ndcg"]


def users_part(X, args):
    old, new = train_test_split_users(X, test_size=0.2, random_state=SEED)
    H, T = random_split(X[new], test_size=0.2, random_state=SEED)
    X_ref = sp.vstack([X[old], H]).tocsr()
    rows = np.arange(len(old), len(old) + len(new))
    out = []
    for label, make in models(args):
        est = make().fit(X[old])
        t0 = time.perf_counter()
        r_h, n_h = metrics(est.recommend_for_history(H, n=20)[0], T)
        t_h = time.perf_counter() - t0
        t0 = time.perf_counter()
        est.partial_fit_users(rows, H)
        t_p = time.perf_counter() - t0
        r_p, n_p = metrics(est.recommend(rows, n=20)[0], T)
        ref = make().fit(X_ref)
        r_t, n_t = metrics(ref.recommend(rows, n=20)[0], T)
        out.append([label, f"{r_h:.4f} / {n_h:.4f}", f"{t_h:.2f}", f"{r_p:.4f} / {n_p:.4f}",
                    f"{t_p:.2f}", f"{r_p / r_h:.3f}x", f"{r_t:.4f} / {n_t:.4f}",
                    f"{r_p / r_t:.2f}x"])
        print(" | ".join(out[-1]), flush=True)
    return out, len(new)


def items_part(X, args):
    rng = np.random.default_rng(SEED)
    deg = np.diff(X.tocsc().indptr)
    cand = np.flatnonzero(deg >= 5)
    new = np.sort(rng.choice(cand, size=len(cand) // 10, replace=False))
    old = np.setdiff1d(np.arange(X.shape[1]), new)
    n_old = len(old)
    Xp = X[:, np.concatenate([old, new])].tocsr()
    K_t, T_t = random_split(Xp[:, n_old:].T.tocsr(), test_size=0.2, random_state=SEED)
    known, held = K_t.T.tocsr(), T_t.T.tocsr()
    train = sp.hstack([Xp[:, :n_old], known]).tocsr()
    test = sp.hstack([sp.csr_matrix((X.shape[0], n_old), dtype=np.float32), held]).tocsr()
    out = []
    epochs = 10 if args.quick else args.epochs
    make = lambda: DSLMatrixFactorization(loss="bpr", density=0.2,  # noqa: E731
                                          max_iter=epochs, random_state=SEED,
                                          n_threads=args.threads)
    est = make().fit(Xp[:, :n_old])
    t0 = time.perf_counter()
    est.partial_fit_items(np.arange(n_old, X.shape[1]), known)
    t_p = time.perf_counter() - t0
    m_p = evaluate(est, train, test, k=20, metrics=("recall", "ndcg"))
    ref = make().fit(train)
    m_t = evaluate(ref, train, test, k=20, metrics=("recall", "ndcg"))
    # Popularity of the given pairs as a floor.
    pop = np.asarray(train.sum(axis=0)).ravel().astype(np.float64)

    class Popular:
        def recommend(self, users, n, filter_seen):
            S = np.tile(pop, (len(users), 1))
            S[filter_seen.nonzero()] = -np.inf
            ids = np.argsort(-S, axis=1, kind="stable")[:, :n]
            return ids, np.take_along_axis(S, ids, axis=1)

    m_pop = evaluate(Popular(), train, test, k=20, metrics=("recall", "ndcg"))
    out.append([f"DSL-MF density 0.2, {epochs} epochs",
                f"{m_p['recall']:.4f} / {m_p['ndcg']:.4f}", f"{t_p:.2f}",
                f"{m_t['recall']:.4f} / {m_t['ndcg']:.4f}",
                f"{m_p['recall'] / m_t['recall']:.2f}x",
                f"{m_pop['recall']:.4f} / {m_pop['ndcg']:.4f}"])
    print(" | ".join(out[-1]), flush=True)
    return out, len(new), m_p["n_users_evaluated"]


def main(argv=None):
    args = parse_args(argv)
    data = Path(os.environ.get("SPARSE_REC_DATA") or DATA) / "ml-100k"
    if not (data / "u.data").is_file():
        raise SystemExit(f"ml-100k not found under {data.parent}; set SPARSE_REC_DATA.")
    X = load_movielens(data, binarize=True).X
    u_rows, n_users = users_part(X, args)
    i_rows, n_items, n_eval = items_part(X, args)
    t_users = markdown_table(
        ["model", "fold-in R@20 / N@20", "fold-in s", "partial_fit_users R / N", "partial s",
         "recall vs fold-in", "trained R / N", "recall vs trained"], u_rows)
    t_items = markdown_table(
        ["model", "partial_fit_items R@20 / N@20", "partial s", "trained R / N",
         "recall vs trained", "popularity R / N"], i_rows)
    print(t_users)
    print(t_items)
    body = (
        "New users and items added without a refit, on ml-100k (binarised). "
        f"Users: {n_users} new users (20%), 80% of each one's interactions its history, "
        "20% ranked over all items; `partial_fit_users` runs the fold-in of "
        "`recommend_for_history`, so their recall is the same by construction (the ratio "
        "checks the rows are written back intact). 'trained': a model fitted with the "
        "histories. 's': seconds to fold in and rank / to add all new users.\n\n"
        + t_users + "\n\n"
        f"Items: {n_items} new items (10% of those with >= 5 users); 80% of each one's users "
        "given to `partial_fit_items` on a model trained without the items, 20% held out; "
        f"{n_eval} users rank all items and a hit is a held-out new-item pair. 'trained': "
        "a model fitted with the given 80% from the start.\n\n" + t_items
    )
    if not (args.quick or args.no_write):
        write_section("partial_fit", section_text("Adding users and items without a refit",
                                                  body))


if __name__ == "__main__":
    main()
