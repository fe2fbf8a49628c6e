"""How a space's sparsity is drawn: one object per ``sparsity.mode``, and the trial parameters' names.

A mode says which values a trial draws (one per unit, per group, or one global level times a scale per
unit), the parameters of a uniform policy at a level and of a policy scaled by the units' sensitivity
(the seeds), and the range of those scales. :class:`~autoprune.resolved_space.ResolvedSpace` draws and seeds
through the mode; nothing else branches on its name. The parameter names are written here once:
``sparsity.<unit>``, ``sparsity.<group>``, ``sparsity.global``, ``scale.<unit>``, ``drop.<block>``.

Example:
    >>> sorted(MODES)
    ['global_scale', 'per_group', 'per_layer']
    >>> MODES["global_scale"].uniform(units=["a", "b"], groups={}, level=0.5)
    {'sparsity.global': 0.5, 'scale.a': 1.0, 'scale.b': 1.0}
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

if TYPE_CHECKING:
    from autoprune.resolved_space import Suggester
    from autoprune.space import SparsitySpec

GLOBAL = "sparsity.global"


def sparsity_param(name: str) -> str:
    """The trial parameter of a unit's or a group's sparsity."""
    return f"sparsity.{name}"


def scale_param(unit: str) -> str:
    """The trial parameter of a unit's scale of the global level (``global_scale``)."""
    return f"scale.{unit}"


def drop_param(block: str) -> str:
    """The trial parameter that says whether a block is dropped."""
    return f"drop.{block}"


def grid(low: float, high: float, step: float | None) -> tuple[float, float]:
    """Optuna needs (high - low) to be a multiple of step: shrink high onto the grid."""
    if step is None:
        return low, high
    return low, low + math.floor((high - low) / step + 1e-9) * step


def snap_to_grid(value: float, low: float, step: float | None) -> float:
    """The grid point ``low + k * step`` nearest ``value`` (``value`` itself without a step)."""
    return round(low + round((value - low) / step) * step, 6) if step else value


def _one_each(trial: Suggester, sp: SparsitySpec, named: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """One sparsity drawn per name (a unit or a group), given to each of its layers."""
    low, high = grid(sp.low, sp.high, sp.step)
    out: dict[str, float] = {}
    for name, members in named.items():
        value = trial.suggest_float(sparsity_param(name), low, high, step=sp.step)
        out.update({n: value for n in members})
    return out


class SparsityMode(ABC):
    """One way to draw a policy's sparsities (see the module docstring)."""

    #: the name a space's ``sparsity.mode`` gives
    name: ClassVar[str]
    #: whether the seeds may scale units by their sensitivity (a value is drawn per unit)
    scales_units: ClassVar[bool] = True

    @abstractmethod
    def draw(self, trial: Suggester, sp: SparsitySpec, *, units: Mapping[str, Iterable[str]],
             groups: Mapping[str, Iterable[str]]) -> dict[str, float]:
        """Each layer's sparsity, drawn through ``trial`` (units and groups map a name to its layers)."""

    @abstractmethod
    def uniform(self, *, units: Iterable[str], groups: Mapping[str, Any], level: float) -> dict[str, Any]:
        """The parameters of every layer at ``level``."""

    def scaled(self, sp: SparsitySpec, *, units: Iterable[str], level: float,
               scales: Mapping[str, float]) -> dict[str, Any] | None:
        """The parameters of ``level`` scaled per unit by ``scales`` (None when the mode cannot)."""
        return None

    def scale_bounds(self, sp: SparsitySpec) -> tuple[float, float]:
        """The range of the seeds' per-unit scales."""
        return 0.5, 1.5

    def scale_step(self, sp: SparsitySpec) -> float | None:
        """The grid of the seeds' per-unit scales (None: any value)."""
        return None


class PerLayer(SparsityMode):
    """A sparsity per searched unit."""

    name = "per_layer"

    def draw(self, trial, sp, *, units, groups):
        return _one_each(trial, sp, units)

    def uniform(self, *, units, groups, level):
        return {sparsity_param(u): level for u in units}

    def scaled(self, sp, *, units, level, scales):
        low, high = grid(sp.low, sp.high, sp.step)
        return {sparsity_param(u): snap_to_grid(min(high, level * scales.get(u, 1.0)), low, sp.step) for u in units}


class PerGroup(SparsityMode):
    """A sparsity per named group of layers (``sparsity.groups``)."""

    name = "per_group"
    scales_units = False

    def draw(self, trial, sp, *, units, groups):
        return _one_each(trial, sp, groups)

    def uniform(self, *, units, groups, level):
        return {sparsity_param(g): level for g in groups}


class GlobalScale(SparsityMode):
    """One global level, times a scale per unit (capped at the space's ``high``)."""

    name = "global_scale"

    def draw(self, trial, sp, *, units, groups):
        low, high = grid(sp.low, sp.high, sp.step)
        level = trial.suggest_float(GLOBAL, low, high, step=sp.step)
        s_low, s_high = grid(sp.scale_low, sp.scale_high, sp.scale_step)
        out: dict[str, float] = {}
        for unit, members in units.items():
            scale = trial.suggest_float(scale_param(unit), s_low, s_high, step=sp.scale_step)
            out.update({n: min(sp.high, level * scale) for n in members})
        return out

    def uniform(self, *, units, groups, level):
        return {GLOBAL: level, **{scale_param(u): 1.0 for u in units}}

    def scaled(self, sp, *, units, level, scales):
        return {GLOBAL: level, **{scale_param(u): scales.get(u, 1.0) for u in units}}

    def scale_bounds(self, sp):
        return sp.scale_low, sp.scale_high

    def scale_step(self, sp):
        return sp.scale_step


#: ``sparsity.mode`` name -> mode (a space's ``mode`` field accepts exactly these)
MODES: dict[str, SparsityMode] = {m.name: m for m in (PerLayer(), PerGroup(), GlobalScale())}
