"""refine(): the long fine-tune of Pareto candidates, on hand-made candidates of a narrow digits CNN."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from autoprune.loading import candidate_loader
from autoprune.demo import DigitsCNN, DigitsDataModule, train_classifier
from autoprune.errors import AutopruneInputError
from autoprune.export import WEIGHTS, load_pruned, save_pruned
from autoprune.finetune import accuracy
from autoprune.policy import Policy
from autoprune.prune import prune
from autoprune.refine import REFINED_JSON, refine
from autoprune.result import SearchResult, TrialRecord

EXAMPLE = torch.randn(2, 1, 8, 8)
LAYERS = ["conv1", "conv2", "conv3", "fc"]


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=64)
    return train_classifier(DigitsCNN(width=8), data.train_dataloader(), epochs=2).eval(), data


def _candidate(base, data, artifacts, number, policy, *, latency, size, lr=1e-3):
    """A front record whose saved weights are ``policy`` applied to ``base`` without fine-tuning."""
    model = prune(base, policy, EXAMPLE)
    save_pruned(model, policy, artifacts / f"trial_{number:05d}", example_inputs=EXAMPLE, formats=("torchscript",))
    return TrialRecord(number=number, state="complete", feasible=True, metric=accuracy(model, data.val_dataloader()),
                       latency_ms=latency, size_mb=size, policy=policy.to_dict(),
                       artifact_dir=f"trial_{number:05d}", lr=lr)


@pytest.fixture()
def result(trained, tmp_path):
    """A front of three: the dense model, a structured 70% candidate (fastest), an unstructured 80% candidate
    (smallest)."""
    base, data = trained
    artifacts = tmp_path / "candidates"
    trials = [
        _candidate(base, data, artifacts, 0, Policy(), latency=3.0, size=0.3),
        _candidate(base, data, artifacts, 1, Policy.uniform(LAYERS, sparsity=0.7, method="l1_structured"), latency=1.0,
                   size=0.1),
        _candidate(base, data, artifacts, 2, Policy.uniform(LAYERS, sparsity=0.8, method="l1_unstructured"),
                   latency=2.0, size=0.05),
    ]
    front = {t.number for t in SearchResult(trials=trials).pareto}
    assert front == {0, 1, 2}, "the hand-made records must all be Pareto candidates"
    return SearchResult(trials=trials, out_dir=tmp_path, study_name="hand", model_loader=candidate_loader(artifacts, base))


def test_refining_raises_the_metric_of_an_undertrained_candidate(result, trained):
    """70% of the channels removed and never fine-tuned: 40 more steps recover accuracy."""
    (refined,) = refine(result, trained[1], steps=40, trials=[1], formats=("torchscript",))
    assert refined.metric_before == result.trials[1].metric
    assert refined.metric > refined.metric_before + 0.05


def test_refine_fine_tunes_with_dropout_as_the_search_s_trials_did(result, trained, monkeypatch):
    """A study recorded its space's ``finetune.dropout``: refining its candidates keeps that choice (a pretrained
    space's ``off``), and a study without the record keeps dropout as before."""
    import dataclasses

    import autoprune.refine as refining
    from autoprune.study import StudyMeta

    seen = []
    real = refining.finetune
    monkeypatch.setattr(refining, "finetune", lambda *a, **k: seen.append(k["dropout"]) or real(*a, **k))
    refine(result, trained[1], steps=1, trials=[1], formats=("torchscript",))
    off = dataclasses.replace(result, meta=StudyMeta(extra={"dropout": "off"}))
    refine(off, trained[1], steps=1, trials=[1], formats=("torchscript",))
    assert seen == ["keep", "off"]


def test_the_default_refines_every_pruned_candidate_and_not_the_dense_model(result, trained):
    refined = refine(result, trained[1], steps=2, formats=("torchscript",))
    assert [r.number for r in refined] == [1, 2]


def test_latency_size_and_the_trials_learning_rate_are_kept(result, trained):
    (refined,) = refine(result, trained[1], steps=2, trials=[2], formats=("torchscript",))
    assert (refined.latency_ms, refined.size_mb, refined.lr, refined.steps) == (2.0, 0.05, 1e-3, 2)
    (override,) = refine(result, trained[1], steps=2, trials=[2], lr=5e-4, formats=("torchscript",))
    assert override.lr == 5e-4


def test_the_saved_directory_reloads_as_the_refined_model(result, trained):
    """load_pruned on the refined directory gives the model that was evaluated, not the search's one."""
    base, data = trained
    (refined,) = refine(result, data, steps=40, trials=[1], formats=("torchscript",))
    reloaded = load_pruned(refined.directory, base)
    assert accuracy(reloaded, data.val_dataloader()) == pytest.approx(refined.metric)
    standalone = torch.jit.load(str(refined.directory / "model.ts"))
    torch.testing.assert_close(standalone(EXAMPLE), reloaded(EXAMPLE), atol=1e-4, rtol=0)
    assert Policy.from_json(refined.directory / "policy.json") == result.policy(result.trials[1])


def test_a_refine_that_makes_a_candidate_worse_saves_the_search_s_weights(result, trained):
    """A longer fine-tune that lowers the metric is undone: the refined directory holds the search's weights."""
    from torch.nn import functional as F

    base, data = trained
    (refined,) = refine(result, data, steps=20, trials=[1], lr=1e-2, formats=("torchscript",),
                        loss=lambda out, y: -F.cross_entropy(out, y))  # climbs the loss: accuracy falls
    assert refined.undone and refined.metric == refined.metric_before
    searched = result.load_model(result.trials[1])
    saved = load_pruned(refined.directory, base)
    for (name, a), (_, b) in zip(saved.state_dict().items(), searched.state_dict().items()):
        assert torch.equal(a, b), name


def test_the_searchs_weights_are_untouched_so_a_second_refine_does_not_compound(result, trained, tmp_path):
    saved = tmp_path / "candidates" / "trial_00001" / WEIGHTS
    before = hashlib.sha256(saved.read_bytes()).hexdigest()
    (first,) = refine(result, trained[1], steps=10, trials=[1], formats=("torchscript",))
    (second,) = refine(result, trained[1], steps=10, trials=[1], formats=("torchscript",))
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == before
    assert second.metric == first.metric, "both started from the search's weights, with the same seed"


def test_unstructured_zeros_stay_zero(result, trained):
    base, data = trained
    (refined,) = refine(result, data, steps=20, trials=[2], formats=("torchscript",))
    model = load_pruned(refined.directory, base)
    for name in LAYERS:
        weight = dict(model.named_modules())[name].weight
        assert (weight == 0).float().mean() >= 0.79, name


def test_the_summary_keeps_the_entries_of_earlier_refines(result, trained, tmp_path):
    refine(result, trained[1], steps=2, trials=[1], formats=("torchscript",))
    refine(result, trained[1], steps=3, trials=[2], formats=("torchscript",))
    summary = json.loads((tmp_path / "refined" / REFINED_JSON).read_text())
    assert [(c["number"], c["steps"]) for c in summary["candidates"]] == [(1, 2), (2, 3)]


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"steps": 2.5}, "steps must be a positive integer"),
    ({"steps": True}, "steps must be a positive integer"),
    ({"steps": 2, "lr": -1.0}, "lr must be a positive number"),
    ({"steps": 2, "lr": "fast"}, "lr must be a positive number"),
    ({"steps": 2, "trials": [1, 7]}, "trial(s) [7] are not Pareto candidates"),
])
def test_bad_arguments_are_named(result, trained, kwargs, message):
    with pytest.raises(AutopruneInputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        refine(result, trained[1], **kwargs)


def test_a_result_read_without_its_base_model_is_refused(result, trained):
    bare = SearchResult(trials=result.trials, out_dir=result.out_dir)
    with pytest.raises(AutopruneInputError, match="without its base model"):
        refine(bare, trained[1], steps=2)


def test_a_trial_without_a_recorded_learning_rate_asks_for_one(result, trained):
    old = [TrialRecord(**{**t.to_dict(), "lr": None}) for t in result.trials]
    older = SearchResult(trials=old, out_dir=result.out_dir, model_loader=result.model_loader)
    with pytest.raises(AutopruneInputError, match="pass lr"):
        refine(older, trained[1], steps=2, trials=[1])
    assert refine(older, trained[1], steps=2, trials=[1], lr=1e-3, formats=("torchscript",))[0].lr == 1e-3


def test_a_front_of_the_dense_model_alone_has_nothing_to_refine(result, trained):
    dense_only = SearchResult(trials=result.trials[:1], out_dir=result.out_dir, model_loader=result.model_loader)
    with pytest.raises(AutopruneInputError, match="no pruned candidate"):
        refine(dense_only, trained[1], steps=2)


def test_refining_by_distillation_runs_the_teacher_once_per_batch_for_every_candidate(result, trained):
    """distill= refines against the dense model; the candidates share one teacher, so batches that repeat
    (an unshuffled loader) are not run through it again."""
    base, data = trained
    unshuffled = (torch.utils.data.DataLoader(data.splits["train"], batch_size=64), data.val_dataloader())
    calls = []
    hook = base.register_forward_hook(lambda *args: calls.append(1))
    try:
        refined = refine(result, unshuffled, steps=3, trials=[1, 2], distill=True, teacher=base,
                         formats=("torchscript",))
    finally:
        hook.remove()
    assert [r.number for r in refined] == [1, 2] and all(0 <= r.metric <= 1 for r in refined)
    assert len(calls) == 3, "three batches, each through the teacher once for both candidates"
    with pytest.raises(AutopruneInputError, match="pass teacher"):
        refine(result, data, steps=2, trials=[1], distill=True)
