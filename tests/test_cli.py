"""The sparse-rec command line on the built-in data set."""

from sparse_rec.cli import main


def test_fit_then_recommend(tmp_path, capsys):
    model = tmp_path / "m.joblib"
    assert main(["fit", "--epochs", "3", "--quiet", "--n-components", "8",
                 "--output", str(model), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "Recall@20" in out and "model bytes" in out and model.exists()
    assert main(["recommend", "1", "5", "--model", str(model), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "user 1:" in out and "user 5:" in out and " 3. " in out


def test_recommend_unknown_user_is_a_clear_error(tmp_path, capsys):
    model = tmp_path / "m.joblib"
    main(["fit", "--epochs", "1", "--quiet", "--n-components", "4", "--output", str(model)])
    assert main(["recommend", "999999", "--model", str(model)]) == 2
    assert "unknown user ids [999999]" in capsys.readouterr().err


def test_bad_density_is_reported(capsys):
    assert main(["fit", "--density", "1.5", "--quiet", "--epochs", "1"]) == 2
    assert "density must be in (0, 1]" in capsys.readouterr().err
