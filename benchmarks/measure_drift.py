"""Does timing against the dense model cancel the machine's drift?

A pruned model's latency relative to its dense model, measured ``--rounds`` times two ways:

* independent: ``measure(dense)`` then ``measure(pruned)``, each timed alone, ratio of the two medians;
* interleaved: ``measure(pruned, reference=dense)``, samples of the two taken in alternation (what
  ``search()`` does), ratio to the reference's single calibrated figure; once per ``--repeats`` value
  (timed samples per timing), to show what fewer samples cost in repeatability.

The model is the ResNet-style CNN of benchmarks/compare_policies.py (digits input, 32/64 channels,
2 blocks per stage) with 50% of its channels removed (round_to 8). Prints the range of each ratio
and the seconds per timing; writes benchmarks/results/measure_drift.json.

    python benchmarks/measure_drift.py [--rounds 12] [--repeats 7 11 21]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from autoprune.layers import output_layers, prunable_layers
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.policy import Policy
from autoprune.prune import prune
from autoprune.zoo import ResNetCNN

RESULTS = Path(__file__).resolve().parent / "results"


def spread(values: list[float]) -> dict:
    return {"min": min(values), "max": max(values), "median": statistics.median(values),
            "max_over_min": max(values) / min(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--repeats", type=int, nargs="+", default=[HardwareProfile().repeats, 11, 21],
                        help="timed samples per interleaved timing, one series each; the first is reported "
                             "as the interleaved figure (default: the profile's own, then 11 and 21)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ResNetCNN(in_channels=1, widths=(32, 64), blocks=2).eval()
    x = torch.randn(1, 1, 8, 8)
    layers = [n for n in prunable_layers(model) if n not in output_layers(model, x)]
    pruned = prune(model, Policy.uniform(layers, sparsity=0.5, method="l1_structured", round_to=8), x)
    profile = HardwareProfile()

    independent, pruned_ms, seconds_plain = [], [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        dense = measure(model, x, profile).latency_ms
        small = measure(pruned, x, profile).latency_ms
        seconds_plain.append((time.perf_counter() - started) / 2)
        independent.append(small / dense)
        pruned_ms.append(small)

    by_repeats = {}
    for repeats in args.repeats:
        timing = replace(profile, repeats=repeats)
        reference = LatencyReference.calibrate(model, x, timing)
        ratios, seconds = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            ratios.append(measure(pruned, x, timing, reference=reference).latency_ms / reference.latency_ms)
            seconds.append(time.perf_counter() - started)
        by_repeats[repeats] = {"ratio": spread(ratios), "seconds_per_timing": statistics.mean(seconds)}
    default = by_repeats[args.repeats[0]]

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, no GPU",
        "torch": torch.__version__, "rounds": args.rounds,
        "independent_ratio": spread(independent), "independent_pruned_ms": spread(pruned_ms),
        "interleaved_ratio": default["ratio"], "interleaved_repeats": args.repeats[0],
        "seconds_per_timing": {"independent": statistics.mean(seconds_plain),
                               "interleaved": default["seconds_per_timing"]},
        "interleaved_by_repeats": by_repeats,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "measure_drift.json").write_text(json.dumps(report, indent=2) + "\n")
    for key in ("independent_ratio", "interleaved_ratio", "independent_pruned_ms"):
        s = report[key]
        print(f"{key:<24} {s['min']:.3f} .. {s['max']:.3f} (median {s['median']:.3f}, max/min {s['max_over_min']:.2f})")
    print(f"seconds per timing: independent {report['seconds_per_timing']['independent']:.2f}, "
          f"interleaved {report['seconds_per_timing']['interleaved']:.2f}")
    for repeats, entry in by_repeats.items():
        s = entry["ratio"]
        print(f"interleaved, {repeats:>2} repeats: {s['min']:.3f} .. {s['max']:.3f} (max/min {s['max_over_min']:.2f}), "
              f"{entry['seconds_per_timing']:.2f} s per timing")


if __name__ == "__main__":
    main()
