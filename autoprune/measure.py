"""``measure()``: what a (pruned) model costs, measured honestly, under a fixed hardware profile.

Size figures:

* ``size_mb``: bytes of ``torch.save(state_dict)`` with floating tensors cast to the profile's dtype,
  in MB (10**6 bytes): what a dense checkpoint really occupies, serialisation overhead included.
* ``size_mb_sparse``: bytes if zeros were stored compactly with the **bitmask** encoding: one bit per
  element of each floating tensor plus the nonzero values at the dtype's width; other tensors dense.
  Unstructured pruning lowers this figure but *not* ``size_mb`` nor the latency of a dense runtime;
  structured pruning lowers all of them.

Latency: the model runs ``warmup`` timed-sample's worth of forwards first; then ``repeats`` samples are
timed, each running enough forwards to last at least ``min_sample_ms`` (calibrated during warm-up), so
tiny models are not timed at the clock's resolution. ``latency_ms`` is the median per-forward time of
the samples, ``latency_p90_ms`` their 90th percentile, and ``latency_cv`` their *robust* coefficient of
variation, ``1.4826 * MAD / median`` (equal to std/mean for normal noise, but not blown up by the odd
sample a shared machine delays). On a shared machine timing noise comes in bursts (a quiet minute
gives a CV of a few %, a noisy one tens of %), so when a timing's CV exceeds ``max_cv`` (5%) it is
repeated, up to ``attempts`` times in all, and the steadiest attempt is kept; its CV is reported as
measured, never clipped. benchmarks/measure_stability.py prints what this gives for every model of
:mod:`autoprune.zoo`.

Drift between timings: a shared machine's speed also wanders over seconds, so ``measure()`` calls of
the same model a few seconds apart can disagree by far more than their CVs. Given a
:class:`LatencyReference` (``search()`` makes one of the dense model), each timed sample of the model is
taken right next to a sample of the reference, and ``latency_ms`` is the reference's latency (timed
once, carefully) times the median ratio of the pairs: the drift hits both halves of a pair and cancels.
benchmarks/measure_drift.py measures how much this narrows the spread, and how it depends on the number
of timed samples (the default, 7, and the figures are in docs/benchmarks.md).

Runtime: latency is only worth optimising where the pruned model will run. The profile names a
runtime of :mod:`autoprune.runtimes` (``eager``, the default, times the PyTorch module as it is;
``onnxruntime`` the exported ONNX model in an ONNX Runtime CPU session, as ``model.onnx`` runs when
deployed); this module owns the timing protocol, the runtime only the forward that is timed. The two
rank candidates differently: ONNX Runtime folds BatchNorm, fuses activations and rewards aligned
channel counts far more than eager PyTorch does (figures in docs/benchmarks.md).

Example:
    >>> import torch, torch.nn as nn
    >>> from autoprune.measure import measure, HardwareProfile
    >>> m = measure(nn.Linear(16, 4), torch.randn(1, 16), HardwareProfile(repeats=5, min_sample_ms=1))
    >>> m.params
    68
    >>> ref = LatencyReference.calibrate(nn.Linear(16, 4), torch.randn(1, 16), HardwareProfile(repeats=5, min_sample_ms=1))
    >>> measure(nn.Linear(16, 2), torch.randn(1, 16), HardwareProfile(repeats=5, min_sample_ms=1),
    ...         reference=ref).latency_reference_ms == ref.latency_ms
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from autoprune import defaults
from autoprune.errors import ProfileError
from autoprune.layers import run_model
from autoprune.modelio import Inputs
from autoprune.methods.structured import count_macs_and_params
from autoprune.runtimes import Forward, get_runtime
from autoprune.runtimes.base import DTYPES, clock, device_kind


@dataclass(frozen=True)
class HardwareProfile:
    """What "latency" means: where, how many threads, which batch size and dtype, how long to time.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``); CUDA timings synchronise around each sample.
        threads: intra-op CPU threads while timing (1 is the most repeatable on a shared machine).
        batch_size: inputs per forward; the first sample of the example inputs is repeated to this size. The default, 64,
            times compute: at batch 1 a small model's latency is mostly per-operator overhead that no
            pruning removes (the digits CNN: 0.37 ms dense, 0.26 ms with 70% of channels removed).
        dtype: ``float32``, ``bfloat16`` or ``float16`` (weights and floating inputs are cast).
        warmup: untimed samples before timing.
        repeats: timed samples.
        min_sample_ms: a sample runs enough forwards to last at least this long.
        max_cv: a timing whose robust CV exceeds this is repeated (see the module docstring).
        attempts: timings at most, the steadiest one kept.
        interleave: ``search()`` times every candidate against the dense model, sample by sample (see
            the module docstring); ``False`` times each candidate alone, in half the time, which is
            enough on a quiet, dedicated machine.
        runtime: the name of a :mod:`autoprune.runtimes` runtime that runs the timed forwards:
            ``"eager"`` (PyTorch, as trained) or ``"onnxruntime"`` (the model exported to ONNX and run by
            ONNX Runtime on the CPU, as ``model.onnx`` is deployed; needs ``autoprune[onnx]``, float32),
            or one you registered.
    """

    device: str = defaults.DEVICE
    threads: int = defaults.THREADS
    batch_size: int = defaults.BATCH_SIZE
    dtype: str = defaults.DTYPE
    warmup: int = 10
    repeats: int = 7
    min_sample_ms: float = 10.0
    max_cv: float = 0.05
    attempts: int = 3
    interleave: bool = True
    runtime: str = defaults.RUNTIME

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ProfileError(f"profile dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if device_kind(self.device) not in ("cpu", "cuda") or self.device.count(":") > 1:
            raise ProfileError(f"profile device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        for name in ("threads", "batch_size", "repeats", "attempts"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ProfileError(f"profile {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ProfileError(f"profile warmup must be an integer >= 0, got {self.warmup!r}")
        if not isinstance(self.interleave, bool):
            raise ProfileError(f"profile interleave must be true or false, got {self.interleave!r}")
        get_runtime(self.runtime).check(self)
        if not (self.min_sample_ms >= 0):
            raise ProfileError(f"profile min_sample_ms must be >= 0, got {self.min_sample_ms!r}")

    def fingerprint(self) -> str:
        """The profile's settings as one canonical string (two profiles time alike only when theirs are equal)."""
        return json.dumps(asdict(self), sort_keys=True)

    def check_available(self) -> None:
        if device_kind(self.device) == "cuda" and not torch.cuda.is_available():
            raise ProfileError(f"profile device {self.device!r} asked for, but CUDA is not available here; use 'cpu'")
        if self.dtype == "float16" and self.device == "cpu":
            raise ProfileError("float16 timing is only meaningful on CUDA; use float32 or bfloat16 on the CPU")
        get_runtime(self.runtime).check_available(self)


@dataclass(frozen=True)
class Metrics:
    """Everything :func:`measure` reports about one model."""

    params: int
    nonzero_params: int
    macs: int
    size_mb: float
    size_mb_sparse: float
    latency_ms: float
    latency_p90_ms: float
    latency_cv: float
    sparse_encoding: str = "bitmask"
    profile: dict[str, Any] = field(default_factory=dict)
    #: the reference latency the timing was scaled by (interleaved timing), None for a plain timing
    latency_reference_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_dict_bytes(model: nn.Module, dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """(dense bytes as saved, bitmask-sparse bytes) of the model's state_dict at ``dtype``."""
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    sparse = 0
    for tensor in state.values():
        if tensor.is_floating_point():
            sparse += math.ceil(tensor.numel() / 8) + int(torch.count_nonzero(tensor)) * tensor.element_size()
        else:
            sparse += tensor.numel() * tensor.element_size()
    return buffer.getbuffer().nbytes, sparse


def _sampler(profile: HardwareProfile) -> Callable[[Forward, int], float]:
    """``sample(forward, n)``: milliseconds per forward over ``n`` calls of ``forward`` (CUDA synchronised)."""
    tick = clock(profile)

    def sample(forward: Forward, n: int) -> float:
        start = tick()
        for _ in range(n):
            forward()
        return (tick() - start) * 1000.0 / n

    return sample


def _forwards_per_sample(sample: Callable, forward: Forward, profile: HardwareProfile) -> int:
    """Warm the model up and return how many forwards make a sample last ``min_sample_ms``."""
    inner = 1
    for _ in range(max(1, profile.warmup)):
        elapsed = sample(forward, inner) * inner
        if elapsed < profile.min_sample_ms:
            inner = max(inner, math.ceil(inner * profile.min_sample_ms / max(elapsed, 1e-3)))
    return inner


def time_forward(forward: Forward, profile: HardwareProfile) -> list[float]:
    """Per-forward milliseconds of each timed sample (see the module docstring)."""
    sample = _sampler(profile)
    with torch.inference_mode():
        inner = _forwards_per_sample(sample, forward, profile)
        return [sample(forward, inner) for _ in range(profile.repeats)]


def time_interleaved(forward: Forward, reference: LatencyReference, profile: HardwareProfile) -> list[float]:
    """Ratios of each timed sample of ``forward`` to the reference's sample taken right after it."""
    sample = _sampler(profile)
    with torch.inference_mode():
        inner = _forwards_per_sample(sample, forward, profile)
        ref_inner = reference.forwards_per_sample
        sample(reference.forward, ref_inner)  # its caches warm again after the model's warm-up
        ratios = []
        for _ in range(profile.repeats):
            mine = sample(forward, inner)
            ratios.append(mine / max(sample(reference.forward, ref_inner), 1e-9))
        return ratios


def robust_cv(samples: list[float]) -> float:
    """1.4826 * MAD / median: the coefficient of variation, robust to the odd delayed sample."""
    median = statistics.median(samples)
    if median <= 0:
        return 0.0
    return 1.4826 * statistics.median(abs(s - median) for s in samples) / median


@dataclass(frozen=True)
class LatencyReference:
    """A model timed in alternation with every measured model, so the machine's drift cancels.

    Build it with :meth:`calibrate`; pass it to :func:`measure` with the same profile. ``latency_ms`` is
    the reference's own latency under ``profile``; a measured model's latency is that times the median
    ratio of its samples to the reference samples beside them.
    """

    forward: Forward  # one forward of a private copy, in the profile's runtime, device and dtype
    latency_ms: float
    profile: HardwareProfile
    forwards_per_sample: int = 1  # calibrated once, so each interleaved timing warms only the measured model

    @classmethod
    def calibrate(cls, model: nn.Module, example_inputs: Any, profile: HardwareProfile | None = None, *,
                  rounds: int = 3, latency_ms: float | None = None) -> "LatencyReference":
        """Time ``model`` ``rounds`` times (the median is kept), or take a ``latency_ms`` timed before
        (so that every worker of a study scales by the same figure)."""
        profile = profile or HardwareProfile()
        profile.check_available()
        run_model(model, example_inputs)
        forward = _timed_forward(model, example_inputs, profile)
        with _threads(profile.threads):
            with torch.inference_mode():
                inner = _forwards_per_sample(_sampler(profile), forward, profile)
            if latency_ms is None:
                latency_ms = statistics.median(
                    statistics.median(_steadiest(lambda: time_forward(forward, profile), profile)[1])
                    for _ in range(max(1, rounds)))
        if not latency_ms > 0:
            raise ProfileError(f"reference latency must be a positive number of ms, got {latency_ms!r}")
        return cls(forward=forward, latency_ms=float(latency_ms), profile=profile,
                   forwards_per_sample=inner)


def _timed_forward(model: nn.Module, example_inputs: Any, profile: HardwareProfile) -> Forward:
    """One forward of a private copy of ``model`` on a batch of the example inputs, in the profile's runtime."""
    inputs = Inputs.of(example_inputs).repeat_first(profile.batch_size)
    return get_runtime(profile.runtime).forward(model, inputs, profile)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _steadiest(timing: Callable[[], list[float]], profile: HardwareProfile) -> tuple[float, list[float]]:
    """(robust CV, samples) of the steadiest of up to ``profile.attempts`` timings."""
    best: tuple[float, list[float]] | None = None
    for _ in range(profile.attempts):
        samples = timing()
        cv = robust_cv(samples)
        if best is None or cv < best[0]:
            best = (cv, samples)
        if cv <= profile.max_cv:
            break
    return best


#: the fields of :class:`Metrics` a timing gives (what the latency cache keeps)
TIMING_FIELDS = ("latency_ms", "latency_p90_ms", "latency_cv", "latency_reference_ms")


def shape_key(model: nn.Module, profile: HardwareProfile, reference: LatencyReference | None = None, *,
              variant: str = "none") -> str:
    """A short hash of what a timing depends on: every module's type and every tensor's name, shape and dtype
    in ``model``, the profile, the reference's latency and how the model is deployed (``variant``: its
    quantization). Pruned models with equal keys run the same operators on the same shapes, so one's timing
    stands for the other's (the latency cache of a search)."""
    parts = [profile.fingerprint(), repr(None if reference is None else reference.latency_ms), variant]
    return hashlib.sha256("\n".join(parts + structure(model)).encode()).hexdigest()[:20]


def structure(model: nn.Module) -> list[str]:
    """A model's architecture as lines: every module's name and type, every tensor's name, shape and dtype
    (what :func:`shape_key` and :func:`autoprune.study.model_fingerprint` hash)."""
    return ([f"{name}:{type(module).__name__}" for name, module in model.named_modules()]
            + [f"{name}:{tuple(t.shape)}:{t.dtype}" for name, t in model.state_dict().items()])


def measure(model: nn.Module, example_inputs: Any, profile: HardwareProfile | None = None, *,
            reference: LatencyReference | None = None, latency: Mapping[str, Any] | None = None,
            deployed: nn.Module | None = None) -> Metrics:
    """Measure parameters, MACs (one sample; counted by Torch-Pruning, a bias add is one MAC), checkpoint
    sizes and latency of ``model``; with a ``reference``, the latency is timed against it (see the
    module docstring). ``latency`` (the :data:`TIMING_FIELDS` of an earlier timing of a model with the same
    :func:`shape_key`) is taken instead of timing again. ``deployed`` is what runs when ``model`` is
    deployed (its int8 :class:`~autoprune.quantize.QuantizedModel`): it is timed instead, and its
    serialised size is ``size_mb`` (parameters and MACs stay ``model``'s).

    The model is copied before it is moved or cast: the caller's model is untouched.
    """
    profile = profile or HardwareProfile()
    profile.check_available()
    if reference is not None and reference.profile != profile:
        raise ProfileError("the latency reference was calibrated under another HardwareProfile; "
                           "calibrate it with the profile passed to measure()")
    run_model(model, example_inputs)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    macs, _ = count_macs_and_params(model, Inputs.of(example_inputs).repeat_first(1))
    dense_bytes, sparse_bytes = state_dict_bytes(model, DTYPES[profile.dtype])
    if deployed is not None:
        dense_bytes = sparse_bytes = deployed.size_bytes
        model = deployed
    if latency is not None:
        return Metrics(params=params, nonzero_params=nonzero, macs=macs, size_mb=dense_bytes / 1e6,
                       size_mb_sparse=sparse_bytes / 1e6, profile=asdict(profile),
                       **{k: latency.get(k) for k in TIMING_FIELDS})

    forward = _timed_forward(model, example_inputs, profile)
    with _threads(profile.threads):
        if reference is None:
            cv, samples = _steadiest(lambda: time_forward(forward, profile), profile)
        else:
            cv, ratios = _steadiest(lambda: time_interleaved(forward, reference, profile), profile)
            samples = [r * reference.latency_ms for r in ratios]
    median = statistics.median(samples)
    p90 = sorted(samples)[min(len(samples) - 1, math.ceil(0.9 * len(samples)) - 1)]
    return Metrics(
        params=params,
        nonzero_params=nonzero,
        macs=macs,
        size_mb=dense_bytes / 1e6,
        size_mb_sparse=sparse_bytes / 1e6,
        latency_ms=median,
        latency_p90_ms=p90,
        latency_cv=cv,
        profile=asdict(profile),
        latency_reference_ms=reference.latency_ms if reference is not None else None,
    )
