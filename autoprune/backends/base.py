"""The backend contract and the name -> backend registry.

A backend decides where and how a search's trials run; the study (through its
:class:`~autoprune.backends.book.StudyBook`) stays the record whichever backend runs them, and the book
owns the rules of the trial loop (:mod:`autoprune.backends.loop`: dead workers' trials re-queued, the
study's total, promotions, duplicate and surplus trials dropped, failures and interrupts told).
``search()`` hands a backend the book and the search's :class:`~autoprune.objective.TrialJob`. A backend
written for a scheduler of your own subclasses :class:`Backend` and registers with
:func:`register_backend` (or is passed to ``search(backend=...)`` as an object); its :meth:`Backend.run`
calls the loop with the function that runs one trial where the scheduler puts it::

    def run(self, book, job, *, n_trials, timeout, on_trial_end, run_dir):
        run_trials(book, job, n_trials=n_trials, timeout=timeout, on_trial_end=on_trial_end,
                   execute=lambda proposal: my_scheduler.submit(job.run, proposal).result())

:func:`autoprune.testing.backends.check_backend` is the contract suite a backend must pass (a search to its
total, a resume, multi-fidelity promotion, a failing trial); every built-in backend passes it.

Example:
    >>> from autoprune.backends import available_backends, get_backend
    >>> available_backends()
    ['optuna', 'ray']
    >>> get_backend("optuna").heartbeats
    True
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from autoprune.errors import BackendError
from autoprune.registry import Registry

if TYPE_CHECKING:
    from autoprune.backends.book import StudyBook
    from autoprune.objective import TrialJob
    from autoprune.result import TrialRecord


class Backend(ABC):
    """Where a search's trials run. Optional hooks are no-ops; only :meth:`run` must be written."""

    #: the name ``search(backend=...)`` and ``--backend`` give
    name: ClassVar[str]
    #: True when each trial is kept alive in the storage while it runs (:func:`~autoprune.backends.loop.run_trials`
    #: does, in the process that waits for it), so a worker that dies is noticed; a backend whose trials run
    #: out of the driver's sight (Ray) leaves it off, and the storage opens without heartbeats
    heartbeats: ClassVar[bool] = False

    def configured(self, options: Any) -> Backend:
        """This backend with ``options`` (``search(ray=RayOptions(...))``); by default it takes none."""
        raise BackendError(f"the {self.name!r} backend takes no options; ray= options need backend='ray'")

    def connect(self) -> None:
        """Check that the engine answers, before the study or any file is created (fail fast)."""

    def accelerator(self, requested: str) -> str:
        """The Lightning accelerator trials fine-tune on, given the one the caller asked for."""
        return requested

    @abstractmethod
    def run(self, book: StudyBook, job: TrialJob, *, n_trials: int, timeout: float | None,
            on_trial_end: Callable[[TrialRecord], None], run_dir: Path) -> None:
        """Run trials of ``job`` until ``n_trials`` count in the whole study (every worker's) or ``timeout``
        seconds pass; call ``on_trial_end`` with each finished trial's record.

        A trial that raises is told failed with its reason and the search goes on; KeyboardInterrupt marks
        the running trials interrupted (they do not count, and run again on resume) and propagates.
        ``run_dir`` is the search's run directory, for the engine's own logs.
        """

    def close(self) -> None:
        """Release what :meth:`connect` took."""

    @contextlib.contextmanager
    def connected(self) -> Iterator[Backend]:
        """:meth:`connect` on entry, :meth:`close` on exit, whatever happens in between."""
        self.connect()
        try:
            yield self
        finally:
            self.close()


REGISTRY: Registry[Backend] = Registry("backend", (Backend,), error=BackendError,
                                       unknown="unknown backend {name!r}; choose one of {known} or pass a Backend")


def register_backend(backend: Backend, *, overwrite: bool = False) -> Backend:
    """Add ``backend`` to the registry under ``backend.name`` and return it."""
    return REGISTRY.register(backend, overwrite=overwrite)


def get_backend(backend: str | Backend, *, options: Any = None) -> Backend:
    """The backend object ``backend`` names (or ``backend`` itself), configured with ``options`` if given;
    :class:`~autoprune.errors.BackendError` lists the registered names for an unknown one."""
    chosen = backend if isinstance(backend, Backend) else REGISTRY.get(backend)
    return chosen if options is None else chosen.configured(options)


def available_backends() -> list[str]:
    """Sorted names of the registered backends."""
    return REGISTRY.names()
