"""Mult-VAE trained sparse, on the built-in MovieLens data (strong generalisation).

A fifth of the users are held out of training; each held-out user's
history is split 80/20 at random, the model sees the 80% (one forward
pass, no fold-in training) and ranks the 20% over all movies. Trains
DSLMultVAE at 20% density and prints Recall@20 and NDCG@20, the stored
bytes against the dense model's, and recommendations for one new user.

Run with ``python examples/multvae.py`` (about 20 seconds on two cores).
"""

import time

from sparse_rec import DSLMultVAE
from sparse_rec.datasets import load_movielens_small
from sparse_rec.metrics import ndcg_at_k, recall_at_k
from sparse_rec.model_selection import random_split, train_test_split_users

ds = load_movielens_small(binarize=True)
train_users, new_users = train_test_split_users(ds.X, 0.2, random_state=0)
given, held_out = random_split(ds.X[new_users], test_size=0.2, random_state=0)

model = DSLMultVAE(density=0.2, max_iter=20, random_state=0)
t0 = time.perf_counter()
model.fit(ds.X[train_users])
seconds = time.perf_counter() - t0
ids, _ = model.recommend_for_history(given, n=20)  # the given 80% is filtered out
print(f"{ds.name}: {len(train_users)} training users, {len(new_users)} new users")
print(f"Recall@20 {recall_at_k(ids, held_out, 20):.4f}, NDCG@20 {ndcg_at_k(ids, held_out, 20):.4f}"
      f" ({seconds / model.n_iter_:.2f} s/epoch)")
print(f"active weights {model.n_active_:,} of {2 * ds.n_items * 600:,} in the two item tables;"
      f" {model.nbytes_:,} bytes stored, {model.nbytes_ / model.dense_nbytes_:.2f}x dense")
first = ds.item_names[ids[0, :5]] if ds.item_names is not None else ids[0, :5]
print("top 5 for the first new user:", [str(t) for t in first])
