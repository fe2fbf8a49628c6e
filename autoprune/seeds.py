"""Seeded policies: the head start a new study gets before its sampler's own trials, and the model
analysis behind them (coupled units, a one-pass sensitivity scan, a channel-alignment probe).

* :func:`coupled_units`: the layers whose output channels are removed together (a residual stream), so
  a structured space searches each set as one unit.
* :func:`hidden_units`: the layers that write a transformer's hidden size, which a space leaves out
  unless it says ``prune_hidden: true``.
* :func:`scan_units` and :func:`scales_of`: every unit pruned alone (at the seed sparsity, or at several
  for ``autoprune analyze``), and the per-unit scales that gives: units that buy much latency for little
  metric are pruned hardest. :func:`seed_scales` is the two together, as a new study runs them.
* :func:`seed_block_order`: every removable block dropped alone, ranked by the metric it costs per
  latency saved: the shallow seeds drop the cheapest third and half of them, and every block that costs
  nothing.
* :func:`probe_alignment` and :func:`choose_alignment`: the ``round_to`` the seeds use: the space's first
  option, unless another one computes clearly more MACs per millisecond in the profile's runtime
  (:func:`seed_alignment` is the two together).
* :func:`seed_params`: the parameters of every seeded policy (see
  :meth:`autoprune.resolved_space.ResolvedSpace.seed_params`), with the scales and alignment above, or with a
  saved analysis's (:class:`HeadStart`, from :meth:`autoprune.analyze.Analysis.head_start`).

Each analysis is a head start, not a requirement: when one cannot run on a model (tracing fails, the
scan's pruning fails) a warning says why and the seeds do without it.

Example:
    >>> import torch
    >>> from autoprune.space import load_space
    >>> from autoprune.zoo import ResNetCNN
    >>> net = ResNetCNN().eval()
    >>> coupled_units(load_space("structured"), net, (torch.randn(2, 1, 8, 8),), ["head"])[:2]
    [('stem', 'layers.0.conv2'), ('layers.0.conv1',)]
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from autoprune.layers import prunable_layers
from autoprune.measure import HardwareProfile, LatencyReference
from autoprune.methods.structured import coupled_layers, hidden_layers
from autoprune.modelio import Inputs, ModelIO
from autoprune.sensitivity import (SCAN_SPARSITY, BlockRanking, Scan, alignment_rates, block_scan, layer_scans,
                                   pruning_costs, sensitivity_scales)
from autoprune.resolved_space import ResolvedSpace
from autoprune.space import SearchSpace

#: another round_to must compute this many times the MACs per ms of the first to be chosen: closer is noise
ALIGNMENT_MARGIN = 1.1


def coupled_units(space: SearchSpace, base: nn.Module, example_inputs: Inputs,
                  protected: list[str]) -> list[tuple[str, ...]]:
    """Coupled layers, searched as one unit (traced only for spaces whose methods are all structured)."""
    if not space.structured_only:
        return []
    try:
        return coupled_layers(base, example_inputs, prunable_layers(base), protected=protected)
    except Exception as exc:  # a tracing failure shows again, with its reason, in the trials that prune
        warnings.warn(f"could not trace coupled layers ({type(exc).__name__}: {exc}); searching one value per layer")
        return []


def hidden_units(space: SearchSpace, base: nn.Module, example_inputs: Inputs, protected: list[str]) -> list[str]:
    """The layers that write a transformer's hidden size (left out of the search unless the space says
    ``prune_hidden: true``; traced only for spaces with a structured method)."""
    if not space.has_structured or space.prune_hidden:
        return []
    try:
        return hidden_layers(base, example_inputs, protected=protected)
    except Exception as exc:  # a tracing failure shows again, with its reason, in the trials that prune
        warnings.warn(f"could not trace the hidden size ({type(exc).__name__}: {exc}); searching every layer")
        return []


@dataclass(frozen=True)
class HeadStart:
    """What the seeds take from a model analysis instead of scanning again: per-unit scales (None: uniform
    seeds only), the ``round_to``, the dense metric the analysis measured, and the removable blocks'
    ranking (:class:`~autoprune.sensitivity.BlockRanking`; None: the shallow seeds without one)."""

    scales: dict[str, float] | None
    round_to: int | None
    dense_metric: float | None
    blocks: BlockRanking | None = None


@dataclass(frozen=True)
class Seeds:
    """A new study's seeded policies (their parameters), and the dense model's metric the scan measured on
    the way (None when the scan did not run): the dense seed, fine-tuned, should not fall below it."""

    params: list[dict[str, Any]]
    dense_metric: float | None = None


def scaled(resolved: ResolvedSpace) -> bool:
    """Whether the seeds scale units by sensitivity: a space with several units, searched per unit or as a
    global level times per-unit scales (not per group)."""
    return resolved.mode.scales_units and len(resolved.units) >= 2


def scan_units(resolved: ResolvedSpace, base: nn.Module, example_inputs: Inputs, train_loader: Any, val_loader: Any,
               *, metric: Any, loss: Any, profile: HardwareProfile, reference: LatencyReference | None,
               io: ModelIO | None = None, sparsities: tuple[float, ...] = (SCAN_SPARSITY,),
               errors: dict[str, str] | None = None) -> dict[float, Scan]:
    """Every searched unit pruned alone at each of ``sparsities`` with the space's first method, timed under
    ``profile``: the scan the seeds rank units by (at :data:`~autoprune.sensitivity.SCAN_SPARSITY`), and
    what ``autoprune analyze`` reports (see :func:`autoprune.sensitivity.layer_scans`)."""
    return layer_scans(base, resolved.units, example_inputs, val_loader, method=resolved.space.methods[0],
                       sparsities=sparsities, metric=metric, loss=loss,
                       calibration_data=itertools.islice(iter(train_loader), 2), profile=profile,
                       reference=reference, io=io, errors=errors)


def scales_of(resolved: ResolvedSpace, scan: Scan) -> dict[str, float] | None:
    """Per-unit scales of the seeded policies from a scan at the seed sparsity: units that buy much latency
    for little metric get the largest (None when the space has one unit or searches groups)."""
    if not scaled(resolved) or not scan.units:
        return None
    low, high = scale_bounds(resolved)
    return sensitivity_scales(pruning_costs(scan.units, base=scan.base), low=low, high=high,
                              step=resolved.mode.scale_step(resolved.space.sparsity))


def scale_bounds(resolved: ResolvedSpace) -> tuple[float, float]:
    """The range of the seeds' per-unit scales: the space's own in ``global_scale`` mode, else 0.5 to 1.5."""
    return resolved.mode.scale_bounds(resolved.space.sparsity)


def seed_scales(resolved: ResolvedSpace, base: nn.Module, example_inputs: Inputs, train_loader: Any,
                val_loader: Any, *, metric: Any, loss: Any, profile: HardwareProfile,
                reference: LatencyReference | None,
                io: ModelIO | None = None) -> tuple[dict[str, float] | None, float | None]:
    """Per-unit scales for the seeded policies from a one-pass scan of what pruning each unit costs in
    metric per latency saved (None when the space has one unit, searches groups, or the scan fails), and
    the dense model's metric the scan measured."""
    if not scaled(resolved):  # no scale to give: the scan is not run
        return None, None
    try:
        scan = scan_units(resolved, base, example_inputs, train_loader, val_loader, metric=metric, loss=loss,
                          profile=profile, reference=reference, io=io)[SCAN_SPARSITY]
    except Exception as exc:  # the seeds are a head start, not a requirement
        warnings.warn(f"layer sensitivity scan failed ({type(exc).__name__}: {exc}); seeding uniform policies only")
        return None, None
    return scales_of(resolved, scan), scan.base


def seed_block_order(resolved: ResolvedSpace, base: nn.Module, example_inputs: Inputs, val_loader: Any, *,
                     metric: Any, loss: Any, profile: HardwareProfile, reference: LatencyReference | None,
                     io: ModelIO | None = None, dense_metric: float | None = None) -> BlockRanking | None:
    """The space's removable blocks that save measurable time when dropped alone, cheapest first (metric
    lost per latency saved, :func:`autoprune.sensitivity.block_scan`), and those that cost nothing: the
    blocks the shallow seeds drop. None when the space drops no block, none saves time, or the scan fails."""
    if not resolved.blocks:
        return None
    try:
        scan = block_scan(base, resolved.blocks, example_inputs, val_loader, metric=metric, loss=loss,
                          profile=profile, reference=reference, io=io, base=dense_metric)
    except Exception as exc:  # the seeds are a head start, not a requirement
        warnings.warn(f"block scan failed ({type(exc).__name__}: {exc}); the shallow seeds drop every other block")
        return None
    return BlockRanking.of(scan)


def probe_alignment(resolved: ResolvedSpace, base: nn.Module, example_inputs: Inputs, train_loader: Any, *,
                    loss: Any, profile: HardwareProfile, reference: LatencyReference | None,
                    io: ModelIO | None = None) -> dict[int | None, float]:
    """MACs per millisecond of a uniform probe under each of the space's ``round_to`` options (see
    :func:`autoprune.sensitivity.alignment_rates`); empty when the space has one option."""
    space = resolved.space
    if len(space.round_to) < 2:
        return {}
    sp = space.sparsity
    return alignment_rates(base, resolved.layers, example_inputs, options=space.round_to, method=space.methods[0],
                           profile=profile, sparsity=min(max(0.7, sp.low), sp.high), reference=reference, loss=loss,
                           calibration_data=itertools.islice(iter(train_loader), 2), io=io)


def choose_alignment(space: SearchSpace, rates: dict[int | None, float]) -> int | None:
    """The space's first ``round_to``, unless another option's rate is more than :data:`ALIGNMENT_MARGIN`
    times the first's."""
    first = space.round_to[0]
    if not rates or first not in rates:
        return first
    best = max(rates, key=rates.__getitem__)
    return best if rates[best] > ALIGNMENT_MARGIN * rates[first] else first


def seed_alignment(resolved: ResolvedSpace, base: nn.Module, example_inputs: Inputs, train_loader: Any, *,
                   loss: Any, profile: HardwareProfile, reference: LatencyReference | None,
                   io: ModelIO | None = None) -> int | None:
    """The ``round_to`` of the seeded policies: the space's first option, unless another one's shapes run
    clearly faster in this profile's runtime (more than :data:`ALIGNMENT_MARGIN` times the MACs per ms of
    a uniform probe: closer rates are timing noise). ONNX Runtime rewards multiples of 8 by far more than
    that; in eager PyTorch the options' rates are usually within the margin, and the seeds stay on the
    first (measured figures in docs/benchmarks.md)."""
    try:
        rates = probe_alignment(resolved, base, example_inputs, train_loader, loss=loss, profile=profile,
                                reference=reference, io=io)
    except Exception as exc:  # the seeds are a head start, not a requirement
        warnings.warn(f"channel alignment probe failed ({type(exc).__name__}: {exc}); seeds use the first round_to")
        return resolved.space.round_to[0]
    return choose_alignment(resolved.space, rates)


def seed_params(resolved: ResolvedSpace, base: nn.Module, example_inputs: Inputs, train_loader: Any,
                val_loader: Any, *, metric: Any, loss: Any, profile: HardwareProfile,
                reference: LatencyReference | None, io: ModelIO | None = None,
                head_start: HeadStart | None = None) -> Seeds:
    """A new study's seeded policies: dense, uniform, sensitivity-scaled and shallow, at the measured
    alignment. A ``head_start`` (from a saved ``autoprune analyze``) stands for the scan and the probe."""
    if head_start is not None:
        return Seeds(_seed_params(resolved, head_start.scales, head_start.round_to, head_start.blocks),
                     head_start.dense_metric)
    scales, dense_metric = seed_scales(resolved, base, example_inputs, train_loader, val_loader, metric=metric,
                                       loss=loss, profile=profile, reference=reference, io=io)
    blocks = seed_block_order(resolved, base, example_inputs, val_loader, metric=metric, loss=loss, profile=profile,
                              reference=reference, io=io, dense_metric=dense_metric)
    round_to = seed_alignment(resolved, base, example_inputs, train_loader, loss=loss, profile=profile,
                              reference=reference, io=io)
    return Seeds(_seed_params(resolved, scales, round_to, blocks), dense_metric)


def _seed_params(resolved: ResolvedSpace, scales: dict[str, float] | None, round_to: int | None,
                 blocks: BlockRanking | None) -> list[dict[str, Any]]:
    return resolved.seed_params(scales=scales, round_to=round_to, block_order=blocks.order if blocks else None,
                                free_blocks=blocks.free if blocks else ())
