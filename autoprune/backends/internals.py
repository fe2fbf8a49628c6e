"""The only module that touches Optuna's private API, one function per use.

autoprune needs a few things Optuna's public API does not offer: a trial's storage id (liveness stamps, a
queued trial's claim), setting a stored trial's state directly (claiming one queued trial, failing a dead
worker's), the heartbeat thread ``study.optimize`` runs around each trial (so an ask/tell loop beats as
``optimize`` does) and a journal file's path (to name it in messages). Each is wrapped here, and
``tests/backends/test_internals.py`` checks every one against the installed Optuna: when Optuna renames
one, that test fails and names it, instead of a search misbehaving.

Example:
    >>> import optuna
    >>> study = optuna.create_study()
    >>> trial = study.ask()
    >>> trial_id(trial) == stored_trial(study, trial_id(trial))._trial_id
    True
"""

from __future__ import annotations

import contextlib
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (unique over every study of the storage, unlike ``trial.number``)."""
    return trial._trial_id


def stored_trial(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """The trial with storage id ``trial_id``, as stored now."""
    return study._storage.get_trial(trial_id)


def set_state(study: optuna.Study, trial_id: int, state: TrialState) -> bool:
    """Set a stored trial's state, atomically in the storage: False when another process changed it first
    (Optuna raises ``UpdateFinishedTrialError`` for a trial that finished meanwhile)."""
    return bool(study._storage.set_trial_state_values(trial_id, state=state))


def heartbeat(study: optuna.Study, trial_id: int) -> contextlib.AbstractContextManager[Any]:
    """The heartbeat ``study.optimize`` keeps for a running trial (a no-op unless the storage has heartbeats
    on: RDB storages opened with ``heartbeat_interval``)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial_id, study._storage)


def record_heartbeat(study: optuna.Study, trial_id: int) -> None:
    """One heartbeat of a trial now, when the storage has heartbeats on: a RUNNING trial that never beat is
    invisible to Optuna's stale-trial check, so a trial is stamped the moment it is asked for."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    if is_heartbeat_enabled(storage) and isinstance(storage, BaseHeartbeat):
        storage.record_heartbeat(trial_id)


def journal_path(storage: Any) -> str | None:
    """The file a journal storage writes to (None for other storages)."""
    backend = getattr(storage, "_backend", None)
    path = getattr(backend, "_file_path", None)
    return None if path is None else str(path)
