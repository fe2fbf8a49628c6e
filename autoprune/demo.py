"""The embedded default: a small CNN on scikit-learn's digits data set (it ships with scikit-learn).

``autoprune search`` with no ``--model``/``--data`` uses these: :class:`DigitsDataModule` (8x8
grey-scale images of the ten digits, split 60/20/20 into train/val/test with a fixed seed) and
:func:`pretrained_digits_cnn`, a :class:`DigitsCNN` trained once and cached as plain weights in the run
directory, so later runs and resumes start from the same base model.

Example:
    >>> dm = DigitsDataModule(batch_size=32)
    >>> dm.setup("fit")
    >>> x, y = next(iter(dm.train_dataloader()))
    >>> tuple(x.shape[1:]), int(y.max()) < 10
    ((1, 8, 8), True)
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from autoprune.errors import ModelLoadError

WEIGHTS_FILE = "digits_cnn.pt"


class DigitsCNN(nn.Module):
    """Three 3x3 conv layers (32-64-128 channels) with BatchNorm, a hidden Linear layer and the classifier."""

    def __init__(self, *, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.fc = nn.Linear(4 * width * 4, 4 * width)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.bn3(self.conv3(x))), 2)
        return self.head(F.relu(self.fc(torch.flatten(x, 1))))


class DigitsDataModule(L.LightningDataModule):
    """scikit-learn's 1,797 digits, scaled to [0, 1], split train/val/test 60/20/20 (seeded)."""

    def __init__(self, *, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.seed = batch_size, seed
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        digits = load_digits()
        x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
        y = torch.tensor(digits.target, dtype=torch.long)
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(y)))
        n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
        parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        self.splits = {name: TensorDataset(x[idx], y[idx]) for name, idx in parts.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def train_classifier(model: nn.Module, loader: DataLoader, *, epochs: int, lr: float = 3e-3, seed: int = 0) -> nn.Module:
    """Plain Adam + cross-entropy training, used to make the base models of the demo and benchmarks."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


def pretrained_digits_cnn(run_dir: str | Path | None = None, *, epochs: int = 15, seed: int = 0) -> DigitsCNN:
    """A trained :class:`DigitsCNN`; trained once (a few seconds) and cached in ``run_dir`` when given."""
    model = DigitsCNN()
    cache = Path(run_dir) / WEIGHTS_FILE if run_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
        except Exception as exc:  # never pass on torch's advice to load with weights_only=False
            raise ModelLoadError(f"{cache} cannot be read ({type(exc).__name__}): delete it and the digits CNN is "
                                 "trained again") from None
        return model.eval()
    torch.manual_seed(seed)
    model = DigitsCNN()
    train_classifier(model, DigitsDataModule(seed=seed).train_dataloader(), epochs=epochs, seed=seed)
    if cache is not None:  # renamed into place: workers starting together on one run directory
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, cache)
    return model
