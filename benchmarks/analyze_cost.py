"""What ``autoprune analyze`` costs and how far its per-layer timing can be trusted (issue 19).

Per model: the wall time of ``analyze()`` (three sparsities plus the seeds' 0.5, the default profile: 1
thread, batch 64, interleaved timing), how much slower the profiled forward runs than the timed one
(``hooked_ms / latency_ms``: in eager PyTorch the hooks' overhead, which the shares include; in ONNX
Runtime the profiled session's, with basic graph optimisations only), the share of the time the
prunable layers hold, and the checks the tests make (own parameters and MACs add up to the totals, the
shares to 1). Models: the embedded digits CNN (trained here, digits data), and zoo models on random
batches (their metric is meaningless; only costs and timings are reported for them): ResNet-18 (width
32) and MobileNetV2 at 32x32 RGB, timed at batch 8, and a 2-layer BERT-style model (dict batches, the
``transformer`` space).
Writes benchmarks/results/analyze_cost.json and prints a markdown table.

    python benchmarks/analyze_cost.py [--batch-size 64] [--runtime eager|onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from autoprune import analyze
from autoprune.demo import DigitsDataModule, pretrained_digits_cnn
from autoprune.measure import HardwareProfile
from autoprune.zoo import MobileNetV2, ResNet18, TinyBert, example_input

RESULTS = Path(__file__).resolve().parent / "results"


def random_batches(model: torch.nn.Module, n: int = 4, size: int = 16, image: int | None = None):
    """Random labelled batches: the zoo's example input, or ``image`` x ``image`` RGB images."""
    torch.manual_seed(0)
    x = example_input(model, batch=size) if image is None else torch.randn(size, 3, image, image)
    if isinstance(x, dict):
        return [{**x, "labels": torch.randint(0, 10, (size,))} for _ in range(n)]
    return [(torch.randn_like(x), torch.randint(0, 10, (size,))) for _ in range(n)]


def models(work: Path, batch_size: int):
    """(name, model, data, space, timing batch): the CNNs at 32x32 and batch 8, as benchmarks/realistic_cnns.py
    times them; the others at ``batch_size``."""
    yield "digits CNN", pretrained_digits_cnn(work), DigitsDataModule(), "default", batch_size
    for name, model, space, image, batch in (("ResNet-18 (width 32), 32x32", ResNet18(width=32), "default", 32, 8),
                                             ("MobileNetV2, 32x32", MobileNetV2(), "default", 32, 8),
                                             ("TinyBert (2 layers)", TinyBert(), "transformer", None, batch_size)):
        data = random_batches(model, image=image)
        yield name, model.eval(), (data, data), space, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--runtime", choices=["eager", "onnxruntime"], default="eager")
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark-analyze"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, model, data, space, batch in models(args.work, args.batch_size):
        profile = HardwareProfile(batch_size=batch, runtime=args.runtime)
        started = time.perf_counter()
        a = analyze(model, data, space=space, profile=profile)
        wall = time.perf_counter() - started
        shares = [layer.latency_share for layer in a.layers] + [a.other["latency_share"]]
        rows.append({
            "model": name, "batch": batch, "params": a.params, "macs": a.macs, "units": len(a.units), "blocks": len(a.blocks),
            "wall_s": wall, "latency_ms": a.latency_ms, "hooked_ms": a.hooked_ms,
            "hook_overhead": a.hooked_ms / a.latency_ms - 1, "layers_share": 1 - a.other["latency_share"],
            "shares_sum": sum(shares), "params_add_up": sum(x.params for x in a.layers) + a.other["params"] == a.params,
            "macs_add_up": sum(x.macs for x in a.layers) + a.other["macs"] == a.macs,
            "units_failed": sum(u.error is not None for u in a.units), "notes": list(a.notes)})
        print(f"{name}: {wall:.1f}s", flush=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, no GPU",
              "profile": f"{args.runtime}, 1 thread, batch {args.batch_size}", "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.runtime == "eager" else f"_{args.runtime}"
    (RESULTS / f"analyze_cost{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['machine']}; {report['profile']}\n")
    print("| model | timing batch | params | units / blocks | analyze wall s | dense ms | profiled ms | profiling overhead | "
          "prunable layers' share | shares sum | params, MACs add up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['params'] / 1e6:.2f}M | {r['units']} / {r['blocks']} | {r['wall_s']:.1f} | "
              f"{r['latency_ms']:.2f} | {r['hooked_ms']:.2f} | {100 * r['hook_overhead']:+.0f}% | "
              f"{100 * r['layers_share']:.0f}% | {r['shares_sum']:.6f} | "
              f"{'yes' if r['params_add_up'] and r['macs_add_up'] else 'NO'} |")
    assert all(math.isclose(r["shares_sum"], 1.0, abs_tol=1e-6) for r in rows)


if __name__ == "__main__":
    main()
