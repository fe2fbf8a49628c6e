"""Fault injection (issue 20): real signals to real ``autoprune`` processes at each phase, and kill -9 of one of
two workers, then the same command again. Prints (and writes) a table: fault, exit code, trials complete
after the resume, trials lost (complete before the fault, not complete after: must be 0), seeds present.

Each search runs on the embedded digits default (a digits CNN trained once and copied into each run
directory), 3 trials (6 with two workers), one torch thread. The phases are made long enough to be hit:

* ``start-up scan``: the signal goes once the study exists and its seeds are not yet queued (timing batch
  256, so the scan takes seconds);
* ``timing``: a trial is running and its latency is being timed (timing batch 2048: seconds per timing;
  the signal goes 0.3 s after the trial starts);
* ``fine-tune``: a trial is fine-tuning (600 steps; the signal goes 2 s after the trial starts, its pruning
  and timing at batch 8 take well under a second);
* ``export``: ``autoprune export`` of the finished study, 1 s after it starts;
* ``kill -9``: one of two workers on one study (a journal file, and PostgreSQL when its binaries are
  installed), killed while it runs a trial; the other finishes;
* ``promotion``: a multi-fidelity search (``--fidelity on``: rungs at 0, 200 and 600 steps) signalled or
  killed (-9) while a promoted trial (rung 1 or 2) fine-tunes, then the same command again;
* ``int8``: a search whose every candidate is int8 (``quantize: [int8_static]``, ONNX Runtime), signalled
  while a trial quantizes, times and fine-tunes (25 steps: quantizing is a large share of the trial);
* ``analyze``: ``autoprune analyze`` signalled mid-scan (timing batch 256); no ``analysis.json`` may be left
  half-written, and the same command again finishes.

    python benchmarks/fault_injection.py            # about 20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

#: the distributed tests' tiny space, with a fine-tune long enough to be interrupted
SPACE = (REPO / "tests" / "data" / "workers.yaml").read_text().replace("max_steps: 25", "max_steps: 600")


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "autoprune.cli", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def interruptible() -> None:
    """In the child: SIGINT as a terminal delivers it (a background shell job starts with it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(run_dir: Path, weights: Path, *args: object) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / weights.name).is_file():
        shutil.copy(weights, run_dir / weights.name)
    log = open(run_dir / "worker.log", "a")
    return subprocess.Popen(cli("search", "--out", run_dir, "--no-progress", "--torch-threads", "1", *args),
                            cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=interruptible)


def wait_for(condition, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def query(db: Path, sql: str) -> list[tuple]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def study_state(storage: str, name: str) -> dict:
    """Complete trial numbers and whether the seeds are queued, read through autoprune's own book."""
    from autoprune.backends.book import StudyBook
    from autoprune.backends.storage import make_storage

    study = StudyBook.load(make_storage(storage, heartbeat_interval=None), study_name=name).study
    complete = {t.number for t in study.trials if t.state.name == "COMPLETE"}
    seeded = bool(study.user_attrs.get("seeded")) and any("fixed_params" in t.system_attrs for t in study.trials)
    return {"complete": complete, "seeded": seeded}


def signal_search(work: Path, weights: Path, *, phase: str, sig: signal.Signals) -> dict:
    run = work / f"{phase}-{sig.name}".replace(" ", "_")
    space = work / "space.yaml"
    batch = {"start-up scan": 256, "timing": 2048, "fine-tune": 8}[phase]
    args = ("--space", space, "--trials", 3, "--batch-size", batch, "--study-name", "digits")
    proc = start(run, weights, *args)
    db = run / "study.db"
    attrs = "select key from study_user_attributes"
    if phase == "start-up scan":
        hit = wait_for(lambda: ("seeding_by",) in query(db, attrs) or proc.poll() is not None)
        hit = hit and ("seeded",) not in query(db, attrs)
    else:
        hit = wait_for(lambda: query(db, "select count(*) from trials where state = 'RUNNING'") not in ([], [(0,)])
                       or proc.poll() is not None)
        time.sleep(0.3 if phase == "timing" else 2.0)
    return signal_and_resume(run, weights, args, proc, hit=hit, sig=sig, fault=f"{sig.name} during {phase}")


def signal_and_resume(run: Path, weights: Path, args: tuple, proc: subprocess.Popen, *, hit: bool,
                      sig: signal.Signals, fault: str, rest: float = 0.0) -> dict:
    """Signal the search (still running: the signal lands in the phase), then the same command again after
    ``rest`` seconds; what was complete before and after, and the exit codes."""
    hit = hit and proc.poll() is None
    db = run / "study.db"
    storage = f"sqlite:///{db}"
    before = study_state(storage, "digits")["complete"] if db.is_file() else set()
    proc.send_signal(sig)
    code = proc.wait(timeout=300)
    time.sleep(rest)
    again = start(run, weights, *args).wait(timeout=1200)
    after = study_state(storage, "digits")
    return {"fault": fault, "hit": hit, "exit": code, "resume_exit": again, "complete": len(after["complete"]),
            "lost": len(before - after["complete"]), "seeds": after["seeded"]}


def signal_export(work: Path, weights: Path, sig: signal.Signals) -> dict:
    run = work / f"export-{sig.name}"
    args = ("--space", work / "space.yaml", "--trials", 2, "--batch-size", 8, "--study-name", "digits")
    start(run, weights, *args).wait(timeout=900)
    storage = f"sqlite:///{run / 'study.db'}"
    before = study_state(storage, "digits")["complete"]
    proc = subprocess.Popen(cli("export", "--out", run, "--to", run / "exported"), cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=interruptible)
    time.sleep(1.0)
    proc.send_signal(sig)
    code = proc.wait(timeout=300)
    after = study_state(storage, "digits")
    return {"fault": f"{sig.name} during export", "hit": True, "exit": code, "resume_exit": None,
            "complete": len(after["complete"]), "lost": len(before - after["complete"]), "seeds": after["seeded"]}


RUNNING_PROMOTED = ("select count(*) from trials t join trial_user_attributes a on t.trial_id = a.trial_id "
                    "where t.state = 'RUNNING' and a.key = 'rung' and a.value_json != '0'")


def signal_promotion(work: Path, weights: Path, sig: signal.Signals) -> dict:
    """A promoted trial (rung >= 1) of a multi-fidelity search, signalled (or killed) 2 s into its fine-tune."""
    run = work / f"promotion-{sig.name}"
    args = ("--space", work / "space.yaml", "--fidelity", "on", "--trials", 8, "--batch-size", 8,
            "--study-name", "digits", "--heartbeat-interval", 1)
    proc = start(run, weights, *args)
    db = run / "study.db"
    hit = wait_for(lambda: query(db, RUNNING_PROMOTED) not in ([], [(0,)]) or proc.poll() is not None, timeout=600)
    time.sleep(2.0)
    # after kill -9, past the heartbeat's grace (3 intervals): the resume fails the dead trial and retries it
    return signal_and_resume(run, weights, args, proc, hit=hit, sig=sig, fault=f"{sig.name} during a promoted trial",
                             rest=4.0 if sig == signal.SIGKILL else 0.0)


INT8_SPACE = (REPO / "tests" / "data" / "tiny_int8.yaml").read_text().replace("max_steps: 2", "max_steps: 25")


def signal_int8(work: Path, weights: Path, sig: signal.Signals) -> dict:
    run = work / f"int8-{sig.name}"
    space = work / "int8.yaml"
    space.write_text(INT8_SPACE)
    args = ("--space", space, "--runtime", "onnxruntime", "--trials", 4, "--batch-size", 8, "--study-name", "digits")
    proc = start(run, weights, *args)
    db = run / "study.db"
    running = "select count(*) from trials where state = 'RUNNING'"
    hit = wait_for(lambda: (query(db, running) not in ([], [(0,)]) and
                            query(db, "select count(*) from trials where state = 'COMPLETE'") not in ([], [(0,)]))
                   or proc.poll() is not None)
    time.sleep(0.5)
    row = signal_and_resume(run, weights, args, proc, hit=hit, sig=sig, fault=f"{sig.name} during an int8 trial")
    return {**row, "best_int8": (run / "best" / "model.int8.onnx").is_file()}


def signal_analyze(work: Path, weights: Path, sig: signal.Signals) -> dict:
    run = work / f"analyze-{sig.name}"
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, run / weights.name)
    command = cli("analyze", "--out", run, "--space", work / "space.yaml", "--batch-size", 256)
    log = open(run / "analyze.log", "w")
    proc = subprocess.Popen(command, cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=interruptible)
    time.sleep(6.0)  # the cached model loaded, the scan under way (it takes tens of seconds at batch 256)
    hit = proc.poll() is None
    proc.send_signal(sig)
    code = proc.wait(timeout=300)
    log.close()
    said = " ".join((run / "analyze.log").read_text().split())
    half = (run / "analysis.json").exists()
    again = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, timeout=900).returncode
    whole = (run / "analysis.json").is_file() and bool(json.loads((run / "analysis.json").read_text()).get("units"))
    return {"fault": f"{sig.name} during analyze", "hit": hit and not half, "exit": code, "resume_exit": again,
            "complete": int(whole), "lost": int(half), "seeds": "nothing of it was written" in said}


def kill_worker(work: Path, weights: Path, storage: str, label: str) -> dict:
    from autoprune.backends.book import StudyBook
    from autoprune.backends.storage import make_storage

    args = ("--space", work / "space.yaml", "--storage", storage, "--study-name", "shared", "--trials", 6,
            "--heartbeat-interval", 1, "--batch-size", 8, "--artifacts", work / f"kill-{label}" / "candidates")
    victim = start(work / f"kill-{label}" / "a", weights, *args)
    survivor = start(work / f"kill-{label}" / "b", weights, *args)

    def victim_running() -> bool:
        try:
            study = StudyBook.load(make_storage(storage, heartbeat_interval=None), study_name="shared").study
        except Exception:  # noqa: BLE001 (the study is being created)
            return False
        return any(str(t.user_attrs.get("worker", "")).endswith(f":{victim.pid}") for t in study.trials
                   if t.state.name == "RUNNING") and any(t.state.name == "COMPLETE" for t in study.trials)

    hit = wait_for(victim_running)
    before = study_state(storage, "shared")["complete"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    code = survivor.wait(timeout=900)
    after = study_state(storage, "shared")
    return {"fault": f"kill -9 of one of two workers ({label})", "hit": hit, "exit": code, "resume_exit": None,
            "complete": len(after["complete"]), "lost": len(before - after["complete"]), "seeds": after["seeded"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="autoprune-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "space.yaml").write_text(SPACE)
    from autoprune.demo import WEIGHTS_FILE, pretrained_digits_cnn

    pretrained_digits_cnn(work / "weights")
    weights = work / "weights" / WEIGHTS_FILE
    rows = []
    for phase in ("start-up scan", "timing", "fine-tune"):
        for sig in (signal.SIGINT, signal.SIGTERM):
            rows.append(signal_search(work, weights, phase=phase, sig=sig))
            print(rows[-1], flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        rows.append(signal_export(work, weights, sig))
        print(rows[-1], flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        rows.append(signal_promotion(work, weights, sig))
        print(rows[-1], flush=True)
    rows.append(signal_int8(work, weights, signal.SIGINT))
    print(rows[-1], flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        rows.append(signal_analyze(work, weights, sig))
        print(rows[-1], flush=True)
    rows.append(kill_worker(work, weights, str(work / "kill-journal.log"), "journal"))
    print(rows[-1], flush=True)
    try:
        from tests.backends.conftest import PostgresServer, _pg_bindir

        bindir = _pg_bindir()
    except Exception:  # noqa: BLE001 (pytest or the binaries missing)
        bindir = None
    if bindir is not None:
        server = PostgresServer(bindir)
        try:
            rows.append(kill_worker(work, weights, server.database("faults"), "PostgreSQL"))
            print(rows[-1], flush=True)
        finally:
            server.stop()
    lines = ["| fault | hit the phase | exit code | resume exit | trials complete | trials lost | seeds present |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {'yes' if r['hit'] else 'no'} | {r['exit']} | "
                     f"{'-' if r['resume_exit'] is None else r['resume_exit']} | {r['complete']} | {r['lost']} | "
                     f"{'yes' if r['seeds'] else 'no'} |")
    lines.append("")
    lines.append("analyze rows: trials complete = analysis.json whole after the rerun (1), trials lost = a file "
                 "left by the interrupted run (0), seeds present = the message said nothing was written; int8 rows: "
                 + ", ".join(f"best/model.int8.onnx present: {r['best_int8']}" for r in rows if "best_int8" in r))
    table = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fault_injection.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "fault_injection.md").write_text(table + "\n")
    print(table)
    assert all(r["lost"] == 0 for r in rows), "a finished trial was lost"


if __name__ == "__main__":
    main()
