"""The Torch-Pruning adapter's view of coupled layers (what the search ties together)."""

from __future__ import annotations

from autoprune.layers import prunable_layers
from autoprune.methods.structured import coupled_layers
from autoprune.zoo import ResNetCNN, example_input


def _resnet():
    return ResNetCNN(widths=(16, 32), blocks=1).eval()


def test_layers_meeting_in_a_residual_add_form_one_unit():
    """Every layer appears in exactly one unit; each residual stream's writers share a unit."""
    net = _resnet()
    layers = prunable_layers(net)
    units = coupled_layers(net, example_input(net), layers, protected=["head"])
    assert sorted(n for unit in units for n in unit) == sorted(layers)
    assert ("stem", "layers.0.conv2") in units
    assert ("layers.1.conv2", "layers.1.shortcut.0") in units
    assert ("layers.0.conv1",) in units and ("layers.1.conv1",) in units


def test_a_protected_group_leaves_its_layers_apart():
    """A group holding a protected layer's outputs is never pruned, so its members are not tied."""
    net = _resnet()
    units = coupled_layers(net, example_input(net), prunable_layers(net), protected=["stem"])
    assert ("layers.0.conv2",) in units and ("stem",) in units


def test_only_the_requested_layers_are_returned():
    """Layers not asked for are dropped (a coupled pair with one asked for is a singleton); units follow
    the order of the layers asked for."""
    net = _resnet()
    units = coupled_layers(net, example_input(net), ["layers.0.conv2", "layers.0.conv1"], protected=["head"])
    assert units == [("layers.0.conv2",), ("layers.0.conv1",)]
