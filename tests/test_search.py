"""search(): budgets, resume, failures, Lightning users, study safety — on digits, tiny settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from autoprune.api import search
from autoprune.backends.book import attrs_of
from autoprune.demo import DigitsDataModule
from autoprune.errors import AutopruneInputError, StudyError
from autoprune.measure import measure
from autoprune.zoo import KeywordMLP, MobileNetV2, ResNet18, ResNetCNN
from tests.conftest import fast_profile

TINY = Path(__file__).parent / "data" / "tiny.yaml"


def _search(model, data, out, **kwargs):
    settings = dict(space=TINY, n_trials=4, out_dir=out, seed=0, profile=fast_profile())
    settings.update(kwargs)
    return search(model, data, **settings)


def test_front_members_meet_the_budgets(digits, tmp_path):
    """Every Pareto candidate meets the size budget; infeasible trials were not fine-tuned."""
    model, data = digits
    budget_mb = 0.6 * measure(model, torch.randn(1, 1, 8, 8), fast_profile()).size_mb
    result = _search(model, data, tmp_path, budget_mb=budget_mb, n_trials=5)
    assert result.pareto, "a feasible front exists"
    assert all(c.size_mb <= budget_mb for c in result.pareto)
    for trial in result.trials:
        assert trial.state == "complete"
        assert ("finetune" in trial.timings) == trial.feasible
    assert (tmp_path / "pareto.json").is_file() and (tmp_path / "best" / "model.ts").is_file()


def test_best_candidate_reloads_with_its_weights(digits, tmp_path):
    """load_model(best) rebuilds the pruned, fine-tuned model: smaller, and it runs."""
    model, data = digits
    result = _search(model, data, tmp_path, n_trials=3)
    best = result.best()
    pruned = result.load_model(best)
    assert pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert sum(p.numel() for p in pruned.parameters()) == best.params


def test_a_result_pickles_with_its_front_and_its_candidates(digits, tmp_path):
    """A SearchResult survives pickling (sent to another process): the same front, and its candidates still load."""
    import pickle

    model, data = digits
    result = _search(model, data, tmp_path, n_trials=3)
    again = pickle.loads(pickle.dumps(result))
    assert [c.number for c in again.pareto] == [c.number for c in result.pareto]
    best = again.best()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(again.load_model(best)(x), result.load_model(result.best())(x))


def test_every_fine_tuned_trial_scores_the_better_of_before_and_after_its_fine_tune(digits, tmp_path):
    """Read back from the study: each fine-tuned trial stores both figures, and its metric is the higher."""
    model, data = digits
    result = _search(model, data, tmp_path, n_trials=3)
    tuned = [t for t in result.trials if "finetune" in t.timings]
    assert tuned
    for trial in tuned:
        assert trial.metric == max(trial.metric_before_finetune, trial.metric_after_finetune)


def test_every_trial_records_the_learning_rate_it_fine_tuned_with(digits, tmp_path):
    """The sampled learning rate is on each record (refine() continues at it), within the space's range."""
    model, data = digits
    result = _search(model, data, tmp_path, n_trials=3)
    rates = [t.lr for t in result.trials]
    assert len(rates) == 3 and all(1e-3 <= r <= 1e-2 for r in rates)
    assert {c["lr"] for c in json.loads((tmp_path / "pareto.json").read_text())["pareto"]} <= set(rates)


def test_resume_runs_only_the_missing_trials(digits, tmp_path):
    """Re-running with a larger total adds only the missing trials and keeps the finished ones."""
    model, data = digits
    first = _search(model, data, tmp_path, n_trials=3)
    again = _search(model, data, tmp_path, n_trials=5)
    assert len(again.trials) == 5
    kept = {t.number: t.metric for t in again.trials if t.number < 3}
    assert kept == {t.number: t.metric for t in first.trials}
    assert again.session_trials == {3, 4}
    assert len(_search(model, data, tmp_path, n_trials=5).session_trials) == 0


def test_every_worker_times_candidates_against_the_studys_dense_timing(digits, tmp_path):
    """The dense model's timing is stored with a new study; a later run of the study (a resume, another
    worker) scales its candidates by that same figure, and pareto.json records it."""
    model, data = digits
    first = _search(model, data, tmp_path, n_trials=2)
    reference = first.reference_latency_ms
    assert reference and reference > 0
    again = _search(model, data, tmp_path, n_trials=3)
    assert again.reference_latency_ms == reference
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(done) == 3
    assert {attrs_of(t)["metrics"]["latency_reference_ms"] for t in done} == {reference}
    assert json.loads((tmp_path / "pareto.json").read_text())["reference_latency_ms"] == reference


def test_plain_timing_when_interleaving_is_off(digits, tmp_path):
    """interleave=False times each candidate alone: no reference is stored or used."""
    model, data = digits
    result = _search(model, data, tmp_path, n_trials=2, profile=fast_profile(interleave=False))
    assert result.reference_latency_ms is None
    assert all(t.latency_ms > 0 for t in result.trials)


def test_a_residual_models_coupled_layers_share_one_searched_scale(tmp_path):
    """search() traces the model: each residual stream is one parameter, and every trial's policy gives
    its layers one sparsity."""
    torch.manual_seed(0)
    model = ResNetCNN(widths=(8, 16), blocks=1).eval()
    _search(model, DigitsDataModule(batch_size=64), tmp_path, n_trials=3, seed_policies=False)
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    for trial in study.trials:
        assert "scale.stem+layers.0.conv2" in trial.params and "scale.stem" not in trial.params
        layers = trial.user_attrs["policy"]["layers"]
        assert layers["stem"]["sparsity"] == layers["layers.0.conv2"]["sparsity"]


class _ConvsThenSmallFc(torch.nn.Module):
    """Two 64-channel convs hold nearly all the compute; a small hidden Linear layer holds almost none."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 64, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.fc = torch.nn.Linear(64, 16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(F.relu(self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))))


def test_seeded_policies_prune_hardest_where_latency_is_cheapest(tmp_path):
    """The scaled seeds rank units by metric lost per latency saved under the search's profile: a layer
    whose pruning costs no metric but saves no time gets the smallest scale, not the largest."""
    torch.manual_seed(0)

    def convs_matter(module, loader):  # pruning a conv costs a little; pruning fc costs nothing
        net = module.net  # the plain model inside the LightningModule autoprune wraps it in
        return 1.0 - 0.01 * (2 - net.conv1.out_channels / 64 - net.conv2.out_channels / 64)

    _search(_ConvsThenSmallFc().eval(), DigitsDataModule(batch_size=64), tmp_path, metric=convs_matter, n_trials=6)
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    scaled = [t for t in study.trials if t.params["scale.fc"] != 1.0 or t.params["scale.conv1"] != 1.0]
    assert scaled, "the scaled seeds ran"
    for trial in scaled:
        assert trial.params["scale.fc"] < min(trial.params["scale.conv1"], trial.params["scale.conv2"])


@pytest.mark.parametrize("rates, chosen", [({None: 1.0, 8: 3.0}, 8), ({None: 3.0, 8: 1.0}, None),
                                          ({None: 1.0, 8: 1.05}, None)])
def test_seeds_use_the_alignment_the_runtime_computes_clearly_fastest(digits, tmp_path, monkeypatch, rates, chosen):
    """With round_to options [null, 8], every seeded trial takes 8 when the alignment probe runs it at
    clearly more MACs per ms than exact channel counts (the first option), and stays exact when it runs
    slower or within timing noise (the probe's measurement is replaced here by fixed rates)."""
    model, data = digits
    space = tmp_path / "aligned.yaml"
    space.write_text(TINY.read_text().replace("round_to: [null]", "round_to: [null, 8]"))
    monkeypatch.setattr("autoprune.seeds.alignment_rates", lambda *a, **k: rates)
    _search(model, data, tmp_path, space=space, n_trials=3)
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])  # seeds not yet run wait unsampled
    assert [t.params["round_to"] for t in done] == [chosen] * 3


def test_failing_trials_are_recorded_and_the_search_goes_on(digits, tmp_path):
    """A metric that returns NaN fails its trial with the reason; later trials still run."""
    model, data = digits
    calls = {"n": 0}

    def flaky(net, loader):
        calls["n"] += 1
        return math.nan if calls["n"] == 2 else 0.5

    # No seeded policies: their sensitivity scan would call the metric before the first trial.
    result = _search(model, data, tmp_path, metric=flaky, n_trials=3, seed_policies=False)
    states = [t.state for t in sorted(result.trials, key=lambda t: t.number)]
    assert states.count("failed") == 1 and states.count("complete") == 2
    failed = next(t for t in result.trials if t.state == "failed")
    assert "nan" in failed.failure_reason.lower()


def test_another_space_cannot_join_an_existing_study(digits, tmp_path):
    """A study created with one space refuses a search with another; the study is left intact."""
    model, data = digits
    _search(model, data, tmp_path, n_trials=1)
    with pytest.raises(StudyError, match="another search space"):
        _search(model, data, tmp_path, n_trials=2, space="unstructured")
    assert len(_search(model, data, tmp_path, n_trials=1).trials) == 1


def test_a_study_resumes_only_under_the_profile_its_latencies_were_measured_with(digits, tmp_path):
    """Trials timed in ONNX Runtime cannot join a study timed in eager PyTorch (one front, two scales);
    the study is left intact and still resumes under its own profile."""
    model, data = digits
    _search(model, data, tmp_path, n_trials=1)
    with pytest.raises(StudyError, match="runtime 'eager' \\(now 'onnxruntime'\\)"):
        _search(model, data, tmp_path, n_trials=2, profile=fast_profile(runtime="onnxruntime"))
    assert len(_search(model, data, tmp_path, n_trials=1).trials) == 1


def test_a_search_timed_in_onnxruntime_records_its_runtime(digits, tmp_path):
    """runtime="onnxruntime" times every candidate (and the dense reference) in ONNX Runtime, and
    pareto.json says so."""
    model, data = digits
    result = _search(model, data, tmp_path, n_trials=2, profile=fast_profile(runtime="onnxruntime"))
    assert all(t.state == "complete" and t.latency_ms > 0 for t in result.trials)
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert saved["profile"]["runtime"] == "onnxruntime" and saved["reference_latency_ms"] > 0


class LitDigits(L.LightningModule):
    """A user's LightningModule: its own training_step, optimiser, and a logged validation metric."""

    def __init__(self, net):
        super().__init__()
        self.net, self.lr = net, 1e-3

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, _):
        self.log("val_acc", (self(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def test_lightning_module_with_a_logged_metric(digits, tmp_path):
    """A LightningModule is pruned inside (net.*), fine-tuned by its own steps, scored by its logged metric."""
    model, data = digits
    result = _search(LitDigits(model), data, tmp_path, metric="val_acc", n_trials=2)
    assert result.metric_name == "val_acc"
    assert all(0.0 <= t.metric <= 1.0 for t in result.trials)
    layers = result.trials[0].policy["layers"]
    assert layers and all(name.startswith("net.") for name in layers)


def test_a_search_drops_residual_blocks_and_reloads_the_shallower_candidates(tmp_path):
    """With drop_blocks: auto, trials choose per block; a dropped block's layers leave the policy, and a
    front candidate without those blocks reloads from its saved weights."""
    space = tmp_path / "deep.yaml"
    space.write_text(TINY.read_text() + "drop_blocks: auto\n")
    torch.manual_seed(0)
    model = ResNetCNN(widths=(8, 16), blocks=2).eval()
    result = _search(model, DigitsDataModule(batch_size=64), tmp_path, space=space, n_trials=4, sampler="random",
                     seed_policies=False)
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    for trial in study.trials:
        dropped = [b for b in ("layers.0", "layers.1", "layers.3") if trial.params[f"drop.{b}"]]
        policy = trial.user_attrs["policy"]
        assert policy["drop"] == dropped
        assert not any(n.startswith(tuple(f"{b}." for b in dropped)) for n in policy["layers"])
    shallow = [c for c in result.pareto if c.policy["drop"]]
    assert shallow, "dropping blocks makes the fastest candidates"
    net = result.load_model(shallow[0])
    assert isinstance(net.get_submodule(shallow[0].policy["drop"][0]), torch.nn.Identity)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_the_shallow_seeds_drop_the_block_the_scan_finds_cheapest(tmp_path):
    """The start-up scan drops each block alone; the first shallow seed drops the block whose removal costs
    least metric per latency saved (here one that changes nothing), not a fixed choice of blocks."""
    from tests.test_sensitivity import _closeness_to, _with_an_idle_block

    space = tmp_path / "deep.yaml"
    space.write_text(TINY.read_text() + "drop_blocks: auto\n")
    model = _with_an_idle_block()
    _search(model, DigitsDataModule(batch_size=64), tmp_path, space=space, n_trials=1,
            metric=_closeness_to(model, torch.rand(16, 1, 8, 8)))
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    queued = [t.params or t.system_attrs["fixed_params"] for t in study.trials]
    blocks = ("layers.0", "layers.1", "layers.3")
    shallow = [[b for b in blocks if p[f"drop.{b}"]] for p in queued if any(p[f"drop.{b}"] for b in blocks)]
    assert shallow and shallow[0] == ["layers.1"]


def _keyword_batches(n: int = 96) -> tuple[DataLoader, DataLoader]:
    """Dict batches, as a Hugging Face collator yields them: keyword inputs and ``labels``."""
    torch.manual_seed(0)
    features = torch.randn(n, 16)
    rows = [{"features": f, "mask": torch.ones(16), "labels": int(f[0] > 0)} for f in features]
    return DataLoader(rows, batch_size=16), DataLoader(rows[: n // 2], batch_size=16)


def test_dict_batches_and_dict_outputs_search_like_any_model(tmp_path):
    """A model called with keyword tensors that returns a dict searches end to end: every trial completes
    (timed in ONNX Runtime), and the best candidate is exported with the batch's keys as input names."""
    import onnxruntime

    model = KeywordMLP().eval()
    result = _search(model, _keyword_batches(), tmp_path, n_trials=3, profile=fast_profile(runtime="onnxruntime"))
    assert [t.state for t in result.trials] == ["complete"] * 3, [t.failure_reason for t in result.trials]
    session = onnxruntime.InferenceSession(str(tmp_path / "best" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["features", "mask"]
    batch = {"features": torch.randn(5, 16).numpy(), "mask": torch.ones(5, 16).numpy()}
    assert session.run(None, batch)[0].shape == (5, 10), "the logits, for another batch size"
    pruned = result.load_model(result.best())
    assert pruned(features=torch.randn(2, 16))["logits"].shape == (2, 10)


@pytest.mark.parametrize("make", [lambda: ResNet18(width=8), lambda: MobileNetV2(width_mult=0.25)],
                         ids=["resnet18", "mobilenetv2"])
def test_realistic_cnns_search_end_to_end_on_32x32_images(make, tmp_path):
    """ResNet-18's and MobileNetV2's layouts (narrowed) run the default space's search on 32x32 RGB batches:
    every trial completes, dropping blocks included."""
    from autoprune.space import load_space

    torch.manual_seed(0)
    images = [(torch.randn(3, 32, 32), i % 10) for i in range(64)]
    loader = DataLoader(images, batch_size=16)  # one batch to validate on: the start-up scans evaluate per unit
    default = load_space("default")  # with a short fine-tune: what is checked is that each trial runs through
    space = default.model_copy(update={"finetune": default.finetune.model_copy(update={"max_steps": 5})})
    result = _search(make().eval(), (loader, DataLoader(images[:16], batch_size=16)), tmp_path, space=space,
                     n_trials=3, profile=fast_profile(batch_size=4))
    assert [t.state for t in result.trials] == ["complete"] * 3, [t.failure_reason for t in result.trials]
    assert result.pareto


def test_a_latency_budget_relative_to_the_dense_model(digits, tmp_path):
    """budget_ratio=0.5 is half the study's dense timing: the resolved budget is recorded, every candidate
    on the front meets it, and a stored study reports the same budget."""
    model, data = digits
    result = _search(model, data, tmp_path, budget_ratio=0.5, n_trials=4)
    assert result.budget_ms == pytest.approx(0.5 * result.reference_latency_ms)
    assert all(c.latency_ms <= result.budget_ms for c in result.pareto)
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert saved["budget_ratio"] == 0.5 and saved["budget_ms"] == pytest.approx(result.budget_ms)
    from autoprune.loading import load_result

    assert load_result(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="autoprune").budget_ms == \
        pytest.approx(result.budget_ms)
    with pytest.raises(AutopruneInputError, match="not both"):
        _search(model, data, tmp_path / "b", budget_ratio=0.5, budget_ms=3.0)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"storage": 123}, AutopruneInputError, "must be a URL or a journal file path"),
    ({"metric": "val_f1"}, AutopruneInputError, "names a metric a LightningModule logs"),
    ({"space": {"sparsity": {"mode": "sideways"}}}, AutopruneInputError, "sparsity.mode"),
    ({"seed": -3}, AutopruneInputError, "seed"),
])
def test_bad_python_arguments_raise_the_package_s_errors_before_anything_runs(digits, tmp_path, kwargs, error,
                                                                              message):
    model, data = digits
    with pytest.raises(error, match=message):
        search(model, data, n_trials=1, out_dir=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_an_empty_training_loader_is_refused_up_front(digits, tmp_path):
    """With no training batch every trial would silently skip its fine-tune."""
    from torch.utils.data import DataLoader, TensorDataset

    from autoprune.errors import DataError

    model, data = digits
    empty = DataLoader(TensorDataset(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)), batch_size=8)
    with pytest.raises(DataError, match="training loader yields no batch"):
        search(model, (empty, data.val_dataloader()), n_trials=1, out_dir=tmp_path / "run")


def test_an_out_directory_that_cannot_be_created_is_an_input_error(digits, tmp_path):
    model, data = digits
    (tmp_path / "file").write_text("x")
    with pytest.raises(AutopruneInputError, match="cannot be created"):
        search(model, data, n_trials=1, out_dir=tmp_path / "file" / "run")


def test_seeds_lost_to_an_interrupted_first_start_are_queued_by_the_next_run(digits, tmp_path, monkeypatch):
    """Ctrl-C during the first run's sensitivity scan leaves a study without seeds; the same search again queues
    them (the study is marked seeded then), instead of running on random samples only."""
    from autoprune.prepare import PreparedModel

    model, data = digits
    real = PreparedModel.seeds

    def interrupted(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PreparedModel, "seeds", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(model, data, space=TINY, n_trials=2, out_dir=tmp_path, seed=0, profile=fast_profile())
    monkeypatch.setattr(PreparedModel, "seeds", real)
    monkeypatch.setattr("autoprune.backends.workers._alive", lambda pid: False)  # the first run's process is gone
    result = search(model, data, space=TINY, n_trials=2, out_dir=tmp_path, seed=0, profile=fast_profile())
    assert result.policy(result.trials[0]).is_dense, "the dense seed ran first"
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.user_attrs["seeded"] is True


# --- issue 29, points 6 and 7: mistakes refused once, up front, with nothing created ------------------------------

@pytest.mark.parametrize("kwargs, error", [
    ({"io": "labels"}, "io must be a ModelIO"),
    ({"accelerator": "tpu"}, "accelerator 'tpu' cannot be used here"),
    ({"accelerator": "gpu"} if not torch.cuda.is_available() else {"accelerator": "tpu"}, "cannot be used here"),
    ({"precision": "bf16-mixed"}, "mixed precision on a GPU"),
    ({"budget_ratio": True}, "budget_ratio"),
    ({"budget_ms": True}, "budget_ms"),
])
def test_a_setting_that_cannot_work_is_refused_before_anything_is_created(digits, tmp_path, kwargs, error):
    model, data = digits
    with pytest.raises(AutopruneInputError, match=error):
        _search(model, data, tmp_path / "run", n_trials=1, **kwargs)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("io, error", [
    (dict(output="pooler_output"), "has no 'pooler_output'"),
    (dict(output=3), "indexes a tuple of outputs"),
])
def test_an_output_the_model_does_not_have_is_one_error_not_a_failure_per_trial(digits, tmp_path, io, error):
    from autoprune.errors import DataError
    from autoprune.modelio import ModelIO

    model, data = digits
    with pytest.raises(DataError, match=error):
        _search(model, data, tmp_path / "run", n_trials=2, io=ModelIO(**io))
    assert not (tmp_path / "run").exists()


def test_an_input_count_given_for_dict_batches_is_refused_not_ignored():
    from autoprune.errors import DataError
    from autoprune.modelio import ModelIO

    with pytest.raises(DataError, match="batches are dicts"):
        ModelIO(inputs=2).split({"input_ids": torch.ones(2, 3), "labels": torch.zeros(2)})
    for bad in (dict(inputs=0), dict(inputs="input_ids"), dict(output=True), dict(target=1.5)):
        with pytest.raises(DataError, match="ModelIO"):
            ModelIO(**bad)


def test_a_budget_ratio_without_interleaving_is_stored_so_report_applies_the_same_budget(digits, tmp_path):
    """report said "no candidate meets the budget (none)": the ratio's dense timing was not stored (point 7)."""
    from autoprune.loading import load_result

    model, data = digits
    result = _search(model, data, tmp_path, n_trials=1, budget_ratio=0.5, profile=fast_profile(interleave=False),
                     study_name="s")
    assert result.budget_ms is not None and result.budget_ms == pytest.approx(0.5 * result.meta.budget_dense_ms)
    again = load_result(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    assert again.budget_ms == pytest.approx(result.budget_ms)
    assert json.loads((tmp_path / "pareto.json").read_text())["budget_ms"] == pytest.approx(result.budget_ms)


# --- issue 32: the dense model's fine-tune probed at start-up; reconstruction recorded per trial -----------------

def test_a_recipe_that_harms_the_dense_model_is_said_before_the_trials(digits, tmp_path):
    """The dense seed over the budget is never fine-tuned, so the end-of-search check could not fire: the probe
    fine-tunes a dense copy once at start-up, whatever the budget."""
    model, data = digits
    harsh = {"version": 1, "methods": ["l1_structured"], "round_to": [None],
             "finetune": {"max_steps": 20, "lr": {"low": 0.5, "high": 1.0, "log": True}}}
    with pytest.warns(UserWarning, match="makes the unpruned model worse"):
        _search(model, data, tmp_path, space=harsh, n_trials=1, budget_ratio=0.3)
    stored = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}").user_attrs
    assert stored["dense_finetune"]["after"] < stored["dense_finetune"]["before"]
    assert stored["dropout"] == "keep"  # the space's dropout policy, recorded for refine


def test_the_probe_s_advice_leaves_out_what_the_search_does_already():
    """A warning that says "set bn: freeze" to a search that froze BatchNorm sends the user in a circle."""
    from autoprune.probe import FinetuneProbe

    probe = FinetuneProbe(before=1.0, after=0.77, lr=1e-5, steps=100)
    plain = probe.warning("accuracy")
    assert "bn: freeze" in plain and "distil" in plain and "dropout: off" in plain
    done = probe.warning("accuracy", bn="freeze", distilled=True, dropout="off")
    assert "bn: freeze" not in done and "distil" not in done and "dropout" not in done and "1e-06" in done


def test_the_start_up_probe_does_not_time_the_dense_model_again(digits, monkeypatch):
    """The reference timed the dense model already; the probe wants only its metric before and after."""
    import importlib

    measure_module = importlib.import_module("autoprune.measure")
    from autoprune.objective import TrialContext, dense_copy
    from autoprune.probe import probe_finetune
    from autoprune.space import load_space

    model, data = digits
    base = dense_copy(model)
    example = next(iter(data.val_dataloader()))[0][:1]
    profile = measure_module.HardwareProfile(batch_size=1, warmup=1, repeats=3)
    reference = measure_module.LatencyReference.calibrate(base, example, profile, rounds=1)
    ctx = TrialContext(base_model=base, example_inputs=example, train_loader=data.train_dataloader(),
                       val_loader=data.val_dataloader(), profile=profile, reference=reference)
    timed = []
    real = measure_module._timed_forward
    monkeypatch.setattr(measure_module, "_timed_forward", lambda *a, **k: timed.append(1) or real(*a, **k))
    probe = probe_finetune(ctx, load_space(TINY).resolve(base, protected=["head"]))
    assert probe is not None and probe.steps == 2
    assert not timed


def test_reconstruction_is_recorded_per_trial_and_changes_the_space_fingerprint(digits, tmp_path):
    from autoprune.space import load_space

    model, data = digits
    result = _search(model, data, tmp_path, n_trials=2, reconstruct=True, study_name="r")
    study = optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert all(attrs_of(t)["reconstruct"] is True for t in study.get_trials() if t.state.name == "COMPLETE")
    assert result.meta.space_fingerprint == load_space(TINY).with_options(reconstruct=True).fingerprint()
    assert load_space(TINY).with_options(reconstruct=True).fingerprint() != load_space(TINY).fingerprint()
