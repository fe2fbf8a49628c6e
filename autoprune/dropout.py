"""What a fine-tune does to dropout and the other layers that behave differently in training.

``finetune(..., dropout="off")`` (a space's ``finetune.dropout: off``; the ``pretrained`` space's choice) runs
every layer but BatchNorm as at inference while the weights learn: dropout, drop-connect / stochastic depth
and any other train-only noise are off; BatchNorm follows the ``bn`` policy (:mod:`autoprune.batchnorm`).

Example:
    >>> import torch.nn as nn
    >>> from autoprune.dropout import DROPOUT, InferenceMode
    >>> DROPOUT
    ('keep', 'off')
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5))
    >>> InferenceMode(batchnorm_too=False).apply(net)
    >>> [m.training for m in net]
    [False, True, False]
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

#: what a fine-tune does to dropout and other layers that behave differently in training (drop-connect /
#: stochastic depth): ``keep`` them training, or ``off``: every layer but BatchNorm (whose statistics the
#: ``bn`` policy decides) runs as at inference. A distilled fine-tune of a pretrained model matches the dense
#: model's inference outputs, which train-only noise keeps it from: on an ImageNet EfficientNet-Lite0 (dropout
#: and drop-connect), 100 distilled steps at Adam's 1e-5 left the unpruned model agreeing 0.781 with itself with
#: the noise on and 0.996 with it off (docs/benchmarks.md).
DROPOUT = ("keep", "off")
#: the study attribute that records a search's dropout policy (refine fine-tunes with it)
STUDY_ATTR = "dropout"


class InferenceMode(L.Callback):
    """Keeps every layer in eval mode during a fine-tune (``dropout="off"``), BatchNorm too when
    ``batchnorm_too`` (else BatchNorm trains); before every batch, since Lightning puts the module in train
    mode at the start of each epoch. Gradients flow as ever: eval mode only changes what layers compute."""

    def __init__(self, *, batchnorm_too: bool) -> None:
        self.batchnorm_too = batchnorm_too

    def apply(self, module: nn.Module) -> None:
        """Put ``module``'s layers in the modes a step of this fine-tune runs them in."""
        from autoprune.batchnorm import norms

        module.eval()
        if not self.batchnorm_too:
            for m in norms(module):
                m.train()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.apply(pl_module)
