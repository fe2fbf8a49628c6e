"""Where a model's parameters, compute and time go, module by module: the breakdown behind
``autoprune analyze``.

Every module gets its *own* share: what it does beyond its submodules. Parameters are those it holds
directly, MACs are Torch-Pruning's count of the module minus its children's (a container's own MACs are
what it computes itself, e.g. a ``MultiheadAttention``'s projections), and time is measured with forward
hooks on every module: a module's inclusive time is from its pre-hook to its hook, and its own time is
that minus its children's. Own figures therefore add up exactly to the model's totals (the root's own
time holds the functional calls of its ``forward``: pooling, reshapes, the residual adds of a block are
the block's), and shares of the hooked forward sum to 1. Hooks cost a few microseconds per module, so the
hooked forward is a little slower than the plain one: :attr:`CostBreakdown.forward_ms` is the hooked
forward, to compare with :func:`autoprune.measure.measure`'s latency.

Timing: eager PyTorch on the profile's device, dtype, threads and batch size; ``profile.warmup`` untimed
forwards, then enough timed forwards to last ``10 * profile.min_sample_ms`` (at least
``profile.repeats``, at most 1000), and only those no slower than the median forward are kept (a shared
machine delays the odd forward as a whole). Other runtimes (ONNX Runtime fuses and reorders operators)
have no per-module times: their shares are eager PyTorch's, which :func:`cost_breakdown` says in
:attr:`CostBreakdown.timed_by`.

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

import copy
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoprune.measure import DTYPES, HardwareProfile
from autoprune.methods.structured import macs_per_module
from autoprune.modelio import Inputs

#: timed forwards at most (a large model's each last long enough)
MAX_FORWARDS = 1000


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


def own_times(model: nn.Module, example_inputs: Any, profile: HardwareProfile) -> tuple[dict[str, float], float]:
    """(each module's own share of the hooked forward's time, the median hooked forward in ms), timed as
    the module docstring says."""
    dtype = DTYPES[profile.dtype]
    timed = copy.deepcopy(model).to(device=profile.device, dtype=dtype).eval()
    inputs = Inputs.of(example_inputs).repeat_first(profile.batch_size).to(profile.device, dtype)
    cuda = profile.device.startswith("cuda")
    names = {module: name for name, module in timed.named_modules()}
    started: dict[str, list[float]] = {}
    inclusive: dict[str, float] = {}

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def before(module: nn.Module, args: Any) -> None:
        started.setdefault(names[module], []).append(clock())

    def after(module: nn.Module, args: Any, output: Any) -> None:
        name = names[module]
        inclusive[name] = inclusive.get(name, 0.0) + clock() - started[name].pop()

    handles = [h for module in names for h in (module.register_forward_pre_hook(before),
                                                module.register_forward_hook(after))]
    previous = torch.get_num_threads()
    torch.set_num_threads(profile.threads)
    forwards: list[dict[str, float]] = []
    try:
        with torch.inference_mode():
            for _ in range(max(1, profile.warmup)):
                inclusive.clear()
                inputs.run(timed)
            budget_s = 10 * profile.min_sample_ms / 1000
            spent = 0.0
            while len(forwards) < MAX_FORWARDS and (len(forwards) < profile.repeats or spent < budget_s):
                inclusive.clear()
                inputs.run(timed)
                forwards.append(dict(inclusive))
                spent += inclusive[""]
    finally:
        torch.set_num_threads(previous)
        for handle in handles:
            handle.remove()
    median = statistics.median(f[""] for f in forwards)
    kept = [f for f in forwards if f[""] <= median]
    total = sum(f[""] for f in kept)
    children = {name: [names[c] for c in module.children()] for module, name in names.items()}
    shares = {}
    for name, kids in children.items():
        own = sum(f.get(name, 0.0) - sum(f.get(k, 0.0) for k in kids) for f in kept)
        shares[name] = max(0.0, own) / total if total > 0 else 0.0
    scale = sum(shares.values())  # a child timed slower than its parent by clock jitter: renormalise
    if scale > 0 and not math.isclose(scale, 1.0):
        shares = {n: s / scale for n, s in shares.items()}
    return shares, median * 1000.0


def cost_breakdown(model: nn.Module, example_inputs: Any, profile: HardwareProfile) -> CostBreakdown:
    """Every module's own parameters, MACs and share of the forward's time under ``profile`` (eager
    PyTorch on its device; see the module docstring for other runtimes)."""
    macs = own_macs(model, example_inputs)
    shares, forward_ms = own_times(model, example_inputs, profile)
    seen: set[int] = set()  # a tied parameter (an embedding shared with an output layer) counts once

    def own_params(module: nn.Module) -> int:
        fresh = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        return sum(p.numel() for p in fresh)

    modules = {name: ModuleCost(params=own_params(module), macs=macs.get(name, 0), time_share=shares.get(name, 0.0))
               for name, module in model.named_modules()}
    how = (f"forward hooks on every module, eager PyTorch on {profile.device} ({profile.dtype}, {profile.threads} "
           f"thread(s), batch {profile.batch_size})")
    if profile.runtime != "eager":
        how += f"; {profile.runtime} fuses operators and has no per-module times, so the shares are eager PyTorch's"
    return CostBreakdown(modules=modules, params=sum(c.params for c in modules.values()),
                         macs=sum(c.macs for c in modules.values()), forward_ms=forward_ms, timed_by=how)
