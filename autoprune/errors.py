"""Named exceptions: every user error raised by autoprune is one of these, with a message saying what to fix.

All input errors derive from :class:`AutopruneInputError`, itself a ``ValueError``, so callers can catch
either the specific class, the package's base class, or plain ``ValueError``.
"""

from __future__ import annotations


class AutopruneError(Exception):
    """Base class of every exception autoprune raises on purpose."""


class AutopruneInputError(AutopruneError, ValueError):
    """Bad input from the user: a policy, a model, a file, an argument."""


class UnknownMethodError(AutopruneInputError):
    """A pruning method name that is not in the registry."""


class SparsityError(AutopruneInputError):
    """A sparsity outside [0, 1)."""


class LayerMatchError(AutopruneInputError):
    """A layer name or glob that matches no prunable layer of the model."""


class NoPrunableLayersError(AutopruneInputError):
    """The model has no Conv1d/Conv2d/Linear layer that may be pruned."""


class ExampleInputsError(AutopruneInputError):
    """The model cannot run on the example inputs it was given."""


class CalibrationError(AutopruneInputError):
    """A method that needs calibration batches (Taylor importance) got none, or unusable ones."""


class PolicyError(AutopruneInputError):
    """A policy dictionary or JSON file that does not describe a valid policy."""


class ProfileError(AutopruneInputError):
    """A hardware profile that cannot be honoured (unknown device, CUDA absent, bad counts)."""


class SearchSpaceError(AutopruneInputError):
    """A search-space file that does not validate."""


class DataError(AutopruneInputError):
    """Data that is not a LightningDataModule or a (train_loader, val_loader) pair, or yields bad batches."""


class ModelLoadError(AutopruneInputError):
    """A model factory or weights file that cannot be imported or does not fit."""


class StudyError(AutopruneInputError):
    """A study or storage that cannot be used as asked (unreachable, other objectives, other space)."""


class ExportError(AutopruneError):
    """An exported model that does not reload, or whose outputs differ from the model in memory."""
