"""Text examples from a local file, as the batches a Hugging Face tokenizer makes.

``autoprune search --model hf:DIR --data reviews.csv`` reads its data here: a CSV or TSV file (a header
row), JSON Lines (one object per line) or a JSON array of objects, or plain text (one example per line, no
labels). The text column is ``--text-column`` (default: ``text``, ``sentence`` or ``content``, whichever
the file has), the label column ``--label-column`` (default: ``label`` or ``labels``); a column the file
lacks is named with the columns it has. The examples are split into training and validation sets by
``seed`` (``val_fraction`` of them, or a separate ``val`` file), tokenised once with truncation at
``max_length`` and padded per batch to its longest example (dynamic padding, as a collator does).

Nothing here imports transformers: the tokenizer is the model folder's (see :mod:`autoprune.hf`), used
through its call and its ``pad`` method.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "reviews.csv"
    >>> _ = path.write_text("text,label\\ngood film,1\\nbad film,0\\n")
    >>> read_examples(path, text_column=None, label_column=None, labelled=True)
    (['good film', 'bad film'], ['1', '0'])
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from autoprune import defaults
from autoprune.errors import DataError
from autoprune.splits import split

TEXT_COLUMNS = ("text", "sentence", "content")
LABEL_COLUMNS = ("label", "labels")


@dataclass(frozen=True)
class TextData:
    """Where a text task's examples are and how they become batches (stored with the study, so ``report``,
    ``export`` and ``refine`` rebuild the same loaders without repeated options).

    Args:
        path: the examples file (CSV, TSV, JSONL, JSON or plain text).
        text_column, label_column: the columns to read (None: the usual names, see the module docstring).
        max_length: tokens kept per example (truncation).
        val_fraction: the share of ``path``'s examples held out for validation (ignored with ``val``).
        val: a separate validation file, in any of the same formats.
        batch_size: examples per batch.
        seed: the split's seed (the same seed, the same split).
    """

    path: str
    text_column: str | None = None
    label_column: str | None = None
    max_length: int = 128
    val_fraction: float = 0.1
    val: str | None = None
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise DataError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_length < 2:
            raise DataError(f"--max-length must be at least 2 tokens, got {self.max_length}")
        if self.batch_size < 1:
            raise DataError(f"the batch size must be at least 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextData:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def is_text_file(spec: str) -> bool:
    """Whether ``--data`` names an examples file (by its suffix) rather than ``package.module:function``."""
    return Path(spec).suffix.lower() in defaults.TEXT_SUFFIXES


def _rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The file's rows as dicts, and its columns (plain text: one column, ``text``)."""
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--data {path} cannot be read as UTF-8 text ({type(exc).__name__}): give a CSV, JSONL or "
                        "text file") from None
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            rows = [dict(r) for r in reader]
        except csv.Error as exc:
            raise DataError(f"--data {path} is not a valid {suffix[1:].upper()} file: {exc}") from None
        return rows, list(reader.fieldnames or [])
    if suffix == ".txt":
        return [{"text": line.strip()} for line in raw.splitlines() if line.strip()], ["text"]
    if suffix == ".json" and raw.lstrip().startswith("["):
        try:
            rows = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"--data {path} is not valid JSON: {exc}") from None
    else:
        rows = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"--data {path}, line {number}: not a JSON object ({exc.msg})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"--data {path}: every record must be a JSON object with the text (and label) fields")
    columns = sorted({k for r in rows for k in r})
    return rows, columns


def _column(given: str | None, usual: Sequence[str], columns: Sequence[str], path: Path, what: str) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataError(f"--data {path} has no column {given!r} (its columns: {list(columns)}): fix --{what}-column")
        return given
    return next((c for c in usual if c in columns), None)


def read_examples(path: str | Path, *, text_column: str | None, label_column: str | None,
                  labelled: bool) -> tuple[list[str], list[Any] | None]:
    """The texts of ``path``, and their labels when ``labelled`` (None otherwise); DataError naming the file
    and column when a column is missing, a text is empty, or the file holds no example."""
    path = Path(path)
    rows, columns = _rows(path)
    if not rows:
        raise DataError(f"--data {path} holds no example")
    text = _column(text_column, TEXT_COLUMNS, columns, path, "text")
    if text is None:
        raise DataError(f"--data {path}: no text column among {list(columns)}; name it with --text-column")
    label = _column(label_column, LABEL_COLUMNS, columns, path, "label") if labelled else None
    if labelled and label is None:
        raise DataError(f"--data {path}: the task needs labels and no label column is among {list(columns)}; name it "
                        "with --label-column (or use --task feature-extraction, which needs none)")
    texts, labels = [], []
    for number, row in enumerate(rows, start=1):
        value = row.get(text)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"--data {path}, example {number}: column {text!r} is empty or not text")
        texts.append(value)
        if label is not None:
            if row.get(label) in (None, ""):
                raise DataError(f"--data {path}, example {number}: column {label!r} has no label")
            labels.append(row[label])
    return texts, (labels if label is not None else None)


def label_ids(labels: Sequence[Any], label2id: Mapping[str, int], num_labels: int, where: str) -> list[int]:
    """Class ids of ``labels``: the model's own label names (its config's ``label2id``), else integers in
    ``[0, num_labels)``; DataError listing the labels that are neither."""
    if all(str(x) in label2id for x in labels):
        return [int(label2id[str(x)]) for x in labels]
    ids, bad = [], []
    for x in labels:
        try:
            value = int(x) if not isinstance(x, float) or float(x).is_integer() else -1
        except (TypeError, ValueError):
            value = -1
        if 0 <= value < num_labels:
            ids.append(value)
        else:
            bad.append(x)
    if bad:
        raise DataError(f"{where}: labels {sorted({str(b) for b in bad})[:5]} are neither the model's label names "
                        f"{sorted(label2id)[:10]} nor class ids 0..{num_labels - 1}: use one or the other")
    return ids


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.features[index]


def _encode(tokenizer: Any, texts: list[str], labels: list[int] | None, max_length: int) -> _Encoded:
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    features = [{k: encoded[k][i] for k in keys} for i in range(len(texts))]
    if labels is not None:
        for feature, label in zip(features, labels):
            feature["labels"] = label
    return _Encoded(features)


def padding(tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """A collate function padding each batch to its longest example with ``tokenizer.pad`` (dynamic padding)."""
    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(tokenizer.pad(features, padding="longest", return_tensors="pt"))
    return collate


def text_loaders(data: TextData, tokenizer: Any, *, labels_to_ids: Callable[[list[Any], str], list[int]] | None
                 ) -> tuple[DataLoader, DataLoader]:
    """(train, validation) loaders of ``data``: dict batches (``input_ids``, ``attention_mask``, ... and
    ``labels`` when ``labels_to_ids`` maps the file's labels to class ids; unlabelled otherwise). The training
    loader shuffles with ``data.seed``; validation keeps the file's order."""
    labelled = labels_to_ids is not None
    texts, labels = read_examples(data.path, text_column=data.text_column, label_column=data.label_column,
                                  labelled=labelled)
    if data.val is not None:
        val_texts, val_labels = read_examples(data.val, text_column=data.text_column, label_column=data.label_column,
                                              labelled=labelled)
        train_texts, train_labels = texts, labels
    else:
        (train_texts, train_labels), (val_texts, val_labels) = split(texts, labels, fraction=data.val_fraction,
                                                                     seed=data.seed, where=f"--data {data.path}")
    if labelled:
        train_labels = labels_to_ids(train_labels, f"--data {data.path}")
        val_labels = labels_to_ids(val_labels, f"--data {data.val or data.path}")
    collate = padding(tokenizer)
    generator = torch.Generator().manual_seed(data.seed)
    train = DataLoader(_encode(tokenizer, train_texts, train_labels, data.max_length), batch_size=data.batch_size,
                       shuffle=True, generator=generator, collate_fn=collate)
    val = DataLoader(_encode(tokenizer, val_texts, val_labels, data.max_length), batch_size=data.batch_size,
                     collate_fn=collate)
    return train, val
