"""Distillation from the dense model: the pruned model learns the dense model's outputs as well as the task.

A pruned pretrained model recovers faster, and keeps more of what it knew, when its fine-tune matches
the outputs of the model it was pruned from (knowledge distillation). With ``search(distill=...)`` each
trial's loss becomes ``(1 - weight) * task loss + weight * distillation loss``, the dense model (the
search's private copy, never trained) being the teacher:

* ``kl``: Kullback-Leibler divergence between the softened class distributions, at ``temperature``
  (scaled by its square, as Hinton et al. do) — for classifiers' logits;
* ``cosine``: 1 - cosine similarity of the outputs — for embeddings;
* ``mse``: mean squared error of the outputs;
* ``auto`` (default): ``kl`` when the output has two dimensions (a batch of logits), ``cosine`` otherwise.

Batches without a target (an embedder) learn from the teacher alone. The teacher runs under
``torch.inference_mode`` and its outputs are cached per batch, keyed by the batch's content, so data
that repeats (a loader without shuffling, or several epochs of few batches) runs the teacher once.

Example:
    >>> import torch
    >>> d = Distillation(weight=1.0, kind="cosine")
    >>> float(d.term(torch.ones(2, 4), torch.ones(2, 4)))
    0.0
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from autoprune import defaults
from autoprune.errors import AutopruneInputError
from autoprune.modelio import Inputs, ModelIO

KINDS = ("auto", "kl", "cosine", "mse")


@dataclass(frozen=True)
class Distillation:
    """How much and how the pruned model learns from the dense one (see the module docstring).

    Args:
        weight: the distillation term's share of the loss, in (0, 1].
        kind: ``auto``, ``kl``, ``cosine`` or ``mse``.
        temperature: softens both distributions for ``kl``.
        cache_batches: teacher outputs kept (least recently used dropped first).
    """

    weight: float = defaults.DISTILL_WEIGHT
    kind: Literal["auto", "kl", "cosine", "mse"] = "auto"
    temperature: float = 4.0
    cache_batches: int = 256

    def __post_init__(self) -> None:
        if not (0.0 < self.weight <= 1.0):
            raise AutopruneInputError(f"distillation weight must lie in (0, 1], got {self.weight!r}")
        if self.kind not in KINDS:
            raise AutopruneInputError(f"distillation kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not self.temperature > 0:
            raise AutopruneInputError(f"distillation temperature must be positive, got {self.temperature!r}")
        if not isinstance(self.cache_batches, int) or self.cache_batches < 0:
            raise AutopruneInputError(f"cache_batches must be an integer >= 0, got {self.cache_batches!r}")

    def term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The distillation loss of ``student`` outputs against ``teacher`` outputs."""
        kind = self.kind if self.kind != "auto" else ("kl" if student.dim() == 2 else "cosine")
        if kind == "kl":
            t = self.temperature
            return F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1),
                            reduction="batchmean") * t * t
        if kind == "cosine":
            return (1.0 - F.cosine_similarity(student.flatten(1).float(), teacher.flatten(1).float(), dim=-1)).mean()
        return F.mse_loss(student.float(), teacher.float())

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """``(1 - weight) * task + weight * term``; the term alone when there is no task loss."""
        term = self.term(student, teacher)
        return term if task is None else (1.0 - self.weight) * task + self.weight * term


class Teacher:
    """The dense model's outputs for a batch, computed once per distinct batch (see the module docstring).
    ``search()`` makes one per search, so every trial of a process shares its cache. Not an ``nn.Module``:
    a LightningModule holding it neither trains nor saves it.

    Example:
        >>> teacher = Teacher(nn.Linear(4, 2), ModelIO(), cache_batches=8)
        >>> x = Inputs.of(torch.ones(3, 4))
        >>> teacher.outputs(x) is teacher.outputs(x)   # the second time from the cache
        True
    """

    def __init__(self, model: nn.Module, io: ModelIO, cache_batches: int = 256) -> None:
        self.model = model  # the search's dense copy, shared: used as it is, never changed
        self.io = io
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.capacity = cache_batches

    @staticmethod
    def _key(inputs: Inputs) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in zip(inputs.names, inputs.tensors):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def outputs(self, inputs: Inputs) -> torch.Tensor:
        key = self._key(inputs) if self.capacity else None
        if key is not None and key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.io.run(self.model, inputs.to(device))
        out = out.clone()  # outside inference mode: a tensor the student's backward may use
        if key is not None:
            self.cache[key] = out
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        return out

    def to(self, device: Any) -> Teacher:
        """Run the teacher on ``device`` (a private copy there when the dense model lives elsewhere)."""
        if next(self.model.parameters()).device != torch.device(device):
            self.model = copy.deepcopy(self.model).to(device).eval()
            self.cache.clear()
        return self


def as_distillation(distill: Distillation | bool | None) -> Distillation | None:
    """``search(distill=...)`` as given: ``True`` for the defaults, ``False``/``None`` for none."""
    if distill is None or distill is False:
        return None
    if distill is True:
        return Distillation()
    if isinstance(distill, Distillation):
        return distill
    raise AutopruneInputError(f"distill must be a Distillation, True or None, got {type(distill).__name__}")
