"""Where a study lives: storage specs (URL or journal file), opening them, masking passwords, and the
liveness stamps that stand in for heartbeats on journal files. Imports optuna's storage classes only.

* A storage is an Optuna RDB URL (``sqlite:///``, ``postgresql://``, ``mysql://``) or a plain file path,
  which selects Optuna's ``JournalStorage`` with a file backend (as optuna-dashboard reads it).
* Passwords never leave this module unmasked: :func:`mask_url` is used in every error it raises.
* Dead workers: RDB storages use Optuna's heartbeat (``heartbeat_interval``, ``grace_period`` = 3
  intervals, beaten by the trial loop, see :mod:`autoprune.backends.loop`) with
  ``RetryHeartbeatStaleTrialCallback``: the trial of a killed worker is marked FAIL and a copy with the
  same parameters is queued. Journal files have no heartbeat in Optuna, so :class:`JournalLiveness` does
  the same with a liveness stamp per running trial (a file beside the journal, touched every interval)
  that the other workers check. A trial is stamped the moment a worker claims it, before it runs.

Example:
    >>> mask_url("postgresql://me:secret@db:5432/studies")
    'postgresql://me:***@db:5432/studies'
    >>> storage_file("runs/shared/study.log"), storage_file("postgresql://db/studies")
    (PosixPath('runs/shared/study.log'), None)
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import optuna
import sqlalchemy.exc
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from autoprune import defaults
from autoprune.backends.internals import journal_path, set_state, stored_trial, trial_id
from autoprune.errors import StudyError

#: what a storage that cannot be read or written raises (a database down or refusing, a file unreadable, a
#: study Optuna cannot load): a StudyError for the user; anything else is a bug, and propagates as one
STORAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, sqlalchemy.exc.SQLAlchemyError,
                                                   optuna.exceptions.OptunaError, ValueError)

MAX_RETRY = 3


#: a password in a URL's query (``?password=...``, as SQLAlchemy and libpq accept)
_QUERY = re.compile(r"([?&](?:password|passwd|pwd|sslpassword|secret|token)=)[^&#\s]*", re.IGNORECASE)
#: what may stand before a URL in a message (quotes, brackets), then a scheme with its slashes
_LEAD = re.compile(r"^([\"'(<\[]*)((?:[A-Za-z][\w+.-]*:/+)?)")
#: ``scheme:/...`` or ``scheme:...@``: a URL mistyped, which would otherwise be taken as a journal file's path
_MALFORMED = re.compile(r"^[A-Za-z][\w+.-]*:(/(?!/)|[^/\\].*@)")
#: characters a URL's password must percent-encode to be read one way by every parser (SQLAlchemy, libpq, urllib)
_ENCODE = {"@": "%40", "?": "%3F", "#": "%23", "/": "%2F", " ": "%20"}
#: a password shorter than this is not searched for in driver messages (it would garble every word)
_MIN_SECRET = 3


def _mask_token(token: str) -> str:
    """One whitespace-free piece of text with the password of a ``[scheme:/]user:password@host`` in it hidden:
    everything between the user's ``:`` and the last ``@`` (SQLAlchemy reads up to the first ``@``, other
    parsers to the last: the last hides both)."""
    at = token.rfind("@")
    if at < 0:
        return token
    head = token[:at]
    lead = _LEAD.match(head)
    start = lead.end() if lead else 0
    user, colon, _ = head[start:].partition(":")
    if not colon:
        return token
    return f"{head[:start]}{user}:***{token[at:]}"


def mask_url(url: str) -> str:
    """The storage URL (or a message holding one) with every password replaced by ``***``: the userinfo's,
    whatever characters it holds (a ``scheme://`` missing or mistyped too), and query parameters such as
    ``password=`` (safe to print and log)."""
    text = re.sub(r"\S+", lambda m: _mask_token(m.group(0)), str(url))
    return _QUERY.sub(r"\1***", text)


def secrets(spec: str) -> tuple[str, ...]:
    """The passwords a storage spec holds, as written and percent-decoded, however a parser splits it: what
    :func:`redact` hides in messages that quote them (a driver's "could not translate host name ...")."""
    from urllib.parse import unquote

    rest = str(spec).partition("://")[2] or str(spec)
    found = set()
    for at in (rest.find("@"), rest.rfind("@")):
        if at > 0:
            found |= {rest[:at].partition(":")[2], rest[:at].rpartition(":")[2]}
    found.update(m.group(0).partition("=")[2] for m in _QUERY.finditer(rest))
    found |= {unquote(s) for s in found}
    found |= {piece for s in found for piece in s.split("@")}
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


def redact(text: str, spec: str) -> str:
    """``text`` with any password of ``spec`` hidden, wherever and however it appears (see :func:`secrets`)."""
    text = mask_url(text)
    for secret in secrets(spec):
        text = text.replace(secret, "***")
    return text


def is_file_storage(spec: str) -> bool:
    """A plain path (no ``scheme://``) selects a journal file."""
    return "://" not in str(spec)


def check_storage_spec(spec: str, *, persistent: bool = True) -> None:
    """Refuse a storage spec that cannot work as meant, before anything is opened or created; no message
    shows a password:

    * a URL with a typo (``postgresql:/u:pw@host/db``, ``user:pw@host/db`` without a scheme), which would
      otherwise become a private journal file named after it;
    * a URL whose password holds ``@``, ``?``, ``#``, ``/`` or a space: parsers split such a URL in different
      places (SQLAlchemy took ``pw@rest`` for a host name), so it must be percent-encoded;
    * with ``persistent`` (a user's storage), an SQLite URL with no file (``sqlite://``,
      ``sqlite:///:memory:``): the study would vanish with the process and could never be resumed or joined.
    """
    spec = str(spec)
    if is_file_storage(spec):
        if _MALFORMED.match(spec) and not re.match(r"^[A-Za-z]:[\\/]", spec):
            raise StudyError(f"--storage {mask_url(spec)} looks like a URL missing a slash or its scheme (a URL is "
                             "scheme://user:password@host/db); give a URL such as postgresql://user@host/db, or a "
                             "journal file path")
        return
    scheme, _, rest = spec.partition("://")
    at = rest.rfind("@")
    server = not rest.startswith("/")  # scheme://host...: a server, maybe with a user; sqlite:///path: a file
    userinfo = rest[:at] if at >= 0 and server else ""
    odd = sorted({ch for ch in userinfo if ch in _ENCODE} | ({" "} if server and re.search(r"\s", rest) else set()))
    if odd:
        codes = ", ".join(f"{'a space' if ch == ' ' else repr(ch)} as {_ENCODE[ch]}" for ch in odd)
        raise StudyError(f"the --storage {scheme}:// URL holds characters that a URL's password must percent-encode "
                         f"({codes}), else parsers split it in different places and the driver quotes part of the "
                         "password as a host name; or keep the password out of the URL (~/.pgpass, PGPASSWORD)")
    if persistent and scheme.startswith("sqlite") and (not rest.strip("/") or ":memory:" in rest
                                                        or rest.startswith("?")):
        raise StudyError(f"--storage {mask_url(spec)} is an in-memory SQLite database: the study would vanish with "
                         "this process and could never be resumed; give a file, sqlite:///path/to/study.db")


def storage_file(spec: str) -> Path | None:
    """The file behind a storage: the journal file, or an SQLite database's file; None for a server."""
    if is_file_storage(spec):
        return Path(spec)
    if spec.startswith("sqlite:///") and ":memory:" not in spec:
        return Path(spec[len("sqlite:///"):])
    return None


def error_line(exc: BaseException, spec: str = "") -> str:
    """``Type: first line of the message``, with any storage password masked (those of ``spec`` wherever they
    appear)."""
    text = redact(str(exc), spec).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class JournalLiveness:
    """Heartbeats for journal-file studies, which Optuna's heartbeat does not cover.

    Each running trial has a stamp file ``<journal>.alive/<trial_id>`` that its worker touches every
    ``interval`` seconds. A RUNNING trial whose stamp is older than ``grace`` seconds (or missing, with
    a start older than ``grace``) belongs to a dead worker: the first worker to notice claims it with
    an exclusive ``.reaped`` file, marks it FAIL, and queues a copy with the same parameters, exactly
    as Optuna's ``RetryHeartbeatStaleTrialCallback`` does for RDB storages; then it removes the dead
    worker's stamp and its claim, so no stale file stays behind. Workers on several
    machines need a shared file system whose clocks agree to within the grace period.
    """

    def __init__(self, journal: Path, *, interval: float) -> None:
        self.dir = Path(str(journal) + ".alive")
        self.interval = interval
        self.grace = 3 * interval
        self.dir.mkdir(parents=True, exist_ok=True)

    def stamp(self, trial_id: int) -> None:
        """Mark ``trial_id`` alive now (a claimed trial, before it starts beating)."""
        (self.dir / str(trial_id)).touch()

    def forget(self, trial_id: int) -> None:
        """Remove ``trial_id``'s stamp (a trial finished without running: dropped)."""
        (self.dir / str(trial_id)).unlink(missing_ok=True)

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
            stamp = self.dir / str(trial_id(trial))
            try:
                last = stamp.stat().st_mtime
            except FileNotFoundError:
                started = trial.datetime_start.timestamp() if trial.datetime_start else now
                last = started
            if now - last <= self.grace:
                continue
            claim = Path(str(stamp) + ".reaped")
            try:  # claim it: only one worker may re-queue a dead trial
                os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            try:
                set_state(study, trial_id(trial), TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker reaped it first
                claim.unlink(missing_ok=True)
                continue
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, stored_trial(study, trial_id(trial)))
            # The trial is FAIL now, so no worker looks at it again: its dead worker's stamp and the claim go.
            stamp.unlink(missing_ok=True)
            claim.unlink(missing_ok=True)


class Storage(NamedTuple):
    """An opened storage: Optuna's storage object, and for journal files the liveness checker that replaces
    heartbeats (None for RDB storages, whose heartbeat Optuna drives, or when heartbeats are off)."""

    optuna: Any
    liveness: JournalLiveness | None = None

    def describe(self) -> str:
        """What to call this storage in a message (password masked)."""
        url = getattr(self.optuna, "url", None)
        if url:
            return mask_url(str(url))
        return journal_path(self.optuna) or type(self.optuna).__name__

    def study_names(self) -> list[str]:
        """The names of the studies it holds; StudyError when it cannot be read."""
        try:
            return sorted(s.study_name for s in optuna.get_all_study_summaries(storage=self.optuna))
        except STORAGE_ERRORS as exc:
            raise StudyError(f"cannot open storage {self.describe()}: {error_line(exc)}") from None

    def has_study(self, study_name: str) -> bool:
        return study_name in self.study_names()


def make_storage(spec: str, *, heartbeat_interval: int | None = defaults.HEARTBEAT_INTERVAL,
                 must_exist: bool = False) -> Storage:
    """The Optuna storage for ``spec`` and, for journal files, the liveness checker that replaces heartbeats.

    Raises StudyError (with any password masked) when the storage cannot be opened, or, with
    ``must_exist``, when a journal or SQLite file is not there. ``heartbeat_interval=None`` turns
    heartbeats off (ask/tell drivers such as the Ray backend, which Optuna's heartbeat does not serve).
    """
    check_storage_spec(spec, persistent=False)  # in memory: for tests and doctests; users are checked up front
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
        return Storage(storage, liveness)
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
            raise StudyError(f"cannot open storage {mask_url(spec)}: {error_line(exc, spec)}") from None
        break
    if spec.startswith("sqlite") and ":memory:" not in spec:
        _write_ahead(storage.engine)
    return Storage(storage)


def _write_ahead(engine: Any) -> None:
    """SQLite in write-ahead-log mode with ``synchronous=NORMAL``: a commit no longer waits for the disk
    (2.4 ms -> 0.7 ms per write on the dev VM, and a trial makes about 15), readers do not block the
    writer, and a crash of the process loses nothing committed (a power cut may lose the last commits)."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()  # connections opened before the listener reconnect with it


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
