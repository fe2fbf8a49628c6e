"""Which layers of a model may be pruned, which write its output, and how layer globs resolve to names.

Prunable layers are ``Conv1d``, ``Conv2d`` and ``Linear`` modules (including subclasses such as the
output projection inside ``nn.MultiheadAttention``). The *output layers* (those that write what the
model returns, normally the classifier; see :func:`output_layers`) may have their weights sparsified,
but their outputs are never removed by structured methods: that would change what the model predicts.

Example:
    >>> import torch, torch.nn as nn
    >>> from autoprune.layers import prunable_layers
    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> prunable_layers(m)
    ['0', '2']
    >>> prunable_layers(m, exclude=["2"])
    ['0']
"""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from autoprune.errors import ExampleInputsError, LayerMatchError, NoPrunableLayersError
from autoprune.modelio import Inputs

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[None]:
    """Let tracing (TorchScript, ONNX) probe LightningModules: their ``trainer`` property raises when no Trainer
    is attached, except while ``_jit_is_scripting`` is set (the flag Lightning's own ``to_torchscript`` sets)."""
    flagged = [m for m in model.modules() if hasattr(m, "_jit_is_scripting")]
    for module in flagged:
        module._jit_is_scripting = True
    try:
        yield
    finally:
        for module in flagged:
            module._jit_is_scripting = False


def run_model(model: nn.Module, example_inputs: Any) -> Any:
    """Run ``model`` once without gradients; raise :class:`ExampleInputsError` if it cannot run them."""
    inputs = Inputs.of(example_inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return inputs.run(model)
    except Exception as exc:  # any failure of the user's forward is an input problem here
        raise _cannot_run(inputs, exc) from exc
    finally:
        model.train(was_training)


def _cannot_run(inputs: Inputs, exc: Exception) -> ExampleInputsError:
    return ExampleInputsError(f"the model cannot run on the example inputs ({inputs.describe()}): "
                              f"{type(exc).__name__}: {exc}")


def prunable_layers(model: nn.Module, *, exclude: Iterable[str] = ()) -> list[str]:
    """Names of the model's prunable layers in definition order, minus those matching any ``exclude`` glob.

    Raises:
        NoPrunableLayersError: the model has none, or ``exclude`` removed them all.
        LayerMatchError: an ``exclude`` glob matches no prunable layer (most likely a typo).
    """
    names = [name for name, module in model.named_modules() if isinstance(module, PRUNABLE_TYPES) and name]
    if not names:
        raise NoPrunableLayersError(
            f"{type(model).__name__} has no prunable layer (Conv1d, Conv2d or Linear); nothing can be pruned"
        )
    excluded: set[str] = set()
    for pattern in exclude:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise LayerMatchError(f"exclude pattern {pattern!r} matches no prunable layer; layers are {names}")
        excluded.update(hits)
    kept = [n for n in names if n not in excluded]
    if not kept:
        raise NoPrunableLayersError(f"every prunable layer of {type(model).__name__} was excluded")
    return kept


def resolve_globs(patterns: Sequence[str], names: Sequence[str], *, field: str = "layer",
                  what: str = "prunable layer") -> list[str]:
    """Expand globs (``"layer1.*"``) against ``names`` (the model's ``what``s, by default its prunable
    layers), keeping the order of ``names``.

    Raises:
        LayerMatchError: a pattern matches nothing (the message names the ``field`` it came from).
    """
    selected: set[str] = set()
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise LayerMatchError(f"{field} pattern {pattern!r} matches no {what}; the {what}s are {list(names)}")
        selected.update(hits)
    return [n for n in names if n in selected]


def tensors_in(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output or a call's arguments (a tensor, tuple, list, dict or ModelOutput,
    nested)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in tensors_in(item)]
    if isinstance(out, dict) or hasattr(out, "values"):
        return [t for item in out.values() for t in tensors_in(item)]
    return []


def output_layers(model: nn.Module, example_inputs: Any) -> list[str]:
    """The prunable layers that write what the model returns (the classifier, an output projection): their
    outputs may be sparsified but never removed by structured methods, since that would change the
    shape of the model's output.

    Found by following every tensor the forward returns back through the autograd graph to the first
    prunable layer on each path: a layer that runs but whose output the model does not return (an unused
    pooler) is not one of them; every layer that adds into a returned residual stream is.
    """
    inputs = Inputs.of(example_inputs)
    produced: dict[Any, str] = {}  # autograd node of a prunable layer's output -> the layer
    ran: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and name:
            def record(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                ran.append(name)
                if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                    produced[out.grad_fn] = name
            hooks.append(module.register_forward_hook(record))
    frozen = [p for p in model.parameters() if not p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        for p in frozen:  # a frozen layer's output needs a graph too
            p.requires_grad_(True)
        with torch.enable_grad():
            outputs = tensors_in(inputs.run(model))
    except Exception as exc:
        raise _cannot_run(inputs, exc) from exc
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    found: set[str] = set()
    seen: set[Any] = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in produced:
            found.add(produced[node])
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    if not found:  # an output no autograd path links to a layer (computed under no_grad): the last one that ran
        return ran[-1:]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(found, key=order.__getitem__)
