"""Attention layouts: which linear layers project a multi-head attention's queries, keys and values, how
many heads they hold, and how to keep the module consistent when whole heads are removed.

Structured pruning must remove attention channels by whole heads: a query/key/value projection whose
width is not a whole number of heads breaks the attention's reshape, and channels kept scattered over
heads regroup into pseudo-heads that mix what the model learned. :mod:`autoprune.methods.structured`
asks :func:`attention_blocks` which projections belong together and prunes them head by head; then
:func:`refresh_heads` writes the new head counts into the attention modules (so the pruned model runs,
exports and reloads).

Recognised layouts (the Hugging Face conventions; ``torch.nn.MultiheadAttention`` is handled by
Torch-Pruning itself, which keeps its head count):

* BERT, RoBERTa, ViT, DeiT and their kin: ``query``/``key``/``value`` with ``num_attention_heads`` and
  ``attention_head_size`` (``all_head_size`` kept in step);
* DistilBERT: ``q_lin``/``k_lin``/``v_lin`` with ``n_heads``;
* ``q_proj``/``k_proj``/``v_proj`` with ``num_heads`` (or ``num_attention_heads``) and ``head_dim``.

A module whose class name says it is an attention but that fits none of these is refused by
:func:`check_supported` with a message naming it and how to leave it out of the search.

Example:
    >>> from autoprune.zoo import TinyBert
    >>> [(b.name, b.heads, b.head_size) for b in attention_blocks(TinyBert())][:1]
    [('layers.0.attention', 4, 8)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from torch import nn

from autoprune.errors import LayerMatchError

_PROJECTIONS = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("q_proj", "k_proj", "v_proj"))
_HEAD_COUNTS = ("num_attention_heads", "num_heads", "n_heads")
_HEAD_SIZES = ("attention_head_size", "head_dim", "dim_per_head")


@dataclass(frozen=True)
class AttentionBlock:
    """One multi-head attention: its module's name, its query/key/value projections, heads and head size."""

    name: str
    projections: tuple[str, str, str]
    heads: int
    head_size: int

    @property
    def width(self) -> int:
        return self.heads * self.head_size


def _layout(module: nn.Module) -> tuple[tuple[str, str, str], int, int] | None:
    """``(projection attribute names, heads, head size)`` when ``module`` is a recognised attention."""
    for names in _PROJECTIONS:
        layers = [getattr(module, n, None) for n in names]
        if not all(isinstance(layer, nn.Linear) for layer in layers):
            continue
        width = layers[0].out_features
        heads = next((getattr(module, a) for a in _HEAD_COUNTS if isinstance(getattr(module, a, None), int)), None)
        size = next((getattr(module, a) for a in _HEAD_SIZES if isinstance(getattr(module, a, None), int)), None)
        if size is None and heads:
            size = width // heads
        if size and width % size == 0 and all(layer.out_features == width for layer in layers):
            return names, width // size, size
    return None


def attention_blocks(model: nn.Module) -> list[AttentionBlock]:
    """The recognised multi-head attentions of ``model``, in definition order."""
    blocks = []
    for name, module in model.named_modules():
        layout = _layout(module)
        if layout is not None:
            names, heads, size = layout
            prefix = f"{name}." if name else ""
            blocks.append(AttentionBlock(name, tuple(prefix + n for n in names), heads, size))  # type: ignore[arg-type]
    return blocks


def has_attention(model: nn.Module) -> bool:
    """Whether ``model`` holds a multi-head attention: a recognised layout or an ``nn.MultiheadAttention``."""
    return bool(attention_blocks(model)) or any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


def check_supported(model: nn.Module, layers: Iterable[str]) -> None:
    """Refuse to prune ``layers`` when one of them projects inside an attention whose head layout autoprune
    cannot tell (its class name says attention; it is not ``nn.MultiheadAttention``; no recognised layout)."""
    wanted = set(layers)
    for name, module in model.named_modules():
        if "attention" not in type(module).__name__.lower() or isinstance(module, nn.MultiheadAttention):
            continue
        if _layout(module) is not None or any(_layout(child) is not None for child in module.modules()):
            continue
        inside = sorted(n for n in wanted if n.startswith(f"{name}.") and
                        isinstance(model.get_submodule(n), nn.Linear) and n.count(".") == name.count(".") + 1)
        if inside:
            raise LayerMatchError(
                f"autoprune cannot tell the head layout of {name!r} ({type(module).__name__}): removing channels "
                f"of {inside} could break its heads. Leave them out of the space (exclude: ['{name}.*']), or "
                "give the module num_attention_heads and attention_head_size attributes")


def refresh_heads(model: nn.Module, blocks: Iterable[AttentionBlock] | None = None) -> None:
    """Write each attention module's head count (and ``all_head_size``) from its query projection's width,
    after structured pruning removed heads or a pruned state was loaded."""
    modules = dict(model.named_modules())
    for block in attention_blocks(model) if blocks is None else blocks:
        module = modules.get(block.name)
        query = modules.get(block.projections[0])
        if module is None or not isinstance(query, nn.Linear):
            continue
        heads = query.out_features // block.head_size
        for attr in _HEAD_COUNTS:
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, heads)
        if isinstance(getattr(module, "all_head_size", None), int):
            module.all_head_size = heads * block.head_size
