"""Reconstruction after pruning: the layers that read removed channels are refit to the dense outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autoprune import LayerPolicy, Policy, prune
from autoprune.layers import output_layers, prunable_layers
from autoprune.reconstruct import reconstruct_layers
from autoprune.zoo import PlainCNN, ResNetCNN, TinyBert, example_input
from tests.conftest import output_of


def _batches(model, n=4, size=16):
    torch.manual_seed(1)
    x = example_input(model, batch=size)
    if isinstance(x, dict):
        return [{**example_input(model, batch=size), "labels": torch.zeros(size, dtype=torch.long)} for _ in range(n)]
    return [(torch.randn_like(x), torch.zeros(size, dtype=torch.long)) for _ in range(n)]


def _half(model, x, method="l1_structured"):
    out = set(output_layers(model, x))
    return Policy(layers={n: LayerPolicy(sparsity=0.5, method=method) for n in prunable_layers(model) if n not in out})


def _error(model, pruned, batches):
    from autoprune.modelio import ModelIO

    io = ModelIO()
    total = norm = 0.0
    with torch.no_grad():
        for batch in batches:
            inputs, _ = io.split(batch)
            d, p = io.run(model, inputs), io.run(pruned, inputs)
            total += float((d - p).pow(2).sum())
            norm += float(d.pow(2).sum())
    return total / norm


@pytest.mark.parametrize("make", [PlainCNN, ResNetCNN, TinyBert])
def test_reconstruction_brings_the_pruned_outputs_closer_to_the_dense_ones(make):
    torch.manual_seed(0)
    model = make().eval()
    x = example_input(model)
    batches = _batches(model)
    policy = _half(model, x)
    plain = prune(model, policy, x, calibration_data=batches)
    rebuilt = prune(model, policy, x, calibration_data=batches, reconstruct=True)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in plain.parameters()], "shapes unchanged"
    assert _error(model, rebuilt, batches) < 0.5 * _error(model, plain, batches)


def test_a_removed_input_that_the_kept_ones_span_is_recovered_exactly():
    """fc2 reads four features; the fourth is the sum of the first two. Removing it loses nothing that a refit
    of fc2 cannot put back."""
    torch.manual_seed(0)
    dense = nn.Linear(4, 3)
    pruned = nn.Linear(3, 3)
    with torch.no_grad():
        pruned.weight.copy_(dense.weight[:, :3])
        pruned.bias.copy_(dense.bias)

    class Feed(nn.Module):
        def __init__(self, head: nn.Linear, width: int) -> None:
            super().__init__()
            self.head, self.width = head, width

        def forward(self, x):
            features = torch.cat([x, (x[:, 0] + x[:, 1])[:, None]], dim=1)
            return self.head(features[:, :self.width])

    big, small = Feed(dense, 4), Feed(pruned, 3)
    batches = [(torch.randn(64, 3), None)]
    [refit] = reconstruct_layers(small, big, batches, removed={"head": ((), (3,))}, ridge=1e-9)
    assert refit.kept and refit.error_after < 1e-6 < refit.error_before
    x = torch.randn(8, 3)
    assert torch.allclose(small(x), big(x), atol=1e-4)


def test_the_dense_model_is_never_modified():
    model = ResNetCNN().eval()
    before = copy.deepcopy(model.state_dict())
    x = example_input(model)
    prune(model, _half(model, x), x, calibration_data=_batches(model), reconstruct=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_layer_whose_outputs_were_pruned_too_is_fit_on_the_outputs_it_kept():
    """PlainCNN's conv2 loses inputs (conv1's channels) and outputs: its refit targets its kept outputs."""
    torch.manual_seed(0)
    model = PlainCNN().eval()
    x = example_input(model)
    batches = _batches(model)
    plain = prune(model, _half(model, x), x, calibration_data=batches)
    rebuilt = prune(model, _half(model, x), x, calibration_data=batches, reconstruct=True)
    assert not torch.equal(plain.conv2.weight, rebuilt.conv2.weight), "conv2 was refit"
    assert output_of(rebuilt, x).shape == output_of(model, x).shape


def test_reconstruction_needs_calibration_batches():
    from autoprune.errors import CalibrationError

    model = PlainCNN().eval()
    x = example_input(model)
    with pytest.raises(CalibrationError, match="reconstruct"):
        prune(model, _half(model, x), x, reconstruct=True)
