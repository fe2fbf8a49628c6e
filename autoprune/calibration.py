"""What data-aware importance scores see: per-layer input statistics gathered on a few calibration batches.

For every Conv/Linear layer asked for, one pass over the batches records, per **input channel** (a Linear's
input feature, a convolution's input channel):

* ``input_sq``: the sum of the squared inputs over every sample and position. Its square root is the
  channel's activation norm ``||X_c||``: with the weights that read the channel it tells how much the
  channel contributes to the layer's output (Wanda's ``|W| x ||X||``; a channel whose BatchNorm scale is
  tiny, or that ReLU silences, scores low whatever its weights).
* ``input_fisher`` (with ``fisher=True``, labelled batches and a loss): the empirical Fisher information of
  a mask on the channel, ``sum over samples of (sum over positions x * dL/dx)^2`` (Kwon et al. 2022 score
  heads and feed-forward neurons this way): the loss's second-order cost of removing the channel.

The statistics are taken at the layer that *reads* a channel, since that is where removing it acts: an
attention head's channels at the attention output projection, a feed-forward neuron at the second linear,
a convolution's output channel at the next convolution (after its BatchNorm and activation). The model is
run in eval mode (BatchNorm statistics and dropout untouched) and left as it came; nothing is modified.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    >>> stats = input_statistics(net, batches, layers=["2"])
    >>> stats["2"].input_sq.shape, stats["2"].samples
    (torch.Size([3]), 8)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from autoprune.modelio import ModelIO


@dataclass(frozen=True)
class InputStats:
    """One layer's per-input-channel statistics on the calibration batches (see the module docstring)."""

    input_sq: torch.Tensor
    samples: int
    input_fisher: torch.Tensor | None = None

    @property
    def norm(self) -> torch.Tensor:
        """Each input channel's root-mean-square activation per sample: ``sqrt(input_sq / samples)``."""
        return (self.input_sq / max(self.samples, 1)).sqrt()


def _per_sample(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``x`` (a layer's input) as ``[samples, positions, channels]``."""
    if isinstance(module, nn.Linear):
        return x.reshape(x.shape[0], -1, x.shape[-1]) if x.dim() > 1 else x.reshape(1, 1, -1)
    return x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)  # Conv: [N, C, ...] -> [N, positions, C]


def input_statistics(model: nn.Module, batches: Iterable[Any], *, layers: Sequence[str], max_batches: int = 4,
                     fisher: bool = False, loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
                     io: ModelIO | None = None) -> dict[str, InputStats]:
    """Per-input-channel statistics of ``layers`` on up to ``max_batches`` batches (see the module docstring).

    ``fisher=True`` also backpropagates ``loss_fn(output, target)`` (cross-entropy by default) and needs
    labelled batches; a layer the loss does not reach (or whose inputs carry no gradient: frozen layers
    before it) gets zeros. Gradients accumulated on the model's
    parameters are cleared afterwards.

    Raises:
        ValueError: ``fisher=True`` and a batch has no target.
    """
    io = io or ModelIO()
    modules = dict(model.named_modules())
    sq: dict[str, torch.Tensor] = {}
    fish: dict[str, torch.Tensor] = {}
    seen: dict[str, int] = {}
    handles = []

    def hook(name: str, module: nn.Module):
        def record(_: nn.Module, args: tuple) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0]
            per = _per_sample(x.detach().float(), module)
            sq[name] = sq.get(name, 0) + per.pow(2).sum(dim=(0, 1)).cpu()
            seen[name] = seen.get(name, 0) + per.shape[0]
            if fisher and x.requires_grad:
                def grad_hook(g: torch.Tensor) -> None:
                    contribution = (per.to(g.device) * _per_sample(g.detach().float(), module)).sum(dim=1)
                    fish[name] = fish.get(name, 0) + contribution.pow(2).sum(dim=0).cpu()
                x.register_hook(grad_hook)
        return record

    for name in layers:
        handles.append(modules[name].register_forward_pre_hook(hook(name, modules[name])))
    was_training = model.training
    model.eval()
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    try:
        for batch in itertools.islice(iter(batches), max_batches):
            inputs, target = io.split(batch)
            if not fisher:
                with torch.no_grad():
                    io.run(model, inputs)
                continue
            if target is None:
                raise ValueError("Fisher importance needs labelled batches: its gradients come from the task loss (a "
                                 "loss against the dense model would be at its minimum, with no signal)")
            with torch.enable_grad():
                loss_fn(io.run(model, inputs), target).backward()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {name: InputStats(input_sq=sq[name], samples=seen[name],
                             input_fisher=fish.get(name, torch.zeros_like(sq[name])) if fisher else None)
            for name in layers if name in sq}
