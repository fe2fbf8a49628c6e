"""The contract every registered pruning method keeps, on every architecture of the zoo.

Run for all methods in the registry (built-in and any a test registers), like Optuna's sampler
contract suites: a new method gets these tests for free.
"""

from __future__ import annotations

import copy

import pytest
import torch

from autoprune import Policy, prunable_layers, prune
from autoprune.layers import output_layers
from autoprune.measure import measure
from autoprune.methods import available_methods, get_method
from autoprune.modelio import Inputs
from tests.conftest import fast_profile, output_of

SPARSITY = 0.5


def _policy(model, x, method, sparsity=SPARSITY):
    out = set(output_layers(model, x))
    layers = [n for n in prunable_layers(model) if not (get_method(method).STRUCTURED and n in out)]
    return Policy.uniform(layers, sparsity=sparsity, method=method)


def _calibration(model, x):
    with torch.no_grad():
        classes = output_of(model, x).shape[-1]
    return [(x, torch.randint(0, classes, (Inputs.of(x).batch_size,)))]


def _prune(model, x, method, sparsity=SPARSITY):
    policy = _policy(model, x, method, sparsity)
    return policy, prune(model, policy, x, calibration_data=_calibration(model, x))


@pytest.mark.parametrize("method", available_methods())
def test_output_shape_unchanged_and_backward_works(zoo_model, method):
    """A pruned model maps the same inputs to outputs of the same shape, and gradients flow."""
    _, model, x = zoo_model
    _, pruned = _prune(model, x, method)
    assert output_of(pruned, x).shape == output_of(model, x).shape
    pruned.train()
    output_of(pruned, x).sum().backward()
    assert any(p.grad is not None and torch.isfinite(p.grad).all() for p in pruned.parameters())


@pytest.mark.parametrize("method", available_methods())
def test_original_model_untouched(zoo_model, method):
    """prune() never modifies the caller's model: same parameters, same values, same outputs."""
    _, model, x = zoo_model
    before = copy.deepcopy(model.state_dict())
    out_before = output_of(model, x)
    _prune(model, x, method)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(output_of(model, x), out_before)


@pytest.mark.parametrize("method", available_methods(structured=False))
@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_unstructured_sparsity_within_two_points(zoo_model, method, sparsity):
    """Each pruned weight tensor's zero fraction is within 2 points of the target; masks are permanent."""
    _, model, x = zoo_model
    policy, pruned = _prune(model, x, method, sparsity)
    modules = dict(pruned.named_modules())
    for name in policy.layers:
        layer = modules[name]
        zero_fraction = float((layer.weight == 0).float().mean())
        assert abs(zero_fraction - sparsity) <= 0.02, name
        assert not hasattr(layer, "weight_orig") and not hasattr(layer, "weight_mask")
        assert not layer._forward_pre_hooks


@pytest.mark.parametrize("method", available_methods(structured=True))
def test_structured_sparsity_within_two_points(zoo_model, method):
    """Each layer loses the target fraction of its output channels, up to whole-channel rounding."""
    _, model, x = zoo_model
    policy, pruned = _prune(model, x, method)
    before, after = dict(model.named_modules()), dict(pruned.named_modules())
    for name in policy.layers:
        n = before[name].weight.shape[0]
        removed = 1 - after[name].weight.shape[0] / n
        assert abs(removed - SPARSITY) <= 0.02 + 0.5 / n, (name, removed)


@pytest.mark.parametrize("method", available_methods(structured=True))
def test_structured_lowers_params_and_macs(zoo_model, method):
    """Structured pruning physically shrinks the model: fewer parameters and fewer MACs."""
    _, model, x = zoo_model
    _, pruned = _prune(model, x, method)
    dense, small = measure(model, x, fast_profile()), measure(pruned, x, fast_profile())
    assert small.params < dense.params
    assert small.macs < dense.macs
