"""Small reference architectures, one per coupling pattern that structured pruning must respect.

They back the test suite's contract tests and the benchmarks (torchvision cannot be used here, so the
models are defined in the project). Each class takes its sizes as keyword arguments and documents the
input it expects.

| model            | coupling exercised                                   | input            |
|------------------|------------------------------------------------------|------------------|
| ``MLP``          | Linear -> Linear                                     | ``[N, in]``      |
| ``PlainCNN``     | Conv -> BN -> Conv, flatten into Linear              | ``[N, C, H, W]`` |
| ``ResNetCNN``    | residual additions across blocks, 1x1 shortcuts      | ``[N, C, H, W]`` |
| ``MobileNetCNN`` | depthwise (groups = channels) + pointwise convs      | ``[N, C, H, W]`` |
| ``DenseCNN``     | concatenation of feature maps                        | ``[N, C, H, W]`` |
| ``TinyTransformer`` | LayerNorm/residual stream, attention, Conv1d stem | ``[N, T, F]``   |
| ``KeywordMLP``   | keyword inputs, a dict output with two heads (as Hugging Face models) | ``features=[N, in]`` |
| ``ResNet18``     | ResNet-18's layout (4 stages of 2 basic blocks), 32x32 images | ``[N, 3, H, W]`` |
| ``MobileNetV2``  | MobileNetV2's inverted residuals: expand, depthwise, linear bottleneck | ``[N, 3, H, W]`` |
| ``TinyBert``     | BERT's layout: token ids and mask in, heads in query/key/value, post-norm residual stream, a dict out | ``input_ids=[N, T]`` |
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    """Two hidden layers of ReLU neurons."""

    def __init__(self, *, in_features: int = 16, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


class PlainCNN(nn.Module):
    """Conv-BN-ReLU twice, pooling, then a flatten into a hidden Linear and the classifier."""

    def __init__(self, *, in_channels: int = 1, width: int = 16, num_classes: int = 10, image_size: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * (image_size // 2) ** 2, 4 * width)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.head(F.relu(self.fc(torch.flatten(x, 1))))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual add; a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCNN(nn.Module):
    """A stem and ``len(widths)`` stages of ``blocks`` residual blocks, global pooling, classifier."""

    def __init__(self, *, in_channels: int = 1, widths: tuple[int, ...] = (16, 32), blocks: int = 1,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        channels = widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(channels, width, stride=2 if (i > 0 and j == 0) else 1))
                channels = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn(self.stem(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class MobileNetCNN(nn.Module):
    """Depthwise-separable blocks: depthwise 3x3 (groups = channels) then pointwise 1x1."""

    def __init__(self, *, in_channels: int = 1, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.dw1 = nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.pw1 = nn.Conv2d(width, 2 * width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.dw2 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, groups=2 * width, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.pw2 = nn.Conv2d(2 * width, 4 * width, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(4 * width)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(self.bn2(self.pw1(F.relu(self.bn1(self.dw1(x))))))
        x = F.relu(self.bn4(self.pw2(F.relu(self.bn3(self.dw2(x))))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResNet18(ResNetCNN):
    """ResNet-18's layout for 32x32 images (CIFAR-style: a 3x3 stem, no max-pool): four stages of two basic
    blocks, ``width``, 2, 4 and 8 times ``width`` channels wide (64: the real network, 11.2M parameters)."""

    def __init__(self, *, in_channels: int = 3, width: int = 64, num_classes: int = 10) -> None:
        super().__init__(in_channels=in_channels, widths=tuple(width * 2 ** stage for stage in range(4)), blocks=2,
                         num_classes=num_classes)


def _divisible(channels: float, by: int = 8) -> int:
    """MobileNet's rounding of scaled widths: to a multiple of ``by``, never below 90% of the width."""
    rounded = max(by, int(channels + by / 2) // by * by)
    return rounded + by if rounded < 0.9 * channels else rounded


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (ReLU6), 3x3 depthwise (ReLU6), linear 1x1 projection; the input is
    added back when the block keeps the shape."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2's layout for 32x32 images (the paper's table of blocks, with the stem's and the second
    stage's strides set to 1 as CIFAR versions do), widths scaled by ``width_mult`` (1.0: 2.2M parameters)."""

    #: (expansion, output channels, blocks, stride of the first block)
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, *, in_channels: int = 3, width_mult: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        channels = _divisible(32 * width_mult)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU6())
        blocks: list[nn.Module] = []
        for expand, out, count, stride in self.STAGES:
            out = _divisible(out * width_mult)
            for i in range(count):
                blocks.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        last = _divisible(1280 * max(1.0, width_mult))
        self.last = nn.Sequential(nn.Conv2d(channels, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6())
        self.head = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.blocks(self.stem(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DenseCNN(nn.Module):
    """DenseNet-style: each conv sees the concatenation of all earlier feature maps."""

    def __init__(self, *, in_channels: int = 1, growth: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 2 * growth, 3, padding=1)
        self.conv1 = nn.Conv2d(2 * growth, growth, 3, padding=1)
        self.conv2 = nn.Conv2d(3 * growth, growth, 3, padding=1)
        self.transition = nn.Conv2d(4 * growth, 4 * growth, 1)
        self.head = nn.Linear(4 * growth, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = F.relu(self.stem(x))
        x1 = torch.cat([x0, F.relu(self.conv1(x0))], dim=1)
        x2 = torch.cat([x1, F.relu(self.conv2(x1))], dim=1)
        x3 = F.relu(self.transition(x2))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x3, 1), 1))


class TinyTransformer(nn.Module):
    """A Conv1d token stem, one pre-norm encoder layer (attention + feed-forward), mean pool, classifier."""

    def __init__(self, *, in_features: int = 8, d_model: int = 32, heads: int = 4, ffn: int = 64,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv1d(in_features, d_model, 1)
        self.encoder = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x.transpose(1, 2)).transpose(1, 2)
        return self.head(self.encoder(tokens).mean(dim=1))


class KeywordMLP(nn.Module):
    """Called as Hugging Face models are: keyword tensors in (``features``, an optional ``mask`` of the
    features to use), a dict out: ``logits`` from the classifier and ``aux``, a second head that runs last."""

    def __init__(self, *, in_features: int = 16, hidden: int = 32, num_classes: int = 10, aux: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)
        self.aux = nn.Linear(hidden, aux)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if mask is not None:
            features = features * mask
        hidden = F.relu(self.fc2(F.relu(self.fc1(features))))
        return {"logits": self.head(hidden), "aux": self.aux(hidden)}


class TinyAttention(nn.Module):
    """Multi-head self-attention laid out as BERT's: ``query``/``key``/``value`` projections, the head count
    and size as attributes (which :mod:`autoprune.attention` reads and updates), an output projection."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, hidden // heads
        self.all_head_size = heads * self.attention_head_size
        self.query, self.key, self.value = (nn.Linear(hidden, self.all_head_size) for _ in range(3))
        self.output = nn.Linear(self.all_head_size, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(batch, tokens, -1, self.attention_head_size).transpose(1, 2)

        scores = heads(self.query(x)) @ heads(self.key(x)).transpose(-1, -2) / math.sqrt(self.attention_head_size)
        scores = scores + (1.0 - mask[:, None, None, :].to(scores.dtype)) * -1e4
        context = (scores.softmax(dim=-1) @ heads(self.value(x))).transpose(1, 2).reshape(batch, tokens, -1)
        return self.output(context)


class TinyBertLayer(nn.Module):
    """A post-norm encoder layer: attention, then a feed-forward block, each added to the stream and normed."""

    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attention = TinyAttention(hidden, heads)
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.intermediate, self.output = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x, mask))
        return self.norm2(x + self.output(F.gelu(self.intermediate(x))))


class TinyBert(nn.Module):
    """A BERT-style sequence classifier: token and position embeddings, post-norm encoder layers, the first
    token's state classified; called as Hugging Face models are (``input_ids``, ``attention_mask``) and
    returning ``{"logits", "last_hidden_state"}``."""

    def __init__(self, *, vocab: int = 50, hidden: int = 32, heads: int = 4, ffn: int = 64, layers: int = 2,
                 max_tokens: int = 16, num_classes: int = 3) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, hidden), nn.Embedding(max_tokens, hidden)
        self.layers = nn.ModuleList(TinyBertLayer(hidden, heads, ffn) for _ in range(layers))
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        x = self.tokens(input_ids) + self.positions(torch.arange(input_ids.shape[1], device=input_ids.device))
        for layer in self.layers:
            x = layer(x, mask)
        return {"logits": self.classifier(x[:, 0]), "last_hidden_state": x}


def example_input(model: nn.Module, batch: int = 4) -> torch.Tensor | dict[str, torch.Tensor]:
    """A random input batch of the right shape for a zoo model built with default sizes (a dict of
    keyword tensors for ``KeywordMLP``)."""
    if isinstance(model, TinyBert):
        ids = torch.randint(0, model.tokens.num_embeddings, (batch, 8))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if isinstance(model, KeywordMLP):
        return {"features": torch.randn(batch, model.fc1.in_features), "mask": torch.ones(batch, model.fc1.in_features)}
    if isinstance(model, MLP):
        return torch.randn(batch, model.fc1.in_features)
    if isinstance(model, TinyTransformer):
        return torch.randn(batch, 6, model.stem.in_channels)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return torch.randn(batch, first.in_channels, 8, 8)


#: name -> a factory of the model at test size (ResNet18 and MobileNetV2 narrowed, so the contract suites
#: stay fast; build them with their defaults for the real widths)
ZOO = {cls.__name__: cls for cls in (MLP, PlainCNN, ResNetCNN, MobileNetCNN, DenseCNN, TinyTransformer, KeywordMLP,
                                     TinyBert)}
ZOO.update(ResNet18=functools.partial(ResNet18, width=8), MobileNetV2=functools.partial(MobileNetV2, width_mult=0.25))
