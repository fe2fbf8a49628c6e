"""The Ray Tune backend's engine: trials run as Ray Tune trials on a local instance or a cluster. The only
module that imports ray.

How it fits together:

* The Optuna study stays the single record of the search. A small Ray Tune ``Searcher``
  (:class:`StudySearcher`) is an ask/tell adapter over the study's book
  (:class:`~autoprune.backends.book.StudyBook`), the same idea as Ray's ``OptunaSearch``: it asks the
  study's multi-objective sampler for a trial, samples the policy in the driver, and tells the
  objectives and budget constraints back when the Ray trial reports. So budgets, constraints,
  result files and ``autoprune report`` are the same as with the Optuna backend, and both backends can
  even take turns on one study.
* The trial context (base model, data loaders, profile) goes to the object store once through
  ``tune.with_parameters``; each trial's config is only its :class:`~autoprune.objective.Proposal` (its
  policy and fine-tune settings) and the current front (to decide whether its weights are saved).
* A trial that raises is recorded as failed and the search goes on. A trial whose Ray worker dies is
  retried by Ray (``FailureConfig(max_failures=2)``) with the same configuration.
* Resume uses the Optuna storage underneath, not ``Tuner.restore``: a new driver counts the trials the
  study already holds, and trials a previous driver left unfinished (Ctrl-C, or a driver killed on this
  host) are marked interrupted and re-run. ``ray_results/`` is kept for Ray's own logs only.
* Model and data code must be importable on every Ray worker (an installed package, or a module under
  the driver's working directory for a local instance).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import optuna
import ray
import torch
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from autoprune.backends.book import INTERRUPTED, Step, StudyBook
from autoprune.backends.loop import failure_reason
from autoprune.backends.builtin import RayOptions
from autoprune.backends.storage import error_line
from autoprune.errors import StudyError
from autoprune.objective import Proposal, TrialContext, TrialJob, TrialReport, execute_trial
from autoprune.result import TrialRecord

_started_here = False


def connect(options: RayOptions) -> None:
    """Start a local Ray instance or join ``options.address``; StudyError when nobody answers there."""
    global _started_here
    if ray.is_initialized():
        return
    address = options.address
    if address and address != "auto":
        _probe(address)

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if not address:
        # Local instance: its workers inherit this environment, so modules under the working directory
        # (a user's model factory) import there as they do here.
        os.environ["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *sys.path[1:]])
        kwargs["num_cpus"] = os.cpu_count()
    try:
        ray.init(address=address or None, **kwargs)
    except Exception as exc:
        raise StudyError(f"cannot reach the Ray cluster at {address}: {error_line(exc)}; start it "
                         "with `ray start --head` or check --address") from None
    _started_here = True


def _probe(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"--address must be auto or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        raise StudyError(f"the Ray address {address} does not answer ({exc.strerror or exc}); start the head "
                         "node with `ray start --head` or check --address") from None


def shutdown() -> None:
    """Stop the Ray instance if :func:`connect` started or joined it (leave a user's own ``ray.init``)."""
    global _started_here
    if _started_here and ray.is_initialized():
        ray.shutdown()
    _started_here = False


class StudySearcher(Searcher):
    """Ray Tune searcher that asks and tells the study through its book, stopping at the study's total."""

    def __init__(self, book: StudyBook, *, job: TrialJob, n_trials: int,
                 on_trial_end: Callable[[TrialRecord], None] | None) -> None:
        super().__init__(metric="metric", mode="max")
        self.book = book
        self.job = job
        self.n_trials = n_trials
        self.on_trial_end = on_trial_end
        self.pending: dict[str, Any] = {}
        self.finished = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its configuration for Tuner.restore, which autoprune does not use (the study is the
        # record); the live study, the job and callbacks (a progress display holds locks) stay out of the pickle.
        return {"n_trials": self.n_trials, "finished": self.finished}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, book=None, job=None, on_trial_end=None, pending={})

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The study book's loop steps (:mod:`autoprune.backends.loop`), from Tune's callback: None (ask again
        later) while the last trials run, FINISHED at the study's total."""
        while True:
            step = self.book.next_step(self.job, self.n_trials)
            if step is Step.DONE:
                self.finished = True
                return Searcher.FINISHED
            if step is Step.WAIT:
                return None
            started = self.book.start(self.job, self.n_trials)
            if started is not None:
                break
        trial, proposal = started
        self.pending[trial_id] = trial
        return {"proposal": proposal.to_dict(), "front": [list(p) for p in self.job.front(proposal.rung)],
                "latencies": self.job.latencies()}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self.pending.pop(trial_id, None)
        if trial is None:
            return
        summary = json.loads(result["report"]) if result and "report" in result else {}
        if error or "values" not in summary:
            reason = summary.get("error") or "the Ray trial failed; its log is under ray_results/"
            record = self.book.tell(trial, failure_reason=reason)
        else:
            record = self.book.tell(trial, report=TrialReport(**summary))
        if self.on_trial_end is not None:
            self.on_trial_end(record)

    def interrupt_pending(self) -> None:
        """Mark the trials still running as interrupted (they do not count and are run again on resume)."""
        for trial in self.pending.values():
            try:
                self.book.tell(trial, failure_reason=INTERRUPTED)
            except optuna.exceptions.UpdateFinishedTrialError:  # told already (another driver's fail_orphans)
                pass
        self.pending.clear()


def _trainable(config: dict[str, Any], payload: tuple[TrialContext, int]) -> None:
    """One Ray trial: prune, measure, fine-tune, evaluate, save if on the front; report a JSON summary."""
    ctx, threads = payload
    torch.set_num_threads(threads)
    proposal = Proposal.from_dict(config["proposal"])
    try:
        report = execute_trial(ctx, proposal, front=[tuple(p) for p in config["front"]],
                               latencies=config.get("latencies"))
        summary = {"values": report.values, "constraints": report.constraints, "user_attrs": report.user_attrs}
        tune.report({"metric": report.values[0], "report": json.dumps(summary)})
    except Exception as exc:  # the trial fails, the search goes on (as with the Optuna backend)
        tune.report({"metric": float("nan"), "report": json.dumps({"error": failure_reason(exc)})})


def run(book: StudyBook, job: TrialJob, *, n_trials: int, timeout: float | None, options: RayOptions,
        on_trial_end: Callable[[TrialRecord], None] | None, storage_path: Path) -> None:
    """Run the study's missing trials as Ray Tune trials; raise KeyboardInterrupt if Tune was stopped early."""
    connect(options)
    book.fail_orphans()
    if book.tally()[0] >= n_trials:
        return
    searcher = StudySearcher(book, job=job, n_trials=n_trials, on_trial_end=on_trial_end)
    algorithm = ConcurrencyLimiter(searcher, max_concurrent=options.max_concurrent) if options.max_concurrent \
        else searcher
    threads = max(1, int(options.cpus_per_trial))
    resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(_trainable, payload=(job.context, threads)), resources)
    tuner = tune.Tuner(
        trainable,
        # reuse_actors: a trial runs in the process of the previous one, so torch, Lightning and the
        # context from the object store are loaded once per worker, not once per trial.
        # a time budget's timeout may be 0 (nothing left for trials): Ray would read 0 as no limit
        tune_config=tune.TuneConfig(search_alg=algorithm, num_samples=-1, reuse_actors=True,
                                    time_budget_s=None if timeout is None else max(timeout, 1e-3)),
        run_config=tune.RunConfig(name=f"{book.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(Path(storage_path).resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )
    started = time.monotonic()
    try:
        tuner.fit()
    finally:
        searcher.interrupt_pending()
    timed_out = timeout is not None and time.monotonic() - started >= timeout
    if not searcher.finished and not timed_out and book.tally()[0] < n_trials:
        raise KeyboardInterrupt("Ray Tune stopped before the study's total was reached")
