"""measure(): counts, sizes, latency statistics and profile validation."""

from __future__ import annotations

import sys

import pytest
import torch

from autoprune import Policy, prune
from autoprune.errors import ProfileError
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.zoo import MLP, PlainCNN, example_input
from tests.conftest import fast_profile


def test_counts_match_the_model():
    """params counts every parameter; an MLP's MACs (one sample) are its weights plus one per bias add."""
    model = MLP()
    metrics = measure(model, example_input(model), fast_profile())
    weights = sum(m.weight.numel() + m.bias.numel() for m in (model.fc1, model.fc2, model.head))
    assert metrics.params == sum(p.numel() for p in model.parameters())
    assert metrics.macs == weights
    assert metrics.nonzero_params <= metrics.params


def test_unstructured_pruning_lowers_sparse_size_not_dense_size():
    """Masks shrink the bitmask-encoded size but not the dense checkpoint (honest reporting)."""
    model = PlainCNN()
    x = example_input(model)
    pruned = prune(model, Policy.uniform(["conv2", "fc"], sparsity=0.9, method="l1_unstructured"), x)
    dense, sparse = measure(model, x, fast_profile()), measure(pruned, x, fast_profile())
    assert sparse.size_mb_sparse < 0.5 * dense.size_mb_sparse
    assert sparse.size_mb == pytest.approx(dense.size_mb, rel=0.01)
    assert sparse.nonzero_params < dense.nonzero_params and sparse.params == dense.params


def test_bfloat16_halves_the_dense_size():
    """size_mb is measured at the profile's dtype."""
    model = PlainCNN()
    x = example_input(model)
    fp32 = measure(model, x, fast_profile())
    bf16 = measure(model, x, fast_profile(dtype="bfloat16"))
    assert bf16.size_mb < 0.6 * fp32.size_mb


def test_latency_statistics_are_consistent():
    """Median <= p90, both positive, CV non-negative; the profile used is reported."""
    model = MLP()
    metrics = measure(model, example_input(model), fast_profile(batch_size=8))
    assert 0 < metrics.latency_ms <= metrics.latency_p90_ms
    assert metrics.latency_cv >= 0
    assert metrics.profile["batch_size"] == 8


def test_measuring_leaves_the_model_and_threads_alone():
    """measure() copies the model before casting it and restores the thread count."""
    model = MLP()
    threads = torch.get_num_threads()
    measure(model, example_input(model), fast_profile(dtype="bfloat16", threads=2))
    assert next(model.parameters()).dtype == torch.float32
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": "int3"}, "dtype"),
    ({"device": "tpu"}, "device"),
    ({"repeats": 0}, "repeats"),
    ({"threads": 0}, "threads"),
    ({"interleave": "yes"}, "interleave"),
    ({"runtime": "tvm"}, "runtime"),
    ({"runtime": "onnxruntime", "dtype": "bfloat16"}, "float32"),
])
def test_bad_profiles_are_rejected(kwargs, match):
    """An impossible profile raises ProfileError naming the field."""
    with pytest.raises(ProfileError, match=match):
        HardwareProfile(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is absent")
def test_cuda_profile_without_cuda_is_a_clear_error():
    """Asking for CUDA timing on a machine without CUDA says so instead of crashing."""
    with pytest.raises(ProfileError, match="CUDA is not available"):
        measure(MLP(), torch.randn(1, 16), HardwareProfile(device="cuda"))


def test_interleaved_latency_is_the_reference_latency_times_the_ratio():
    """Timed against a reference, a model's latency is the reference's figure times their ratio: the same
    model against itself (given a reference latency of 1000 ms) comes out near 1000 ms, not ~0.01 ms."""
    model = MLP()
    x = example_input(model)
    ref = LatencyReference.calibrate(model, x, fast_profile(), latency_ms=1000.0)
    metrics = measure(model, x, fast_profile(), reference=ref)
    assert metrics.latency_reference_ms == 1000.0
    assert 400.0 < metrics.latency_ms < 2500.0
    assert measure(model, x, fast_profile()).latency_reference_ms is None


def test_a_bigger_model_is_slower_than_its_reference():
    """The ratio is measured: a model with ~1000x the MACs of the reference times well above it."""
    small, big = MLP(hidden=8), MLP(hidden=1024)
    x = example_input(small)
    ref = LatencyReference.calibrate(small, x, fast_profile(batch_size=64))
    assert ref.latency_ms > 0
    assert measure(big, x, fast_profile(batch_size=64), reference=ref).latency_ms > 2 * ref.latency_ms


def test_a_reference_of_another_profile_is_refused():
    """Timing against a reference calibrated under another profile would mix two scales: refused."""
    model = MLP()
    ref = LatencyReference.calibrate(model, example_input(model), fast_profile(batch_size=4), latency_ms=1.0)
    with pytest.raises(ProfileError, match="another HardwareProfile"):
        measure(model, example_input(model), fast_profile(batch_size=8), reference=ref)


class _CountingMLP(MLP):
    """An MLP that counts how often its PyTorch forward runs."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().forward(x)


def test_onnxruntime_times_the_exported_model_not_the_module():
    """Under runtime="onnxruntime" the timed forwards run in an ONNX Runtime session: the PyTorch module's
    forward runs only while it is exported, however many forwards are timed (eager runs it every time)."""
    model = _CountingMLP()
    x = example_input(model)
    eager = measure(model, x, fast_profile(repeats=30))
    eager_calls, _CountingMLP.calls = _CountingMLP.calls, 0
    onnx = measure(model, x, fast_profile(repeats=30, runtime="onnxruntime"))
    assert eager.latency_ms > 0 and onnx.latency_ms > 0
    assert onnx.profile["runtime"] == "onnxruntime"
    assert eager_calls >= 30 and _CountingMLP.calls < 5, (eager_calls, _CountingMLP.calls)


def test_onnxruntime_reference_and_candidate_share_the_runtime():
    """A reference calibrated under onnxruntime times candidates there too: a model ~1000x bigger in MACs
    is slower than the reference in ONNX Runtime as well."""
    small, big = MLP(hidden=8), MLP(hidden=1024)
    x = example_input(small)
    profile = fast_profile(batch_size=64, runtime="onnxruntime")
    ref = LatencyReference.calibrate(small, x, profile)
    assert measure(big, x, profile, reference=ref).latency_ms > 2 * ref.latency_ms


def test_onnxruntime_without_onnx_installed_says_what_to_install(monkeypatch):
    """Asking for ONNX Runtime timing where onnx is not installed names the extra to install."""
    monkeypatch.setattr(sys.modules["autoprune.runtimes.onnxruntime"], "onnx_available", lambda: False)
    with pytest.raises(ProfileError, match=r"autoprune\[onnx\]"):
        measure(MLP(), torch.randn(1, 16), HardwareProfile(runtime="onnxruntime"))


class _Unexportable(torch.nn.Module):
    """Eigenvalues have no ONNX operator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x @ x.T).real


def test_a_model_onnx_cannot_export_is_a_profile_error_naming_the_way_out():
    """A model the ONNX exporter rejects fails timing with a ProfileError that names the eager runtime."""
    with pytest.raises(ProfileError, match="eager"):
        measure(_Unexportable(), torch.ones(4, 4), fast_profile(batch_size=4, runtime="onnxruntime"))
