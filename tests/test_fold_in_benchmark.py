"""benchmarks/fold_in.py: data-set choice and the section each run writes."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
fold_in = pytest.importorskip("fold_in")


def test_sets_are_parsed_and_unknown_ones_refused():
    args = fold_in.parse_args(["--losses", "ials", "--sets", "gowalla"])
    assert args.losses == ["ials"] and args.sets == ["gowalla"]
    assert fold_in.parse_args([]).sets == list(fold_in.DEFAULT_SETS)
    with pytest.raises(SystemExit):
        fold_in.parse_args(["--sets", "netflix"])


def test_each_choice_of_losses_and_sets_writes_its_own_section():
    # The sections already in docs/benchmarks.md keep their names.
    assert fold_in.section_name(["bpr", "ials"], fold_in.DEFAULT_SETS) == "fold_in"
    assert fold_in.section_name(["ials"], fold_in.DEFAULT_SETS) == "fold_in-ials"
    assert fold_in.section_name(["ials"], ["gowalla"]) == "fold_in-ials-gowalla"
    assert fold_in.section_name(["bpr", "ials"], ["builtin"]) == "fold_in-builtin"
    assert fold_in.section_name(["ials"], ["gowalla"], 0.25) == "fold_in-ials-gowalla-thin0.25"


def test_quick_data_is_the_built_in_set_only():
    sets = list(fold_in.data_sets(["builtin", "ml-100k", "gowalla"], quick=True))
    assert [name for name, _ in sets] == ["MovieLens latest-small"]
    assert sets[0][1].shape[0] > 0
