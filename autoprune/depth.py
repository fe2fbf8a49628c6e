"""Depth pruning: residual blocks and encoder layers that can be removed whole, and their removal.

A block whose output adds its own input back (``out = f(x) + x``, an identity shortcut) can be replaced
by that shortcut: the network stays valid and loses every operator of ``f``. On small batches and CPUs
that is worth more than thinning channels, because each remaining operator costs a fixed overhead
whatever its width (layer pruning beats filter pruning on latency for that reason).

A submodule is a *removable block* when, on the example inputs, either

* it takes one tensor and returns a tensor of the same shape, and its traced graph (``torch.fx``) adds
  its input, unchanged or through ``nn.Identity``, to something else (a ResNet block without
  projection); blocks with a projection shortcut change the shape or transform the input and are not
  removable, and modules ``torch.fx`` cannot trace are skipped. Arguments besides the tensor that are not
  tensors (EfficientNet's blocks take their stochastic-depth rate: ``block(x, drop_connect_rate=0.1)``)
  are traced at the values the model called the block with; or
* it is an **encoder layer**: an entry of a ``ModuleList`` that holds a multi-head attention, whose
  output is a tensor of the shape of its first input (the hidden states), whatever else it is called
  with (an attention mask). Dropping it passes the hidden states on unchanged (LayerDrop), the way
  transformers are made shallower.

When blocks nest, only the innermost are listed. A dropped block is replaced by :class:`Skip`.

Example:
    >>> import torch
    >>> from autoprune.depth import removable_blocks, drop_blocks
    >>> from autoprune.zoo import ResNetCNN
    >>> model = ResNetCNN(widths=(8, 16), blocks=2)
    >>> removable_blocks(model, torch.randn(2, 1, 8, 8))
    ['layers.0', 'layers.1', 'layers.3']
    >>> drop_blocks(model, ["layers.1"]).layers[1]
    Skip()
"""

from __future__ import annotations

import inspect
import logging
import operator
from typing import Any, Iterable

import torch
from torch import fx, nn

from autoprune.attention import has_attention
from autoprune.errors import LayerMatchError
from autoprune.layers import PRUNABLE_TYPES, run_model, tensors_in

_ADDS = (operator.add, operator.iadd, torch.add)
LOG = logging.getLogger("autoprune")


def _adds_its_input(module: nn.Module, held: dict[str, Any] | None = None) -> bool:
    """Whether ``module``'s traced forward adds its (only tensor) input, as it is, to another value; ``held``:
    its other arguments by name, traced as constants (:func:`_held_arguments`)."""
    held = held or {}
    try:
        graph = fx.symbolic_trace(module, concrete_args=held or None).graph
    except (fx.proxy.TraceError, TypeError, NotImplementedError, RuntimeError, AttributeError) as exc:
        # data-dependent control flow and the like: not a block we can reason about (said at debug level, so
        # `logging.getLogger("autoprune").setLevel("DEBUG")` shows why a block is not offered)
        LOG.debug("%s is not a removable block: fx cannot trace it (%s: %s)", type(module).__name__,
                  type(exc).__name__, exc)
        return False
    inputs = [n for n in graph.nodes if n.op == "placeholder"]  # the tensor first, then the held arguments
    if len(inputs) != 1 + len(held):
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


def _held_arguments(module: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any] | None:
    """A call's arguments after its first, by parameter name, when the first is a tensor and none of the others
    holds one (a rate, a flag: constants to trace the block at); None for any other call."""
    if not args or not isinstance(args[0], torch.Tensor) or tensors_in(args[1:]) or tensors_in(kwargs):
        return None
    try:
        signature = inspect.signature(module.forward)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()  # every parameter held: one left out would trace as a second input
    first = next(iter(bound.arguments))
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if any(signature.parameters[name].kind in variadic for name in bound.arguments):
        return None
    return {name: value for name, value in bound.arguments.items() if name != first}


class Skip(nn.Identity):
    """What a dropped block becomes: it returns its first input (the hidden states) unchanged, whatever
    else it is called with."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if args else next(iter(kwargs.values()))


def removable_blocks(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of the residual blocks and encoder layers of ``model`` that can be dropped (see the module
    docstring).

    Raises:
        ExampleInputsError: the model cannot run ``example_inputs``.
    """
    # first input, output, and the call's other arguments when that tensor is its only one (else None)
    calls: dict[str, tuple[torch.Size, torch.Size, dict[str, Any] | None]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if name not in calls and tensors and isinstance(output, torch.Tensor):
                calls[name] = (tensors[0].shape, output.shape, _held_arguments(module, args, kwargs))
        return hook

    hooks = [module.register_forward_hook(record(name), with_kwargs=True) for name, module in model.named_modules()
             if name and not isinstance(module, PRUNABLE_TYPES) and any(True for _ in module.children())]
    try:
        run_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    modules = dict(model.named_modules())
    layers = {f"{name}.{i}" for name, module in modules.items() if isinstance(module, nn.ModuleList)
              for i in range(len(module))}
    found = [name for name, (before, after, held) in calls.items() if before == after and (
        (held is not None and _adds_its_input(modules[name], held)) or
        (name in layers and has_attention(modules[name])))]
    innermost = [n for n in found if not any(other.startswith(n + ".") for other in found)]
    order = {name: i for i, name in enumerate(modules)}
    return sorted(innermost, key=order.__getitem__)


def drop_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace each named submodule of ``model`` by :class:`Skip` (an ``nn.Identity``) in place; returns
    ``model``.

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
        setattr(parent, attr, Skip())
    return model
