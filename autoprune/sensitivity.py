"""One-pass layer sensitivity: what pruning one layer alone costs in metric, and what it saves in latency.

The search seeds its first trials with policies derived from it (see :mod:`autoprune.seeds`). Each
layer (or unit of coupled layers) is pruned alone, without fine-tuning; :func:`layer_scan` records the
metric it loses and, given a hardware profile, the share of the dense latency it saves;
:func:`block_scan` does the same for whole removable blocks (dropped alone).
:func:`pruning_costs` turns both into a cost per latency saved (the ratio NetAdapt and HALP rank layers
by), and :func:`sensitivity_scales` gives the cheapest layers the largest per-layer scale: layers that
buy much latency for little metric are pruned hardest, and a layer that saves no time (a small Linear
layer before the classifier) is kept, however little pruning it hurts the un-tuned model. The scan costs
one prune, one validation pass and, with a profile, one latency measurement per layer.

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
    >>> costs = pruning_costs({"conv": LayerScan(drop=0.02, latency_saved=0.4),
    ...                        "fc": LayerScan(drop=0.0, latency_saved=0.0)}, base=0.98)
    >>> costs["conv"] < costs["fc"]
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from torch import nn

from autoprune.finetune import Metric, as_lightning, evaluate
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.modelio import ModelIO
from autoprune.policy import LayerPolicy, Policy
from autoprune.prune import prune
from autoprune.sparsity_modes import snap_to_grid


#: the sparsity the search's seed scan prunes each unit at (what its ranking of units is measured at)
SCAN_SPARSITY = 0.5


@dataclass(frozen=True)
class LayerScan:
    """One unit pruned alone: the metric it lost, and the share of the dense latency it saved (None
    when no latency was measured)."""

    drop: float
    latency_saved: float | None = None


@dataclass(frozen=True)
class Scan:
    """The dense model's metric and every unit's :class:`LayerScan`, in the order the units were given."""

    base: float
    units: dict[str, LayerScan]


def layer_scans(model: nn.Module, layers: Iterable[str] | Mapping[str, Sequence[str]], example_inputs: Any,
                val_loader: Any, *, method: str, sparsities: Sequence[float] = (SCAN_SPARSITY,),
                metric: Metric | str | None = None, calibration_data: Iterable[Any] | None = None, loss: Any = None,
                profile: HardwareProfile | None = None, reference: LatencyReference | None = None,
                io: ModelIO | None = None, errors: dict[str, str] | None = None) -> dict[float, Scan]:
    """Prune each unit alone at each of ``sparsities`` (no fine-tuning): one :class:`Scan` per sparsity,
    the dense model evaluated (and timed) once for all.

    ``layers`` may also map unit names to several layers (coupled layers, see
    :attr:`autoprune.resolved_space.ResolvedSpace.units`): each unit's layers are then pruned together. Without
    ``errors`` the first unit that cannot be pruned or evaluated raises; with it, its reason is recorded
    there (``"TypeError: ..."``) and the unit is left out of every scan.
    """
    units = dict(layers) if isinstance(layers, Mapping) else {name: (name,) for name in layers}
    calibration = list(calibration_data) if calibration_data is not None else None
    base = evaluate(as_lightning(model, loss=loss, lr=1e-3, io=io), val_loader, metric, io=io)
    dense_ms = _dense_ms(model, example_inputs, profile, reference)
    scans: dict[float, dict[str, LayerScan]] = {s: {} for s in sparsities}
    for name, members in units.items():
        try:
            found = {s: _scan_one(model, members, example_inputs, val_loader, method=method, sparsity=s, base=base,
                                  metric=metric, calibration=calibration, loss=loss, profile=profile,
                                  reference=reference, dense_ms=dense_ms, io=io) for s in sparsities}
        except Exception as exc:
            if errors is None:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        for s, scan in found.items():
            scans[s][name] = scan
    return {s: Scan(base=base, units=units_scanned) for s, units_scanned in scans.items()}


def _scan_one(model: nn.Module, members: Sequence[str], example_inputs: Any, val_loader: Any, *, method: str,
              sparsity: float, base: float, metric: Any, calibration: list | None, loss: Any,
              profile: HardwareProfile | None, reference: LatencyReference | None, dense_ms: float | None,
              io: ModelIO | None) -> LayerScan:
    """One unit pruned alone at one sparsity: its :class:`LayerScan`."""
    policy = Policy(layers={n: LayerPolicy(sparsity=sparsity, method=method) for n in members})
    pruned = prune(model, policy, example_inputs, calibration_data=calibration, loss_fn=loss, io=io)
    return _scored(pruned, example_inputs, val_loader, base=base, metric=metric, loss=loss, profile=profile,
                   reference=reference, dense_ms=dense_ms, io=io)


def _dense_ms(model: nn.Module, example_inputs: Any, profile: HardwareProfile | None,
              reference: LatencyReference | None) -> float | None:
    """The dense model's latency under ``profile`` (the reference's when given; None without a profile)."""
    if profile is None:
        return None
    return reference.latency_ms if reference is not None else measure(model, example_inputs, profile).latency_ms


def _scored(pruned: nn.Module, example_inputs: Any, val_loader: Any, *, base: float, metric: Any, loss: Any,
            profile: HardwareProfile | None, reference: LatencyReference | None, dense_ms: float | None,
            io: ModelIO | None) -> LayerScan:
    """What a pruned model lost in metric against ``base``, and saved in latency against ``dense_ms``."""
    drop = base - evaluate(as_lightning(pruned, loss=loss, lr=1e-3, io=io), val_loader, metric, io=io)
    saved = None
    if dense_ms is not None:
        saved = 1.0 - measure(pruned, example_inputs, profile, reference=reference).latency_ms / dense_ms
    return LayerScan(drop=drop, latency_saved=saved)


def block_scan(model: nn.Module, blocks: Iterable[str], example_inputs: Any, val_loader: Any, *,
               metric: Metric | str | None = None, loss: Any = None, profile: HardwareProfile | None = None,
               reference: LatencyReference | None = None, io: ModelIO | None = None, base: float | None = None,
               errors: dict[str, str] | None = None) -> Scan:
    """Drop each removable block (see :mod:`autoprune.depth`) alone, without fine-tuning: the metric it
    loses and, given a ``profile``, the share of the dense latency it saves, as :func:`layer_scans` does
    for units. ``base`` is the dense model's metric when it is already known (evaluated otherwise).
    Without ``errors`` the first block that cannot be dropped or evaluated raises; with it, its reason is
    recorded there and the block left out."""
    if base is None:
        base = evaluate(as_lightning(model, loss=loss, lr=1e-3, io=io), val_loader, metric, io=io)
    dense_ms = _dense_ms(model, example_inputs, profile, reference)
    scans = {}
    for block in blocks:
        try:
            dropped = prune(model, Policy(drop=(block,)), example_inputs, io=io)
            scans[block] = _scored(dropped, example_inputs, val_loader, base=base, metric=metric, loss=loss,
                                   profile=profile, reference=reference, dense_ms=dense_ms, io=io)
        except Exception as exc:
            if errors is None:
                raise
            errors[block] = f"{type(exc).__name__}: {exc}"
    return Scan(base=base, units=scans)


def cheapest(scan: Scan) -> tuple[str, ...]:
    """The scanned units or blocks whose :func:`pruning_costs` are finite (they save measurable time),
    cheapest first."""
    costs = pruning_costs(scan.units, base=scan.base)
    return tuple(name for name in by_cost(costs) if math.isfinite(costs[name]))


def free_blocks(scan: Scan, *, tolerance: float = 0.01) -> tuple[str, ...]:
    """The ranked (:func:`cheapest`) blocks whose removal alone loses at most ``tolerance`` times the dense
    metric: within noise, nothing (an over-parameterised network on an easy task has many)."""
    floor = tolerance * max(abs(scan.base), 1e-12)
    return tuple(name for name in cheapest(scan) if scan.units[name].drop <= floor)


@dataclass(frozen=True)
class BlockRanking:
    """What a :func:`block_scan` tells the shallow seeds: the blocks that save measurable time, cheapest to
    drop first, and those of them whose removal alone costs nothing measurable."""

    order: tuple[str, ...]
    free: tuple[str, ...] = ()

    @classmethod
    def of(cls, scan: Scan) -> BlockRanking | None:
        """The ranking of ``scan``; None when no block saves measurable time."""
        order = cheapest(scan)
        return cls(order=order, free=free_blocks(scan)) if order else None


def layer_scan(model: nn.Module, layers: Iterable[str] | Mapping[str, Sequence[str]], example_inputs: Any,
               val_loader: Any, *, method: str, sparsity: float = SCAN_SPARSITY, metric: Metric | str | None = None,
               calibration_data: Iterable[Any] | None = None, loss: Any = None,
               profile: HardwareProfile | None = None, reference: LatencyReference | None = None,
               io: ModelIO | None = None) -> Scan:
    """Prune each unit alone at ``sparsity`` (no fine-tuning): the metric lost and, given a ``profile``,
    the latency saved as a share of the dense model's (timed against ``reference`` when given); one
    sparsity of :func:`layer_scans`."""
    return layer_scans(model, layers, example_inputs, val_loader, method=method, sparsities=(sparsity,),
                       metric=metric, calibration_data=calibration_data, loss=loss, profile=profile,
                       reference=reference, io=io)[sparsity]


def layer_sensitivity(model: nn.Module, layers: Iterable[str] | Mapping[str, Sequence[str]], example_inputs: Any,
                      val_loader: Any, *, method: str, sparsity: float = SCAN_SPARSITY, metric: Metric | str | None = None,
                      calibration_data: Iterable[Any] | None = None, loss: Any = None) -> dict[str, float]:
    """Metric of the dense model minus the metric with only ``layer`` pruned at ``sparsity``, per layer
    (:func:`layer_scan` without latency)."""
    scan = layer_scan(model, layers, example_inputs, val_loader, method=method, sparsity=sparsity, metric=metric,
                      calibration_data=calibration_data, loss=loss)
    return {name: unit.drop for name, unit in scan.units.items()}


def alignment_rates(model: nn.Module, layers: Iterable[str], example_inputs: Any, *,
                    options: Sequence[int | None], method: str, profile: HardwareProfile, sparsity: float = 0.7,
                    reference: LatencyReference | None = None, calibration_data: Iterable[Any] | None = None,
                    loss: Any = None, io: ModelIO | None = None) -> dict[int | None, float]:
    """MACs per millisecond of the uniform policy at ``sparsity`` under each channel alignment
    (``round_to``) of ``options``, timed under ``profile``: how efficiently this runtime computes the
    shapes each alignment leaves. Rounding to the nearest multiple keeps about as many channels as exact
    pruning, sometimes fewer, so latency alone would favour whichever option happened to round down;
    the rate does not. Costs one prune and one latency measurement per option."""
    calibration = list(calibration_data) if calibration_data is not None else None
    rates = {}
    for option in options:
        policy = Policy.uniform(list(layers), sparsity=sparsity, method=method, round_to=option)
        pruned = prune(model, policy, example_inputs, calibration_data=calibration, loss_fn=loss, io=io)
        metrics = measure(pruned, example_inputs, profile, reference=reference)
        rates[option] = metrics.macs / metrics.latency_ms
    return rates


def pruning_costs(units: Mapping[str, LayerScan], *, base: float, tolerance: float = 0.01,
                  min_saved: float = 0.02) -> dict[str, float]:
    """Metric lost per share of latency saved, per unit: the lower, the better a unit is to prune.

    A drop below ``tolerance`` times the dense metric counts as that much (a drop within noise does not
    make a unit free), a gain as no drop. A unit that saves less than ``min_saved`` of the dense latency
    (within timing noise: repeated timings of one model differ by a few percent) costs ``inf``, so noise
    cannot rank it ahead of a unit that really saves time. Units scanned without latency cost their
    drop alone.
    """
    floor = tolerance * max(abs(base), 1e-12)
    costs = {}
    for name, unit in units.items():
        if unit.latency_saved is None:
            costs[name] = unit.drop
        elif unit.latency_saved < min_saved:
            costs[name] = math.inf
        else:
            costs[name] = (max(unit.drop, 0.0) + floor) / unit.latency_saved
    return costs


def by_cost(costs: Mapping[str, float]) -> list[str]:
    """The names of ``costs``, cheapest first (ties by name): the rank :func:`sensitivity_scales` scales by."""
    return sorted(costs, key=lambda n: (costs[n], n))


def sensitivity_scales(costs: Mapping[str, float], *, low: float, high: float, step: float | None) -> dict[str, float]:
    """Per-layer scales from ``high`` (lowest cost: a metric drop, or :func:`pruning_costs`) down to ``low``
    (highest), by rank, on the grid."""
    order = by_cost(costs)
    if len(order) == 1:
        return {order[0]: 1.0}
    scales = {}
    for rank, name in enumerate(order):
        value = snap_to_grid(high - (high - low) * rank / (len(order) - 1), low, step)
        scales[name] = round(min(high, max(low, value)), 6)
    return scales
