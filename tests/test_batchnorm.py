"""The BatchNorm policy of trials' fine-tunes: train, freeze, adapt, and auto (probed on the dense model)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoprune.api import search
from autoprune.batchnorm import Drift, drift, resolve
from autoprune.errors import AutopruneInputError
from autoprune.finetune import accuracy, as_lightning, finetune
from autoprune.policy import Policy
from tests.conftest import fast_profile

TINY = "tests/data/tiny.yaml"


class Shifted(nn.Module):
    """A classifier whose BatchNorm learnt statistics of centred inputs: fed inputs shifted by +3 in train mode,
    it re-centres on them and loses what it knew."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 256)
        self.bn = nn.BatchNorm1d(256)
        self.out = nn.Linear(256, 2)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x))))


def _shifted_task():
    """Validation on centred inputs (the label: sign of the first feature); training batches shifted by +3 with
    the same labels."""
    torch.manual_seed(0)
    model = Shifted()
    x = torch.randn(512, 2)
    y = (x[:, 0] > 0).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.eval()
    val = DataLoader(TensorDataset(x, y), batch_size=64)
    train = DataLoader(TensorDataset(x + 3.0, y), batch_size=64)
    return model, train, val


def test_train_mode_batches_of_shifted_data_alone_harm_the_model_and_auto_freezes():
    model, train, val = _shifted_task()
    found = drift(model, train, lambda m: accuracy(m, val))
    assert found.before > 0.95 and found.harmful
    with pytest.warns(UserWarning, match="lower the dense model's accuracy"):
        assert resolve("auto", model, lambda: found, metric="accuracy") == "freeze"
    assert accuracy(model, val) == found.before, "the probe worked on a copy"


def test_auto_trains_as_before_when_the_data_agrees_with_the_statistics(digits):
    model, data = digits
    found = drift(model, data.train_dataloader(), lambda m: accuracy(m, data.val_dataloader()))
    assert not found.harmful and resolve("auto", model, lambda: found) == "train"


@pytest.mark.parametrize(("before", "after", "harmful"), [
    (0.0, -0.005, False),  # a closeness whose dense value is 0: no relative tolerance, but 0.01 of 1
    (0.0, -0.02, True),
    (0.9, 0.895, False),
    (0.9, 0.88, True),
    (-50.0, -50.4, False),  # a large-valued metric keeps its relative tolerance
    (-50.0, -51.0, True),
])
def test_the_drift_tolerance_is_relative_with_a_floor_of_one(before, after, harmful):
    assert Drift(before=before, after=after, batches=10).harmful is harmful


def test_freeze_keeps_the_statistics_and_trains_the_rest():
    model, train, _ = _shifted_task()
    frozen = copy.deepcopy(model)
    module = as_lightning(frozen, loss=None, lr=1e-2)
    finetune(module, train, policy=Policy(), max_steps=5, bn="freeze")
    assert torch.equal(frozen.bn.running_mean, model.bn.running_mean)
    assert not torch.equal(frozen.fc.weight, model.fc.weight), "the weights still learn"
    trained = copy.deepcopy(model)
    finetune(as_lightning(trained, loss=None, lr=1e-2), train, policy=Policy(), max_steps=5)
    assert not torch.equal(trained.bn.running_mean, model.bn.running_mean), "train mode moves them"


def test_a_search_on_a_model_the_drift_harms_freezes_and_says_so(tmp_path):
    model, train, val = _shifted_task()
    with pytest.warns(UserWarning, match="bn: freeze"):
        result = search(model, (train, val), space=TINY, n_trials=2, seed=0, out_dir=tmp_path,
                        profile=fast_profile(batch_size=8))
    assert result.trials
    import optuna

    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.user_attrs["bn"] == "freeze"
    from autoprune.backends.book import attrs_of

    assert {attrs_of(t)["bn"] for t in study.get_trials() if t.state.name == "COMPLETE"} == {"freeze"}


def test_an_unknown_policy_is_refused(digits, tmp_path):
    model, data = digits
    with pytest.raises(AutopruneInputError, match="bn"):
        search(model, data, space=TINY, n_trials=1, out_dir=tmp_path / "run", bn="sometimes")
    assert not (tmp_path / "run").exists()


def test_adapt_recomputes_the_statistics_before_a_trial_is_evaluated(digits, tmp_path, monkeypatch):
    import autoprune.objective as objective

    calls = []
    real = objective.adapt_batchnorm
    monkeypatch.setattr(objective, "adapt_batchnorm", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, data = digits
    search(model, data, space=TINY, n_trials=1, seed=0, out_dir=tmp_path, profile=fast_profile(), bn="adapt",
           seed_policies=False)
    assert len(calls) == 2, "before the first evaluation and after the fine-tune"


def test_refine_keeps_the_statistics_frozen_when_the_search_did(tmp_path):
    """A refine fine-tunes longer than a trial: in train mode it would undo what bn: freeze protected."""
    from autoprune.loading import attach_candidates, load_result
    from autoprune.refine import refine

    model, train, val = _shifted_task()
    with pytest.warns(UserWarning, match="bn: freeze"):
        search(model, (train, val), space=TINY, n_trials=3, seed=0, out_dir=tmp_path, profile=fast_profile(batch_size=8))
    result = attach_candidates(load_result(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="autoprune",
                                           out_dir=tmp_path), model, storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert result.meta.extra["bn"] == "freeze"
    chosen = [c for c in result.pareto if not result.policy(c).is_dense][:1]
    assert chosen, "a pruned candidate is smaller than the dense model, so the front holds one"
    before = result.load_model(chosen[0]).bn.running_mean.clone()
    refined = refine(result, (train, val), steps=5, trials=[chosen[0].number], out_dir=tmp_path / "refined",
                     formats=("torchscript",))
    from autoprune.export import load_pruned

    after = load_pruned(refined[0].directory, model)
    assert torch.equal(after.bn.running_mean, before)
