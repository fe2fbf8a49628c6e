"""Realistic CNNs (issue 22): ResNet-18's and MobileNetV2's layouts at 32x32 RGB inputs, searched with the
default space against uniform pruning at the same fine-tune budget.

The models are the zoo's (:class:`autoprune.zoo.ResNet18`, :class:`autoprune.zoo.MobileNetV2`; torchvision
cannot be imported with this CPU torch), trained here from a fixed seed. The task is built from local data:
scikit-learn's 1,797 handwritten digits, upsampled from 8x8 to 32x32 (bilinear) and repeated over three
channels, split 60/20/20 (train / validation, the search's metric / test, every figure reported). It is an
easy task (the dense models reach about 99%): it exercises the models' shapes and runtimes, not the
recovery a hard dataset needs.

Per model: ``search()`` with the built-in ``default`` space (``--trials``, seed 0), and the uniform baseline
(``l1_structured`` at the same sparsity in every searched layer, ``--levels``), fine-tuned as the default
space's seeds are (60 steps at the middle of its learning-rate range). Latency: eager PyTorch on the CPU,
1 thread, batch 8 at 32x32, every candidate timed against the dense model (interleaved, as ``search()``
does); speedups are ratios to the dense model in the same run.

Figures, on the test split: speedup of the fastest front candidate keeping >= 0.95 (and >= 0.99) of the
dense model's accuracy; hypervolume above the quality floor 0.90 of dense accuracy (area dominated in
latency / dense latency x accuracy / dense accuracy, reference point (1, 0.90), divided by 0.10: above 1
when candidates beat the dense model); wall time and per-trial time breakdown. The dense models train for
``--epochs`` with Adam at ``--lr``; the dense seed's fine-tuned accuracy shows whether that converged. Writes benchmarks/results/realistic_cnns.json and .md.

    python benchmarks/realistic_cnns.py [--models resnet18 mobilenetv2] [--trials 20] [--resnet-width 32]
                                        [--mobilenet-width 1.0] [--levels 0.25 0.5 0.75]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from autoprune import search
from autoprune.demo import train_classifier
from autoprune.finetune import accuracy, first_inputs
from autoprune.layers import output_layers, prunable_layers
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.objective import TrialContext, dense_copy
from autoprune.resolved_space import FinetuneSettings
from autoprune.space import load_space
from autoprune.zoo import MobileNetV2, ResNet18
from compare_policies import front_figures, uniform_points  # noqa: E402 (a sibling benchmark script: run from benchmarks/)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGETS = (0.95, 0.99)
FLOOR = 0.90


def digits32(*, seed: int = 0, batch_size: int = 64) -> dict[str, DataLoader]:
    """Digits upsampled to 32x32 and repeated over 3 channels, split train/val/test 60/20/20 (seeded)."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    generator = torch.Generator().manual_seed(seed)
    return {name: DataLoader(TensorDataset(x[idx], y[idx]), batch_size=batch_size, shuffle=name == "train",
                             generator=generator if name == "train" else None) for name, idx in parts.items()}


def build(name: str, args: argparse.Namespace, loaders: dict[str, DataLoader], cache: Path) -> torch.nn.Module:
    """The zoo model, trained on the training split once (cached in ``cache``)."""
    torch.manual_seed(0)
    model = ResNet18(width=args.resnet_width) if name == "resnet18" else MobileNetV2(width_mult=args.mobilenet_width)
    path = cache / f"{name}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train_classifier(model, loaders["train"], epochs=args.epochs, lr=args.lr)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def figures(points: list[dict], dense_test: float) -> dict:
    """Speedups at the quality targets, hypervolume above the floor, over the test-split front."""
    pts = [{**p, "quality": p["test"] / dense_test} for p in points]
    return front_figures(pts, key="quality", targets=TARGETS, floor=FLOOR)


def run_model(name: str, args: argparse.Namespace, loaders: dict[str, DataLoader], profile: HardwareProfile) -> dict:
    model = build(name, args, loaders, args.work / "weights")
    params = sum(p.numel() for p in model.parameters())
    dense_test = accuracy(model, loaders["test"])
    print(f"{name}: {params / 1e6:.2f}M parameters, dense test accuracy {dense_test:.4f}", flush=True)

    started = time.perf_counter()
    result = search(model, (loaders["train"], loaders["val"]), space="default", n_trials=args.trials, seed=args.seed,
                    profile=profile, out_dir=args.work / f"search-{name}-{args.seed}", study_name=name)
    wall = time.perf_counter() - started
    dense_ms = result.reference_latency_ms
    dense_seed = next((t for t in sorted(result.trials, key=lambda t: t.number) if t.complete and t.policy
                       and not any(lp["sparsity"] > 0 for lp in t.policy["layers"].values()) and not t.policy.get("drop")),
                      None)
    searched = []
    for c in result.pareto:
        searched.append({"trial": c.number, "val": c.metric, "test": accuracy(result.load_model(c), loaders["test"]),
                         "ratio": c.latency_ms / dense_ms, "params": c.params, "drop": c.policy.get("drop", [])})
        print(f"  trial {c.number}: val {c.metric:.4f} test {searched[-1]['test']:.4f} at "
              f"{searched[-1]['ratio']:.3f} of dense latency", flush=True)

    ft = load_space("default").finetune
    settings = FinetuneSettings(ft.max_steps, ft.lr.at(0.5), ft.calibration_batches)
    base = dense_copy(model)
    example = first_inputs(loaders["val"])
    reference = LatencyReference.calibrate(base, example, profile, rounds=3)
    ctx = TrialContext(base_model=base, example_inputs=example, train_loader=loaders["train"],
                       val_loader=loaders["val"], profile=profile, reference=reference, seed=args.seed)
    layers = [n for n in prunable_layers(base) if n not in output_layers(base, example)]
    uniform, uniform_wall = uniform_points(ctx, layers, settings, args.levels, seed=args.seed,
                                           test=lambda net: accuracy(net, loaders["test"]))
    dense_metrics = measure(base, example, profile, reference=reference)
    return {"params": params, "macs": dense_metrics.macs, "dense_test": dense_test, "dense_ms": dense_ms,
            "dense_val": accuracy(model, loaders["val"]),
            "dense_seed_val": dense_seed.metric if dense_seed is not None else None,
            "dense_seed_after_finetune": dense_seed.metric_after_finetune if dense_seed is not None else None,
            "autoprune": {**figures(searched, dense_test), "wall_s": wall, "breakdown": result.time_breakdown(),
                          "failed": sum(t.state == "failed" for t in result.trials),
                          "finetune_undone": [t.number for t in result.trials if t.finetune_undone],
                          "trial_s": [t.timings.get("trial") for t in result.trials]},
            "uniform": {**figures(uniform, dense_test), "wall_s": uniform_wall, "points": uniform}}


def _speedup(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}x"


def markdown(report: dict) -> str:
    lines = [f"{report['machine']}; latency {report['latency']}; test split; quality = test accuracy / dense", ""]
    for name, entry in report["models"].items():
        lines += [f"### {name}: {entry['params'] / 1e6:.2f}M parameters, {entry['macs'] / 1e6:.0f}M MACs per image, "
                  f"dense test accuracy {entry['dense_test']:.4f}, dense {entry['dense_ms']:.2f} ms (absolute)", "",
                  "| method | speedup @0.95 | speedup @0.99 | hypervolume above 0.90 | wall s |", "|---|---|---|---|---|"]
        for method in ("autoprune", "uniform"):
            f = entry[method]
            lines.append(f"| {method} | {_speedup(f['speedup_at_0.95'])} | {_speedup(f['speedup_at_0.99'])} | "
                         f"{f['hypervolume']:.3f} | {f['wall_s']:.0f} |")
        total = sum(entry["autoprune"]["breakdown"].values()) or 1.0
        parts = ", ".join(f"{k} {v:.0f}s ({v / total:.0%})" for k, v in entry["autoprune"]["breakdown"].items())
        seed, after = entry.get("dense_seed_val"), entry.get("dense_seed_after_finetune")
        undone = entry["autoprune"].get("finetune_undone")  # absent from runs before fine-tunes could be undone
        lines += ["", f"autoprune's time: {parts}; {entry['autoprune']['failed']} trials failed" + (
                  "" if undone is None else f"; fine-tune undone (it made the candidate worse) in trials {undone}"), "",
                  f"dense validation accuracy {entry['dense_val']:.4f}; the dense seed (unpruned) "
                  f"{'-' if seed is None else f'{seed:.4f}'}, {'-' if after is None else f'{after:.4f}'} right after its "
                  "fine-tune: a gain there means the dense model was not converged", "",
                  "front (test accuracy at share of dense latency): " + ", ".join(
                      f"{p['test']:.3f} at {p['ratio']:.2f}" for p in entry["autoprune"]["front"]),
                  "uniform: " + ", ".join(f"{p['test']:.3f} at {p['ratio']:.2f}" for p in entry["uniform"]["points"]),
                  ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=["resnet18", "mobilenetv2"], default=["resnet18", "mobilenetv2"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--resnet-width", type=int, default=32, help="ResNet18 width (64: the real network)")
    parser.add_argument("--mobilenet-width", type=float, default=1.0, help="MobileNetV2 width multiplier")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs of the dense models")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of the dense models' training")
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark-realistic-cnns"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaders = digits32(seed=args.seed)
    profile = HardwareProfile(batch_size=8, threads=1)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, no GPU",
              "latency": "eager, 1 thread, batch 8 x 3 x 32 x 32", "trials": args.trials, "seed": args.seed,
              "widths": {"resnet18": args.resnet_width, "mobilenetv2": args.mobilenet_width}, "models": {}}
    for name in args.models:
        report["models"][name] = run_model(name, args, loaders, profile)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "realistic_cnns.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (RESULTS / "realistic_cnns.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
