"""The embedded backend's engine: trials run in this process, driven by Optuna's ``study.optimize``.

Many workers, one study: every worker runs :func:`optimize` on the same storage. A worker starts a
trial only while the study has a slot left (see :mod:`autoprune.backends.book`), waits while the last
trials run elsewhere (they may die and be queued again), and drops a trial that lost the race for the
last slot as ``PRUNED`` before it does any work, so the study ends with exactly ``n_trials``. Running
trials inside ``study.optimize`` is what drives Optuna's RDB heartbeat; journal-file studies beat
through the book's liveness stamps.

Example:
    See :class:`autoprune.backends.OptunaBackend`, which ``search()`` runs by default.
"""

from __future__ import annotations

import time
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.backends.book import DUPLICATE, INTERRUPTED, SURPLUS, StudyBook, to_record
from autoprune.objective import TrialJob
from autoprune.result import TrialRecord


def optimize(book: StudyBook, job: TrialJob, *, n_trials: int, timeout: float | None,
             on_trial_end: Callable[[TrialRecord], None] | None = None, poll_seconds: float = 1.0) -> None:
    """Run trials until ``n_trials`` count in the whole study (every worker's) or ``timeout`` seconds pass.

    Exceptions raised by a trial mark it failed (with the reason stored as a user attribute) and the
    search goes on; KeyboardInterrupt marks it interrupted and propagates.
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def objective(trial: optuna.Trial) -> list[float]:
        book.claim(trial)
        duplicate = book.is_duplicate(trial)
        if duplicate or book.is_surplus(trial, n_trials):
            trial.set_user_attr("failure_reason", DUPLICATE if duplicate else SURPLUS)
            raise optuna.TrialPruned()
        with book.beat(trial):
            try:
                report = job.run(book.propose(trial, job))
            except KeyboardInterrupt:
                trial.set_user_attr("failure_reason", INTERRUPTED)
                raise
            except Exception as exc:
                trial.set_user_attr("failure_reason", f"{type(exc).__name__}: {exc}")
                raise
        book.record(trial, report)
        return report.values

    def report(_: optuna.Study, trial: FrozenTrial) -> None:
        if on_trial_end is not None and trial.state != TrialState.PRUNED:
            on_trial_end(to_record(trial))

    while deadline is None or time.monotonic() < deadline:
        book.fail_stale()
        counted, running = book.tally()
        if counted >= n_trials:
            return
        if counted + running >= n_trials:  # the last trials run on other workers: wait, they may die
            time.sleep(poll_seconds)
            continue
        book.promote(job)
        book.study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[report])
