"""Each of Optuna's private names autoprune uses (autoprune.backends.internals), against the installed Optuna:
when Optuna renames one, the test of that function fails and names it."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.backends import internals


@pytest.fixture()
def study():
    return optuna.create_study(directions=["maximize"])


def test_a_trial_s_storage_id_finds_it_in_the_storage(study):
    trial = study.ask()
    assert isinstance(internals.trial_id(trial), int)
    assert internals.stored_trial(study, internals.trial_id(trial)).number == trial.number


def test_setting_a_state_claims_a_queued_trial_once(study):
    study.enqueue_trial({})
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    assert internals.set_state(study, internals.trial_id(waiting), TrialState.RUNNING)
    assert study.get_trials()[0].state == TrialState.RUNNING


def test_setting_the_state_of_a_finished_trial_is_refused(study):
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        internals.set_state(study, internals.trial_id(trial), TrialState.FAIL)


def test_the_heartbeat_records_a_trial_that_goes_stale_when_it_stops(tmp_path):
    import time

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    study.ask()  # a trial never beaten: not stale
    beaten = study.ask()
    with internals.heartbeat(study, internals.trial_id(beaten)):
        pass
    time.sleep(2.5)
    assert storage._get_stale_trial_ids(study._study_id) == [internals.trial_id(beaten)]


def test_a_journal_storage_names_its_file(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "j.log"
    assert internals.journal_path(optuna.storages.JournalStorage(JournalFileBackend(str(path)))) == str(path)
    assert internals.journal_path(optuna.storages.InMemoryStorage()) is None


def test_one_recorded_heartbeat_makes_a_trial_go_stale_when_nothing_follows(tmp_path):
    import time

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    internals.record_heartbeat(study, internals.trial_id(trial))
    time.sleep(2.5)
    assert storage._get_stale_trial_ids(study._study_id) == [internals.trial_id(trial)]
    internals.record_heartbeat(optuna.create_study(), 0)  # a storage without heartbeats: nothing to record
