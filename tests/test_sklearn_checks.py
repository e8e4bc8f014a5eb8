"""scikit-learn's common estimator checks."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sparse_rec import DSLMatrixFactorization
from sparse_rec._lightgcn import DSLLightGCN
from sparse_rec._ncf import DSLNCF

ESTIMATORS = [
    DSLMatrixFactorization(n_components=4, max_iter=3, update_interval=1, random_state=0,
                           n_threads=1),
    DSLNCF(n_components=4, hidden_layer_sizes=(8, 4), max_iter=3, update_interval=1,
           batch_size=32, random_state=0, n_threads=1),
    DSLLightGCN(n_components=4, max_iter=3, update_interval=1, batch_size=64, random_state=0,
                n_threads=1),
]

EXPECTED_FAILURES = {}


def _expected(est):
    return EXPECTED_FAILURES.get(type(est).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected)
def test_sklearn_compatible(estimator, check):
    check(estimator)
