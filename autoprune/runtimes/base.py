"""The runtime contract and the name -> runtime registry (see :mod:`autoprune.runtimes`)."""

from __future__ import annotations

import importlib
import pkgutil
import statistics
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from autoprune.errors import AutopruneInputError, ProfileError, RuntimeNotFoundError
from autoprune.registry import Registry

if TYPE_CHECKING:
    from autoprune.measure import HardwareProfile
    from autoprune.modelio import Inputs

#: one forward of a timed model, its inputs bound
Forward = Callable[[], Any]

#: the dtypes a profile may name, as torch dtypes
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: timed forwards of a per-module timing at most (a large model's each last long enough)
MAX_FORWARDS = 1000


@dataclass(frozen=True)
class Capabilities:
    """What a runtime can do, declared once, so that nothing outside it decides by its name.

    Attributes:
        devices: device kinds it times on (``"cpu"``, ``"cuda"``; a profile's ``cuda:1`` is of kind ``cuda``).
        dtypes: the profile dtypes it times in.
        int8: it runs the int8 models of a space's ``quantize`` choices (which are ONNX models).
        module_times: it can say where its forward spends time per module (``autoprune analyze``).
    """

    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = ("float32",)
    int8: bool = False
    module_times: bool = False


def device_kind(device: str) -> str:
    """``"cuda"`` for ``cuda`` and ``cuda:N``, else the device as given."""
    return device.partition(":")[0]


def repeated(profile: HardwareProfile, run: Callable[[], float]) -> list[float]:
    """The per-module timing protocol every runtime shares: ``profile.warmup`` untimed calls of ``run``, then
    timed ones until there are at least ``profile.repeats`` and they last ``10 * profile.min_sample_ms``
    (at most :data:`MAX_FORWARDS`). ``run()`` does one forward and returns its seconds; the list holds the
    timed ones."""
    for _ in range(max(1, profile.warmup)):
        run()
    seconds: list[float] = []
    while len(seconds) < MAX_FORWARDS and (len(seconds) < profile.repeats
                                           or sum(seconds) < 10 * profile.min_sample_ms / 1000):
        seconds.append(run())
    return seconds


def steady(seconds: list[float]) -> tuple[list[int], float]:
    """The indices of the forwards no slower than the median (a shared machine delays the odd forward as a
    whole), and that median."""
    median = statistics.median(seconds)
    return [i for i, s in enumerate(seconds) if s <= median], median


def clock(profile: HardwareProfile) -> Callable[[], float]:
    """``time.perf_counter``, CUDA synchronised first on a CUDA profile (so a clock reading waits for the
    kernels queued before it)."""
    if device_kind(profile.device) != "cuda":
        return time.perf_counter

    def synchronised() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()

    return synchronised


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
    dense model, statistics, CUDA synchronisation through :func:`clock`); a runtime turns a model into a
    zero-argument forward on a batch and declares what it can do (:class:`Capabilities`). A per-module
    timing repeats its forwards with :func:`repeated` and keeps them with :func:`steady`.
    """

    #: the name a profile gives (``HardwareProfile(runtime=name)``)
    name: ClassVar[str]
    #: what it can do: the devices and dtypes :meth:`check` accepts, int8 models, per-module times
    capabilities: ClassVar[Capabilities] = Capabilities()

    def check(self, profile: HardwareProfile) -> None:
        """Refuse a profile this runtime cannot honour, with a :class:`~autoprune.errors.ProfileError` that
        says what to change (called when the profile is made). By default: a device or dtype outside its
        :attr:`capabilities`."""
        can = self.capabilities
        if device_kind(profile.device) not in can.devices or profile.dtype not in can.dtypes:
            others = [r for r in available_runtimes() if r != self.name]
            raise ProfileError(f"the {self.name} runtime times on {'/'.join(can.devices)} in "
                               f"{'/'.join(can.dtypes)}: got device {profile.device!r}, dtype {profile.dtype!r}; "
                               f"change them, or use another runtime ({', '.join(others)})")

    def check_available(self, profile: HardwareProfile) -> None:
        """Refuse to time when what this runtime needs is not installed here (called before timing)."""

    def module_times(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> ModuleTimes | None:
        """Where this runtime's forward of ``model`` on ``inputs`` (a batch of the profile's size) spends its
        time, per module (see :class:`ModuleTimes`); None when it cannot say (``capabilities.module_times``
        false: ``autoprune analyze`` then shows eager PyTorch's shares, and says so)."""
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
