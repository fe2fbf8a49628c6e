"""A study's stored metadata as one typed object: what every worker of a study must agree on.

A study (the record every worker and every resume shares) stores, besides its trials: the metric it
maximises, the fingerprint of its search space, the hard budgets, its total of trials, where its
candidates' weights go, the :class:`~autoprune.measure.HardwareProfile` its latencies were measured
under, the dense model's latency that every candidate is timed against, and (for studies the CLI
made) how to rebuild the model and data. :class:`StudyMeta` holds them; :meth:`StudyMeta.to_attrs` and
:meth:`StudyMeta.from_attrs` convert to and from the flat attributes a storage keeps (Optuna's study
user attributes), so studies written before this class existed read the same.

Plain data: no optuna, no storage. The backends store and read it; ``search()`` checks a joining worker
against it.

Example:
    >>> meta = StudyMeta(metric="accuracy", space_fingerprint="ab12", budget_ms=5.0, n_trials=20)
    >>> StudyMeta.from_attrs(meta.to_attrs()) == meta
    True
    >>> list(meta.to_attrs())[-1]   # written last: a joining worker waits for it
    'space_fingerprint'
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

import torch
from torch import nn

from autoprune.errors import StudyError
from autoprune.measure import HardwareProfile, LatencyReference, structure

#: study attribute: the dense model's latency that candidates are timed against, and its profile
REFERENCE_ATTR = "latency_reference"
#: study attribute: the HardwareProfile (as a dict) the study's latencies were measured under
PROFILE_ATTR = "profile"
FINGERPRINT_ATTR = "space_fingerprint"

#: the profile fields that define what a latency is (the rest only change how carefully it is timed)
LATENCY_DEFINED_BY = ("device", "threads", "batch_size", "dtype", "runtime")


def metric_name(metric: Callable | str | None) -> str:
    """The name a study records for ``metric``: ``accuracy`` by default, a logged name, or a function's name."""
    if metric is None:
        return "accuracy"
    if isinstance(metric, str):
        return metric
    return getattr(metric, "__name__", "metric")


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What identifies the base model a study prunes: its class, parameter count, a hash of its architecture
    (every module's name and type, every tensor's name, shape and dtype) and a hash of its weights (every
    tensor's bytes). Two workers, or a run and its resume, must prune the same model: a study refuses to be
    joined with another one (:meth:`StudyMeta.check_joinable`)."""
    architecture = hashlib.sha256("\n".join(structure(model)).encode())
    weights = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        weights.update(name.encode())
        weights.update((data.view(torch.uint8) if data.dim() else data.reshape(1).view(torch.uint8)).numpy().tobytes())
    return {"class": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
            "architecture": architecture.hexdigest()[:16], "weights": weights.hexdigest()[:16]}


def _rungs(steps: list[int] | None) -> str:
    return f"rungs at {list(steps)} steps" if steps else "off"


@dataclass(frozen=True)
class StudyMeta:
    """Everything a study stores besides its trials.

    Attributes:
        metric: what the first objective is (higher is better).
        space_fingerprint: :meth:`autoprune.space.SearchSpace.fingerprint` of the study's space.
        budget_ms, budget_mb: the hard budgets (None: no budget).
        budget_ratio: a latency budget given as a share of the dense model's latency (``budget_ms`` is then
            resolved by each worker against the study's dense timing).
        n_trials: the study's total of trials, over every worker.
        artifacts: the directory front candidates' weights are saved in.
        profile: the :class:`HardwareProfile` (as a dict) latencies are measured under.
        reference_ms, reference_profile: the dense model's latency every candidate is timed against,
            and the profile it was timed under (None when candidates are timed alone).
        dense_metric: the dense model's metric before any fine-tune (what the dense seed, fine-tuned,
            should not fall below).
        model, data, weights, space: how the CLI rebuilds the base model and data (``pkg.mod:fn`` specs,
            a weights path, the space as named), so ``report``/``export``/``refine`` need no arguments.
        study_id: a random id given at creation: the default candidates directory carries it, and a marker
            file in the candidates directory names it, so two studies never share one (None: an older study).
        model_fingerprint: :func:`model_fingerprint` of the base model (None: an older study).
        rungs, spaces_but_rungs: the multi-fidelity rungs' steps (None: off) and the fingerprint of the space
            without its fidelity section: a worker whose space differs in its rungs alone is told so.
        budget_dense_ms: with a budget ratio and candidates timed alone, the dense model's latency the ratio was
            resolved against when the study was created (every worker and ``report`` use this one).
        extra: any other attribute a caller stored (``search(study_attrs=...)``).
    """

    metric: str = "accuracy"
    space_fingerprint: str | None = None
    budget_ms: float | None = None
    budget_mb: float | None = None
    budget_ratio: float | None = None
    n_trials: int | None = None
    artifacts: str | None = None
    profile: dict[str, Any] | None = None
    reference_ms: float | None = None
    reference_profile: dict[str, Any] | None = None
    dense_metric: float | None = None
    model: str | None = None
    data: str | None = None
    weights: str | None = None
    space: str | None = None
    study_id: str | None = None
    model_fingerprint: dict[str, Any] | None = None
    budget_dense_ms: float | None = None
    rungs: list[int] | None = None
    spaces_but_rungs: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # --- storage form -------------------------------------------------------------------------------------

    def to_attrs(self) -> dict[str, Any]:
        """The flat attributes a storage keeps; the space fingerprint comes last (joining workers wait for it)."""
        reference = None if self.reference_ms is None else {"latency_ms": self.reference_ms,
                                                              "profile": self.reference_profile}
        attrs = {**self.extra, "metric": self.metric, "budget_ms": self.budget_ms, "budget_mb": self.budget_mb,
                 **({"budget_ratio": self.budget_ratio} if self.budget_ratio is not None else {}),
                 **({"dense_metric": self.dense_metric} if self.dense_metric is not None else {}),
                 "n_trials": self.n_trials, "artifacts": self.artifacts, REFERENCE_ATTR: reference,
                 PROFILE_ATTR: self.profile}
        attrs.update({k: getattr(self, k) for k in ("model", "data", "weights", "space", "study_id",
                                                    "model_fingerprint", "budget_dense_ms", "rungs", "spaces_but_rungs")
                      if getattr(self, k) is not None})
        attrs[FINGERPRINT_ATTR] = self.space_fingerprint
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StudyMeta:
        """Read the attributes :meth:`to_attrs` wrote (or an older autoprune did: missing keys are None)."""
        attrs = dict(attrs)
        reference = attrs.pop(REFERENCE_ATTR, None) or {}
        known = {f.name for f in fields(cls)} - {"reference_ms", "reference_profile", "extra"}
        values = {k: attrs.pop(k) for k in list(attrs) if k in known}
        values["metric"] = values.get("metric") or "accuracy"
        return cls(**values, reference_ms=reference.get("latency_ms"), reference_profile=reference.get("profile"),
                   extra=attrs)

    @property
    def dense_ms(self) -> float | None:
        """The study's one timing of the dense model: the reference candidates are timed against, or, when they
        are timed alone (no interleaving), the timing a budget ratio was resolved against at creation."""
        return self.reference_ms if self.reference_ms is not None else self.budget_dense_ms

    @property
    def latency_budget_ms(self) -> float | None:
        """The latency budget in ms: as given, or the budget ratio times the study's dense timing."""
        if self.budget_ratio is not None and self.dense_ms is not None:
            return self.budget_ratio * self.dense_ms
        return self.budget_ms

    # --- what a joining worker must agree with ------------------------------------------------------------

    def check_joinable(self, wanted: StudyMeta, study_name: str) -> None:
        """Refuse a search whose space or metric differs from this (stored) study's: one front, one question."""
        if self.space_fingerprint != wanted.space_fingerprint:
            if self.spaces_but_rungs is not None and self.spaces_but_rungs == wanted.spaces_but_rungs:
                raise StudyError(f"study {study_name!r} was created with multi-fidelity "
                                 f"{_rungs(self.rungs)}, and this run has {_rungs(wanted.rungs)} (the same space "
                                 "otherwise): resume it with the fidelity it was made with (--fidelity space, or on/off "
                                 "as when it was created), or use another --study-name")
            raise StudyError(f"study {study_name!r} was created with another search space (fingerprint "
                             f"{self.space_fingerprint}, this one {wanted.space_fingerprint}); use the same space "
                             "or another --study-name")
        if self.metric != wanted.metric:
            raise StudyError(f"study {study_name!r} optimises {self.metric!r}, not {wanted.metric!r}; choose "
                             "another --study-name")
        if wanted.model_fingerprint:
            self.check_model(wanted.model_fingerprint, study_name)

    def check_model(self, fingerprint: Mapping[str, Any], study_name: str) -> None:
        """Refuse a base model whose :func:`model_fingerprint` is not the study's (a worker joining, a resume,
        ``export``/``refine`` rebuilding it), saying whether the architecture or only the weights differ;
        studies made before fingerprints were are let be."""
        mine = self.model_fingerprint
        if not mine or mine == dict(fingerprint):
            return
        if mine.get("architecture") != fingerprint.get("architecture"):
            what = (f"another model: {mine.get('class')} with {mine.get('params'):,} parameters (now "
                    f"{fingerprint.get('class')} with {fingerprint.get('params'):,}, or the same class built "
                    "differently)")
        else:
            what = "the same architecture with other weights (a retrained or another --weights file?)"
        raise StudyError(f"the base model is not the one study {study_name!r} was created with: it has {what}; use "
                         "the study's own model (its --model and --weights), or start another --study-name / --out")

    def check_profile(self, profile: HardwareProfile, study_name: str) -> None:
        """Refuse to add trials timed under another profile to this study: its front would mix two scales."""
        if not self.profile:
            return
        then = {"runtime": "eager", **self.profile}  # studies made before the runtime field timed eager PyTorch
        differ = [k for k in LATENCY_DEFINED_BY if k in then and then[k] != getattr(profile, k)]
        if differ:
            said = ", ".join(f"{k} {then[k]!r} (now {getattr(profile, k)!r})" for k in differ)
            raise StudyError(f"study {study_name!r} measured latency with {said}; resume it with the same profile, "
                             "or start a new study: latencies of two profiles are not comparable")

    # --- the latency reference ----------------------------------------------------------------------------

    def with_reference(self, reference: LatencyReference | None) -> StudyMeta:
        """This metadata with ``reference``'s latency and profile as the study's dense timing."""
        if reference is None:
            return replace(self, reference_ms=None, reference_profile=None)
        return replace(self, reference_ms=reference.latency_ms, reference_profile=asdict(reference.profile))

    def reference(self, base: nn.Module, example_inputs: tuple, profile: HardwareProfile,
                  calibrated: LatencyReference | None = None) -> LatencyReference:
        """The dense model as latency reference, scaled by this study's stored timing when it was taken under
        the same profile (every worker then reports latencies on one scale), else ``calibrated`` or a fresh
        timing."""
        if self.reference_ms is not None and self.reference_profile == asdict(profile):
            if calibrated is not None:
                return replace(calibrated, latency_ms=self.reference_ms)
            return LatencyReference.calibrate(base, example_inputs, profile, latency_ms=self.reference_ms)
        return calibrated or LatencyReference.calibrate(base, example_inputs, profile)
