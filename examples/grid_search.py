"""Search the density of DSL matrix factorisation with GridSearchCV.

A Pipeline (binarise -> DSLMatrixFactorization) is searched over
``mf__density`` on the built-in MovieLens latest-small, scoring NDCG@10 on
users the model never trained on (strong generalisation: folds of users,
each test user folded in from 80% of its history). The best model is then
saved as a safe model file and loaded back to serve a new user.

Run: ``python examples/grid_search.py`` (about a minute on two cores).
"""

import tempfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import sparse_rec
from sparse_rec import DSLMatrixFactorization
from sparse_rec.datasets import load_movielens_small
from sparse_rec.metrics import make_ranking_scorer
from sparse_rec.model_selection import UserKFold, fold_in_split
from sparse_rec.preprocessing import BinarizeInteractions

data = load_movielens_small()  # ratings 0.5..5 as values
X_in, y = fold_in_split(data.X, test_size=0.2, random_state=0)

pipe = Pipeline([
    ("binarize", BinarizeInteractions()),
    ("mf", DSLMatrixFactorization(n_components=32, random_state=0, n_threads=2)),
])
search = GridSearchCV(
    pipe,
    {"mf__density": [0.05, 0.2, 1.0]},
    cv=UserKFold(n_splits=3, random_state=0),
    scoring=make_ranking_scorer("ndcg", k=10),
)
# X holds every interaction (training users learn from all of theirs); the
# scorer folds test users in from X minus y and scores them on y.
search.fit(X_in + y, y)

print("density  mean NDCG@10 (3 folds of new users)")
for d, s in zip(search.cv_results_["param_mf__density"], search.cv_results_["mean_test_score"],
                strict=True):
    print(f"{d:>7}  {s:.4f}")
print("best:", search.best_params_)

# Serve: save the refitted best model and load it in a "service".
mf = search.best_estimator_.named_steps["mf"]
with tempfile.TemporaryDirectory() as tmp:
    path = mf.save(Path(tmp) / "model.npz", user_ids=data.user_ids, item_ids=data.item_ids)
    served = sparse_rec.load(path)
    print(f"model file: {path.stat().st_size / 1024:.0f} KiB, "
          f"{served.n_active_:,} active weights")
    # A new user who liked the first five movies of the catalogue.
    history = np.zeros((1, served.n_items_), np.float32)
    history[0, :5] = 1
    ids, _ = served.recommend_for_history(history, n=5)
    for i in ids[0]:
        print("  ", served.item_ids_[i], data.item_names[i])
