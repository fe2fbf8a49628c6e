"""The contract every pruning method keeps (see :mod:`autoprune.methods`), on every architecture of
:mod:`autoprune.zoo` (MLPs, CNNs with BatchNorm, residual, depthwise and attention blocks, keyword inputs).

Like Optuna's sampler suites, a new method gets these checks for free: register it and call
:func:`check_method` (autoprune's own tests run each check on every registered method).

Example:
    >>> check_method("l1_unstructured", architectures=["MLP"])
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from autoprune.layers import output_layers, prunable_layers
from autoprune.measure import measure
from autoprune.methods import get_method
from autoprune.modelio import Inputs, ModelIO
from autoprune.policy import Policy
from autoprune.prune import prune
from autoprune.testing import FAST_PROFILE
from autoprune.zoo import ZOO, example_input

SPARSITY = 0.5


def _output(model: nn.Module, x: Any) -> torch.Tensor:
    return ModelIO().run(model, Inputs.of(x))


def _policy(model: nn.Module, x: Any, method: str, sparsity: float) -> Policy:
    out = set(output_layers(model, x))
    layers = [n for n in prunable_layers(model) if not (get_method(method).STRUCTURED and n in out)]
    return Policy.uniform(layers, sparsity=sparsity, method=method)


def _calibration(model: nn.Module, x: Any) -> list[tuple[Any, torch.Tensor]]:
    with torch.no_grad():
        classes = _output(model, x).shape[-1]
    return [(x, torch.randint(0, classes, (Inputs.of(x).batch_size,)))]


def pruned_with(method: str, model: nn.Module, x: Any, sparsity: float = SPARSITY) -> tuple[Policy, nn.Module]:
    """``model`` pruned by ``method`` at ``sparsity`` in every prunable layer (output layers kept by a
    structured method), with one calibration batch of random labels: (policy, pruned model)."""
    policy = _policy(model, x, method, sparsity)
    return policy, prune(model, policy, x, calibration_data=_calibration(model, x))


def check_output_shape_and_backward(method: str, model: nn.Module, x: Any) -> None:
    """A pruned model maps the same inputs to outputs of the same shape, and gradients flow."""
    _, pruned = pruned_with(method, model, x)
    assert _output(pruned, x).shape == _output(model, x).shape, f"{method}: the output's shape changed"
    pruned.train()
    _output(pruned, x).sum().backward()
    assert any(p.grad is not None and torch.isfinite(p.grad).all() for p in pruned.parameters()), \
        f"{method}: no finite gradient reaches the pruned model's parameters"


def check_original_untouched(method: str, model: nn.Module, x: Any) -> None:
    """``prune()`` with the method never modifies the caller's model: same parameters, values and outputs."""
    before = copy.deepcopy(model.state_dict())
    out_before = _output(model, x)
    pruned_with(method, model, x)
    after = model.state_dict()
    assert before.keys() == after.keys(), f"{method}: the caller's model gained or lost parameters"
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"{method}: the caller's model changed: {changed}"
    assert torch.equal(_output(model, x), out_before), f"{method}: the caller's model computes something else"


def check_unstructured_sparsity(method: str, model: nn.Module, x: Any, sparsity: float) -> None:
    """Each pruned weight tensor's zero fraction is within 2 points of ``sparsity``; masks are made permanent."""
    policy, pruned = pruned_with(method, model, x, sparsity)
    modules = dict(pruned.named_modules())
    for name in policy.layers:
        layer = modules[name]
        zeros = float((layer.weight == 0).float().mean())
        assert abs(zeros - sparsity) <= 0.02, f"{method}: {name} has {zeros:.3f} zeros, asked {sparsity}"
        assert not hasattr(layer, "weight_orig") and not hasattr(layer, "weight_mask"), \
            f"{method}: {name} keeps a pruning mask"
        assert not layer._forward_pre_hooks, f"{method}: {name} keeps a forward pre-hook"


def check_structured_sparsity(method: str, model: nn.Module, x: Any) -> None:
    """Each layer loses the asked fraction of its output channels, up to whole-channel rounding."""
    policy, pruned = pruned_with(method, model, x)
    before, after = dict(model.named_modules()), dict(pruned.named_modules())
    for name in policy.layers:
        n = before[name].weight.shape[0]
        removed = 1 - after[name].weight.shape[0] / n
        assert abs(removed - SPARSITY) <= 0.02 + 0.5 / n, f"{method}: {name} lost {removed:.3f} of its channels"


def check_structured_shrinks(method: str, model: nn.Module, x: Any) -> None:
    """Structured pruning physically shrinks the model: fewer parameters and fewer MACs."""
    _, pruned = pruned_with(method, model, x)
    dense, small = measure(model, x, FAST_PROFILE), measure(pruned, x, FAST_PROFILE)
    assert small.params < dense.params, f"{method}: no fewer parameters"
    assert small.macs < dense.macs, f"{method}: no fewer MACs"


def check_method(method: str, *, architectures: Sequence[str] | None = None) -> None:
    """The whole suite for the registered method named ``method``, on ``architectures`` (names of
    :data:`autoprune.zoo.ZOO`; all of them by default)."""
    structured = get_method(method).STRUCTURED
    for name in architectures or sorted(ZOO):
        torch.manual_seed(0)
        model = ZOO[name]().eval()
        x = example_input(model)
        check_output_shape_and_backward(method, model, x)
        check_original_untouched(method, model, x)
        if structured:
            check_structured_sparsity(method, model, x)
            check_structured_shrinks(method, model, x)
        else:
            for sparsity in (0.3, 0.7):
                check_unstructured_sparsity(method, model, x, sparsity)
