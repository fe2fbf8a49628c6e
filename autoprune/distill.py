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

With ``hidden`` above zero the student learns the dense model's **hidden states** too (layer-wise
distillation, as TinyBERT and the depth-pruning papers do): the output of every encoder layer the pruned
model keeps is pulled towards the output of the same layer of the dense model, by their relative squared
error (``|s - t|^2 / |t|^2`` over real tokens: positions that ``attention_mask`` marks as padding carry no
weight), averaged over the layers and added to the loss at weight ``hidden``. A model with encoder layers
dropped (:mod:`autoprune.depth`) then re-learns, layer by layer, the states the next kept layer expects,
not only the final output. Encoder layers are the entries of a ``ModuleList`` that hold an attention; a
model without any is refused (:meth:`Teacher.of`).

Batches without a target (an embedder) learn from the teacher alone. The teacher runs under
``torch.inference_mode`` and its outputs are cached per batch, keyed by the batch's content, so data
that repeats (a loader without shuffling, or several epochs of few batches) runs the teacher once.

Example:
    >>> import torch
    >>> d = Distillation(weight=1.0, kind="cosine")
    >>> float(d.term(torch.ones(2, 4), torch.ones(2, 4)))
    0.0
    >>> float(hidden_term({"layer.0": torch.zeros(1, 3, 2)}, {"layer.0": torch.ones(1, 3, 2)}, None))
    1.0
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
from autoprune.attention import has_attention
from autoprune.depth import Skip
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
        hidden: weight of the layer-wise term (the encoder layers' hidden states), 0 for none.
    """

    weight: float = defaults.DISTILL_WEIGHT
    kind: Literal["auto", "kl", "cosine", "mse"] = "auto"
    temperature: float = 4.0
    cache_batches: int = 256
    hidden: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 < self.weight <= 1.0):
            raise AutopruneInputError(f"distillation weight must lie in (0, 1], got {self.weight!r}")
        if self.kind not in KINDS:
            raise AutopruneInputError(f"distillation kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not self.temperature > 0:
            raise AutopruneInputError(f"distillation temperature must be positive, got {self.temperature!r}")
        if not isinstance(self.cache_batches, int) or self.cache_batches < 0:
            raise AutopruneInputError(f"cache_batches must be an integer >= 0, got {self.cache_batches!r}")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, (int, float)) or not self.hidden >= 0:
            raise AutopruneInputError(f"the hidden-state distillation weight must be a number >= 0, got "
                                      f"{self.hidden!r}")

    def describe(self) -> str:
        """How the search prints it: ``cosine (weight 1)``, ``kl (weight 0.5, hidden states 1)``."""
        hidden = f", hidden states {self.hidden:g}" if self.hidden else ""
        return f"{self.kind} (weight {self.weight:g}{hidden})"

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

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, task: torch.Tensor | None,
             layers: torch.Tensor | None = None) -> torch.Tensor:
        """``(1 - weight) * task + weight * (term + hidden * layers)``, ``layers`` being :func:`hidden_term`;
        without a task loss, the distillation alone."""
        term = self.term(student, teacher)
        if layers is not None and self.hidden:
            term = term + self.hidden * layers
        return term if task is None else (1.0 - self.weight) * task + self.weight * term


def encoder_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s encoder layers: the entries of a ``ModuleList`` that hold an attention (what the
    layer-wise term matches; the innermost when lists nest)."""
    found = [f"{name}.{i}" for name, module in model.named_modules() if isinstance(module, nn.ModuleList)
             for i, child in enumerate(module) if has_attention(child)]
    return [n for n in found if not any(other.startswith(n + ".") for other in found)]


def _states(output: Any) -> torch.Tensor | None:
    """The hidden states a layer returns: the tensor, or the first of a tuple (Hugging Face layers)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, torch.Tensor) else None


def hidden_term(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mean over the layers both hold (same name, same shape) of the student's relative squared error to
    the teacher's hidden states, ``|s - t|^2 / |t|^2``, counted on the tokens ``mask`` keeps (``[batch,
    tokens]``, 1 for a real token); None when no layer matches."""
    terms = []
    for name, s in student.items():
        t = teacher.get(name)
        if t is None or t.shape != s.shape:
            continue
        s, t = s.float(), t.float()
        error, norm = (s - t).pow(2), t.pow(2)
        if mask is not None and s.dim() == 3 and tuple(mask.shape) == tuple(s.shape[:2]):
            keep = mask.to(s.dtype).unsqueeze(-1)
            error, norm = error * keep, norm * keep
        terms.append(error.sum() / norm.sum().clamp_min(1e-12))
    return torch.stack(terms).mean() if terms else None


class LayerTap:
    """Forward hooks that keep the hidden states of the named layers of ``model`` for the last forward pass
    (a layer dropped by depth pruning, now a ``Skip``, is left out: it has no state of its own).

    Example:
        >>> tap = LayerTap(nn.Sequential(nn.Linear(2, 2)), ["0"])
        >>> _ = tap.model(torch.ones(1, 2)); sorted(tap.states)
        ['0']
        >>> tap.remove()
    """

    def __init__(self, model: nn.Module, layers: list[str]) -> None:
        self.model = model
        self.states: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._hooks = [modules[n].register_forward_hook(self._keep(n)) for n in layers
                       if n in modules and not isinstance(modules[n], Skip)]

    def _keep(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            states = _states(output)
            if states is not None:
                self.states[name] = states
        return hook

    def take(self) -> dict[str, torch.Tensor]:
        """The states kept since the last call (and forget them)."""
        states, self.states = self.states, {}
        return states

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


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

    def __init__(self, model: nn.Module, io: ModelIO, cache_batches: int = 256, *,
                 layers: list[str] | tuple[str, ...] = ()) -> None:
        self.model = model  # the search's dense copy, shared: used as it is, never changed
        self.io = io
        self.layers = list(layers)  # encoder layers whose hidden states are kept too (layer-wise distillation)
        self.cache: OrderedDict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]] = OrderedDict()
        self.capacity = cache_batches

    @classmethod
    def of(cls, model: nn.Module, io: ModelIO, distill: Distillation) -> Teacher:
        """The teacher ``distill`` needs: its cache size, and the encoder layers when it distils hidden states.

        Raises:
            AutopruneInputError: ``distill`` asks for hidden states and ``model`` has no encoder layer.
        """
        layers = encoder_layers(model) if distill.hidden else []
        if distill.hidden and not layers:
            raise AutopruneInputError(f"layer-wise distillation (hidden={distill.hidden}) matches encoder layers, and "
                                      f"{type(model).__name__} has none (no ModuleList entry holds an attention): "
                                      "distil its outputs alone (hidden=0)")
        return cls(model, io, distill.cache_batches, layers=layers)

    @staticmethod
    def _key(inputs: Inputs) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in zip(inputs.names, inputs.tensors):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def outputs(self, inputs: Inputs) -> torch.Tensor:
        """The dense model's output for ``inputs``."""
        return self.both(inputs)[0]

    def both(self, inputs: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The dense model's output for ``inputs`` and the hidden states of its :attr:`layers` (empty when
        none are asked for)."""
        key = self._key(inputs) if self.capacity else None
        if key is not None and key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        device = next(self.model.parameters()).device
        tap = LayerTap(self.model, self.layers) if self.layers else None
        try:
            with torch.inference_mode():
                out = self.io.run(self.model, inputs.to(device))
        finally:
            states = tap.take() if tap is not None else {}
            if tap is not None:
                tap.remove()
        # outside inference mode: tensors the student's backward may use
        found = (out.clone(), {name: state.clone() for name, state in states.items()})
        if key is not None:
            self.cache[key] = found
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        return found

    def to(self, device: Any) -> Teacher:
        """Run the teacher on ``device`` (a private copy there when the dense model lives elsewhere)."""
        if next(self.model.parameters()).device != torch.device(device):
            self.model = copy.deepcopy(self.model).to(device).eval()  # same names: the layers still match
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
