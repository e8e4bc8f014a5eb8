"""Neural collaborative filtering (NeuMF) trained sparse, on the built-in MovieLens data.

Follows the NCF evaluation protocol: each user's latest interaction is held
out and ranked against 100 sampled movies the user never rated (HR@10 and
NDCG@10). Trains DSLNCF densely and at 20% density on the same split,
compares quality, stored bytes and time, then recommends movies for one
raw MovieLens user id.

Run with ``python examples/ncf.py`` (about a minute on two cores).
"""

import time

import numpy as np

from sparse_rec import DSLNCF
from sparse_rec.datasets import load_movielens_small
from sparse_rec.metrics import evaluate_sampled
from sparse_rec.model_selection import leave_one_out_split

ds = load_movielens_small(binarize=True)
# Latest interaction of every user held out, 100 negatives each. The training
# sampler must never draw the held-out item or its negatives as training
# negatives: pass split.exclude to fit.
split = leave_one_out_split(ds.X, ds.timestamps, n_negatives=100, random_state=0)
print(f"{ds.name}: {ds.n_users} users, {ds.n_items} items, {split.train.nnz} training "
      f"interactions, {split.users.size} users evaluated\n")

print(f"{'density':>7}  {'active weights':>14}  {'model bytes':>11}  {'vs dense':>8}  "
      f"{'HR@10':>6}  {'NDCG@10':>7}  {'s/epoch':>7}")
models = {}
for density in (1.0, 0.2):
    model = DSLNCF(n_components=16, hidden_layer_sizes=(32, 16, 8), density=density,
                   random_state=0)
    t0 = time.perf_counter()
    model.fit(split.train, exclude=split.exclude)
    seconds = time.perf_counter() - t0
    r = evaluate_sampled(model, split.users, split.test_items, split.negatives, k=10)
    print(f"{density:>7.1f}  {model.n_active_:>14,}  {model.nbytes_:>11,}  "
          f"{model.nbytes_ / model.dense_nbytes_:>7.2f}x  {r['hit_rate']:>6.4f}  "
          f"{r['ndcg']:>7.4f}  {seconds / model.n_iter_:>7.2f}")
    models[density] = model

# Where the budget went: prune/grow moves weights between the four embedding
# tables and the MLP layers (one global budget).
sparse = models[0.2]
last = sparse.history_[-1]
counts = {k[4:]: v for k, v in last.items() if k.startswith("nnz_")}
print("\nactive weights per table at density 0.2:", counts)
print("MLP layers (n_in x n_out, active):",
      [f"{c.shape[0]}x{c.shape[1]}: {c.nnz}" for c in sparse.coefs_])

# Full ranking for one raw MovieLens user id, everything the user rated excluded.
raw_user = 1
u = ds.user_index(raw_user)
ids, scores = sparse.recommend([u], n=10, filter_seen=ds.X[[u]])
print(f"\ntop 10 for MovieLens user {raw_user} (scores are logits):")
for rank, (i, s) in enumerate(zip(ids[0], scores[0], strict=True), 1):
    print(f"  {rank:>2}. {ds.item_names[i]}  ({s:.2f})")

# A new user given only a history (fold-in): the user rows are fitted against
# the trained item side and MLP, nothing is retrained.
history = ds.X[[u]]
new_ids, _ = sparse.recommend_for_history(history, n=10)
print(f"\nfolded in from the same history: {int(np.isin(new_ids, ids).sum())} of the 10 "
      "recommendations agree")
