"""One trial: policy -> pruned model -> measure -> (skip if over budget) -> fine-tune -> evaluate.

Imports neither optuna nor ray. A backend runs a search's trials through its :class:`TrialJob`: it asks
the job for a :class:`Proposal` (the policy sampled for a trial), runs it (:meth:`TrialJob.run`, in
this process or on a Ray worker with :func:`execute_trial`) and stores the :class:`TrialReport`.
A trial over a hard budget right after pruning is recorded as infeasible *without fine-tuning* (its
metric is evaluated on the pruned, un-tuned model, which is cheap and tells the sampler something).
In a multi-fidelity search (:mod:`autoprune.fidelity`) a screening trial recomputes BatchNorm statistics
instead of fine-tuning, and a promoted trial continues from its parent's saved weights instead of
pruning. A pruned shape the study has timed before is not timed again (the latency cache).

Example:
    >>> from autoprune.policy import Policy
    >>> from autoprune.resolved_space import FinetuneSettings
    >>> proposal = Proposal(number=3, policy=Policy(), settings=FinetuneSettings(60, 1e-3, 4))
    >>> Proposal.from_dict(proposal.to_dict()) == proposal
    True
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn
from torch.utils.data import DataLoader

from autoprune import defaults
from autoprune.batchnorm import BATCHES as BN_BATCHES, adapt_batchnorm
from autoprune.errors import NonFiniteMetricError, TrialError
from autoprune.export import load_pruned, save_pruned, weights_sha256
from autoprune.fidelity import Fidelity
from autoprune.distill import Distillation, Teacher
from autoprune.finetune import Metric, Recipe, as_lightning, evaluate, finetune, quiet
from autoprune.measure import HardwareProfile, LatencyReference, Metrics, measure, shape_key
from autoprune.modelio import Inputs, ModelIO
from autoprune.policy import Policy
from autoprune.prune import prune
from autoprune.quantize import QuantizedModel, deployed_model, int8_parity
from autoprune.result import dominates_point
from autoprune.resolved_space import FinetuneSettings, ResolvedSpace, Suggester

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
    precision: str = defaults.PRECISION
    #: what the fine-tune does to BatchNorm statistics (``train``, ``freeze`` or ``adapt``: see
    #: :mod:`autoprune.batchnorm`; ``auto`` is resolved before the trials start)
    bn: str = "train"
    #: refit the layers that read removed channels to the dense outputs after pruning (:mod:`autoprune.reconstruct`)
    reconstruct: bool = False

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
    #: the pruned model's shape signature (the latency cache's key), and whether its timing came from the cache
    shape: str | None = None
    cached: bool = False
    #: what ships when the policy quantizes: the int8 model whose latency, size and metric were measured
    deployed: QuantizedModel | None = None
    #: a fine-tuned trial's metric before and after its fine-tune (``metric`` is the better: the fine-tune is
    #: undone when it made the candidate worse); None when the trial did not fine-tune
    before_finetune: float | None = None
    after_finetune: float | None = None

    @property
    def values(self) -> list[float]:
        """The objectives: [metric (max), latency_ms (min), size_mb (min)]."""
        return [self.metric, self.metrics.latency_ms, self.metrics.size_mb]


def run_trial(ctx: TrialContext, policy: Policy, settings: FinetuneSettings, *, start: nn.Module | None = None,
              latencies: Mapping[str, Mapping[str, Any]] | None = None, screen_batches: int = 0) -> TrialOutcome:
    """Run one trial; exceptions (including :class:`~autoprune.errors.TrialError`) propagate.

    Args:
        start: the pruned model to continue from (a promoted candidate's saved weights); by default
            ``policy`` prunes a copy of the base model.
        latencies: the study's latency cache (:func:`~autoprune.measure.shape_key` -> timing fields): a
            pruned shape timed before under the same profile is not timed again.
        screen_batches: with no fine-tune steps, recompute BatchNorm statistics on this many training
            batches first (a screening rung); 0 leaves them as pruning left them.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if start is None:
        pruned = prune(ctx.base_model, policy, ctx.example_inputs, calibration_data=ctx.train_loader, loss_fn=ctx.loss,
                       calibration_batches=settings.calibration_batches, seed=ctx.seed, io=ctx.io,
                       reconstruct=ctx.reconstruct)
    else:
        pruned = start
    timings["prune"] = time.perf_counter() - started

    started = time.perf_counter()
    shape = shape_key(pruned, ctx.profile, ctx.reference, variant=policy.quantize)
    cached = (latencies or {}).get(shape)
    # A quantized candidate is timed as its int8 model; calibrated on the un-tuned weights here, which is
    # enough for timing and size (int8 kernels run alike whatever the values), and again after the fine-tune.
    deployed = _quantized(ctx, pruned, policy)
    metrics = measure(pruned, ctx.example_inputs, ctx.profile, reference=ctx.reference, latency=cached,
                      deployed=deployed)
    timings["measure"] = time.perf_counter() - started
    constraints = ctx.constraints(metrics)
    feasible = all(c <= 0 for c in constraints)

    module = as_lightning(pruned, loss=ctx.loss, recipe=Recipe.of(settings), io=ctx.io, distill=ctx.distill,
                          teacher=ctx.teacher)
    if ctx.bn == "adapt" and feasible:  # statistics of the task data, before the first evaluation
        adapt_batchnorm(pruned, ctx.train_loader, batches=BN_BATCHES, io=ctx.io)
    before = after = None  # a fine-tuned trial's metric before and after its fine-tune
    if feasible and settings.max_steps > 0:
        # A fine-tune must never leave a candidate worse than it came in (a pretrained model at a learning rate
        # too high for it can get worse): the weights as they came are kept aside, and restored when the
        # fine-tuned ones score lower.
        started = time.perf_counter()
        before = _score(ctx, module, deployed)
        if not math.isfinite(before):
            raise NonFiniteMetricError(f"the metric evaluated to {before} before the fine-tune")
        kept = {k: v.detach().clone() for k, v in pruned.state_dict().items()}
        timings["evaluate"] = time.perf_counter() - started
        started = time.perf_counter()
        finetune(module, ctx.train_loader, policy=policy, max_steps=settings.max_steps,
                 accelerator=ctx.accelerator, precision=ctx.precision, bn=ctx.bn, dropout=settings.dropout)
        if ctx.bn == "adapt":
            adapt_batchnorm(pruned, ctx.train_loader, batches=BN_BATCHES, io=ctx.io)
        timings["finetune"] = time.perf_counter() - started
        started = time.perf_counter()
        tuned_deployed = _quantized(ctx, pruned, policy)
        after = _score(ctx, module, tuned_deployed)
        if after >= before or not math.isfinite(after):  # a non-finite metric fails the trial below
            value, deployed = after, tuned_deployed
        else:
            pruned.load_state_dict(kept)
            value = before
        timings["evaluate"] += time.perf_counter() - started
    else:
        if feasible and screen_batches > 0 and ctx.bn != "freeze":
            started = time.perf_counter()
            tuned = adapt_batchnorm(pruned, ctx.train_loader, batches=screen_batches, io=ctx.io)
            timings["finetune"] = time.perf_counter() - started
            if tuned and deployed is not None:  # the int8 model was calibrated on the statistics before
                deployed = _quantized(ctx, pruned, policy)
        started = time.perf_counter()
        value = _score(ctx, module, deployed)
        timings["evaluate"] = time.perf_counter() - started
    if not math.isfinite(value):
        raise NonFiniteMetricError(f"the metric evaluated to {value}")
    return TrialOutcome(metric=value, metrics=metrics, feasible=feasible, constraints=constraints,
                        model=pruned, timings=timings, shape=shape, cached=cached is not None, deployed=deployed,
                        before_finetune=before, after_finetune=after)


def _score(ctx: TrialContext, module: nn.Module, deployed: QuantizedModel | None) -> float:
    """The trial's metric on the validation data: of the int8 model that ships when there is one (on the CPU,
    where int8 kernels run), else of the fp32 model."""
    if deployed is not None:
        return evaluate(deployed, ctx.val_loader, ctx.metric, accelerator="cpu", io=ctx.io)
    return evaluate(module, ctx.val_loader, ctx.metric, accelerator=ctx.accelerator, io=ctx.io)


def _quantized(ctx: TrialContext, model: nn.Module, policy: Policy) -> QuantizedModel | None:
    """``model`` quantized as ``policy`` says, calibrated on the first training batches; None when the policy
    does not quantize."""
    return deployed_model(model, policy, ctx.example_inputs, train_loader=ctx.train_loader, io=ctx.io,
                          threads=ctx.profile.threads)


@dataclass(frozen=True)
class TrialReport:
    """What a backend stores for a finished trial: objectives, constraints and user attributes (plain data)."""

    values: list[float]
    constraints: list[float]
    user_attrs: dict[str, Any]  # feasible, metrics, timings and, for a saved candidate, artifact_dir


def execute_trial(ctx: TrialContext, proposal: Proposal, *, front: list[Point],
                  latencies: Mapping[str, Mapping[str, Any]] | None = None) -> TrialReport:
    """Run ``proposal`` and, when it is feasible and no point of ``front`` dominates it, save its weights.

    ``front`` holds the (metric, latency_ms, size_mb) of the current Pareto front of the proposal's rung;
    candidates are saved under ``ctx.artifacts_dir/trial_NNNNN`` (policy.json, weights.pt, and model.ts at
    the last rung), so any worker can export or promote them later. ``latencies`` is the study's latency
    cache (:func:`~autoprune.measure.shape_key` -> timing fields): a pruned shape timed before is not timed
    again. A promoted proposal continues from its parent's saved weights and is not pruned again.
    """
    started = time.perf_counter()
    policy = proposal.policy
    with quiet():
        start, loaded_in = None, 0.0
        if proposal.parent_dir is not None:
            if ctx.artifacts_dir is None:
                raise TrialError("a promoted trial needs the study's artifacts directory (its parent's weights)")
            start = load_pruned(Path(ctx.artifacts_dir) / proposal.parent_dir, ctx.base_model)
            loaded_in = time.perf_counter() - started
        outcome = run_trial(ctx, policy, proposal.settings, start=start, latencies=latencies,
                            screen_batches=proposal.screen_batches)
        outcome.timings["prune"] += loaded_in  # building the candidate: pruning, or loading its parent
    attrs: dict[str, Any] = {
        "feasible": outcome.feasible,
        "metrics": {k: v for k, v in outcome.metrics.to_dict().items() if k != "profile"},
        "shape_key": outcome.shape,
        "latency_cached": outcome.cached,
        "rung": proposal.rung,
        "finetune_steps": proposal.finetune_steps,
        "bn": ctx.bn,
        "reconstruct": ctx.reconstruct,
    }
    if proposal.parent is not None:
        attrs["parent"] = proposal.parent
    if outcome.before_finetune is not None:
        attrs["finetune_metric"] = {"before": outcome.before_finetune, "after": outcome.after_finetune}
    point = tuple(outcome.values)
    if outcome.feasible and ctx.artifacts_dir is not None and not any(dominates_point(p, point) for p in front):
        export_started = time.perf_counter()
        name = f"trial_{proposal.number:05d}"
        save_pruned(outcome.model, policy, Path(ctx.artifacts_dir) / name, example_inputs=ctx.example_inputs,
                    base_model=ctx.base_model, formats=("torchscript",) if proposal.last_rung else (), io=ctx.io,
                    int8=outcome.deployed)  # the int8 file is the model measured; the fp32 weights re-quantize
        if outcome.deployed is not None:
            parity = int8_parity(outcome.model, outcome.deployed, iter(ctx.val_loader), io=ctx.io, max_batches=2)
            attrs["int8_parity"] = {"agreement": parity.agreement, "relative_error": parity.relative_error}
        attrs["artifact_dir"] = name
        attrs["weights_sha256"] = weights_sha256(Path(ctx.artifacts_dir) / name)
        outcome.timings["export"] = time.perf_counter() - export_started
    outcome.timings["trial"] = time.perf_counter() - started
    attrs["timings"] = outcome.timings
    return TrialReport(values=outcome.values, constraints=outcome.constraints, user_attrs=attrs)


@dataclass(frozen=True)
class Proposal:
    """What one trial runs: its number in the study, the policy sampled for it, and its fine-tuning.

    In a multi-fidelity search (:mod:`autoprune.fidelity`) a trial also has a ``rung``; a promoted one
    continues from its ``parent``'s weights (saved in ``parent_dir`` under the artifacts directory) for
    ``settings.max_steps`` more steps, ``finetune_steps`` in all. ``screen_batches`` > 0 recomputes
    BatchNorm statistics when the trial does not fine-tune (screening).
    """

    number: int
    policy: Policy
    settings: FinetuneSettings
    rung: int = 0
    parent: int | None = None
    parent_dir: str | None = None
    finetune_steps: int | None = None
    screen_batches: int = 0
    last_rung: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), for a backend that sends the trial to another process."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(policy=self.policy.to_dict(), settings=asdict(self.settings))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Proposal:
        data = dict(data)
        return cls(number=int(data.pop("number")), policy=Policy.from_dict(data.pop("policy")),
                   settings=FinetuneSettings(**data.pop("settings")), **data)


@dataclass(frozen=True)
class TrialJob:
    """What every trial of one search runs: a policy sampled from ``space``, run in ``context``.

    ``front(rung)`` gives the current Pareto front's points at a fidelity rung (a feasible trial that no
    point dominates saves its weights); ``latencies()`` the study's latency cache. A backend calls
    :meth:`propose` with the trial its study handed out, then :meth:`run` (or, in another process,
    :func:`execute_trial` with ``context`` and the front and cache it was sent).
    """

    space: ResolvedSpace
    context: TrialContext
    front: Callable[[int], list[Point]] = lambda rung: []
    latencies: Callable[[], Mapping[str, Mapping[str, Any]]] = dict

    @property
    def fidelity(self) -> Fidelity | None:
        """The space's rungs, or None when every trial fine-tunes fully."""
        return self.space.space.rungs

    def propose(self, trial: Suggester, *, rung: int = 0, parent: int | None = None,
                parent_dir: str | None = None) -> Proposal:
        """Sample the policy and fine-tuning of ``trial`` (an Optuna trial, or anything that suggests like one)
        at fidelity ``rung`` (a promoted trial's parameters are its parent's, fixed in the study)."""
        policy, settings = self.space.sample(trial)
        fidelity = self.fidelity
        if fidelity is None:
            return Proposal(number=trial.number, policy=policy, settings=settings, finetune_steps=settings.max_steps)
        if not 0 <= rung <= fidelity.top:
            raise TrialError(f"trial {trial.number} is at rung {rung}, the space has rungs 0..{fidelity.top}")
        return Proposal(number=trial.number, policy=policy, rung=rung, parent=parent, parent_dir=parent_dir,
                        settings=replace(settings, max_steps=fidelity.more_steps(rung)),
                        finetune_steps=fidelity.steps[rung], last_rung=rung == fidelity.top,
                        screen_batches=fidelity.screen_batches if fidelity.more_steps(rung) == 0 else 0)

    def recover(self, trial: Suggester, *, steps: int, parent: int, parent_dir: str | None, rung: int = 0,
                parent_steps: int | None = None) -> Proposal:
        """The recovery of front candidate ``parent`` (:mod:`autoprune.recovery`): its parameters (fixed in the
        study), ``steps`` more fine-tune steps from its saved weights with the learning rate decaying to zero."""
        policy, settings = self.space.sample(trial)
        return Proposal(number=trial.number, policy=policy, rung=rung, parent=parent, parent_dir=parent_dir,
                        settings=replace(settings, max_steps=steps, decay="linear"),
                        finetune_steps=(parent_steps or 0) + steps, last_rung=True)

    def run(self, proposal: Proposal) -> TrialReport:
        """Run ``proposal`` in this process against the current front of its rung."""
        return execute_trial(self.context, proposal, front=self.front(proposal.rung), latencies=self.latencies())


def dense_copy(model: nn.Module) -> nn.Module:
    """A detached copy of the base model in eval mode (the search never touches the caller's model)."""
    return copy.deepcopy(model).eval()
