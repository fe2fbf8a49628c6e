"""SearchResult: the Pareto front, best-within-budget, closest-when-infeasible, and the written files."""

from __future__ import annotations

import json

from autoprune.result import SearchResult, TrialRecord


def _r(n, metric, latency, size, feasible=True, state="complete"):
    return TrialRecord(number=n, state=state, feasible=feasible, metric=metric, latency_ms=latency, size_mb=size)


TRIALS = [_r(0, 0.99, 1.0, 1.0), _r(1, 0.98, 0.5, 0.5), _r(2, 0.97, 0.6, 0.6),  # 2 is dominated by 1
          _r(3, 0.99, 0.2, 0.1, feasible=False), _r(4, None, None, None, feasible=False, state="failed")]


def test_front_holds_only_non_dominated_feasible_trials():
    """Dominated, infeasible and failed trials are never on the front."""
    assert [c.number for c in SearchResult(trials=TRIALS).pareto] == [1, 0]


def test_best_respects_budget_and_explicit_limits():
    """best() is the most accurate candidate within the budgets, or within explicit limits."""
    result = SearchResult(trials=TRIALS, budget_ms=0.8)
    assert result.best().number == 1
    assert result.best(max_latency_ms=2.0).number == 0
    assert result.best(max_latency_ms=0.1) is None


def test_closest_ranks_by_overshoot():
    """With nothing feasible, the nearest trials to the budget come first."""
    result = SearchResult(trials=[_r(0, 0.9, 2.0, 1, False), _r(1, 0.5, 1.1, 1, False)], budget_ms=1.0)
    assert [r.number for r in result.closest()] == [1, 0]


def test_save_writes_the_three_files(tmp_path):
    """pareto.json, trials.csv and pareto.png are written and agree with the result."""
    files = SearchResult(trials=TRIALS, budget_ms=0.8, study_name="t").save(tmp_path)
    data = json.loads(files["pareto"].read_text())
    assert [c["number"] for c in data["pareto"]] == [1, 0] and data["best"] == 1
    assert files["trials"].read_text().count("\n") == len(TRIALS) + 1
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
