"""autoprune: search per-layer pruning policies for PyTorch models under latency and size budgets.

The public names below load on first use (PEP 562), so ``import autoprune`` and the ``autoprune``
console script's ``--help`` and usage errors do not wait for torch, Lightning and Optuna to import
(seconds on a small machine); ``from autoprune import search`` imports what ``search`` needs.

Example:
    >>> import autoprune
    >>> autoprune.Policy.__name__
    'Policy'
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    "Analysis": "autoprune.analyze",
    "analyze": "autoprune.analyze",
    "AutopruneError": "autoprune.errors",
    "AutopruneInputError": "autoprune.errors",
    "Backend": "autoprune.backends",
    "RayOptions": "autoprune.backends",
    "HardwareProfile": "autoprune.measure",
    "Metrics": "autoprune.measure",
    "measure": "autoprune.measure",
    "SearchResult": "autoprune.result",
    "LayerPolicy": "autoprune.policy",
    "Policy": "autoprune.policy",
    "Regularizer": "autoprune.policy",
    "StructuredMethod": "autoprune.methods",
    "UnstructuredMethod": "autoprune.methods",
    "available_methods": "autoprune.methods",
    "register_method": "autoprune.methods",
    "prunable_layers": "autoprune.layers",
    "prune": "autoprune.prune",
    "Recovery": "autoprune.recovery",
    "load_result": "autoprune.loading",
    "search": "autoprune.api",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

if TYPE_CHECKING:  # what static analysers and IDEs see
    from autoprune.analyze import Analysis, analyze
    from autoprune.api import search
    from autoprune.backends import Backend, RayOptions
    from autoprune.errors import AutopruneError, AutopruneInputError
    from autoprune.layers import prunable_layers
    from autoprune.loading import load_result
    from autoprune.measure import HardwareProfile, Metrics, measure
    from autoprune.methods import StructuredMethod, UnstructuredMethod, available_methods, register_method
    from autoprune.policy import LayerPolicy, Policy, Regularizer
    from autoprune.prune import prune
    from autoprune.recovery import Recovery
    from autoprune.result import SearchResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package's module type. Importing a submodule binds it on its package under its own name, and
    public functions share their module's name (``autoprune.analyze``, ``autoprune.measure``, ``autoprune.prune``): once
    such a submodule has loaded, that binding would hide the function from ``__getattr__``. Those
    bindings are dropped, so ``autoprune.measure`` is the function, as an eager ``from ... import``
    made it; the submodules stay importable by name (``from autoprune.measure import measure``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
