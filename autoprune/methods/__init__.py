"""Pruning methods: the contract, the registry, and the built-in methods (registered on import)."""

from __future__ import annotations

from autoprune.methods.base import (
    Member,
    PruningMethod,
    StructuredMethod,
    UnstructuredMethod,
    available_methods,
    get_method,
    register_method,
)
from autoprune.methods import builtin as _builtin  # noqa: F401  (registers the built-in methods)

__all__ = [
    "Member",
    "PruningMethod",
    "StructuredMethod",
    "UnstructuredMethod",
    "available_methods",
    "get_method",
    "register_method",
]
