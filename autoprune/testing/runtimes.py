"""The contract every latency runtime keeps (see :mod:`autoprune.runtimes`): its timed forward computes the
module's outputs, and the module is left as it was (mode, dtype, weights).

Example:
    >>> check_runtime("eager")
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from autoprune.measure import HardwareProfile
from autoprune.modelio import Inputs, ModelIO
from autoprune.runtimes import get_runtime
from autoprune.zoo import MLP, KeywordMLP, PlainCNN, example_input

#: the architectures a runtime is checked on: plain tensors in, images, keyword (dict) inputs
MODELS: tuple[Callable[[], nn.Module], ...] = (MLP, PlainCNN, KeywordMLP)


def _first_output(out: Any) -> torch.Tensor:
    """The main output of a timed forward: ONNX Runtime's first array, or what a loss would see of the module's."""
    out = out[0] if isinstance(out, list) else ModelIO().select(out)
    return torch.as_tensor(out).float()


def check_forward_computes_the_outputs(runtime: str, make: Callable[[], nn.Module]) -> None:
    """The runtime's forward of ``make()`` returns what the module computes (within float32 tolerance)."""
    torch.manual_seed(0)
    model = make().eval()
    inputs = Inputs.of(example_input(model, batch=4))
    forward = get_runtime(runtime).forward(model, inputs, HardwareProfile(runtime=runtime, batch_size=4))
    with torch.no_grad():
        expected = ModelIO().run(model, inputs)
    try:
        torch.testing.assert_close(_first_output(forward()), expected, atol=1e-4, rtol=1e-4)
    except AssertionError as exc:
        raise AssertionError(f"runtime {runtime!r} on {type(model).__name__}: its forward does not compute the "
                             f"module's outputs: {exc}") from None


def check_module_untouched(runtime: str) -> None:
    """Building and running the runtime's forward leaves the module in its mode, dtype and weights."""
    model = PlainCNN().train()
    before = copy.deepcopy(model.state_dict())
    get_runtime(runtime).forward(model, Inputs.of(example_input(model)), HardwareProfile(runtime=runtime))()
    assert model.training, f"runtime {runtime!r} left the module in eval mode"
    assert next(model.parameters()).dtype == torch.float32, f"runtime {runtime!r} changed the module's dtype"
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert not changed, f"runtime {runtime!r} changed the module's {changed}"


def check_runtime(runtime: str) -> None:
    """The whole suite for the registered runtime named ``runtime``."""
    for make in MODELS:
        check_forward_computes_the_outputs(runtime, make)
    check_module_untouched(runtime)
