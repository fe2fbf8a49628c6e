"""``eager``: the PyTorch module as trained, on the profile's device and dtype (the default runtime)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from torch import nn

from autoprune.measure import DTYPES
from autoprune.runtimes.base import Forward, Runtime, register_runtime

if TYPE_CHECKING:
    from autoprune.measure import HardwareProfile
    from autoprune.modelio import Inputs


class EagerRuntime(Runtime):
    """Times a copy of the module, cast to the profile's dtype and moved to its device (CUDA timings are
    synchronised around each sample by :mod:`autoprune.measure`)."""

    name = "eager"

    def forward(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> Forward:
        dtype = DTYPES[profile.dtype]
        timed = copy.deepcopy(model).to(device=profile.device, dtype=dtype).eval()
        bound = inputs.to(profile.device, dtype)
        return lambda: bound.run(timed)


register_runtime(EagerRuntime(), overwrite=True)
