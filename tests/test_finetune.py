"""The brief fine-tune: the mode the model trains in, and the mode it is left in."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune.finetune import ClassifierModule, as_lightning, finetune
from autoprune.policy import Policy


def _loader() -> DataLoader:
    torch.manual_seed(0)
    samples = [(torch.randn(4) * 3 + 5, i % 2) for i in range(32)]
    return DataLoader(samples, batch_size=8)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_a_model_arriving_in_eval_mode_fine_tunes_in_train_mode():
    """Batch norm statistics follow the data even when the (pruned) model arrives in eval mode, as pruned
    copies do; Lightning >= 2.2 would otherwise keep the eval mode and freeze them."""
    net = _net().eval()
    before = net[1].running_mean.clone()
    finetune(as_lightning(net, loss=None, lr=1e-3), _loader(), policy=Policy(), max_steps=4, prefix="net.")
    assert not torch.allclose(net[1].running_mean, before)
    assert not any(m.training for m in net.modules())


def test_layers_frozen_in_on_train_start_stay_frozen():
    """A LightningModule that sets a layer to eval in on_train_start keeps that layer's statistics."""

    class Frozen(ClassifierModule):
        def on_train_start(self) -> None:
            self.net[1].eval()

    net = _net().eval()
    before = net[1].running_mean.clone()
    finetune(Frozen(net, lr=1e-3), _loader(), policy=Policy(), max_steps=4)
    assert torch.equal(net[1].running_mean, before)
