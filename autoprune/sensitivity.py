"""One-pass layer sensitivity: how much the metric drops when one layer alone is pruned, no fine-tuning.

The search seeds its first trials with policies derived from it (see
:meth:`autoprune.space.ResolvedSpace.seed_params`): layers that barely notice pruning get the largest
per-layer scale, the most sensitive ones the smallest, so the early trials already hold non-uniform
policies of the kind a hand-made uniform ratio cannot express. The scan costs one prune and one
validation pass per layer.

Example:
    >>> import torch
    >>> from autoprune.zoo import PlainCNN
    >>> net = PlainCNN().eval()
    >>> data = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))]
    >>> drops = layer_sensitivity(net, ["conv1", "conv2"], torch.randn(2, 1, 8, 8), data,
    ...                           method="l1_structured")
    >>> sorted(drops)
    ['conv1', 'conv2']
    >>> sensitivity_scales({"a": 0.30, "b": 0.01, "c": 0.10}, low=0.5, high=1.5, step=0.1)
    {'b': 1.5, 'c': 1.0, 'a': 0.5}
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from torch import nn

from autoprune.finetune import Metric, as_lightning, evaluate
from autoprune.policy import LayerPolicy, Policy
from autoprune.prune import prune
from autoprune.space import snap_to_grid


def layer_sensitivity(model: nn.Module, layers: Iterable[str] | Mapping[str, Sequence[str]], example_inputs: Any,
                      val_loader: Any, *, method: str, sparsity: float = 0.5, metric: Metric | str | None = None,
                      calibration_data: Iterable[Any] | None = None, loss: Any = None) -> dict[str, float]:
    """Metric of the dense model minus the metric with only ``layer`` pruned at ``sparsity``, per layer.

    ``layers`` may also map unit names to several layers (coupled layers, see
    :attr:`autoprune.space.ResolvedSpace.units`): each unit's layers are then pruned together.
    """
    units = dict(layers) if isinstance(layers, Mapping) else {name: (name,) for name in layers}
    calibration = list(calibration_data) if calibration_data is not None else None
    base = evaluate(as_lightning(model, loss=loss, lr=1e-3), val_loader, metric)
    drops = {}
    for name, members in units.items():
        policy = Policy(layers={n: LayerPolicy(sparsity=sparsity, method=method) for n in members})
        pruned = prune(model, policy, example_inputs, calibration_data=calibration, loss_fn=loss)
        drops[name] = base - evaluate(as_lightning(pruned, loss=loss, lr=1e-3), val_loader, metric)
    return drops


def sensitivity_scales(drops: Mapping[str, float], *, low: float, high: float, step: float | None) -> dict[str, float]:
    """Per-layer scales from ``high`` (least sensitive) down to ``low`` (most sensitive), by rank, on the grid."""
    order = sorted(drops, key=lambda n: (drops[n], n))
    if len(order) == 1:
        return {order[0]: 1.0}
    scales = {}
    for rank, name in enumerate(order):
        value = snap_to_grid(high - (high - low) * rank / (len(order) - 1), low, step)
        scales[name] = round(min(high, max(low, value)), 6)
    return scales
