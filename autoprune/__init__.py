"""autoprune: search per-layer pruning policies for PyTorch models under latency and size budgets."""

from __future__ import annotations

from autoprune.api import search
from autoprune.errors import AutopruneError, AutopruneInputError
from autoprune.measure import HardwareProfile, Metrics, measure
from autoprune.result import SearchResult
from autoprune.layers import prunable_layers
from autoprune.methods import StructuredMethod, UnstructuredMethod, available_methods, register_method
from autoprune.policy import LayerPolicy, Policy, Regularizer
from autoprune.prune import prune

__all__ = [
    "AutopruneError",
    "AutopruneInputError",
    "HardwareProfile",
    "Metrics",
    "SearchResult",
    "LayerPolicy",
    "Policy",
    "Regularizer",
    "StructuredMethod",
    "UnstructuredMethod",
    "available_methods",
    "prunable_layers",
    "prune",
    "register_method",
    "measure",
    "search",
]
__version__ = "0.1.0"
