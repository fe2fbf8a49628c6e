"""What ``search`` and ``analyze`` are given on the command line, loaded: the model and its data, and for a
model folder (``--model hf:DIR --data FILE``) what its task presets (metric, batch layout, distillation,
space), the settings printed before anything runs and stored with the study. Torch loads only when a
command calls :func:`load_given`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprune import defaults
from autoprune.errors import AutopruneInputError


def space_for(model: str | None, space: str | None, data: str | None = None) -> str:
    """``--space`` as given, else the model folder's or image folder's preset, else the default space."""
    if space:
        return space
    if defaults.is_images_spec(data):
        return defaults.IMAGES_SPACE
    return defaults.FOLDER_SPACE if defaults.is_hf_spec(model) else defaults.SPACE


@dataclass
class Given:
    """A loaded model and its data; ``options`` are the task's ``search()`` keywords (metric, io, distill),
    ``attrs`` what the study stores to rebuild them, ``summary`` the chosen settings (model folders only)."""

    model: Any
    data: Any
    attrs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    summary: str | None = None
    metric_name: str = "accuracy"


def load_given(model: str | None, data: str | None, weights: str | None, run_dir: Path, *, task: str | None,
               text: dict[str, Any], images: dict[str, Any] | None = None) -> Given:
    """Load ``--model``/``--data`` (the embedded digits default without them); with a model folder and an
    examples file, read ``text``'s columns and split (:class:`autoprune.textdata.TextData`) for ``task``; with
    ``--data images:DIR``, the image folder as ``images`` says (:class:`autoprune.imagedata.ImageData` fields;
    what it leaves out is the model folder's ``preprocessor_config.json``'s, else the defaults)."""
    from autoprune.loading import build_data, build_model
    from autoprune.study import metric_name

    model_spec, data_spec = model or defaults.DEMO, data or defaults.DEMO
    if task is not None and not defaults.is_hf_spec(model):
        raise AutopruneInputError("--task applies to a model folder (--model hf:DIR)")
    if defaults.is_hf_spec(model):
        if weights:
            raise AutopruneInputError("--weights applies to --model package.module:function; a model folder holds "
                                      "its own weights")
        from autoprune.hf import folder_setup
        from autoprune.textdata import TextData

        if defaults.is_images_spec(data_spec):  # a vision model folder: the image folder read as it says
            setup = folder_setup(model_spec, data_spec, task=task, images=images)
            recorded = {}
        else:
            own = Path(data_spec).suffix.lower() not in defaults.TEXT_SUFFIXES  # package.module:function loaders
            setup = folder_setup(model_spec, build_data(data_spec) if own else TextData(path=data_spec, **text),
                                 task=task)
            recorded = {"data": data_spec if own else setup.text.path}
        options = setup.options()
        options.pop("space")
        return Given(setup.model, setup.data, {**setup.attrs(), **recorded, "weights": None}, options, setup.summary(),
                     metric_name(setup.metric))
    base = build_model(model_spec, weights, run_dir, task=task)
    recorded = {"model": model_spec, "weights": str(Path(weights).resolve()) if weights else None}
    if defaults.is_images_spec(data):
        from autoprune.imagedata import ImageData, image_setup

        setup = image_setup(base, ImageData(path=data_spec[len(defaults.IMAGES_PREFIX):], **(images or {})))
        return Given(base, setup.data, {**setup.attrs(), **recorded}, setup.options(), setup.summary(),
                     metric_name(setup.metric))
    return Given(base, build_data(data_spec), {**recorded, "data": data_spec})
