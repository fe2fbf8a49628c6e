"""Policy: how to prune one model, layer by layer, and how to regularise while fine-tuning.

A policy is plain, frozen data with a JSON form that carries a schema version, so a policy found by a
search can be stored, reviewed, edited by hand and applied again with :func:`autoprune.prune`.

Example:
    >>> from autoprune.policy import Policy, LayerPolicy
    >>> p = Policy(layers={"conv1": LayerPolicy(sparsity=0.5, method="l1_structured")}, round_to=8)
    >>> Policy.from_dict(p.to_dict()) == p
    True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from autoprune.errors import PolicyError, SparsityError

SCHEMA_VERSION = 2  # 2 added ``quantize``; version 1 files (no quantization) still read
READABLE_VERSIONS = (1, 2)
REGULARIZER_KINDS = ("none", "l1", "group_lasso")
#: what a policy may do after pruning and fine-tuning: nothing, or int8 in ONNX Runtime with activations
#: calibrated on training batches (static) or quantized on the fly (dynamic)
QUANTIZATIONS = ("none", "int8_static", "int8_dynamic")


def check_sparsity(value: float, *, where: str) -> float:
    """Return ``value`` as a float if it lies in [0, 1), else raise :class:`SparsityError` naming ``where``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SparsityError(f"sparsity of {where} must be a number in [0, 1), got {value!r}") from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise SparsityError(f"sparsity of {where} must lie in [0, 1), got {value}")
    return value


def inside(module: str, blocks: Iterable[str]) -> bool:
    """Whether the module named ``module`` is one of ``blocks`` or lies inside one of them."""
    return any(module == b or module.startswith(b + ".") for b in blocks)


@dataclass(frozen=True)
class LayerPolicy:
    """How to prune one layer: the fraction to remove and the registered method that removes it.

    For an unstructured method ``sparsity`` is the fraction of the layer's weights set to zero; for a
    structured one, the fraction of its output channels (neurons) removed.
    """

    sparsity: float
    method: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", check_sparsity(self.sparsity, where=f"method {self.method!r}"))
        if not isinstance(self.method, str) or not self.method:
            raise PolicyError(f"a layer's method must be a non-empty string, got {self.method!r}")


@dataclass(frozen=True)
class Regularizer:
    """The sparse regulariser switched on while fine-tuning: ``l1`` on weights, ``group_lasso`` over output
    channels, or ``none``. ``strength`` is lambda; 0 means off."""

    kind: str = "none"
    strength: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in REGULARIZER_KINDS:
            raise PolicyError(f"regularizer kind must be one of {REGULARIZER_KINDS}, got {self.kind!r}")
        strength = float(self.strength)
        if not (strength >= 0.0) or math.isinf(strength):
            raise PolicyError(f"regularizer strength must be a finite number >= 0, got {self.strength!r}")
        object.__setattr__(self, "strength", strength)

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.strength > 0.0


@dataclass(frozen=True)
class Policy:
    """A whole pruning policy.

    Args:
        layers: module name (as in ``model.named_modules()``) -> :class:`LayerPolicy`. Layers not named
            here are left as they are (but see coupling in :func:`autoprune.prune`).
        regularizer: the sparse regulariser used while fine-tuning.
        round_to: if set, structured pruning keeps each pruned layer's remaining channel count a
            multiple of this number (aligned shapes run faster on CPUs and GPUs).
        drop: residual blocks removed whole, each replaced by its identity shortcut (depth pruning, see
            :mod:`autoprune.depth`); ``layers`` may not name a layer inside one.
        quantize: after fine-tuning, ``none`` or int8 in ONNX Runtime (``int8_static``: activations calibrated
            on training batches; ``int8_dynamic``: weights only, activations quantized at run time); see
            :mod:`autoprune.quantize`.
    """

    layers: Mapping[str, LayerPolicy] = field(default_factory=dict)
    regularizer: Regularizer = field(default_factory=Regularizer)
    round_to: int | None = None
    drop: tuple[str, ...] = ()
    quantize: str = "none"

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZATIONS:
            raise PolicyError(f"quantize must be one of {QUANTIZATIONS}, got {self.quantize!r}")
        for name, layer in self.layers.items():
            if not isinstance(layer, LayerPolicy):
                raise PolicyError(f"layer {name!r}: expected a LayerPolicy, got {type(layer).__name__}")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise PolicyError(f"round_to must be a positive integer or None, got {self.round_to!r}")
        if not isinstance(self.drop, (list, tuple, set, frozenset)) or not all(isinstance(b, str) and b for b in self.drop):
            raise PolicyError(f"drop must be a list of module names, got {self.drop!r}")
        object.__setattr__(self, "drop", tuple(sorted(set(self.drop))))
        clashing = [n for n in self.layers if inside(n, self.drop)]
        if clashing:
            raise PolicyError(f"layer(s) {clashing} lie inside dropped block(s) {list(self.drop)}: "
                              "a removed block has no layers left to prune")
        # Freeze the mapping (a copy, sorted for a stable JSON form) so a Policy is truly immutable.
        object.__setattr__(self, "layers", MappingProxyType(dict(sorted(self.layers.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @classmethod
    def uniform(
        cls,
        layers: list[str] | tuple[str, ...],
        *,
        sparsity: float,
        method: str,
        regularizer: Regularizer | None = None,
        round_to: int | None = None,
        quantize: str = "none",
    ) -> Policy:
        """The hand-made baseline: the same method at the same sparsity in every named layer (then quantized as
        ``quantize`` says)."""
        return cls(
            layers={name: LayerPolicy(sparsity=sparsity, method=method) for name in layers},
            regularizer=regularizer or Regularizer(),
            round_to=round_to,
            quantize=quantize,
        )

    @property
    def is_dense(self) -> bool:
        """True when the policy removes nothing (it may still quantize)."""
        return not self.drop and all(layer.sparsity == 0.0 for layer in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "layers": {n: {"sparsity": lp.sparsity, "method": lp.method} for n, lp in self.layers.items()},
            "regularizer": {"kind": self.regularizer.kind, "strength": self.regularizer.strength},
            "round_to": self.round_to,
            "drop": list(self.drop),
            "quantize": self.quantize,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        if not isinstance(data, Mapping):
            raise PolicyError(f"a policy must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise PolicyError(f"policy schema_version {version!r} is not supported; this autoprune reads versions "
                              f"{list(READABLE_VERSIONS)}")
        unknown = set(data) - {"schema_version", "layers", "regularizer", "round_to", "drop",
                               *(("quantize",) if version >= 2 else ())}
        if unknown:
            raise PolicyError(f"unknown policy field(s) {sorted(unknown)}")
        try:
            layers = {
                str(name): LayerPolicy(sparsity=spec["sparsity"], method=spec["method"])
                for name, spec in dict(data.get("layers", {})).items()
            }
            reg = dict(data.get("regularizer") or {})
            regularizer = Regularizer(kind=reg.get("kind", "none"), strength=reg.get("strength", 0.0))
        except (KeyError, TypeError) as exc:
            raise PolicyError(f"malformed policy: missing or wrong field {exc}") from None
        return cls(layers=layers, regularizer=regularizer, round_to=data.get("round_to"), drop=data.get("drop") or (),
                   quantize=data.get("quantize", "none"))

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Policy:
        """Read a policy from a JSON string or a path to a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise PolicyError(f"policy file {path} does not exist")
            text = path.read_text()
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy is not valid JSON: {exc}") from None
