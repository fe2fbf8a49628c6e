"""Finding prunable layers, the protected output layer, and resolving layer globs."""

from __future__ import annotations

import pytest
from torch import nn

from autoprune.errors import LayerMatchError, NoPrunableLayersError
from autoprune.layers import output_layers, prunable_layers, resolve_globs
from autoprune.zoo import ResNetCNN, example_input


def test_lists_conv_and_linear_layers_in_order():
    """Conv and Linear layers are listed in definition order."""
    names = prunable_layers(ResNetCNN())
    assert names[0] == "stem" and names[-1] == "head"
    assert "layers.1.shortcut.0" in names


def test_exclude_glob_removes_layers():
    """Layers matching an exclude glob are left out."""
    names = prunable_layers(ResNetCNN(), exclude=["layers.0.*"])
    assert not any(n.startswith("layers.0.") for n in names)


def test_exclude_glob_matching_nothing_is_an_error():
    """A glob that matches nothing is almost always a typo: it is reported, naming the glob."""
    with pytest.raises(LayerMatchError, match="lyers"):
        prunable_layers(ResNetCNN(), exclude=["lyers.*"])


def test_model_without_prunable_layers_is_an_error():
    """A model with no Conv/Linear raises NoPrunableLayersError naming the model class."""
    with pytest.raises(NoPrunableLayersError, match="ReLU"):
        prunable_layers(nn.ReLU())


def test_output_layer_is_the_last_prunable_layer_run():
    """The classifier is detected by execution order, not by name."""
    model = ResNetCNN()
    assert output_layers(model, example_input(model)) == ["head"]


def test_resolve_globs_keeps_model_order_and_rejects_misses():
    """Globs expand in model order; a pattern that matches nothing raises LayerMatchError."""
    names = ["a.conv", "b.conv", "b.fc"]
    assert resolve_globs(["b.*", "a.conv"], names) == ["a.conv", "b.conv", "b.fc"]
    with pytest.raises(LayerMatchError, match="c.*"):
        resolve_globs(["c.*"], names)
