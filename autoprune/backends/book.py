"""The study book: the one place that keeps a study's accounts, whichever backend runs its trials.

An Optuna study is the single record of a search. Every backend goes through :class:`StudyBook` to
create or join it, count its trials, hand out and finish trials, queue seeded policies and read the
trials back as :class:`~autoprune.result.TrialRecord` objects, so the rules below are written once:

* Objectives: ``[metric (maximize), latency_ms (minimize), size_mb (minimize)]``. Budgets are
  constraints, stored with Optuna's ``Trial.set_constraint`` (``latency_ms_over_budget``,
  ``size_mb_over_budget``, <= 0 is feasible), so the constraint-aware samplers learn where the feasible
  region is. A finished trial's constraints are stored before its user attributes.
* The study keeps its :class:`~autoprune.study.StudyMeta`; a search with another space, metric or
  objectives refuses to join it (the stored study is left as is).
* ``n_trials`` is the study's total, over every worker: trials that completed, or failed for a reason of
  their own, count; trials interrupted (Ctrl-C) or lost with a dead worker do not, so they are run again.
  A worker starts a trial only while a slot is left (:meth:`StudyBook.slots_left`); a trial that loses
  the race for the last slot is dropped before it does any work (:meth:`StudyBook.is_surplus`).

Example:
    >>> from autoprune.backends.storage import make_storage
    >>> from autoprune.backends.samplers import make_sampler
    >>> from autoprune.study import StudyMeta
    >>> book = StudyBook.open(make_storage("sqlite:///:memory:"), study_name="s",
    ...                       sampler=make_sampler("random", seed=0, n_trials=4),
    ...                       meta=StudyMeta(space_fingerprint="f"))
    >>> book.created, book.slots_left(4), book.meta.space_fingerprint
    (True, 4, 'f')
"""

from __future__ import annotations

import contextlib
import enum
import time
import warnings
from typing import Any, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.backends.internals import heartbeat, record_heartbeat, set_state, trial_id
from autoprune.backends.storage import STORAGE_ERRORS, JournalLiveness, Storage, error_line
from autoprune.backends.stored_trials import (FAILURE_ATTR, RECOVERY_ATTR, REPORT_ATTR, attrs_of, counts,
                                             holds_promotion, latency_cache, to_record)
from autoprune.backends.workers import WORKER, died_here
from autoprune.errors import StudyError
from autoprune.fidelity import promotable
from autoprune.objective import Proposal, TrialJob, TrialReport
from autoprune.result import DUPLICATE, INTERRUPTED, SURPLUS, TrialRecord
from autoprune.study import FINGERPRINT_ATTR, StudyMeta

DIRECTIONS = ["maximize", "minimize", "minimize"]
CONSTRAINT_KEYS = ("latency_ms_over_budget", "size_mb_over_budget")
SEEDED_ATTR = "seeded"  # the study's seeded policies are queued
#: how long a run that finds a study without its metadata waits for the creator to store it (it takes
#: milliseconds), before it takes the study for one whose creator stopped half-way and finishes it
CREATION_WAIT_S = 10.0
SEEDING_ATTR = "seeding_by"  # host:pid of the run that created the study and is to queue them
_COUNTED_STATES = (TrialState.COMPLETE, TrialState.FAIL)

optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in our own summary
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class Step(enum.Enum):
    """What a worker does next (:meth:`StudyBook.next_step`)."""

    RUN = "run"  # ask for a trial and run it
    WAIT = "wait"  # the last trials run on other workers: wait, they may die and be queued again
    DONE = "done"  # the study has its total


class StudyBook:
    """One study's bookkeeping (see the module docstring). ``created`` says whether this worker made it."""

    def __init__(self, study: optuna.Study, *, liveness: JournalLiveness | None = None,
                 created: bool = False) -> None:
        self.study = study
        self.liveness = liveness
        self.created = created

    # --- opening ------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, storage: Storage, *, study_name: str, sampler: optuna.samplers.BaseSampler,
             meta: StudyMeta) -> StudyBook:
        """Create the study with ``meta``, or join it if it exists and agrees with ``meta``'s space and metric.

        Workers that start together race to create it: exactly one wins and stores the metadata (the
        space fingerprint last); the others wait (a few seconds at most) for it and then check it. A study
        still without metadata or trials after :data:`CREATION_WAIT_S` lost its creator half-way (Ctrl-C
        right after it was created): the run that finds it stores the metadata and counts as its creator.
        """
        where = storage.describe()
        try:
            if not storage.has_study(study_name):
                try:
                    study = optuna.create_study(storage=storage.optuna, study_name=study_name, sampler=sampler,
                                                directions=DIRECTIONS)
                except optuna.exceptions.DuplicatedStudyError:
                    pass
                else:
                    return cls._found(study, meta, storage)
            study = optuna.load_study(storage=storage.optuna, study_name=study_name, sampler=sampler)
            deadline = time.monotonic() + CREATION_WAIT_S
            while FINGERPRINT_ATTR not in study.user_attrs and not study.get_trials(deepcopy=False):
                if time.monotonic() > deadline:
                    # Its creator stopped before it stored the metadata (Ctrl-C or a kill between the two):
                    # an empty study nobody finished, so this run finishes it as its creator would have.
                    return cls._found(study, meta, storage)
                time.sleep(0.1)
        except StudyError:
            raise
        except STORAGE_ERRORS as exc:
            raise StudyError(f"cannot open storage {where}: {error_line(exc)}") from None
        directions = [d.name.lower() for d in study.directions]
        if directions != DIRECTIONS:
            raise StudyError(f"study {study_name!r} in {where} has objectives {directions}, not "
                             f"autoprune's {DIRECTIONS}; choose another --study-name")
        book = cls(study, liveness=storage.liveness)
        book.meta.check_joinable(meta, study_name)
        return book

    @classmethod
    def _found(cls, study: optuna.Study, meta: StudyMeta, storage: Storage) -> StudyBook:
        """This run as the creator of ``study``: it stores the metadata (the space fingerprint last) and is
        to queue the seeds (see :meth:`needs_seeds`)."""
        study.set_user_attr(SEEDING_ATTR, WORKER)
        for key, value in meta.to_attrs().items():
            study.set_user_attr(key, value)
        return cls(study, liveness=storage.liveness, created=True)

    @classmethod
    def load(cls, storage: Storage, *, study_name: str) -> StudyBook:
        """An existing study, to read (``autoprune report``/``export``/``refine``)."""
        try:
            return cls(optuna.load_study(storage=storage.optuna, study_name=study_name), liveness=storage.liveness)
        except KeyError:
            raise StudyError(f"no study named {study_name!r} in {storage.describe()}") from None
        except STORAGE_ERRORS as exc:
            raise StudyError(f"cannot open storage {storage.describe()}: {error_line(exc)}") from None

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def meta(self) -> StudyMeta:
        """The study's stored metadata (as the worker that created it wrote it)."""
        return StudyMeta.from_attrs(self.study.user_attrs)

    # --- counting -----------------------------------------------------------------------------------------

    def tally(self) -> tuple[int, int]:
        """``(counted, running)``: the trials that count towards the total (see the module docstring), and
        those running now on every worker (one read of the storage)."""
        trials = self.study.get_trials(deepcopy=False, states=(*_COUNTED_STATES, TrialState.RUNNING))
        return sum(1 for t in trials if counts(t)), sum(1 for t in trials if t.state == TrialState.RUNNING
                                                         and not t.user_attrs.get(RECOVERY_ATTR))

    def slots_left(self, n_trials: int) -> int:
        """How many more trials may start: the total less those that count and those running anywhere."""
        return n_trials - sum(self.tally())

    def is_surplus(self, trial: optuna.Trial, n_trials: int) -> bool:
        """True when the trials that count plus those running with a lower number already fill the total:
        ``trial`` lost the race for the last slot."""
        trials = self.study.get_trials(deepcopy=False, states=(*_COUNTED_STATES, TrialState.RUNNING))
        if trial.user_attrs.get(RECOVERY_ATTR):  # queued when the search ended, on top of its total
            return False
        taken = sum(1 for t in trials if counts(t) or (t.state == TrialState.RUNNING and t.number < trial.number
                                                         and not t.user_attrs.get(RECOVERY_ATTR)))
        return taken >= n_trials

    # --- the trial loop (backends/loop.py) -------------------------------------------------------------------

    def next_step(self, job: TrialJob, n_trials: int) -> Step:
        """What a worker does next, the study's rules applied first: trials of dead workers are failed and
        queued again (:meth:`fail_stale`); DONE when ``n_trials`` count; WAIT while the last slots are taken
        by trials running elsewhere; else a due promotion is queued (:meth:`promote`) and it is RUN."""
        self.fail_stale()
        counted, running = self.tally()
        if counted >= n_trials:
            return Step.DONE
        if counted + running >= n_trials:
            return Step.WAIT
        self.promote(job)
        return Step.RUN

    def start(self, job: TrialJob, n_trials: int) -> tuple[optuna.Trial, Proposal] | None:
        """Ask for a trial (a queued one first: seeds, promotions, recoveries) and sample its policy; None when
        it was dropped unrun: a promotion another worker already makes, or a trial that lost the race for the
        last slot (finished as PRUNED with the reason; ask again after :meth:`next_step`)."""
        trial = self.ask()
        if self.is_duplicate(trial):
            self.drop(trial, DUPLICATE)
            return None
        if self.is_surplus(trial, n_trials):
            self.drop(trial, SURPLUS)
            return None
        return trial, self.propose(trial, job)

    # --- trials -------------------------------------------------------------------------------------------

    def needs_seeds(self) -> bool:
        """Whether this run should queue the seeded policies: it created the study, or the run that did stopped
        before they were queued (Ctrl-C during the sensitivity scan, say: the study has no ``seeded`` mark and
        its creator's process on this host is gone), and no trial has run yet. A creator still at work (another
        worker that started at the same time) is left to it; studies made before the mark count as seeded."""
        attrs = self.study.user_attrs
        if attrs.get(SEEDED_ATTR):
            return False
        if self.created:
            return True
        return died_here(attrs.get(SEEDING_ATTR, "")) and not any(t.state != TrialState.WAITING for t in self.study.get_trials(deepcopy=False))

    def enqueue(self, params: list[dict[str, Any]], *, dense_metric: float | None = None) -> None:
        """Queue parameter sets (seeded policies) to be sampled first, by the run that finds them missing
        (:meth:`needs_seeds`), which also records the dense model's metric when it measured it; the study is
        marked seeded last (a set queued twice is not duplicated)."""
        if dense_metric is not None:
            self.study.set_user_attr("dense_metric", dense_metric)
        for one in params:
            self.study.enqueue_trial(one, skip_if_exists=True)
        self.study.set_user_attr(SEEDED_ATTR, True)

    def ask(self) -> optuna.Trial:
        """A new trial for a driver that tells results itself, tagged with this process's identity."""
        with warnings.catch_warnings():  # the loop keeps Optuna's heartbeat itself (beat), as optimize would
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")
            trial = self.study.ask()
        self.claim(trial)
        return trial

    def claim(self, trial: optuna.Trial) -> None:
        """Tag ``trial`` as this process's (so a dead driver's trials can be found and run again), and stamp it
        alive at once: the beat starts only when it runs (:meth:`beat`), and a RUNNING trial that never beat
        would be invisible to :meth:`fail_stale` if this worker died in between."""
        trial.set_user_attr("worker", WORKER)
        if self.liveness is not None:
            self.liveness.stamp(trial_id(trial))
        else:
            record_heartbeat(self.study, trial_id(trial))

    def propose(self, trial: optuna.Trial, job: TrialJob) -> Proposal:
        """Sample ``trial``'s policy from the job's space and store it on the trial (failed trials show it too).
        A promoted trial (queued by :meth:`promote`) gets its parent's weights to continue from."""
        rung, parent = int(trial.user_attrs.get("rung", 0)), trial.user_attrs.get("parent")
        parent_dir = parent_steps = None
        if parent is not None:
            parent_attrs = attrs_of(self._trial(int(parent)))
            parent_dir, parent_steps = parent_attrs.get("artifact_dir"), parent_attrs.get("finetune_steps")
            if parent_dir is None:
                raise StudyError(f"trial {trial.number} continues trial {parent}, which saved no weights")
        recovery = trial.user_attrs.get(RECOVERY_ATTR)
        if recovery:
            proposal = job.recover(trial, steps=int(recovery), parent=int(parent), parent_dir=parent_dir,
                                   rung=rung, parent_steps=parent_steps)
        else:
            proposal = job.propose(trial, rung=rung, parent=parent, parent_dir=parent_dir)
        trial.set_user_attr("policy", proposal.policy.to_dict())
        return proposal

    def _trial(self, number: int) -> FrozenTrial:
        trials = self.study.get_trials(deepcopy=False)
        if number < len(trials) and trials[number].number == number:
            return trials[number]
        return next(t for t in trials if t.number == number)

    # --- multi-fidelity -------------------------------------------------------------------------------------

    def promote(self, job: TrialJob) -> int | None:
        """Queue the next promotion that is due, if any: the highest rung's first (asynchronous successive
        halving, see :mod:`autoprune.fidelity`). The queued trial has its parent's parameters and the next
        rung; a worker that asks next runs it ahead of new samples. Returns the parent's number, or None.

        Promotions are decided from the study alone, so any worker may make them; two that queue the same
        one at once are settled by :meth:`is_duplicate` (the later copy is dropped unrun).
        """
        fidelity = job.fidelity
        if fidelity is None:
            return None
        trials = self.study.get_trials(deepcopy=False)
        taken = {(t.user_attrs.get("parent"), t.user_attrs.get("rung")) for t in trials if holds_promotion(t)}
        complete = {t.number: (t, attrs_of(t)) for t in trials if t.state == TrialState.COMPLETE}
        for rung in range(fidelity.top - 1, -1, -1):
            done = [n for n, (_, attrs) in complete.items() if int(attrs.get("rung", 0)) == rung
                    and not attrs.get(RECOVERY_ATTR)]  # a recovered candidate is final
            points = {n: tuple(complete[n][0].values) for n in done if complete[n][1].get("feasible")}
            for number in promotable(points, promote=fidelity.promote, completed=len(done)):
                parent, attrs = complete[number]
                if (number, rung + 1) in taken or attrs.get("artifact_dir") is None:
                    continue
                self.study.enqueue_trial(parent.params, user_attrs={"rung": rung + 1, "parent": number})
                return number
        return None

    def is_duplicate(self, trial: optuna.Trial) -> bool:
        """True for a promotion that another trial with a lower number already makes (queued twice in a race)."""
        parent, rung = trial.user_attrs.get("parent"), trial.user_attrs.get("rung")
        if parent is None:
            return False
        return any(t.number < trial.number and holds_promotion(t) and t.user_attrs.get("parent") == parent
                   and t.user_attrs.get("rung") == rung for t in self.study.get_trials(deepcopy=False))

    def queue_recovery(self, parents: list[int], *, steps: int) -> list[int]:
        """Queue a recovery of each of ``parents`` (front candidates): a trial with the parent's parameters that
        continues from its saved weights for ``steps`` more steps (:mod:`autoprune.recovery`). A parent that
        already has a recovery (queued, running or done, by this run or an earlier one) is left; returns the
        parents queued now."""
        trials = self.study.get_trials(deepcopy=False)
        held = {t.user_attrs.get("parent") for t in trials if t.user_attrs.get(RECOVERY_ATTR) and holds_promotion(t)}
        queued = []
        for number in parents:
            if number in held:
                continue
            parent = self._trial(number)
            self.study.enqueue_trial(parent.params, user_attrs={"rung": int(attrs_of(parent).get("rung", 0)),
                                                                "parent": number, RECOVERY_ATTR: steps})
            queued.append(number)
        return queued

    def claim_waiting(self, waiting: FrozenTrial) -> optuna.Trial | None:
        """Start this queued trial (Optuna's ``ask`` starts the oldest one, which may be another); None when
        another worker started it first. The state change is the storage's own atomic claim."""
        try:
            claimed = set_state(self.study, trial_id(waiting), TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            return None
        if not claimed:
            return None
        trial = optuna.Trial(self.study, trial_id(waiting))
        self.claim(trial)
        return trial

    def drop(self, trial: optuna.Trial, reason: str) -> None:
        """Finish an asked trial unrun (PRUNED: it neither counts nor shows in the records)."""
        trial.set_user_attr(FAILURE_ATTR, reason)
        self.study.tell(trial, state=TrialState.PRUNED)
        if self.liveness is not None:
            self.liveness.forget(trial_id(trial))

    def latencies(self) -> dict[str, dict[str, Any]]:
        """The study's latency cache: shape key -> timing of the complete trials that timed that shape."""
        return latency_cache(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    @staticmethod
    def store_report(trial: optuna.Trial, report: TrialReport) -> None:
        """Store a finished trial's constraints, then its user attributes (not its objectives)."""
        for key, value in zip(CONSTRAINT_KEYS, report.constraints):
            trial.set_constraint(key, value)
        trial.set_user_attr(REPORT_ATTR, report.user_attrs)

    def tell(self, trial: optuna.Trial, *, report: TrialReport | None = None,
             failure_reason: str | None = None) -> TrialRecord:
        """Finish an asked trial: complete with ``report``, or FAIL with ``failure_reason``; its record."""
        if report is not None:
            self.store_report(trial, report)
            return to_record(self.study.tell(trial, report.values))
        trial.set_user_attr(FAILURE_ATTR, failure_reason or "failed")
        return to_record(self.study.tell(trial, state=TrialState.FAIL))

    @contextlib.contextmanager
    def beat(self, trial: optuna.Trial) -> Iterator[None]:
        """Keep ``trial`` alive in the storage while it runs: Optuna's heartbeat for an RDB storage opened with
        heartbeats on, the liveness stamp for a journal file (see :meth:`fail_stale`)."""
        if self.liveness is None:
            with heartbeat(self.study, trial_id(trial)):
                yield
            return
        with self.liveness.beat(trial_id(trial)):
            yield

    # --- workers that died --------------------------------------------------------------------------------

    def fail_stale(self) -> None:
        """Mark the trials of dead workers FAIL and queue them again (heartbeats, or liveness stamps)."""
        if self.liveness is not None:
            self.liveness.reap(self.study)
        else:
            optuna.storages.fail_stale_trials(self.study)

    def fail_orphans(self) -> None:
        """Mark RUNNING trials of drivers that died on this host as interrupted (they are run again)."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not died_here(trial.user_attrs.get("worker", "")):
                continue
            try:
                self.tell(optuna.Trial(self.study, trial_id(trial)), failure_reason=INTERRUPTED)
            except optuna.exceptions.UpdateFinishedTrialError:  # another driver got there first
                continue

    # --- reading ------------------------------------------------------------------------------------------

    def records(self) -> list[TrialRecord]:
        """Every trial that ran or runs (queued trials, and surplus trials dropped unrun, are left out)."""
        return [to_record(t) for t in self.study.get_trials(deepcopy=False)
                if t.state not in (TrialState.WAITING, TrialState.PRUNED)]
