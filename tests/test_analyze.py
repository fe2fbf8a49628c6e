"""``analyze()`` and ``autoprune analyze``: the model's costs add up, latency shares are shares, the units and
blocks are the search's, the scan is the seeds' scan, and an analysis can seed a search."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
from torch import nn

from autoprune import analyze, search
from autoprune.analyze import Analysis
from autoprune.costs import cost_breakdown
from autoprune.errors import AnalysisError, AutopruneInputError
from autoprune.methods.structured import count_macs_and_params
from autoprune.prepare import prepare_model
from autoprune.space import load_space
from autoprune.zoo import MobileNetCNN, PlainCNN, ResNetCNN, TinyBert, TinyTransformer, example_input
from tests.conftest import fast_profile
from tests.test_cli import TINY, autoprune


def batches(model: nn.Module, n: int = 4, size: int = 8):
    """Random labelled batches shaped like the zoo model's example input (dicts for dict models)."""
    torch.manual_seed(0)
    x = example_input(model, batch=size)
    if isinstance(x, dict):
        return [{**x, "labels": torch.randint(0, 10, (size,))} for _ in range(n)]
    return [(torch.randn_like(x), torch.randint(0, 10, (size,))) for _ in range(n)]


def analysed(model: nn.Module, **kwargs) -> Analysis:
    data = batches(model)
    return analyze(model.eval(), (data, data), profile=fast_profile(batch_size=4), sparsities=(0.5,), **kwargs)


@pytest.mark.parametrize("make", [PlainCNN, ResNetCNN, MobileNetCNN, TinyTransformer])
def test_layers_and_the_rest_add_up_to_the_models_parameters_and_macs(make):
    """Each layer's own parameters and MACs plus "everything else" are the model's totals, as measure() counts
    them (a MultiheadAttention's own projections included)."""
    torch.manual_seed(0)
    model = make().eval()
    analysis = analysed(model)
    macs, _ = count_macs_and_params(model, example_input(model, batch=1))
    assert analysis.params == sum(p.numel() for p in model.parameters())
    assert analysis.macs == macs
    assert sum(layer.params for layer in analysis.layers) + analysis.other["params"] == analysis.params
    assert sum(layer.macs for layer in analysis.layers) + analysis.other["macs"] == analysis.macs


def test_latency_shares_are_non_negative_and_sum_to_one():
    """Every module's own share of the hooked forward is >= 0 and they sum to 1; the analysis's layers plus
    everything else do too."""
    model = ResNetCNN().eval()
    costs = cost_breakdown(model, example_input(model), fast_profile(batch_size=4))
    assert all(c.time_share >= 0 for c in costs.modules.values())
    assert math.isclose(sum(c.time_share for c in costs.modules.values()), 1.0, abs_tol=1e-9)
    analysis = analysed(model)
    shares = [layer.latency_share for layer in analysis.layers] + [analysis.other["latency_share"]]
    assert all(s >= 0 for s in shares) and math.isclose(sum(shares), 1.0, abs_tol=1e-6)
    assert costs.forward_ms > 0


def test_units_and_blocks_are_the_ones_the_search_uses():
    """The coupled units are the search's (prepare_model's), each coupled layer names its partners, and the
    removable blocks are the search's, each dropped alone with a metric and a latency saving."""
    model = ResNetCNN().eval()
    analysis = analysed(model)
    data = batches(model)
    resolved = prepare_model(model, (data, data), load_space("default")).resolved
    assert {u.name: u.layers for u in analysis.units} == {n: tuple(m) for n, m in resolved.units.items()}
    coupled = [u for u in analysis.units if len(u.layers) > 1]
    assert coupled, "the residual stream is one unit"
    for layer in analysis.layers:
        if layer.unit == coupled[0].name:
            assert set(layer.coupled) == set(coupled[0].layers) - {layer.name}
    assert [b.name for b in analysis.blocks] == list(resolved.blocks) and analysis.blocks
    assert all(b.error is None and b.metric is not None and b.latency_saved is not None for b in analysis.blocks)


def test_a_unit_pruned_at_sparsity_zero_scores_the_dense_metric():
    """Sparsity 0 removes nothing: every unit scores exactly the dense model's metric there."""
    model = PlainCNN().eval()
    data = batches(model)
    analysis = analyze(model, (data, data), profile=fast_profile(batch_size=4), sparsities=(0.0, 0.5))
    assert analysis.sparsities == (0.0, 0.5)
    for unit in analysis.units:
        assert unit.metric[0.0] == pytest.approx(analysis.metric, abs=1e-12), unit.name


def test_the_ranking_and_scales_are_the_seeds():
    """The ranking orders units by pruning cost, and the scales are those the seeds compute from the scan
    (one scale per ranked unit, the cheapest unit the largest)."""
    analysis = analysed(PlainCNN())
    ranked = [u for u in analysis.units if u.rank is not None]
    assert [u.name for u in sorted(ranked, key=lambda u: u.rank)] == analysis.ranking
    scales = [u.scale for u in sorted(ranked, key=lambda u: u.rank)]
    assert scales == sorted(scales, reverse=True) and scales[0] > scales[-1]
    assert analysis.suggested["policy"]["layers"], "a starting policy that prunes"


def test_dict_batches_and_attention_heads_are_analysed():
    """A BERT-style model fed dict batches: every unit (heads, feed-forward) scans without error."""
    torch.manual_seed(0)
    analysis = analysed(TinyBert(), space="transformer")
    assert analysis.units and all(u.error is None for u in analysis.units), [u.error for u in analysis.units]
    assert all(0.5 in u.metric for u in analysis.units)


def test_analysis_json_round_trips(tmp_path):
    analysis = analysed(ResNetCNN())
    path = analysis.save(tmp_path / "analysis.json")
    assert Analysis.load(path) == analysis
    json.loads(path.read_text())  # strict JSON: no NaN or Infinity


def test_an_unreadable_analysis_file_is_named(tmp_path):
    bad = tmp_path / "analysis.json"
    bad.write_text("{not json")
    with pytest.raises(AnalysisError, match="analysis.json"):
        Analysis.load(bad)


def test_a_search_seeds_from_a_saved_analysis_without_scanning_again(tmp_path, monkeypatch):
    """search(analysis=) skips the start-up scan, and the study's queued scaled seed is the analysis's
    suggested policy."""
    model = PlainCNN().eval()
    data = batches(model)
    profile = fast_profile(batch_size=4)
    space = load_space(TINY)
    analysis = analyze(model, (data, data), space=space, profile=profile, sparsities=(0.5,))
    path = analysis.save(tmp_path / "analysis.json")
    scanned = []
    monkeypatch.setattr("autoprune.seeds.layer_scans", lambda *a, **k: scanned.append(1) or {})
    result = search(model, (data, data), space=space, n_trials=1, profile=profile, out_dir=tmp_path / "run",
                    analysis=path, study_name="s")
    assert not scanned and [t.state for t in result.trials] == ["complete"]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    resolved = prepare_model(model, (data, data), space).resolved
    queued = [resolved.policy_of(t.params or t.system_attrs["fixed_params"])[0].to_dict() for t in study.trials]
    assert analysis.suggested["policy"] in queued


def test_an_analysis_ranks_blocks_as_the_shallow_seeds_drop_them(tmp_path):
    """The block whose removal changes nothing is the cheapest to drop, and a saved analysis hands the
    ranking to the seeds (the shallow seeds drop the cheapest blocks first)."""
    from tests.test_sensitivity import _closeness_to, _with_an_idle_block

    model = _with_an_idle_block()
    data = batches(model)
    analysis = analyze(model, (data, data), profile=fast_profile(batch_size=4), sparsities=(0.5,),
                       metric=_closeness_to(model, data[0][0]))
    ranking = analysis.head_start().blocks
    order = ranking.order
    assert order[0] == "layers.1" and set(order) <= {b.name for b in analysis.blocks}
    assert ranking.free == ("layers.1",)  # the only block whose removal changes nothing
    assert Analysis.load(analysis.save(tmp_path / "a.json")).head_start() == analysis.head_start()
    resolved = prepare_model(model, (data, data), load_space("default")).resolved
    assert resolved.shallow_seeds(block_order=order)[0][1] == ("layers.1",)


def test_an_analysis_of_another_model_is_refused(tmp_path):
    """Seeding from an analysis of another architecture fails up front, naming the units."""
    analysis = analysed(PlainCNN())
    model = ResNetCNN().eval()
    data = batches(model)
    with pytest.raises(AnalysisError, match="another model"):
        search(model, (data, data), n_trials=1, profile=fast_profile(batch_size=4), out_dir=tmp_path / "run",
               analysis=analysis)
    assert not (tmp_path / "run").exists(), "refused before a directory or study was created"


def test_an_analysis_of_the_same_architecture_with_other_weights_is_refused(tmp_path):
    """Same layer names, other weights: its dense metric and ranking are not this model's (issue 29, point 2)."""
    torch.manual_seed(0)
    analysis = analysed(PlainCNN())
    torch.manual_seed(1)
    other = PlainCNN().eval()
    data = batches(other)
    with pytest.raises(AnalysisError, match="another model .*weights differ"):
        search(other, (data, data), n_trials=1, profile=fast_profile(batch_size=4), out_dir=tmp_path / "run",
               analysis=analysis)
    assert not (tmp_path / "run").exists(), "refused before a directory or study was created"


@pytest.fixture(scope="module")
def saved_analysis(tmp_path_factory):
    torch.manual_seed(0)
    model = PlainCNN().eval()
    data = batches(model)
    analysis = analyze(model, (data, data), space=load_space(TINY), profile=fast_profile(batch_size=4),
                       sparsities=(0.5,))
    return model, data, analysis.to_dict()


@pytest.mark.parametrize("edit, field", [
    (lambda d: [], "not an analysis object"),
    (lambda d: None, "not an analysis object"),
    (lambda d: {**d, "metric": float("nan")}, "field metric must be a finite number"),
    (lambda d: {**d, "metric": [0.9]}, "field metric must be a finite number"),
    (lambda d: {**d, "params": 1.5}, "field params must be a finite integer"),
    (lambda d: {**d, "units": [{**d["units"][0], "scale": "1.5"}]}, r"field units\[0\].scale must be a finite number"),
    (lambda d: {k: v for k, v in d.items() if k != "blocks"}, "field blocks is missing"),
    (lambda d: {**d, "layers": {"a": 1}}, "field layers must be a list"),
])
def test_an_edited_or_malformed_analysis_file_is_refused_naming_the_field(saved_analysis, tmp_path, edit, field):
    _, _, data = saved_analysis
    path = tmp_path / "analysis.json"
    path.write_text(json.dumps(edit(data)))
    with pytest.raises(AnalysisError, match=field):
        Analysis.load(path)


def test_an_analysis_whose_scales_leave_the_spaces_range_is_refused_before_anything_is_created(saved_analysis,
                                                                                               tmp_path):
    model, data, saved = saved_analysis
    edited = {**saved, "units": [{**u, "scale": 1e9} for u in saved["units"]]}
    with pytest.raises(AnalysisError, match="outside the space"):
        search(model, (data, data), space=load_space(TINY), n_trials=1, profile=fast_profile(batch_size=4),
               out_dir=tmp_path / "run", analysis=Analysis.from_dict(edited))
    assert not (tmp_path / "run").exists()


def test_an_analysis_timed_interleaved_seeds_a_search_that_is_not(saved_analysis, tmp_path):
    """--no-interleave changes how timings cancel drift, not what is timed: the analysis fits (issue 29, 7)."""
    model, data, saved = saved_analysis
    result = search(model, (data, data), space=load_space(TINY), n_trials=1,
                    profile=fast_profile(batch_size=4, interleave=False), out_dir=tmp_path / "run",
                    analysis=Analysis.from_dict(saved))
    assert [t.state for t in result.trials] == ["complete"]


@pytest.mark.parametrize("sparsities", [(), (1.0,), (-0.1,), ("half",), 0.5])
def test_bad_sparsities_are_refused(sparsities):
    model = PlainCNN()
    with pytest.raises(AutopruneInputError, match="sparsities"):
        analyze(model, (batches(model), batches(model)), sparsities=sparsities)


MODELS = '''
import torch
from torch import nn

def linear():
    return nn.Linear(5, 3)

def small():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

def no_layers():
    return nn.Sequential(nn.Flatten(), nn.ReLU())

def data():
    batches = [(torch.randn(4, 8), torch.randint(0, 3, (4,))) for _ in range(2)]
    return batches, batches
'''


@pytest.mark.parametrize("args, message", [
    (["--model", "mods:linear", "--data", "mods:data"], "cannot run"),
    (["--model", "mods:no_layers", "--data", "mods:data"], "no prunable"),
    (["--model", "mods:linear"], "give both --model and --data"),
    (["--sparsities", "0.5,1.5"], "sparsities"),
    (["--sparsities", "half"], "--sparsities takes numbers"),
    (["--model", "mods:small", "--data", "mods:data", "--space", "nolayers.yaml"], "matches no"),
])
def test_analyze_bad_input_exits_2_with_a_message(args, message, tmp_path):
    (tmp_path / "mods.py").write_text(MODELS)
    (tmp_path / "nolayers.yaml").write_text("version: 1\nlayers: ['nomatch*']\n")
    proc = autoprune("analyze", "--out", tmp_path / "out", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.replace("\n", " ").lower() or message in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr


def test_analyze_writes_json_and_picture_and_search_starts_from_it(tmp_path):
    """The embedded digits default: analysis.json and analysis.png written, the tables printed, and a search
    given --analysis runs from it."""
    out = tmp_path / "run"
    proc = autoprune("analyze", "--space", TINY, "--out", out, "--batch-size", "8", "--sparsities", "0.3,0.6")
    assert proc.returncode == 0, proc.stderr
    assert (out / "analysis.png").stat().st_size > 0 and "Units pruned alone" in proc.stdout
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["sparsities"] == [0.3, 0.6] and saved["units"]
    proc = autoprune("search", "--space", TINY, "--out", out, "--batch-size", "8", "--trials", "1",
                     "--analysis", out / "analysis.json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = autoprune("search", "--space", TINY, "--out", out, "--trials", "1",
                     "--analysis", out / "analysis.json", "--no-progress")
    assert proc.returncode == 2 and "batch_size 8 vs 64" in proc.stderr.replace("\n", " ")


def test_a_lightning_module_with_a_logged_metric_is_analysed(digits):
    """A LightningModule (layers under net.*) scored by the metric its validation_step logs: every unit
    scans, and the dense metric is the logged one."""
    from tests.test_search import LitDigits

    model, data = digits
    analysis = analyze(LitDigits(model), data, metric="val_acc", sparsities=(0.5,),
                       profile=fast_profile(batch_size=4))
    assert analysis.metric_name == "val_acc" and 0.5 < analysis.metric <= 1.0
    assert analysis.units and all(u.name.startswith("net.") and u.error is None for u in analysis.units)


def test_under_onnx_runtime_the_layer_shares_come_from_its_profiler():
    """--runtime onnxruntime: latency and the latency each unit saves are timed in ONNX Runtime, and so are
    the per-layer shares (its profiler's node times, by the module scope each node carries): the convolutions
    hold time of their own, and the shares sum to 1."""
    model = PlainCNN().eval()
    data = batches(model)
    analysis = analyze(model, (data, data), sparsities=(0.5,), profile=fast_profile(batch_size=4, runtime="onnxruntime"))
    assert analysis.profile["runtime"] == "onnxruntime" and analysis.latency_ms > 0
    assert "ONNX Runtime's profiler" in analysis.timed_by
    shares = {layer.name: layer.latency_share for layer in analysis.layers}
    assert shares["conv1"] > 0 and shares["conv2"] > 0
    assert math.isclose(sum(shares.values()) + analysis.other["latency_share"], 1.0, abs_tol=1e-6)
    assert all(u.latency_saved[0.5] is not None for u in analysis.units)


def test_a_runtime_that_cannot_time_modules_gets_eager_shares_and_says_so(monkeypatch):
    from autoprune.runtimes import get_runtime

    monkeypatch.setattr(type(get_runtime("onnxruntime")), "module_times", lambda self, *a, **k: None)
    model = PlainCNN().eval()
    costs = cost_breakdown(model, example_input(model), fast_profile(batch_size=4, runtime="onnxruntime"))
    assert "onnxruntime cannot time modules, so these are eager PyTorch's shares" in costs.timed_by
    assert math.isclose(sum(c.time_share for c in costs.modules.values()), 1.0, abs_tol=1e-9)


def test_an_interrupted_analyze_says_nothing_was_written_not_that_trials_are_kept(monkeypatch, tmp_path):
    """analyze has no trials: Ctrl-C said "finished trials are kept; ... resume" (issue 29, point 8)."""
    from typer.testing import CliRunner

    from autoprune import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import importlib

    monkeypatch.setattr(importlib.import_module("autoprune.analyze"), "analyze", interrupted)
    (tmp_path / "mods.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    outcome = CliRunner().invoke(cli.app, ["analyze", "--model", "mods:small", "--data", "mods:data", "--out",
                                           str(tmp_path / "out")])
    assert outcome.exit_code == 130
    text = " ".join(outcome.output.split())
    assert "nothing of it was written" in text and "trials" not in text


def test_an_analysis_json_that_is_a_directory_is_refused_before_the_analysis_runs(tmp_path):
    (tmp_path / "mods.py").write_text(MODELS)
    (tmp_path / "out" / "analysis.json").mkdir(parents=True)
    proc = autoprune("analyze", "--model", "mods:small", "--data", "mods:data", "--out", tmp_path / "out",
                     cwd=tmp_path)
    assert proc.returncode == 2 and "is a directory" in proc.stderr, proc.stderr
