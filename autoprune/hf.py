"""A local Hugging Face model folder as a search's model, and what its task presets.

``--model hf:DIR`` (or ``search(model="hf:DIR", data="train.csv")``) names a folder that
``save_pretrained`` wrote: ``config.json``, the weights and the tokenizer's files. It is loaded offline
(nothing is downloaded) for a task:

* ``sequence-classification``: the folder's classifier (its ``architectures`` must name a
  ``...ForSequenceClassification`` head whose weights the folder holds); labels from the data, by the
  model's label names or as class ids; quality = accuracy; distillation from the dense model's logits.
* ``token-classification``: the folder's tagger (a ``...ForTokenClassification`` head); one tag a word,
  on the word's first token; quality = the share of words tagged right; distillation from the logits.
* ``feature-extraction``: the encoder's last hidden states mean-pooled over the real tokens and normalised
  (a sentence embedding); no labels; quality = mean cosine similarity to the dense model's embeddings on
  the validation set; the fine-tune is distillation alone (cosine).

All three search the ``transformer`` space (whole heads, feed-forward neurons, encoder layers). The task
defaults to the head the folder's ``architectures`` name (none: feature extraction).
This is the one module that loads model folders through ``transformers``.

Example:
    >>> TASKS["feature-extraction"].labelled, TASKS["sequence-classification"].labelled
    (False, True)
    >>> TASKS["token-classification"].head
    'ForTokenClassification'
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from autoprune import defaults
from autoprune.defaults import HF_PREFIX
from autoprune.distill import Distillation
from autoprune.errors import ModelLoadError
from autoprune.metrics import CosineToDense, TokenAccuracy
from autoprune.modelio import ModelIO
from autoprune.textdata import IGNORED, TextData, label_ids, text_loaders

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def folder(spec: str) -> Path:
    """The folder of ``hf:DIR``, checked: a folder, with ``config.json`` and weights; ModelLoadError saying what
    is missing and how to write it otherwise."""
    path = Path(spec[len(HF_PREFIX):]).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"--model {spec}: {path} is not a folder (hf:DIR takes the folder save_pretrained wrote)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"--model {spec}: {path} has no config.json, so it is not a Hugging Face model folder: "
                             "write one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(f"--model {spec}: {path} has a config.json but no weights ({', '.join(WEIGHT_FILES[::2])})")
    return path.resolve()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def architectures(path: Path) -> list[str]:
    with _quiet_transformers() as transformers:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    return list(getattr(config, "architectures", None) or [])


class MeanPooled(nn.Module):
    """A sentence embedding: the encoder's last hidden states averaged over the real tokens (the attention
    mask), normalised to length 1 (as sentence-transformers' mean pooling)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)


def _load(path: Path, auto_class: str, *, allowed_missing: tuple[str, ...] = ()) -> tuple[nn.Module, list[str]]:
    with _quiet_transformers() as transformers:
        try:
            model, info = getattr(transformers, auto_class).from_pretrained(path, local_files_only=True,
                                                                           output_loading_info=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"--model hf:{path}: transformers cannot load it as {auto_class} "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(allowed_missing)]
    if missing:
        raise ModelLoadError(f"--model hf:{path}: the folder has no weights for {sorted(missing)[:4]}: they would start "
                             "random, which is not your model; choose the --task its weights were trained for")
    return model.eval(), list(info.get("missing_keys", []))


def token_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every scored token of a batch (``IGNORED`` labels left out): token classification's
    loss, the logits ``(batch, tokens, classes)`` against the tags ``(batch, tokens)``."""
    return F.cross_entropy(output.flatten(0, -2), target.flatten(), ignore_index=IGNORED)


@dataclass(frozen=True)
class Task:
    """What a task loads and presets: the model's class, which labels the data holds (None, one per example,
    or one per word), the loss, the distillation, and how the quality is measured."""

    name: str
    auto_class: str  # the transformers class that loads the folder for it
    head: str  # the architecture suffix a folder needs for this task ("": any encoder)
    labels: str | None  # None: no labels; "example": one per example; "word": one per word
    distill: Distillation
    describe: str
    pooled: bool = False  # mean-pooled embeddings of the encoder's last hidden states

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def load(self, path: Path) -> nn.Module:
        if self.head and not any(a.endswith(self.head) for a in architectures(path)):
            raise ModelLoadError(f"--model hf:{path} cannot do --task {self.name}: its architectures "
                                 f"{architectures(path)} have no ...{self.head} head; use --task feature-extraction, "
                                 "or fine-tune that head first")
        model, _ = _load(path, self.auto_class, allowed_missing=("pooler.",) if self.pooled else ())
        if not self.pooled:
            return model
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # mean pooling does not read it: neither timed, sized nor pruned
        return MeanPooled(model).eval()

    def io(self) -> ModelIO:
        return ModelIO() if self.labelled else ModelIO(target=None)

    def metric(self, dense: nn.Module) -> Callable[[nn.Module, Any], float] | None:
        """The quality a search maximises: accuracy (None, the default), token accuracy, or cosine to ``dense``."""
        if self.labels == "word":
            return TokenAccuracy(self.io())
        return None if self.labelled else CosineToDense(dense, self.io())

    def options(self) -> dict[str, Any]:
        """The task's ``search()`` keywords beside the metric: the batches' layout, the distillation, the loss."""
        return {"io": self.io(), "distill": self.distill,
                **({"loss": token_cross_entropy} if self.labels == "word" else {})}


TASKS = {task.name: task for task in (
    Task("sequence-classification", "AutoModelForSequenceClassification", "ForSequenceClassification", "example",
         Distillation(kind="kl"), "accuracy on the labelled validation split; distilled from the dense logits"),
    Task("token-classification", "AutoModelForTokenClassification", "ForTokenClassification", "word",
         Distillation(kind="kl"), "accuracy of the words' tags on the validation split; distilled from the dense "
         "logits"),
    Task("feature-extraction", "AutoModel", "", None, Distillation(weight=1.0, kind="cosine"),
         "mean cosine of the mean-pooled embeddings to the dense model's; distillation alone", pooled=True),
)}


def task_of(path: Path, name: str | None) -> Task:
    """The task named ``name``, or (None) the folder's own: the first task whose head its architectures name,
    else feature extraction."""
    if name is None:
        names = architectures(path)
        return next((t for t in TASKS.values() if t.head and any(a.endswith(t.head) for a in names)),
                    TASKS["feature-extraction"])
    if name not in TASKS:
        raise ModelLoadError(f"--task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def load_tokenizer(path: Path) -> Any:
    with _quiet_transformers() as transformers:
        try:
            return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"--model hf:{path} has no tokenizer transformers can load ({type(exc).__name__}): "
                                 "save it into the folder with tokenizer.save_pretrained(DIR)") from None


def save_tokenizer(spec: str, directory: str | Path) -> list[Path]:
    """Write the model folder's tokenizer into ``directory`` (beside an exported candidate, so the folder is all
    a user needs: ``AutoTokenizer.from_pretrained(directory)`` and the ONNX or TorchScript model)."""
    return [Path(p) for p in load_tokenizer(folder(spec)).save_pretrained(directory)]


@dataclass(frozen=True)
class FolderSetup:
    """A model folder and a data file made ready for ``search()``: the model, the loaders and the task's
    presets (metric, batches' layout, distillation, space); ``options()`` are ``search()``'s keywords and
    ``attrs()`` what the study stores so ``report``/``export``/``refine`` rebuild the same."""

    spec: str
    task: Task
    text: TextData | None  # None: the caller's own loaders
    model: nn.Module
    data: Any
    metric: Callable[[nn.Module, Any], float] | None
    io: ModelIO
    space: str = defaults.FOLDER_SPACE

    def options(self) -> dict[str, Any]:
        return {"metric": self.metric, **self.task.options(), "space": self.space}

    def attrs(self) -> dict[str, Any]:
        if self.text is None:
            return {"model": self.spec, "task": self.task.name}
        return {"model": self.spec, "data": self.text.path, "task": self.task.name, "text": self.text.to_dict()}

    def summary(self) -> str:
        """The settings chosen, as the search prints them before it starts."""
        d = self.task.distill
        head = f"task {self.task.name} ({self.task.describe}); distillation {d.describe()}"
        if self.text is None:
            return f"{head}; your own loaders"
        return (f"{head}; data {self.text.path}: {len(self.data[0].dataset)} training and "
                f"{len(self.data[1].dataset)} validation examples, {self.text.max_length} tokens at most, "
                f"batches of {self.text.batch_size}")


def task_data(path: Path, task: Task, text: TextData) -> tuple[DataLoader, DataLoader]:
    """``text``'s loaders, tokenised by the folder's tokenizer; labels mapped by the folder's config."""
    tokenizer = load_tokenizer(path)
    mapper = None
    if task.labelled:
        with _quiet_transformers() as transformers:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        mapper = lambda labels, where: label_ids(labels, dict(config.label2id or {}),  # noqa: E731
                                                 int(config.num_labels), where)
    return text_loaders(text, tokenizer, labels_to_ids=mapper, per_token=task.labels == "word")


def folder_setup(spec: str, data: Any, *, task: str | None = None) -> FolderSetup:
    """Load ``hf:DIR`` for ``task`` (None: the folder's own) and its data: an examples file (or a
    :class:`~autoprune.textdata.TextData` saying how to read it) tokenised with the folder's tokenizer, or your
    own loaders (a ``(train, val)`` pair or a ``LightningDataModule`` of dict batches), used as they are.
    Every input error (a folder that is no model, a task it cannot do, a missing column, unknown labels) is
    raised before anything is written."""
    path = folder(spec)
    chosen = task_of(path, task)
    text = None
    if isinstance(data, (str, Path, TextData)):
        text = data if isinstance(data, TextData) else TextData(path=str(data))
        text = TextData.from_dict({**text.to_dict(), "path": str(Path(text.path).resolve()),
                                   "val": str(Path(text.val).resolve()) if text.val else None})
        data = task_data(path, chosen, text)
    model = chosen.load(path)
    return FolderSetup(spec=f"{HF_PREFIX}{path}", task=chosen, text=text, model=model, data=data,
                       metric=chosen.metric(copy.deepcopy(model).eval()), io=chosen.io())
