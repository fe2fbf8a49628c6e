"""int8 quantization as a searched choice: policies, the quantized model, trials, candidates and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autoprune.api import search
from autoprune.errors import AutopruneInputError, ExportError, PolicyError, SearchSpaceError
from autoprune.export import save_pruned
from autoprune.finetune import accuracy, first_inputs
from autoprune.measure import shape_key
from autoprune.objective import Proposal, TrialContext, execute_trial
from autoprune.policy import Policy
from autoprune.quantize import INT8_FILE, QuantizedModel, int8_parity, quantize_model
from autoprune.resolved_space import FinetuneSettings
from autoprune.space import load_space
from autoprune.zoo import MLP
from tests.conftest import fast_profile, in_ci

if not in_ci():
    pytest.importorskip("onnxruntime")

LAYERS = ["conv1", "conv2"]
TINY_INT8 = Path(__file__).parent / "data" / "tiny_int8.yaml"


def _train_batches(data, n=4):
    return [x for x, _ in list(data.train_dataloader())[:n]]


# --- the policy and the space -------------------------------------------------------------------------------

def test_a_policy_round_trips_its_quantization_and_old_policies_still_read():
    policy = Policy(layers=Policy.uniform(LAYERS, sparsity=0.5, method="l1_structured").layers, quantize="int8_static")
    assert Policy.from_dict(policy.to_dict()) == policy and policy.to_dict()["schema_version"] == 2
    old = {"schema_version": 1, "layers": {"conv1": {"sparsity": 0.5, "method": "l1_structured"}},
           "regularizer": {"kind": "none", "strength": 0.0}, "round_to": None, "drop": []}
    assert Policy.from_dict(old).quantize == "none"
    with pytest.raises(PolicyError, match="unknown policy field"):
        Policy.from_dict({**old, "quantize": "int8_static"})  # version 1 had no quantization
    with pytest.raises(PolicyError, match="quantize must be one of"):
        Policy(quantize="int4")


def test_a_space_without_quantize_draws_no_quantization_parameter_and_keeps_its_fingerprint(tmp_path):
    import optuna

    plain = load_space("default")
    trial = optuna.create_study().ask()
    policy, _ = plain.resolve(MLP(), protected=["head"]).sample(trial)
    assert policy.quantize == "none" and "quantize" not in trial.params
    assert plain.fingerprint() == load_space("default").model_copy(update={"quantize": ["none"]}).fingerprint()
    path = tmp_path / "q.yaml"
    path.write_text("quantize: [none, int4]\n")
    with pytest.raises(SearchSpaceError, match="quantize"):
        load_space(path)


def test_the_compress_space_seeds_int8_versions_of_the_uniform_policies():
    space = load_space("compress")
    assert space.quantizes
    params = space.resolve(MLP(), protected=["head"]).seed_params()
    uniform = [p for p in params if p.get("quantize") == "none" and all(v == 1.0 for k, v in p.items()
                                                                          if k.startswith("scale."))]
    quantized = [p for p in params if p.get("quantize") == "int8_static"]
    assert quantized and len(quantized) == len(uniform)
    assert {p["sparsity.global"] for p in quantized} == {p["sparsity.global"] for p in uniform}


def test_a_space_that_may_quantize_seeds_int8_versions_of_the_shallow_policies_too():
    """Depth and int8 compound (int8 speeds the matrix products, a dropped layer every operator): each shallow
    seed comes in both forms, so the search starts from depth + int8 instead of having to find it."""
    from autoprune.resolved_space import ResolvedSpace

    layers = tuple(f"encoder.layer.{i}" for i in range(6))
    space = load_space("transformer").model_copy(update={"quantize": ["none", "int8_dynamic"]})
    encoder = ResolvedSpace(space=space, layers=("a",), groups={}, units={"a": ("a",)}, blocks=layers)
    shallow = [p for p in encoder.seed_params(block_order=list(layers)) if any(v is True for k, v in p.items()
                                                                             if k.startswith("drop."))]

    def dropped(p):
        return tuple(k for k, v in p.items() if k.startswith("drop.") and v)

    plain = sorted(dropped(p) for p in shallow if p["quantize"] == "none")
    assert plain and plain == sorted(dropped(p) for p in shallow if p["quantize"] == "int8_dynamic")


# --- the quantized model ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["int8_static", "int8_dynamic"])
def test_a_quantized_model_runs_smaller_and_keeps_the_accuracy(digits, mode):
    model, data = digits
    x = next(iter(data.val_dataloader()))[0][:2]
    q = quantize_model(model, x, mode, calibration=_train_batches(data))
    assert isinstance(q, QuantizedModel) and q(x).shape == model(x).shape
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert q.size_bytes < fp32_bytes
    assert accuracy(q, data.val_dataloader()) >= accuracy(model, data.val_dataloader()) - 0.03


def test_dynamic_int8_scales_the_weights_per_output_channel():
    # one output row 1000x larger than the others: with one scale per matrix the small rows round to zero
    # (static int8 scales weights per channel too, but its outputs are int8 tensors with one scale)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 8, bias=False)).eval()
    with torch.no_grad():
        net[0].weight[0] *= 1000
    x = torch.randn(32, 64)
    q = quantize_model(net, x[:2], "int8_dynamic")
    with torch.no_grad():
        expected, got = net(x)[:, 1:], q(x)[:, 1:]
    assert float((got - expected).norm() / expected.norm()) < 0.05


def test_an_unknown_mode_an_export_or_a_quantizer_that_fails_is_an_export_error(monkeypatch):
    with pytest.raises(ExportError, match="unknown quantization"):
        quantize_model(MLP(), torch.randn(2, 16), "int4")

    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator frobnicate")

    monkeypatch.setattr("autoprune.quantize._quantize", refuse)
    with pytest.raises(ExportError, match="could not quantize MLP to int8_static.*frobnicate"):
        quantize_model(MLP(), torch.randn(2, 16), "int8_static")
    monkeypatch.setattr("autoprune.quantize.export_onnx", refuse)
    with pytest.raises(ExportError, match="could not be exported to ONNX.*frobnicate"):
        quantize_model(MLP(), torch.randn(2, 16), "int8_dynamic")


def test_the_int8_parity_check_refuses_a_model_that_is_not_the_fp32_one(digits, tmp_path):
    model, data = digits
    x = first_inputs(data.val_dataloader())
    q = quantize_model(model, x, "int8_static", calibration=_train_batches(data))
    parity = int8_parity(model, q, iter(data.val_dataloader()))
    assert parity.agreement >= 0.98 and parity.relative_error < 0.15
    stranger = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    wrong = quantize_model(stranger, x, "int8_dynamic")
    with pytest.raises(ExportError, match="agrees with the fp32 model"):
        save_pruned(model, Policy(quantize="int8_static"), tmp_path / "c", example_inputs=x, formats=(),
                    int8=wrong, parity_batches=iter(data.val_dataloader()))


def test_a_looser_int8_tolerance_is_the_user_s_to_give(digits, tmp_path):
    """An embedder has no top-1 class and a transformer's int8 outputs stray further: int8_tolerance= lets the
    same save pass that the default tolerance refuses, and says which it checked."""
    from autoprune.quantize import Int8Tolerance

    model, data = digits
    x = first_inputs(data.val_dataloader())
    stranger = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    wrong = quantize_model(stranger, x, "int8_dynamic")
    with pytest.raises(ExportError, match="--int8-max-error"):
        save_pruned(model, Policy(quantize="int8_static"), tmp_path / "a", example_inputs=x, formats=(),
                    int8=wrong, parity_batches=iter(data.val_dataloader()))
    files = save_pruned(model, Policy(quantize="int8_static"), tmp_path / "b", example_inputs=x, formats=(), int8=wrong,
                        parity_batches=iter(data.val_dataloader()),
                        int8_tolerance=Int8Tolerance(min_agreement=0.0, max_relative_error=1e3))
    assert files["int8"].is_file()


@pytest.mark.parametrize("kwargs", [{"min_agreement": 1.5}, {"min_agreement": -0.1}, {"max_relative_error": 0}])
def test_an_impossible_int8_tolerance_is_refused(kwargs):
    from autoprune.errors import AutopruneInputError
    from autoprune.quantize import Int8Tolerance

    with pytest.raises(AutopruneInputError, match="int8"):
        Int8Tolerance(**kwargs)


# --- trials and searches ------------------------------------------------------------------------------------

def test_a_quantized_trial_is_timed_sized_and_scored_as_its_int8_model(digits, tmp_path):
    model, data = digits
    x = first_inputs(data.val_dataloader())
    ctx = TrialContext(base_model=model, example_inputs=x, train_loader=data.train_dataloader(),
                       val_loader=data.val_dataloader(), profile=fast_profile(runtime="onnxruntime"),
                       artifacts_dir=tmp_path)
    policy = Policy(layers=Policy.uniform(LAYERS, sparsity=0.25, method="l1_structured").layers,
                    quantize="int8_static")
    report = execute_trial(ctx, Proposal(0, policy, FinetuneSettings(5, 1e-3, 1)), front=[])
    saved = tmp_path / "trial_00000"
    int8 = QuantizedModel.load(saved / INT8_FILE)
    assert report.values[2] == pytest.approx(int8.size_bytes / 1e6)
    assert report.values[0] == pytest.approx(accuracy(int8, data.val_dataloader()))
    assert (saved / "weights.pt").is_file() and report.user_attrs["int8_parity"]["agreement"] >= 0.9
    fp32 = execute_trial(ctx, Proposal(1, Policy(layers=policy.layers), FinetuneSettings(5, 1e-3, 1)), front=[])
    assert fp32.values[2] > 2 * report.values[2], "int8 weights take about a quarter of the bytes"
    assert fp32.user_attrs["shape_key"] != report.user_attrs["shape_key"], "the cache keeps int8 apart"


def test_the_cache_key_tells_quantized_from_float_models(digits):
    model, _ = digits
    profile = fast_profile()
    assert shape_key(model, profile) != shape_key(model, profile, variant="int8_static")


def test_quantizing_under_the_eager_runtime_is_refused_up_front(digits, tmp_path):
    model, data = digits
    with pytest.raises(AutopruneInputError, match="--runtime onnxruntime"):
        search(model, data, space="compress", n_trials=1, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_search_over_the_compress_space_records_quantized_candidates(digits, tmp_path):
    model, data = digits
    space = load_space("compress")
    space = space.model_copy(update={"finetune": space.finetune.model_copy(update={"max_steps": 3})})
    result = search(model, data, space=space, n_trials=4, seed=0, out_dir=tmp_path, sampler="random",
                    profile=fast_profile(runtime="onnxruntime"), seed_policies=False)
    done = [t for t in result.trials if t.complete]
    assert len(done) == 4
    assert {t.policy["quantize"] for t in done} == {"none", "int8_static"}  # this seed draws both
    front = json.loads((tmp_path / "pareto.json").read_text())["pareto"]
    assert all("quantize" in c["policy"] for c in front)
    for c in result.pareto:
        saved = Path(result.meta.artifacts) / c.artifact_dir
        assert (saved / INT8_FILE).is_file() == (c.policy["quantize"] != "none")


def test_refine_re_quantizes_a_quantized_candidate_after_the_longer_fine_tune(digits, tmp_path):
    from autoprune.loading import candidate_loader
    from autoprune.prune import prune
    from autoprune.refine import refine
    from autoprune.result import SearchResult, TrialRecord

    model, data = digits
    x = next(iter(data.val_dataloader()))[0][:2]
    policy = Policy(layers=Policy.uniform(LAYERS, sparsity=0.25, method="l1_structured").layers,
                    quantize="int8_static")
    save_pruned(prune(model, policy, x), policy, tmp_path / "candidates" / "trial_00000", example_inputs=x,
                formats=())
    record = TrialRecord(number=0, state="complete", feasible=True, metric=0.5, latency_ms=1.0, size_mb=0.01,
                         policy=policy.to_dict(), artifact_dir="trial_00000", lr=1e-3)
    result = SearchResult(trials=[record], out_dir=tmp_path, model_loader=candidate_loader(tmp_path / "candidates",
                                                                                           model))
    refined = refine(result, data, steps=3, out_dir=tmp_path / "refined", formats=())
    int8 = QuantizedModel.load(tmp_path / "refined" / "trial_00000" / INT8_FILE)
    assert refined[0].metric == pytest.approx(accuracy(int8, data.val_dataloader()))


def test_a_quantizer_that_refuses_fails_the_trial_with_its_reason_and_the_search_goes_on(digits, tmp_path,
                                                                                       monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no int8 kernel for operator Frobnicate")

    monkeypatch.setattr("autoprune.quantize._quantize", refuse)
    model, data = digits
    space = load_space("compress")
    space = space.model_copy(update={"finetune": space.finetune.model_copy(update={"max_steps": 2})})
    result = search(model, data, space=space, n_trials=4, seed=0, out_dir=tmp_path, sampler="random",
                    profile=fast_profile(runtime="onnxruntime"), seed_policies=False)
    failed = [t for t in result.trials if t.state == "failed"]
    assert failed and all("Frobnicate" in t.failure_reason and t.policy["quantize"] == "int8_static"
                          for t in failed)
    assert len([t for t in result.trials if t.complete]) == 4 - len(failed)
    assert all(t.policy["quantize"] == "none" for t in result.trials if t.complete)


# --- issue 29: best/ holds the int8 model; a failed int8 check leaves nothing half-written ---------------------

def test_best_of_an_int8_search_holds_the_int8_model_it_scored(digits, tmp_path):
    """best/ had only model.onnx (fp32) although its policy said int8_static (issue 29, point 3)."""
    model, data = digits
    space = load_space(TINY_INT8)
    result = search(model, data, space=space, n_trials=2, seed=0, out_dir=tmp_path, sampler="random",
                    profile=fast_profile(runtime="onnxruntime"), seed_policies=False)
    best = result.best()
    assert best is not None and best.policy["quantize"] == "int8_static"
    int8 = QuantizedModel.load(tmp_path / "best" / INT8_FILE)
    assert accuracy(int8, data.val_dataloader()) == pytest.approx(best.metric, abs=0.02)
    assert json.loads((tmp_path / "best" / "policy.json").read_text())["quantize"] == "int8_static"


def test_an_int8_model_outside_the_tolerance_is_an_input_error_and_leaves_the_target_as_it_was(digits, tmp_path):
    """Written to a staging folder and moved in only when every check passed (issue 29, point 5)."""
    from autoprune.errors import Int8ToleranceError

    model, data = digits
    x = first_inputs(data.val_dataloader())
    stranger = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    wrong = quantize_model(stranger, x, "int8_dynamic")
    with pytest.raises(Int8ToleranceError, match="--int8-min-agreement") as info:
        save_pruned(model, Policy(quantize="int8_static"), tmp_path / "new" / "export", example_inputs=x,
                    formats=("torchscript",), int8=wrong, parity_batches=iter(data.val_dataloader()))
    assert isinstance(info.value, AutopruneInputError)
    assert not (tmp_path / "new").exists(), "no folder it created is left"
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    (kept / "policy.json").write_text("{}")
    with pytest.raises(Int8ToleranceError):
        save_pruned(model, Policy(quantize="int8_static"), kept, example_inputs=x, formats=("torchscript",),
                    int8=wrong, parity_batches=iter(data.val_dataloader()))
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt", "policy.json"], "nothing added, nothing lost"
    assert (kept / "policy.json").read_text() == "{}"
