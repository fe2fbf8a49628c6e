"""How batches reach a model, and how its outputs reach the loss and the metric.

Batches may be

* a pair or tuple ``(inputs, target, ...)``: ``inputs`` a tensor or a tuple of positional tensors, as a
  ``DataLoader`` over a ``TensorDataset`` yields them;
* a dict of tensors, as Hugging Face tokenizers and collators yield them: every key but the target is a
  keyword argument of the model, and the target is ``labels``.

Outputs may be a tensor, a tuple or list (its first element counts), or a dict or ``ModelOutput``
(``logits`` when it has them, else its first value). :class:`ModelIO` says otherwise when a model and its
data differ from these defaults (``ModelIO(target="label", output="pooler_output")``); ``search()``,
``refine()`` and the fine-tune, metric, sensitivity scan, latency timing and export all read batches and
outputs through it. :class:`Inputs` holds the inputs of one forward, positional and keyword.

Example:
    >>> import torch
    >>> io = ModelIO()
    >>> inputs, target = io.split({"input_ids": torch.ones(4, 7, dtype=torch.long), "labels": torch.zeros(4)})
    >>> inputs.names, inputs.batch_size, target.shape
    (['input_ids'], 4, torch.Size([4]))
    >>> io.select({"logits": torch.ones(4, 2), "hidden": torch.zeros(4, 3)}).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from autoprune.errors import DataError, ExampleInputsError


def _map(value: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    return fn(value) if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class Inputs:
    """The inputs of one forward pass: positional ``args`` and keyword ``kwargs``.

    ``Inputs.of`` accepts what users pass as example inputs: a tensor, a tuple or list of positional
    arguments, a dict of keyword arguments, or an ``Inputs``.
    """

    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Any) -> Inputs:
        if isinstance(value, Inputs):
            return value
        if isinstance(value, torch.Tensor):
            return cls(args=(value,))
        if isinstance(value, (tuple, list)):
            return cls(args=tuple(value))
        if isinstance(value, Mapping):
            return cls(kwargs=dict(value))
        raise ExampleInputsError(f"example inputs must be a tensor, a tuple of tensors or a dict of named tensors, "
                                 f"got {type(value).__name__}")

    def run(self, model: Callable) -> Any:
        """``model(*args, **kwargs)``."""
        return model(*self.args, **self.kwargs)

    def map(self, fn: Callable[[torch.Tensor], Any]) -> Inputs:
        """These inputs with ``fn`` applied to every tensor (other values kept)."""
        return Inputs(tuple(_map(a, fn) for a in self.args), {k: _map(v, fn) for k, v in self.kwargs.items()})

    def take(self, n: int) -> Inputs:
        """The first ``n`` samples of every batched tensor."""
        return self.map(lambda t: t[:n] if t.dim() > 0 else t)

    def repeat_first(self, batch_size: int) -> Inputs:
        """The first sample of every batched tensor, repeated to ``batch_size`` along dim 0 (what latency is
        timed on)."""
        return self.map(lambda t: t[:1].expand(batch_size, *t.shape[1:]).contiguous() if t.dim() > 0 else t)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Inputs:
        """Tensors moved to ``device``; floating ones cast to ``dtype`` when given (integer ids stay integer)."""
        return self.map(lambda t: t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point()
                                       else t.dtype))

    def _slots(self) -> list[tuple[int | str, torch.Tensor]]:
        """Where each tensor sits (a positional index or a keyword), positional ones first."""
        return [(i, a) for i, a in enumerate(self.args) if isinstance(a, torch.Tensor)] + \
            [(k, v) for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)]

    @property
    def names(self) -> list[str]:
        """A name per tensor: ``input0``, ``input1``... for positional ones, the key for keyword ones (the input
        names of an exported ONNX or TorchScript model, in its argument order)."""
        return [f"input{slot}" if isinstance(slot, int) else slot for slot, _ in self._slots()]

    @property
    def tensors(self) -> list[torch.Tensor]:
        """The tensors, in the order of :attr:`names`."""
        return [tensor for _, tensor in self._slots()]

    def with_tensors(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> Inputs:
        """These inputs with their tensors replaced, in the order of :attr:`names` (other values kept)."""
        args, kwargs = list(self.args), dict(self.kwargs)
        for (slot, _), tensor in zip(self._slots(), tensors):
            if isinstance(slot, int):
                args[slot] = tensor
            else:
                kwargs[slot] = tensor
        return Inputs(tuple(args), kwargs)

    @property
    def batch_size(self) -> int | None:
        first = next((t for t in self.tensors if t.dim() > 0), None)
        return None if first is None else int(first.shape[0])

    def for_tracing(self, model: nn.Module) -> tuple | dict:
        """The form tracers take (a tuple of positional, or a dict of keyword arguments): positional arguments
        are bound to ``model.forward``'s parameter names when keyword ones come too."""
        if not self.kwargs:
            return tuple(self.args)
        if not self.args:
            return dict(self.kwargs)
        try:
            bound = inspect.signature(model.forward).bind(*self.args, **self.kwargs)
        except TypeError as exc:
            raise ExampleInputsError(f"the example inputs do not fit {type(model).__name__}.forward: {exc}") from None
        return dict(bound.arguments)

    def describe(self) -> str:
        def one(v: Any) -> str:
            return f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" if isinstance(v, torch.Tensor) \
                else type(v).__name__
        parts = [one(a) for a in self.args] + [f"{k}={one(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts) or "nothing"


@dataclass(frozen=True)
class ModelIO:
    """How a batch splits into the model's inputs and the target, and what of the output the loss and the
    metric see.

    Args:
        target: where the target is: the key of a dict batch (default ``"labels"``), the index in a tuple
            batch (default 1). ``None``: batches carry no target (a model trained by distillation alone).
        inputs: the keys of a dict batch passed to the model (default: every key but the target), or how many
            leading elements of a tuple batch are inputs (default: the first, a tensor or tuple).
        output: the attribute, key or index of the model's output that the loss and the metric see (default:
            ``logits`` when the output has them, else the output when it is a tensor, else its first element).
    """

    target: str | int | None = "auto"  # "auto": "labels" for dict batches, 1 for tuple batches
    inputs: tuple[str, ...] | int | None = None
    output: str | int | None = None

    def __post_init__(self) -> None:
        def key(value: Any) -> bool:
            return value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)
                                                                and value >= 0)
        if not key(self.target):
            raise DataError(f"ModelIO(target=...) must be a dict key, a tuple index or None, got {self.target!r}")
        if not key(self.output):
            raise DataError(f"ModelIO(output=...) must be a key, attribute or index of the model's output, or None, "
                            f"got {self.output!r}")
        ok_inputs = self.inputs is None or (isinstance(self.inputs, int) and not isinstance(self.inputs, bool)
                                            and self.inputs >= 1) or \
            (isinstance(self.inputs, (tuple, list)) and self.inputs and all(isinstance(k, str) for k in self.inputs))
        if not ok_inputs:
            raise DataError(f"ModelIO(inputs=...) must be a tuple of dict keys or a count of leading tuple elements "
                            f"(at least 1), got {self.inputs!r}")
        if isinstance(self.inputs, list):
            object.__setattr__(self, "inputs", tuple(self.inputs))

    def split(self, batch: Any) -> tuple[Inputs, Any]:
        """``(inputs, target)`` of one batch; ``target`` is None when there is none."""
        if isinstance(batch, Mapping):
            key = "labels" if self.target == "auto" else self.target
            if isinstance(self.inputs, int):
                raise DataError(f"ModelIO(inputs={self.inputs}) counts the leading elements of tuple batches, and the "
                                "batches are dicts: name their input keys, ModelIO(inputs=('input_ids', ...))")
            if self.inputs is not None:
                missing = [k for k in self.inputs if k not in batch]
                if missing:
                    raise DataError(f"dict batches lack the input key(s) {missing}; they hold {sorted(batch)}")
                kwargs = {k: batch[k] for k in self.inputs}
            else:
                kwargs = {k: v for k, v in batch.items() if k != key}
            return Inputs(kwargs=kwargs), batch.get(key) if key is not None else None
        if isinstance(batch, (tuple, list)):
            if isinstance(self.inputs, int):
                inputs = Inputs(args=tuple(batch[:self.inputs]))
            else:
                inputs = Inputs.of(batch[0])
            index = 1 if self.target == "auto" else self.target
            if index is None:
                return inputs, None
            if not isinstance(index, int) or index >= len(batch):
                raise DataError(f"batches must hold the target at index {index!r}: tuple batches are (inputs, "
                                f"target), got {len(batch)} element(s); or give ModelIO(target=...)")
            return inputs, batch[index]
        if isinstance(batch, torch.Tensor) and self.target is None:
            return Inputs(args=(batch,)), None
        raise DataError(f"batches must be (inputs, target) tuples or dicts of tensors, got {type(batch).__name__}")

    def select(self, out: Any) -> torch.Tensor:
        """What of the model's output ``out`` the loss and the metric see."""
        if self.output is not None:
            if isinstance(self.output, int) and isinstance(out, torch.Tensor):  # out[3] would be a sample, not an output
                raise DataError(f"ModelIO(output={self.output}) indexes a tuple of outputs, and the model returns one "
                                "tensor: leave output out (None)")
            try:
                if isinstance(self.output, int) or isinstance(out, Mapping):
                    return out[self.output]
                return getattr(out, self.output)
            except (KeyError, IndexError, AttributeError, TypeError):
                raise DataError(f"the model's output ({type(out).__name__}) has no {self.output!r}; "
                                "give ModelIO(output=...) a key, attribute or index it has") from None
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, Mapping) or hasattr(out, "keys"):
            if "logits" in out.keys() and out["logits"] is not None:
                return out["logits"]
            return next(v for v in out.values() if v is not None)
        if isinstance(out, (tuple, list)) and out:
            return out[0]
        raise DataError(f"cannot tell which part of the model's output ({type(out).__name__}) the loss should see; "
                        "give ModelIO(output=...)")

    def run(self, model: Callable, inputs: Inputs) -> torch.Tensor:
        """The output the loss and the metric see, of ``model`` run on ``inputs``."""
        return self.select(inputs.run(model))

    def check_output(self, out: Any, inputs: Inputs) -> torch.Tensor:
        """The selected output of one forward on ``inputs``, checked to be a tensor with a row per sample (what
        the loss and the metric need); DataError naming ``output=`` otherwise. Run once on the dense model
        before a study starts, so a wrong choice is one error up front, not a failure in every trial."""
        selected = self.select(out)
        if not isinstance(selected, torch.Tensor) or selected.dim() == 0 or \
                (inputs.batch_size is not None and selected.shape[0] != inputs.batch_size):
            shape = tuple(selected.shape) if isinstance(selected, torch.Tensor) else type(selected).__name__
            raise DataError(f"the output the loss and metric would see ({self.output!r} of the model's "
                            f"{type(out).__name__}) is {shape}, not a tensor with one row per sample of the batch "
                            f"({inputs.batch_size}): give ModelIO(output=...) the output to score")
        return selected


class Selected(nn.Module):
    """``model`` called with its inputs as positional tensors (in :attr:`Inputs.names` order), returning the
    output :class:`ModelIO` selects: a module TorchScript and ONNX export can trace whatever the model's
    signature and output type."""

    def __init__(self, model: nn.Module, inputs: Inputs, io: ModelIO | None = None) -> None:
        super().__init__()
        self.model = model
        self.io = io or ModelIO()
        self._inputs = inputs  # the layout, and any non-tensor argument, kept as given

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.io.run(self.model, self._inputs.with_tensors(tensors))
