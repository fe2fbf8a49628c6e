"""Time to quality: today's search (every trial fully fine-tuned) vs the multi-fidelity search vs random search.

Per model and seed, side by side in one run, on the digits models of compare_policies.py (the digits CNN
and the ResNet-style CNN) and a wider ResNet (``resnet_wide``, trials of seconds to tens of seconds):

* ``full``: ``search()`` over ``search_spaces/default.yaml`` with ``fidelity=False``, ``--trials`` trials;
* ``multi``: the same space with ``fidelity=True`` (screening, a third of the steps, all of them; a third of
  each rung promoted), ``--multi-trials`` trials (screens are cheap: more trials in the same time);
* ``random``: random search, ``fidelity=False``, no seeded policies, ``--trials`` trials.

Quality is the **test** split's accuracy (never seen by a search). After each trial the script notes the wall
time and the front the search would report if stopped there (for ``multi``, the front of the highest rung
reached); ``hv`` is the area that front dominates in (latency / dense latency, test accuracy) above an
accuracy floor of dense - 5 points, reference point (1, floor): 0 for nothing faster than dense above the
floor. Latencies are each search's own interleaved timings divided by its own dense reference (a ratio, so the
machine's drift between searches cancels).

Figures: each method's final ``hv`` and wall time; the wall time ``multi`` needs to reach ``full``'s final
``hv`` (target: at most a third of ``full``'s); ``multi``'s ``hv`` at ``full``'s wall time (target: >= full's,
every seed); the measurement share of trial time (target: ``multi``'s half of ``full``'s on the digits CNN)
and the search overhead share (target < 3%). Writes benchmarks/results/fidelity_speed.{json,md}.

    python benchmarks/fidelity_speed.py [--trials 30] [--multi-trials 60] [--seeds 0 1 2]
                                        [--models digits_cnn resnet resnet_wide]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune.api import search  # noqa: E402
from autoprune.finetune import accuracy  # noqa: E402
from autoprune.result import pareto_front  # noqa: E402
from benchmarks.compare_policies import build_model as build_small, setup, trained_resnet  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
METHODS = {"full": dict(fidelity=False, sampler="auto"), "multi": dict(fidelity=True, sampler="auto"),
           "random": dict(fidelity=False, sampler="random", seed_policies=False)}


def build_model(name: str, cache: Path) -> torch.nn.Module:
    """compare_policies.py's models, and ``resnet_wide``: the ResNet-style CNN at widths 128/256 (2.9M
    parameters), whose trials cost seconds to tens of seconds on 2 cores, fine-tuning most of it."""
    if name != "resnet_wide":
        return build_small(name, cache)
    return trained_resnet(cache / "resnet_wide.pt", widths=(128, 256), epochs=8)


def area(points: list[tuple[float, float]], floor: float) -> float:
    """Area dominated by (relative latency min, accuracy max) points above ``floor``, reference (1, floor)."""
    total, best = 0.0, floor
    for latency, acc in sorted(points):
        if latency < 1.0 and acc > best:
            total += (1.0 - latency) * (acc - best)
            best = acc
    return total


def run(model, data, test_loader, method: str, seed: int, trials: int, work: Path) -> dict:
    out = work / f"{method}-{seed}"
    timeline: list[tuple[float, list]] = []
    started = time.perf_counter()

    def note(record, result) -> None:  # the front the search would report if stopped now
        timeline.append((time.perf_counter() - started, [c.number for c in pareto_front(result.trials)]))

    options = dict(METHODS[method])
    result = search(model, data, n_trials=trials, seed=seed, out_dir=out, study_name="bench",
                    on_trial_end=note, **options)
    wall = time.perf_counter() - started
    reference = result.reference_latency_ms
    tested: dict[int, tuple[float, float]] = {}
    for t in result.trials:
        if any(t.number in front for _, front in timeline) and t.artifact_dir is not None:
            tested[t.number] = (t.latency_ms / reference, accuracy(result.load_model(t), test_loader))
    done = [t for t in result.trials if t.complete]
    trial_time = sum(t.timings.get("trial", 0.0) for t in done)
    breakdown = result.time_breakdown()
    return {"wall_s": wall, "timeline": [(s, [tested[n] for n in front if n in tested]) for s, front in timeline],
            "measure_share": sum(t.timings.get("measure", 0.0) for t in done) / trial_time,
            "overhead_share": breakdown.get("search overhead", 0.0) / wall,
            "rungs": [sum(t.rung == r for t in done) for r in range(1 + max(t.rung for t in done))],
            "cached": sum(t.latency_cached for t in done), "trials": len(done)}


def hv_at(timeline, seconds: float, floor: float) -> float:
    last = [points for s, points in timeline if s <= seconds]
    return area(last[-1], floor) if last else 0.0


def time_to(timeline, target: float, floor: float) -> float | None:
    return next((s for s, points in timeline if area(points, floor) >= target - 1e-12), None)


def summarise(runs: dict, seeds: list[int], floor: float) -> dict:
    rows = {}
    for seed in seeds:
        full, multi, rnd = (runs[m][str(seed)] for m in ("full", "multi", "random"))
        full_hv = area(full["timeline"][-1][1], floor)
        reach = time_to(multi["timeline"], full_hv, floor)
        rows[seed] = {
            "hv": {m: area(runs[m][str(seed)]["timeline"][-1][1], floor) for m in METHODS},
            "wall_s": {m: runs[m][str(seed)]["wall_s"] for m in METHODS},
            "multi_time_to_full_hv_s": reach,
            "multi_time_to_full_hv_share": None if reach is None else reach / full["wall_s"],
            "multi_hv_at_full_wall": hv_at(multi["timeline"], full["wall_s"], floor),
            "random_hv_at_full_wall": hv_at(rnd["timeline"], full["wall_s"], floor),
            "measure_share": {m: runs[m][str(seed)]["measure_share"] for m in METHODS},
            "overhead_share": {m: runs[m][str(seed)]["overhead_share"] for m in METHODS},
            "multi_rungs": multi["rungs"], "cached": {m: runs[m][str(seed)]["cached"] for m in METHODS},
        }
    return rows


def markdown(report: dict) -> str:
    lines = [f"# Multi-fidelity search: time to quality ({report['machine']}, torch {report['torch']})", "",
             f"full/random: {report['trials']} trials, multi: {report['multi_trials']} trials; test accuracy; "
             "hv above dense - 5 points, latency relative to dense.", ""]
    for name, m in report["models"].items():
        lines += [f"## {name} (dense test accuracy {m['dense_test']:.4f})", "",
                  "| seed | hv full | hv multi | hv random | wall full s | wall multi s | multi reaches full's hv at "
                  "| multi hv at full's wall | measure share full / multi | overhead full / multi | multi rungs |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for seed, r in m["seeds"].items():
            share = r["multi_time_to_full_hv_share"]
            lines.append(
                f"| {seed} | {r['hv']['full']:.4f} | {r['hv']['multi']:.4f} | {r['hv']['random']:.4f} | "
                f"{r['wall_s']['full']:.0f} | {r['wall_s']['multi']:.0f} | "
                f"{'never' if share is None else f'{share:.0%} of full wall'} | {r['multi_hv_at_full_wall']:.4f} | "
                f"{r['measure_share']['full']:.0%} / {r['measure_share']['multi']:.0%} | "
                f"{r['overhead_share']['full']:.1%} / {r['overhead_share']['multi']:.1%} | "
                f"{'/'.join(map(str, r['multi_rungs']))} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--multi-trials", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "resnet"])
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark-fidelity"))
    args = parser.parse_args()
    cache, cache_file, data = setup(args.work)
    test_loader = data.test_dataloader()
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, no GPU",
              "torch": torch.__version__, "trials": args.trials, "multi_trials": args.multi_trials,
              "seeds": args.seeds, "models": {}}
    for name in args.models:
        work = args.work / name
        work.mkdir(exist_ok=True)
        model = build_model(name, work)
        dense_test = accuracy(model, test_loader)
        floor = dense_test - 0.05
        runs = cache.setdefault(name, {})
        for seed in args.seeds:
            for method in METHODS:
                if str(seed) in runs.get(method, {}):
                    continue
                trials = args.multi_trials if method == "multi" else args.trials
                one = run(model, data, test_loader, method, seed, trials, work)
                runs.setdefault(method, {})[str(seed)] = one
                cache_file.write_text(json.dumps(cache))
                print(f"{name} seed {seed} {method}: wall {one['wall_s']:.0f}s, hv "
                      f"{area(one['timeline'][-1][1], floor):.4f}, rungs {one['rungs']}", flush=True)
        seeds = summarise(runs, args.seeds, floor)
        report["models"][name] = {"dense_test": dense_test, "floor": floor, "seeds": seeds,
                                  "mean": {"hv": {m: statistics.mean(s["hv"][m] for s in seeds.values())
                                                  for m in METHODS}}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fidelity_speed.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "fidelity_speed.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
