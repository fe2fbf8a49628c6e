"""SearchResult: the Pareto front, best-within-budget, closest-when-infeasible, loading candidates."""

from __future__ import annotations

import pytest

from autoprune.errors import CandidateError
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


def test_a_trial_that_is_no_candidate_does_not_load():
    """Only front candidates have saved weights; asking for another trial's model is a CandidateError."""
    result = SearchResult(trials=TRIALS, model_loader=lambda record: record)
    with pytest.raises(CandidateError, match="no saved weights"):
        result.load_model(TRIALS[2])


def test_a_result_read_without_its_base_model_says_how_to_attach_it():
    saved = TrialRecord(**{**TRIALS[0].to_dict(), "artifact_dir": "trial_00000"})
    with pytest.raises(CandidateError, match="without its base model"):
        SearchResult(trials=[saved]).load_model(saved)


def test_a_dense_seed_made_worse_by_the_fine_tune_is_flagged():
    """The trial that prunes nothing scoring below the dense model as it came means the recipe hurts."""
    from autoprune.policy import Policy
    from autoprune.study import StudyMeta

    dense = TrialRecord(**{**TRIALS[0].to_dict(), "policy": Policy().to_dict(), "metric": 0.86})
    worse = SearchResult(trials=[dense], meta=StudyMeta(dense_metric=0.95))
    assert "made the unpruned model worse" in worse.dense_drift()
    assert SearchResult(trials=[dense], meta=StudyMeta(dense_metric=0.865)).dense_drift() is None
    assert SearchResult(trials=[dense]).dense_drift() is None


def test_a_dense_seed_whose_fine_tune_was_undone_is_still_flagged():
    """A trial undoes a fine-tune that made it worse, so its metric is the dense one; the warning reads the
    fine-tuned figure stored beside it, since every pruned candidate got that same fine-tune."""
    from autoprune.policy import Policy
    from autoprune.study import StudyMeta

    dense = TrialRecord(**{**TRIALS[0].to_dict(), "policy": Policy().to_dict(), "metric": 0.95,
                           "metric_before_finetune": 0.95, "metric_after_finetune": 0.86})
    assert dense.finetune_undone
    warning = SearchResult(trials=[dense], meta=StudyMeta(dense_metric=0.95)).dense_drift()
    assert "0.8600 after it" in warning and "undone" in warning and "distil" in warning
    distilled = SearchResult(trials=[dense], meta=StudyMeta(dense_metric=0.95)).dense_drift(distilled=True)
    assert "learning-rate range" in distilled and "distil" not in distilled  # it already distils


def test_an_int8_dense_trial_is_not_taken_for_the_fine_tune_s_drift():
    """A dense policy that quantizes scores its int8 model: that says nothing about the fine-tune."""
    from autoprune.policy import Policy
    from autoprune.study import StudyMeta

    int8 = TrialRecord(**{**TRIALS[0].to_dict(), "policy": Policy(quantize="int8_static").to_dict(), "metric": 0.80})
    assert SearchResult(trials=[int8], meta=StudyMeta(dense_metric=0.95)).dense_drift() is None


def test_only_finished_trials_count_towards_the_total():
    """Complete trials and trials failed by their own error count; interrupted, lost and dropped ones do not
    (the progress bar's count: a resumed study never shows more trials done than its total)."""
    from autoprune.result import DUPLICATE, INTERRUPTED, NO_HEARTBEAT, SURPLUS

    counted = [TrialRecord(0, "complete", True, 0.9, 1.0, 1.0), TrialRecord(1, "failed", failure_reason="ValueError")]
    not_counted = [TrialRecord(2, "failed", failure_reason=r) for r in (INTERRUPTED, NO_HEARTBEAT, SURPLUS, DUPLICATE)]
    assert all(t.counts for t in counted) and not any(t.counts for t in not_counted + [TrialRecord(3, "running")])
