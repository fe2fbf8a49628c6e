"""``analyze()``: look at a model before searching it. Where its parameters, compute and measured time live,
which layers are pruned together, which blocks can go, and what pruning each unit alone costs.

It binds the space to the model exactly as :func:`autoprune.search` does (:func:`autoprune.prepare.prepare_model`:
the same prunable layers, coupled units and removable blocks) and runs the search's own start-up analysis
(:func:`autoprune.seeds.scan_units`, :func:`autoprune.seeds.probe_alignment`), at more sparsities. So the
ranking it prints is the one the seeded policies follow, and a saved ``analysis.json`` can stand in for that
scan (``search(analysis=...)``, ``autoprune search --analysis``).

Reported, per prunable layer: its own parameters, MACs per sample and share of the measured forward time
(:mod:`autoprune.costs`: in the profile's runtime, forward hooks in eager PyTorch, the profiler in ONNX
Runtime; the shares of all modules add up to 1, the layers' plus ``other``), output channels, the unit it is searched in and its coupled partners, the removable
block it lies in, or why it is not searched. Per unit: the metric with that unit alone pruned at each
sparsity (no fine-tuning, BatchNorm statistics as trained: what the seeds' scan sees), the share of the
dense latency that saves (timed under the profile against the dense model, as trials are), its pruning
cost (metric lost per latency saved) and rank. Per removable block: the metric and latency with that block
alone dropped. Model totals, the ``round_to`` the seeds would use and a suggested starting policy (the
sensitivity-scaled seed at the middle of the space's range). What could not be analysed is said in
``notes`` (and per unit in ``error``), never silently left out.

Example:
    >>> import torch
    >>> from autoprune.measure import HardwareProfile
    >>> from autoprune.zoo import PlainCNN
    >>> batches = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))]
    >>> fast = HardwareProfile(batch_size=4, warmup=1, repeats=3, min_sample_ms=1)
    >>> analysis = analyze(PlainCNN().eval(), (batches, batches), sparsities=(0.5,), profile=fast)
    >>> [u.name for u in analysis.units]
    ['conv1', 'conv2', 'fc']
    >>> analysis.params == sum(layer.params for layer in analysis.layers) + analysis.other["params"]
    True
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import lightning as L
from torch import nn

from autoprune import defaults
from autoprune.costs import CostBreakdown, cost_breakdown
from autoprune.analysis_schema import check_fields
from autoprune.errors import AnalysisError, AutopruneInputError
from autoprune.finetune import quiet
from autoprune.layers import output_layers, prunable_layers
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.modelio import ModelIO
from autoprune.policy import inside
from autoprune.prepare import PreparedModel, prepare_model
from autoprune.seeds import HeadStart, choose_alignment, probe_alignment, scale_bounds, scales_of, scan_units
from autoprune.sensitivity import SCAN_SPARSITY, BlockRanking, LayerScan, Scan, block_scan, by_cost, pruning_costs
from autoprune.space import SearchSpace, load_space
from autoprune.study import metric_name, model_fingerprint

#: analysis.json's schema version (docs/analysis.md describes it); 2 added the model's fingerprint
SCHEMA = 2
#: the sparsities scanned unless told
SPARSITIES = (0.25, 0.5, 0.75)
#: the file ``autoprune analyze`` writes, and ``autoprune search --analysis`` reads
ANALYSIS_FILE = "analysis.json"


@dataclass(frozen=True)
class LayerInfo:
    """One prunable layer: its own costs (:mod:`autoprune.costs`), output channels, the unit it is searched
    in (None: not searched, ``why_not`` says why), the other layers of that unit, and the removable block
    it lies in."""

    name: str
    kind: str
    params: int
    macs: int
    latency_share: float
    out_channels: int | None
    unit: str | None
    coupled: tuple[str, ...] = ()
    block: str | None = None
    why_not: str | None = None


@dataclass(frozen=True)
class UnitInfo:
    """One searched unit (a layer, or coupled layers pruned together): its layers' summed costs, the metric
    with it alone pruned at each sparsity and the share of the dense latency that saves, its pruning cost
    at the seeds' sparsity (metric lost per latency saved; None when it saves no measurable time), its rank
    (1: pruned hardest by the seeds), the seeds' scale for it, and why it could not be scanned (``error``)."""

    name: str
    layers: tuple[str, ...]
    params: int
    macs: int
    latency_share: float
    metric: dict[float, float] = field(default_factory=dict)
    latency_saved: dict[float, float] = field(default_factory=dict)
    cost: float | None = None
    rank: int | None = None
    scale: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class BlockInfo:
    """A removable block (a residual block, an encoder layer): the metric and the share of the dense latency
    saved with it alone dropped (no fine-tuning), or why that failed."""

    name: str
    params: int
    metric: float | None = None
    latency_saved: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` found (see the module docstring); :meth:`save` / :meth:`load` as JSON."""

    model: str
    metric_name: str
    metric: float
    params: int
    macs: int
    size_mb: float
    latency_ms: float
    profile: dict[str, Any]
    space_fingerprint: str
    method: str
    sparsities: tuple[float, ...]
    layers: tuple[LayerInfo, ...]
    units: tuple[UnitInfo, ...]
    blocks: tuple[BlockInfo, ...]
    other: dict[str, float]
    timed_by: str
    hooked_ms: float
    alignment: dict[str, float]
    round_to: int | None
    suggested: dict[str, Any]
    notes: tuple[str, ...] = ()
    model_fingerprint: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def ranking(self) -> list[str]:
        """The scanned units, cheapest to prune first (the order of the seeds' scales)."""
        ranked = sorted((u for u in self.units if u.rank is not None), key=lambda u: u.rank)
        return [u.name for u in ranked]

    def head_start(self) -> HeadStart:
        """What the seeded policies take from this analysis instead of scanning again."""
        scales = {u.name: u.scale for u in self.units if u.scale is not None}
        dropped = Scan(base=self.metric, units={b.name: LayerScan(drop=self.metric - b.metric, latency_saved=b.latency_saved)
                                                for b in self.blocks if b.metric is not None})
        return HeadStart(scales=scales or None, round_to=self.round_to, dense_metric=self.metric,
                         blocks=BlockRanking.of(dropped))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for unit in data["units"]:  # JSON keys are strings
            unit["metric"] = {_key(s): v for s, v in unit["metric"].items()}
            unit["latency_saved"] = {_key(s): v for s, v in unit["latency_saved"].items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Analysis:
        """The analysis a JSON object describes; AnalysisError naming the first field that is missing, of the
        wrong type, or not a finite number (an edited or truncated file is never half-read)."""
        if not isinstance(data, Mapping):
            raise AnalysisError(f"the file holds a JSON {type(data).__name__}, not an analysis object")
        if data.get("schema") != SCHEMA:
            raise AnalysisError(f"analysis schema {data.get('schema')!r} is not {SCHEMA}: run autoprune analyze again")
        check_fields(cls, data, "")
        units = tuple(UnitInfo(**{**u, "layers": tuple(u["layers"]),
                                  "metric": {float(s): v for s, v in u["metric"].items()},
                                  "latency_saved": {float(s): v for s, v in u["latency_saved"].items()}})
                      for u in data["units"])
        layers = tuple(LayerInfo(**{**layer, "coupled": tuple(layer["coupled"])}) for layer in data["layers"])
        return cls(**{**data, "layers": layers, "units": units, "blocks": tuple(BlockInfo(**b) for b in data["blocks"]),
                      "sparsities": tuple(data["sparsities"]), "notes": tuple(data["notes"])})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Analysis:
        """Read an ``analysis.json``; errors name the file and what to do."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except AnalysisError as exc:
            raise AnalysisError(f"{path}: {exc}") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise AnalysisError(f"{path} is not an analysis autoprune can read ({type(exc).__name__}: {exc}); "
                                "write it with autoprune analyze --out") from None

    def check_fits(self, prepared: PreparedModel, space: SearchSpace, profile: HardwareProfile, metric: str) -> None:
        """Refuse to seed a search from an analysis made for another model (its fingerprint: architecture and
        weights), space, profile or metric, or whose per-unit scales lie outside what the space allows."""
        ours = model_fingerprint(prepared.base)
        if self.model_fingerprint != ours:
            differ = [k for k in ours if self.model_fingerprint.get(k) != ours[k]]
            raise AnalysisError(f"the analysis was made for another model ({', '.join(differ)} differ: "
                                f"{self.model_fingerprint.get('class')!r} vs {ours['class']!r}): run autoprune "
                                "analyze with this search's --model and --weights")
        low, high = scale_bounds(prepared.resolved)
        wrong = {u.name: u.scale for u in self.units if u.scale is not None and not low <= u.scale <= high}
        if wrong:
            raise AnalysisError(f"the analysis gives units scales {wrong} outside the space's [{low}, {high}]: it was "
                                "edited or made for another space; run autoprune analyze again")
        units = {u.name: u.layers for u in self.units}
        if units != {n: tuple(m) for n, m in prepared.resolved.units.items()}:
            raise AnalysisError(f"the analysis has units {sorted(units)}, the search {sorted(prepared.resolved.units)}: "
                                "it was made for another model or space; run autoprune analyze with this search's "
                                "--model and --space")
        theirs_profile = asdict(profile)
        theirs_profile.pop("interleave")  # how timings cancel drift, not what is timed: either way fits
        differ = [f"{k} {self.profile.get(k)!r} vs {v!r}" for k, v in theirs_profile.items() if self.profile.get(k) != v]
        if differ:
            raise AnalysisError(f"the analysis was timed under another hardware profile ({', '.join(differ)}; "
                                "analysis vs search): run autoprune analyze with the search's --runtime, "
                                "--batch-size, --threads and --device")
        if self.space_fingerprint != space.fingerprint():
            raise AnalysisError("the analysis was made with another space than this search's: run autoprune analyze "
                                "with the search's --space")
        if self.metric_name != metric:
            raise AnalysisError(f"the analysis measured {self.metric_name!r} and this search's metric is {metric!r}: "
                                "analyse with the search's metric")


def _key(sparsity: float) -> str:
    return f"{sparsity:g}"


def check_sparsities(sparsities: Any) -> tuple[float, ...]:
    """The sparsities to scan, sorted, each in [0, 1); an input error naming the bad value otherwise."""
    if isinstance(sparsities, (str, bytes)) or not isinstance(sparsities, Sequence) or not sparsities:
        raise AutopruneInputError(f"sparsities (--sparsities) must be a non-empty list of numbers in [0, 1), got "
                                  f"{sparsities!r}")
    for value in sparsities:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise AutopruneInputError(f"sparsities (--sparsities) must be numbers in [0, 1), got {value!r}")
    return tuple(sorted({float(v) for v in sparsities}))


def analyze(model: nn.Module, data: Any, *, space: str | Path | SearchSpace = defaults.SPACE,
            profile: HardwareProfile | None = None, sparsities: Sequence[float] = SPARSITIES,
            metric: Callable[[nn.Module, Any], float] | str | None = None, loss: Callable[[Any, Any], Any] | None = None,
            io: ModelIO | None = None) -> Analysis:
    """Analyse ``model`` on ``data`` as :func:`autoprune.search` would search it (see the module docstring).

    Args:
        model, data, space, metric, loss, io: as for :func:`autoprune.search`; the model is never modified.
        profile: the :class:`~autoprune.measure.HardwareProfile` latency is measured under.
        sparsities: each unit is pruned alone at each of these (the seeds' 0.5 is scanned too).

    Raises:
        AutopruneInputError (and its subclasses): bad arguments, a space that selects no layer or a glob
            that matches none, data the model cannot run.
    """
    if not isinstance(model, nn.Module):
        raise AutopruneInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    scanned = check_sparsities(sparsities)
    if isinstance(metric, str) and not isinstance(model, L.LightningModule):
        raise AutopruneInputError(f"metric {metric!r} names a metric a LightningModule logs in validation_step, and "
                                  f"the model is a plain {type(model).__name__}: give a callable metric(model, "
                                  "val_loader), or leave it out for accuracy")
    the_space, profile = load_space(space), profile or HardwareProfile()
    profile.check_available()
    notes: list[str] = []
    with quiet(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare_model(model, data, the_space, io)
        analysis = _analyze(prepared, the_space, profile, sorted({*scanned, SCAN_SPARSITY}), scanned,
                            metric=metric, loss=loss, notes=notes)
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]  # e.g. tracing that failed
    return replace(analysis, notes=tuple(dict.fromkeys([*said, *analysis.notes])))


def _analyze(prepared: PreparedModel, space: SearchSpace, profile: HardwareProfile, sparsities: list[float],
             shown: tuple[float, ...], *, metric: Any, loss: Any, notes: list[str]) -> Analysis:
    base, example, resolved = prepared.base, prepared.example_inputs, prepared.resolved
    reference = LatencyReference.calibrate(base, example, profile) if profile.interleave else None
    # sizes and MACs; the reference's calibration already timed the dense model, so it is not timed again
    dense = measure(base, example, profile, latency={"latency_ms": reference.latency_ms} if reference else None)
    costs = cost_breakdown(base, example, profile)
    errors: dict[str, str] = {}
    scans = scan_units(resolved, base, example, prepared.train_loader, prepared.val_loader, metric=metric, loss=loss,
                       profile=profile, reference=reference, io=prepared.io, sparsities=tuple(sparsities),
                       errors=errors)
    notes += [f"unit {name} could not be pruned alone ({why}): it is left out of the ranking" for name, why in
              errors.items()]
    seed_scan = scans[SCAN_SPARSITY]
    try:
        rates = probe_alignment(resolved, base, example, prepared.train_loader, loss=loss, profile=profile,
                                reference=reference, io=prepared.io)
    except Exception as exc:  # as in the search: the seeds use the first round_to
        notes.append(f"the channel alignment probe failed ({type(exc).__name__}: {exc}); the seeds use the first "
                     "round_to")
        rates = {}
    round_to = choose_alignment(space, rates)
    scales = scales_of(resolved, seed_scan) or {}
    cost_of = pruning_costs(seed_scan.units, base=seed_scan.base)
    order = by_cost(cost_of)
    units = tuple(UnitInfo(
        name=name, layers=tuple(members), **_summed(costs, members), error=errors.get(name),
        metric={s: scans[s].base - scans[s].units[name].drop for s in shown if name in scans[s].units},
        latency_saved={s: scans[s].units[name].latency_saved for s in shown if name in scans[s].units},
        cost=cost_of[name] if name in cost_of and math.isfinite(cost_of[name]) else None,
        rank=order.index(name) + 1 if name in cost_of else None, scale=scales.get(name))
        for name, members in resolved.units.items())
    layers = _layers(prepared, costs)
    accounted = costs.of([layer.name for layer in layers])
    other = {"params": costs.params - accounted.params, "macs": costs.macs - accounted.macs,
             "latency_share": max(0.0, 1.0 - accounted.time_share)}
    return Analysis(
        model=type(base).__name__, metric_name=metric_name(metric), metric=seed_scan.base, params=costs.params,
        macs=costs.macs, size_mb=dense.size_mb, latency_ms=dense.latency_ms,
        profile=asdict(profile), space_fingerprint=space.fingerprint(), method=space.methods[0],
        sparsities=shown, layers=layers, units=units,
        blocks=_blocks(prepared, costs, reference, profile, metric=metric, loss=loss, base=seed_scan.base),
        other=other, timed_by=costs.timed_by, hooked_ms=costs.forward_ms,
        alignment={str(k): v for k, v in rates.items()}, round_to=round_to,
        suggested=_suggested(prepared, space, scales or None, round_to), notes=tuple(dict.fromkeys(notes)),
        model_fingerprint=model_fingerprint(base))


def _summed(costs: CostBreakdown, names: Sequence[str]) -> dict[str, Any]:
    total = costs.of(list(names))
    return {"params": total.params, "macs": total.macs, "latency_share": total.time_share}


def _layers(prepared: PreparedModel, costs: CostBreakdown) -> tuple[LayerInfo, ...]:
    base, resolved = prepared.base, prepared.resolved
    unit_of = {layer: name for name, members in resolved.units.items() for layer in members}
    protected = set(output_layers(base, prepared.example_inputs))
    modules = dict(base.named_modules())
    rows = []
    for name in prunable_layers(base):
        module, unit = modules[name], unit_of.get(name)
        weight = getattr(module, "weight", None)
        block = next((b for b in resolved.blocks if name.startswith(b + ".")), None)
        why = None
        if unit is None:
            why = ("the model's output: kept whole" if name in protected else
                   "inside a removable block only (the search drops it whole)" if block and name not in resolved.layers
                   else "left out by the space (exclude, prune_hidden: false, or attention handled per head)")
        rows.append(LayerInfo(
            name=name, kind=type(module).__name__, **_summed(costs, [name]),
            out_channels=int(weight.shape[0]) if weight is not None and weight.dim() > 0 else None, unit=unit,
            coupled=tuple(m for m in resolved.units.get(unit, ()) if m != name), block=block, why_not=why))
    return tuple(rows)


def _blocks(prepared: PreparedModel, costs: CostBreakdown, reference: LatencyReference | None,
            profile: HardwareProfile, *, metric: Any, loss: Any, base: float) -> tuple[BlockInfo, ...]:
    """Each removable block dropped alone: metric and latency saved (no fine-tuning), as the seeds rank them."""
    errors: dict[str, str] = {}
    scan = block_scan(prepared.base, prepared.resolved.blocks, prepared.example_inputs, prepared.val_loader,
                      metric=metric, loss=loss, profile=profile, reference=reference, io=prepared.io, base=base,
                      errors=errors)  # reported, not fatal: the rest of the analysis stands
    infos = []
    for block in prepared.resolved.blocks:
        params = sum(c.params for n, c in costs.modules.items() if inside(n, (block,)))
        found = scan.units.get(block)
        infos.append(BlockInfo(name=block, params=params, error=errors.get(block)) if found is None else
                     BlockInfo(name=block, params=params, metric=base - found.drop, latency_saved=found.latency_saved))
    return tuple(infos)


def _suggested(prepared: PreparedModel, space: SearchSpace, scales: dict[str, float] | None,
               round_to: int | None) -> dict[str, Any]:
    """The sensitivity-scaled seed (the uniform one without scales) at the middle of the space's range."""
    sp = space.sparsity
    level = min(max(0.5, sp.low), sp.high)
    seeds = prepared.resolved.seed_params(levels=(level,), scales=scales, scaled_levels=(level,), shallow_levels=(),
                                          round_to=round_to)
    policy, settings = prepared.resolved.policy_of(seeds[-1] if scales else seeds[0])
    return {"policy": policy.to_dict(), "lr": settings.lr, "level": level}
