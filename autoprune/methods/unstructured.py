"""Applying unstructured masks with ``torch.nn.utils.prune``, then making them permanent.

After :func:`apply_unstructured` each pruned layer holds real zeros in ``weight`` and has no
``weight_orig`` parameter, no ``weight_mask`` buffer and no forward pre-hook left.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from autoprune.methods.base import UnstructuredMethod


def apply_unstructured(
    model: nn.Module, assignments: Mapping[str, tuple[UnstructuredMethod, float]], *, seed: int
) -> None:
    """Zero weights of each named layer in place with its method and sparsity."""
    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(seed)
    for name, (method, sparsity) in assignments.items():
        module = modules[name]
        if sparsity == 0.0:
            continue
        mask = method.compute_mask(module.weight, sparsity, generator=generator)
        torch_prune.custom_from_mask(module, name="weight", mask=mask)
        torch_prune.remove(module, "weight")
