"""The built-in backends: ``optuna`` (trials in this process; many such workers may share one study) and
``ray`` (Ray Tune trials on a local instance or a cluster), with the Ray backend's options.

The ``optuna`` backend is the trial loop itself (:func:`autoprune.backends.loop.run_trials`); the Ray
backend's engine lives in :mod:`autoprune.backends.ray` (the only module that imports ray), imported when
it first runs, so the options below can be built without importing Ray.

Example:
    >>> RayBackend(RayOptions(gpus_per_trial=0.5)).accelerator("cpu")
    'gpu'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from autoprune.backends.base import Backend
from autoprune.backends.loop import run_trials
from autoprune.errors import AutopruneInputError, BackendError

if TYPE_CHECKING:
    from autoprune.backends.book import StudyBook
    from autoprune.objective import TrialJob
    from autoprune.result import TrialRecord


class OptunaBackend(Backend):
    """Trials run one after another in this process, through the study's ask/tell with Optuna's heartbeat
    kept for each (:func:`~autoprune.backends.loop.run_trials`).

    Many workers, one study: start several processes on one storage and study name to run trials in
    parallel. A worker starts a trial only while the study has a slot left, waits while the last trials run
    elsewhere (they may die and be queued again), and drops a trial that lost the race for the last slot
    before it does any work, so the study ends with exactly ``n_trials``. A worker that dies is noticed by
    its heartbeat (RDB storages) or its liveness stamps (journal files), and its trial runs again."""

    name = "optuna"
    heartbeats = True

    def run(self, book: StudyBook, job: TrialJob, *, n_trials: int, timeout: float | None,
            on_trial_end: Callable[[TrialRecord], None], run_dir: Path) -> None:
        run_trials(book, job, n_trials=n_trials, timeout=timeout, on_trial_end=on_trial_end)


@dataclass(frozen=True)
class RayOptions:
    """How the Ray backend places trials.

    Attributes:
        address: ``None`` starts a local Ray instance; ``"auto"`` joins the cluster this machine belongs
            to (``ray start``); ``"HOST:PORT"`` joins that head node's GCS.
        max_concurrent: at most this many trials at once (default: as many as the resources allow).
        cpus_per_trial: CPUs reserved per trial; torch in the trial uses this many threads.
        gpus_per_trial: GPUs per trial (fractions share a GPU); trials fine-tune on CUDA when > 0.

    Example:
        >>> RayOptions(address="auto", max_concurrent=4, cpus_per_trial=1.0).max_concurrent
        4
    """

    address: str | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def __post_init__(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise AutopruneInputError(f"max_concurrent must be at least 1, got {self.max_concurrent}")
        if not self.cpus_per_trial > 0:
            raise AutopruneInputError(f"cpus_per_trial must be positive, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise AutopruneInputError(f"gpus_per_trial must be 0 or more, got {self.gpus_per_trial}")


def prepare_ray_environment(options: RayOptions) -> None:
    """Environment Ray reads when it is imported, so call this before the first ``import ray``.

    * No usage statistics (machines without internet), the plain Tune output.
    * ``ray start`` (Ray >= 2.59) turns on token authentication and writes the token to
      ``~/.ray/auth_token``; a driver joining that cluster must be in token mode to send it. Set
      ``RAY_AUTH_MODE`` yourself to override this (``disabled`` for a cluster without authentication).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") \
        or (Path.home() / ".ray" / "auth_token").is_file()
    if options.address and token:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


@dataclass(frozen=True)
class RayBackend(Backend):
    """Each trial runs as a Ray Tune trial, driven by the study's sampler through an ask/tell searcher;
    see :mod:`autoprune.backends.ray`. ``search(backend="ray", ray=RayOptions(...))`` is the same as
    ``search(backend=RayBackend(RayOptions(...)))``."""

    name = "ray"
    options: RayOptions = field(default_factory=RayOptions)

    def configured(self, options: Any) -> RayBackend:
        if not isinstance(options, RayOptions):
            raise BackendError(f"ray= takes RayOptions, got {type(options).__name__}")
        return RayBackend(options)

    def connect(self) -> None:
        prepare_ray_environment(self.options)
        from autoprune.backends import ray as engine

        engine.connect(self.options)  # fails fast (exit 2 in the CLI) when the address does not answer

    def accelerator(self, requested: str) -> str:
        return "gpu" if self.options.gpus_per_trial > 0 else requested

    def run(self, book: StudyBook, job: TrialJob, *, n_trials: int, timeout: float | None,
            on_trial_end: Callable[[TrialRecord], None], run_dir: Path) -> None:
        from autoprune.backends import ray as engine

        engine.run(book, job, n_trials=n_trials, timeout=timeout, options=self.options, on_trial_end=on_trial_end,
                   storage_path=Path(run_dir) / "ray_results")

    def close(self) -> None:
        from autoprune.backends import ray as engine

        engine.shutdown()
