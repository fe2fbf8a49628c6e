"""Sparse regularisers used while fine-tuning: L1 on weights and group lasso over output channels.

* ``l1``: ``strength * sum(|w|)`` over the named layers' weights: pushes single weights to zero, the
  natural companion of unstructured pruning;
* ``group_lasso``: ``strength * sum_c ||w_c||_2`` over each output channel ``c`` (a row of the
  weight): pushes whole channels to zero, the companion of structured pruning.

Use :func:`sparsity_penalty` as a loss term, or :class:`SparsityRegularizer` as a Lightning callback
that adds the penalty's gradient after every backward pass (the same update as adding it to the loss).

Example:
    >>> import torch.nn as nn
    >>> from autoprune.regularize import sparsity_penalty
    >>> m = nn.Linear(3, 2)
    >>> _ = nn.init.ones_(m.weight)
    >>> float(sparsity_penalty(m, kind="l1", strength=0.5, layers=[""]))
    3.0
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch import nn

from autoprune.errors import PolicyError
from autoprune.policy import REGULARIZER_KINDS


#: each regulariser kind of a policy (:data:`~autoprune.policy.REGULARIZER_KINDS`, ``none`` apart) -> its
#: penalty of one weight: ``l1`` sums magnitudes, ``group_lasso`` the L2 norms of the output channels' rows
PENALTIES = {
    "l1": lambda weight: weight.abs().sum(),
    "group_lasso": lambda weight: weight.flatten(1).norm(dim=1).sum(),
}
assert set(PENALTIES) == set(REGULARIZER_KINDS) - {"none"}, "a policy's regulariser kind without a penalty"


def sparsity_penalty(model: nn.Module, *, kind: str, strength: float, layers: Sequence[str]) -> torch.Tensor:
    """The penalty over the ``weight`` of each named module (``""`` names the model itself)."""
    if kind not in REGULARIZER_KINDS:
        raise PolicyError(f"regularizer kind must be one of {REGULARIZER_KINDS}, got {kind!r}")
    modules = dict(model.named_modules())
    first = next(model.parameters())
    total = torch.zeros((), device=first.device, dtype=first.dtype)
    if kind == "none" or strength == 0.0:
        return total
    penalty = PENALTIES[kind]
    for name in layers:
        total = total + penalty(modules[name].weight)
    return strength * total


class SparsityRegularizer(L.Callback):
    """Lightning callback: after each backward pass, add the gradient of the sparse penalty.

    Args:
        kind: ``"l1"``, ``"group_lasso"`` or ``"none"``.
        strength: lambda; 0 switches the callback off.
        layers: module names whose weights are penalised (names inside the LightningModule).
    """

    def __init__(self, *, kind: str, strength: float, layers: Sequence[str]) -> None:
        if kind not in REGULARIZER_KINDS:
            raise PolicyError(f"regularizer kind must be one of {REGULARIZER_KINDS}, got {kind!r}")
        if not strength >= 0.0:
            raise PolicyError(f"regularizer strength must be >= 0, got {strength!r}")
        self.kind, self.strength, self.layers = kind, float(strength), list(layers)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.kind == "none" or self.strength == 0.0:
            return
        sparsity_penalty(pl_module, kind=self.kind, strength=self.strength, layers=self.layers).backward()
