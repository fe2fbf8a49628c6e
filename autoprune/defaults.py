"""The defaults that ``search()``, :class:`~autoprune.measure.HardwareProfile` and the ``autoprune`` console
script share: one copy, in a module that imports nothing, so ``autoprune --help`` shows them without
loading torch.

Example:
    >>> from autoprune import defaults
    >>> defaults.N_TRIALS, defaults.SPACE, defaults.BATCH_SIZE
    (20, 'default', 64)
    >>> defaults.is_hf_spec("hf:models/minilm"), defaults.is_images_spec("images:photos"), defaults.is_hf_spec(None)
    (True, True, False)
"""

from __future__ import annotations

from pathlib import Path

#: total trials of a study, over every worker
N_TRIALS = 20
#: the built-in search space used when none is named
SPACE = "default"
#: the sampler name (multi-objective TPE)
SAMPLER = "auto"
#: the backend name (trials in this process)
BACKEND = "optuna"
#: study name of ``search()`` when none is given (the CLI names a study after its model)
STUDY_NAME = "autoprune"
#: the folder that holds run directories when none is given: ``runs/<study name>`` (see :func:`run_dir`)
RUNS = "runs"
#: the fine-tune's Lightning precision
PRECISION = "32-true"
#: the distillation term's share of the fine-tuning loss
DISTILL_WEIGHT = 0.5
#: an int8 model must give the fp32 model's top-1 class on this share of validation samples ...
INT8_MIN_AGREEMENT = 0.98
#: ... and stay within this relative output error of it
INT8_MAX_ERROR = 0.15
#: seconds between a running trial's heartbeats; a worker silent for 3 intervals is presumed dead
HEARTBEAT_INTERVAL = 10

# What latency means, unless a HardwareProfile says otherwise.
DEVICE = "cpu"
THREADS = 1
BATCH_SIZE = 64
DTYPE = "float32"
RUNTIME = "eager"

#: how the CLI names the embedded default (a digits CNN and scikit-learn's digits) for --model and --data
DEMO = "embedded:digits"
#: the batch size of the data loaders the CLI builds for the embedded digits default
DATA_BATCH_SIZE = 64
#: the environment variable the CLI reads --storage from when it is not given (a password kept out of ps and
#: shell history)
STORAGE_ENV = "AUTOPRUNE_STORAGE"


def run_dir(study_name: str) -> Path:
    """The run directory of a study when none is given: ``runs/<study name>``."""
    return Path(RUNS) / study_name


#: ``--model hf:DIR``: a Hugging Face model folder (:mod:`autoprune.hf`); ``--data images:DIR``: an image folder
#: (:mod:`autoprune.imagedata`). Here, not there, so the CLI reads them without importing torch.
HF_PREFIX = "hf:"
IMAGES_PREFIX = "images:"


def is_hf_spec(spec: object) -> bool:
    """Whether a ``--model`` names a Hugging Face model folder (``hf:DIR``)."""
    return isinstance(spec, str) and spec.startswith(HF_PREFIX)


def is_images_spec(spec: object) -> bool:
    """Whether ``--data`` names an image folder (``images:DIR``)."""
    return isinstance(spec, str) and spec.startswith(IMAGES_PREFIX)


#: the spaces a model folder's and an image folder's search use unless told otherwise
FOLDER_SPACE = "transformer"
IMAGES_SPACE = "pretrained"

#: the suffixes of examples files a model folder's search reads (``--data FILE``, :mod:`autoprune.textdata`)
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt")
