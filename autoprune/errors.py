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


class CandidateError(AutopruneInputError):
    """A trial asked for as a candidate that has no saved model (not on the front), or a result read
    without the base model its candidates are rebuilt on."""


class AnalysisError(AutopruneInputError):
    """An ``analysis.json`` that cannot be read, or was made for another model, space or profile."""


class BackendError(AutopruneInputError):
    """A search backend that is not registered, is misconfigured, or cannot be reached."""


class RuntimeNotFoundError(ProfileError):
    """A latency runtime name that is not registered."""


class ExportError(AutopruneError):
    """An exported model that does not reload, or whose outputs differ from the model in memory."""


class Int8ToleranceError(ExportError, AutopruneInputError):
    """An int8 model that strays from its fp32 model by more than the tolerance the user set (or its default):
    the export is refused, and the message names the tolerance to loosen."""


class PruningError(AutopruneError):
    """A pruned model that no longer runs: a defect of autoprune or of the dependency graph it traced,
    not of the input (the original model is untouched)."""


class TrialError(AutopruneError):
    """A trial that could not finish; the search records it as failed, with this message, and goes on."""


class NonFiniteLossError(TrialError, FloatingPointError):
    """The fine-tuning loss became NaN or infinite (lower the learning-rate range of the space)."""


class NonFiniteMetricError(TrialError, FloatingPointError):
    """The metric evaluated to NaN or infinity."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler stopping the job): handled as Ctrl-C is (the running trial is recorded
    interrupted and runs again on resume, the result files are written), and the CLI exits 143."""
