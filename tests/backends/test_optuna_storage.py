"""Storages of the Optuna backend: bad URLs, passwords never shown, joining rules, Ctrl-C and resume."""

from __future__ import annotations

import os
import subprocess

from pathlib import Path

import pytest
from optuna.trial import TrialState

from autoprune.api import search
from autoprune.backends.book import StudyBook
from autoprune.backends.storage import make_storage
from autoprune.errors import StudyError
from tests.backends.conftest import PG_PASSWORD, REPO, cli, free_port
from tests.conftest import fast_profile

TINY = REPO / "tests" / "data" / "tiny.yaml"


def _search(digits, out, **kwargs):
    model, data = digits
    settings = dict(space=TINY, n_trials=3, out_dir=out, seed=0, profile=fast_profile(), study_name="s")
    settings.update(kwargs)
    return search(model, data, **settings)


def test_wrong_password_is_a_study_error_that_hides_the_password(postgres):
    """A rejected password raises StudyError; neither password appears in the message."""
    url = postgres.url(password="not-the-pw")
    with pytest.raises(StudyError) as info:
        make_storage(url)
    assert "not-the-pw" not in str(info.value) and "***" in str(info.value)


def test_unreachable_storage_is_a_study_error():
    """Nothing listens on the port: StudyError naming the storage (password masked)."""
    with pytest.raises(StudyError, match="cannot open storage") as info:
        make_storage(f"postgresql+psycopg2://u:hidden@127.0.0.1:{free_port()}/db")
    assert "hidden" not in str(info.value)


def test_cli_exits_2_on_a_wrong_password_without_printing_it(postgres, tmp_path):
    """``autoprune search`` with a bad password: exit code 2, one clear line, password masked."""
    proc = subprocess.run(cli("search", "--storage", postgres.url(password="wr0ng-pw"), "--trials", "1",
                              "--out", tmp_path, "--no-progress"),
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert "cannot open storage" in proc.stderr
    assert "wr0ng-pw" not in proc.stdout + proc.stderr and PG_PASSWORD not in proc.stdout + proc.stderr


def test_another_space_is_refused_on_a_shared_study_and_the_study_is_kept(digits, tmp_path, pg_url):
    """A worker with a different search space cannot join; the study's trials are untouched."""
    _search(digits, tmp_path / "a", storage=pg_url, n_trials=2)
    with pytest.raises(StudyError, match="another search space"):
        _search(digits, tmp_path / "b", storage=pg_url, space="unstructured")
    study = StudyBook.load(make_storage(pg_url), study_name="s").study
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_journal_file_study_stops_at_the_total(digits, tmp_path):
    """A plain path selects a journal file; a second run on it resumes and adds nothing past the total."""
    journal = tmp_path / "shared" / "study.log"
    _search(digits, tmp_path / "a", storage=str(journal), n_trials=3)
    again = _search(digits, tmp_path / "b", storage=str(journal), n_trials=3)
    assert journal.is_file() and len(again.trials) == 3 and again.session_trials == set()
    assert Path(again.meta.artifacts).parent == (tmp_path / "shared" / "candidates").resolve(), \
        "artifacts live beside the journal"
    assert Path(again.meta.artifacts).name == f"s-{again.meta.study_id}", "one directory per study"


def test_a_directory_or_sqlite_file_is_not_taken_for_a_journal(tmp_path):
    """--storage pointing at a directory or an SQLite file gets an error that says what to pass."""
    with pytest.raises(StudyError, match="is a directory"):
        make_storage(str(tmp_path))
    db = tmp_path / "x.db"
    make_storage(f"sqlite:///{db}")
    with pytest.raises(StudyError, match="sqlite:///"):
        make_storage(str(db))


def test_resume_without_a_study_is_refused(digits, tmp_path):
    """resume=True on an empty storage says there is nothing to resume."""
    with pytest.raises(StudyError, match="no study"):
        _search(digits, tmp_path, resume=True)


def test_interrupted_trial_is_rerun_and_finished_ones_are_kept(digits, tmp_path):
    """Ctrl-C inside a trial marks it interrupted; resuming re-runs it and keeps the finished trials."""
    calls = {"n": 0}

    def interrupting(net, loader):  # called before and after each trial's fine-tune: call 5 is in the third trial
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return 0.5

    with pytest.raises(KeyboardInterrupt):  # no seeded policies: their scan would call the metric first
        _search(digits, tmp_path, metric=interrupting, n_trials=4, seed_policies=False)
    first = {t.number: t for t in StudyBook.load(make_storage(f"sqlite:///{tmp_path / 'study.db'}"),
                                                 study_name="s").study.get_trials()}
    assert [t.state for t in first.values()].count(TrialState.COMPLETE) == 2
    interrupted = next(t for t in first.values() if t.state == TrialState.FAIL)
    assert interrupted.user_attrs["failure_reason"] == "interrupted"

    result = _search(digits, tmp_path, metric=interrupting, n_trials=4, seed_policies=False)
    complete = [t for t in result.trials if t.state == "complete"]
    assert len(complete) == 4
    assert all(t.number in result.session_trials for t in complete if t.number not in first)
    assert {t.number for t in complete} >= {n for n, t in first.items() if t.state == TrialState.COMPLETE}
    assert not result.session_trials & {n for n, t in first.items() if t.state == TrialState.COMPLETE}


def test_a_postgresql_url_without_a_driver_uses_the_installed_one(postgres):
    """``postgresql://`` (the form PostgreSQL documents) opens with whichever psycopg is installed."""
    url = postgres.url().replace("postgresql+psycopg2://", "postgresql://")
    storage, liveness = make_storage(url)
    assert liveness is None and storage.url.startswith("postgresql+psycopg")


@pytest.mark.parametrize("url, secret", [
    ("postgresql://u@127.0.0.1:5432/db?password=SECRET", "SECRET"),
    ("postgresql://u:Ab@cdSECRET@host/db", "cdSECRET"),
    ("postgresql+psycopg2://u:SECRET@host:5432/db?sslmode=require&PassWord=SECRET2", "SECRET"),
    ("postgresql:/u:SECRET@host/db", "SECRET"),
    ("error connecting to postgresql://u:SE%20CRET@host (timeout)", "CRET"),
])
def test_every_credential_form_is_masked(url, secret):
    from autoprune.backends.storage import mask_url

    masked = mask_url(url)
    assert secret not in masked and "***" in masked


def test_a_url_missing_a_slash_is_refused_not_taken_as_a_journal_path(tmp_path, monkeypatch):
    """``postgresql:/u:pw@host/db`` would become a private journal file (and folders named after the password)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudyError, match="missing a slash") as info:
        make_storage("postgresql:/u:SECRET@host/db")
    assert "SECRET" not in str(info.value)
    assert not any(tmp_path.iterdir()), "nothing created"


# --- issue 29, point 1: no form of credential printed or written ------------------------------------------------

ODD_PASSWORD = "Zq?9#x K@w/1"  # every character a URL's password must percent-encode


@pytest.fixture(scope="module")
def odd_role(postgres):
    """A role on the test server whose password holds ``? # space @ /``, and its percent-encoded URL."""
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=postgres.port, user="autoprune", password=PG_PASSWORD,
                                  dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE ROLE odd LOGIN CREATEDB PASSWORD %s", (ODD_PASSWORD,))
        cursor.execute("CREATE DATABASE odd_db OWNER odd")
    connection.close()
    from urllib.parse import quote

    return f"postgresql://odd:{quote(ODD_PASSWORD, safe='')}@127.0.0.1:{postgres.port}/odd_db"


def _leaked(text: str) -> list[str]:
    """The pieces of the odd password that appear in ``text``."""
    from urllib.parse import quote

    pieces = {ODD_PASSWORD, quote(ODD_PASSWORD, safe=""), "Zq?9", "#x K", "K@w/1", "x K@w"}
    return [p for p in pieces if p in text]


def test_a_percent_encoded_password_opens_the_study_and_is_never_printed(odd_role, tmp_path):
    """The URL as it must be written works on a real server, and the CLI's study line masks it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUTOPRUNE_STORAGE": odd_role}
    proc = subprocess.run(cli("search", "--space", TINY, "--trials", "1", "--out", tmp_path / "run", "--no-progress"),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "postgresql://odd:***@127.0.0.1" in proc.stdout + proc.stderr
    assert not _leaked(proc.stdout + proc.stderr)
    marker = next((tmp_path / "run" / "candidates").glob("*/.autoprune-study.json")).read_text()
    assert not _leaked(marker) and "odd:***@" in marker, "the marker file names the storage, masked"


@pytest.mark.parametrize("raw", [
    "postgresql://odd:{pw}@127.0.0.1:{port}/odd_db",                    # ? # space @ / raw in the userinfo
    "postgresql://odd:Zq?9#xK@127.0.0.1:{port}/odd_db",                 # ? and # only
    "postgresql://odd:cd@Sekr3t@127.0.0.1:{port}/odd_db",               # a raw @ (the driver quoted the rest)
    "postgresql://odd@127.0.0.1:{port}/odd_db?password=sec ret9",       # a space in a query password
])
def test_a_url_whose_password_needs_encoding_is_refused_with_exit_2_and_never_printed(postgres, tmp_path, raw):
    url = raw.format(pw=ODD_PASSWORD, port=postgres.port)
    for how in ("option", "environment"):
        args = ["search", "--out", tmp_path / how, "--no-progress"] + (["--storage", url] if how == "option" else [])
        env = {**os.environ, "PYTHONPATH": str(REPO)} | ({"AUTOPRUNE_STORAGE": url} if how == "environment" else {})
        proc = subprocess.run(cli(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 2, text
        assert "percent-encode" in text.replace("\n", " ")
        assert not _leaked(text) and "Sekr3t" not in text and "ret9" not in text and "sec " not in text, text
        assert not (tmp_path / how).exists(), "refused before anything was created"


def test_a_url_without_a_scheme_is_refused_and_its_password_masked(tmp_path):
    proc = subprocess.run(cli("search", "--storage", "autoprune:change-me@127.0.0.1:5432/autoprune", "--out",
                              tmp_path / "run", "--no-progress"), cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert proc.returncode == 2 and "change-me" not in proc.stdout + proc.stderr, proc.stderr
    assert "missing a slash or its scheme" in proc.stderr.replace("\n", " ")


def test_a_driver_message_quoting_part_of_the_password_is_redacted():
    """Whatever a parser made of the URL, no piece of its password survives in a message."""
    from autoprune.backends.storage import redact

    spec = "postgresql://u:Abc@cdSekr3t@127.0.0.1/db"  # SQLAlchemy splits at the first @, others at the last
    message = 'could not translate host name "cdSekr3t@127.0.0.1" for postgresql://u:Abc@cdSekr3t@127.0.0.1/db'
    assert "Sekr3t" not in redact(message, spec) and "Abc" not in redact(message, spec)


def test_an_old_marker_with_a_plaintext_password_is_masked_when_read(tmp_path):
    """A candidates directory claimed before masking covered every form: its refusal shows no password."""
    import json

    from autoprune.loading import STUDY_MARKER, claim_artifacts
    from autoprune.study import StudyMeta

    (tmp_path / STUDY_MARKER).write_text(json.dumps({"study_id": "other", "study_name": "s",
                                                     "storage": "postgresql://u:Zq?9#xK@h/db"}))
    with pytest.raises(StudyError, match="another study") as info:
        claim_artifacts(tmp_path, StudyMeta(study_id="mine"), study_name="s", storage="sqlite:///x.db")
    assert "Zq?9" not in str(info.value) and "#xK" not in str(info.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_study_is_refused(url, tmp_path):
    """It could never be resumed; ``sqlite://`` said only StorageInternalError."""
    proc = subprocess.run(cli("search", "--storage", url, "--out", tmp_path / "run", "--no-progress"), cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert proc.returncode == 2 and "in-memory SQLite" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()
