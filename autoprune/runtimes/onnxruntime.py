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
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from autoprune.errors import ExportError, ProfileError
from autoprune.layers import traceable
from autoprune.modelio import Inputs, ModelIO, Selected
from autoprune.runtimes.base import (Capabilities, Forward, ModuleTimes, Runtime, module_of, register_runtime,
                                     repeated, steady)

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


def session(source: str | bytes, threads: int | None = None, *, profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime CPU session of a file path or serialised model (``threads`` intra-op threads); with
    ``profile_prefix``, its profiler on, writing there, and basic graph optimisations only (see
    :meth:`OnnxRuntime.module_times`)."""
    import onnxruntime  # optional dependency, checked by onnx_available()

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if profile_prefix is not None:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
        # Basic optimisations only: BatchNorm still folds into its convolution, but activations are not fused
        # into it (a fused node takes the activation's scope, often its parent's) nor layouts rewritten
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
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
    runner = session(exported(model, inputs, output), threads)
    bound = feeds(runner, inputs)
    return lambda: runner.run(None, bound)


def exported(model: nn.Module, inputs: Inputs, output: ModelIO | None = None) -> bytes:
    """A float32 CPU copy of ``model`` exported to ONNX in memory (see :func:`export_onnx`).

    Raises:
        ExportError: the model cannot be exported.
    """
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
    return buffer.getvalue()


class OnnxRuntime(Runtime):
    """Times the exported model in ONNX Runtime on the CPU, float32, with the profile's thread count; runs the
    int8 models of a space's ``quantize`` choices."""

    name = "onnxruntime"
    capabilities = Capabilities(devices=("cpu",), dtypes=("float32",), int8=True, module_times=True)

    def check_available(self, profile: HardwareProfile) -> None:
        if not onnx_available():
            raise ProfileError(f"profile runtime 'onnxruntime' needs the onnx and onnxruntime packages: {INSTALL}, "
                               "or use runtime 'eager'")

    def forward(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> Forward:
        try:
            return onnx_runner(model, inputs, threads=profile.threads)
        except ExportError as exc:
            raise ProfileError(str(exc)) from exc

    def module_times(self, model: nn.Module, inputs: Inputs, profile: HardwareProfile) -> ModuleTimes:
        """ONNX Runtime's own profiler: each node's kernel time, attributed to the module its scope names; the
        rest of each run (what no node's kernel accounts for) to the root. The session applies ONNX Runtime's
        basic graph optimisations only (BatchNorm folded into convolutions, constants folded): with all of
        them, activations fuse into convolutions under the activation's scope, which would move a layer's
        time to its parent. So the shares are of that graph; the latency a search optimises is timed with
        every optimisation."""
        bound = inputs.to("cpu")
        onnx_model = exported(model, bound)
        with tempfile.TemporaryDirectory(prefix="autoprune-ort-") as tmp:
            runner = session(onnx_model, profile.threads, profile_prefix=str(Path(tmp) / "profile"))
            feed = feeds(runner, bound)

            def run() -> float:
                started = time.perf_counter()
                runner.run(None, feed)
                return time.perf_counter() - started

            seconds = repeated(profile, run)
            events = json.loads(Path(runner.end_profiling()).read_text())
        names = {name for name, _ in model.named_modules()}
        runs_us = [e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
        skip = len(runs_us) - len(seconds)  # the warm-up runs, profiled too
        limit = steady(runs_us[skip:])[1]
        own: dict[str, float] = {}
        nodes: dict[str, float] = {}
        seen = 0
        for event in events:  # a run's node kernels are recorded before the run itself ends
            if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
                module = module_of(event["name"][: -len("_kernel_time")], names)
                nodes[module] = nodes.get(module, 0.0) + event["dur"] / 1e6
            elif event.get("cat") == "Session" and event.get("name") == "model_run":
                if seen >= skip and event["dur"] <= limit:  # a run the machine delayed is left out
                    for name, seconds in nodes.items():
                        own[name] = own.get(name, 0.0) + seconds
                    own[""] = own.get("", 0.0) + max(0.0, event["dur"] / 1e6 - sum(nodes.values()))
                seen, nodes = seen + 1, {}
        return ModuleTimes(own=own, forward_ms=limit / 1000.0,
                           how=f"ONNX Runtime's profiler, node by node, basic graph optimisations (BatchNorm folded, "
                               f"activations not fused), {profile.threads} thread(s), batch {profile.batch_size}")


register_runtime(OnnxRuntime(), overwrite=True)
