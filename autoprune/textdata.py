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
#: token classification: the words of an example and one tag per word (lists, or whitespace-separated text)
TOKEN_COLUMNS = ("tokens", "words")
TAG_COLUMNS = ("tags", "ner_tags", "labels", "label")
#: the label of a sub-word token that is not its word's first, and of special tokens: no loss, not scored
IGNORED = -100


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


def _words(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return value.split() or None
    if isinstance(value, list) and value and all(isinstance(w, str) for w in value):
        return value
    return None


def read_examples(path: str | Path, *, text_column: str | None, label_column: str | None, labelled: bool,
                  per_token: bool = False) -> tuple[list[Any], list[Any] | None]:
    """The texts of ``path``, and their labels when ``labelled`` (None otherwise); with ``per_token``, each
    example's words and one tag per word (lists, or whitespace-separated text). DataError naming the file and
    column when a column is missing, a text is empty, tags and words differ in number, or the file is empty."""
    path = Path(path)
    rows, columns = _rows(path)
    if not rows:
        raise DataError(f"--data {path} holds no example")
    text = _column(text_column, TOKEN_COLUMNS + TEXT_COLUMNS if per_token else TEXT_COLUMNS, columns, path, "text")
    if text is None:
        raise DataError(f"--data {path}: no text column among {list(columns)}; name it with --text-column")
    label = _column(label_column, TAG_COLUMNS if per_token else LABEL_COLUMNS, columns, path, "label") \
        if labelled else None
    if labelled and label is None:
        raise DataError(f"--data {path}: the task needs labels and no label column is among {list(columns)}; name it "
                        "with --label-column (or use --task feature-extraction, which needs none)")
    texts, labels = [], []
    for number, row in enumerate(rows, start=1):
        value = _words(row.get(text)) if per_token else row.get(text)
        if not value or (not per_token and (not isinstance(value, str) or not value.strip())):
            raise DataError(f"--data {path}, example {number}: column {text!r} is empty or not text")
        texts.append(value)
        if label is None:
            continue
        tags = _words(row.get(label)) if per_token and isinstance(row.get(label), str) else row.get(label)
        if tags in (None, "", []):
            raise DataError(f"--data {path}, example {number}: column {label!r} has no label")
        if per_token and (not isinstance(tags, list) or len(tags) != len(value)):
            raise DataError(f"--data {path}, example {number}: {len(value)} words and "
                            f"{len(tags) if isinstance(tags, list) else 'no list of'} tags in {label!r}: one tag a word")
        labels.append(tags)
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


def _encode(tokenizer: Any, texts: list[Any], labels: list[Any] | None, max_length: int, per_token: bool) -> _Encoded:
    encoded = tokenizer(texts, truncation=True, max_length=max_length, is_split_into_words=per_token)
    keys = list(encoded.keys())
    features = [{k: encoded[k][i] for k in keys} for i in range(len(texts))]
    if labels is None:
        return _Encoded(features)
    for i, (feature, label) in enumerate(zip(features, labels)):
        if not per_token:
            feature["labels"] = label
            continue
        try:
            words = encoded.word_ids(i)
        except (ValueError, AttributeError):
            raise DataError("token classification needs a fast tokenizer, which says which word each token belongs "
                            "to: save the folder's tokenizer with tokenizer.json") from None
        # a word's tag goes on its first token; its other tokens and the special tokens are not scored
        feature["labels"] = [IGNORED if w is None or (j and words[j - 1] == w) else label[w]
                             for j, w in enumerate(words)]
    return _Encoded(features)


def padding(tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """A collate function padding each batch to its longest example with ``tokenizer.pad`` (dynamic padding);
    per-token labels are padded with :data:`IGNORED` on the tokenizer's padding side."""
    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        features = [dict(f) for f in features]
        tags = [f.pop("labels") for f in features] if isinstance(features[0].get("labels"), list) else None
        batch = dict(tokenizer.pad(features, padding="longest", return_tensors="pt"))
        if tags is not None:
            width, left = batch["input_ids"].shape[1], getattr(tokenizer, "padding_side", "right") == "left"
            batch["labels"] = torch.tensor([[IGNORED] * (width - len(t)) + t if left else t + [IGNORED] * (width - len(t))
                                            for t in tags])
        return batch
    return collate


def text_loaders(data: TextData, tokenizer: Any, *, labels_to_ids: Callable[[list[Any], str], list[int]] | None,
                 per_token: bool = False) -> tuple[DataLoader, DataLoader]:
    """(train, validation) loaders of ``data``: dict batches (``input_ids``, ``attention_mask``, ... and
    ``labels`` when ``labels_to_ids`` maps the file's labels to class ids, one per word with ``per_token``;
    unlabelled otherwise). The training loader shuffles with ``data.seed``; validation keeps the file's order."""
    labelled = labels_to_ids is not None
    read = dict(text_column=data.text_column, label_column=data.label_column, labelled=labelled, per_token=per_token)
    texts, labels = read_examples(data.path, **read)
    if data.val is not None:
        val_texts, val_labels = read_examples(data.val, **read)
        train_texts, train_labels = texts, labels
    else:
        (train_texts, train_labels), (val_texts, val_labels) = split(texts, labels, fraction=data.val_fraction,
                                                                     seed=data.seed, where=f"--data {data.path}")
    if labelled:
        train_labels = _mapped(labels_to_ids, train_labels, f"--data {data.path}", per_token)
        val_labels = _mapped(labels_to_ids, val_labels, f"--data {data.val or data.path}", per_token)
    collate = padding(tokenizer)
    generator = torch.Generator().manual_seed(data.seed)
    train = DataLoader(_encode(tokenizer, train_texts, train_labels, data.max_length, per_token),
                       batch_size=data.batch_size, shuffle=True, generator=generator, collate_fn=collate)
    val = DataLoader(_encode(tokenizer, val_texts, val_labels, data.max_length, per_token),
                     batch_size=data.batch_size, collate_fn=collate)
    return train, val


def _mapped(labels_to_ids: Callable[[list[Any], str], list[int]], labels: list[Any], where: str,
            per_token: bool) -> list[Any]:
    """Class ids of each example's label, or of each of its words' tags."""
    if not per_token:
        return labels_to_ids(labels, where)
    flat = iter(labels_to_ids([tag for tags in labels for tag in tags], where))
    return [[next(flat) for _ in tags] for tags in labels]
