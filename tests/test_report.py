"""The report: the files a run directory gets, and the labels of the front's table."""

from __future__ import annotations

import json

import pytest

from autoprune.report import policy_label, write_files
from autoprune.result import SearchResult
from tests.test_result import TRIALS


def test_save_writes_the_three_files(tmp_path):
    """pareto.json, trials.csv and pareto.png are written and agree with the result."""
    files = write_files(SearchResult(trials=TRIALS, budget_ms=0.8, study_name="t"), tmp_path)
    data = json.loads(files["pareto"].read_text())
    assert [c["number"] for c in data["pareto"]] == [1, 0] and data["best"] == 1
    assert files["trials"].read_text().count("\n") == len(TRIALS) + 1
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("policy, label", [
    (None, "dense"),
    ({"layers": {"conv1": {"sparsity": 0.0, "method": "l1_structured"}}}, "dense"),
    ({"layers": {"stem": {"sparsity": 0.5, "method": "l1_structured"}}, "drop": ["layers.1", "layers.3"]},
     "l1_structured,2 block(s) dropped"),
    ({"layers": {}, "drop": ["layers.1"]}, "1 block(s) dropped"),
    ({"layers": {"stem": {"sparsity": 0.5, "method": "l1_structured"}}, "quantize": "int8_static"},
     "l1_structured + int8_static"),
    ({"layers": {}, "quantize": "int8_dynamic"}, "dense + int8_dynamic"),
])
def test_the_front_table_says_which_methods_prune_and_how_many_blocks_are_dropped(policy, label):
    assert policy_label(policy) == label


def test_a_run_whose_every_trial_failed_says_so_with_the_most_common_reason():
    """Not "no candidate meets the budget": every trial failed, and the commonest reason is named."""
    from rich.console import Console

    from autoprune.report import print_front
    from autoprune.result import TrialRecord

    trials = [TrialRecord(0, "failed", failure_reason="RuntimeError: shape mismatch"),
              TrialRecord(1, "failed", failure_reason="RuntimeError: shape mismatch"),
              TrialRecord(2, "failed", failure_reason="ValueError: nan"),
              TrialRecord(3, "failed", failure_reason="interrupted")]
    console = Console(record=True, width=200)
    print_front(SearchResult(trials=trials, budget_ms=1.0), console)
    text = console.export_text()
    assert "no trial completed: 3 failed" in text and "(2 of them): RuntimeError: shape mismatch" in text
    assert "meets the budget" not in text
