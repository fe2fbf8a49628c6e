"""Scaling out on one machine: N trials with 1 worker versus 2 workers, for both backends.

Target (issue 4): with fine-tuning dominating trial time, 2 workers on 2 cores complete the same
number of trials at least 1.6x faster than 1 worker. Each worker (an ``autoprune search`` process for
the Optuna backend, a Ray trial for the Ray backend) uses one torch thread so they do not fight.

The fine-tune-heavy space (``benchmarks/data/finetune_heavy.yaml``: 200 fine-tune steps per trial) makes
fine-tuning the bulk of a trial, as it is for real models. Reported per run:

* ``wall_s``: from launching the command(s) to the last exit, start-up included (Python imports,
  Ray start-up, the study's creation);
* ``trials_s``: from the first trial's start to the last trial's end, read from the study;
* the speedups ``1 worker / 2 workers`` of both.

Writes benchmarks/results/workers_speedup.json.

    python benchmarks/workers_speedup.py [--trials 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoprune.backends.book import StudyBook
from autoprune.backends.storage import make_storage
from autoprune.demo import WEIGHTS_FILE, pretrained_digits_cnn

HERE = Path(__file__).resolve().parent
SPACE = HERE / "data" / "finetune_heavy.yaml"


def _run(workers: int, backend: str, trials: int, root: Path, weights: Path) -> dict:
    run = root / f"{backend}-{workers}"
    run.mkdir(parents=True)
    storage = run / "study.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--space", str(SPACE), "--trials", str(trials), "--seed", "0", "--no-progress", "--storage",
              str(storage), "--study-name", "bench", "--artifacts", str(run / "candidates")]
    commands = []
    if backend == "optuna":
        for i in range(workers):
            out = run / f"worker{i}"
            out.mkdir()
            shutil.copy(weights, out / WEIGHTS_FILE)
            commands.append([sys.executable, "-m", "autoprune.cli", "search", *common, "--out", str(out),
                             "--torch-threads", "1"])
    else:
        shutil.copy(weights, run / WEIGHTS_FILE)
        commands.append([sys.executable, "-m", "autoprune.cli", "search", *common, "--out", str(run),
                         "--backend", "ray", "--max-concurrent", str(workers), "--cpus-per-trial", "1"])
    start = time.perf_counter()
    procs = []
    for command in commands:
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(0.5)  # the first worker creates the study
    for proc in procs:
        output, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{backend} worker failed:\n{output[-3000:]}")
    wall = time.perf_counter() - start
    study = StudyBook.load(make_storage(str(storage), heartbeat_interval=None), study_name="bench").study
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    finetune = sum(t.user_attrs.get("timings", {}).get("finetune", 0.0) for t in done)
    total = sum(t.user_attrs.get("timings", {}).get("trial", 0.0) for t in done)
    return {"backend": backend, "workers": workers, "complete": len(done), "wall_s": round(wall, 2),
            "trials_s": round((last - first).total_seconds(), 2),
            "finetune_share_of_trial_time": round(finetune / total, 3) if total else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--backends", nargs="+", default=["optuna", "ray"])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="autoprune-workers-"))
    pretrained_digits_cnn(root)
    weights = root / WEIGHTS_FILE
    rows, summary = [], {}
    for backend in args.backends:
        one = _run(1, backend, args.trials, root, weights)
        two = _run(2, backend, args.trials, root, weights)
        rows += [one, two]
        summary[backend] = {"speedup_wall": round(one["wall_s"] / two["wall_s"], 2),
                            "speedup_trials": round(one["trials_s"] / two["trials_s"], 2)}
        print(f"{backend}: 1 worker {one['wall_s']}s ({one['trials_s']}s of trials), 2 workers {two['wall_s']}s "
              f"({two['trials_s']}s of trials): x{summary[backend]['speedup_wall']} wall, "
              f"x{summary[backend]['speedup_trials']} trials; fine-tune share {one['finetune_share_of_trial_time']}",
              flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
              "python": platform.python_version(), "trials": args.trials, "runs": rows, "speedup": summary,
              "target": "2 workers >= 1.6x faster than 1"}
    out = HERE / "results" / "workers_speedup.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
