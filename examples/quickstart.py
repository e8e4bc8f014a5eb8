"""Quickstart: sparse matrix factorisation on the built-in MovieLens data.

Trains DSLMatrixFactorization at 20% density and densely (density 1.0) on
the same split, compares Recall@20, NDCG@20 and the bytes of the stored
model, then recommends movies for one raw MovieLens user id.

Run with ``python examples/quickstart.py`` (about 10-20 s on two cores).
"""

import time

from sparse_rec import DSLMatrixFactorization
from sparse_rec.datasets import load_movielens_small
from sparse_rec.metrics import evaluate
from sparse_rec.model_selection import random_split

# 610 users x 9,724 movies; binarize=True turns star ratings into implicit 1.0s.
ds = load_movielens_small(binarize=True)
X_train, X_test = random_split(ds.X, test_size=0.2, random_state=0)
print(f"{ds.name}: {ds.n_users} users, {ds.n_items} items, "
      f"{X_train.nnz} training and {X_test.nnz} held-out interactions\n")

models = {}
print(f"{'density':>7}  {'active weights':>14}  {'model bytes':>11}  {'vs dense':>8}  "
      f"{'Recall@20':>9}  {'NDCG@20':>7}  {'fit s':>5}")
for density in (0.2, 1.0):
    model = DSLMatrixFactorization(n_components=64, density=density, random_state=0)
    t0 = time.perf_counter()
    model.fit(X_train)
    seconds = time.perf_counter() - t0
    # Full ranking over all items, training items excluded.
    scores = evaluate(model, X_train, X_test, k=20, metrics=("recall", "ndcg"))
    # nbytes_: the CSR tables and bias as stored; dense_nbytes_: the same
    # model as dense float32 tables.
    print(f"{density:>7.1f}  {model.n_active_:>14,}  {model.nbytes_:>11,}  "
          f"{model.nbytes_ / model.dense_nbytes_:>7.2f}x  {scores['recall']:>9.4f}  "
          f"{scores['ndcg']:>7.4f}  {seconds:>5.1f}")
    models[density] = model

# At density 1.0 the tables are still stored as CSR (2-byte column index +
# 4-byte weight per entry), so they take more bytes than dense float32
# arrays; CSR pays off below a density of about 2/3.
sparse = models[0.2]
last = sparse.history_[-1]
print(f"\ndensity 0.2: dense float32 tables would take {sparse.dense_nbytes_:,} bytes; "
      f"{last['coverage']:.0%} of all coordinates were active at some point; "
      f"{last['empty_users']} users and {last['empty_items']} items ended with no active weight.")

# Recommend for a raw MovieLens user id, excluding everything that user rated
# (a one-row CSR passed as filter_seen), and show the titles.
raw_user = 1
u = ds.user_index(raw_user)
ids, item_scores = sparse.recommend([u], n=10, filter_seen=ds.X[[u]])
print(f"\ntop 10 for MovieLens user {raw_user}:")
for rank, (i, s) in enumerate(zip(ids[0], item_scores[0], strict=True), 1):
    print(f"  {rank:>2}. {ds.item_names[i]}  ({s:.3f})")
