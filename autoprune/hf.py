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
* ``image-classification``: a vision classifier (a ``...ForImageClassification`` head: ResNet, ConvNeXt,
  MobileNet, EfficientNet, ...) and an image folder (``--data images:DIR``, :mod:`autoprune.imagedata`):
  class sub-folders give accuracy, a flat folder top-1 agreement with the dense model. The images are
  cropped to the size and normalised with the mean and deviation the folder's ``preprocessor_config.json``
  states (ImageNet's when it has none), unless given.

The text tasks search the ``transformer`` space (whole heads, feed-forward neurons, encoder layers), the
image task the ``pretrained`` one (channels, for pretrained CNNs). The task defaults to the head the
folder's ``architectures`` name (none: feature extraction).
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
import json
import os
import shutil
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
from autoprune.errors import DataError, ModelLoadError
from autoprune.imagedata import IMAGES_PREFIX, ImageData, ImageSetup, image_setup, names_images
from autoprune.metrics import CosineToDense, TokenAccuracy
from autoprune.modelio import ModelIO
from autoprune.textdata import IGNORED, TextData, label_ids, text_loaders

PREPROCESSOR = "preprocessor_config.json"  # what a vision model's image processor saved
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")
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
    """The model classes the folder's ``config.json`` names (read as JSON: no model code is imported for it)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"--model hf:{path}: config.json cannot be read ({type(exc).__name__}: {exc})") from None
    names = config.get("architectures") if isinstance(config, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


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
    images: bool = False  # reads an image folder (images:DIR), not an examples file

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    @property
    def space(self) -> str:
        """The space the task searches unless told otherwise."""
        return defaults.IMAGES_SPACE if self.images else defaults.FOLDER_SPACE

    def load(self, path: Path) -> nn.Module:
        names = architectures(path)
        if self.head and not any(a.endswith(self.head) for a in names):
            raise ModelLoadError(f"--model hf:{path} cannot do --task {self.name}: its architectures "
                                 f"{names} have no ...{self.head} head; use --task feature-extraction, "
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
    Task("image-classification", "AutoModelForImageClassification", "ForImageClassification", "example",
         Distillation(kind="kl"), "accuracy over class folders, or top-1 agreement with the dense model on a flat "
         "folder", images=True),
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


def save_preprocessing(spec: str, directory: str | Path) -> dict[str, Path]:
    """Write what turns raw input into the model's input beside an exported candidate, so the folder is all a user
    needs: the folder's tokenizer (``AutoTokenizer.from_pretrained(directory)``) and its image processor's
    ``preprocessor_config.json``, where it has them; the files written, by kind."""
    path, directory, files = folder(spec), Path(directory), {}
    if (path / PREPROCESSOR).is_file():
        files["preprocessor"] = Path(shutil.copyfile(path / PREPROCESSOR, directory / PREPROCESSOR))
    if any((path / name).is_file() for name in TOKENIZER_FILES):
        load_tokenizer(path).save_pretrained(directory)
        files["tokenizer"] = directory / "tokenizer_config.json"
    return files


def _side(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        side = value.get("height") or value.get("shortest_edge")
        return int(side) if side else None
    return None


def image_settings(path: Path) -> dict[str, Any]:
    """What the folder's ``preprocessor_config.json`` says of the images its model was trained on, as
    :class:`~autoprune.imagedata.ImageData` fields (``image_size``, ``mean``, ``std``); empty where it says
    nothing (no such file)."""
    file = path / PREPROCESSOR
    if not file.is_file():
        return {}
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"--model hf:{path}: {PREPROCESSOR} cannot be read ({type(exc).__name__}: {exc}); fix or "
                             "remove it") from None
    found: dict[str, Any] = {}
    if config.get("do_normalize", True) is False:
        found["mean"], found["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    elif "image_mean" in config and "image_std" in config:
        found["mean"], found["std"] = tuple(map(float, config["image_mean"])), tuple(map(float, config["image_std"]))
    side = (_side(config.get("crop_size")) if config.get("do_center_crop", True) else None) or _side(config.get("size"))
    if side:
        found["image_size"] = side
    return found


@dataclass(frozen=True)
class FolderImages:
    """A vision model folder and an image folder made ready for ``search()``: the model, and the image folder's
    loaders and presets (:class:`~autoprune.imagedata.ImageSetup`); the same methods as :class:`FolderSetup`."""

    spec: str
    task: Task
    model: nn.Module
    images: ImageSetup

    @property
    def data(self) -> tuple[DataLoader, DataLoader]:
        return self.images.data

    @property
    def metric(self) -> Any:
        return self.images.metric

    @property
    def space(self) -> str:
        return self.images.space

    def options(self) -> dict[str, Any]:
        return {**self.images.options(), "space": self.space}

    def attrs(self) -> dict[str, Any]:
        return {"model": self.spec, "task": self.task.name, **self.images.attrs()}

    def summary(self) -> str:
        return f"task {self.task.name}; {self.images.summary()}"


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

    @property
    def space(self) -> str:
        return self.task.space

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


def folder_setup(spec: str, data: Any, *, task: str | None = None,
                 images: dict[str, Any] | None = None) -> FolderSetup | FolderImages:
    """Load ``hf:DIR`` for ``task`` (None: the folder's own) and its data: an examples file (or a
    :class:`~autoprune.textdata.TextData` saying how to read it) tokenised with the folder's tokenizer; for a
    vision model an image folder ``images:DIR`` read as its ``preprocessor_config.json`` says, ``images``
    (:class:`~autoprune.imagedata.ImageData` fields) overriding it, or an :class:`ImageData` used as it is; or
    your own loaders (a ``(train, val)`` pair or a ``LightningDataModule``), used as they are.
    Every input error (a folder that is no model, a task it cannot do, data of the other kind, a missing column,
    unknown labels) is raised before anything is written."""
    path = folder(spec)
    chosen = task_of(path, task)
    images_given = names_images(data)
    if chosen.images and isinstance(data, (str, Path, TextData)) and not images_given:
        raise DataError(f"--task {chosen.name} reads an image folder (--data images:DIR), got {data}")
    if images_given and not chosen.images:
        raise DataError(f"--data {data}: --task {chosen.name} reads an examples file; an image folder goes with a "
                        "vision model folder (--task image-classification)")
    if images_given:
        given = data if isinstance(data, ImageData) else \
            ImageData(**{**image_settings(path), **(images or {}), "path": data[len(IMAGES_PREFIX):]})
        model = chosen.load(path)
        return FolderImages(spec=f"{HF_PREFIX}{path}", task=chosen, model=model, images=image_setup(model, given))
    text = None
    if isinstance(data, (str, Path, TextData)):
        text = data if isinstance(data, TextData) else TextData(path=str(data))
        text = TextData.from_dict({**text.to_dict(), "path": str(Path(text.path).resolve()),
                                   "val": str(Path(text.val).resolve()) if text.val else None})
        data = task_data(path, chosen, text)
    model = chosen.load(path)
    return FolderSetup(spec=f"{HF_PREFIX}{path}", task=chosen, text=text, model=model, data=data,
                       metric=chosen.metric(copy.deepcopy(model).eval()), io=chosen.io())
