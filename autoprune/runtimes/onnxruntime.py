"""``onnxruntime``: the model exported to ONNX and run in an ONNX Runtime CPU session, as a deployed
``model.onnx`` runs. The only module that imports onnxruntime.

ONNX Runtime applies all its graph optimisations (BatchNorm folded into the convolutions, activations
fused), so it ranks candidates differently from eager PyTorch: it rewards channel counts aligned to
multiples of 8 far more. float32 on the CPU only; needs ``pip install 'autoprune[onnx]'``.
:mod:`autoprune.export` writes and checks ``model.onnx`` files with the helpers below.

Example:
    >>> import torch, torch.nn as nn
    >>> run = onnx_runner(nn.Linear(4, 2), torch.randn(3, 4))
    >>> run()[0].shape
    (3, 2)
"""

from __future__ import annotations

import copy
import importlib.util
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from autoprune.errors import ExportError, ProfileError
from autoprune.layers import traceable
from autoprune.modelio import Inputs, ModelIO, Selected
from autoprune.runtimes.base import Forward, Runtime, register_runtime

if TYPE_CHECKING:
    from autoprune.measure import HardwareProfile

INSTALL = "pip install 'autoprune[onnx]'"


def onnx_available() -> bool:
    return importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None


def dynamic_axes(inputs: Inputs) -> dict[str, dict[int, str]]:
    """The axes an exported model leaves open: the batch (dim 0) of every input and of the output, and the
    sequence (dim 1) of 2-D integer inputs (token ids, attention masks)."""
    axes = {}
    for name, tensor in zip(inputs.names, inputs.tensors):
        axes[name] = {0: "batch"} if tensor.dim() > 0 else {}
        if tensor.dim() == 2 and not tensor.is_floating_point():
            axes[name][1] = "sequence"
    return {**axes, "output": {0: "batch"}}


def export_onnx(model: nn.Module, inputs: Inputs, target: Path | io.BytesIO, output: ModelIO | None = None) -> None:
    """Export ``model`` run on ``inputs`` to an ONNX file or buffer: one input per tensor, named as
    :attr:`Inputs.names` (a dict batch's keys), the output ``output`` selects, open axes as
    :func:`dynamic_axes` says."""
    torch.onnx.export(
        Selected(model, inputs, output), tuple(inputs.tensors),
        target if isinstance(target, io.BytesIO) else str(target), dynamo=False, input_names=inputs.names,
        output_names=["output"], dynamic_axes=dynamic_axes(inputs),
    )


def session(source: str | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of a file path or serialised model (``threads`` intra-op threads)."""
    import onnxruntime  # optional dependency, checked by onnx_available()

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def feeds(onnx_session: Any, inputs: Inputs) -> dict[str, Any]:
    """The session's inputs, by name, from ``inputs`` (an input the exporter found unused is not fed)."""
    named = dict(zip(inputs.names, inputs.tensors))
    return {inp.name: named[inp.name].cpu().numpy() for inp in onnx_session.get_inputs()}


def onnx_runner(model: nn.Module, example_inputs: Any, *, threads: int = 1,
                output: ModelIO | None = None) -> Callable[[], Any]:
    """Export ``model`` to ONNX in memory and return a zero-argument callable that runs it on
    ``example_inputs`` in an ONNX Runtime CPU session (``threads`` intra-op threads, all graph
    optimisations). A model that is ONNX already (``onnx_model`` bytes, as a
    :class:`~autoprune.quantize.QuantizedModel` has) runs as it is.

    Raises:
        ExportError: ONNX is not installed, or the model cannot be exported.
    """
    if not onnx_available():
        raise ExportError(f"the onnxruntime runtime needs the onnx and onnxruntime packages: {INSTALL}")
    inputs = Inputs.of(example_inputs).to("cpu")
    serialised = getattr(model, "onnx_model", None)
    if isinstance(serialised, bytes):  # already ONNX (a quantized model): run it as it is
        runner = session(serialised, threads)
        bound = feeds(runner, inputs)
        return lambda: runner.run(None, bound)
    model = copy.deepcopy(model).cpu().float().eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), traceable(model):
            warnings.simplefilter("ignore")
            export_onnx(model, inputs, buffer, output)
    except Exception as exc:  # the exporter raises many types; name the model and the way out
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"{type(model).__name__} could not be exported to ONNX ({type(exc).__name__}: {first_line}); "
                          "time it with the eager runtime instead") from exc
    runner = session(buffer.getvalue(), threads)
    bound = feeds(runner, inputs)
    return lambda: runner.run(None, bound)


class OnnxRuntime(Runtime):
    """Times the exported model in ONNX Runtime on the CPU, float32, with the profile's thread count."""

    name = "onnxruntime"

    def check(self, profile: HardwareProfile) -> None:
        if profile.device != "cpu" or profile.dtype != "float32":
            raise ProfileError("the onnxruntime runtime times float32 on the CPU: use device 'cpu' and dtype "
                               f"'float32' (got {profile.device!r}, {profile.dtype!r}), or runtime 'eager'")

    def check_available(self, profile: HardwareProfile) -> None:
        if not onnx_available():
            raise ProfileError(f"profile runtime 'onnxruntime' needs the onnx and onnxruntime packages: {INSTALL}, "
                               "or use runtime 'eager'")

    def forward(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> Forward:
        try:
            return onnx_runner(model, inputs, threads=profile.threads)
        except ExportError as exc:
            raise ProfileError(str(exc)) from exc


register_runtime(OnnxRuntime(), overwrite=True)
