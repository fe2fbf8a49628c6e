"""``eager``: the PyTorch module as trained, on the profile's device and dtype (the default runtime).

Per-module time (:meth:`EagerRuntime.module_times`) comes from forward hooks on every module: a module's
inclusive time runs from its pre-hook to its hook (CUDA synchronised on a GPU), its own time is that minus
its children's, so the functional calls of a ``forward`` (activations, pooling, a block's residual add)
count for the module whose ``forward`` makes them. The forwards are repeated as every runtime's per-module
timing repeats them (:func:`~autoprune.runtimes.base.repeated`), and only those no slower than the median
are kept (:func:`~autoprune.runtimes.base.steady`). Hooks cost a few
microseconds per module call: the hooked forward is a little slower than a plain one.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autoprune.runtimes.base import (DTYPES, Capabilities, Forward, ModuleTimes, Runtime, clock, register_runtime,
                                     repeated, steady)

if TYPE_CHECKING:
    from autoprune.measure import HardwareProfile
    from autoprune.modelio import Inputs


class EagerRuntime(Runtime):
    """Times a copy of the module, cast to the profile's dtype and moved to its device (CUDA timings are
    synchronised around each sample by :mod:`autoprune.measure`)."""

    name = "eager"
    capabilities = Capabilities(devices=("cpu", "cuda"), dtypes=tuple(DTYPES), int8=False, module_times=True)

    def forward(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> Forward:
        dtype = DTYPES[profile.dtype]
        timed = copy.deepcopy(model).to(device=profile.device, dtype=dtype).eval()
        bound = inputs.to(profile.device, dtype)
        return lambda: bound.run(timed)

    def module_times(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> ModuleTimes:
        dtype = DTYPES[profile.dtype]
        timed = copy.deepcopy(model).to(device=profile.device, dtype=dtype).eval()
        bound = inputs.to(profile.device, dtype)
        tick = clock(profile)
        names = {module: name for name, module in timed.named_modules()}
        started: dict[str, list[float]] = {}
        inclusive: dict[str, float] = {}

        def before(module: nn.Module, args: Any) -> None:
            started.setdefault(names[module], []).append(tick())

        def after(module: nn.Module, args: Any, output: Any) -> None:
            name = names[module]
            inclusive[name] = inclusive.get(name, 0.0) + tick() - started[name].pop()

        forwards: list[dict[str, float]] = []

        def run() -> float:
            inclusive.clear()
            bound.run(timed)
            forwards.append(dict(inclusive))
            return inclusive[""]

        handles = [h for module in names for h in (module.register_forward_pre_hook(before),
                                                    module.register_forward_hook(after))]
        previous = torch.get_num_threads()
        torch.set_num_threads(profile.threads)
        try:
            with torch.inference_mode():
                seconds = repeated(profile, run)
        finally:
            torch.set_num_threads(previous)
            for handle in handles:
                handle.remove()
        timed_forwards = forwards[len(forwards) - len(seconds):]  # the warm-up forwards left out
        indices, median = steady(seconds)
        kept = [timed_forwards[i] for i in indices]
        children = {name: [names[c] for c in module.children()] for module, name in names.items()}
        own = {name: max(0.0, sum(f.get(name, 0.0) - sum(f.get(k, 0.0) for k in kids) for f in kept))
               for name, kids in children.items()}  # a child timed slower than its parent by clock jitter: 0
        return ModuleTimes(own=own, forward_ms=median * 1000.0,
                           how=f"forward hooks on every module, eager PyTorch on {profile.device} ({profile.dtype}, "
                               f"{profile.threads} thread(s), batch {profile.batch_size})")


register_runtime(EagerRuntime(), overwrite=True)
