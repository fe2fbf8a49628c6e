"""Sparse regularisers: penalty values and their effect inside a tiny Lightning fit."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from autoprune.errors import PolicyError
from autoprune.regularize import SparsityRegularizer, sparsity_penalty


def test_l1_and_group_lasso_values():
    """l1 sums |w|; group lasso sums the L2 norms of output rows; both scale with strength."""
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]]))
    assert float(sparsity_penalty(layer, kind="l1", strength=2.0, layers=[""])) == pytest.approx(16.0)
    assert float(sparsity_penalty(layer, kind="group_lasso", strength=1.0, layers=[""])) == pytest.approx(6.0)
    assert float(sparsity_penalty(layer, kind="l1", strength=0.0, layers=[""])) == 0.0


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 4)

    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self.fc(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callbacks):
    module = _Tiny()
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randint(0, 4, (64,))), batch_size=16)
    L.Trainer(max_steps=20, logger=False, enable_progress_bar=False, enable_checkpointing=False,
              enable_model_summary=False, callbacks=callbacks).fit(module, data)
    return module.fc.weight.detach()


def test_callback_shrinks_weights():
    """Training with the L1 callback ends with a smaller weight L1 norm than without it."""
    plain = _fit([])
    regularised = _fit([SparsityRegularizer(kind="l1", strength=0.05, layers=["fc"])])
    assert regularised.abs().sum() < 0.9 * plain.abs().sum()


def test_unknown_kind_is_rejected():
    """The callback validates its arguments at construction."""
    with pytest.raises(PolicyError, match="kind"):
        SparsityRegularizer(kind="l0", strength=1.0, layers=["fc"])
