"""Does structured pruning buy real speed? Dense vs l1_structured at 50% and 75% of channels.

On the ResNet-style model of autoprune.zoo (3 stages of 2 residual blocks, widths 32/64/128, 32x32
RGB input), prints MACs and measured CPU latency at batch 64, and the ratio
speedup / MAC reduction (target >= 0.8). Writes benchmarks/results/engine_speedup.json.

    python benchmarks/engine_speedup.py [--threads 1] [--repeats 21]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from autoprune import Policy, prunable_layers, prune
from autoprune.layers import output_layers
from autoprune.measure import HardwareProfile, measure
from autoprune.zoo import ResNetCNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ResNetCNN(in_channels=3, widths=(32, 64, 128), blocks=2).eval()
    x = torch.randn(2, 3, 32, 32)
    profile = HardwareProfile(batch_size=64, threads=args.threads, repeats=args.repeats)
    layers = [n for n in prunable_layers(model) if n not in output_layers(model, x)]
    dense = measure(model, x, profile)
    rows = []
    print(f"{'policy':<26}{'MMACs':>9}{'latency ms':>12}{'cv':>7}{'MAC red.':>10}{'speedup':>9}{'ratio':>7}")
    print(f"{'dense':<26}{dense.macs / 1e6:>9.1f}{dense.latency_ms:>12.2f}{dense.latency_cv:>7.3f}")
    for sparsity in (0.5, 0.75):
        for round_to in (None, 8):
            policy = Policy.uniform(layers, sparsity=sparsity, method="l1_structured", round_to=round_to)
            pruned = measure(prune(model, policy, x), x, profile)
            mac_reduction = dense.macs / pruned.macs
            speedup = dense.latency_ms / pruned.latency_ms
            name = f"l1_structured {sparsity:.0%}" + (f" r{round_to}" if round_to else "")
            rows.append({"policy": name, "sparsity": sparsity, "round_to": round_to, "macs": pruned.macs,
                         "latency_ms": pruned.latency_ms, "latency_cv": pruned.latency_cv,
                         "mac_reduction": mac_reduction, "speedup": speedup, "ratio": speedup / mac_reduction})
            print(f"{name:<26}{pruned.macs / 1e6:>9.1f}{pruned.latency_ms:>12.2f}{pruned.latency_cv:>7.3f}"
                  f"{mac_reduction:>10.2f}{speedup:>9.2f}{speedup / mac_reduction:>7.2f}")
    out = Path(__file__).parent / "results" / "engine_speedup.json"
    out.write_text(json.dumps({"machine": platform.platform(), "cpu_count": torch.get_num_threads(),
                               "profile": dense.profile, "dense": dense.to_dict(), "pruned": rows}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
