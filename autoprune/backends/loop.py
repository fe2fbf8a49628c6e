"""The trial loop, written once: the study book's rules in order, with only the running of a trial left to a
backend.

Every worker of a study, whatever runs its trials, goes through the same steps of its
:class:`~autoprune.backends.book.StudyBook`:

1. :meth:`~StudyBook.next_step`: fail and re-queue the trials of dead workers, stop at the study's total,
   wait while the last trials run elsewhere, queue a due promotion (multi-fidelity);
2. :meth:`~StudyBook.start`: ask for a trial (queued seeds, promotions and recoveries first), drop it unrun
   when it duplicates a promotion or lost the race for the last slot, sample its policy;
3. run it, keeping it alive in the storage (:meth:`~StudyBook.beat`);
4. :meth:`~StudyBook.tell` its report, or its failure (the search goes on), or that it was interrupted
   (Ctrl-C: it does not count and runs again on resume).

:func:`run_trials` is that loop for a backend whose trials run while it waits (in this process, a
subprocess, a pool): it passes ``execute``, the function that turns a
:class:`~autoprune.objective.Proposal` into a :class:`~autoprune.objective.TrialReport`. A backend whose
engine calls back (Ray Tune's searcher) runs steps 1, 2 and 4 from its callbacks, as
:mod:`autoprune.backends.ray` does. The backend contract suite (:mod:`autoprune.testing.backends`) checks
that a backend keeps them, multi-fidelity promotion included.

Example:
    >>> from autoprune.backends.loop import failure_reason
    >>> failure_reason(ValueError("no channels left"))
    'ValueError: no channels left'
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from autoprune.backends.book import Step
from autoprune.result import INTERRUPTED

if TYPE_CHECKING:
    import optuna

    from autoprune.backends.book import StudyBook
    from autoprune.objective import Proposal, TrialJob, TrialReport
    from autoprune.result import TrialRecord


def failure_reason(exc: BaseException) -> str:
    """What a trial that raised ``exc`` records as its failure reason."""
    return f"{type(exc).__name__}: {exc}"


def run_trials(book: StudyBook, job: TrialJob, *, n_trials: int, timeout: float | None,
               on_trial_end: Callable[[TrialRecord], None] | None = None,
               execute: Callable[[Proposal], TrialReport] | None = None, poll_seconds: float = 1.0) -> None:
    """Run trials of ``job`` until ``n_trials`` count in the whole study (every worker's) or ``timeout`` seconds
    pass, one at a time, each through ``execute`` (default: ``job.run``, in this process).

    A trial that raises is told failed with its reason and the loop goes on; KeyboardInterrupt marks the
    running trial interrupted and propagates. ``on_trial_end`` gets each finished trial's record.
    """
    execute = execute or job.run
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        step = book.next_step(job, n_trials)
        if step is Step.DONE:
            return
        if step is Step.WAIT:
            time.sleep(poll_seconds)
            continue
        started = book.start(job, n_trials)
        if started is None:
            continue
        record = run_one(book, *started, execute)
        if on_trial_end is not None:
            on_trial_end(record)


def run_one(book: StudyBook, trial: optuna.Trial, proposal: Proposal,
            execute: Callable[[Proposal], TrialReport]) -> TrialRecord:
    """Steps 3 and 4 for one started trial: ``execute(proposal)`` while the trial is kept alive, then told;
    its record. An exception fails the trial (returned as a record); KeyboardInterrupt marks it interrupted
    and propagates."""
    with book.beat(trial):
        try:
            report = execute(proposal)
        except KeyboardInterrupt:
            book.tell(trial, failure_reason=INTERRUPTED)
            raise
        except Exception as exc:  # the trial fails, the search goes on
            return book.tell(trial, failure_reason=failure_reason(exc))
    return book.tell(trial, report=report)
