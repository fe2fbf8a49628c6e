"""The runtime registry: a runtime of your own, registered, is named in a profile and times models."""

from __future__ import annotations

import copy

import pytest

from autoprune.errors import AutopruneInputError, ProfileError, RuntimeNotFoundError
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.runtimes import Runtime, available_runtimes, register_runtime
from autoprune.runtimes.base import REGISTRY
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
