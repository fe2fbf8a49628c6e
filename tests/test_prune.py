"""prune(): bad input errors, method ordering, round_to alignment, calibration, the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune import LayerPolicy, Policy, StructuredMethod, prune, register_method
from autoprune.errors import (CalibrationError, ExampleInputsError, LayerMatchError, NoPrunableLayersError,
                              UnknownMethodError)
from autoprune.methods import available_methods
from autoprune.zoo import MLP, PlainCNN, ResNetCNN, example_input


def _one(layer, sparsity, method):
    return Policy(layers={layer: LayerPolicy(sparsity=sparsity, method=method)})


def test_unknown_method_is_named():
    """An unknown method raises UnknownMethodError naming it and listing the known ones."""
    model = MLP()
    with pytest.raises(UnknownMethodError, match="l7_magic.*l1_structured"):
        prune(model, _one("fc1", 0.5, "l7_magic"), example_input(model))


def test_unknown_layer_is_named():
    """A policy naming a layer the model does not have raises LayerMatchError naming it."""
    model = MLP()
    with pytest.raises(LayerMatchError, match="fc9"):
        prune(model, _one("fc9", 0.5, "l1_structured"), example_input(model))


def test_model_without_prunable_layers_is_rejected():
    """Pruning a model with no prunable layer raises NoPrunableLayersError."""
    with pytest.raises(NoPrunableLayersError):
        prune(nn.Sequential(nn.ReLU()), Policy(), torch.randn(2, 3))


def test_inputs_the_model_cannot_run_are_rejected():
    """Inputs of the wrong shape raise ExampleInputsError with the shapes, before anything is pruned."""
    with pytest.raises(ExampleInputsError, match=r"\(2, 5\)"):
        prune(MLP(), _one("fc1", 0.5, "l1_structured"), torch.randn(2, 5))


def test_taylor_without_calibration_data_is_rejected():
    """taylor_structured needs calibration batches; without them the error says so."""
    model = MLP()
    with pytest.raises(CalibrationError, match="calibration_data"):
        prune(model, _one("fc1", 0.5, "taylor_structured"), example_input(model))


def test_taylor_uses_gradients():
    """Taylor scores come from calibration gradients: a channel with zero gradient is removed first."""
    torch.manual_seed(0)
    model = MLP(in_features=4, hidden=4, num_classes=2)
    with torch.no_grad():
        model.fc2.weight[:, 1] = 0.0  # fc1 neuron 1 feeds nothing: its gradient is zero
        model.fc1.weight[1] = 5.0  # but it is the largest by magnitude
    x = torch.randn(8, 4)
    data = [(x, torch.randint(0, 2, (8,)))]
    taylor = prune(model, _one("fc1", 0.25, "taylor_structured"), x, calibration_data=data)
    l1 = prune(model, _one("fc1", 0.25, "l1_structured"), x)
    assert not any(torch.equal(row, model.fc1.weight[1]) for row in taylor.fc1.weight)
    assert any(torch.equal(row, model.fc1.weight[1]) for row in l1.fc1.weight)


@pytest.mark.parametrize("round_to", [4, 8])
def test_round_to_keeps_channel_counts_aligned(round_to):
    """With round_to=N every pruned layer keeps a multiple of N channels."""
    model = PlainCNN()
    layers = ["conv1", "conv2", "fc"]
    policy = Policy.uniform(layers, sparsity=0.3, method="l1_structured", round_to=round_to)
    pruned = prune(model, policy, example_input(model))
    modules = dict(pruned.named_modules())
    for name in layers:
        kept = modules[name].weight.shape[0]
        assert kept % round_to == 0 and kept < dict(model.named_modules())[name].weight.shape[0]


def test_structured_runs_before_unstructured():
    """In a mixed policy the unstructured sparsity is exact on the already-shrunk layer."""
    model = MLP()
    policy = Policy(layers={"fc1": LayerPolicy(sparsity=0.5, method="l1_structured"),
                            "fc2": LayerPolicy(sparsity=0.4, method="l1_unstructured")})
    pruned = prune(model, policy, example_input(model))
    assert pruned.fc2.weight.shape == (32, 16)
    assert abs(float((pruned.fc2.weight == 0).float().mean()) - 0.4) <= 0.01


def test_output_layer_outputs_are_never_removed():
    """Even when a policy asks, the classifier keeps all its outputs (its weights may be sparsified)."""
    model = ResNetCNN()
    pruned = prune(model, _one("head", 0.5, "l1_structured"), example_input(model))
    assert pruned.head.out_features == 10


def test_coupled_layers_share_one_mean_sparsity():
    """Residual-coupled layers are pruned together at the mean of their requested sparsities."""
    model = ResNetCNN(widths=(16,), blocks=1)
    policy = Policy(layers={"stem": LayerPolicy(sparsity=0.25, method="l1_structured"),
                            "layers.0.conv2": LayerPolicy(sparsity=0.75, method="l1_structured")})
    pruned = prune(model, policy, example_input(model))
    assert pruned.stem.out_channels == pruned.layers[0].conv2.out_channels == 8


def test_user_registered_method_is_usable():
    """A method registered by a user prunes like a built-in and appears in the registry."""

    class SmallestFirstRow(StructuredMethod):
        name = "test_first_element"

        def channel_scores(self, weight, grad):
            return weight[:, 0].abs()

    register_method(SmallestFirstRow(), overwrite=True)
    assert "test_first_element" in available_methods(structured=True)
    model = MLP()
    pruned = prune(model, _one("fc1", 0.5, "test_first_element"), example_input(model))
    assert pruned.fc1.out_features == 16
    # a neuron's score sums the method over fc1's output row and fc2's matching input column
    scores = model.fc1.weight[:, 0].abs() + model.fc2.weight[0, :].abs()
    kept = scores.topk(16).indices.sort().values
    assert torch.equal(pruned.fc1.weight, model.fc1.weight[kept])


def test_random_methods_are_reproducible_with_a_seed():
    """The same seed gives the same pruned weights; another seed a different selection."""
    model = MLP()
    policy = _one("fc1", 0.5, "random_unstructured")
    x = example_input(model)
    a, b, c = (prune(model, policy, x, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


def test_dropped_blocks_become_identities_in_the_copy_only():
    """Depth pruning: the dropped blocks are gone from the pruned copy (fewer parameters, same output
    shape), the original keeps them, and the remaining layers are channel-pruned as usual."""
    torch.manual_seed(0)
    model = ResNetCNN(widths=(8, 16), blocks=2).eval()
    x = example_input(model)
    policy = Policy(layers={"layers.2.conv1": LayerPolicy(sparsity=0.5, method="l1_structured")},
                    drop=("layers.1", "layers.3"))
    pruned = prune(model, policy, x)
    assert isinstance(pruned.layers[1], nn.Identity) and isinstance(pruned.layers[3], nn.Identity)
    assert not isinstance(model.layers[1], nn.Identity)
    assert pruned.layers[2].conv1.out_channels == 8
    assert pruned(x).shape == model(x).shape
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_dropping_a_block_that_is_not_removable_names_the_removable_ones():
    model = ResNetCNN(widths=(8, 16), blocks=2).eval()
    with pytest.raises(LayerMatchError, match=r"\['layers.2'\].*removable blocks are \['layers.0', 'layers.1', 'layers.3'\]"):
        prune(model, Policy(drop=("layers.2",)), example_input(model))


def test_a_round_to_larger_than_every_pruned_layer_is_refused():
    """round_to 1000 on layers of 32 and 64 channels would keep every channel: an error says so, naming the
    widest layer, instead of a silently unpruned model."""
    from autoprune.errors import PolicyError
    from autoprune.zoo import PlainCNN

    model = PlainCNN().eval()
    policy = Policy.uniform(["conv1", "conv2"], sparsity=0.5, method="l1_structured", round_to=1000)
    with pytest.raises(PolicyError, match="round_to 1000 is larger than every layer"):
        prune(model, policy, torch.randn(2, 1, 8, 8))
