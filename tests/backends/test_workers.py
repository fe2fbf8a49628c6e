"""Many worker processes on one study: PostgreSQL (Optuna heartbeats) and a journal file (liveness stamps).

Each test starts real ``autoprune search`` processes on the embedded digits default; the storage is a
real PostgreSQL server or a journal file in a temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from optuna.trial import TrialState

from autoprune.backends.book import StudyBook, attrs_of
from autoprune.backends.storage import make_storage
from tests.backends.conftest import PG_PASSWORD, REPO, cli, log_of, start_worker, wait, wait_until

N_TRIALS = 6


def _study(storage: str, name: str):
    return StudyBook.load(make_storage(storage, heartbeat_interval=None), study_name=name).study


def _workers(tmp_path, weights, storage, *extra):
    args = ["--storage", storage, "--study-name", "shared", "--trials", N_TRIALS, "--heartbeat-interval", 1,
            "--artifacts", tmp_path / "candidates", *extra]
    dirs = [tmp_path / "worker_a", tmp_path / "worker_b"]
    return dirs, [start_worker(d, weights, *args) for d in dirs]


def _pid_of(trial) -> int:
    return int(str(trial.user_attrs.get("worker", ":0")).rpartition(":")[2])


def test_two_workers_finish_exactly_the_total_with_unique_numbers(tmp_path, pg_url, digits_weights):
    """Two workers on one PostgreSQL study stop at --trials in total, share the front, and both run trials."""
    dirs, procs = _workers(tmp_path, digits_weights, pg_url)
    for d, p in zip(dirs, procs):
        assert wait(p, d) == 0, log_of(d)
    trials = _study(pg_url, "shared").get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert {_pid_of(t) for t in complete} == {p.pid for p in procs}, "each worker drew trials"
    for d in dirs:  # every worker's result files hold the whole study's trials
        pareto = json.loads((d / "pareto.json").read_text())
        assert pareto["pareto"] and len((d / "trials.csv").read_text().strip().splitlines()) == N_TRIALS + 1
    report = subprocess.run(cli("report", "--storage", pg_url, "--study-name", "shared", "--out", tmp_path / "r"),
                            cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert report.returncode == 0, report.stderr
    assert f"{N_TRIALS} complete" in report.stdout
    everything = report.stdout + report.stderr + "".join(log_of(d) for d in dirs)
    everything += "".join((tmp_path / "r" / f).read_text() for f in ("pareto.json", "trials.csv"))
    assert PG_PASSWORD not in everything and "***" in everything


def _kill_one_worker_mid_trial(tmp_path, weights, storage):
    dirs, (victim, survivor) = _workers(tmp_path, weights, storage)
    study = None

    def victim_is_in_a_trial() -> bool:
        nonlocal study
        try:
            study = study or _study(storage, "shared")
        except Exception:
            return False
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if _pid_of(t) == victim.pid]
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        return bool(running) and len(done) >= 1

    for _ in range(20):  # a trial seen running may finish before the signal lands: freeze the victim, then look
        wait_until(victim_is_in_a_trial, what="the victim worker to be in a trial")
        os.kill(victim.pid, signal.SIGSTOP)
        killed = [t.number for t in study.get_trials(states=(TrialState.RUNNING,)) if _pid_of(t) == victim.pid]
        if killed:
            break
        os.kill(victim.pid, signal.SIGCONT)  # it was between trials when it froze: wait for its next one
    assert killed, "the victim worker was never caught in a trial"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    # A killed worker finishes nothing, and its trial stays RUNNING for the 3 s grace before it is reaped.
    before = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert wait(survivor, dirs[1]) == 0, log_of(dirs[1])
    trials = _study(storage, "shared").get_trials()
    by_number = {t.number: t for t in trials}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS, [(t.number, t.state) for t in trials]
    assert len(by_number) == len(trials), "no duplicate trial numbers"
    assert all(by_number[n].state == TrialState.COMPLETE and by_number[n].values == v for n, v in before.items()), \
        "no complete trial lost"
    assert by_number[killed[0]].state == TrialState.FAIL
    # Re-queued with its parameters; it runs unless queued trials (seeds) already filled the total.
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.WAITING)
    assert by_number[killed[0]].params.items() <= retries[0].params.items()
    if "://" not in storage:  # a journal file: the dead worker's liveness stamp is removed when it is reaped
        assert not list(Path(storage + ".alive").iterdir()), "no stale liveness file"


def test_killed_postgres_worker_trial_is_failed_and_requeued(tmp_path, pg_url, digits_weights):
    """kill -9 of a worker mid-trial: its trial fails by heartbeat, is re-run, and the study reaches the total."""
    _kill_one_worker_mid_trial(tmp_path, digits_weights, pg_url)


def test_killed_journal_worker_trial_is_failed_and_requeued(tmp_path, digits_weights):
    """The same with a journal file, where autoprune's liveness stamps replace Optuna's heartbeat."""
    _kill_one_worker_mid_trial(tmp_path, digits_weights, str(tmp_path / "study.log"))


def test_two_journal_workers_promote_without_duplicates_and_stop_at_the_total(tmp_path, digits_weights):
    """Multi-fidelity with two workers on one journal file: promotions are decided from the study, none is run
    twice, every promoted trial continues a feasible trial of the rung below, and the total is --trials."""
    n_trials = 14
    args = ["--storage", tmp_path / "study.log", "--study-name", "shared", "--trials", n_trials, "--fidelity", "on",
            "--artifacts", tmp_path / "candidates", "--seed", 0]
    dirs = [tmp_path / "worker_a", tmp_path / "worker_b"]
    procs = [start_worker(d, digits_weights, *args) for d in dirs]
    for d, p in zip(dirs, procs):
        assert wait(p, d) == 0, log_of(d)
    trials = _study(str(tmp_path / "study.log"), "shared").get_trials()
    complete = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
    assert len(complete) == n_trials
    promoted = [attrs_of(t) for t in complete.values() if attrs_of(t).get("parent") is not None]
    assert promoted, "some candidates were promoted"
    pairs = [(a["parent"], a["rung"]) for a in promoted]
    assert len(pairs) == len(set(pairs)), "a promotion ran twice"
    for parent, rung in pairs:
        assert attrs_of(complete[parent])["rung"] == rung - 1 and attrs_of(complete[parent])["feasible"]
