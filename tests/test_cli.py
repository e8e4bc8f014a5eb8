"""The sparse-rec command line on the built-in data set."""

import re

import pytest

from sparse_rec.cli import main


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = tmp_path_factory.mktemp("cli") / "m.npz"
    assert main(["fit", "--epochs", "3", "--quiet", "--n-components", "8",
                 "--output", str(model), "--threads", "1"]) == 0
    return model


def test_saved_model_file_loads_safely(model_file):
    from sparse_rec import load

    model = load(model_file)
    assert model.user_ids_.shape == (model.n_users_,)
    assert model.n_active_ == round(0.2 * 8 * (model.n_users_ + model.n_items_))
    # The estimator's default loss.
    assert model.loss == "ials" and model.n_iter_ == 3


def test_fit_with_the_bpr_loss(tmp_path, capsys):
    from sparse_rec import load

    model = tmp_path / "bpr.npz"
    assert main(["fit", "--loss", "bpr", "--epochs", "2", "--quiet", "--n-components", "8",
                 "--output", str(model), "--threads", "1"]) == 0
    assert "Recall@20" in capsys.readouterr().out
    loaded = load(model)
    assert loaded.loss == "bpr" and loaded.n_iter_ == 2 and loaded.item_bias_.any()


def test_loss_of_another_estimator_is_reported(tmp_path, capsys):
    assert main(["fit", "--estimator", "ncf", "--loss", "bpr", "--quiet", "--epochs", "1",
                 "--output", str(tmp_path / "m.npz")]) == 2
    assert "--loss is an option of --estimator mf and lightgcn only" in capsys.readouterr().err
    assert main(["fit", "--loss", "mse", "--quiet"]) == 2
    assert "invalid choice: 'mse'" in capsys.readouterr().err


@pytest.mark.parametrize("name, cls", [("ncf", "DSLNCF"), ("multvae", "DSLMultVAE"),
                                       ("lightgcn", "DSLLightGCN")])
def test_fit_trains_any_registered_estimator(tmp_path, capsys, name, cls):
    from sparse_rec import load

    model = tmp_path / f"{name}.npz"
    assert main(["fit", "--estimator", name, "--epochs", "1", "--quiet", "--n-components",
                 "4", "--output", str(model), "--threads", "1"]) == 0
    assert "NDCG@20" in capsys.readouterr().out
    loaded = load(model)
    assert type(loaded).__name__ == cls and loaded.n_iter_ == 1 and loaded.n_components == 4


def test_evaluate_reproduces_the_figures_of_fit(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["fit", "--epochs", "2", "--quiet", "--n-components", "8",
                 "--output", str(model), "--threads", "1"]) == 0
    fit_out = capsys.readouterr().out
    assert "Recall@20" in fit_out and "model bytes" in fit_out
    assert main(["evaluate", "--model", str(model)]) == 0
    ev_out = capsys.readouterr().out

    def figures(text):
        return {m[0]: m[1] for m in re.findall(r"^(Recall@20|NDCG@20)\s+(\S+)", text, re.M)}

    assert figures(ev_out) == figures(fit_out) and len(figures(ev_out)) == 2


def test_evaluate_at_another_cut_off(model_file, capsys):
    assert main(["evaluate", "--model", str(model_file), "-k", "10"]) == 0
    assert "Recall@10" in capsys.readouterr().out


def test_evaluate_refuses_a_split_the_model_was_not_trained_on(model_file, capsys):
    assert main(["evaluate", "--model", str(model_file), "--seed", "1"]) == 2
    assert "not trained on this split" in capsys.readouterr().err


def test_recommend_maps_raw_ids_and_prints_titles(model_file, capsys):
    assert main(["recommend", "1", "5", "--model", str(model_file), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "user 1:" in out and "user 5:" in out and " 3. " in out
    # Built-in MovieLens titles carry a year in brackets.
    assert re.search(r"\(\d{4}\)", out)


def test_recommend_unknown_user_is_a_clear_error(model_file, capsys):
    assert main(["recommend", "999999", "--model", str(model_file)]) == 2
    assert "unknown user ids ['999999']" in capsys.readouterr().err


def test_missing_model_file_is_reported(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in capsys.readouterr().err


def test_bad_density_is_reported(capsys):
    assert main(["fit", "--density", "1.5", "--quiet", "--epochs", "1"]) == 2
    assert "density must be in (0, 1]" in capsys.readouterr().err
