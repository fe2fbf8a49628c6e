"""Multi-fidelity search: rungs, promotion by Pareto rank, screening, continuing from saved weights, and the
latency cache."""

from __future__ import annotations

import csv

import optuna
import pytest
import torch
from torch import nn

from autoprune.api import search
from autoprune.backends.book import StudyBook, attrs_of
from autoprune.backends.samplers import make_sampler
from autoprune.backends.storage import make_storage
from autoprune.errors import AutopruneInputError, SearchSpaceError
from autoprune.export import load_pruned
from autoprune.fidelity import Fidelity, contributions, hypervolume, non_dominated, promotable
from autoprune.batchnorm import adapt_batchnorm
from autoprune.finetune import accuracy
from autoprune.measure import shape_key
from autoprune.objective import Proposal, TrialContext, execute_trial
from autoprune.policy import Policy
from autoprune.prune import prune
from autoprune.resolved_space import FinetuneSettings
from autoprune.space import load_space
from autoprune.study import StudyMeta
from tests.conftest import fast_profile

TINY = "tests/data/tiny.yaml"


# --- the promotion rule -------------------------------------------------------------------------------------

def test_promotion_picks_exactly_the_non_dominated_candidates_when_the_quota_allows():
    points = {0: (0.9, 2.0, 1.0), 1: (0.8, 1.0, 1.0), 2: (0.7, 3.0, 1.0), 3: (0.95, 4.0, 2.0), 4: (0.6, 0.5, 0.5),
              5: (0.5, 0.6, 0.6), 6: (0.85, 1.0, 1.0)}
    front = {0, 3, 4, 6}  # 1 is dominated by 6 (same cost, worse metric), 2 by 0, 5 by 4
    assert set(non_dominated(points)) == front
    assert set(promotable(points, promote=1.0)) == front


def test_promotion_never_exceeds_the_quota_and_keeps_the_largest_contributions():
    points = {i: (1.0 - 0.1 * i, 10.0 - i, 1.0) for i in range(6)}  # all six non-dominated
    chosen = promotable(points, promote=1 / 3)
    assert len(chosen) == 2
    gain = contributions(points)
    assert sorted(gain[i] for i in chosen) == sorted(gain.values())[-2:]
    assert promotable(points, promote=1 / 3, completed=2) == []  # a rung of two promotes none at a third


def test_hypervolume_of_overlapping_boxes_is_exact():
    assert hypervolume([(0.0, 0.0, 0.0)], (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert hypervolume([(0.0, 0.5, 0.0), (0.5, 0.0, 0.0)], (1.0, 1.0, 1.0)) == pytest.approx(0.75)
    assert hypervolume([(0.5, 0.5, 0.5), (0.0, 0.0, 0.0)], (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert hypervolume([(2.0, 0.0, 0.0)], (1.0, 1.0, 1.0)) == 0.0


class _Job:
    """The part of a TrialJob the book's promotion reads."""

    def __init__(self, fidelity: Fidelity) -> None:
        self.fidelity = fidelity


def _book_with(trials: list[tuple[tuple[float, float, float], dict]]) -> StudyBook:
    book = StudyBook.open(make_storage("sqlite:///:memory:", heartbeat_interval=None), study_name="s", meta=StudyMeta(space_fingerprint="f"),
                          sampler=make_sampler("random", seed=0, n_trials=10))
    for values, attrs in trials:
        book.study.add_trial(optuna.trial.create_trial(
            values=list(values), params={"x": 0.5}, user_attrs={"report": attrs},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
    return book


def test_the_book_promotes_feasible_saved_candidates_only_once():
    saved = {"feasible": True, "rung": 0, "artifact_dir": "trial_x"}
    book = _book_with([((0.99, 1.0, 1.0), {**saved, "feasible": False}),  # best, but over budget
                       ((0.9, 2.0, 1.0), saved), ((0.8, 3.0, 1.0), saved)])
    job = _Job(Fidelity(steps=(0, 5, 10), promote=1.0))
    assert book.promote(job) == 1
    assert book.promote(job) is None  # 2 is dominated by 1, and 1 is queued already
    waiting = book.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [(t.user_attrs["parent"], t.user_attrs["rung"], t.system_attrs["fixed_params"]) for t in waiting] == \
        [(1, 1, {"x": 0.5})]


def test_a_second_copy_of_a_promotion_is_a_duplicate():
    book = _book_with([((0.9, 2.0, 1.0), {"feasible": True, "rung": 0, "artifact_dir": "trial_x"})])
    for _ in range(2):  # two workers that decided at once
        book.study.enqueue_trial({"x": 0.5}, user_attrs={"rung": 1, "parent": 0})
    first, second = book.study.ask(), book.study.ask()
    assert not book.is_duplicate(first) and book.is_duplicate(second)


# --- the space's section ------------------------------------------------------------------------------------

def test_fidelity_steps_must_end_at_the_full_fine_tune(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("finetune: {max_steps: 60}\nfidelity: {steps: [0, 20, 50]}\n")
    with pytest.raises(SearchSpaceError, match="max_steps"):
        load_space(path)
    path.write_text("fidelity: {steps: [0, 30, 20]}\n")
    with pytest.raises(SearchSpaceError, match="increasing"):
        load_space(path)


def test_fidelity_on_adds_three_rungs_and_off_restores_the_fingerprint():
    space = load_space("default")
    on = space.with_fidelity(True)
    assert on.rungs.steps == (0, 20, 60)
    assert on.fingerprint() != space.fingerprint()
    assert on.with_fidelity(False).fingerprint() == space.fingerprint()


def test_search_refuses_a_fidelity_that_is_not_a_bool(digits, tmp_path):
    model, data = digits
    with pytest.raises(AutopruneInputError, match="fidelity"):
        search(model, data, fidelity="on", out_dir=tmp_path)


# --- screening, promotion and the cache in a trial ----------------------------------------------------------

def test_adaptive_batchnorm_resets_statistics_to_the_data(digits):
    model, data = digits
    pruned = prune(model, Policy.uniform(["conv1", "conv2"], sparsity=0.5, method="l1_structured"),
                   next(iter(data.train_dataloader()))[0][:2])
    norms = [m for m in pruned.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.running_mean.fill_(100.0)
    assert adapt_batchnorm(pruned, data.train_dataloader(), batches=3)
    assert all(m.running_mean.abs().max() < 100.0 for m in norms) and not pruned.training
    assert not adapt_batchnorm(nn.Sequential(nn.Linear(4, 2)), data.train_dataloader(), batches=1)


def _context(model, data, tmp_path, profile=None) -> TrialContext:
    inputs = next(iter(data.train_dataloader()))[0][:2]
    return TrialContext(base_model=model, example_inputs=inputs, train_loader=data.train_dataloader(),
                        val_loader=data.val_dataloader(), profile=profile or fast_profile(),
                        artifacts_dir=tmp_path)


def test_a_promoted_trial_continues_from_its_parent_s_weights_and_is_not_pruned_again(digits, tmp_path, monkeypatch):
    model, data = digits
    ctx = _context(model, data, tmp_path)
    policy = Policy.uniform(["conv1", "conv2"], sparsity=0.5, method="l1_structured")
    settings = FinetuneSettings(max_steps=0, lr=3e-3, calibration_batches=1)
    parent = execute_trial(ctx, Proposal(0, policy, settings, screen_batches=2, finetune_steps=0, last_rung=False),
                           front=[])
    assert parent.user_attrs["artifact_dir"] == "trial_00000"
    monkeypatch.setattr("autoprune.objective.prune", lambda *a, **k: pytest.fail("a promotion pruned again"))
    more = FinetuneSettings(max_steps=15, lr=3e-3, calibration_batches=1)
    child = execute_trial(ctx, Proposal(1, policy, more, rung=1, parent=0, parent_dir="trial_00000",
                                        finetune_steps=15), front=[],
                          latencies={parent.user_attrs["shape_key"]: parent.user_attrs["metrics"]})
    before = torch.load(tmp_path / "trial_00000" / "weights.pt")
    after = torch.load(tmp_path / "trial_00001" / "weights.pt")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the promotion fine-tuned further"
    tuned = load_pruned(tmp_path / "trial_00001", model)
    assert child.values[0] == pytest.approx(accuracy(tuned, data.val_dataloader()))
    assert child.user_attrs["latency_cached"] and child.user_attrs["metrics"]["latency_ms"] == \
        parent.user_attrs["metrics"]["latency_ms"]
    assert (child.user_attrs["rung"], child.user_attrs["parent"], child.user_attrs["finetune_steps"]) == (1, 0, 15)


def test_the_latency_cache_is_keyed_by_shape_and_profile(digits):
    model, data = digits
    x = next(iter(data.train_dataloader()))[0][:2]
    half = Policy.uniform(["conv1", "conv2"], sparsity=0.5, method="l1_structured")
    a, b = prune(model, half, x), prune(model, half, x, seed=1)
    other = prune(model, Policy.uniform(["conv1", "conv2"], sparsity=0.25, method="l1_structured"), x)
    profile = fast_profile()
    assert shape_key(a, profile) == shape_key(b, profile)
    assert shape_key(a, profile) != shape_key(other, profile)
    assert shape_key(a, profile) != shape_key(a, fast_profile(batch_size=8))


def test_a_cached_timing_is_reused_for_the_same_shape_only(digits, tmp_path):
    model, data = digits
    ctx = _context(model, data, tmp_path)
    settings = FinetuneSettings(max_steps=0, lr=1e-3, calibration_batches=1)
    half = Policy.uniform(["conv1", "conv2"], sparsity=0.5, method="l1_structured")
    first = execute_trial(ctx, Proposal(0, half, settings), front=[])
    key = first.user_attrs["shape_key"]
    planted = {key: {**first.user_attrs["metrics"], "latency_ms": 123.0}}
    again = execute_trial(ctx, Proposal(1, half, settings), front=[], latencies=planted)
    assert again.values[1] == 123.0 and again.user_attrs["latency_cached"]
    other = execute_trial(ctx, Proposal(2, Policy(), settings), front=[], latencies=planted)
    assert other.values[1] != 123.0 and not other.user_attrs["latency_cached"]


# --- a whole search -----------------------------------------------------------------------------------------

def test_a_multi_fidelity_search_screens_promotes_and_reports_each_policy_s_latest_result(digits, tmp_path):
    model, data = digits
    result = search(model, data, space=TINY, fidelity=True, n_trials=14, seed=0, out_dir=tmp_path,
                    profile=fast_profile(), sampler="random")
    rungs = load_space(TINY).with_fidelity(True).rungs
    done = [t for t in result.trials if t.complete]
    assert len(done) == 14
    screened = [t for t in done if t.rung == 0]
    assert screened and all(t.finetune_steps == 0 for t in screened)
    promoted = [t for t in done if t.rung > 0]
    assert promoted, "some candidates were promoted"
    by_number = {t.number: t for t in done}
    for t in promoted:
        parent = by_number[t.parent]
        assert parent.rung == t.rung - 1 and parent.policy == t.policy and parent.feasible
        assert t.finetune_steps == rungs.steps[t.rung]
    assert len({(t.parent, t.rung) for t in promoted}) == len(promoted)
    continued = {t.parent for t in promoted}
    assert result.pareto and all(c.number not in continued and c.artifact_dir for c in result.pareto)
    assert any(c.finetune_steps for c in result.pareto), "fine-tuned candidates reach the front"
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert {"rung", "finetune_steps", "parent"} <= set(rows[0])
    assert sorted(int(r["rung"]) for r in rows) == sorted(t.rung for t in result.trials)


def test_fidelity_off_fine_tunes_every_feasible_trial_fully(digits, tmp_path):
    model, data = digits
    space = load_space(TINY).with_fidelity(True)
    result = search(model, data, space=space, fidelity=False, n_trials=3, seed=0, out_dir=tmp_path,
                    profile=fast_profile())
    assert {(t.rung, t.finetune_steps) for t in result.trials} == {(0, space.finetune.max_steps)}


def test_the_study_records_each_trial_s_fidelity(digits, tmp_path):
    model, data = digits
    search(model, data, space=TINY, fidelity=True, n_trials=4, seed=0, out_dir=tmp_path, profile=fast_profile())
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = attrs_of(trial)
        assert attrs["rung"] == 0 and attrs["finetune_steps"] == 0 and attrs["shape_key"]


def test_the_retry_of_a_promotion_whose_worker_died_is_not_a_duplicate():
    book = _book_with([((0.9, 2.0, 1.0), {"feasible": True, "rung": 0, "artifact_dir": "trial_x"})])
    book.study.enqueue_trial({"x": 0.5}, user_attrs={"rung": 1, "parent": 0})
    dead = book.study.ask()
    book.study.tell(dead, state=optuna.trial.TrialState.FAIL)  # lost with its worker: no failure reason
    book.study.enqueue_trial({"x": 0.5}, user_attrs={"rung": 1, "parent": 0})  # what the heartbeat retry queues
    assert not book.is_duplicate(book.study.ask())


# --- issue 29, point 8: messages that name what differs ---------------------------------------------------------

def test_resuming_a_multi_fidelity_study_with_fidelity_off_names_the_fidelity(digits, tmp_path):
    model, data = digits
    search(model, data, space=TINY, fidelity=True, n_trials=2, seed=0, out_dir=tmp_path, profile=fast_profile())
    with pytest.raises(AutopruneInputError, match=r"multi-fidelity rungs at \[0, 1, 2\] steps, and this run has off"):
        search(model, data, space=TINY, fidelity=False, n_trials=2, seed=0, out_dir=tmp_path, profile=fast_profile())


def test_rungs_that_miss_the_full_fine_tune_are_named_without_dumping_the_space(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("finetune: {max_steps: 6}\nfidelity: {steps: [0, 2, 5]}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_space(path)
    text = str(info.value)
    assert "fidelity.steps must end at the full fine-tune" in text
    assert "(top level)" not in text and "'methods'" not in text, "no dump of the whole space"
