"""Stored Optuna trials read as autoprune's: their attributes, whether they count, their plain records.

What a trial's user attributes mean is written here once: the finished trial's report (one attribute),
why it failed or was dropped, whether it is a recovery, and which promotions hold their place. The
:class:`~autoprune.backends.book.StudyBook` writes them; this module reads them back.

Example:
    >>> import optuna
    >>> study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    >>> trial = study.ask()
    >>> trial.set_user_attr(FAILURE_ATTR, "ValueError: no channels left")
    >>> record = to_record(study.tell(trial, state=optuna.trial.TrialState.FAIL))
    >>> record.state, record.failure_reason, counts(study.trials[0])
    ('failed', 'ValueError: no channels left', True)
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.measure import TIMING_FIELDS
from autoprune.result import NO_HEARTBEAT, TrialRecord, counts_toward_total

REPORT_ATTR = "report"  # a finished trial's user attributes, written at once
FAILURE_ATTR = "failure_reason"  # why a trial failed or was dropped (autoprune.result's reasons, or the error)
RECOVERY_ATTR = "recovery"  # a queued recovery of a front candidate: its more fine-tune steps


def attrs_of(trial: FrozenTrial | optuna.Trial) -> dict[str, Any]:
    """A trial's user attributes, the finished trial's report unpacked (:meth:`StudyBook.store_report` stores it as
    one attribute, one storage write; studies written before keep them one by one, read the same)."""
    attrs = dict(trial.user_attrs)
    attrs.update(attrs.pop(REPORT_ATTR, None) or {})
    return attrs


def counts(trial: FrozenTrial) -> bool:
    """Whether a stored trial counts towards the study's total: the rule of
    :func:`~autoprune.result.counts_toward_total`, on the stored trial."""
    return counts_toward_total(STATES[trial.state], failure_of(trial), trial.user_attrs.get(RECOVERY_ATTR))


def failure_of(trial: FrozenTrial) -> str | None:
    """A stored trial's failure reason; a FAIL without one was failed by Optuna's heartbeat (its worker died)."""
    stored = trial.user_attrs.get(FAILURE_ATTR)
    return NO_HEARTBEAT if stored is None and trial.state == TrialState.FAIL else stored


def holds_promotion(trial: FrozenTrial) -> bool:
    """A promoted (or recovery) trial that is queued, running or finished by its own outcome holds its place;
    one interrupted or lost with a dead worker does not (its retry, or a new one, runs instead)."""
    if trial.user_attrs.get("parent") is None:
        return False
    if trial.state in (TrialState.WAITING, TrialState.RUNNING):
        return True
    return counts_toward_total(STATES[trial.state], failure_of(trial), recovery=None)


#: a stored trial's state as a record names it (a PRUNED trial was dropped unrun: failed, and never counted)
STATES = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.RUNNING: "running",
           TrialState.WAITING: "waiting", TrialState.PRUNED: "failed"}


def to_record(trial: FrozenTrial) -> TrialRecord:
    """The plain record of a stored trial."""
    attrs = attrs_of(trial)
    metrics = attrs.get("metrics", {})
    state = STATES[trial.state]
    values = trial.values if trial.state == TrialState.COMPLETE else None
    reason = failure_of(trial)
    return TrialRecord(
        number=trial.number, state=state, feasible=bool(attrs.get("feasible", False)) and state == "complete",
        metric=values[0] if values else None, latency_ms=values[1] if values else None,
        size_mb=values[2] if values else None, size_mb_sparse=metrics.get("size_mb_sparse"),
        params=metrics.get("params"), macs=metrics.get("macs"), latency_cv=metrics.get("latency_cv"),
        policy=attrs.get("policy"), failure_reason=reason,
        timings=dict(attrs.get("timings", {})), artifact_dir=attrs.get("artifact_dir"), lr=trial.params.get("lr"),
        rung=int(attrs.get("rung", 0)), parent=attrs.get("parent"), finetune_steps=attrs.get("finetune_steps"),
        latency_cached=bool(attrs.get("latency_cached", False)), weights_sha256=attrs.get("weights_sha256"),
        metric_before_finetune=attrs.get("finetune_metric", {}).get("before"),
        metric_after_finetune=attrs.get("finetune_metric", {}).get("after"),
        recovery_steps=attrs.get(RECOVERY_ATTR),
    )


def latency_cache(complete: list[FrozenTrial]) -> dict[str, dict[str, Any]]:
    """Shape key -> the timing of the first of ``complete`` trials that timed that shape itself (a trial that
    reused a cached timing is no source)."""
    cache: dict[str, dict[str, Any]] = {}
    for t in complete:
        attrs = attrs_of(t)
        key, metrics = attrs.get("shape_key"), attrs.get("metrics", {})
        if key and not attrs.get("latency_cached") and metrics.get("latency_ms") is not None:
            cache.setdefault(key, {k: metrics.get(k) for k in TIMING_FIELDS})
    return cache
