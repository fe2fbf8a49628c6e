"""How far can any pruning policy take the digits CNN in eager PyTorch? Headroom for compare_policies.py.

compare_policies.py finds that on the embedded digits CNN, timed in eager PyTorch, every method stops near a
5x speed-up within 1 point of dense test accuracy, uniform pruning included, after 60 + 180 fine-tuning
steps. This probe asks whether that limit is the network's or the fine-tuning budget's. A grid of
per-layer policies (uniform ones at 0.70..0.95 in steps of 0.05, and non-uniform ones that treat conv1,
conv2, conv3 and fc differently) is pruned from the trained model with ``l1_structured``; each pruned
model is timed against the dense model (interleaved, as ``search()`` does), then fine-tuned for each
budget of ``--steps`` (from the pruned weights, at the middle of the default space's learning-rate range,
the setting of the benchmark's hand-made baselines), once per seed. Per budget, with accuracies averaged over the seeds and
candidates chosen on the validation split, it reports the speed-up within 1 point of dense test accuracy
(compare_policies.py's figure) of three sets of shapes: uniform on the benchmark's 0.1 grid, uniform on
a 0.05 grid, and every shape. Also: how much of the eager floor model's time its convolutions take
(torch.profiler), the part of the floor that no pruning of channels removes.

Writes benchmarks/results/digits_headroom.json.

    python benchmarks/digits_headroom.py [--steps 240 1700] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from compare_policies import RESULTS, build_model, figures, floor_policy, settings_of_default_space

from autoprune.demo import DigitsDataModule
from autoprune.finetune import accuracy, first_inputs
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.modelio import Inputs
from autoprune.policy import LayerPolicy, Policy
from autoprune.prune import prune
from autoprune.refine import refine_model

LAYERS = ("conv1", "conv2", "conv3", "fc")
UNIFORM = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
NON_UNIFORM = list(itertools.product((0.5, 0.75, 0.9), (0.8, 0.9), (0.8, 0.9), (0.8, 0.9)))
SETS = {"uniform, 0.1 grid": lambda s: s["uniform"] and round(s["sparsity"][0] * 10, 6).is_integer(),
        "uniform, 0.05 grid": lambda s: s["uniform"],
        "every shape": lambda s: True}


def shapes() -> list[dict]:
    out = [{"sparsity": (level,) * len(LAYERS), "uniform": True} for level in UNIFORM]
    return out + [{"sparsity": combo, "uniform": False} for combo in NON_UNIFORM]


def policy_of(sparsity: tuple[float, ...]) -> Policy:
    return Policy(layers={name: LayerPolicy(sparsity=s, method="l1_structured") for name, s in zip(LAYERS, sparsity)})


def convolution_cost(model: torch.nn.Module, inputs: Inputs, forwards: int = 200) -> dict:
    """Share of the model's eager CPU time spent inside convolutions, and microseconds per convolution call
    (torch.profiler, the calling thread's settings)."""
    with torch.inference_mode():
        for _ in range(20):
            inputs.run(model)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(forwards):
                inputs.run(model)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = [e for e in events if "conv" in e.key or "mkldnn" in e.key]
    calls = max(e.count for e in events if e.key == "aten::conv2d")
    return {"time_share": sum(e.self_cpu_time_total for e in conv) / total,
            "us_per_call": sum(e.self_cpu_time_total for e in conv) / calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[240, 1700],
                        help="fine-tuning budgets, one series each (240: a refined benchmark candidate's total)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark-headroom"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    data = DigitsDataModule(seed=0)
    data.setup()
    loaders = (data.train_dataloader(), data.val_dataloader(), data.test_dataloader())
    model = build_model("digits_cnn", args.work)
    example = first_inputs(loaders[0]).take(1)
    profile_ = HardwareProfile()
    reference = LatencyReference.calibrate(model, example, profile_)
    lr = settings_of_default_space().lr
    dense = {"val": accuracy(model, loaders[1]), "test": accuracy(model, loaders[2]),
             "latency_ms": reference.latency_ms}

    floor = prune(model, floor_policy(model, example), example)
    floor_share = measure(floor, example, profile_, reference=reference).latency_ms / reference.latency_ms
    floor_conv = convolution_cost(floor.eval(), example.repeat_first(profile_.batch_size))

    started = time.perf_counter()
    rows = []
    for shape in shapes():
        policy = policy_of(shape["sparsity"])
        pruned = prune(model, policy, example)
        metrics = measure(pruned, example, profile_, reference=reference)
        row = {**shape, "channels": [getattr(pruned, n).weight.shape[0] for n in LAYERS],
               "latency_ms": metrics.latency_ms, "latency_share": metrics.latency_ms / reference.latency_ms,
               "macs": metrics.macs, "by_steps": {}}
        for steps in args.steps:
            val, test = [], []
            for seed in args.seeds:
                net = prune(model, policy, example)
                refine_model(net, policy, loaders[0], steps=steps, lr=lr, seed=seed)
                val.append(accuracy(net, loaders[1]))
                test.append(accuracy(net, loaders[2]))
            row["by_steps"][str(steps)] = {"val": statistics.mean(val), "test": statistics.mean(test),
                                           "test_per_seed": test}
        rows.append(row)
        print(f"{str(shape['sparsity']):<26} channels {row['channels']} {100 * row['latency_share']:5.1f}% of dense  "
              + "  ".join(f"{s} steps: {100 * row['by_steps'][str(s)]['test']:.1f}%" for s in args.steps), flush=True)

    summary = {}
    for steps in args.steps:
        summary[str(steps)] = {}
        for label, keep in SETS.items():
            points = [{"val": r["by_steps"][str(steps)]["val"], "test": r["by_steps"][str(steps)]["test"],
                       "latency_ms": r["latency_ms"], "sparsity": r["sparsity"]} for r in rows if keep(r)]
            found = figures(points, dense)
            within = [p for p in found["front"] if p["test"] >= dense["test"] - 0.01]
            fastest = min(within, key=lambda p: p["latency_ms"]) if within else None
            summary[str(steps)][label] = {
                **{k: found[k] for k in ("speedup_at_1pt", "speedup_at_0.5pt", "acc_at_10pct", "acc_at_15pct")},
                "fastest_within_1pt": fastest and fastest["sparsity"]}

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, no GPU",
        "torch": torch.__version__, "profile": profile_.__dict__, "lr": lr, "seeds": args.seeds,
        "dense": dense, "floor_latency_share": floor_share, "floor_convolutions": floor_conv,
        "wall_s": time.perf_counter() - started, "shapes": rows, "summary": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "digits_headroom.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ndense: {100 * dense['test']:.2f}% test, {dense['latency_ms']:.2f} ms; floor {100 * floor_share:.1f}% "
          f"of dense, {100 * floor_conv['time_share']:.0f}% of its time in convolutions, "
          f"{floor_conv['us_per_call']:.0f} us per convolution")
    for steps, sets in summary.items():
        for label, found in sets.items():
            s1 = found["speedup_at_1pt"]
            print(f"{steps:>5} steps, {label:<20} speed-up @1pt {s1 and round(s1, 2)} {found['fastest_within_1pt']}, "
                  f"@0.5pt {found['speedup_at_0.5pt'] and round(found['speedup_at_0.5pt'], 2)}, "
                  f"acc @10% {found['acc_at_10pct'] and round(100 * found['acc_at_10pct'], 1)}")


if __name__ == "__main__":
    main()
