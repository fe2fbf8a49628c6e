"""depth: which residual blocks can be removed whole, and their replacement by the identity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune.depth import drop_blocks, removable_blocks
from autoprune.errors import LayerMatchError
from autoprune.zoo import DenseCNN, MobileNetCNN, PlainCNN, ResNetCNN

X = torch.randn(2, 1, 8, 8)


class _Residual(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class _Doubling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.conv(x) + self.conv(x) + (x + x) * 0


def test_identity_shortcut_blocks_are_removable_projection_blocks_are_not():
    """ResNet blocks that add their unchanged input are listed; the strided block with a 1x1 projection is not."""
    model = ResNetCNN(widths=(8, 16), blocks=2).eval()
    assert removable_blocks(model, X) == ["layers.0", "layers.1", "layers.3"]


@pytest.mark.parametrize("model", [PlainCNN(), DenseCNN(), MobileNetCNN()], ids=lambda m: type(m).__name__)
def test_models_without_residual_additions_have_no_removable_block(model):
    assert removable_blocks(model.eval(), X) == []


def test_a_block_that_adds_a_transformed_or_doubled_input_is_not_removable():
    """f(x) + g(x) with a conv g, and x + x, are not identity shortcuts."""
    model = nn.Sequential(_Residual(nn.Conv2d(1, 1, 3, padding=1), shortcut=nn.Conv2d(1, 1, 1)), _Doubling())
    assert removable_blocks(model.eval(), X) == []


def test_nested_blocks_list_only_the_innermost():
    """An outer residual wrapping two residual blocks: the two inner blocks are the units to drop."""
    inner = [_Residual(nn.Conv2d(1, 1, 3, padding=1)) for _ in range(2)]
    model = nn.Sequential(_Residual(nn.Sequential(*inner)), nn.Flatten())
    assert removable_blocks(model.eval(), X) == ["0.body.0", "0.body.1"]


class _RatedBlock(nn.Module):
    """EfficientNet's way: the block takes its stochastic-depth rate, and branches on it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, drop_rate=None, scale=1.0, residual=True):
        y = self.conv(x) * scale
        if drop_rate:
            y = nn.functional.dropout(y, drop_rate, self.training)
        return y + x if residual else y


class _RatedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_RatedBlock(), _RatedBlock(), _RatedBlock()])

    def forward(self, x):
        x = self.blocks[0](x, drop_rate=0.0)
        x = self.blocks[1](x, 0.1, scale=0.5)
        return self.blocks[2](x, residual=False)


def test_a_block_called_with_a_rate_besides_its_tensor_is_removable():
    """Arguments that are not tensors (a drop-connect rate, positional or by name) are held at the values the
    model passed: the blocks whose traced call adds their input are listed (not the one called without its
    shortcut), and the model runs with one dropped."""
    model = _RatedNet().eval()
    assert removable_blocks(model, X) == ["blocks.0", "blocks.1"]
    assert drop_blocks(model, ["blocks.1"])(X).shape == X.shape


def test_drop_blocks_replaces_the_named_blocks_in_place():
    model = ResNetCNN(widths=(8, 16), blocks=2).eval()
    assert drop_blocks(model, ["layers.1"]) is model
    assert isinstance(model.layers[1], nn.Identity) and not isinstance(model.layers[0], nn.Identity)
    assert model(X).shape == (2, 10)


def test_dropping_a_missing_submodule_names_it():
    with pytest.raises(LayerMatchError, match="layers.9"):
        drop_blocks(ResNetCNN(widths=(8, 16), blocks=2), ["layers.9"])


def test_a_block_fx_cannot_trace_is_not_removable_and_the_log_says_why(caplog):
    """Data-dependent control flow: not a block autoprune can reason about; the reason is logged, not lost."""
    import logging

    from autoprune.depth import _adds_its_input

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(x) if x.sum() > 0 else x

    with caplog.at_level(logging.DEBUG, logger="autoprune"):
        assert not _adds_its_input(Branchy())
    assert "Branchy is not a removable block: fx cannot trace it (TraceError" in caplog.text
