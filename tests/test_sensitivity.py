"""Layer sensitivity and the scales derived from it (the seeds of a search)."""

from __future__ import annotations

import math

import torch
from torch import nn

from autoprune.finetune import as_lightning, evaluate
from autoprune.measure import HardwareProfile
from autoprune.policy import LayerPolicy, Policy
from autoprune.prune import prune
import pytest

from autoprune.sensitivity import (BlockRanking, LayerScan, Scan, alignment_rates, block_scan, cheapest,
                                   free_blocks, layer_scan, layer_sensitivity,
                                   pruning_costs, sensitivity_scales)
from autoprune.zoo import PlainCNN, ResNetCNN


def _data():
    torch.manual_seed(0)
    return [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))]


def test_pruning_nothing_costs_nothing():
    """At sparsity 0 every layer's drop is exactly 0, and the model is untouched."""
    torch.manual_seed(0)
    net = PlainCNN().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    drops = layer_sensitivity(net, ["conv1", "conv2", "fc"], torch.randn(2, 1, 8, 8), _data(),
                              method="l1_structured", sparsity=0.0)
    assert drops == {"conv1": 0.0, "conv2": 0.0, "fc": 0.0}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_least_sensitive_layer_gets_the_largest_scale_on_the_grid():
    """Scales fall with sensitivity, span [low, high], and sit on the space's grid."""
    scales = sensitivity_scales({"a": 0.2, "b": 0.0, "c": 0.05, "d": 0.5}, low=0.5, high=1.5, step=0.1)
    assert scales["b"] == 1.5 and scales["d"] == 0.5
    assert scales["b"] > scales["c"] > scales["a"] > scales["d"]
    assert all(abs((v - 0.5) / 0.1 - round((v - 0.5) / 0.1)) < 1e-9 for v in scales.values())


def test_a_unit_of_coupled_layers_is_pruned_as_a_whole():
    """Given units, each unit's drop is that of pruning all its layers at once, keyed by the unit."""
    torch.manual_seed(0)
    net = PlainCNN().eval()
    example = torch.randn(2, 1, 8, 8)
    drops = layer_sensitivity(net, {"both": ("conv1", "conv2")}, example, _data(), method="l1_structured")
    both = prune(net, Policy(layers={n: LayerPolicy(sparsity=0.5, method="l1_structured") for n in ("conv1", "conv2")}),
                 example)
    score = lambda m: evaluate(as_lightning(m, loss=None, lr=1e-3), _data(), None)  # noqa: E731
    assert list(drops) == ["both"]
    assert drops["both"] == score(net) - score(both)


def test_a_layer_that_saves_no_latency_is_the_costliest_to_prune():
    """Zero drop does not make a unit cheap when it saves no time: it ranks behind any unit that does."""
    costs = pruning_costs({"conv": LayerScan(drop=0.3, latency_saved=0.05),
                           "fc": LayerScan(drop=0.0, latency_saved=-0.01)}, base=0.98)
    assert costs["fc"] == math.inf
    scales = sensitivity_scales(costs, low=0.5, high=1.5, step=0.1)
    assert scales == {"conv": 1.5, "fc": 0.5}


def test_a_saving_within_timing_noise_counts_as_none():
    """Below min_saved (2% of dense latency by default) a unit ranks with those that save nothing."""
    costs = pruning_costs({"noise": LayerScan(drop=0.0, latency_saved=0.015),
                           "real": LayerScan(drop=0.5, latency_saved=0.10)}, base=1.0)
    assert costs["noise"] == math.inf and math.isfinite(costs["real"])


def test_cost_is_metric_lost_per_latency_saved_with_a_noise_floor():
    """Cost = (drop, at least 0, plus 1% of the dense metric) / latency saved; no latency: the drop."""
    costs = pruning_costs({"a": LayerScan(drop=0.10, latency_saved=0.5),
                           "b": LayerScan(drop=-0.02, latency_saved=0.2),
                           "c": LayerScan(drop=0.07)}, base=2.0)
    assert costs["a"] == (0.10 + 0.02) / 0.5
    assert costs["b"] == 0.02 / 0.2
    assert costs["c"] == 0.07


def test_the_scan_times_each_pruned_unit_against_the_dense_model():
    """With a profile, every unit gets the share of dense latency it saves; pruning a layer that holds
    nearly all of the compute at 90% saves a clear share; the drops equal layer_sensitivity's."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 10)).eval()
    example = torch.randn(2, 3, 16, 16)
    data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))]
    profile = HardwareProfile(batch_size=4, warmup=2, repeats=5)
    scan = layer_scan(net, ["0", "2"], example, data, method="l1_structured", sparsity=0.9, profile=profile)
    assert list(scan.units) == ["0", "2"]
    assert scan.units["0"].latency_saved > 0.5
    assert all(-1.0 < u.latency_saved < 1.0 for u in scan.units.values())
    drops = layer_sensitivity(net, ["0", "2"], example, data, method="l1_structured", sparsity=0.9)
    assert {n: u.drop for n, u in scan.units.items()} == drops


def test_without_a_profile_the_scan_measures_no_latency():
    torch.manual_seed(0)
    scan = layer_scan(PlainCNN().eval(), ["conv1", "fc"], torch.randn(2, 1, 8, 8), _data(), method="l1_structured")
    assert all(u.latency_saved is None for u in scan.units.values())


def test_alignment_rates_give_macs_per_ms_of_each_aligned_uniform_probe():
    """One rate per round_to option: the probe's MACs over its measured latency, so a positive figure
    for each, and the exact and aligned probes (different channel counts) are both timed."""
    torch.manual_seed(0)
    net = PlainCNN(width=20).eval()
    profile = HardwareProfile(batch_size=8, warmup=1, repeats=3, min_sample_ms=0.5)
    rates = alignment_rates(net, ["conv1", "conv2", "fc"], torch.randn(2, 1, 8, 8), options=(None, 8),
                            method="l1_structured", profile=profile, sparsity=0.7)
    assert list(rates) == [None, 8]
    assert all(r > 0 and math.isfinite(r) for r in rates.values())


def _with_an_idle_block() -> ResNetCNN:
    """A ResNet whose block ``layers.1`` adds nothing to its (non-negative) input: dropping it changes nothing."""
    torch.manual_seed(0)
    net = ResNetCNN(blocks=2).eval()
    with torch.no_grad():
        net.layers[1].bn2.weight.zero_()
        net.layers[1].bn2.bias.zero_()
    return net


def _closeness_to(net: nn.Module, x: torch.Tensor):
    """A metric that any change of the outputs lowers: minus the squared distance to ``net``'s outputs."""
    with torch.no_grad():
        dense = net(x)

    def closeness(model: nn.Module, loader) -> float:
        with torch.no_grad():
            return -float((model(x) - dense).pow(2).mean())
    return closeness


def test_a_block_that_changes_nothing_is_the_cheapest_to_drop():
    """Each block is dropped alone: one whose removal leaves the outputs as they are loses nothing and is
    ranked first; the caller's model is untouched."""
    net = _with_an_idle_block()
    x = _data()[0][0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scan = block_scan(net, ["layers.0", "layers.1", "layers.3"], x[:2], _data(), metric=_closeness_to(net, x))
    assert scan.units["layers.1"].drop == pytest.approx(0.0, abs=1e-9)
    assert all(scan.units[b].drop > 1e-6 for b in ("layers.0", "layers.3"))
    assert cheapest(scan)[0] == "layers.1" and sorted(cheapest(scan)) == ["layers.0", "layers.1", "layers.3"]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_block_that_cannot_be_dropped_is_recorded_and_left_out():
    """With ``errors``, a block that is not in the model is named there, and the others are still scanned."""
    net = _with_an_idle_block()
    errors: dict[str, str] = {}
    scan = block_scan(net, ["layers.1", "no.such.block"], _data()[0][0][:2], _data(), errors=errors)
    assert list(scan.units) == ["layers.1"] and "no.such.block" in errors["no.such.block"]
    with pytest.raises(Exception, match="no.such.block"):
        block_scan(net, ["no.such.block"], _data()[0][0][:2], _data())


def test_a_block_that_saves_no_measurable_time_is_not_ranked():
    """Blocks whose removal saves less than timing noise are left out of the ranking the seeds drop by."""
    scan = Scan(base=0.9, units={"a": LayerScan(drop=0.01, latency_saved=0.2),
                                 "b": LayerScan(drop=0.0, latency_saved=0.001),
                                 "c": LayerScan(drop=0.05, latency_saved=0.2)})
    assert cheapest(scan) == ("a", "c")


def test_blocks_within_the_noise_floor_are_free():
    """A block whose removal alone loses at most 1% of the dense metric costs nothing measurable; a block
    that saves no time is never free, whatever it loses."""
    scan = Scan(base=0.9, units={"a": LayerScan(drop=0.005, latency_saved=0.2),
                                 "b": LayerScan(drop=0.05, latency_saved=0.2),
                                 "c": LayerScan(drop=-0.01, latency_saved=0.1),
                                 "d": LayerScan(drop=0.0, latency_saved=0.001)})
    assert set(free_blocks(scan)) == {"a", "c"}
    assert BlockRanking.of(scan) == BlockRanking(order=cheapest(scan), free=free_blocks(scan))
    assert BlockRanking.of(Scan(base=0.9, units={"d": LayerScan(drop=0.0, latency_saved=0.001)})) is None
