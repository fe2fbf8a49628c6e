"""The options several commands share, and the checks of what they are given.

``--debug`` is every command's; ``--model``/``--weights``/``--data`` are what ``search`` and ``analyze`` load;
the rest are what the commands that open a finished search (``report``, ``export``, ``refine``) take.
Nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from autoprune import defaults
from autoprune.cli.groups import OptionGroup
from autoprune.errors import AutopruneInputError

DEBUG = typer.Option(False, help="print tracebacks.")
DISTILL_HIDDEN = typer.Option(None, help="layer-wise distillation: also pull every kept encoder layer's hidden "
                                         "states towards the dense model's, at this weight (transformers; needs "
                                         "distillation; helps most where layers are dropped).")


def check_distill_hidden(distilled: Any, hidden: float | None) -> None:
    """Refuse ``--distill-hidden`` where nothing distils (``distilled``: the distillation, or whether there is one)."""
    if hidden is not None and not distilled:
        raise AutopruneInputError("--distill-hidden distils the dense model's hidden states: it needs "
                                  "distillation (--distill)")


def builtin_runtimes() -> str:
    """The built-in runtimes' names (the modules of autoprune.runtimes), found without importing them: the
    CLI starts without torch."""
    spec = importlib.util.find_spec("autoprune.runtimes")
    return ", ".join(sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations or [])
                            if m.name != "base"))



RUNTIMES = builtin_runtimes()
RUN_DIR = typer.Option(None, help="the run directory of a search (default with --storage: runs/<study-name>).")
STORAGE = typer.Option(None, envvar=defaults.STORAGE_ENV,
                        help="storage URL or journal file (default: the run directory's study.db); read from "
                             f"${defaults.STORAGE_ENV} when not given, which keeps a password out of ps and history.")
STUDY_NAME = typer.Option(None, help="study name (default: the only study in the storage).")
ARTIFACTS = typer.Option(None, help="the candidates directory, if not where the study recorded it.")
FORMATS = typer.Option(None, "--format", help="torchscript and/or onnx (default: both when onnx is installed).")
# What search and analyze are given (the embedded digits default without them)
MODEL = typer.Option(None, help="hf:DIR (a Hugging Face model folder, as save_pretrained writes it), or "
                                 "package.module:function returning the trained nn.Module (default: the embedded "
                                 "digits CNN).")
WEIGHTS = typer.Option(None, help="state_dict file for --model (torch.save of model.state_dict()).")
DATA = typer.Option(None, help="an examples file for an hf:DIR model (CSV, TSV, JSONL, JSON or text, one example a "
                                "line), or package.module:function returning a LightningDataModule or "
                                "(train_loader, val_loader).")
# How a model folder's examples file is read (see autoprune.textdata)
TASK = typer.Option(None, help="an hf:DIR model's task: sequence-classification (accuracy; labels from the data), "
                               "token-classification (one tag a word), feature-extraction (mean-pooled "
                               "embeddings; cosine to the dense model; no labels), or image-classification (a vision "
                               "model and --data images:DIR); default: the head the folder's architectures name.")
TEXT_COLUMN = typer.Option(None, help="the data file's text column (default: text, sentence or content).")
LABEL_COLUMN = typer.Option(None, help="the data file's label column (default: label or labels).")
MAX_LENGTH = typer.Option(128, help="tokens kept per example (longer ones are truncated).")
VAL_FRACTION = typer.Option(0.1, help="the share of the data file held out for validation, split by --seed.")
VAL = typer.Option(None, help="a separate validation file (instead of --val-fraction).")
TRAIN_BATCH_SIZE = typer.Option(16, help="examples per batch read from the data file or image folder.")
# How an image folder (--data images:DIR) is read (see autoprune.imagedata)
IMAGE_SIZE = typer.Option(None, help="images: the side of the square crop the model sees [default: the model "
                          "folder's preprocessor_config.json, else 224].")
MEAN = typer.Option(None, help="images: the per-channel mean the model was trained with [default: the model folder's "
                    "preprocessor_config.json, else ImageNet's 0.485,0.456,0.406].")
STD = typer.Option(None, help="images: the per-channel standard deviation [default: as --mean; ImageNet's "
                   "0.229,0.224,0.225].")
MODEL_AGAIN = typer.Option(None, "--model", help="package.module:function of the base model (default: the one the "
                                                  "study recorded; code named in a shared storage runs here, so name "
                                                  "it yourself when you do not trust who writes the storage).")
WEIGHTS_AGAIN = typer.Option(None, "--weights", help="state_dict file for --model.")
DATA_AGAIN = typer.Option(None, "--data", help="package.module:function of the data (default: the study's record).")

FIDELITY = {"on": True, "off": False, "space": None}


def default_name(model_spec: str) -> str:
    """The study and run-directory name of a model: ``digits`` for the embedded default, a model folder's name,
    else its function's."""
    if defaults.is_hf_spec(model_spec):
        path = Path(model_spec[len(defaults.HF_PREFIX):]).resolve()
        generic = path.name.lower() in ("model", "models", "weights", "checkpoint", "final", "best", "hf")
        return f"{path.parent.name}-{path.name}" if generic and path.parent.name else path.name or "model"
    return "digits" if model_spec == defaults.DEMO else model_spec.rpartition(":")[2]


def check_model_args(model: str | None, data: str | None, weights: str | None) -> None:
    if (model is None) != (data is None):
        raise AutopruneInputError("give both --model and --data, or neither for the embedded digits default")
    if data is not None and Path(data).suffix.lower() in defaults.TEXT_SUFFIXES and not defaults.is_hf_spec(model):
        raise AutopruneInputError(f"--data {data} is an examples file, which is read with a model folder's tokenizer: "
                                  "give --model hf:DIR (or --data package.module:function for your own loaders)")
    if weights and not model:
        raise AutopruneInputError("--weights needs --model")


def numbers(text: str, option: str) -> tuple[float, ...]:
    """``0.5,0.4`` as numbers; an input error naming ``option`` otherwise."""
    try:
        return tuple(float(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise AutopruneInputError(f"{option} takes numbers separated by commas, got {text!r}") from None


def sparsities(text: str) -> list[float]:
    """``--sparsities 0.25,0.5`` (commas or spaces) as numbers; an input error naming a bad one."""
    values = []
    for part in text.replace(",", " ").split():
        try:
            values.append(float(part))
        except ValueError:
            raise AutopruneInputError(f"--sparsities takes numbers in [0, 1) separated by commas, got {part!r}") from None
    return values


INT8_AGREEMENT = typer.Option(defaults.INT8_MIN_AGREEMENT, "--int8-min-agreement",
                               help="a quantizing candidate's int8 model must give the fp32 model's top-1 class on "
                                    "this share of validation samples (0 for an embedder).")
INT8_ERROR = typer.Option(defaults.INT8_MAX_ERROR, "--int8-max-error",
                           help="... and stay within this relative output error of it.")


@dataclass(frozen=True)
class StoredStudy:
    """Where a finished search is, and (to override its record) the model and data to rebuild."""

    storage: str | None
    study_name: str | None
    artifacts: Path | None
    model: str | None
    weights: str | None
    data: str | None


@dataclass(frozen=True)
class Int8Limits:
    """How close a candidate's int8 model must stay to its fp32 model to be exported."""

    min_agreement: float
    max_error: float


@dataclass(frozen=True)
class Reading:
    """How a model folder's examples file or an image folder is read (see autoprune.textdata, .imagedata)."""

    task: str | None
    text_column: str | None
    label_column: str | None
    max_length: int
    val_fraction: float
    val: str | None
    batch_size: int
    image_size: int | None
    mean: str | None
    std: str | None

    def text(self, seed: int | None) -> dict[str, Any]:
        return dict(text_column=self.text_column, label_column=self.label_column, max_length=self.max_length,
                    val_fraction=self.val_fraction, val=self.val, batch_size=self.batch_size, seed=seed or 0)

    def images(self, seed: int | None) -> dict[str, Any]:
        """The image folder's reading as given (what is not given is the model folder's, else the default)."""
        given = {"image_size": self.image_size, "mean": None if self.mean is None else numbers(self.mean, "--mean"),
                 "std": None if self.std is None else numbers(self.std, "--std")}
        return dict({k: v for k, v in given.items() if v is not None}, val_fraction=self.val_fraction, val=self.val,
                    batch_size=self.batch_size, seed=seed or 0)


#: the options of report, export and refine that find a stored search and may override its record
STORED = OptionGroup("study", StoredStudy, (
    ("storage", Optional[str], STORAGE), ("study_name", Optional[str], STUDY_NAME),
    ("artifacts", Optional[Path], ARTIFACTS), ("model", Optional[str], MODEL_AGAIN),
    ("weights", Optional[str], WEIGHTS_AGAIN), ("data", Optional[str], DATA_AGAIN)))
#: export's and refine's int8 parity limits
INT8 = OptionGroup("int8", lambda int8_min_agreement, int8_max_error: Int8Limits(int8_min_agreement, int8_max_error),
                   (("int8_min_agreement", float, INT8_AGREEMENT), ("int8_max_error", float, INT8_ERROR)))
#: how search and analyze read a model folder's examples file or an image folder
READING = OptionGroup("reading", lambda train_batch_size, **rest: Reading(batch_size=train_batch_size, **rest), (
    ("task", Optional[str], TASK), ("text_column", Optional[str], TEXT_COLUMN),
    ("label_column", Optional[str], LABEL_COLUMN), ("max_length", int, MAX_LENGTH),
    ("val_fraction", float, VAL_FRACTION), ("val", Optional[str], VAL), ("train_batch_size", int, TRAIN_BATCH_SIZE),
    ("image_size", Optional[int], IMAGE_SIZE), ("mean", Optional[str], MEAN), ("std", Optional[str], STD)))
