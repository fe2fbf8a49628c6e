"""The backend contract (:mod:`autoprune.testing.backends`), run for every registered backend and for a backend
written against the documented interface alone; and a backend that skips the book's loop fails it."""

from __future__ import annotations

import pytest

from autoprune.backends import Backend, available_backends
from autoprune.backends.loop import run_trials
from autoprune.testing import backends as contract


class SequentialBackend(Backend):
    """Trials one after another through the documented loop, each run by a function of its own (as a
    scheduler's submit would)."""

    name = "sequential-test"
    heartbeats = True

    def __init__(self) -> None:
        self.runs = self.executed = 0

    def run(self, book, job, *, n_trials, timeout, on_trial_end, run_dir):
        self.runs += 1

        def execute(proposal):
            self.executed += 1
            return job.run(proposal)

        run_trials(book, job, n_trials=n_trials, timeout=timeout, on_trial_end=on_trial_end, execute=execute)


class AskTellOnly(Backend):
    """Asks, samples, runs and tells, but skips the loop's other steps (promotion among them)."""

    name = "ask-tell-only-test"

    def run(self, book, job, *, n_trials, timeout, on_trial_end, run_dir):
        while book.slots_left(n_trials) > 0:
            trial = book.ask()
            on_trial_end(book.tell(trial, report=job.run(book.propose(trial, job))))


CHECKS = [contract.check_reaches_the_total, contract.check_resumes_to_a_larger_total, contract.check_promotes,
          contract.check_failing_trial_recorded]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("backend", ["optuna", SequentialBackend()], ids=["optuna", "sequential"])
def test_in_process_backends_keep_the_contract(backend, check, tmp_path):
    check(backend, tmp_path)


@pytest.mark.parametrize("backend", [b for b in available_backends() if b not in ("optuna",)])
def test_every_other_registered_backend_promotes_and_records_failures(backend, tmp_path):
    """Engines with a start-up cost per search (Ray: about 30 s) run the two checks that the loop's steps
    decide; their totals and resumes have tests of their own (tests/backends/test_ray.py)."""
    contract.check_promotes(backend, tmp_path)
    contract.check_failing_trial_recorded(backend, tmp_path)


def test_a_backend_that_skips_the_loop_s_promotion_fails_the_contract(tmp_path):
    with pytest.raises(AssertionError, match="no candidate was promoted"):
        contract.check_promotes(AskTellOnly(), tmp_path)
