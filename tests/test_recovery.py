"""Recovery: when the trials are done, a few front candidates, spread along it, fine-tune much longer; the
front and best/ then hold them, and they do not count towards the study's total."""

from __future__ import annotations

import json

import optuna
import pytest

from autoprune.api import check_arguments, search
from autoprune.errors import AutopruneInputError
from autoprune.finetune import Recipe
from autoprune.recovery import Recovery, choose, reserve_seconds, spread, trial_timeout
from autoprune.result import TrialRecord
from tests.conftest import fast_profile

TINY = "tests/data/tiny.yaml"


def _record(n, latency, metric):
    return TrialRecord(number=n, state="complete", feasible=True, metric=metric, latency_ms=latency, size_mb=1.0)


def test_spread_takes_both_ends_and_evenly_between():
    front = [_record(n, latency=float(n), metric=n / 10) for n in range(7)]
    assert [c.number for c in spread(front, 3)] == [0, 3, 6]
    assert [c.number for c in spread(front, 1)] == [6], "one: the most accurate"
    assert [c.number for c in spread(front[:2], 3)] == [0, 1]


def test_a_floor_recovers_the_fastest_candidates_that_keep_it_and_leaves_the_rest():
    """With floor 0.9 of a dense metric 1.0: candidates under 0.9 are left (recovery cannot lift them that far),
    and of the others the fastest go first; relative to the front's best when the study has no dense metric."""
    front = [_record(n, latency=float(n), metric=0.8 + n / 50) for n in range(10)]  # slower is better
    chosen = choose(front, Recovery(steps=5, top=2, floor=0.9), dense_metric=1.0)
    assert [c.number for c in chosen] == [5, 6] and all(c.metric >= 0.9 for c in chosen)
    assert [c.number for c in choose(front, Recovery(steps=5, top=2, floor=0.99), dense_metric=None)] == [9]
    assert choose(front, Recovery(steps=5, top=3), dense_metric=1.0) == spread(front, 3)


def test_the_recovery_learning_rate_decays_linearly_to_zero_after_the_warm_up():
    recipe = Recipe(lr=1.0, warmup_steps=2, decay_steps=10)
    factors = [recipe.factor(step) for step in range(11)]
    assert factors[0] == 0.5 and factors[1] == 1.0 and factors[10] == 0.0
    assert all(a >= b for a, b in zip(factors[1:], factors[2:])), "never rises after the warm-up"


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 5, "top": 0}, {"steps": 2.5}, {"steps": 5, "floor": 1.5},
                                    {"steps": 5, "floor": 0.0}])
def test_a_recovery_that_cannot_run_is_refused(kwargs):
    with pytest.raises(AutopruneInputError, match="recovery"):
        Recovery(**kwargs)


@pytest.fixture(scope="module")
def recovered(digits, tmp_path_factory):
    model, data = digits
    out = tmp_path_factory.mktemp("recovered")
    result = search(model, data, space=TINY, n_trials=5, seed=0, out_dir=out, profile=fast_profile(),
                    recover=Recovery(steps=6, top=2))
    return result, out


def test_recovery_trials_continue_front_candidates_and_do_not_count(recovered):
    result, _ = recovered
    recoveries = [t for t in result.trials if t.recovery_steps]
    assert 1 <= len(recoveries) <= 2 and all(t.recovery_steps == 6 for t in recoveries)
    assert sum(1 for t in result.trials if t.counts) == 5, "the study's total is the trials', recoveries apart"
    parents = {t.number: t for t in result.trials}
    for child in recoveries:
        parent = parents[child.parent]
        assert child.policy == parent.policy and child.latency_ms == parent.latency_ms
        assert child.metric >= parent.metric, "a recovery that would make it worse keeps the weights it came with"
        assert child.finetune_steps == (parent.finetune_steps or 0) + 6


def test_the_front_and_best_hold_the_recovered_candidates(recovered):
    result, out = recovered
    recovered_from = {t.parent for t in result.trials if t.recovery_steps and t.complete}
    front = {c.number for c in result.pareto}
    assert not front & recovered_from, "a recovered parent leaves the front to its recovery"
    saved = json.loads((out / "pareto.json").read_text())
    assert any(c.get("recovery_steps") for c in saved["pareto"])
    best = result.best()
    if best.parent in recovered_from or best.recovery_steps:
        assert json.loads((out / "best" / "policy.json").read_text()) == best.policy


def test_a_resumed_search_does_not_recover_a_candidate_twice(recovered, digits):
    result, out = recovered
    model, data = digits
    again = search(model, data, space=TINY, n_trials=5, seed=0, out_dir=out, profile=fast_profile(),
                   recover=Recovery(steps=6, top=2))
    assert len([t for t in again.trials if t.recovery_steps]) == len([t for t in result.trials if t.recovery_steps])


def test_a_time_budget_keeps_the_recovery_its_estimated_time():
    probe = {"seconds_per_step": 0.5, "evaluate_seconds": 10.0}
    timeout = trial_timeout(3600, spent=100, recovery=Recovery(steps=1000, top=2), probe=probe)
    assert timeout == pytest.approx(3600 - 100 - 2 * (1000 * 0.5 + 2 * 10.0))
    assert trial_timeout(3600, spent=100, recovery=None, probe=None) == pytest.approx(3500)


def test_a_time_budget_the_start_up_and_the_recovery_fill_warns_and_leaves_the_trials_no_time():
    probe = {"seconds_per_step": 0.5, "evaluate_seconds": 10.0}
    with pytest.warns(UserWarning, match="leaves no time for trials"):
        assert trial_timeout(600, spent=200, recovery=Recovery(steps=1000, top=1), probe=probe) == 0.0


def test_a_time_budget_the_recovery_alone_fills_is_refused_before_the_seeds_are_analysed(digits, tmp_path):
    """The error names the options to change, and comes before the start-up's scans: no seed is queued (a
    rerun with a larger budget queues them, as after any interrupted start-up)."""
    model, data = digits
    with pytest.raises(AutopruneInputError, match=r"more than the whole time budget \(--time-budget 60 s\)"):
        search(model, data, space=TINY, n_trials=5, seed=0, out_dir=tmp_path, profile=fast_profile(),
               recover=Recovery(steps=10**7, top=1), time_budget=60)
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.trials == []


def test_a_time_budget_without_the_probe_s_timings_is_refused():
    with pytest.raises(AutopruneInputError, match="--timeout"):
        reserve_seconds(Recovery(steps=10), {"before": 1.0, "after": 1.0, "lr": 1e-4, "steps": 10})


def test_a_timeout_and_a_time_budget_together_are_refused():
    with pytest.raises(AutopruneInputError, match="not both"):
        check_arguments(timeout=60, time_budget=600)
