"""The Python API end to end on the embedded digits data: search, inspect the front, load, refine, export.

    python examples/digits_api.py
"""

from __future__ import annotations

import torch

from autoprune import search
from autoprune.demo import DigitsDataModule, pretrained_digits_cnn
from autoprune.export import save_pruned
from autoprune.finetune import accuracy
from autoprune.measure import measure
from autoprune.refine import refine

RUN = "runs/digits-api"

model = pretrained_digits_cnn(RUN)                 # trained once, cached in the run directory
data = DigitsDataModule()
dense = measure(model, torch.randn(1, 1, 8, 8))
print(f"dense: {dense.latency_ms:.3f} ms, {dense.size_mb:.3f} MB, {dense.macs / 1e6:.2f} MMACs")

result = search(model, data, space="structured", budget_ms=0.5 * dense.latency_ms, n_trials=12,
                out_dir=RUN, seed=0)
for candidate in result.pareto:
    print(f"trial {candidate.number:3d}: accuracy {candidate.metric:.4f}  {candidate.latency_ms:.3f} ms  "
          f"{candidate.size_mb:.3f} MB")

best = result.best()                               # most accurate candidate within the budget
if best is None:
    print("no candidate met the budget; closest:", [r.number for r in result.closest()])
else:
    pruned = result.load_model(best)               # the pruned, fine-tuned nn.Module
    print(f"best: trial {best.number}, test accuracy {accuracy(pruned, data.test_dataloader()):.4f} "
          f"(dense {accuracy(model, data.test_dataloader()):.4f})")
    files = save_pruned(pruned, result.policy(best), f"{RUN}/exported", example_inputs=torch.randn(2, 1, 8, 8))
    print("exported:", ", ".join(str(p) for p in files.values()))
    (refined,) = refine(result, data, steps=200, trials=[best.number])   # a longer fine-tune, saved exported
    print(f"refined for 200 more steps: validation accuracy {refined.metric_before:.4f} -> {refined.metric:.4f}, "
          f"saved in {refined.directory}")
