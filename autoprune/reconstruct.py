"""Reconstruction after pruning, without retraining: refit the layers that read removed channels so that each
one's output matches the dense model's on calibration batches.

Structured pruning removes channels; the layer that read them (an attention output projection after heads
went, a feed-forward block's second linear after neurons went, the next convolution) then computes a
different output from what remains. Its best weights for what remains are a least-squares problem: on
calibration inputs ``X`` (what the *pruned* model feeds it) and the dense layer's outputs ``Y`` (on the
dense model's own inputs), ``W = argmin ||X W^T + b - Y||^2 + ridge ||W - W0||^2`` (``W0``: the weights it
has, the dense ones on the kept inputs), solved in closed form (Kwon et al.
2022's "mask tuning" of BERT, and FLAP's bias compensation, are this rule's relatives). Layers are refit in
execution order, each on the inputs the already-refit layers before it produce, so errors do not pile up.

* A layer whose outputs were pruned too is fit on the dense outputs of the channels it kept.
* Convolutions are fit on their unfolded input patches (groups of 1; depthwise and grouped ones are left).
  A BatchNorm after a refit convolution sees the dense convolution's output statistics again, so its
  running statistics stay valid.
* A refit is kept only when it lowers the layer's squared error on the calibration batches.
* Token inputs (a Linear fed ``[batch, tokens, features]`` with an ``attention_mask`` in the batch) are fit
  on the real tokens alone: padding positions, most rows in a batch of short sentences, mean nothing.

Example:
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> dense = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> pruned = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    >>> with torch.no_grad():
    ...     _ = pruned[0].weight.copy_(dense[0].weight[:5]), pruned[0].bias.copy_(dense[0].bias[:5])
    ...     _ = pruned[2].weight.copy_(dense[2].weight[:, :5]), pruned[2].bias.copy_(dense[2].bias)
    >>> batches = [(torch.randn(64, 6), torch.zeros(64))]
    >>> [r.layer for r in reconstruct_layers(pruned, dense, batches, removed={"2": ((), (5, 6, 7))})]
    ['2']
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from autoprune.modelio import ModelIO

#: the ridge added to the normal equations, as a share of their mean diagonal; it pulls towards the layer's
#: current weights (0.1: MiniLM at half its heads and neurons, 512 calibration sentences, kept 0.853 of the
#: dense quality un-tuned, against 0.850 at 0.01, 0.831 at 1 and 0.641 without reconstruction)
RIDGE = 0.1
#: calibration batches a reconstruction reads at least (it fits a weight per input: it needs rows)
BATCHES = 16

#: layer -> (output indices removed, input indices removed), numbered as in the dense layer
Removed = Mapping[str, tuple[Sequence[int], Sequence[int]]]


@dataclass(frozen=True)
class Refit:
    """One layer refit: its squared error on the calibration batches before and after (relative to the dense
    output's energy), and whether the refit was kept (it lowered the error)."""

    layer: str
    error_before: float
    error_after: float
    kept: bool


class _Stop(Exception):
    """Raised by a hook once it has what it needs: the rest of the forward is not run."""


def _capture(model: nn.Module, layer: nn.Module, batch_inputs: Any, io: ModelIO, *, output: bool) -> torch.Tensor:
    """The input (or output) of ``layer`` when ``model`` runs ``batch_inputs``; the forward stops there."""
    found: list[torch.Tensor] = []

    def pre(_: nn.Module, args: tuple) -> None:
        found.append(args[0].detach())
        raise _Stop

    def post(_: nn.Module, args: tuple, out: torch.Tensor) -> None:
        found.append(out.detach())
        raise _Stop

    handle = layer.register_forward_hook(post) if output else layer.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            io.run(model, batch_inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not found:
        raise RuntimeError("the layer was not called")
    return found[0]


def _design(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows the layer's weight multiplies: a Linear's inputs ``[rows, in]``, a convolution's unfolded
    patches ``[rows, in * kernel]``."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    patches = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _token_rows(inputs: Any, x: torch.Tensor) -> torch.Tensor | None:
    """For a Linear fed ``[batch, tokens, features]``, the rows of real tokens: where the batch's
    ``attention_mask`` (Hugging Face's name, shape ``[batch, tokens]``) is set. Padding positions carry no
    meaning, and in a batch of short sentences they are most of the rows: fit on them, a refit matches
    what no embedding reads. None: every row counts."""
    mask = getattr(inputs, "kwargs", {}).get("attention_mask")
    if mask is None or x.dim() != 3 or tuple(mask.shape) != tuple(x.shape[:2]):
        return None
    return mask.reshape(-1) > 0


def _targets(layer: nn.Module, y: torch.Tensor, kept_out: torch.Tensor | None) -> torch.Tensor:
    rows = y.reshape(-1, y.shape[-1]) if isinstance(layer, nn.Linear) else y.flatten(2).transpose(1, 2).reshape(
        -1, y.shape[1])
    return rows if kept_out is None else rows[:, kept_out]


def _refittable(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros" and \
        not isinstance(layer.padding, str)


def _call_order(model: nn.Module, layers: Sequence[str], batch_inputs: Any, io: ModelIO) -> list[str]:
    modules = dict(model.named_modules())
    order: list[str] = []
    handles = [modules[n].register_forward_pre_hook(lambda *_, n=n: order.append(n) if n not in order else None)
               for n in layers]
    try:
        with torch.no_grad():
            io.run(model, batch_inputs)
    finally:
        for h in handles:
            h.remove()
    return order


def reconstruct_layers(pruned: nn.Module, dense: nn.Module, batches: Iterable[Any], *, removed: Removed,
                       io: ModelIO | None = None, max_batches: int = 8, ridge: float = RIDGE) -> list[Refit]:
    """Refit, in place and in execution order, every layer of ``pruned`` that lost input channels (``removed``:
    layer -> output and input indices removed, numbered as in ``dense``) so that its output on the
    calibration ``batches`` matches the dense layer's (see the module docstring). ``dense`` is not modified.

    Returns one :class:`Refit` per layer considered (Linear and groups-1 Conv2d layers present in both models).
    """
    io = io or ModelIO()
    batches = [io.split(b)[0] for b in itertools.islice(iter(batches), max_batches)]
    if not batches:
        return []
    mine, theirs = dict(pruned.named_modules()), dict(dense.named_modules())
    wanted = [n for n, (_, gone_in) in removed.items() if gone_in and n in mine and n in theirs
              and _refittable(mine[n])]
    was = (pruned.training, dense.training)
    pruned.eval()
    dense.eval()
    refits = []
    try:
        for name in _call_order(pruned, wanted, batches[0], io):
            refits.append(_refit(name, mine[name], theirs[name], pruned, dense, batches, removed[name][0], io, ridge))
    finally:
        pruned.train(was[0])
        dense.train(was[1])
    return refits


def _refit(name: str, layer: nn.Module, dense_layer: nn.Module, pruned: nn.Module, dense: nn.Module,
           batches: list[Any], gone_out: Sequence[int], io: ModelIO, ridge: float) -> Refit:
    gone = set(int(i) for i in gone_out)
    kept_out = torch.tensor([i for i in range(dense_layer.weight.shape[0]) if i not in gone], dtype=torch.long) \
        if gone else None
    bias = layer.bias is not None
    gram = cross = None
    energy = 0.0
    for inputs in batches:
        seen = _capture(pruned, layer, inputs, io, output=False)
        x = _design(layer, seen.double())
        y = _targets(layer, _capture(dense, dense_layer, inputs, io, output=True).double(), kept_out)
        rows = _token_rows(inputs, seen) if isinstance(layer, nn.Linear) else None
        if rows is not None:
            x, y = x[rows], y[rows]
        if bias:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
        gram = x.T @ x if gram is None else gram + x.T @ x
        cross = x.T @ y if cross is None else cross + x.T @ y
        energy += float(y.pow(2).sum())
    weight = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
    current = torch.cat([weight, layer.bias.detach().double()[:, None]], dim=1) if bias else weight

    def error(theta: torch.Tensor) -> float:  # ||X theta^T - Y||^2 minus the constant ||Y||^2
        return float((theta @ gram * theta).sum() - 2 * (theta * cross.T).sum())

    # ridge towards the weights the layer has (its dense weights on the kept inputs), not towards zero: with
    # few calibration rows per weight the fit stays where the evidence does not move it
    strength = ridge * gram.diagonal().mean().clamp_min(1e-12)
    damped = gram + strength * torch.eye(gram.shape[0], dtype=gram.dtype)
    solved = torch.linalg.solve(damped, cross + strength * current.T).T
    before, after = error(current) + energy, error(solved) + energy
    keep = after < before
    if keep:
        with torch.no_grad():
            layer.weight.copy_(solved[:, :weight.shape[1]].reshape(layer.weight.shape).to(layer.weight.dtype))
            if bias:
                layer.bias.copy_(solved[:, -1].to(layer.bias.dtype))
    scale = max(energy, 1e-12)
    return Refit(layer=name, error_before=before / scale, error_after=after / scale, kept=keep)


def removed_channels(results: Iterable[Any]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per layer, the output and input indices structured pruning removed, from its group results
    (:class:`~autoprune.methods.structured.GroupResult`)."""
    found: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for result in results:
        for layer, outputs, indices in result.removed:
            out, inp = found.get(layer, ((), ()))
            found[layer] = (tuple(indices), inp) if outputs else (out, tuple(indices))
    return found
