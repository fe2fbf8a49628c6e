"""The study book: opening a study that another run created, or began to create."""

from __future__ import annotations

import optuna
import pytest

from autoprune.backends import book as book_module
from autoprune.backends.book import DIRECTIONS, SEEDING_ATTR, StudyBook
from autoprune.backends.samplers import make_sampler
from autoprune.backends.storage import make_storage
from autoprune.errors import StudyError
from autoprune.study import StudyMeta


def _open(url: str, fingerprint: str) -> StudyBook:
    return StudyBook.open(make_storage(url, heartbeat_interval=None), study_name="s",
                          sampler=make_sampler("random", seed=0, n_trials=2), meta=StudyMeta(space_fingerprint=fingerprint))


def test_a_study_whose_creator_stopped_before_its_metadata_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """Ctrl-C between creating the study and storing its metadata leaves an empty study without a space
    fingerprint: the next run stores the metadata as the creator would have, queues the seeds, and later
    runs join it (or are refused with another space) as usual."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    half_made = optuna.create_study(storage=url, study_name="s", directions=DIRECTIONS)
    half_made.set_user_attr(SEEDING_ATTR, "somewhere:1")  # what the stopped creator wrote, and nothing else
    monkeypatch.setattr(book_module, "CREATION_WAIT_S", 0.3)
    book = _open(url, "f")
    assert book.created and book.needs_seeds() and book.meta.space_fingerprint == "f"
    joined = _open(url, "f")
    assert not joined.created and joined.meta.space_fingerprint == "f"
    with pytest.raises(StudyError, match="another search space"):
        _open(url, "g")


def test_a_study_with_trials_is_never_taken_over(tmp_path, monkeypatch):
    """A study without metadata that holds trials (made by something else) is not rewritten: it is refused."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    other = optuna.create_study(storage=url, study_name="s", directions=DIRECTIONS)
    other.add_trial(optuna.trial.create_trial(values=[0.5, 1.0, 1.0]))
    monkeypatch.setattr(book_module, "CREATION_WAIT_S", 0.3)
    with pytest.raises(StudyError, match="another search space"):
        _open(url, "f")
    assert "space_fingerprint" not in optuna.load_study(storage=url, study_name="s").user_attrs


@pytest.mark.parametrize("journal", [False, True], ids=["rdb", "journal"])
def test_a_trial_whose_worker_dies_before_it_runs_is_failed_and_queued_again(tmp_path, journal):
    """Claimed, then the worker dies before the trial beats (sampling its policy, say): the trial was stamped
    alive when claimed, so it goes stale and is re-queued, instead of holding a slot for ever."""
    import time

    from optuna.trial import TrialState

    url = str(tmp_path / "study.log") if journal else f"sqlite:///{tmp_path / 'study.db'}"
    storage = make_storage(url, heartbeat_interval=1)
    book = StudyBook.open(storage, study_name="s", sampler=make_sampler("random", seed=0, n_trials=2),
                          meta=StudyMeta(space_fingerprint="f"))
    dead = book.ask()  # and nothing more: the worker is gone
    time.sleep(4.5)  # past the grace period (3 intervals)
    StudyBook.open(make_storage(url, heartbeat_interval=1), study_name="s",
                   sampler=make_sampler("random", seed=0, n_trials=2), meta=StudyMeta(space_fingerprint="f")).fail_stale()
    states = {t.number: t.state for t in optuna.load_study(storage=storage.optuna, study_name="s").trials}
    assert states[dead.number] == TrialState.FAIL and TrialState.WAITING in states.values()
