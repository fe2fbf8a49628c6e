"""The start-up probe of the trials' fine-tune: one fine-tune of the dense model, before any trial.

A pretrained model can lose quality to the very recipe that is meant to recover its pruned candidates (a
learning rate too high, BatchNorm statistics drifting on a small task set). The probe fine-tunes a copy of
the dense model once as a trial would, at the space's lowest learning rate and whatever the budgets, so
the search warns before it spends its trials (:meth:`FinetuneProbe.warning`). Its timings (seconds per
fine-tune step, seconds per evaluation) size the recovery a time budget keeps aside
(:func:`autoprune.recovery.trial_timeout`).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

from autoprune.finetune import quiet
from autoprune.measure import shape_key
from autoprune.objective import TrialContext, run_trial
from autoprune.policy import Policy
from autoprune.resolved_space import FinetuneSettings, ResolvedSpace


@dataclass(frozen=True)
class FinetuneProbe:
    """The dense model's metric before and after one trial's fine-tune at the space's lowest learning rate."""

    before: float
    after: float
    lr: float
    steps: int
    #: what one fine-tune step and one evaluation of the dense model took (upper bounds for a pruned candidate)
    seconds_per_step: float | None = None
    evaluate_seconds: float | None = None

    @property
    def harmful(self) -> bool:
        return self.after < self.before - 0.01 * abs(self.before)

    def warning(self, metric_name: str, *, bn: str = "train", distilled: bool = False,
                dropout: str = "keep") -> str:
        """What the probe found and what to change, leaving out what the search does already (``bn``: the
        BatchNorm policy the trials use; ``distilled``: whether they distil; ``dropout``: the space's)."""
        advice = [f"lower the space's finetune.lr range (its lowest, {self.lr:g}, harms already: try {self.lr / 10:g})"]
        if bn != "freeze":
            advice.append("set bn: freeze (--bn freeze) if the model has BatchNorm")
        if not distilled:
            advice.append("distil from the dense model (distill=, --distill)")
        if dropout != "off":  # train-only noise keeps a distilled model from matching the dense outputs
            advice.append("set finetune.dropout: off, if the model has dropout or drop-connect")
        return (f"the trials' fine-tune makes the unpruned model worse: {metric_name} {self.before:.4f} -> "
                f"{self.after:.4f} after {self.steps} steps at the space's lowest learning rate ({self.lr:g}), and every "
                "candidate gets this fine-tune (a trial keeps its weights when it gets worse, so its figures hide "
                f"it): {', or '.join(advice)}")


#: the most steps the start-up probe of the dense model's fine-tune runs (the harm shows early: an ImageNet
#: MobileNet lost a third of its agreement with itself in 60 steps)
PROBE_STEPS = 100


def probe_finetune(ctx: TrialContext, space: ResolvedSpace) -> FinetuneProbe | None:
    """Fine-tune a copy of the dense model once as a trial would (for at most :data:`PROBE_STEPS` steps), at the
    space's lowest learning rate and whatever the budgets (the dense seed may be over them and never
    fine-tuned), and evaluate it before and after: a pretrained model that the recipe harms is found before
    the trials, not after. None when the space does not fine-tune."""
    spec = space.space.finetune
    if spec.max_steps <= 0:
        return None
    settings = FinetuneSettings(max_steps=min(spec.max_steps, PROBE_STEPS), lr=spec.lr.low,
                                calibration_batches=spec.calibration_batches,
                                optimizer=spec.optimizer, weight_decay=spec.weight_decay,
                                warmup_steps=spec.warmup_steps, dropout=spec.dropout)
    # the dense model's timing is the reference's: the probe's figures other than its metric are not used
    known = {} if ctx.reference is None else {
        shape_key(ctx.base_model, ctx.profile, ctx.reference): {"latency_ms": ctx.reference.latency_ms,
                                                                "latency_reference_ms": ctx.reference.latency_ms}}
    with quiet():
        outcome = run_trial(replace(ctx, budget_ms=None, budget_mb=None), Policy(), settings, latencies=known)
    if outcome.before_finetune is None or outcome.after_finetune is None:
        return None
    timings = outcome.timings
    return FinetuneProbe(before=outcome.before_finetune, after=outcome.after_finetune, lr=settings.lr,
                         steps=settings.max_steps, seconds_per_step=timings.get("finetune", 0.0) / settings.max_steps,
                         evaluate_seconds=timings.get("evaluate", 0.0) / 2)  # evaluated before and after


#: the study attribute the probe's figures are stored in
PROBE_ATTR = "dense_finetune"


def study_probe(study: Any, ctx: TrialContext, space: ResolvedSpace, *, run: bool, metric_name: str) -> dict | None:
    """The probe's figures of ``study``: with ``run``, probe now, store the figures with the study and warn
    when the fine-tune harms the dense model; else those stored by the run that started the study (None)."""
    if not run:
        return study.user_attrs.get(PROBE_ATTR)
    probe = probe_finetune(ctx, space)
    if probe is None:
        return None
    figures = asdict(probe)
    study.set_user_attr(PROBE_ATTR, figures)
    if probe.harmful:
        warnings.warn(probe.warning(metric_name, bn=ctx.bn, distilled=ctx.distill is not None,
                                    dropout=space.space.finetune.dropout))
    return figures
