"""Which layers of a model may be pruned, how layer globs resolve to names, and how inputs reach a model.

Prunable layers are ``Conv1d``, ``Conv2d`` and ``Linear`` modules (including subclasses such as the
output projection inside ``nn.MultiheadAttention``). The *output layer* (the last prunable layer that
runs in a forward pass, normally the classifier) may have its weights sparsified, but its outputs are
never removed by structured methods: that would change what the model predicts.

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

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)


def as_input_tuple(example_inputs: Any) -> tuple:
    """Normalise example inputs (a tensor, or a tuple/list of positional arguments) to a tuple."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise ExampleInputsError(
        f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}"
    )


def batch_inputs(example_inputs: Any, batch_size: int) -> tuple:
    """The first sample of each input tensor, repeated to ``batch_size`` along dim 0 (what latency is timed on)."""
    out = []
    for arg in as_input_tuple(example_inputs):
        if isinstance(arg, torch.Tensor) and arg.dim() > 0:
            arg = arg[:1].expand(batch_size, *arg.shape[1:]).contiguous()
        out.append(arg)
    return tuple(out)


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
    args = as_input_tuple(example_inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*args)
    except Exception as exc:  # any failure of the user's forward is an input problem here
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args]
        raise ExampleInputsError(
            f"the model cannot run on the example inputs (shapes {shapes}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        model.train(was_training)


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


def output_layers(model: nn.Module, example_inputs: Any) -> list[str]:
    """The name of the last prunable layer that runs in a forward pass (the classifier / output head).

    Returned as a list so callers can treat "no output layer found" (a model whose last op is not a
    prunable layer) and "one" alike.
    """
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and name:
            hooks.append(module.register_forward_hook(lambda mod, inp, out, name=name: order.append(name)))
    try:
        run_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return order[-1:]
