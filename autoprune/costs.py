"""Where a model's parameters, compute and time go, module by module: the breakdown behind
``autoprune analyze``.

Every module gets its *own* share: what it does beyond its submodules. Parameters are those it holds
directly, MACs are Torch-Pruning's count of the module minus its children's (a container's own MACs are
what it computes itself, e.g. a ``MultiheadAttention``'s projections), and time is what the profile's
runtime attributes to it (:meth:`autoprune.runtimes.Runtime.module_times`): in eager PyTorch, forward
hooks on every module (its time minus its children's, so the functional calls of a ``forward``, such as a
block's residual add, are that module's); in ONNX Runtime, its profiler's node times by the module scope
each node carries. Own figures add up exactly to the model's totals, and the shares to 1. Timing changes
what it times a little (hooks cost microseconds per call; ONNX Runtime is profiled with basic graph
optimisations, activations unfused): :attr:`CostBreakdown.forward_ms` is that forward, to compare with
:func:`autoprune.measure.measure`'s latency. A runtime that cannot attribute time to modules gets eager
PyTorch's shares, and :attr:`CostBreakdown.timed_by` says so.

Example:
    >>> import torch
    >>> from autoprune.measure import HardwareProfile
    >>> from autoprune.zoo import PlainCNN
    >>> costs = cost_breakdown(PlainCNN().eval(), torch.randn(2, 1, 8, 8),
    ...                        HardwareProfile(batch_size=4, warmup=1, repeats=3, min_sample_ms=1))
    >>> sum(c.params for c in costs.modules.values()) == costs.params
    True
    >>> round(sum(c.time_share for c in costs.modules.values()), 6)
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from autoprune.measure import HardwareProfile
from autoprune.methods.structured import macs_per_module
from autoprune.modelio import Inputs
from autoprune.runtimes import get_runtime
from autoprune.runtimes.base import ModuleTimes


@dataclass(frozen=True)
class ModuleCost:
    """A module's own parameters, MACs per sample and share of the hooked forward's time."""

    params: int
    macs: int
    time_share: float


@dataclass(frozen=True)
class CostBreakdown:
    """Every module's :class:`ModuleCost` (by qualified name, ``""`` the root), the totals, the hooked
    forward's median time in ms, and how it was timed."""

    modules: dict[str, ModuleCost]
    params: int
    macs: int
    forward_ms: float
    timed_by: str

    def of(self, names: list[str] | tuple[str, ...]) -> ModuleCost:
        """The summed cost of ``names``."""
        costs = [self.modules[n] for n in names if n in self.modules]
        return ModuleCost(params=sum(c.params for c in costs), macs=sum(c.macs for c in costs),
                          time_share=sum(c.time_share for c in costs))


def own_macs(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """Each module's MACs per sample beyond its children's, counted by Torch-Pruning on one sample."""
    inclusive = macs_per_module(model, Inputs.of(example_inputs).repeat_first(1))
    return {name: max(0, inclusive[module] - sum(inclusive[child] for child in module.children()))
            for name, module in model.named_modules()}


def own_times(model: nn.Module, example_inputs: Any, profile: HardwareProfile) -> ModuleTimes:
    """Each module's own time in the profile's runtime (:meth:`~autoprune.runtimes.Runtime.module_times`), or
    in eager PyTorch when that runtime cannot attribute its time to modules (``how`` says so)."""
    inputs = Inputs.of(example_inputs).repeat_first(profile.batch_size)
    runtime = get_runtime(profile.runtime)
    times = runtime.module_times(model, inputs, profile)
    if times is None:
        times = get_runtime("eager").module_times(model, inputs, replace(profile, runtime="eager"))
        times = replace(times, how=times.how + f"; {profile.runtime} cannot time modules, so these are eager "
                                               "PyTorch's shares")
    return times


def cost_breakdown(model: nn.Module, example_inputs: Any, profile: HardwareProfile) -> CostBreakdown:
    """Every module's own parameters, MACs and share of the forward's time under ``profile`` (eager
    PyTorch on its device; see the module docstring for other runtimes)."""
    macs = own_macs(model, example_inputs)
    times = own_times(model, example_inputs, profile)
    shares = times.shares()
    seen: set[int] = set()  # a tied parameter (an embedding shared with an output layer) counts once

    def own_params(module: nn.Module) -> int:
        fresh = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        return sum(p.numel() for p in fresh)

    modules = {name: ModuleCost(params=own_params(module), macs=macs.get(name, 0), time_share=shares.get(name, 0.0))
               for name, module in model.named_modules()}
    return CostBreakdown(modules=modules, params=sum(c.params for c in modules.values()),
                         macs=sum(c.macs for c in modules.values()), forward_ms=times.forward_ms, timed_by=times.how)
