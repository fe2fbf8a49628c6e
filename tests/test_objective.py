"""One trial (objective.run_trial): a fine-tune never leaves a candidate worse than it came in."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from autoprune.objective import Proposal, TrialContext, execute_trial, run_trial
from autoprune.policy import Policy
from autoprune.prune import prune
from autoprune.resolved_space import FinetuneSettings
from tests.conftest import fast_profile

POLICY = Policy.uniform(["conv1", "conv2"], sparsity=0.5, method="l1_structured")


def _context(digits, tmp_path=None, **overrides) -> TrialContext:
    model, data = digits
    inputs = next(iter(data.train_dataloader()))[0][:2]
    settings = dict(base_model=model, example_inputs=inputs, train_loader=data.train_dataloader(),
                    val_loader=data.val_dataloader(), profile=fast_profile(), artifacts_dir=tmp_path)
    settings.update(overrides)
    return TrialContext(**settings)


def _ascent(output, target):
    """A loss whose minimisation makes the classifier worse: the fine-tune climbs the cross-entropy."""
    return -F.cross_entropy(output, target)


def test_a_fine_tune_that_makes_the_candidate_worse_is_undone(digits):
    """The candidate keeps the weights it came in with, and its metric is theirs, not the fine-tuned one's."""
    ctx = _context(digits, loss=_ascent)
    outcome = run_trial(ctx, POLICY, FinetuneSettings(max_steps=30, lr=1e-2, calibration_batches=1))
    assert outcome.after_finetune < outcome.before_finetune
    assert outcome.metric == outcome.before_finetune
    untuned = prune(digits[0], POLICY, ctx.example_inputs)
    for (name, kept), (_, fresh) in zip(outcome.model.state_dict().items(), untuned.state_dict().items()):
        assert torch.equal(kept, fresh), name


def test_a_fine_tune_that_helps_is_kept(digits):
    """A fine-tune that raises the metric keeps its weights, and the trial's metric is the tuned one."""
    ctx = _context(digits)
    outcome = run_trial(ctx, POLICY, FinetuneSettings(max_steps=40, lr=3e-3, calibration_batches=1))
    assert outcome.after_finetune > outcome.before_finetune
    assert outcome.metric == outcome.after_finetune
    untuned = prune(digits[0], POLICY, ctx.example_inputs)
    assert not torch.equal(outcome.model.conv1.weight, untuned.conv1.weight)


def test_a_trial_without_a_fine_tune_has_no_before_and_after(digits):
    """Screening (no fine-tune steps) evaluates once: there is nothing to compare."""
    outcome = run_trial(_context(digits), POLICY, FinetuneSettings(max_steps=0, lr=1e-3, calibration_batches=1))
    assert outcome.before_finetune is None and outcome.after_finetune is None


def test_the_trial_report_stores_both_figures(digits, tmp_path):
    """What a backend stores carries the metric before and after the fine-tune (trials.csv shows them)."""
    ctx = _context(digits, tmp_path, loss=_ascent)
    settings = FinetuneSettings(max_steps=30, lr=1e-2, calibration_batches=1)
    report = execute_trial(ctx, Proposal(0, POLICY, settings), front=[])
    stored = report.user_attrs["finetune_metric"]
    assert stored["after"] < stored["before"] == report.values[0]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_non_finite_metric_fails_the_trial_before_or_after_the_fine_tune(digits, when):
    """NaN is never silently replaced by the other figure: the trial fails, naming it."""
    from autoprune.errors import NonFiniteMetricError

    calls = []

    def metric(net, loader):
        calls.append(1)
        return float("nan") if (len(calls) == 1) == (when == "before") else 0.5

    with pytest.raises(NonFiniteMetricError, match="nan"):
        run_trial(_context(digits, metric=metric), POLICY, FinetuneSettings(max_steps=2, lr=1e-3, calibration_batches=1))
