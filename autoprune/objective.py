"""One trial: policy -> pruned model -> measure -> (skip if over budget) -> fine-tune -> evaluate.

Imports neither optuna nor ray. A backend runs a search's trials through its :class:`TrialJob`: it asks
the job for a :class:`Proposal` (the policy sampled for a trial), runs it (:meth:`TrialJob.run`, in
this process or on a Ray worker with :func:`execute_trial`) and stores the :class:`TrialReport`.
A trial over a hard budget right after pruning is recorded as infeasible *without fine-tuning* (its
metric is evaluated on the pruned, un-tuned model, which is cheap and tells the sampler something).

Example:
    >>> from autoprune.policy import Policy
    >>> from autoprune.sampling import FinetuneSettings, ResolvedSpace, Suggester

Point = tuple[float, float, float]  # (metric, latency_ms, size_mb) of a trial
    >>> proposal = Proposal(number=3, policy=Policy(), settings=FinetuneSettings(60, 1e-3, 4))
    >>> Proposal.from_dict(proposal.to_dict()) == proposal
    True
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn
from torch.utils.data import DataLoader

from autoprune.errors import NonFiniteMetricError
from autoprune.export import save_pruned
from autoprune.distill import Distillation, Teacher
from autoprune.finetune import Metric, Recipe, as_lightning, evaluate, finetune, quiet
from autoprune.measure import HardwareProfile, LatencyReference, Metrics, measure
from autoprune.modelio import Inputs, ModelIO
from autoprune.policy import Policy
from autoprune.prune import prune
from autoprune.result import dominates_point
from autoprune.sampling import FinetuneSettings, ResolvedSpace, Suggester

Point = tuple[float, float, float]  # (metric, latency_ms, size_mb) of a trial


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its policy; built once per search."""

    base_model: nn.Module
    example_inputs: Inputs
    train_loader: DataLoader
    val_loader: DataLoader
    profile: HardwareProfile
    loss: Callable | None = None
    metric: Metric | str | None = None
    budget_ms: float | None = None
    budget_mb: float | None = None
    accelerator: str = "cpu"
    seed: int = 0
    #: where the weights of front candidates go (shared by every worker of a study)
    artifacts_dir: Path | None = None
    #: the dense model's timing that every candidate is timed against (None: plain timings)
    reference: LatencyReference | None = None
    #: how batches reach the model and its outputs reach the loss and metric
    io: ModelIO = field(default_factory=ModelIO)
    #: distillation from the dense model while fine-tuning, if any, and the dense model's cached outputs
    distill: Distillation | None = None
    teacher: Teacher | None = None
    #: Lightning precision of the fine-tune (``bf16-mixed`` on a GPU saves time and memory)
    precision: str = "32-true"

    def constraints(self, metrics: Metrics) -> list[float]:
        """Optuna-style constraint values: <= 0 means the budget is met."""
        return [
            metrics.latency_ms - self.budget_ms if self.budget_ms is not None else -1.0,
            metrics.size_mb - self.budget_mb if self.budget_mb is not None else -1.0,
        ]


@dataclass
class TrialOutcome:
    """What one trial produced. ``model`` is the pruned (and fine-tuned, when feasible) network."""

    metric: float
    metrics: Metrics
    feasible: bool
    constraints: list[float]
    model: nn.Module
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        """The objectives: [metric (max), latency_ms (min), size_mb (min)]."""
        return [self.metric, self.metrics.latency_ms, self.metrics.size_mb]


def run_trial(ctx: TrialContext, policy: Policy, settings: FinetuneSettings) -> TrialOutcome:
    """Run one trial; exceptions (including :class:`~autoprune.errors.TrialError`) propagate."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    calibration = itertools.islice(iter(ctx.train_loader), settings.calibration_batches)
    pruned = prune(ctx.base_model, policy, ctx.example_inputs, calibration_data=calibration, loss_fn=ctx.loss,
                   calibration_batches=settings.calibration_batches, seed=ctx.seed, io=ctx.io)
    timings["prune"] = time.perf_counter() - start

    start = time.perf_counter()
    metrics = measure(pruned, ctx.example_inputs, ctx.profile, reference=ctx.reference)
    timings["measure"] = time.perf_counter() - start
    constraints = ctx.constraints(metrics)
    feasible = all(c <= 0 for c in constraints)

    module = as_lightning(pruned, loss=ctx.loss, recipe=Recipe.of(settings), io=ctx.io, distill=ctx.distill,
                          teacher=ctx.teacher)
    if feasible:
        start = time.perf_counter()
        finetune(module, ctx.train_loader, policy=policy, max_steps=settings.max_steps,
                 accelerator=ctx.accelerator, prefix="" if module is pruned else "net.", precision=ctx.precision)
        timings["finetune"] = time.perf_counter() - start
    start = time.perf_counter()
    value = evaluate(module, ctx.val_loader, ctx.metric, accelerator=ctx.accelerator, io=ctx.io)
    timings["evaluate"] = time.perf_counter() - start
    if not math.isfinite(value):
        raise NonFiniteMetricError(f"the metric evaluated to {value}")
    return TrialOutcome(metric=value, metrics=metrics, feasible=feasible, constraints=constraints,
                        model=pruned, timings=timings)


@dataclass(frozen=True)
class TrialReport:
    """What a backend stores for a finished trial: objectives, constraints and user attributes (plain data)."""

    values: list[float]
    constraints: list[float]
    user_attrs: dict[str, Any]  # feasible, metrics, timings and, for a saved candidate, artifact_dir


def execute_trial(ctx: TrialContext, policy: Policy, settings: FinetuneSettings, *, number: int,
                  front: list[Point]) -> TrialReport:
    """Run one trial and, when it is feasible and no point of ``front`` dominates it, save its weights.

    ``front`` holds the (metric, latency_ms, size_mb) of the current Pareto front; candidates are saved
    under ``ctx.artifacts_dir/trial_NNNNN`` (policy.json, weights.pt, model.ts), so any worker can
    export them later.
    """
    started = time.perf_counter()
    with quiet():
        outcome = run_trial(ctx, policy, settings)
    attrs: dict[str, Any] = {
        "feasible": outcome.feasible,
        "metrics": {k: v for k, v in outcome.metrics.to_dict().items() if k != "profile"},
    }
    point = tuple(outcome.values)
    if outcome.feasible and ctx.artifacts_dir is not None and not any(dominates_point(p, point) for p in front):
        export_started = time.perf_counter()
        name = f"trial_{number:05d}"
        save_pruned(outcome.model, policy, Path(ctx.artifacts_dir) / name, example_inputs=ctx.example_inputs,
                    base_model=ctx.base_model, formats=("torchscript",), io=ctx.io)
        attrs["artifact_dir"] = name
        outcome.timings["export"] = time.perf_counter() - export_started
    outcome.timings["trial"] = time.perf_counter() - started
    attrs["timings"] = outcome.timings
    return TrialReport(values=outcome.values, constraints=outcome.constraints, user_attrs=attrs)


@dataclass(frozen=True)
class Proposal:
    """What one trial runs: its number in the study, the policy sampled for it, and its fine-tuning."""

    number: int
    policy: Policy
    settings: FinetuneSettings

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), for a backend that sends the trial to another process."""
        return {"number": self.number, "policy": self.policy.to_dict(), "settings": asdict(self.settings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Proposal:
        return cls(number=int(data["number"]), policy=Policy.from_dict(data["policy"]),
                   settings=FinetuneSettings(**data["settings"]))


@dataclass(frozen=True)
class TrialJob:
    """What every trial of one search runs: a policy sampled from ``space``, run in ``context``; ``front``
    gives the current Pareto front's points (a feasible trial that no point dominates saves its weights).

    A backend calls :meth:`propose` with the trial its study handed out, then :meth:`run` (or, in another
    process, :func:`execute_trial` with ``context`` and the front it was sent).
    """

    space: ResolvedSpace
    context: TrialContext
    front: Callable[[], list[Point]] = list

    def propose(self, trial: Suggester) -> Proposal:
        """Sample the policy and fine-tuning of ``trial`` (an Optuna trial, or anything that suggests like one)."""
        policy, settings = self.space.sample(trial)
        return Proposal(number=trial.number, policy=policy, settings=settings)

    def run(self, proposal: Proposal) -> TrialReport:
        """Run ``proposal`` in this process against the current front."""
        return execute_trial(self.context, proposal.policy, proposal.settings, number=proposal.number,
                             front=self.front())


def dense_copy(model: nn.Module) -> nn.Module:
    """A detached copy of the base model in eval mode (the search never touches the caller's model)."""
    return copy.deepcopy(model).eval()
