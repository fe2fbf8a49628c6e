"""Loading what a search needs and what it left: models and data named as ``pkg.mod:fn``, weights files,
a run directory's layout, and a stored study read back as a :class:`~autoprune.result.SearchResult`.

The console script and Python callers share these: ``autoprune search --model pkg.mod:build --weights
w.pt`` and ``build_model("pkg.mod:build", "w.pt")`` load the same model with the same checks, and
``autoprune report`` reads a study as :func:`load_result` does.

A run directory holds the default study (``study.db``), the result files, ``best/``, and, when the study
lives there, ``candidates/<study name>-<study id>/`` (the weights of every candidate that reached the front,
and a marker file naming the study they belong to).

Example:
    >>> import_object("autoprune.zoo:MLP", "model").__name__
    'MLP'
    >>> default_storage(Path("runs/digits")).endswith("runs/digits/study.db")
    True
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from autoprune import defaults
from autoprune.backends.book import StudyBook
from autoprune.backends.storage import make_storage, mask_url, storage_file
from autoprune.defaults import is_hf_spec, is_images_spec
from autoprune.errors import AutopruneInputError, CandidateError, DataError, ModelLoadError, StudyError
from autoprune.export import WEIGHTS, load_pruned, weights_sha256
from autoprune.hf import folder, task_data, task_of
from autoprune.imagedata import IMAGES_PREFIX, ImageData, image_loaders, presets, scan
from autoprune.objective import dense_copy
from autoprune.result import SearchResult, TrialRecord
from autoprune.study import StudyMeta, model_fingerprint
from autoprune.textdata import TextData, is_text_file


def task_options(meta: StudyMeta, base: nn.Module) -> dict[str, Any]:
    """The metric, batch layout, distillation (and loss) a model folder's or image folder's study was searched
    with (``metric``, ``io``, ``distill``, ``loss``), for a refine of its candidates; empty for other studies."""
    if is_images_spec(meta.data):
        return presets(base, labelled=bool(scan(meta.data[len(IMAGES_PREFIX):])[2]))
    if not is_hf_spec(meta.model):
        return {}
    task = task_of(folder(meta.model), meta.extra.get("task"))
    return {"metric": task.metric(dense_copy(base)), **task.options()}

DEMO = defaults.DEMO
#: what a saved whole-model file is named (TorchScript or pickled), refused as --model with what to give instead
MODEL_FILES = (".pt", ".pth", ".ts", ".jit", ".torchscript", ".pkl")
CANDIDATES_DIR = "candidates"
BEST_DIR = "best"
STUDY_DB = "study.db"
#: the file that names the study a candidates directory belongs to
STUDY_MARKER = ".autoprune-study.json"


def import_object(spec: str, what: str) -> Any:
    """Import ``package.module:attribute`` (modules under the working directory too); ModelLoadError saying
    what was wrong otherwise. ``what`` names the option in messages (``model``, ``data``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"--{what} must look like package.module:function, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ModelLoadError(f"--{what} {spec!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    finally:
        sys.path.pop(0)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelLoadError(f"--{what} {spec!r}: module {module_name!r} has no attribute {attr!r}") from None


def build_model(spec: str, weights: str | Path | None = None, run_dir: str | Path | None = None, *,
                task: str | None = None) -> nn.Module:
    """The base model named by ``spec`` (a factory or a module object, ``hf:DIR`` for a Hugging Face model folder
    loaded for ``task``, or :data:`DEMO` for the embedded digits CNN, trained once and cached in ``run_dir``),
    with ``weights`` loaded (see :func:`load_weights`)."""
    if is_hf_spec(spec):
        path = folder(spec)
        model = task_of(path, task).load(path)
        return load_weights(model, weights, label=f"--model {spec}") if weights else model
    if spec == DEMO:
        from autoprune.demo import pretrained_digits_cnn

        return pretrained_digits_cnn(run_dir)
    if Path(spec).suffix.lower() in MODEL_FILES:
        raise ModelLoadError(f"--model {spec}: a saved model file (TorchScript or pickled) cannot be pruned, as its "
                             "layers are compiled or their code is not named; give the Python model that builds it, "
                             "--model package.module:function, and its weights, --weights state_dict.pt")
    factory = import_object(spec, "model")
    try:
        model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    except Exception as exc:
        raise ModelLoadError(f"--model {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        load_weights(model, weights, label=f"--model {spec}")
    return model


def check_space_fits(space: Any, spec: str) -> None:
    """For the embedded default (:data:`DEMO`), which is trained on first use: refuse a space that selects none
    of its layers on the untrained architecture, so the refusal comes before a training run and its files.
    Other models are checked by :func:`autoprune.prepare.prepare_model`, before anything is created."""
    if spec != DEMO:
        return
    from autoprune.demo import DigitsCNN
    from autoprune.layers import output_layers

    architecture = DigitsCNN().eval()
    example = torch.zeros(2, 1, 8, 8)
    space.resolve(architecture, protected=output_layers(architecture, example))


def load_weights(model: nn.Module, weights: str | Path, *, label: str = "the model") -> nn.Module:
    """Load a ``torch.save(model.state_dict())`` file (or a Lightning checkpoint) into ``model``, read with
    ``weights_only=True``; ModelLoadError naming the missing, unexpected and mis-shaped keys otherwise."""
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadError(f"--weights {weights}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"--weights {weights} is not a weights file torch.load(weights_only=True) "
                             f"can read: {type(exc).__name__}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a Lightning checkpoint
    problem = state_dict_mismatch(model, state)
    if problem:
        raise ModelLoadError(f"--weights {weights} does not fit {label}: {problem}")
    model.load_state_dict(state)
    return model


def state_dict_mismatch(model: Any, state: Any) -> str:
    """Why ``state`` cannot load into ``model`` (empty when it can): missing, unexpected, mis-shaped keys."""
    if not isinstance(state, dict):
        return f"the file holds a {type(state).__name__}, not a state_dict"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    parts = [f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}"
             for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes differ:", shapes))
             if items]
    return "; ".join(parts)


def build_data(spec: str, batch_size: int | None = None, *, meta: StudyMeta | None = None) -> Any:
    """The data named by ``spec``: a factory's result (a LightningDataModule or a ``(train, val)`` loader
    pair), for :data:`DEMO` the digits data module with ``batch_size``, or an examples file read as the study
    of ``meta`` (a model folder's) read its own (the same columns, split and tokenizer)."""
    if meta is not None and is_images_spec(spec):
        images = ImageData.from_dict({**meta.extra.get("images", {}), "path": spec[len(IMAGES_PREFIX):]})
        return image_loaders(images)[0]
    if meta is not None and is_hf_spec(meta.model) and is_text_file(spec):
        path = folder(meta.model)
        text = TextData.from_dict({**meta.extra.get("text", {}), "path": spec})
        return task_data(path, task_of(path, meta.extra.get("task")), text)
    if spec == DEMO:
        from autoprune.demo import DigitsDataModule

        return DigitsDataModule(batch_size=batch_size or defaults.DATA_BATCH_SIZE)
    factory = import_object(spec, "data")
    try:
        return factory() if callable(factory) else factory
    except Exception as exc:
        raise ModelLoadError(f"--data {spec!r} raised {type(exc).__name__}: {exc}") from None


# --- a run directory and its study ------------------------------------------------------------------------

def default_storage(out_dir: Path) -> str:
    """The study a run directory holds by default: SQLite in ``<out_dir>/study.db``."""
    return f"sqlite:///{(Path(out_dir) / STUDY_DB).resolve()}"


def default_artifacts(storage: str, out_dir: Path, study_name: str, study_id: str | None = None) -> Path:
    """Where candidates' weights go by default: beside the study (next to its journal or SQLite file), else
    in the run directory; one directory per study (``<study_name>-<study_id>``: two studies of one name in
    two storages beside each other never share it; without an id, as studies made before ids were)."""
    file = storage_file(storage)
    where = file.resolve().parent if file is not None else Path(out_dir).resolve()
    return where / CANDIDATES_DIR / (study_name if study_id is None else f"{study_name}-{study_id}")


def _marker(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / STUDY_MARKER
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    return {**found, "storage": mask_url(str(found.get("storage")))}  # a marker written before masking improved


def claim_artifacts(directory: Path, meta: StudyMeta, *, study_name: str, storage: str) -> None:
    """Mark ``directory`` as the candidates directory of this study (a marker file with its id), or refuse it
    when the marker names another study: two studies writing ``trial_00001`` into one directory would
    overwrite each other's candidates. Studies made before ids were (``meta.study_id`` None) are let be."""
    if meta.study_id is None:
        return
    found = _marker(directory)
    if found is None:
        tmp = Path(directory) / f".{STUDY_MARKER}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"study_id": meta.study_id, "study_name": study_name,
                                   "storage": mask_url(storage)}) + "\n")
        os.replace(tmp, Path(directory) / STUDY_MARKER)
    elif found.get("study_id") != meta.study_id:
        raise StudyError(f"{directory} holds the candidates of another study ({found.get('study_name')!r} on "
                         f"{found.get('storage')}): give this study a candidates directory of its own with "
                         "--artifacts (artifacts_dir=), or another --out")


def check_artifacts(directory: Path, study_id: str | None) -> None:
    """Refuse to load candidates from a directory whose marker names another study than ``study_id``."""
    found = _marker(directory)
    if study_id is not None and found is not None and found.get("study_id") != study_id:
        raise CandidateError(f"{directory} holds the candidates of another study ({found.get('study_name')!r} on "
                             f"{found.get('storage')}), not of this one: pass this study's own --artifacts")


def storage_label(storage: str) -> str:
    """How to show a storage to a person: its URL with any password masked."""
    return mask_url(storage)


@dataclass(frozen=True)
class CandidateLoader:
    """Rebuilds a candidate from its saved weights (under ``artifacts_dir``) on a private copy of ``base``, after
    checking that the directory is this study's (``study_id``) and the weights are the file the trial saved
    (its recorded SHA-256). An object rather than a closure, so a :class:`~autoprune.result.SearchResult`
    holding it can be pickled (sent to another process, cached)."""

    artifacts_dir: Path
    base: nn.Module
    study_id: str | None = None

    def __call__(self, record: TrialRecord) -> nn.Module:
        directory = Path(self.artifacts_dir) / record.artifact_dir
        check_artifacts(Path(self.artifacts_dir), self.study_id)
        if record.weights_sha256 is not None and (directory / WEIGHTS).is_file():
            if weights_sha256(directory) != record.weights_sha256:
                raise CandidateError(f"{directory / WEIGHTS} is not the file trial {record.number} saved (its SHA-256 "
                                     "differs): another study or a person wrote over it; run the search again "
                                     "into a directory of its own")
        return load_pruned(directory, self.base)


def candidate_loader(artifacts_dir: Path, base_model: nn.Module, *,
                     study_id: str | None = None) -> CandidateLoader:
    """The :class:`CandidateLoader` of a study's candidates, on a private copy of ``base_model`` (the caller's
    model is never changed by loading a candidate)."""
    return CandidateLoader(Path(artifacts_dir), dense_copy(base_model), study_id)


def load_result(*, storage: str, study_name: str, out_dir: str | Path | None = None,
                base_model: nn.Module | None = None, artifacts_dir: str | Path | None = None) -> SearchResult:
    """Rebuild a :class:`~autoprune.result.SearchResult` of the whole study from its storage (what
    ``autoprune report`` shows). With ``base_model`` its candidates load too (see :func:`attach_candidates`).

    Raises:
        StudyError: the storage cannot be opened or holds no such study.
        DataError: the study has no trials yet.
    """
    book = StudyBook.load(make_storage(storage, must_exist=True), study_name=study_name)
    trials = book.records()
    if not trials:
        raise DataError(f"study {study_name!r} has no trials yet")
    meta = book.meta
    result = SearchResult(trials=trials, metric_name=meta.metric, budget_ms=meta.latency_budget_ms,
                          budget_mb=meta.budget_mb,
                          out_dir=Path(out_dir) if out_dir is not None else None, study_name=study_name, meta=meta)
    if base_model is not None:
        attach_candidates(result, base_model, storage=storage, artifacts_dir=artifacts_dir)
    return result


def attach_candidates(result: SearchResult, base_model: nn.Module, *, storage: str,
                      artifacts_dir: str | Path | None = None) -> SearchResult:
    """Let ``result.load_model`` rebuild candidates on ``base_model`` from the study's candidates directory.

    ``artifacts_dir`` overrides the directory the study was created with (a worker that mounts the shared
    directory elsewhere).
    """
    out = result.out_dir or defaults.run_dir(result.study_name)
    artifacts = artifacts_dir or result.meta.artifacts or default_artifacts(storage, out, result.study_name)
    result.model_loader = candidate_loader(Path(artifacts), base_model, study_id=result.meta.study_id)
    return result


class Opened(NamedTuple):
    """A stored search as :func:`open_result` reads it: the result, the run directory to write into, and the
    base model when it was rebuilt."""

    result: SearchResult
    out_dir: Path
    base_model: nn.Module | None = None


def open_result(*, out: Path | None, storage: str | None, study_name: str | None, artifacts: Path | None = None,
                with_model: bool = False, model: str | None = None, weights: str | None = None) -> Opened:
    """The result of a finished (or running) search and the run directory to write into, from its run
    directory (``out``) or its storage; the study name may be left out when the storage holds one study.

    With ``with_model`` the base model is rebuilt, so candidates load: from ``model`` (and ``weights``) when
    given, else as the study recorded it. The study's record names code that runs here (``pkg.mod:fn``):
    whoever can write the storage chooses it, so ``model`` lets you name the code yourself (a warning says
    when it differs from the record). Either way the rebuilt model must match the study's fingerprint of
    its base model (:func:`autoprune.study.model_fingerprint`), else :class:`StudyError`."""
    if out is None and storage is None:
        raise AutopruneInputError("give --out (a search's run directory) or --storage")
    if storage is None and not (out / STUDY_DB).is_file():
        raise StudyError(f"{out} holds no {STUDY_DB}: give the run directory of a search, or --storage")
    url = storage or default_storage(out)
    if study_name is None:
        names = make_storage(url, must_exist=True).study_names()
        if len(names) != 1:
            raise StudyError(f"the storage holds studies {names}: choose one with --study-name")
        study_name = names[0]
    out = out or defaults.run_dir(study_name)
    result = load_result(storage=url, study_name=study_name, out_dir=out)
    if not with_model:
        return Opened(result, out)
    stored = result.meta.model or DEMO
    if model is not None and model != stored:
        warnings.warn(f"building the base model from --model {model!r}; the study recorded {stored!r}")
    if weights is not None and model is None:
        raise AutopruneInputError("--weights needs --model (without it, the study's recorded model and weights are "
                                  "used)")
    base = build_model(model or stored, weights if model is not None else result.meta.weights, out,
                       task=result.meta.extra.get("task"))
    result.meta.check_model(model_fingerprint(base), study_name)
    attach_candidates(result, base, storage=url, artifacts_dir=artifacts)
    return Opened(result, out, base)
