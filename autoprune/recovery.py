"""Recovery: a budget of long fine-tunes that the search spends on a few of its front's candidates when it ends.

A trial fine-tunes briefly: enough to rank policies, not to recover what a pretrained model loses to
pruning (MiniLM with two layers dropped gains 0.01 of quality from 200 to 600 distilled steps). Spending
that long fine-tune on every trial would cost the search most of its trials; spending it on the few
candidates the search ends with costs a few trials' time. So with ``search(recover=Recovery(steps=600,
top=3))`` (``--recover-steps 600 --recover-top 3``), when the trials are done:

* the ``top`` candidates are chosen **spread along the front** within the budgets (the most accurate, the
  fastest and evenly between, by latency; the unpruned model is left out: it has nothing to recover); or,
  with ``floor`` (``--recover-floor 0.9``), the ``top`` **fastest candidates that keep at least that share
  of the dense model's metric**: where you deploy at a quality, the candidates just below it are those a
  recovery can lift over it, and the front's fastest, least accurate end is left alone;
* each one gets a recovery trial: its parameters, continued from its saved weights for ``steps`` more
  steps, the learning rate decaying linearly to zero (distilled when the search distils); it is timed
  from the latency cache (same shape), and, as every trial, keeps the weights it came with when the
  fine-tune would make it worse;
* recovery trials are trials of the study (``recovery_steps`` in ``trials.csv``, ``parent`` the candidate
  they continue), so the front, ``pareto.json``, ``best/``, ``report`` and ``export`` hold the recovered
  candidates, and the parent's record keeps the figure before recovery. They do not count towards
  ``n_trials``. The candidates are chosen once and recorded with the study: a resumed search recovers the
  same ones (one interrupted is recovered again, none twice); other ``steps`` or ``top`` choose afresh.

Recovery trials run in the process that ran ``search()`` after its trials (with the Ray backend too), one
after the other; another worker of the study that asks for a trial may run one too.

**One time budget for both.** ``search(time_budget=3600, recover=...)`` (``--time-budget 3600``) bounds the
search's whole wall time, its start-up analysis, trials and recovery, instead of the trials' alone
(``timeout``): the trials stop starting when the time left is what the recovery needs, estimated as ``top``
x (``steps`` x the dense model's seconds per fine-tune step + two evaluations), both timed by the start-up
probe (:mod:`autoprune.probe`). A pruned candidate steps faster than the dense model, so the estimate errs
towards finishing early; the recovery, once started, runs to its end.

Example:
    >>> from autoprune.result import TrialRecord
    >>> front = [TrialRecord(number=n, state="complete", feasible=True, metric=1 - n / 10, latency_ms=10 - n,
    ...                      size_mb=1.0) for n in range(1, 6)]
    >>> [c.number for c in spread(front, 3)]  # fastest first
    [5, 3, 1]
    >>> [c.number for c in choose(front, Recovery(steps=100, top=2, floor=0.75), dense_metric=1.0)]
    [2, 1]
    >>> reserve_seconds(Recovery(steps=1000, top=2), {"seconds_per_step": 0.5, "evaluate_seconds": 10.0})
    1040.0
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from optuna.trial import TrialState

from autoprune.errors import AutopruneInputError
from autoprune.result import TrialRecord

#: the study attribute that records which candidates a recovery chose (so a resumed search chooses no others)
PLAN_ATTR = "recovery_plan"


@dataclass(frozen=True)
class Recovery:
    """How much recovery the search spends when its trials are done: ``steps`` more fine-tune steps for each of
    ``top`` candidates spread along the front, or, with ``floor``, the ``top`` fastest that keep at least
    ``floor`` of the dense model's metric (see the module docstring)."""

    steps: int
    top: int = 3
    floor: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("steps", self.steps), ("top", self.top)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AutopruneInputError(f"recovery {name} (--recover-{name}) must be a positive integer, got "
                                          f"{value!r}")
        if self.floor is not None and not 0.0 < self.floor <= 1.0:
            raise AutopruneInputError(f"recovery floor (--recover-floor) is a share of the dense model's metric in "
                                      f"(0, 1], got {self.floor!r}")

    def plan_key(self) -> dict[str, Any]:
        """What a recorded plan must match to be resumed (another choice chooses afresh)."""
        return {"steps": self.steps, "top": self.top, **({"floor": self.floor} if self.floor is not None else {})}


def spread(front: Sequence[TrialRecord], k: int) -> list[TrialRecord]:
    """``k`` candidates of ``front`` spread along it by latency: the fastest, the slowest (most accurate) and
    evenly between; all of them when there are ``k`` or fewer."""
    ordered = sorted(front, key=lambda c: (c.latency_ms, -c.metric))
    if len(ordered) <= k:
        return list(ordered)
    if k == 1:
        return [max(ordered, key=lambda c: c.metric)]
    picks = sorted({round(i * (len(ordered) - 1) / (k - 1)) for i in range(k)})
    return [ordered[i] for i in picks]


def choose(front: Sequence[TrialRecord], recovery: Recovery, *, dense_metric: float | None) -> list[TrialRecord]:
    """The candidates of ``front`` that ``recovery`` spends its steps on: :func:`spread`, or with a floor the
    fastest that keep ``floor`` of ``dense_metric`` (the front's best metric when the study has none)."""
    if recovery.floor is None:
        return spread(front, recovery.top)
    if not front:
        return []
    dense = dense_metric if dense_metric is not None else max(c.metric for c in front)
    least = dense - (1.0 - recovery.floor) * abs(dense)
    kept = [c for c in front if c.metric >= least]
    return sorted(kept, key=lambda c: (c.latency_ms, -c.metric))[:recovery.top]


def reserve_seconds(recovery: Recovery | None, probe: Mapping[str, Any] | None) -> float:
    """The seconds a time budget keeps for ``recovery`` (0 without one), from the start-up ``probe``'s timings.

    Raises:
        AutopruneInputError: a recovery is asked for and the probe has no timings (a space that does not
            fine-tune, or a study started by an autoprune that did not time it).
    """
    if recovery is None:
        return 0.0
    step, evaluation = (probe or {}).get("seconds_per_step"), (probe or {}).get("evaluate_seconds")
    if step is None or evaluation is None:
        raise AutopruneInputError("time_budget (--time-budget) keeps the recovery's time aside by timing the dense "
                                  "model's fine-tune at start-up, and this study has no such timing (a space "
                                  "without fine-tune, or a study started by an older autoprune): give the trials a "
                                  "timeout (--timeout) instead")
    return recovery.top * (recovery.steps * step + 2 * evaluation)


def check_reserve(time_budget: float, *, recovery: Recovery | None, probe: Mapping[str, Any] | None) -> None:
    """Refuse a ``time_budget`` that the recovery alone would fill, before the start-up analysis spends any of it.

    Raises:
        AutopruneInputError: the recovery's estimate (:func:`reserve_seconds`) is the whole budget or more.
    """
    reserve = reserve_seconds(recovery, probe)
    if recovery is not None and reserve >= time_budget:
        step = (probe or {}).get("seconds_per_step", 0.0)
        raise AutopruneInputError(
            f"the recovery ({recovery.top} x {recovery.steps} steps, --recover-top x --recover-steps) needs about "
            f"{reserve:.0f} s at the {step:.2f} s a step the dense model's fine-tune took here, more than the whole "
            f"time budget (--time-budget {time_budget:g} s): give a larger budget, or fewer recovery steps or "
            "candidates (a run of several searches at once: give each one --torch-threads 1)")


def trial_timeout(time_budget: float, *, spent: float, recovery: Recovery | None,
                  probe: Mapping[str, Any] | None) -> float:
    """The seconds the trials may start within, when ``time_budget`` covers what was ``spent`` already, the
    trials and the recovery (see the module docstring); warns when nothing is left for trials."""
    reserve = reserve_seconds(recovery, probe)
    left = time_budget - spent - reserve
    if left <= 0:
        warnings.warn(f"the time budget ({time_budget:g} s) leaves no time for trials: {spent:.0f} s went to the "
                      f"start-up analysis and the recovery needs about {reserve:.0f} s; give a larger budget or "
                      "fewer recovery steps")
    return max(left, 0.0)


def recover(book, job, result, recovery: Recovery, *,
            on_trial_end: Callable[[TrialRecord], None] | None = None) -> list[TrialRecord]:
    """Queue and run the recovery trials of ``result``'s front (see the module docstring); their records."""
    from autoprune.backends.stored_trials import RECOVERY_ATTR
    from autoprune.backends.loop import run_one

    book.fail_orphans()  # a recovery left running by a process of this host that died is run again
    result.trials = book.records()
    plan = book.study.user_attrs.get(PLAN_ATTR) or {}
    if {k: v for k, v in plan.items() if k != "parents"} == recovery.plan_key():
        parents = list(plan["parents"])  # decided once: a resumed search finishes the same recoveries
    else:
        candidates = [c for c in result.pareto if c.recovery_steps is None and not result.policy(c).is_dense]
        parents = [c.number for c in choose(candidates, recovery, dense_metric=result.meta.dense_metric)]
        book.study.set_user_attr(PLAN_ATTR, {**recovery.plan_key(), "parents": parents})
    book.queue_recovery(parents, steps=recovery.steps)
    done = []
    while True:
        waiting = [t for t in book.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                   if t.user_attrs.get(RECOVERY_ATTR)]
        if not waiting:
            return done
        trial = book.claim_waiting(waiting[0])
        if trial is None:  # another worker took it
            continue
        record = run_one(book, trial, book.propose(trial, job), job.run)  # a failure is recorded; the others go on
        done.append(record)
        if on_trial_end is not None:
            on_trial_end(record)
