"""Save a pruned model so it can be used without autoprune's search, and check that it reloads exactly.

A saved directory holds:

* ``policy.json``: the policy that produced the model;
* ``weights.pt``: the pruned state_dict, plain tensors only, loadable with ``torch.load(..., weights_only=True)``;
  :func:`load_pruned` rebuilds the pruned shapes on a fresh copy of the base model and loads it;
* ``model.ts``: a standalone TorchScript file (``torch.jit.load`` needs neither autoprune nor the model's code);
* ``model.onnx``: a standalone ONNX file, when ``onnx`` and ``onnxruntime`` are installed (dynamic batch axis).

Every file is reloaded and run on the example inputs right after it is written; an output that differs
from the in-memory model by more than ``atol`` (1e-4) times the outputs' largest magnitude (at least 1: float32
rounding grows with the values, and a runtime that sums in another order differs by a few units in the last
place) raises :class:`~autoprune.errors.ExportError`. The
files are written and checked in a staging folder beside the target and moved in only when every check
passed: a failed export leaves the target as it was (and no folder it created).

Example:
    >>> import tempfile, torch, torch.nn as nn
    >>> from autoprune import Policy
    >>> from autoprune.export import save_pruned, load_pruned
    >>> model = nn.Sequential(nn.Linear(4, 3))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     files = save_pruned(model, Policy(), d, example_inputs=torch.randn(2, 4), formats=("torchscript",))
    ...     sorted(p.name for p in files.values())
    ['model.ts', 'policy.json', 'weights.pt']
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from autoprune.attention import attention_blocks, refresh_heads
from autoprune.depth import drop_blocks
from autoprune.errors import AutopruneInputError, ExportError, LayerMatchError, ModelLoadError
from autoprune.layers import traceable
from autoprune.modelio import Inputs, ModelIO, Selected
from autoprune.policy import Policy
from autoprune.quantize import INT8_FILE, Int8Tolerance, QuantizedModel, check_int8_parity, int8_parity
from autoprune.runtimes.onnxruntime import INSTALL, export_onnx, feeds, onnx_available, session

WEIGHTS, POLICY, TORCHSCRIPT, ONNX = "weights.pt", "policy.json", "model.ts", "model.onnx"
#: every file an export writes: one an export does not write again is removed from its folder
EXPORT_FILES = (POLICY, WEIGHTS, TORCHSCRIPT, ONNX, INT8_FILE)


def weights_sha256(directory: str | Path) -> str:
    """The SHA-256 of the weights file :func:`save_pruned` wrote in ``directory`` (read in chunks): recorded
    when a search saves a candidate, checked when it is loaded."""
    digest = hashlib.sha256()
    with open(Path(directory) / WEIGHTS, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_formats() -> tuple[str, ...]:
    return ("torchscript", "onnx") if onnx_available() else ("torchscript",)


def _outputs(model: Any, inputs: Inputs, output: ModelIO) -> torch.Tensor:
    with torch.no_grad():
        return output.run(model, inputs).detach().float().cpu()


def _check_parity(kind: str, expected: torch.Tensor, got: torch.Tensor, atol: float) -> None:
    if expected.shape != got.shape:
        raise ExportError(f"{kind} export gives outputs of shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if not expected.numel():
        return
    diff, scale = float((expected - got).abs().max()), max(1.0, float(expected.abs().max()))
    if not diff <= atol * scale:
        raise ExportError(f"{kind} export differs from the model in memory by {diff:.3g} (> {atol} x {scale:.3g}, "
                          "the outputs' largest magnitude)")


def _resize_module(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> None:
    """Give ``module``'s own parameters and buffers the shapes found in ``state``, and fix its size attributes."""
    old_out = getattr(module, "out_channels", None)
    for key, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        saved = state.get(prefix + key)
        if saved is None or tensor is None or saved.shape == tensor.shape:
            continue
        if saved.dim() != tensor.dim() or any(a > b for a, b in zip(saved.shape, tensor.shape)):
            raise ModelLoadError(
                f"the saved weights do not fit this model: {prefix + key} is {tuple(saved.shape)} in the file but "
                f"{tuple(tensor.shape)} in the model, and pruning only ever removes channels"
            )
        new = torch.empty(saved.shape, dtype=tensor.dtype, device=tensor.device)
        if isinstance(tensor, nn.Parameter):
            setattr(module, key, nn.Parameter(new, requires_grad=tensor.requires_grad))
        else:
            setattr(module, key, new)
    if isinstance(module, nn.modules.conv._ConvNd):
        out = module.weight.shape[0]
        if module.groups > 1 and old_out:
            module.groups = max(1, out // max(1, old_out // module.groups))
        module.out_channels, module.in_channels = out, module.weight.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = module.running_mean.shape[0] if module.running_mean is not None else module.weight.shape[0]
    elif isinstance(module, nn.LayerNorm) and module.weight is not None:
        module.normalized_shape = tuple(module.weight.shape)
    elif isinstance(module, nn.GroupNorm) and module.weight is not None:
        module.num_channels = module.weight.shape[0]
    elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
        dim = module.in_proj_weight.shape[1]
        module.embed_dim = module.kdim = module.vdim = dim
        module.head_dim = dim // module.num_heads


def load_weights_into(base_model: nn.Module, state: dict[str, torch.Tensor], *, drop: Sequence[str] = ()) -> nn.Module:
    """A copy of ``base_model``, its ``drop`` blocks replaced by identities, reshaped to the (pruned)
    ``state`` and loaded with it."""
    try:
        model = drop_blocks(copy.deepcopy(base_model), drop)
    except LayerMatchError as exc:
        raise ModelLoadError(f"the saved policy drops a block this model does not have: {exc}") from None
    blocks = attention_blocks(model)  # head sizes as the unpruned model has them
    for name, module in model.named_modules():
        _resize_module(module, state, f"{name}." if name else "")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"the saved weights do not fit this model: {exc}") from None
    refresh_heads(model, blocks)
    return model


def load_pruned(directory: str | Path, base_model: nn.Module) -> nn.Module:
    """Rebuild a pruned model saved by :func:`save_pruned` on a fresh copy of the unpruned ``base_model``
    (the blocks its ``policy.json`` drops are removed first)."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise ModelLoadError(f"no {WEIGHTS} in {directory}: not a directory written by autoprune's save_pruned")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own message advises weights_only=False, which would run the file's code
        raise ModelLoadError(f"{path} cannot be read ({type(exc).__name__}): the file is truncated or not written "
                             "by save_pruned; export or run the search again") from None
    policy_file = Path(directory) / POLICY
    drop = Policy.from_json(policy_file).drop if policy_file.is_file() else ()
    return load_weights_into(base_model, state, drop=drop).eval()


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """``formats`` as a tuple; an :class:`~autoprune.errors.AutopruneInputError` names any unknown one."""
    unknown = sorted(set(formats) - {"torchscript", "onnx"})
    if unknown:
        raise AutopruneInputError(f"unknown export format(s) {unknown}; choose from 'torchscript', 'onnx'")
    return tuple(formats)


def save_pruned(
    model: nn.Module,
    policy: Policy,
    directory: str | Path,
    *,
    example_inputs: Any,
    formats: Sequence[str] | None = None,
    base_model: nn.Module | None = None,
    atol: float = 1e-4,
    io: ModelIO | None = None,
    int8: QuantizedModel | None = None,
    parity_batches: Iterable[Any] | None = None,
    int8_tolerance: Int8Tolerance | None = None,
) -> dict[str, Path]:
    """Write policy, weights and standalone files for ``model``; check each reloads with the same outputs.

    The standalone files take the example inputs' tensors as positional inputs, in the order
    :attr:`~autoprune.modelio.Inputs.names` gives (a dict batch's keys name the ONNX inputs), and return
    the one output ``io`` selects (see :mod:`autoprune.modelio`). ONNX leaves the batch axis open, and the
    sequence axis of 2-D integer inputs (token ids, masks).

    Args:
        base_model: the unpruned model; when given, the weights are also checked through :func:`load_pruned`.
        formats: any of ``"torchscript"`` and ``"onnx"``; by default both when ONNX is installed.
        io: which output the files return, and the parity check compares (default: see ``ModelIO``).
        int8: the model's int8 ONNX model (a quantizing policy's, :mod:`autoprune.quantize`), written as
            ``model.int8.onnx``; with ``parity_batches`` (validation batches), checked against the fp32 model
            with ``int8_tolerance`` (top-1 agreement, relative output error; ExportError when missed;
            :class:`~autoprune.quantize.Int8Tolerance`'s defaults suit classifiers).

    Returns:
        kind -> path of each file written (``policy``, ``weights``, ``torchscript``, ``onnx``, ``int8``).
    """
    formats = check_formats(default_formats() if formats is None else formats)
    if "onnx" in formats and not onnx_available():
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages: {INSTALL}")
    out = Path(directory)
    made = next((p for p in reversed((out, *out.parents)) if not p.exists()), None)  # the first folder we create
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        written = _write(model, policy, stage, example_inputs=example_inputs, formats=formats, base_model=base_model,
                         atol=atol, io=io or ModelIO(), int8=int8, parity_batches=parity_batches,
                         int8_tolerance=int8_tolerance, shown=out)
        out.mkdir(exist_ok=True)
        files = {}
        for kind, path in written.items():  # each file replaced whole: a reader never sees half of one
            files[kind] = out / path.name
            os.replace(path, files[kind])
        for stale in set(EXPORT_FILES) - {p.name for p in files.values()}:  # left by an earlier export
            (out / stale).unlink(missing_ok=True)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return files


def _write(model: nn.Module, policy: Policy, out: Path, *, example_inputs: Any, formats: Sequence[str],
           base_model: nn.Module | None, atol: float, io: ModelIO, int8: QuantizedModel | None,
           parity_batches: Iterable[Any] | None, int8_tolerance: Int8Tolerance | None, shown: Path) -> dict[str, Path]:
    """:func:`save_pruned`'s files written and checked in ``out`` (a staging folder; ``shown`` is where they go)."""
    model = copy.deepcopy(model).cpu().float().eval()
    inputs = Inputs.of(example_inputs).to("cpu")
    expected = _outputs(model, inputs, io)
    files = {"policy": out / POLICY, "weights": out / WEIGHTS}
    policy.to_json(files["policy"])
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, files["weights"])
    if base_model is not None:
        _check_parity("weights", expected, _outputs(load_pruned(out, base_model), inputs, io), atol)
    positional = Inputs(args=tuple(inputs.tensors))
    with warnings.catch_warnings(), traceable(model):
        warnings.simplefilter("ignore")
        if "torchscript" in formats:
            files["torchscript"] = out / TORCHSCRIPT
            traced = torch.jit.trace(Selected(model, inputs, io), positional.args, check_trace=False)
            traced.save(str(files["torchscript"]))
            standalone = torch.jit.load(str(files["torchscript"]))
            _check_parity("TorchScript", expected, _outputs(standalone, positional, ModelIO()), atol)
        if "onnx" in formats:
            files["onnx"] = out / ONNX
            export_onnx(model, inputs, files["onnx"], io)
            _check_parity("ONNX", expected, _run_onnx(files["onnx"], inputs), atol)
    if int8 is not None:
        if parity_batches is not None:
            check_int8_parity(int8_parity(model, int8, parity_batches, io=io), what=f"{shown / INT8_FILE}",
                              tolerance=int8_tolerance)
        files["int8"] = int8.save(out / INT8_FILE)
    return files


def _run_onnx(path: Path, inputs: Inputs) -> torch.Tensor:
    runner = session(str(path))
    return torch.from_numpy(runner.run(None, feeds(runner, inputs))[0]).float()
