"""Real signals to a real ``autoprune search`` process while a trial fine-tunes (issue 20, point 1): Ctrl-C
exits 130 and SIGTERM 143, the trial is recorded interrupted (not left RUNNING for a heartbeat to fail),
and it does not count, so the same command runs it again."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from autoprune.backends.book import INTERRUPTED, StudyBook, attrs_of
from autoprune.backends.storage import make_storage
from tests.backends.conftest import WORKERS_SPACE, log_of, start_worker, wait, wait_until

#: a fine-tune far longer than the test waits: the signal always arrives while Lightning fits
ENDLESS = WORKERS_SPACE.read_text().replace("max_steps: 25", "max_steps: 1000000")


def _running(db) -> bool:
    if not db.is_file():
        return False
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0] > 0
    except sqlite3.Error:  # the study's tables are being created
        return False


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_a_signal_while_fine_tuning_exits_with_its_code_and_records_the_trial_interrupted(tmp_path, digits_weights,
                                                                                         sig, code):
    space = tmp_path / "endless.yaml"
    space.write_text(ENDLESS)
    run_dir = tmp_path / "run"
    proc = start_worker(run_dir, digits_weights, "--trials", "3", "--space", space,  # the last --space wins
                        "--batch-size", "8", "--no-interleave")
    db = run_dir / "study.db"
    wait_until(lambda: _running(db) or proc.poll() is not None, timeout=300, what="a running trial")
    assert proc.poll() is None, log_of(run_dir)
    time.sleep(3)  # pruning and timing the digits CNN take well under a second: now it fine-tunes
    proc.send_signal(sig)
    assert wait(proc, run_dir, timeout=120) == code, log_of(run_dir)
    study = StudyBook.load(make_storage(f"sqlite:///{db}", heartbeat_interval=None), study_name="digits").study
    states = [(t.state.name, attrs_of(t).get("failure_reason")) for t in study.trials]
    assert ("FAIL", INTERRUPTED) in states, states
    assert all(state != "RUNNING" for state, _ in states), states
    assert "run the same command again to resume" in log_of(run_dir)


def _study_attrs(db) -> set[str]:
    if not db.is_file():
        return set()
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return {row[0] for row in conn.execute("select key from study_user_attributes")}
    except sqlite3.Error:
        return set()


def test_ctrl_c_during_the_start_up_scan_leaves_the_seeds_to_the_next_run(tmp_path, digits_weights):
    """Issue 20, point 5, with a real signal: Ctrl-C while the new study's seeds are being computed (it exists,
    its seeds are not queued), then the same command: that run queues them and the search runs them."""
    run_dir = tmp_path / "run"
    args = ("--trials", "2", "--batch-size", "256")  # a larger timing batch: a start-up scan of seconds
    proc = start_worker(run_dir, digits_weights, *args)
    db = run_dir / "study.db"
    wait_until(lambda: "seeding_by" in _study_attrs(db) or proc.poll() is not None, timeout=300,
               what="the study created, its seeds being computed")
    assert "seeded" not in _study_attrs(db), "the signal must arrive before the seeds are queued"
    proc.send_signal(signal.SIGINT)
    assert wait(proc, run_dir, timeout=120) == 130, log_of(run_dir)
    study = StudyBook.load(make_storage(f"sqlite:///{db}", heartbeat_interval=None), study_name="digits").study
    assert "seeded" not in study.user_attrs and not study.trials
    again = start_worker(run_dir, digits_weights, *args)
    assert wait(again, run_dir) == 0, log_of(run_dir)
    study = StudyBook.load(make_storage(f"sqlite:///{db}", heartbeat_interval=None), study_name="digits").study
    assert study.user_attrs.get("seeded") is True
    seeded = [t for t in study.trials if "fixed_params" in t.system_attrs]
    assert len(seeded) >= 5, "the dense, uniform and scaled seeds are queued"
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2


FINITE = ENDLESS.replace("max_steps: 1000000", "max_steps: 600")


def test_a_database_that_stops_mid_trial_gets_one_clear_message_and_no_traceback(tmp_path, digits_weights,
                                                                                pg_bindir):
    """Issue 20, point 8: PostgreSQL stopped while a trial fine-tunes. The worker exits 1 with one paragraph
    saying the storage stopped answering and that the same command resumes, and prints no traceback (the
    heartbeat thread's error included) without --debug."""
    from tests.backends.conftest import PostgresServer

    server = PostgresServer(pg_bindir)  # its own server: this test stops it
    try:
        url = server.database("outage")
        space = tmp_path / "finite.yaml"
        space.write_text(FINITE)
        run_dir = tmp_path / "run"
        proc = start_worker(run_dir, digits_weights, "--storage", url, "--study-name", "outage", "--trials", "3",
                            "--space", space, "--batch-size", "8", "--heartbeat-interval", "1")

        def running() -> bool:
            try:
                study = StudyBook.load(make_storage(url, heartbeat_interval=None), study_name="outage").study
            except Exception:  # the study is being created
                return False
            return any(t.state.name == "RUNNING" for t in study.trials)

        wait_until(lambda: running() or proc.poll() is not None, timeout=300, what="a running trial")
        assert proc.poll() is None, log_of(run_dir)
    finally:
        server.stop()
    assert wait(proc, run_dir, timeout=300) == 1, log_of(run_dir)
    log = log_of(run_dir)
    assert "the study's storage stopped answering" in log and "run the same command to resume" in log
    assert "Traceback" not in log, log[-3000:]
