"""Depth pruning: residual blocks that can be removed whole, and their removal.

A block whose output adds its own input back (``out = f(x) + x``, an identity shortcut) can be replaced
by that shortcut: the network stays valid and loses every operator of ``f``. On small batches and CPUs
that is worth more than thinning channels, because each remaining operator costs a fixed overhead
whatever its width (layer pruning beats filter pruning on latency for that reason).

A submodule is a *removable block* when, on the example inputs, it takes one tensor and returns a tensor
of the same shape, and its traced graph (``torch.fx``) adds its input, unchanged or through
``nn.Identity``, to something else. Blocks with a projection shortcut (a strided or 1x1 conv) change
the shape or transform the input and are not removable; modules ``torch.fx`` cannot trace are skipped.
When blocks nest, only the innermost are listed.

Example:
    >>> import torch
    >>> from autoprune.depth import removable_blocks, drop_blocks
    >>> from autoprune.zoo import ResNetCNN
    >>> model = ResNetCNN(widths=(8, 16), blocks=2)
    >>> removable_blocks(model, torch.randn(2, 1, 8, 8))
    ['layers.0', 'layers.1', 'layers.3']
    >>> drop_blocks(model, ["layers.1"]).layers[1]
    Identity()
"""

from __future__ import annotations

import operator
from typing import Any, Iterable

import torch
from torch import fx, nn

from autoprune.errors import LayerMatchError
from autoprune.layers import PRUNABLE_TYPES, run_model

_ADDS = (operator.add, operator.iadd, torch.add)


def _adds_its_input(module: nn.Module) -> bool:
    """Whether ``module``'s traced forward adds its (only) input, as it is, to another value."""
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception:  # data-dependent control flow and the like: not a block we can reason about
        return False
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return False
    modules = dict(module.named_modules())
    same = {inputs[0]}  # the input and its identity aliases
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.Identity) and node.args[0] in same:
            same.add(node)
        is_add = (node.op == "call_function" and node.target in _ADDS) or \
                 (node.op == "call_method" and node.target in ("add", "add_"))
        if is_add and len(node.args) >= 2 and sum(a in same for a in node.args[:2]) == 1:
            return True
    return False


def removable_blocks(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of the residual blocks of ``model`` that can be replaced by their identity shortcut.

    Raises:
        ExampleInputsError: the model cannot run ``example_inputs``.
    """
    shapes: dict[str, tuple[torch.Size, torch.Size]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if (name not in shapes and len(args) == 1 and isinstance(args[0], torch.Tensor)
                    and isinstance(output, torch.Tensor)):
                shapes[name] = (args[0].shape, output.shape)
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
             if name and not isinstance(module, PRUNABLE_TYPES) and any(True for _ in module.children())]
    try:
        run_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    modules = dict(model.named_modules())
    found = [name for name, (before, after) in shapes.items() if before == after and _adds_its_input(modules[name])]
    innermost = [n for n in found if not any(other.startswith(n + ".") for other in found)]
    order = {name: i for i, name in enumerate(modules)}
    return sorted(innermost, key=order.__getitem__)


def drop_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace each named submodule of ``model`` by ``nn.Identity`` in place; returns ``model``.

    Raises:
        LayerMatchError: a name is not a submodule of ``model``.
    """
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
            getattr(parent, attr)
        except AttributeError:
            raise LayerMatchError(f"{type(model).__name__} has no submodule {name!r} to drop") from None
        setattr(parent, attr, nn.Identity())
    return model
