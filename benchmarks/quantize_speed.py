"""int8 against float32 at the same pruned shape, and the pruning-only front against pruning with int8.

Part 1, per model (the digits CNN and the ResNet-style CNN of compare_policies.py) and uniform
``l1_structured`` level (0, 0.3, 0.5, 0.7): the pruned model is fine-tuned once (the default space's 60
steps at the middle of its learning-rate range), then timed in ONNX Runtime as float32 and as
``int8_static`` (QDQ, per-channel weights, activations calibrated on 8 training batches), each against the
dense float32 model (interleaved samples; the default profile: 1 thread, batch 64), with test accuracy and
file size. Target: int8 >= 1.5x faster than float32 of the same shape at <= 0.5 points of accuracy lost.

Part 2 (``--trials`` > 0), per model and seed: ``search()`` over ``default`` (pruning only) and ``compress``
(pruning and int8), ONNX Runtime profile, and the uniform + int8 sweep of part 1 as the hand-made baseline.
Per front: the speedup (dense latency / candidate latency) of the fastest candidate whose **test** accuracy is
within 1 point of dense, and the smallest size within 1 point. Targets: the combined front's speedup >= 1.5x
the pruning-only front's and >= 2x uniform + int8's; its size <= 30% of the pruning-only front's.

Writes benchmarks/results/quantize_speed.{json,md}.

    python benchmarks/quantize_speed.py [--models digits_cnn resnet] [--trials 30] [--seeds 0 1 2]
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
from autoprune.demo import DigitsDataModule  # noqa: E402
from autoprune.finetune import accuracy, first_inputs  # noqa: E402
from autoprune.measure import HardwareProfile, LatencyReference, measure  # noqa: E402
from autoprune.objective import TrialContext, dense_copy, run_trial  # noqa: E402
from autoprune.policy import Policy  # noqa: E402
from autoprune.quantize import deployed_model  # noqa: E402
from benchmarks.compare_policies import build_model, searched_layers, settings_of_default_space  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LEVELS = (0.0, 0.3, 0.5, 0.7)


def same_shape(model, loaders, ctx: TrialContext, profile: HardwareProfile) -> list[dict]:
    """Part 1: each uniform level fine-tuned once, timed as float32 and as int8."""
    layers = searched_layers(model, ctx.example_inputs)
    rows = []
    for level in LEVELS:
        torch.manual_seed(0)
        policy = Policy.uniform(layers, sparsity=level, method="l1_structured")
        outcome = run_trial(ctx, policy, settings_of_default_space())
        int8 = deployed_model(outcome.model, Policy(layers=policy.layers, quantize="int8_static"),
                              ctx.example_inputs, train_loader=loaders[0])
        fp32_m = measure(outcome.model, ctx.example_inputs, profile, reference=ctx.reference)
        int8_m = measure(outcome.model, ctx.example_inputs, profile, reference=ctx.reference, deployed=int8)
        rows.append({"level": level, "fp32_ms": fp32_m.latency_ms, "int8_ms": int8_m.latency_ms,
                     "speedup_int8_vs_fp32": fp32_m.latency_ms / int8_m.latency_ms,
                     "fp32_test": accuracy(outcome.model, loaders[2]), "int8_test": accuracy(int8, loaders[2]),
                     "fp32_mb": fp32_m.size_mb, "int8_mb": int8_m.size_mb})
        print(f"  level {level}: fp32 {rows[-1]['fp32_ms']:.3f} ms, int8 {rows[-1]['int8_ms']:.3f} ms "
              f"({rows[-1]['speedup_int8_vs_fp32']:.2f}x), test {rows[-1]['fp32_test']:.4f} -> "
              f"{rows[-1]['int8_test']:.4f}", flush=True)
    return rows


def front_figures(points: list[dict], dense_ms: float, dense_test: float, dense_mb: float) -> dict:
    within = [p for p in points if p["test"] >= dense_test - 0.01]
    return {"speedup_at_1pt": max((dense_ms / p["latency_ms"] for p in within), default=None),
            "size_share_at_1pt": min((p["size_mb"] / dense_mb for p in within), default=None)}


def run_search(model, data, loaders, space: str, seed: int, trials: int, work: Path, profile) -> dict:
    started = time.perf_counter()
    result = search(model, data, space=space, n_trials=trials, seed=seed, out_dir=work / f"{space}-{seed}",
                    study_name="bench", profile=profile)
    points = []
    for c in result.pareto:
        net = result.load_model(c)
        policy = result.policy(c)
        deployed = deployed_model(net, policy, first_inputs(loaders[1]), train_loader=loaders[0])
        points.append({"test": accuracy(deployed if deployed is not None else net, loaders[2]),
                       "latency_ms": c.latency_ms / result.reference_latency_ms, "size_mb": c.size_mb,
                       "quantize": policy.quantize})
    return {"points": points, "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "resnet"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark-quantize"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = DigitsDataModule(batch_size=64, seed=0)
    data.setup()
    loaders = (data.train_dataloader(), data.val_dataloader(), data.test_dataloader())
    profile = HardwareProfile(runtime="onnxruntime")
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, no GPU",
              "torch": torch.__version__, "profile": "onnxruntime, 1 thread, batch 64", "models": {}}
    for name in args.models:
        work = args.work / name
        work.mkdir(parents=True, exist_ok=True)
        model = build_model(name, work)
        example = first_inputs(loaders[1])
        reference = LatencyReference.calibrate(model, example, profile, rounds=3)
        ctx = TrialContext(base_model=dense_copy(model), example_inputs=example, train_loader=loaders[0],
                           val_loader=loaders[1], profile=profile, reference=reference)
        dense_test = accuracy(model, loaders[2])
        dense_mb = measure(model, example, profile, reference=reference).size_mb
        print(f"{name}: dense test {dense_test:.4f}, {reference.latency_ms:.3f} ms", flush=True)
        rows = same_shape(model, loaders, ctx, profile)
        entry = {"dense_test": dense_test, "dense_ms": reference.latency_ms, "dense_mb": dense_mb, "same_shape": rows}
        if args.trials:
            uniform_int8 = [{"test": r["int8_test"], "latency_ms": r["int8_ms"] / reference.latency_ms,
                             "size_mb": r["int8_mb"]} for r in rows]
            entry["uniform_int8"] = front_figures(uniform_int8, 1.0, dense_test, dense_mb)
            for space in ("default", "compress"):
                runs = [run_search(model, data, loaders, space, seed, args.trials, work, profile)
                        for seed in args.seeds]
                entry[space] = [front_figures(r["points"], 1.0, dense_test, dense_mb) | {"wall_s": r["wall_s"]}
                                for r in runs]
                print(f"  {space}: {entry[space]}", flush=True)
        report["models"][name] = entry
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quantize_speed.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "quantize_speed.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [f"# int8 and pruning ({report['machine']}, torch {report['torch']}, {report['profile']})", ""]
    for name, m in report["models"].items():
        lines += [f"## {name} (dense test {m['dense_test']:.4f}, {m['dense_ms']:.3f} ms)", "",
                  "| uniform level | fp32 ms | int8 ms | int8 speedup | fp32 test | int8 test | fp32 MB | int8 MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in m["same_shape"]:
            lines.append(f"| {r['level']} | {r['fp32_ms']:.3f} | {r['int8_ms']:.3f} | {r['speedup_int8_vs_fp32']:.2f}x "
                         f"| {r['fp32_test']:.4f} | {r['int8_test']:.4f} | {r['fp32_mb']:.3f} | {r['int8_mb']:.3f} |")
        if "compress" in m:
            def mean(runs, key):
                values = [r[key] for r in runs if r[key] is not None]
                return f"{statistics.mean(values):.2f}" if values else "none"
            lines += ["", "| front | speedup within 1 pt | size share within 1 pt |", "|---|---|---|",
                      f"| default (pruning) | {mean(m['default'], 'speedup_at_1pt')} | "
                      f"{mean(m['default'], 'size_share_at_1pt')} |",
                      f"| compress (pruning + int8) | {mean(m['compress'], 'speedup_at_1pt')} | "
                      f"{mean(m['compress'], 'size_share_at_1pt')} |",
                      f"| uniform + int8 | {mean([m['uniform_int8']], 'speedup_at_1pt')} | "
                      f"{mean([m['uniform_int8']], 'size_share_at_1pt')} |"]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
