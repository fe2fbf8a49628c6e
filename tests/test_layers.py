"""Finding prunable layers, the protected output layer, and resolving layer globs."""

from __future__ import annotations

import pytest
import torch
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
    """The classifier is detected by what the model returns, not by name."""
    model = ResNetCNN()
    assert output_layers(model, example_input(model)) == ["head"]


def test_resolve_globs_keeps_model_order_and_rejects_misses():
    """Globs expand in model order; a pattern that matches nothing raises LayerMatchError."""
    names = ["a.conv", "b.conv", "b.fc"]
    assert resolve_globs(["b.*", "a.conv"], names) == ["a.conv", "b.conv", "b.fc"]
    with pytest.raises(LayerMatchError, match="c.*"):
        resolve_globs(["c.*"], names)


class _UnusedPooler(nn.Module):
    """A pooler that runs last but whose output the forward does not return (a BERT wrapped to embed)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.pooler = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        hidden = x + self.fc2(torch.relu(self.fc1(x)))  # a residual stream fc2 writes into
        self.pooler(hidden)
        return hidden


def test_output_layers_write_what_the_forward_returns_not_what_runs_last():
    """The layers protected are those whose outputs reach a returned tensor: the residual writer fc2, not
    the pooler that ran last, nor fc1 behind fc2."""
    assert output_layers(_UnusedPooler(), torch.randn(2, 8)) == ["fc2"]


def test_every_returned_tensor_protects_its_writer():
    """A dict output with two heads protects both, whichever the loss sees."""
    from autoprune.zoo import KeywordMLP

    model = KeywordMLP()
    assert output_layers(model, example_input(model)) == ["head", "aux"]
