"""Vocabulary pruning: keep only the token embeddings the user's data uses, for size.

A pretrained text encoder carries an embedding row for every token of its tokenizer (all-MiniLM-L6-v2:
30,522 rows of 384, 47 MB of its 91), although a deployment sees a fraction of them. Heads, feed-forward
neurons and layers cost time; the vocabulary costs size alone, and pruning it loses nothing on the tokens
kept. :func:`restrict_vocabulary` returns a copy of the model whose input embedding keeps the rows of the
tokens that occur in the given batches (plus the unknown token and any ``keep``); the others are mapped
to the unknown token. The copy still takes the tokenizer's own ids: the embedding becomes a
:class:`RemappedEmbedding` that translates them (a lookup table of one int64 per original token, a
gather in ONNX), so the tokenizer, the exports and the rest of the model are unchanged.

Apply it **before** the search: the restricted model is then the base model, so every trial, size
figure and saved candidate is of it (``load_pruned`` rebuilds candidates from it). A text unseen in the
data may hold tokens that now read as the unknown token: build the vocabulary from data that covers
what the model will see.

Example:
    >>> import torch, torch.nn as nn
    >>> class Bag(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = nn.Embedding(1000, 8)
    ...     def forward(self, input_ids):
    ...         return self.embed(input_ids).mean(1)
    >>> batches = [{"input_ids": torch.tensor([[1, 5, 7], [5, 9, 1]])}]
    >>> small, report = restrict_vocabulary(Bag(), batches, unknown_id=0)
    >>> report.kept, report.before, small.embed.embedding.num_embeddings
    (5, 1000, 5)
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from autoprune.errors import DataError, ModelLoadError
from autoprune.modelio import ModelIO


class RemappedEmbedding(nn.Module):
    """An embedding of a subset of a vocabulary that reads the full vocabulary's ids: ``index[id]`` is the
    row of token ``id`` in ``embedding`` (tokens left out point at the unknown token's row)."""

    def __init__(self, embedding: nn.Embedding, index: torch.Tensor) -> None:
        super().__init__()
        self.embedding = embedding
        self.register_buffer("index", index)

    @property
    def weight(self) -> torch.Tensor:  # code that reads ``word_embeddings.weight`` (its dtype, its width) still works
        return self.embedding.weight

    @property
    def embedding_dim(self) -> int:
        return self.embedding.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.index[input_ids])


@dataclass(frozen=True)
class VocabularyReport:
    """What :func:`restrict_vocabulary` did: which embedding, tokens kept of how many, bytes saved."""

    module: str
    before: int
    kept: int
    bytes_saved: int


def _input_embedding(model: nn.Module, batch_inputs: Any, ids: torch.Tensor, name: str | None) -> str:
    """The name of the ``nn.Embedding`` that reads the token ids: the one named, or the one whose input is
    ``ids`` itself when the model runs on the first batch."""
    embeddings = {n: m for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    if name is not None:
        if name not in embeddings:
            raise ModelLoadError(f"the model has no nn.Embedding named {name!r}; its embeddings are {sorted(embeddings)}")
        return name
    readers: list[str] = []

    def record(n: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].shape == ids.shape and torch.equal(args[0], ids):
                readers.append(n)
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in embeddings.items()]
    try:
        with torch.no_grad():
            batch_inputs.run(model)
    except IndexError as exc:  # an id past an embedding's rows
        sizes = {n: m.num_embeddings for n, m in embeddings.items()}
        raise DataError(f"the model cannot embed the batches' token ids (largest {int(ids.max())}; its embeddings "
                        f"have {sizes} rows: {exc}): is this the model's tokenizer?") from None
    finally:
        for h in handles:
            h.remove()
    readers = list(dict.fromkeys(readers))
    if len(readers) != 1:
        found = "no nn.Embedding" if not readers else f"several embeddings ({readers})"
        raise ModelLoadError(f"{found} of the model reads the token ids directly; name the input embedding with "
                             f"embedding= (the model's embeddings: {sorted(embeddings)})")
    return readers[0]


def _shared(model: nn.Module, name: str, weight: torch.Tensor) -> list[str]:
    """Other modules holding ``weight`` (a language-model head tied to the input embedding)."""
    return [n for n, m in model.named_modules()
            if n != name and any(p is weight for p in m.parameters(recurse=False))]


def restrict_vocabulary(model: nn.Module, batches: Iterable[Any], *, unknown_id: int, keep: Sequence[int] = (),
                        key: str = "input_ids", embedding: str | None = None,
                        io: ModelIO | None = None) -> tuple[nn.Module, VocabularyReport]:
    """A copy of ``model`` whose input embedding keeps only the tokens the ``batches`` use; ``model`` is not
    modified.

    Args:
        batches: batches as the search reads them (dicts with the token ids under ``key``, or tuples whose
            first element is the ids), e.g. the training and validation loaders chained.
        unknown_id: the tokenizer's unknown token (``tokenizer.unk_token_id``): tokens left out read as it.
        keep: token ids kept whether seen or not (``tokenizer.all_special_ids``, say).
        key: the batch key of the token ids, for dict batches.
        embedding: the name of the input ``nn.Embedding``; found by running the model when not given.
        io: how batches split into inputs and target (:class:`~autoprune.modelio.ModelIO`).

    A restriction that would save nothing (the data uses nearly every token) warns and returns an unchanged
    copy, with ``bytes_saved=0``.

    Raises:
        DataError: the batches hold no token ids, or ids outside the vocabulary; ``unknown_id`` or ``keep``
            are not token ids.
        ModelLoadError: the input embedding cannot be told, or its weight is tied to another module (a
            language-model head predicts over the whole vocabulary: restricting it would change the task).
    """
    def token_id(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not token_id(unknown_id):
        raise DataError(f"unknown_id must be the tokenizer's unknown token id (tokenizer.unk_token_id), a "
                        f"non-negative integer, got {unknown_id!r}")
    if isinstance(keep, (str, bytes)) or not isinstance(keep, Iterable) or not all(token_id(i) for i in keep):
        raise DataError(f"keep must be a list of token ids (non-negative integers, e.g. tokenizer.all_special_ids), "
                        f"got {keep!r}")
    io = io or ModelIO()
    seen: set[int] = set()
    first = None
    for batch in batches:
        inputs, _ = io.split(batch)
        ids = inputs.kwargs.get(key) if inputs.kwargs else (inputs.args[0] if inputs.args else None)
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point():
            held = sorted(inputs.kwargs) if inputs.kwargs else "positional inputs"
            raise DataError(f"batches must hold integer token ids under {key!r} (give key=); they hold {held}")
        first = first or (inputs, ids)
        seen.update(int(i) for i in torch.unique(ids))
    if first is None:
        raise DataError("the batches yield nothing: the vocabulary is the tokens the data uses, so it needs data")
    name = _input_embedding(model, first[0], first[1], embedding)
    old: nn.Embedding = model.get_submodule(name)
    tied = _shared(model, name, old.weight)
    if tied:
        raise ModelLoadError(f"the weight of {name} is tied to {tied} (a language-model "
                             "head over the whole vocabulary): restricting the vocabulary would change what the model "
                             "predicts; untie them, or prune a model without that head")
    vocab = old.num_embeddings
    kept = sorted(seen | {int(i) for i in keep} | {int(unknown_id)})
    outside = [i for i in kept if not 0 <= i < vocab]
    if outside:
        raise DataError(f"token ids {outside[:5]} are outside the embedding's {vocab} rows: is this the model's "
                        "tokenizer, and unknown_id/keep its ids?")
    saved = (vocab - len(kept)) * old.embedding_dim * old.weight.element_size() - vocab * torch.tensor(0).element_size()
    if saved <= 0:  # the id table would cost more than the rows dropped
        warnings.warn(f"restricting the vocabulary saves nothing: the data and keep use {len(kept)} of {vocab} tokens, "
                      f"and the id table costs more than the rows dropped; the model is returned as it was")
        return copy.deepcopy(model), VocabularyReport(module=name, before=vocab, kept=vocab, bytes_saved=0)
    rows = torch.tensor(kept, dtype=torch.long)
    small = nn.Embedding(len(kept), old.embedding_dim, padding_idx=None, device=old.weight.device,
                         dtype=old.weight.dtype)
    small.weight.data.copy_(old.weight.detach()[rows])
    if old.padding_idx is not None and old.padding_idx in kept:
        small.padding_idx = kept.index(old.padding_idx)
    index = torch.full((vocab,), kept.index(int(unknown_id)), dtype=torch.long, device=old.weight.device)
    index[rows.to(index.device)] = torch.arange(len(kept), device=index.device)
    restricted = copy.deepcopy(model)
    parent, _, child = name.rpartition(".")
    setattr(restricted.get_submodule(parent) if parent else restricted, child, RemappedEmbedding(small, index))
    return restricted, VocabularyReport(module=name, before=vocab, kept=len(kept), bytes_saved=saved)
