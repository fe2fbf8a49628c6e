"""The runtime contract and the name -> runtime registry (see :mod:`autoprune.runtimes`)."""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from torch import nn

from autoprune.errors import AutopruneInputError, RuntimeNotFoundError
from autoprune.registry import Registry

if TYPE_CHECKING:
    from autoprune.measure import HardwareProfile
    from autoprune.modelio import Inputs

#: one forward of a timed model, its inputs bound
Forward = Callable[[], Any]

#: timed forwards of a per-module timing at most (a large model's each last long enough)
MAX_FORWARDS = 1000


@dataclass(frozen=True)
class ModuleTimes:
    """Where a runtime's forward spends its time: seconds per module, *own* time (beyond its submodules; ``""``
    the root, which also holds what no module claims), summed over the kept forwards, whose median took
    ``forward_ms``; ``how`` says how it was measured."""

    own: dict[str, float]
    forward_ms: float
    how: str

    def shares(self) -> dict[str, float]:
        """Each module's own share of the time (they sum to 1)."""
        total = sum(self.own.values())
        return {name: t / total if total > 0 else 0.0 for name, t in self.own.items()}


def module_of(scope: str, names: set[str]) -> str:
    """The module (qualified name in ``names``) an exported node belongs to, from its scope path as the ONNX
    exporter writes it: the wrapper, one scope per module (an attribute name, or a container child's
    ``parent.index``), the operator; ``""`` for a node no module claims.

    Example:
        >>> names = {"layers", "layers.0", "layers.0.conv2", "layers.1.shortcut", "layers.1.shortcut.0", "layers.1"}
        >>> module_of("/model/layers/layers.0/conv2/Conv", names)
        'layers.0.conv2'
        >>> module_of("/model/layers/layers.1/shortcut/shortcut.0/Conv", names)
        'layers.1.shortcut.0'
        >>> module_of("ReorderOutput", names)
        ''
    """
    current = ""
    for part in scope.strip("/").split("/")[1:-1]:
        last = current.rpartition(".")[2]
        candidates = [f"{current}.{part}" if current else part,  # an attribute of the current module
                      part,  # a qualified name (a top-level container's child: ``layers.0``)
                      current + part[len(last):] if last and part.startswith(last + ".") else ""]  # ``shortcut.0``
        current = next((c for c in candidates if c in names and (not current or c.startswith(current + "."))),
                       current)
    return current


class Runtime(ABC):
    """What runs a model's timed forwards under a :class:`~autoprune.measure.HardwareProfile`.

    :func:`autoprune.measure.measure` owns the timing protocol (warm-up, samples, interleaving with the
    dense model, statistics); a runtime only turns a model into a zero-argument forward on a batch.
    The checks are no-ops unless a runtime needs them.
    """

    #: the name a profile gives (``HardwareProfile(runtime=name)``)
    name: ClassVar[str]

    def check(self, profile: HardwareProfile) -> None:
        """Refuse a profile this runtime cannot honour, with a :class:`~autoprune.errors.ProfileError` that
        says what to change (called when the profile is made)."""

    def check_available(self, profile: HardwareProfile) -> None:
        """Refuse to time when what this runtime needs is not installed here (called before timing)."""

    def module_times(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> ModuleTimes | None:
        """Where this runtime's forward of ``model`` on ``inputs`` (a batch of the profile's size) spends its
        time, per module (see :class:`ModuleTimes`); None when it cannot say (``autoprune analyze`` then shows
        eager PyTorch's shares, and says so)."""
        return None

    @abstractmethod
    def forward(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> Forward:
        """One forward of a private copy of ``model`` on ``inputs`` (already a batch of the profile's
        ``batch_size``; see :class:`~autoprune.modelio.Inputs`), on the profile's device and dtype; ``model``
        itself must stay untouched."""


REGISTRY: Registry[Runtime] = Registry("runtime", (Runtime,), error=AutopruneInputError,
                                       unknown="profile runtime must be one of {known}, got {name!r}",
                                       unknown_error=RuntimeNotFoundError)


def register_runtime(runtime: Runtime, *, overwrite: bool = False) -> Runtime:
    """Add ``runtime`` to the registry under ``runtime.name`` and return it."""
    return REGISTRY.register(runtime, overwrite=overwrite)


def _builtin_names() -> list[str]:
    import autoprune.runtimes as package

    return [m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "base"]


def get_runtime(name: str) -> Runtime:
    """The runtime registered as ``name``, importing the built-in module of that name on first use;
    :class:`~autoprune.errors.RuntimeNotFoundError` lists the known runtimes otherwise."""
    if isinstance(name, str) and name not in REGISTRY.entries and name in _builtin_names():
        importlib.import_module(f"autoprune.runtimes.{name}")
    if not isinstance(name, str) or name not in REGISTRY.entries:
        raise RuntimeNotFoundError(REGISTRY.unknown.format(name=name, known=available_runtimes()))
    return REGISTRY.entries[name]


def available_runtimes() -> list[str]:
    """Sorted names of the built-in and registered runtimes."""
    return sorted(set(_builtin_names()) | set(REGISTRY.names()))
