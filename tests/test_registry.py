"""The model registry is the one list read by the namespace, model files, serving, CLI."""

import sparse_rec
from sparse_rec import _io, _registry, serving
from sparse_rec.cli import build_parser


def test_every_reader_sees_the_registered_models():
    names = set(_registry.MODELS)
    assert set(_io._ESTIMATORS) == names
    assert set(serving._SERVED) == {n for n, m in _registry.MODELS.items() if m.served}
    for name in _registry.exported():
        assert name in sparse_rec.__all__
        assert getattr(sparse_rec, name) is _registry.load_class(_registry.MODELS[name].estimator)
    fit = build_parser().parse_args(["fit"])
    assert fit.estimator == "mf"


def test_registered_classes_exist_and_are_named_as_registered():
    for name, model in _registry.MODELS.items():
        assert _registry.load_class(model.estimator).__name__ == name
        if model.served is not None:
            served = _registry.load_class(model.served)
            assert served.__name__.startswith("Served")
