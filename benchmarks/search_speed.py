"""Speed of the embedded default: `autoprune search --budget-ms <half the dense latency> --trials 20`.

Targets (issue 3): under 5 minutes and 2 GB peak memory on 2 cores; search overhead under 5% of the
total. Runs the real console script in a fresh run directory and prints wall time, the child's peak
resident memory, and the CLI's own time breakdown. Writes benchmarks/results/search_speed.json.

    python benchmarks/search_speed.py [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from autoprune.demo import pretrained_digits_cnn
from autoprune.measure import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    run = Path(tempfile.mkdtemp(prefix="autoprune-speed-"))
    dense = measure(pretrained_digits_cnn(run), torch.randn(1, 1, 8, 8))  # caches the base model in the run dir
    budget = round(dense.latency_ms / 2, 4)
    command = [sys.executable, "-m", "autoprune.cli", "search", "--budget-ms", str(budget), "--trials",
               str(args.trials), "--seed", "0", "--out", str(run), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(proc.stdout[-3000:])
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        raise SystemExit(proc.returncode)
    pareto = json.loads((run / "pareto.json").read_text())
    report = {"machine": platform.platform(), "cores": torch.get_num_threads(), "trials": args.trials,
              "dense_latency_ms": dense.latency_ms, "budget_ms": budget, "wall_s": wall, "peak_rss_mb": peak_mb,
              "front_size": len(pareto["pareto"]), "best_trial": pareto["best"],
              "time_line": next((l for l in proc.stdout.splitlines() if l.startswith("time:")), "")}
    print(f"dense {dense.latency_ms:.3f} ms, budget {budget} ms: {args.trials} trials in {wall:.1f}s "
          f"(target < 300 s), peak RSS {peak_mb:.0f} MB (target < 2048 MB)")
    out = Path(__file__).parent / "results" / "search_speed.json"
    out.write_text(json.dumps(report, indent=2))
    shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
