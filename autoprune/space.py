"""Search spaces: a YAML file, validated with pydantic, that says what a search may choose.

A space resolves against a model (which layers, which groups, which blocks) into a
:class:`~autoprune.resolved_space.ResolvedSpace`, which draws trials' policies and the seeded policies'
parameters (:mod:`autoprune.resolved_space`).

Named spaces (``"default"``, ``"structured"``, ``"unstructured"``, ``"transformer"``) are the YAML files shipped in the
package ``autoprune.search_spaces``; anything else is read as a path. See search_spaces/default.yaml
for the commented reference of every field.

Example:
    >>> from autoprune.space import load_space
    >>> space = load_space("structured")
    >>> space.sparsity.mode
    'global_scale'
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autoprune.batchnorm import POLICIES as BN_POLICIES
from autoprune.errors import LayerMatchError, SearchSpaceError
from autoprune.dropout import DROPOUT
from autoprune.fidelity import Fidelity
from autoprune.finetune import OPTIMIZERS
from autoprune.layers import prunable_layers, resolve_globs
from autoprune.methods import available_methods, get_method
from autoprune.policy import QUANTIZATIONS, REGULARIZER_KINDS
from autoprune.resolved_space import ResolvedSpace
from autoprune.sparsity_modes import MODES

BUILTIN_SPACES = ("default", "structured", "unstructured", "transformer", "compress", "pretrained")


def _coerce_number(value: Any) -> Any:
    """PyYAML's safe_load reads ``1e-5`` (no dot) as a string: turn numeric strings into floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    low: float
    high: float
    log: bool = False

    _coerce = field_validator("low", "high", mode="before")(_coerce_number)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self

    def at(self, fraction: float) -> float:
        """The value ``fraction`` of the way from ``low`` to ``high``, on the range's own scale (0.5: the middle)."""
        if self.log:
            return float(self.low ** (1 - fraction) * self.high ** fraction)
        return float(self.low + fraction * (self.high - self.low))


class SparsitySpec(_Strict):
    mode: Literal[tuple(MODES)] = "global_scale"  # the names of sparsity_modes.MODES
    low: float = Field(0.0, ge=0.0, lt=1.0)
    high: float = Field(0.9, ge=0.0, lt=1.0)
    step: float | None = Field(0.05, gt=0.0)
    scale_low: float = Field(0.5, gt=0.0)
    scale_high: float = Field(1.5, gt=0.0)
    scale_step: float | None = Field(0.1, gt=0.0)
    groups: dict[str, list[str]] = Field(default_factory=dict)

    _coerce = field_validator("low", "high", "step", "scale_low", "scale_high", "scale_step", mode="before")(_coerce_number)

    @model_validator(mode="after")
    def _check(self) -> SparsitySpec:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.scale_low > self.scale_high:
            raise ValueError(f"scale_low ({self.scale_low}) must not exceed scale_high ({self.scale_high})")
        if self.mode == "per_group" and not self.groups:
            raise ValueError("mode per_group needs `groups`: group name -> list of layer globs")
        return self


class RegularizerSpec(_Strict):
    kinds: list[Literal[REGULARIZER_KINDS]] = Field(default_factory=lambda: ["none"], min_length=1)
    strength: Range = Range(low=1e-6, high=1e-3, log=True)


class FinetuneSpec(_Strict):
    max_steps: int = Field(60, ge=0)
    lr: Range = Range(low=1e-4, high=3e-3, log=True)
    calibration_batches: int = Field(4, ge=1)
    optimizer: Literal[tuple(OPTIMIZERS)] = "adam"  # the names of finetune.OPTIMIZERS
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    #: what the fine-tune does to BatchNorm statistics (:mod:`autoprune.batchnorm`)
    bn: Literal[BN_POLICIES] = "auto"
    #: ``off``: dropout, drop-connect and other train-only noise stay off while fine-tuning (dropout.DROPOUT)
    dropout: Literal[DROPOUT] = "keep"

    _coerce = field_validator("weight_decay", mode="before")(_coerce_number)

    @field_validator("dropout", mode="before")
    @classmethod
    def _off_is_a_word(cls, value: Any) -> Any:
        """YAML reads an unquoted ``off`` as false (and ``on`` as true): ``dropout: off`` means off."""
        return {False: "off", True: "keep"}.get(value, value) if isinstance(value, bool) else value


class FidelitySpec(_Strict):
    """Multi-fidelity search (see :mod:`autoprune.fidelity`): the rungs' total fine-tune steps, the share of a
    rung promoted to the next, and the batches BatchNorm statistics are recomputed on when screening."""

    steps: list[int] = Field(min_length=2)
    promote: float = Field(1 / 3, gt=0.0, le=1.0)
    screen_batches: int = Field(10, ge=1)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if steps[0] < 0 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"steps must be strictly increasing step counts >= 0 (e.g. [0, 20, 60]), got {steps}")
        return steps


#: fields added after the first spaces: left out of the fingerprint at their default, so that a space
#: written before them keeps its fingerprint (and its studies stay joinable)
_LATER_DEFAULTS = {"drop_blocks": [], "prune_hidden": False, "fidelity": None, "quantize": ["none"],
                   "reconstruct": False}
_LATER_FINETUNE_DEFAULTS = {"optimizer": "adam", "weight_decay": 0.0, "warmup_steps": 0, "bn": "auto",
                            "dropout": "keep"}


class SearchSpace(_Strict):
    """The validated content of a search-space YAML file."""

    version: Literal[1] = 1
    description: str = ""
    layers: Literal["auto"] | list[str] = "auto"
    exclude: list[str] = Field(default_factory=list)
    sparsity: SparsitySpec = SparsitySpec()
    methods: list[str] = Field(default_factory=lambda: ["l1_structured"], min_length=1)
    round_to: list[int | None] = Field(default_factory=lambda: [None], min_length=1)
    regularizer: RegularizerSpec = RegularizerSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    drop_blocks: Literal["auto"] | list[str] = Field(default_factory=list)
    prune_hidden: bool = False
    fidelity: FidelitySpec | None = None
    quantize: list[Literal[QUANTIZATIONS]] = Field(default_factory=lambda: ["none"],
                                                                           min_length=1)
    #: refit the layers that read removed channels to the dense model's outputs (:mod:`autoprune.reconstruct`)
    reconstruct: bool = False

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in available_methods()]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; allowed: {available_methods()}")
        return methods

    @field_validator("round_to")
    @classmethod
    def _positive(cls, values: list[int | None]) -> list[int | None]:
        if any(v is not None and v < 1 for v in values):
            raise ValueError("round_to entries must be null or integers >= 1")
        return values

    @model_validator(mode="after")
    def _full_last_rung(self) -> SearchSpace:
        if self.fidelity is not None and self.fidelity.steps[-1] != self.finetune.max_steps:
            raise ValueError(f"fidelity.steps must end at the full fine-tune, finetune.max_steps "
                             f"({self.finetune.max_steps}), got {self.fidelity.steps}")
        return self

    @property
    def quantizes(self) -> bool:
        """Whether the space may quantize (then it needs the onnxruntime runtime)."""
        return any(q != "none" for q in self.quantize)

    @property
    def rungs(self) -> Fidelity | None:
        """The space's multi-fidelity rungs, or None for a search that fully fine-tunes every trial."""
        f = self.fidelity
        return None if f is None else Fidelity(steps=tuple(f.steps), promote=f.promote,
                                               screen_batches=f.screen_batches)

    def with_fidelity(self, fidelity: bool | None) -> SearchSpace:
        """This space with multi-fidelity as asked: None keeps the space's choice; False switches it off;
        True keeps the space's rungs, or adds three (screening, a third of the steps, all of them)."""
        if fidelity is None or (fidelity and self.fidelity is not None):
            return self
        if not fidelity:
            return self.model_copy(update={"fidelity": None})
        try:
            rungs = Fidelity.default_for(self.finetune.max_steps)
        except ValueError as exc:
            raise SearchSpaceError(str(exc)) from None
        return self.model_copy(update={"fidelity": FidelitySpec(steps=list(rungs.steps), promote=rungs.promote,
                                                                screen_batches=rungs.screen_batches)})

    def with_options(self, *, bn: str | None = None, reconstruct: bool | None = None) -> SearchSpace:
        """This space with the BatchNorm policy and reconstruction a caller chose over the space's own (None
        keeps the space's); the fingerprint follows, so a study's workers agree on them."""
        space = self
        if bn is not None:
            space = space.model_copy(update={"finetune": space.finetune.model_copy(update={"bn": bn})})
        if reconstruct is not None:
            space = space.model_copy(update={"reconstruct": reconstruct})
        return space

    @property
    def has_structured(self) -> bool:
        """Whether any method of the space removes channels (and so changes shapes)."""
        return any(get_method(m).STRUCTURED for m in self.methods)

    @property
    def structured_only(self) -> bool:
        """Whether every method of the space removes channels (then coupled layers are searched as one)."""
        return all(get_method(m).STRUCTURED for m in self.methods)

    def fingerprint(self) -> str:
        """A short hash of the space's content: two studies with different spaces never mix."""
        content = self.model_dump()
        for fields, defaults in ((content, _LATER_DEFAULTS), (content["finetune"], _LATER_FINETUNE_DEFAULTS)):
            for key, default in defaults.items():
                if fields[key] == default:
                    del fields[key]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def droppable(self, blocks: Sequence[str]) -> tuple[str, ...]:
        """The removable ``blocks`` (from :func:`autoprune.depth.removable_blocks`) this space searches over."""
        if self.drop_blocks == "auto":
            return tuple(blocks)
        try:
            return tuple(resolve_globs(self.drop_blocks, blocks, field="drop_blocks", what="removable residual block"))
        except LayerMatchError as exc:
            raise SearchSpaceError(str(exc)) from None

    def resolve(self, model: Any, *, protected: list[str], coupled: Sequence[Sequence[str]] = (),
                blocks: Sequence[str] = (), hidden: Sequence[str] = ()) -> ResolvedSpace:
        """Bind the space to a model: the searched layers (output layers left out) and their groups.

        ``coupled`` lists sets of layers whose output channels are removed together (see
        :func:`autoprune.methods.structured.coupled_layers`). When every method of the space is
        structured, each such set is searched as one unit with one sparsity (``per_layer``) or one scale
        (``global_scale``): a structured policy cannot give coupled layers different sparsities, so
        separate parameters would only add dimensions that change nothing but their mean.

        ``blocks`` lists the model's removable residual blocks (:func:`autoprune.depth.removable_blocks`);
        each one the space's ``drop_blocks`` selects gets a yes/no parameter ``drop.<block>``.

        ``hidden`` lists the layers that write a transformer's hidden size
        (:func:`autoprune.methods.structured.hidden_layers`); a space with a structured method leaves
        them out unless it says ``prune_hidden: true``.
        """
        skip = set(protected) | (set() if self.prune_hidden or not self.has_structured else set(hidden))
        names = [n for n in prunable_layers(model, exclude=self.exclude) if n not in skip]
        if self.layers != "auto":
            names = resolve_globs(self.layers, names)
        if not names:
            raise SearchSpaceError("the search space selects no prunable layer of the model")
        groups: dict[str, list[str]] = {}
        if self.sparsity.mode == "per_group":
            for group, patterns in self.sparsity.groups.items():
                groups[group] = resolve_globs(patterns, names)
        units = {n: (n,) for n in names}
        if self.structured_only:
            for members in coupled:
                searched = tuple(n for n in members if n in units)
                if len(searched) > 1:
                    for n in searched:
                        units.pop(n)
                    units["+".join(searched)] = searched
        order = {n: i for i, n in enumerate(names)}
        units = dict(sorted(units.items(), key=lambda item: order[item[1][0]]))
        return ResolvedSpace(space=self, layers=tuple(names), groups=groups, units=units,
                             blocks=self.droppable(blocks))


def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"invalid search space {source}:"]
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if not item["loc"]:  # a rule across fields: its message names them, and the input is the whole space
            lines.append(f"  {message}")
            continue
        where = ".".join(str(p) for p in item["loc"])
        got = repr(item.get("input"))
        lines.append(f"  field `{where}`: {message} (got {got[:80]}{'...' if len(got) > 80 else ''})")
    return "\n".join(lines)


def space_path(name_or_path: str | Path) -> Path:
    """Resolve a built-in space name to its shipped file, or return the path given."""
    if str(name_or_path) in BUILTIN_SPACES:
        return Path(str(importlib.resources.files("autoprune.search_spaces") / f"{name_or_path}.yaml"))
    path = Path(name_or_path)
    if not path.is_file():
        raise SearchSpaceError(f"search space {str(name_or_path)!r} is neither a built-in space "
                               f"{list(BUILTIN_SPACES)} nor an existing file")
    return path


def load_space(name_or_path: str | Path | SearchSpace | dict) -> SearchSpace:
    """Read and validate a search space; errors name the file, the field and what is allowed."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    if isinstance(name_or_path, dict):
        try:
            return SearchSpace.model_validate(name_or_path)
        except ValidationError as exc:
            raise SearchSpaceError(_format_validation_error("the space given", exc)) from None
    if not isinstance(name_or_path, (str, Path)):
        raise SearchSpaceError(f"space must be a built-in name, a YAML path, a dict or a SearchSpace, got "
                               f"{type(name_or_path).__name__}")
    path = space_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"search space {path} is not valid YAML: {exc}") from None
    except UnicodeDecodeError:
        raise SearchSpaceError(f"search space {path} is not UTF-8 text: save it as UTF-8 YAML") from None
    if data is None:
        raise SearchSpaceError(f"search space {path} is empty: copy search_spaces/default.yaml and edit it, or "
                               "give a built-in space name")
    if not isinstance(data, dict):
        raise SearchSpaceError(f"search space {path} must be a YAML mapping, got {type(data).__name__}")
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise SearchSpaceError(_format_validation_error(str(path), exc)) from None
