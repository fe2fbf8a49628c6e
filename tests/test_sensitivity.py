"""Layer sensitivity and the scales derived from it (the seeds of a search)."""

from __future__ import annotations

import torch

from autoprune.finetune import as_lightning, evaluate
from autoprune.policy import LayerPolicy, Policy
from autoprune.prune import prune
from autoprune.sensitivity import layer_sensitivity, sensitivity_scales
from autoprune.zoo import PlainCNN


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
