"""Structured pruning through Torch-Pruning's dependency graph: the only module that imports torch_pruning.

Torch-Pruning traces the model once and groups every layer whose channels are coupled (a residual add,
BatchNorm, a depthwise convolution, a concatenation, a flatten into Linear, a LayerNorm): removing
channel *i* of a group removes it from every member, so the model stays consistent.

How a policy maps onto groups (documented in the README too):

* a group is pruned when at least one of its Conv/Linear members is named in the policy with a
  structured method and a sparsity above 0;
* its sparsity is the **mean** of the sparsities requested for those members, and its method is that
  of the first such member in the model's definition order;
* a channel's importance is the sum, over the group's Conv/Linear members, of the method's
  ``channel_scores`` for the weight rows (output channels) and weight columns (input channels) that
  the channel touches;
* the output layer's outputs are never removed: groups that contain them are left alone;
* with ``round_to=N`` the number of channels kept is rounded to the nearest multiple of N (at least N;
  a group with fewer than N channels is left alone). Groups containing ``nn.MultiheadAttention`` keep a
  multiple of the head count as well;
* a group holding the query/key/value projections of a recognised attention
  (:mod:`autoprune.attention`: BERT-, ViT-, DistilBERT-style) loses **whole heads**: each head's score
  is the sum of its channels' scores, the lowest-scoring ``round(sparsity * heads)`` heads go (at least
  one stays), ``round_to`` does not apply (a head is already a block of ``head_size`` channels), and the
  attention module's head count is updated.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from io import StringIO
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch_pruning as tp
from torch import nn

from autoprune.attention import AttentionBlock, attention_blocks, has_attention, refresh_heads
from autoprune.layers import PRUNABLE_TYPES
from autoprune.calibration import InputStats
from autoprune.methods.base import Member, StructuredMethod
from autoprune.modelio import Inputs, ModelIO

_OUT_HANDLERS = {tp.prune_conv_out_channels, tp.prune_linear_out_channels}
_IN_HANDLERS = {tp.prune_conv_in_channels, tp.prune_linear_in_channels}


@dataclass(frozen=True)
class GroupResult:
    """What happened to one coupled group: its Conv/Linear members, channels before and after."""

    members: tuple[str, ...]
    channels_before: int
    channels_after: int
    method: str
    requested_sparsity: float
    #: every Conv/Linear dimension the group's removal touched: (layer, True for its outputs / False for its
    #: inputs, the indices removed, numbered as before the removal)
    removed: tuple[tuple[str, bool, tuple[int, ...]], ...] = ()


def _kept_channels(n: int, sparsity: float, multiple: int) -> int:
    keep = n - int(round(sparsity * n))
    if multiple > 1:
        if n < multiple:
            return n
        keep = max(multiple, int(round(keep / multiple)) * multiple)
        keep = min(keep, (n // multiple) * multiple)
    return max(1, keep)


def _rows(weight: torch.Tensor, idxs: list[int], out_dim: bool) -> torch.Tensor:
    """Rows of ``weight`` for channel indices ``idxs``: output rows, or input columns transposed."""
    w = weight if out_dim else weight.transpose(0, 1)
    return w[idxs].flatten(1)


def _group_scores(group: Any, method: StructuredMethod, names: Mapping[nn.Module, str],
                  stats: Mapping[str, InputStats] | None = None) -> torch.Tensor:
    """Sum the method's scores over every Conv/Linear member of a Torch-Pruning group (:class:`Member` each,
    with the calibration statistics of the channels a member reads when the method needs them). A data-aware
    method whose members carried no statistics at all falls back to the members' L1 norms."""
    n = len(group[0].idxs)
    total = torch.zeros(n, dtype=torch.float32)
    fallback = torch.zeros(n, dtype=torch.float32)
    for item in group:
        dep, idxs, root_idxs = item.dep, item.idxs, getattr(item, "root_idxs", None)
        layer = dep.target.module
        if not isinstance(layer, PRUNABLE_TYPES) or root_idxs is None or any(r is None for r in root_idxs):
            continue
        out_dim = dep.handler in _OUT_HANDLERS
        if not out_dim and (dep.handler not in _IN_HANDLERS or getattr(layer, "groups", 1) > 1):
            continue
        weight = layer.weight.detach()
        grad = layer.weight.grad
        found = (stats or {}).get(names.get(layer, "")) if not out_dim else None
        index = torch.tensor(idxs, dtype=torch.long)
        member = Member(name=names.get(layer, ""), weight=_rows(weight, idxs, out_dim),
                        grad=_rows(grad.detach(), idxs, out_dim) if (grad is not None and method.NEEDS_GRADIENTS)
                        else None, outputs=out_dim,
                        input_norm=found.norm[index] if found is not None else None,
                        input_fisher=found.input_fisher[index] if found is not None and found.input_fisher is not None
                        else None)
        scores = method.member_scores(member).detach().float().cpu()
        roots = torch.tensor(root_idxs, dtype=torch.long)
        total.scatter_add_(0, roots, scores)
        if method.NEEDS_ACTIVATIONS:
            fallback.scatter_add_(0, roots, member.weight.abs().sum(dim=1).float().cpu())
    if method.NEEDS_ACTIVATIONS and not bool(total.abs().sum() > 0):
        return fallback
    return total


def _group_multiple(group: Any, round_to: int | None) -> int | None:
    """The multiple the kept channel count must respect, or None if the group cannot be pruned safely."""
    multiple = round_to or 1
    for item in group:
        module = item.dep.target.module
        if isinstance(module, nn.MultiheadAttention):
            multiple = math.lcm(multiple, module.num_heads)
        groups = getattr(module, "groups", 1)
        if isinstance(module, nn.modules.conv._ConvNd) and 1 < groups < module.in_channels:
            return None  # grouped (not depthwise) convolutions: channel groups must shrink evenly; left alone
    return multiple


def accumulate_gradients(
    model: nn.Module, batches: Iterable[Any], loss_fn: Callable[[Any, Any], torch.Tensor], *, max_batches: int,
    io: ModelIO | None = None,
) -> int:
    """Accumulate ``loss_fn(output, target)`` gradients over up to ``max_batches`` labelled batches (read
    through ``io``); return the count."""
    io = io or ModelIO()
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()  # keep BatchNorm statistics and dropout untouched by calibration
    count = 0
    try:
        for batch in batches:
            if count >= max_batches:
                break
            inputs, target = io.split(batch)
            if target is None:
                raise ValueError("gradient-based importance needs labelled batches: its gradients come from the "
                                 "task loss (a loss against the dense model would be at its minimum, with no signal)")
            loss = loss_fn(io.run(model, inputs), target)
            loss.backward()
            count += 1
    finally:
        model.train(was_training)
    return count


def _removable_groups(model: nn.Module, example_inputs: Any,
                      protected: Iterable[str]) -> tuple[Any, Iterator[tuple[Any, tuple[str, ...]]]]:
    """Trace ``model``: its dependency graph, and a generator of ``(group, members)`` for every coupled
    group whose channels may be removed (none of a ``protected`` layer's outputs in it). ``members``
    are the Conv/Linear layers whose outputs the group holds, in definition order. The generator is
    lazy, as Torch-Pruning's is: a group pruned while iterating is reflected in the groups that follow.
    """
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    order = {name: i for i, name in enumerate(modules)}
    protected_modules = {modules[n] for n in protected if n in modules}  # a dropped block's layers are gone
    with warnings.catch_warnings():  # a ViT's class token and position embeddings: pruned as documented
        warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=Inputs.of(example_inputs).for_tracing(model))

    def groups() -> Iterator[tuple[Any, tuple[str, ...]]]:
        for group in graph.get_all_groups(ignored_layers=list(protected_modules),
                                          root_module_types=list(PRUNABLE_TYPES)):
            outs = [item.dep.target.module for item in group if item.dep.handler in _OUT_HANDLERS]
            if any(m in protected_modules for m in outs):
                continue
            yield group, tuple(sorted({names[m] for m in outs if m in names}, key=order.__getitem__))

    return graph, groups()


def apply_structured(
    model: nn.Module,
    example_inputs: Any,
    assignments: Mapping[str, tuple[StructuredMethod, float]],
    *,
    protected: Iterable[str],
    round_to: int | None,
    stats: Mapping[str, InputStats] | None = None,
) -> list[GroupResult]:
    """Remove channels in place, group by group, as described in this module's docstring. ``stats`` are the
    calibration statistics data-aware methods read (:func:`autoprune.calibration.input_statistics`)."""
    blocks = attention_blocks(model)
    names = {module: name for name, module in model.named_modules()}
    graph, groups = _removable_groups(model, example_inputs, protected)
    results: list[GroupResult] = []
    for group, members in groups:
        requested = [n for n in members if n in assignments and assignments[n][1] > 0.0]
        if not requested:
            continue
        method = assignments[requested[0]][0]
        sparsity = sum(assignments[n][1] for n in requested) / len(requested)
        n = len(group[0].idxs)
        block = _attention_in(members, blocks)
        if block is not None and n == block.width:
            drop = _dropped_heads(block, _group_scores(group, method, names, stats), sparsity)
        else:
            multiple = _group_multiple(group, round_to)
            if multiple is None:
                continue
            scores = _group_scores(group, method, names, stats)
            drop = torch.argsort(scores, stable=True)[: n - _kept_channels(n, sparsity, multiple)]
            drop = drop.tolist()
        removed: list[tuple[str, bool, tuple[int, ...]]] = []
        if drop:
            root = group[0].dep
            pruning = graph.get_pruning_group(root.target.module, root.handler, sorted(drop))
            for item in pruning:
                layer, handler = item.dep.target.module, item.dep.handler
                if isinstance(layer, PRUNABLE_TYPES) and layer in names and handler in _OUT_HANDLERS | _IN_HANDLERS:
                    removed.append((names[layer], handler in _OUT_HANDLERS, tuple(sorted(int(i) for i in item.idxs))))
            pruning.prune()
        results.append(GroupResult(members, n, n - len(drop), method.name, sparsity, tuple(removed)))
    refresh_heads(model, blocks)
    model.zero_grad(set_to_none=True)
    return results


def _attention_in(members: tuple[str, ...], blocks: list[AttentionBlock]) -> AttentionBlock | None:
    """The attention whose query/key/value projections a group's members include, if any."""
    return next((b for b in blocks if set(b.projections) & set(members)), None)


def _dropped_heads(block: AttentionBlock, scores: torch.Tensor, sparsity: float) -> list[int]:
    """The channels of the ``round(sparsity * heads)`` heads of lowest total score (one head always stays)."""
    keep = max(1, block.heads - int(round(sparsity * block.heads)))
    per_head = scores.view(block.heads, block.head_size).sum(dim=1)
    gone = torch.argsort(per_head, stable=True)[: block.heads - keep].tolist()
    return [h * block.head_size + i for h in sorted(gone) for i in range(block.head_size)]


def coupled_layers(model: nn.Module, example_inputs: Any, layers: Iterable[str], *,
                   protected: Iterable[str] = ()) -> list[tuple[str, ...]]:
    """``layers`` partitioned into the sets whose output channels are removed together.

    Layers whose outputs meet in a residual add (or any other coupling Torch-Pruning traces) lose the
    same channels, so a structured policy can give them only one sparsity (the mean of what it asks
    for, see this module's docstring). Units come in the order of ``layers``, each listing its coupled
    layers in definition order; a layer coupled with none of the others is a tuple of its own. Groups
    holding a ``protected`` layer's outputs are never pruned, so their members are left as singletons.

    Example:
        >>> from autoprune.zoo import ResNetCNN, example_input
        >>> net = ResNetCNN()
        >>> coupled_layers(net, example_input(net), ["stem", "layers.0.conv1", "layers.0.conv2"])
        [('stem', 'layers.0.conv2'), ('layers.0.conv1',)]
    """
    wanted = list(layers)
    unit_of: dict[str, tuple[str, ...]] = {}
    for _, members in _removable_groups(model, example_inputs, protected)[1]:
        inside = tuple(n for n in members if n in wanted)
        if len(inside) > 1:
            for name in inside:
                unit_of[name] = inside
    units: list[tuple[str, ...]] = []
    for name in wanted:
        unit = unit_of.get(name, (name,))
        if unit not in units:
            units.append(unit)
    return units


def hidden_layers(model: nn.Module, example_inputs: Any, *, protected: Iterable[str] = ()) -> list[str]:
    """The layers that write a transformer's hidden size: in a model with multi-head attention, the
    Conv/Linear members of the coupled groups whose channels pass through a LayerNorm or an embedding
    (the residual stream every layer reads and writes). Pruning them shrinks every layer at once, which
    search spaces leave out unless they say ``prune_hidden: true``. Empty for models without attention.

    Example:
        >>> from autoprune.zoo import TinyBert, example_input
        >>> net = TinyBert()
        >>> hidden_layers(net, example_input(net), protected=["classifier"])[:2]
        ['layers.0.attention.output', 'layers.0.output']
    """
    if not has_attention(model):
        return []
    found: list[str] = []
    for group, members in _removable_groups(model, example_inputs, protected)[1]:
        if any(isinstance(item.dep.target.module, (nn.LayerNorm, nn.Embedding)) for item in group):
            found.extend(m for m in members if m not in found)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(found, key=order.__getitem__)


def count_macs_and_params(model: nn.Module, example_inputs: Any) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass on ``example_inputs``, counted by Torch-Pruning."""
    was_training = model.training
    model.eval()
    try:
        with contextlib.redirect_stdout(StringIO()):  # its counter prints advice about keyword inputs
            macs, params = tp.utils.count_ops_and_params(model, Inputs.of(example_inputs).for_tracing(model))
    finally:
        model.train(was_training)
    return int(macs), int(params)


def macs_per_module(model: nn.Module, example_inputs: Any) -> dict[nn.Module, int]:
    """MACs of one forward pass on ``example_inputs`` per module, counted by Torch-Pruning; a container's
    count includes its children's."""
    was_training = model.training
    model.eval()
    try:
        with contextlib.redirect_stdout(StringIO()):
            _, _, counted, _ = tp.utils.count_ops_and_params(model, Inputs.of(example_inputs).for_tracing(model),
                                                              layer_wise=True)
    finally:
        model.train(was_training)
    return {module: int(counted.get(module) or 0) for module in model.modules()}


def torch_pruning_global(model: nn.Module, example_inputs: Any, *, sparsity: float,
                         protected: Iterable[str]) -> nn.Module:
    """Torch-Pruning's own global pruning, in place: one ratio, L1 channel importance ranked across layers.

    A baseline for the benchmarks (``benchmarks/compare_policies.py``): Torch-Pruning's ``MetaPruner``
    with ``global_pruning=True`` removes the globally least important channels until ``sparsity`` of
    them are gone, so layers lose different fractions. The ``protected`` layers (the output layer)
    keep their outputs.

    Example:
        >>> from autoprune.zoo import PlainCNN, example_input
        >>> net = PlainCNN()
        >>> _ = torch_pruning_global(net, example_input(net), sparsity=0.5, protected=["head"])
        >>> net(example_input(net)).shape
        torch.Size([4, 10])
    """
    modules = dict(model.named_modules())
    inputs = Inputs.of(example_inputs).for_tracing(model)
    pruner = tp.pruner.MetaPruner(model, inputs, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=sparsity, global_pruning=True,
                                  ignored_layers=[modules[n] for n in protected])
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model
