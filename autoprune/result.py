"""Search results as plain data: trial records, the Pareto front, and loading a front candidate's model.

No optuna, no files: the backends convert their trials into :class:`TrialRecord` objects, and
:mod:`autoprune.report` turns a result into tables, CSV, JSON and plots.
The front is computed over *feasible, complete* trials on (metric max, latency_ms min, size_mb min).

Example:
    >>> r = SearchResult(trials=[], metric_name="accuracy")
    >>> r.pareto, r.best()
    ([], None)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from autoprune.errors import CandidateError
from autoprune.policy import Policy
from autoprune.study import StudyMeta


#: failure reasons of trials that do not count towards a study's total: they run again, or never ran
INTERRUPTED = "interrupted"
NO_HEARTBEAT = "the worker stopped responding (killed, or its machine lost); the trial was queued again"
SURPLUS = "surplus"  # lost the race for the study's last trial slot; dropped before doing any work
DUPLICATE = "duplicate promotion"  # another worker queued the same promotion first; dropped unrun
UNCOUNTED = (INTERRUPTED, NO_HEARTBEAT, SURPLUS, DUPLICATE)


def counts_toward_total(state: str, failure_reason: str | None, recovery: Any = None) -> bool:
    """The one rule for what counts towards a study's ``n_trials``: a trial that completed, or failed by its own
    error; not one interrupted, lost with its worker or dropped unrun (:data:`UNCOUNTED`: those run again or
    never ran), and not a recovery (:mod:`autoprune.recovery`), which spends a budget of its own."""
    if recovery:
        return False
    return state == "complete" or (state == "failed" and failure_reason is not None
                                   and failure_reason not in UNCOUNTED)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: state is ``complete``, ``failed``, ``running`` or ``waiting``."""

    number: int
    state: str
    feasible: bool = False
    metric: float | None = None
    latency_ms: float | None = None
    size_mb: float | None = None
    size_mb_sparse: float | None = None
    params: int | None = None
    macs: int | None = None
    latency_cv: float | None = None
    policy: dict[str, Any] | None = None
    failure_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    artifact_dir: str | None = None
    #: the fine-tuning learning rate the trial sampled (None in studies made before it was recorded)
    lr: float | None = None
    #: multi-fidelity: the trial's rung (0 without), the trial it continues, and its fine-tune steps in all
    rung: int = 0
    parent: int | None = None
    finetune_steps: int | None = None
    #: whether its latency is the timing of an earlier trial with the same pruned shape (the latency cache)
    latency_cached: bool = False
    #: the SHA-256 of the saved candidate's weights file (checked when it is loaded; None before it was kept)
    weights_sha256: str | None = None
    #: the metric before and after the trial's fine-tune (None without one): ``metric`` is the better of
    #: the two, since a fine-tune that made the candidate worse is undone
    metric_before_finetune: float | None = None
    metric_after_finetune: float | None = None
    #: a recovery of front candidate ``parent`` (:mod:`autoprune.recovery`): its more fine-tune steps (None:
    #: a trial of the search itself); it does not count towards the study's total
    recovery_steps: int | None = None

    @property
    def finetune_undone(self) -> bool:
        """Whether the fine-tune made this trial's candidate worse, so its weights were kept as they came."""
        return (self.metric_after_finetune is not None and self.metric_before_finetune is not None
                and self.metric_after_finetune < self.metric_before_finetune)

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def counts(self) -> bool:
        """Whether it counts towards the study's total: complete, or failed by its own error (not interrupted,
        lost with its worker, or dropped unrun)."""
        return counts_toward_total(self.state, self.failure_reason, self.recovery_steps)

    def objectives(self) -> tuple[float, float, float]:
        return (self.metric, self.latency_ms, self.size_mb)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dominates_point(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """For (metric max, latency min, size min) points: ``a`` is no worse everywhere and better somewhere."""
    (ma, la, sa), (mb, lb, sb) = a, b
    at_least = ma >= mb and la <= lb and sa <= sb
    return at_least and (ma > mb or la < lb or sa < sb)


def dominates(a: TrialRecord, b: TrialRecord) -> bool:
    """True if ``a`` is at least as good as ``b`` on every objective and better on one."""
    return dominates_point(a.objectives(), b.objectives())


def pareto_front(records: list[TrialRecord], *, rung: int | None = None) -> list[TrialRecord]:
    """Non-dominated feasible complete records, sorted by latency.

    By default over each policy's latest result: in a multi-fidelity search, a trial that a complete trial
    continued (promoted) is left out for that one, and only trials whose weights were saved (the ones that
    can be loaded) take part; each candidate's ``rung`` and ``finetune_steps`` say how long it was
    fine-tuned. With ``rung``, over that fidelity rung's trials alone (what decides which weights to save).
    """
    pool = [r for r in records if r.complete and r.feasible]
    if rung is not None:
        pool = [r for r in pool if r.rung == rung]
    else:
        continued = {r.parent for r in records if r.parent is not None and r.complete}
        if continued:
            pool = [r for r in pool if r.number not in continued and r.artifact_dir is not None]
    front = [r for r in pool if not any(dominates(o, r) for o in pool if o is not r)]
    return sorted(front, key=lambda r: (r.latency_ms, -r.metric))


@dataclass
class SearchResult:
    """What a search returns; also rebuilt from storage by ``autoprune report``.

    Attributes:
        trials: every trial, with state, feasibility and failure reason.
        metric_name: what ``metric`` means (``accuracy`` by default).
        budget_ms, budget_mb: the hard budgets, if any.
        out_dir: the run directory its files are written to.
        model_loader: rebuilds a candidate's model (set by ``search()`` and
            :func:`autoprune.loading.attach_candidates`).
        study_name, meta: the study and its stored metadata (profile, dense reference latency, ...).
        wall_seconds: wall time of the ``search()`` call that returned it.
    """

    trials: list[TrialRecord]
    metric_name: str = "accuracy"
    budget_ms: float | None = None
    budget_mb: float | None = None
    out_dir: Path | None = None
    model_loader: Callable[[TrialRecord], nn.Module] | None = None
    study_name: str | None = None
    wall_seconds: float | None = None
    meta: StudyMeta = field(default_factory=StudyMeta)
    #: numbers of the trials run by this call (a resumed study also holds earlier ones)
    session_trials: set[int] | None = None

    def time_breakdown(self) -> dict[str, float]:
        """Seconds spent per phase over this session's trials, plus ``search overhead`` (sampler, storage,
        bookkeeping: the wall time no trial phase accounts for). Needs ``wall_seconds``."""
        phases = ("prune", "measure", "finetune", "evaluate", "export")
        mine = [r for r in self.trials if self.session_trials is None or r.number in self.session_trials]
        totals = {p: sum(r.timings.get(p, 0.0) for r in mine) for p in phases}
        if self.wall_seconds is not None:
            totals["search overhead"] = max(0.0, self.wall_seconds - sum(totals.values()))
        return totals

    @property
    def reference_latency_ms(self) -> float | None:
        """The dense model's latency that candidates were timed against (interleaved timing), if any."""
        return self.meta.reference_ms

    @property
    def pareto(self) -> list[TrialRecord]:
        return pareto_front(self.trials)

    def best(self, *, max_latency_ms: float | None = None, max_size_mb: float | None = None) -> TrialRecord | None:
        """The most accurate front candidate within the given limits (the search's budgets by default)."""
        max_latency_ms = self.budget_ms if max_latency_ms is None else max_latency_ms
        max_size_mb = self.budget_mb if max_size_mb is None else max_size_mb
        fits = [c for c in self.pareto
                if (max_latency_ms is None or c.latency_ms <= max_latency_ms)
                and (max_size_mb is None or c.size_mb <= max_size_mb)]
        return max(fits, key=lambda c: (c.metric, -c.latency_ms), default=None)

    def closest(self, n: int = 3) -> list[TrialRecord]:
        """When nothing meets the budgets: the complete trials that come nearest, by relative overshoot."""
        def overshoot(r: TrialRecord) -> float:
            over = 0.0
            if self.budget_ms:
                over += max(0.0, r.latency_ms / self.budget_ms - 1)
            if self.budget_mb:
                over += max(0.0, r.size_mb / self.budget_mb - 1)
            return over
        return sorted((r for r in self.trials if r.complete), key=lambda r: (overshoot(r), -r.metric))[:n]

    def candidates(self, numbers: Sequence[int]) -> list[TrialRecord]:
        """The Pareto candidates with these trial numbers, in that order (repeats once); a
        :class:`~autoprune.errors.CandidateError` listing the candidates when one is not on the front."""
        front = {c.number: c for c in self.pareto}
        missing = [n for n in numbers if n not in front]
        if missing:
            raise CandidateError(f"trial(s) {missing} are not Pareto candidates (only those are saved); "
                                 f"candidates: {sorted(front)}")
        return [front[n] for n in dict.fromkeys(numbers)]

    def load_model(self, candidate: TrialRecord) -> nn.Module:
        """The pruned, fine-tuned model of a Pareto candidate, rebuilt from its saved weights.

        Raises:
            CandidateError: the trial has no saved weights (only candidates that reached the front are
                saved), or the result was read without its base model.
        """
        if candidate.artifact_dir is None:
            raise CandidateError(f"trial {candidate.number} has no saved weights: only Pareto candidates are saved; "
                                 f"candidates: {[c.number for c in self.pareto]}")
        if self.model_loader is None:
            raise CandidateError("this result was read without its base model; use the result of autoprune.search(), "
                                 "autoprune.loading.load_result(..., base_model=model), or "
                                 "autoprune.export.load_pruned(dir, base_model)")
        return self.model_loader(candidate)

    def dense_drift(self, tolerance: float = 0.01, *, distilled: bool = False) -> str | None:
        """A warning when the fine-tune made the unpruned model worse: the dense seed (the trial that prunes
        nothing) scored more than ``tolerance`` (relative) below the dense model as it came, after its
        fine-tune (a trial undoes a fine-tune that made it worse, so its own metric would not show it); None
        otherwise, or when either figure is unknown. ``distilled``: the search already distils, so the advice is
        the recipe's rate and steps alone."""
        before = self.meta.dense_metric
        dense = sorted((t for t in self.trials if t.complete and t.policy is not None and self.policy(t).is_dense
                        and self.policy(t).quantize == "none"),  # an int8 dense trial measures int8, not the tune
                       key=lambda t: -(t.finetune_steps or 0))  # the longest-tuned dense trial
        if not dense:
            return None
        trial = dense[0]
        after = trial.metric_after_finetune if trial.metric_after_finetune is not None else trial.metric
        before = before if before is not None else trial.metric_before_finetune
        if before is None or after is None or after >= before - tolerance * abs(before):
            return None
        kept = (" (that trial's fine-tune was undone, but" if trial.finetune_undone else " (and")
        return (f"the fine-tune made the unpruned model worse: {self.metric_name} {after:.4f} after it "
                f"(trial {trial.number}) against {before:.4f} before{kept} every candidate gets the same fine-tune): "
                + ("lower the space's learning-rate range or steps" if distilled else
                   "lower the space's learning-rate range or steps, or distil from the dense model (distill=, --distill)"))

    def policy(self, candidate: TrialRecord) -> Policy:
        return Policy.from_dict(candidate.policy or {})
