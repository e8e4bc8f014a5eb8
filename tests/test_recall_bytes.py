"""benchmarks/recall_bytes.py: stored points merge across runs, table and figure from them."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
recall_bytes = pytest.importorskip("recall_bytes")


def _point(curve, d, density, recall):
    return {"curve": curve, "d": d, "density": density, "recall": recall, "ndcg": recall,
            "bytes": int(1e5 * d * density), "fit_s": 1.0, "epochs": 20,
            "label": f"implicit ALS-{d} (alpha=5)" if curve == "als" else curve}


def test_merge_replaces_measured_points_and_keeps_the_rest():
    stored = {}
    recall_bytes.merge(stored, "gowalla", "first", [_point("ials", 64, 0.2, 0.1),
                                                    _point("als", 64, 1.0, 0.2)], "run 1")
    recall_bytes.merge(stored, "gowalla", "second", [_point("ials", 64, 0.2, 0.3),
                                                     _point("ials", 64, 0.1, 0.25)], "run 2")
    pts = {(p["curve"], p["d"], p["density"]): p["recall"] for p in stored["gowalla"]["points"]}
    assert pts == {("ials", 64, 0.2): 0.3, ("ials", 64, 0.1): 0.25, ("als", 64, 1.0): 0.2}
    assert stored["gowalla"]["commands"] == ["run 1", "run 2"]
    assert stored["gowalla"]["info"] == "second"
    by_curve = recall_bytes.curves(stored["gowalla"])
    assert [p["density"] for p in by_curve["ials"]] == [0.1, 0.2]  # ordered by bytes


def test_table_and_figure_from_points(tmp_path):
    stored = {}
    points = [_point(loss, 64, dens, 0.1 + dens) for loss in ("bpr", "ials")
              for dens in (0.1, 0.2, 1.0)]
    points += [_point("als", f, 1.0, 0.1 + f / 1000) for f in (13, 64)]
    points += [_point("shape-ials", d, 12.8 / d, 0.3) for d in (32, 64)]
    recall_bytes.merge(stored, "builtin", "info", points)
    text = recall_bytes.table(stored)
    assert text.count("\n") == 2 + len(points) - 1
    assert "DSL-MF ials (shape)" in text and "implicit ALS-64 (alpha=5)" in text
    pytest.importorskip("matplotlib")
    path = recall_bytes.draw(stored, tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_losses_come_from_the_estimator():
    from sparse_rec._mf.estimator import LOSS_DEFAULTS

    args = recall_bytes.parse_args([])
    assert args.losses == list(LOSS_DEFAULTS)
    with pytest.raises(SystemExit):
        recall_bytes.parse_args(["--losses", "nope"])
