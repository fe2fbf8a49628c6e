"""A data file or folder split into training and validation examples, the same way for text and images.

Example:
    >>> split(["a", "b", "c", "d"], [0, 1, 0, 1], fraction=0.25, seed=0, where="--data d.csv")
    ((['a', 'b', 'd'], [0, 1, 1]), (['c'], [0]))
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from autoprune.errors import DataError


def split(items: Sequence[Any], labels: Sequence[Any] | None, *, fraction: float, seed: int, where: str
          ) -> tuple[tuple[list[Any], list[Any] | None], tuple[list[Any], list[Any] | None]]:
    """``((train, train_labels), (val, val_labels))``: ``fraction`` of ``items`` (at least one, never all) held
    out for validation, chosen by ``seed`` (the same seed, the same split) and kept in their order; the
    training items in shuffled order. DataError, naming ``where``, with fewer than two items."""
    if len(items) < 2:
        raise DataError(f"{where} holds {len(items)} example(s): a training and a validation split need at least 2 "
                        "(or give --val)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = min(len(items) - 1, max(1, round(len(items) * fraction)))
    val_idx, train_idx = sorted(order[:n_val]), order[n_val:]

    def pick(indices: list[int]) -> tuple[list[Any], list[Any] | None]:
        return [items[i] for i in indices], [labels[i] for i in indices] if labels is not None else None

    return pick(train_idx), pick(val_idx)
