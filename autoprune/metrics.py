"""Quality measured against the dense model itself, for data without labels.

A pruned model that should behave as the dense one did is scored by how close its outputs stay to the dense
model's on the validation batches: :class:`CosineToDense` for embeddings (1.0: the same directions),
:class:`TopOneAgreement` for classifiers whose data has no labels (the share of samples given the dense
model's class); and :class:`TokenAccuracy` scores a token classifier's tags. The dense outputs are computed once per validation loader and kept; a metric sent to
another process (Ray) goes without them and computes them again there.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from autoprune.modelio import ModelIO
    >>> dense = nn.Linear(4, 3)
    >>> loader = [(torch.randn(8, 4), torch.zeros(8))]
    >>> metric = TopOneAgreement(dense, ModelIO())
    >>> metric(dense, loader), metric.__name__
    (1.0, 'top1_agreement')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autoprune.errors import DataError
from autoprune.modelio import ModelIO


class ToDense:
    """A metric comparing a model's outputs with the dense model's on the same batches (see subclasses)."""

    __name__ = "to_dense"

    def __init__(self, dense: nn.Module, io: ModelIO) -> None:
        self.dense, self.io = dense, io
        self._cache: tuple[Any, list[torch.Tensor]] | None = None

    def _outputs(self, model: nn.Module, loader: Any) -> list[torch.Tensor]:
        model.eval()
        device = next(model.parameters(), torch.empty(0)).device
        with torch.inference_mode():
            return [self.io.run(model, self.io.split(batch)[0].to(device)).float().cpu() for batch in loader]

    def compare(self, outputs: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """One score per sample (higher: closer)."""
        raise NotImplementedError

    def __call__(self, model: nn.Module, loader: Any) -> float:
        if self._cache is None or self._cache[0] is not loader:
            self._cache = (loader, self._outputs(self.dense, loader))
        scores = [self.compare(out, ref) for out, ref in zip(self._outputs(model, loader), self._cache[1])]
        if not scores:
            raise DataError("the validation loader yields no batch")
        return float(torch.cat(scores).float().mean())

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}


class CosineToDense(ToDense):
    """Mean cosine similarity of the outputs (embeddings) to the dense model's."""

    __name__ = "cosine_to_dense"

    def compare(self, outputs: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(outputs.flatten(1), dense.flatten(1), dim=-1)


class TopOneAgreement(ToDense):
    """The share of samples whose top-1 class is the dense model's."""

    __name__ = "top1_agreement"

    def compare(self, outputs: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return (outputs.argmax(-1) == dense.argmax(-1)).float()


class TokenAccuracy:
    """The share of scored tokens (labels other than ``ignored``: a word's first token) given their tag: token
    classification's quality."""

    __name__ = "token_accuracy"

    def __init__(self, io: ModelIO, ignored: int = -100) -> None:
        self.io, self.ignored = io, ignored

    def __call__(self, model: nn.Module, loader: Any) -> float:
        model.eval()
        device = next(model.parameters(), torch.empty(0)).device
        correct = total = 0
        with torch.inference_mode():
            for batch in loader:
                inputs, tags = self.io.split(batch)
                predicted = self.io.run(model, inputs.to(device)).argmax(-1).cpu()
                scored = tags != self.ignored
                correct += int((predicted[scored] == tags[scored]).sum())
                total += int(scored.sum())
        if total == 0:
            raise DataError("the validation loader holds no tagged token")
        return correct / total
