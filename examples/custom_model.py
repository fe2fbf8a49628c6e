"""A user's own model and data, used through the CLI flags (no autoprune code needed in the project).

    python examples/custom_model.py            # trains the model once, writes runs/custom/model.pt
    autoprune search --model examples.custom_model:build --weights runs/custom/model.pt \\
        --data examples.custom_model:loaders --space structured --budget-mb 0.05 --trials 10 \\
        --out runs/custom-search

``build()`` returns the untrained architecture (autoprune loads --weights into it); ``loaders()``
returns ``(train_loader, val_loader)`` of ``(x, y)`` batches. Both are imported by their
``module:function`` path, relative to the current directory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def build() -> nn.Module:
    """A small fully-connected classifier of the 64 digit pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    train, val = order[:1400], order[1400:]
    return (DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True),
            DataLoader(TensorDataset(x[val], y[val]), batch_size=batch_size))


if __name__ == "__main__":
    from autoprune.demo import train_classifier

    torch.manual_seed(0)
    model = train_classifier(build(), loaders()[0], epochs=20)
    out = Path("runs/custom/model.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"trained; weights in {out}")
