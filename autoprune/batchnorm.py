"""What a trial's fine-tune does to BatchNorm statistics: the ``bn`` policy.

A pretrained CNN's BatchNorm layers carry running statistics of its pretraining data. A short fine-tune in
train mode overwrites them with statistics of a few task batches, and on a small or narrow task set that
alone can cost more than pruning does (an ImageNet MobileNet agreed 0.67 with itself after 60 train-mode
batches with no weight change at all). The policy says what a trial does:

* ``train``: statistics are updated by the fine-tune's batches (PyTorch's default);
* ``freeze``: BatchNorm layers stay in eval mode while fine-tuning: their statistics are kept, their scale
  and shift still learn;
* ``adapt``: statistics are recomputed on training batches before every evaluation (adaptive BN, as
  EagleEye does): right when pruning or the fine-tune moved them and the task data is like the training
  data;
* ``auto`` (the spaces' default): ``freeze`` when the dense model loses more than :data:`DRIFT_TOLERANCE` of
  its metric (of 1 for a metric under 1 in size, such as a closeness whose dense value is 0) from train-mode
  batches alone (:func:`drift`), else ``train``. Measured once when a search
  starts, on the dense model: cheap (a few forwards and two evaluations), and the same for every trial.

Example:
    >>> import torch.nn as nn
    >>> resolve("freeze", nn.Linear(2, 2))
    'freeze'
    >>> resolve("auto", nn.Linear(2, 2))  # no BatchNorm: nothing to protect
    'train'
"""

from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import lightning as L
import torch
from torch import nn

from autoprune.errors import AutopruneInputError
from autoprune.modelio import ModelIO

#: the policies a space or ``search(bn=...)`` may name
POLICIES = ("auto", "train", "freeze", "adapt")
#: the study attribute that records the policy a search chose (``auto`` resolved): its workers and refine read it
STUDY_ATTR = "bn"
#: ``auto`` freezes when train-mode batches alone cost the dense model more than this share of its metric (of 1
#: when the metric is smaller in size: a relative tolerance of a metric whose dense value is 0 would be 0)
DRIFT_TOLERANCE = 0.01
#: batches the drift probe runs in train mode, and ``adapt`` recomputes statistics on
BATCHES = 10


def norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def check(policy: Any) -> str:
    if policy not in POLICIES:
        raise AutopruneInputError(f"bn (--bn) must be one of {list(POLICIES)}, got {policy!r}")
    return policy


class FreezeBatchNorm(L.Callback):
    """Keeps every BatchNorm layer in eval mode during a fine-tune (Lightning puts the module in train mode at
    the start of each epoch, so this runs before every batch)."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        for m in norms(pl_module):
            m.eval()


@dataclass(frozen=True)
class Drift:
    """The dense model's metric as trained, and after its BatchNorm statistics saw ``batches`` training batches
    in train mode (no weight change)."""

    before: float
    after: float
    batches: int

    @property
    def harmful(self) -> bool:
        return self.after < self.before - DRIFT_TOLERANCE * max(abs(self.before), 1.0)

    def message(self, metric: str) -> str:
        return (f"BatchNorm statistics: {self.batches} training batches in train mode, with no weight change, lower "
                f"the dense model's {metric} from {self.before:.4f} to {self.after:.4f}, so trials fine-tune with "
                "them frozen (bn: freeze); set bn to train or adapt to choose otherwise")


def drift(model: nn.Module, train_loader: Any, evaluate: Callable[[nn.Module], float], *, io: ModelIO | None = None,
          batches: int = BATCHES) -> Drift:
    """What train-mode batches alone do to ``model``'s metric (``evaluate(model)``); ``model`` is not modified."""
    io = io or ModelIO()
    probe = copy.deepcopy(model).eval()
    before = evaluate(probe)
    for m in norms(probe):
        m.train()
    device = next(probe.parameters(), torch.empty(0)).device
    with torch.no_grad():
        for batch in itertools.islice(iter(train_loader), batches):
            inputs, _ = io.split(batch)
            io.run(probe, inputs.to(device))
    probe.eval()
    return Drift(before=before, after=evaluate(probe), batches=batches)


def resolve(policy: str, model: nn.Module, probe: Callable[[], Drift] | None = None, *,
            metric: str = "metric") -> str:
    """The policy a search's trials use: ``policy`` itself, or for ``auto`` ``freeze`` when ``probe()`` (the
    dense model's :func:`drift`) says train-mode batches harm it (with a warning that says so, naming
    ``metric``), else ``train``; ``train`` for a model without BatchNorm."""
    check(policy)
    if policy != "auto":
        return policy
    if not norms(model) or probe is None:
        return "train"
    found = probe()
    if not found.harmful:
        return "train"
    warnings.warn(found.message(metric))
    return "freeze"


def adapt_batchnorm(model: nn.Module, loader: Any, *, batches: int, io: ModelIO | None = None) -> bool:
    """Recompute the BatchNorm layers' running statistics of ``model`` on ``batches`` training batches
    (adaptive BN): pruning changes what each BatchNorm sees, and statistics of the dense model make a pruned
    one look worse than a short fine-tune shows it is (EagleEye's finding). Only the statistics change
    (forwards under ``no_grad``, no optimiser); ``model`` is left in eval mode. Returns False, and leaves
    the model as it was, when it has no BatchNorm layer.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return False
    io = io or ModelIO()
    device = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches seen
        m.train()
    try:
        with torch.no_grad():
            for batch in itertools.islice(iter(loader), batches):
                inputs, _ = io.split(batch)
                io.run(model, inputs.to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return True
