"""The pruning-method contract and the name -> method registry.

Two kinds of method, declared by the class attribute ``STRUCTURED``:

* unstructured methods implement the pure :meth:`UnstructuredMethod.compute_mask` (which weights to
  zero); the engine applies the mask and makes it permanent;
* structured methods implement the pure :meth:`StructuredMethod.channel_scores` (how important each
  output channel is); the engine sums the scores over every layer coupled to that channel and removes
  the least important channels from all of them at once. A method that needs more than a layer's weight
  rows overrides :meth:`StructuredMethod.member_scores`, which sees one member of the coupled group at a
  time (:class:`Member`: its rows, whether the channels are its outputs or its inputs, and, for a method
  that declares ``NEEDS_ACTIVATIONS``, the calibration statistics of those input channels, see
  :mod:`autoprune.calibration`).

Users add their own methods with :func:`register_method`; a registered name can then be used in a
policy or a search space like the built-in ones.

Example:
    >>> import torch
    >>> from autoprune.methods import StructuredMethod, register_method, get_method
    >>> class MaxAbs(StructuredMethod):
    ...     name = "maxabs_structured"
    ...     def channel_scores(self, weight, grad):
    ...         return weight.abs().amax(dim=1)
    >>> _ = register_method(MaxAbs(), overwrite=True)
    >>> get_method("maxabs_structured").STRUCTURED
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from autoprune.errors import AutopruneInputError, UnknownMethodError
from autoprune.registry import Registry


class PruningMethod(ABC):
    """Base of every pruning method. ``name`` is the key used in policies and search spaces."""

    name: ClassVar[str]
    STRUCTURED: ClassVar[bool]
    #: True when the method needs gradients from calibration batches (e.g. Taylor importance; with
    #: ``NEEDS_ACTIVATIONS``, the Fisher information of the input channels).
    NEEDS_GRADIENTS: ClassVar[bool] = False
    #: True when the method reads calibration statistics of the layers' input channels (activation norms;
    #: :mod:`autoprune.calibration`), handed to :meth:`StructuredMethod.member_scores`.
    NEEDS_ACTIVATIONS: ClassVar[bool] = False


@dataclass(frozen=True)
class Member:
    """One Conv/Linear layer of a coupled group, as a structured method scores it.

    Attributes:
        name: the layer's name in the model.
        weight: the layer's weight for the group's channels, one row per channel: its output rows when
            ``outputs`` is True, else its input columns (transposed), flattened to ``[channels, fan]``.
        grad: the matching rows of the accumulated gradient (methods with ``NEEDS_GRADIENTS``), else None.
        outputs: whether the channels are this layer's outputs (it writes them) or its inputs (it reads them).
        input_norm: for a layer that reads the channels, each channel's root-mean-square activation on the
            calibration batches (methods with ``NEEDS_ACTIVATIONS``; None otherwise).
        input_fisher: ... and the Fisher information of a mask on each channel (methods that also need
            gradients; None otherwise).
    """

    name: str
    weight: torch.Tensor
    grad: torch.Tensor | None
    outputs: bool
    input_norm: torch.Tensor | None = None
    input_fisher: torch.Tensor | None = None


class UnstructuredMethod(PruningMethod):
    """Zeroes individual weights. Masks are made permanent: no ``weight_orig``, buffer or hook remains."""

    STRUCTURED = False

    @abstractmethod
    def compute_mask(self, weight: torch.Tensor, sparsity: float, *, generator: torch.Generator) -> torch.Tensor:
        """Return a bool tensor shaped like ``weight``: True keeps a weight, False zeroes it.

        Exactly ``round(sparsity * weight.numel())`` entries must be False.
        """


class StructuredMethod(PruningMethod):
    """Removes whole output channels (neurons), so the model gets physically smaller and faster."""

    STRUCTURED = True

    @abstractmethod
    def channel_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """Score each row of ``weight`` (shape ``[channels, fan]``); low scores are removed first.

        ``grad`` is the matching rows of the accumulated gradient when ``NEEDS_GRADIENTS`` is True,
        else None. Must return a 1-D float tensor of length ``channels``.
        """

    def member_scores(self, member: Member) -> torch.Tensor:
        """Score the group's channels as seen by one member (the engine sums over the members). By default
        :meth:`channel_scores` of the member's rows; data-aware methods override this."""
        return self.channel_scores(member.weight, member.grad)


REGISTRY: Registry[PruningMethod] = Registry(
    "pruning method", (UnstructuredMethod, StructuredMethod), error=AutopruneInputError,
    unknown="unknown pruning method {name!r}; known methods: {known}", unknown_error=UnknownMethodError)


def register_method(method: PruningMethod, *, overwrite: bool = False) -> PruningMethod:
    """Add ``method`` to the registry under ``method.name`` and return it."""
    return REGISTRY.register(method, overwrite=overwrite)


def get_method(name: str) -> PruningMethod:
    """The registered method called ``name``; :class:`UnknownMethodError` lists the known names otherwise."""
    return REGISTRY.get(name)


def available_methods(*, structured: bool | None = None) -> list[str]:
    """Sorted names of the registered methods, optionally only the structured or unstructured ones."""
    return [n for n in REGISTRY.names() if structured is None or REGISTRY.get(n).STRUCTURED == structured]
