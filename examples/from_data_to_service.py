"""From your data to a service: a DataFrame with string ids to a served model.

1. A pandas DataFrame of (user, movie, rating) rows with *string* ids
   (built here from the MovieLens copy shipped with the package).
2. ``from_frame`` -> an InteractionDataset; ``fit(dataset)`` keeps the raw ids.
3. ``save`` -> one model file; ``serving.load_model`` -> a read-only served
   model that answers raw ids (``recommend_ids``, ``explain``, ``similar_users``).
4. New users and a new movie arrive: ``partial_fit_users`` / ``partial_fit_items``
   add them without a refit, the file is saved again and served again.

Run with ``python examples/from_data_to_service.py`` (a few seconds).
"""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

import sparse_rec
from sparse_rec import DSLMatrixFactorization
from sparse_rec.datasets import from_frame, load_movielens_small
from sparse_rec.serving import load_model

# --- 1. your data: one row per interaction, ids are strings ---------------------------
ml = load_movielens_small()
C = ml.X.tocoo()
df = pd.DataFrame({
    "user": np.char.add("user-", ml.user_ids[C.row].astype(str)),
    "movie": np.char.add("movie-", ml.item_ids[C.col].astype(str)),
    "rating": C.data,
})
df = df[df["rating"] >= 3.5]  # implicit feedback: the movies a user liked
# Ten users arrive after training: keep them out of the first fit.
late = df["user"].isin([f"user-{u}" for u in range(601, 611)])
print(f"{len(df)} liked (user, movie) rows, {df['user'].nunique()} users; "
      f"{int(late.sum())} rows of 10 users arrive later")

# --- 2. a dataset and a fitted model ---------------------------------------------------
ds = from_frame(df[~late], user="user", item="movie")
print(ds, "| raw ids:", ds.user_ids[:2], ds.item_ids[:2])
model = DSLMatrixFactorization(n_components=32, density=0.2, max_iter=15, random_state=0,
                               n_threads=2).fit(ds)
print(f"fitted: {model.n_active_} active weights, {model.nbytes_ / 1e6:.2f} MB stored")

# --- 3. a model file and a served model answering raw ids ------------------------------
folder = Path(tempfile.mkdtemp())
path = model.save(folder / "movies.npz")
served = load_model(path)
print(served.recommend_ids(["user-1"], n=5, as_frame=True).to_string(index=False))
best = served.recommend_ids(["user-1"], n=1)[0][0, 0]
why = served.explain(served.user_index(["user-1"])[0], served.item_index([best])[0], n=3)
print(f"{best} for user-1 (score {why.score:.3f}) because of",
      ", ".join(f"{served.item_ids_[j]} ({c:+.3f})" for j, c in
                zip(why.items, why.contributions, strict=True)))
friends, _ = served.similar_users(served.user_index(["user-1"]), n=3)
print("users most like user-1:", served.user_ids_[friends[0]].tolist())
try:
    served.recommend_ids(["user-601"])
except KeyError as e:
    print("unknown before the update:", e)

# --- 4. new users and a new movie, without a refit --------------------------------------
trainer = sparse_rec.load(path)  # the estimator, which can be updated
new = df[late & df["movie"].isin(trainer.item_ids_)]
new_ids = np.unique(new["user"].to_numpy().astype(str))
rows = np.searchsorted(new_ids, new["user"].to_numpy().astype(str))
H = sp.csr_matrix((np.ones(len(new), np.float32),
                   (rows, trainer.item_index(new["movie"].to_numpy()))),
                  shape=(len(new_ids), trainer.n_items_))
H.sum_duplicates()
users = np.arange(trainer.n_users_, trainer.n_users_ + len(new_ids))
trainer.partial_fit_users(users, H, ids=new_ids)
# A new movie liked by the users who liked movie-1 (a sequel, say).
fans = trainer.seen_[:, trainer.item_index(["movie-1"])]
trainer.partial_fit_items([trainer.n_items_], fans, ids=["movie-1-sequel"])
served = load_model(trainer.save(folder / "movies.npz"))
print(served.recommend_ids(["user-601", "user-610"], n=3, as_frame=True).to_string(index=False))
pair = served.item_index(["movie-1", "movie-1-sequel"])
s = served.score_items(np.arange(served.n_users_), np.tile(pair, (served.n_users_, 1)))
print(f"scores of movie-1 and its sequel over all users: correlation "
      f"{np.corrcoef(s.T)[0, 1]:.2f}")
assert served.n_users_ == ds.n_users + len(new_ids) and "movie-1-sequel" in served.item_ids_
