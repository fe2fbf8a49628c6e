"""The runtime registry: a runtime of your own, registered, is named in a profile and times models."""

from __future__ import annotations

import copy

import pytest

from autoprune.errors import AutopruneInputError, ProfileError, RuntimeNotFoundError
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.runtimes import Runtime, available_runtimes, register_runtime
from autoprune.runtimes.base import REGISTRY, Capabilities
from autoprune.zoo import MLP, example_input
from tests.conftest import fast_profile


class CountingRuntime(Runtime):
    """Eager PyTorch on the CPU only, counting the forwards it runs."""

    name = "counting-test"

    def __init__(self) -> None:
        self.forwards = 0

    def check(self, profile):
        if profile.device != "cpu":
            raise ProfileError("the counting-test runtime times on the CPU only")

    def forward(self, model, inputs, profile):
        timed = copy.deepcopy(model).eval()

        def run():
            self.forwards += 1
            return inputs.run(timed)

        return run


@pytest.fixture()
def counting(monkeypatch):
    runtime = CountingRuntime()
    monkeypatch.setitem(REGISTRY.entries, runtime.name, runtime)
    return runtime


def test_a_registered_runtime_times_a_model(counting):
    """measure() under a profile naming the runtime runs that runtime's forwards, and says so."""
    model = MLP()
    metrics = measure(model, example_input(model), fast_profile(runtime="counting-test"))
    assert counting.forwards >= 3 and metrics.latency_ms > 0
    assert metrics.profile["runtime"] == "counting-test"
    assert "counting-test" in available_runtimes()


def test_candidates_and_their_reference_run_in_the_same_runtime(counting):
    model = MLP()
    profile = fast_profile(runtime="counting-test")
    reference = LatencyReference.calibrate(model, example_input(model), profile, latency_ms=1.0)
    calibrated = counting.forwards
    measure(MLP(hidden=64), example_input(model), profile, reference=reference)
    assert counting.forwards > calibrated, "the interleaved reference samples ran in the runtime too"


def test_a_runtime_refuses_profiles_it_cannot_honour(counting):
    with pytest.raises(ProfileError, match="CPU only"):
        HardwareProfile(runtime="counting-test", device="cuda")


def test_an_unknown_runtime_is_named_with_the_known_ones():
    with pytest.raises(RuntimeNotFoundError, match=r"one of \['eager', 'onnxruntime'\], got 'tvm'"):
        HardwareProfile(runtime="tvm")


def test_only_runtime_objects_register():
    with pytest.raises(AutopruneInputError, match="instance of Runtime"):
        register_runtime("eager")


# --- issue 30: runtimes declare what they can do; nothing outside them decides by name ---------------------

class DeclaredRuntime(CountingRuntime):
    """The counting runtime with declared capabilities and the default check."""

    name = "declared-test"
    capabilities = Capabilities(devices=("cpu",), dtypes=("float32", "bfloat16"), int8=True)
    check = Runtime.check


@pytest.fixture()
def declared(monkeypatch):
    runtime = DeclaredRuntime()
    monkeypatch.setitem(REGISTRY.entries, runtime.name, runtime)
    return runtime


def test_the_default_check_refuses_what_the_capabilities_leave_out(declared):
    HardwareProfile(runtime="declared-test", dtype="bfloat16")
    with pytest.raises(ProfileError, match=r"declared-test runtime times on cpu in float32/bfloat16.*'float16'"):
        HardwareProfile(runtime="declared-test", dtype="float16")
    with pytest.raises(ProfileError, match="device 'cuda:1'"):
        HardwareProfile(runtime="declared-test", device="cuda:1")


def test_a_space_that_quantizes_runs_on_any_runtime_that_declares_int8(declared):
    """int8 is gated on the capability, not on the name 'onnxruntime'; the refusal names the able runtimes."""
    from autoprune.api import check_quantization
    from autoprune.space import load_space

    space = load_space("compress")
    check_quantization(space, HardwareProfile(runtime="declared-test"), metric=None)
    with pytest.raises(AutopruneInputError, match="use --runtime declared-test or onnxruntime"):
        check_quantization(space, HardwareProfile(runtime="eager"), metric=None)


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_the_built_in_runtimes_declare_their_capabilities(runtime):
    from autoprune.runtimes import get_runtime

    can = get_runtime(runtime).capabilities
    assert can.module_times and can.int8 == (runtime == "onnxruntime")
    assert ("cuda" in can.devices) == (runtime == "eager")
