"""The embedded backend: an Optuna study in this process. The only module that imports optuna.

* Objectives: ``[metric (maximize), latency_ms (minimize), size_mb (minimize)]``.
* Budgets are constraints, stored with Optuna 5's ``Trial.set_constraint`` (``latency_ms_over_budget``,
  ``size_mb_over_budget``), so the constraint-aware samplers (TPE, NSGA-II, GP) learn where the
  feasible region is; a trial is feasible when every value is <= 0.
* Default sampler (``"auto"``): multi-objective TPE (multivariate, grouped for the conditional
  regulariser strength). With the budgets users run (20-100 trials) NSGA-II's default population of
  50 would leave most of a search random, and GP's per-trial fitting cost grows with the trial count;
  TPE learns from its first ten trials, supports constraints, and costs milliseconds per suggestion.
  ``nsga2``, ``tpe``, ``gp`` and ``random`` can be chosen explicitly.
* Storage: an Optuna RDB URL (``sqlite:///``, ``postgresql://``, ``mysql://``) or a plain file path,
  which selects Optuna's ``JournalStorage`` with a file backend (as optuna-dashboard reads it). The
  study keeps the space's fingerprint and the metric name, and a run with a different space or
  objectives refuses to join (the stored study is left as is).
* Many workers, one study: every worker runs :func:`optimize` on the same storage. ``n_trials`` is the
  study's total, not a per-worker count: a worker starts a trial only while complete + counted-failed +
  running trials are below it, waits while the last trials run elsewhere, and a trial that loses the
  race for the last slot (two workers asking at once) is dropped as ``PRUNED`` before it does any
  work, so the study ends with exactly ``n_trials``.
* Dead workers: RDB storages use Optuna's heartbeat (``heartbeat_interval``, ``grace_period`` = 3
  intervals, driven by ``study.optimize``) with ``RetryHeartbeatStaleTrialCallback``: the trial of a
  killed worker is marked FAIL and a copy with the same parameters is queued. Journal files have no
  heartbeat in Optuna, so :class:`JournalLiveness` does the same with a liveness stamp per running
  trial (a file beside the journal, touched every interval) that the other workers check.
* Resume: trials that completed, or failed for a reason of their own, count; trials interrupted by
  Ctrl-C, or whose worker died, do not, so they are run again.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from autoprune.errors import StudyError
from autoprune.result import TrialRecord

DIRECTIONS = ["maximize", "minimize", "minimize"]
INTERRUPTED = "interrupted"
NO_HEARTBEAT = "the worker stopped responding (killed, or its machine lost); the trial was queued again"
SURPLUS = "surplus"  # lost the race for the study's last trial slot; dropped before doing any work
HEARTBEAT_INTERVAL = 10
MAX_RETRY = 3
WORKER = f"{socket.gethostname()}:{os.getpid()}"
SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")

optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in our own summary
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ``***`` (safe to print and log)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", str(url))


CONSTRAINT_KEYS = ("latency_ms_over_budget", "size_mb_over_budget")


def set_constraints(trial: optuna.Trial, values: list[float]) -> None:
    """Store the trial's constraint values (<= 0 is feasible) where Optuna's samplers read them."""
    for key, value in zip(CONSTRAINT_KEYS, values):
        trial.set_constraint(key, value)


def make_sampler(name: str, *, seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    if name in ("auto", "tpe"):
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=min(10, max(2, n_trials // 3)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed,
                                             population_size=max(4, min(50, n_trials // 4)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise StudyError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")


def is_file_storage(spec: str) -> bool:
    """A plain path (no ``scheme://``) selects a journal file."""
    return "://" not in str(spec)


def storage_file(spec: str) -> Path | None:
    """The file behind a storage: the journal file, or an SQLite database's file; None for a server."""
    if is_file_storage(spec):
        return Path(spec)
    if spec.startswith("sqlite:///") and ":memory:" not in spec:
        return Path(spec[len("sqlite:///"):])
    return None


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message``, with any storage password masked."""
    text = mask_url(str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class JournalLiveness:
    """Heartbeats for journal-file studies, which Optuna's heartbeat does not cover.

    Each running trial has a stamp file ``<journal>.alive/<trial_id>`` that its worker touches every
    ``interval`` seconds. A RUNNING trial whose stamp is older than ``grace`` seconds (or missing, with
    a start older than ``grace``) belongs to a dead worker: the first worker to notice claims it with
    an exclusive ``.reaped`` file, marks it FAIL, and queues a copy with the same parameters, exactly
    as Optuna's ``RetryHeartbeatStaleTrialCallback`` does for RDB storages. Workers on several
    machines need a shared file system whose clocks agree to within the grace period.
    """

    def __init__(self, journal: Path, *, interval: float) -> None:
        self.dir = Path(str(journal) + ".alive")
        self.interval = interval
        self.grace = 3 * interval
        self.dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def beat(self, trial_id: int) -> Iterator[None]:
        stamp = self.dir / str(trial_id)
        stamp.touch()
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.interval):
                stamp.touch()

        thread = threading.Thread(target=loop, name=f"autoprune-liveness-{trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            stamp.unlink(missing_ok=True)

    def reap(self, study: optuna.Study) -> None:
        """Fail and re-queue the running trials of dead workers."""
        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            stamp = self.dir / str(trial._trial_id)
            try:
                last = stamp.stat().st_mtime
            except FileNotFoundError:
                started = trial.datetime_start.timestamp() if trial.datetime_start else now
                last = started
            if now - last <= self.grace:
                continue
            try:  # claim it: only one worker may re-queue a dead trial
                os.close(os.open(str(stamp) + ".reaped", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            try:
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, study._storage.get_trial(trial._trial_id))


def make_storage(spec: str, *, heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
                 must_exist: bool = False) -> tuple[Any, JournalLiveness | None]:
    """The Optuna storage for ``spec`` and, for journal files, the liveness checker that replaces heartbeats.

    Raises StudyError (with any password masked) when the storage cannot be opened, or, with
    ``must_exist``, when a journal or SQLite file is not there. ``heartbeat_interval=None`` turns
    heartbeats off (ask/tell drivers such as the Ray backend, which Optuna's heartbeat does not serve).
    """
    path = storage_file(spec)
    if must_exist and path is not None and not path.is_file():
        raise StudyError(f"no {'journal file' if is_file_storage(spec) else 'SQLite database'} at {path}")
    if is_file_storage(spec):
        if path.is_dir():
            raise StudyError(f"--storage {spec} is a directory; give a journal file path such as {path / 'study.log'}")
        if path.is_file() and path.read_bytes()[:16].startswith(b"SQLite format 3"):
            raise StudyError(f"--storage {spec} is an SQLite database; give it as sqlite:///{path.resolve()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        try:
            storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:
            raise StudyError(f"cannot open journal file {spec}: {type(exc).__name__}: {exc}") from None
        liveness = JournalLiveness(path, interval=heartbeat_interval) if heartbeat_interval else None
        return storage, liveness
    spec = _with_postgres_driver(spec)
    connect_args = {"timeout": 60} if spec.startswith("sqlite") else {}
    if spec.startswith(("postgresql", "mysql")):
        connect_args = {"connect_timeout": 10}
    heartbeat: dict[str, Any] = {}
    if heartbeat_interval:
        heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": 3 * heartbeat_interval,
                     "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)}
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            storage = optuna.storages.RDBStorage(
                spec, engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True}, **heartbeat)
        except Exception as exc:
            # Workers that start together on an empty database race to create Optuna's tables; the
            # losers see a unique violation and simply open the tables the winner made.
            racing = "IntegrityError" in type(exc).__name__ or "already exists" in str(exc)
            if racing and attempt < attempts:
                time.sleep(0.5 + random.random())
                continue
            raise StudyError(f"cannot open storage {mask_url(spec)}: {error_line(exc)}") from None
        break
    return storage, None


def _with_postgres_driver(url: str) -> str:
    """``postgresql://`` names no driver and SQLAlchemy 2.1 then wants psycopg 3; use the installed one."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}{sep}{rest}"
    raise StudyError("a postgresql:// storage needs a PostgreSQL driver: pip install 'autoprune[postgres]' "
                     "(psycopg2-binary)")


def fail_stale(study: optuna.Study, liveness: JournalLiveness | None) -> None:
    """Mark the trials of dead workers FAIL and queue them again (heartbeat or liveness stamps)."""
    if liveness is not None:
        liveness.reap(study)
    else:
        optuna.storages.fail_stale_trials(study)


def open_study(*, storage: Any, study_name: str, sampler: optuna.samplers.BaseSampler, fingerprint: str,
               metric_name: str, attrs: dict[str, Any] | None = None) -> tuple[optuna.Study, bool]:
    """Create the study, or join it if it exists and matches this search's objectives and space.

    Returns ``(study, created)``. Workers that start together race to create it: exactly one wins
    and stores the attributes; the others wait (a few seconds at most) for them and then check them.
    """
    where = _describe(storage)
    try:
        existing = {s.study_name for s in optuna.get_all_study_summaries(storage=storage)}
        if study_name not in existing:
            try:
                study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler,
                                            directions=DIRECTIONS)
            except optuna.exceptions.DuplicatedStudyError:
                pass
            else:
                study.set_user_attr("metric", metric_name)
                for key, value in (attrs or {}).items():
                    study.set_user_attr(key, value)
                study.set_user_attr("space_fingerprint", fingerprint)  # last: joiners wait for it
                return study, True
        study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler)
        for _ in range(100):
            if "space_fingerprint" in study.user_attrs or study.get_trials(deepcopy=False):
                break
            time.sleep(0.1)
    except Exception as exc:
        raise StudyError(f"cannot open storage {where}: {error_line(exc)}") from None
    directions = [d.name.lower() for d in study.directions]
    if directions != DIRECTIONS:
        raise StudyError(f"study {study_name!r} in {where} has objectives {directions}, not "
                         f"autoprune's {DIRECTIONS}; choose another --study-name")
    stored = study.user_attrs.get("space_fingerprint")
    if stored != fingerprint:
        raise StudyError(f"study {study_name!r} was created with another search space (fingerprint {stored}, "
                         f"this one {fingerprint}); use the same space or another --study-name")
    if study.user_attrs.get("metric") != metric_name:
        raise StudyError(f"study {study_name!r} optimises {study.user_attrs.get('metric')!r}, "
                         f"not {metric_name!r}; choose another --study-name")
    return study, False


def _describe(storage: Any) -> str:
    if isinstance(storage, str):
        return mask_url(storage)
    url = getattr(storage, "url", None)
    if url:
        return mask_url(str(url))
    backend = getattr(storage, "_backend", None)
    return str(getattr(backend, "_file_path", type(storage).__name__))


def study_exists(storage: Any, study_name: str) -> bool:
    return study_name in list_study_names(storage)


def list_study_names(storage: Any) -> list[str]:
    try:
        return sorted(s.study_name for s in optuna.get_all_study_summaries(storage=storage))
    except Exception as exc:
        raise StudyError(f"cannot open storage {_describe(storage)}: {type(exc).__name__}") from None


def load_study(*, storage: Any, study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(storage=storage, study_name=study_name)
    except KeyError:
        raise StudyError(f"no study named {study_name!r} in {_describe(storage)}") from None
    except Exception as exc:
        raise StudyError(f"cannot open storage {_describe(storage)}: {type(exc).__name__}") from None


def _counts(trial: FrozenTrial) -> bool:
    """Complete, or failed by its own error (not interrupted, not lost with a dead worker)."""
    if trial.state == TrialState.COMPLETE:
        return True
    reason = trial.user_attrs.get("failure_reason")
    return trial.state == TrialState.FAIL and reason is not None and reason != INTERRUPTED


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards the total (see :func:`_counts`)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
               if _counts(t))


def _is_surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """True when the trials that count plus those running with a lower number already fill the total."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING))
    taken = sum(1 for t in trials if _counts(t) or (t.state == TrialState.RUNNING and t.number < trial.number))
    return taken >= n_trials


def enqueue_seeds(study: optuna.Study, seeds: list[dict[str, Any]]) -> None:
    """Enqueue seed parameter sets (call once, by the worker that created the study)."""
    for params in seeds:
        study.enqueue_trial(params, skip_if_exists=True)


def optimize(study: optuna.Study, objective: Callable[[Any], list[float]], *, n_trials: int,
             timeout: float | None, on_trial_end: Callable[[TrialRecord], None] | None = None,
             liveness: JournalLiveness | None = None, poll_seconds: float = 1.0) -> None:
    """Run trials until ``n_trials`` count in the whole study (every worker's) or ``timeout`` seconds pass.

    Safe to run in many processes on one storage (see the module docstring). Exceptions raised by
    ``objective`` mark the trial failed (with the reason stored as a user attribute) and the search goes
    on; KeyboardInterrupt marks it interrupted and propagates.
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def wrapped(trial: optuna.Trial) -> list[float]:
        trial.set_user_attr("worker", WORKER)
        if _is_surplus(study, trial, n_trials):
            trial.set_user_attr("failure_reason", SURPLUS)
            raise optuna.TrialPruned()
        beat = liveness.beat(trial._trial_id) if liveness is not None else contextlib.nullcontext()
        with beat:
            try:
                return objective(trial)
            except KeyboardInterrupt:
                trial.set_user_attr("failure_reason", INTERRUPTED)
                raise
            except Exception as exc:
                trial.set_user_attr("failure_reason", f"{type(exc).__name__}: {exc}")
                raise

    def report(_: optuna.Study, trial: FrozenTrial) -> None:
        if on_trial_end is not None and trial.state != TrialState.PRUNED:
            on_trial_end(to_record(trial))

    while deadline is None or time.monotonic() < deadline:
        fail_stale(study, liveness)
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING))
        counted = sum(1 for t in trials if _counts(t))
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        if counted >= n_trials:
            return
        if counted + running >= n_trials:  # the last trials run on other workers: wait, they may die
            time.sleep(poll_seconds)
            continue
        study.optimize(wrapped, n_trials=1, catch=(Exception,), callbacks=[report])


def ask(study: optuna.Study) -> optuna.Trial:
    """A new trial for an ask/tell driver (the Ray backend), tagged with this driver's identity."""
    trial = study.ask()
    trial.set_user_attr("worker", WORKER)
    return trial


def tell(study: optuna.Study, trial: optuna.Trial, *, values: list[float] | None = None,
         constraints: list[float] | None = None, user_attrs: dict[str, Any] | None = None,
         failure_reason: str | None = None) -> FrozenTrial:
    """Finish an asked trial: complete with ``values`` (and constraints), or FAIL with ``failure_reason``."""
    for key, value in (user_attrs or {}).items():
        trial.set_user_attr(key, value)
    if values is not None:
        set_constraints(trial, constraints or [])
        return study.tell(trial, values)
    trial.set_user_attr("failure_reason", failure_reason or "failed")
    return study.tell(trial, state=TrialState.FAIL)


def fail_orphans(study: optuna.Study) -> None:
    """Mark RUNNING trials of ask/tell drivers that died on this host as interrupted (they are re-run)."""
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get("worker", ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        handle = optuna.Trial(study, trial._trial_id)
        try:
            tell(study, handle, failure_reason=INTERRUPTED)
        except Exception:  # another driver got there first
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def to_record(trial: FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    metrics = attrs.get("metrics", {})
    state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.RUNNING: "running",
             TrialState.WAITING: "waiting", TrialState.PRUNED: "failed"}[trial.state]
    values = trial.values if trial.state == TrialState.COMPLETE else None
    reason = attrs.get("failure_reason")
    if trial.state == TrialState.FAIL and reason is None:
        reason = NO_HEARTBEAT
    return TrialRecord(
        number=trial.number, state=state, feasible=bool(attrs.get("feasible", False)) and state == "complete",
        metric=values[0] if values else None, latency_ms=values[1] if values else None,
        size_mb=values[2] if values else None, size_mb_sparse=metrics.get("size_mb_sparse"),
        params=metrics.get("params"), macs=metrics.get("macs"), latency_cv=metrics.get("latency_cv"),
        policy=attrs.get("policy"), failure_reason=reason,
        timings=dict(attrs.get("timings", {})), artifact_dir=attrs.get("artifact_dir"), lr=trial.params.get("lr"),
    )


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial that ran or runs (queued trials, and surplus trials dropped unrun, are left out)."""
    return [to_record(t) for t in study.get_trials(deepcopy=False)
            if t.state not in (TrialState.WAITING, TrialState.PRUNED)]
