"""How repeatable is measure()'s latency with the default HardwareProfile?

For each model of autoprune.zoo, calls measure() 3 times at batch 1 and batch 64 and prints the
median latency of each call, its robust CV, and the spread of the medians across calls.

    python benchmarks/measure_stability.py
"""

from __future__ import annotations

import time

import torch

from autoprune.measure import HardwareProfile, measure
from autoprune.zoo import ZOO, example_input


def main() -> None:
    print(f"{'model':<16}{'batch':>6}{'medians (ms)':>28}{'max cv':>8}{'spread':>8}{'s/call':>8}")
    for name, cls in ZOO.items():
        torch.manual_seed(0)
        model = cls().eval()
        x = example_input(model)
        for batch in (1, 64):
            start = time.perf_counter()
            runs = [measure(model, x, HardwareProfile(batch_size=batch)) for _ in range(3)]
            per_call = (time.perf_counter() - start) / 3
            medians = [r.latency_ms for r in runs]
            spread = (max(medians) - min(medians)) / min(medians)
            print(f"{name:<16}{batch:>6}{', '.join(f'{m:.3f}' for m in medians):>28}"
                  f"{max(r.latency_cv for r in runs):>8.3f}{spread:>8.1%}{per_call:>8.2f}")


if __name__ == "__main__":
    main()
