"""The contract every latency runtime keeps: its forward computes the module's outputs, and the module is
left as it was. Run for every runtime in the registry (built-in and any a test registers)."""

from __future__ import annotations

import copy

import pytest
import torch

from autoprune.measure import HardwareProfile
from autoprune.modelio import Inputs, ModelIO
from autoprune.runtimes import available_runtimes, get_runtime
from autoprune.zoo import MLP, KeywordMLP, PlainCNN, example_input


def _first_output(out) -> torch.Tensor:
    """The main output of a timed forward: ONNX Runtime's first array, or what a loss would see of the module's."""
    out = out[0] if isinstance(out, list) else ModelIO().select(out)
    return torch.as_tensor(out).float()


@pytest.mark.parametrize("runtime", available_runtimes())
@pytest.mark.parametrize("make", [MLP, PlainCNN, KeywordMLP])
def test_the_forward_computes_the_modules_outputs(runtime, make):
    torch.manual_seed(0)
    model = make().eval()
    inputs = Inputs.of(example_input(model, batch=4))
    forward = get_runtime(runtime).forward(model, inputs, HardwareProfile(runtime=runtime, batch_size=4))
    with torch.no_grad():
        expected = ModelIO().run(model, inputs)
    torch.testing.assert_close(_first_output(forward()), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("runtime", available_runtimes())
def test_the_module_is_left_untouched(runtime):
    model = PlainCNN().train()
    before = copy.deepcopy(model.state_dict())
    get_runtime(runtime).forward(model, Inputs.of(example_input(model)), HardwareProfile(runtime=runtime))()
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
