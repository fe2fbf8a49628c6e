"""int8 quantization of a pruned model in ONNX Runtime, the way it ships on CPUs. The only module that
imports ``onnxruntime.quantization``.

A policy's ``quantize`` choice (:data:`~autoprune.policy.QUANTIZATIONS`) is applied after pruning and the
fp32 fine-tune: the model is exported to ONNX (:func:`~autoprune.runtimes.onnxruntime.export_onnx`) and

* ``int8_static``: QDQ format, weights int8 per output channel, activations uint8 with ranges calibrated
  (min-max) on training batches: convolutions and matrix products run as int8 kernels;
* ``int8_dynamic``: weights int8 per output channel, activations quantized on the fly at run time (no
  calibration): the usual choice for Linear- and attention-heavy models. Per-channel weight scales cost no
  speed and keep much more quality than ONNX Runtime's default of one scale per weight matrix
  (all-MiniLM-L6-v2: mean cosine to the fp32 embeddings 0.993 against 0.963).

The result is a :class:`QuantizedModel`: an ``nn.Module`` that runs the int8 ONNX model in an ONNX Runtime
session, so a trial's metric (``metric(model, val_loader)`` or accuracy) is computed on the quantized
model's own outputs; it returns the one output the search's :class:`~autoprune.modelio.ModelIO` selects.
Its latency is timed by the ``onnxruntime`` runtime like any candidate, and its size is the int8 file's.
:func:`int8_parity` is the check a saved int8 model passes against its fp32 model (top-1 agreement and a
bounded relative output error, on validation batches).

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4)).eval()
    >>> q = quantize_model(net, torch.randn(2, 256), "int8_dynamic")
    >>> q(torch.randn(3, 256)).shape, q.size_bytes < 4 * 256 * 260 / 3  # a third of the float32 bytes
    (torch.Size([3, 4]), True)
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from autoprune import defaults
from autoprune.errors import AutopruneInputError, ExportError, Int8ToleranceError
from autoprune.layers import traceable
from autoprune.modelio import Inputs, ModelIO
from autoprune.policy import QUANTIZATIONS
from autoprune.runtimes.onnxruntime import INSTALL, export_onnx, feeds, onnx_available, session

INT8_FILE = "model.int8.onnx"


class QuantizedModel(nn.Module):
    """An int8 ONNX model run by ONNX Runtime (CPU), called like the PyTorch model it was made from.

    ``onnx_model`` holds the serialised model (what :meth:`save` writes); the forward feeds its tensors by
    the names :attr:`~autoprune.modelio.Inputs.names` gives and returns the output as a float tensor.
    """

    def __init__(self, onnx_model: bytes, mode: str, threads: int | None = None) -> None:
        super().__init__()
        self.onnx_model, self.mode = onnx_model, mode
        self._session = session(onnx_model, threads)

    @property
    def size_bytes(self) -> int:
        """Bytes of the serialised int8 model: what the deployed file occupies."""
        return len(self.onnx_model)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        inputs = Inputs(args=args, kwargs=kwargs).to("cpu")
        return torch.from_numpy(self._session.run(None, feeds(self._session, inputs))[0]).float()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.onnx_model)
        return path

    @classmethod
    def load(cls, path: str | Path, mode: str = "int8") -> QuantizedModel:
        return cls(Path(path).read_bytes(), mode)

    def __deepcopy__(self, memo: dict) -> QuantizedModel:  # a session cannot be copied: open a new one
        return QuantizedModel(self.onnx_model, self.mode)


class _Batches:
    """ONNX Runtime's calibration data reader over batches of model inputs."""

    def __init__(self, batches: list[Inputs], names: list[str]) -> None:
        self._feeds = iter([{n: t.cpu().numpy() for n, t in zip(names, b.tensors)} for b in batches])

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def quantize_model(model: nn.Module, example_inputs: Any, mode: str, *, calibration: Iterable[Any] = (),
                   io: ModelIO | None = None, calibration_batches: int = 8, threads: int | None = 1) -> QuantizedModel:
    """``model`` exported to ONNX and quantized to int8 (``mode``: ``int8_static`` or ``int8_dynamic``).

    Args:
        example_inputs: inputs of one forward (their layout names the ONNX inputs).
        calibration: batches of model inputs (:class:`~autoprune.modelio.Inputs`, or what ``Inputs.of``
            takes) whose activation ranges ``int8_static`` calibrates on; the first ``calibration_batches``
            are used, and the example inputs when there are none.
        io: which output the quantized model returns (default: see ``ModelIO``).

    Raises:
        ExportError: ONNX Runtime is missing, the model cannot be exported, or the quantizer refuses it
            (the message names the operator when ONNX Runtime does).
    """
    if mode not in QUANTIZATIONS[1:]:
        raise ExportError(f"unknown quantization {mode!r}; choose one of {list(QUANTIZATIONS[1:])}")
    if not onnx_available():
        raise ExportError(f"int8 quantization needs the onnx and onnxruntime packages: {INSTALL}")
    model = copy.deepcopy(model).cpu().float().eval()
    inputs = Inputs.of(example_inputs).to("cpu")
    with tempfile.TemporaryDirectory(prefix="autoprune-int8-") as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / INT8_FILE
        try:
            with warnings.catch_warnings(), traceable(model):
                warnings.simplefilter("ignore")
                export_onnx(model, inputs, fp32, io)
        except Exception as exc:
            raise ExportError(f"{type(model).__name__} could not be exported to ONNX for quantization "
                              f"({type(exc).__name__}: {_first_line(exc)}); leave quantize out of the space") from exc
        try:
            with _quiet_root_logger():
                _quantize(mode, fp32, int8, inputs, calibration, calibration_batches)
            quantized = int8.read_bytes()
        except Exception as exc:
            raise ExportError(f"ONNX Runtime could not quantize {type(model).__name__} to {mode} "
                              f"({type(exc).__name__}: {_first_line(exc)}); try the other int8 mode, or "
                              "leave quantize out of the space") from exc
    return QuantizedModel(quantized, mode, threads)


def _quantize(mode: str, fp32: Path, int8: Path, inputs: Inputs, calibration: Iterable[Any], count: int) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if mode == "int8_static":
        batches = [Inputs.of(b) for b in itertools.islice(calibration, count)] or [inputs]
        quantize_static(str(fp32), str(int8), _Batches(batches, inputs.names), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    else:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantizer logs advice (pre-processing) to the root logger on every call: keep it off the console."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def deployed_model(model: nn.Module, policy: Any, example_inputs: Any, *, train_loader: Any = None,
                   io: ModelIO | None = None, threads: int | None = 1) -> QuantizedModel | None:
    """What ships for ``model`` under ``policy``: its int8 model when the policy quantizes (calibrated on the
    first batches of ``train_loader``), else None (the fp32 model itself)."""
    if policy.quantize == "none":
        return None
    io = io or ModelIO()
    batches = (io.split(batch)[0] for batch in train_loader) if train_loader is not None else ()
    return quantize_model(model, example_inputs, policy.quantize, calibration=batches, io=io, threads=threads)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


@dataclass(frozen=True)
class Parity:
    """How closely an int8 model follows its fp32 model on some batches."""

    agreement: float  # share of samples whose top-1 class is the same
    relative_error: float  # ||int8 - fp32|| / ||fp32|| over every output
    samples: int


#: the default tolerance a saved int8 model must meet against its fp32 model: int8 rounding flips the top-1
#: class of near-ties (about 1% of the digits validation set for a weakly trained CNN, at 1% relative error)
MIN_AGREEMENT, MAX_RELATIVE_ERROR = defaults.INT8_MIN_AGREEMENT, defaults.INT8_MAX_ERROR


@dataclass(frozen=True)
class Int8Tolerance:
    """How closely a saved int8 model must follow its fp32 model (checked by export and refine).

    The defaults suit classifiers. An embedder's outputs have no top-1 class (``min_agreement=0``; all-MiniLM-L6-v2
    in dynamic int8: mean cosine 0.993 to the fp32 embeddings, relative error 0.12), and other models' int8
    outputs can stray further while their quality holds: loosen it when the search's metric, which scored the
    int8 model itself, says the quality is enough.
    """

    min_agreement: float = MIN_AGREEMENT
    max_relative_error: float = MAX_RELATIVE_ERROR

    def __post_init__(self) -> None:
        if not 0 <= self.min_agreement <= 1:
            raise AutopruneInputError(f"the int8 minimum agreement must be in [0, 1], got {self.min_agreement!r}")
        if not self.max_relative_error > 0:
            raise AutopruneInputError(f"the int8 maximum relative error must be above 0, got "
                                      f"{self.max_relative_error!r}")


def int8_parity(fp32: nn.Module, int8: nn.Module, batches: Iterable[Any], *, io: ModelIO | None = None,
                max_batches: int = 4) -> Parity:
    """Top-1 agreement and relative output error of ``int8`` against ``fp32`` on up to ``max_batches``
    batches (read through ``io``, as the search's metric reads them)."""
    io = io or ModelIO()
    agree = total = 0
    diff = norm = 0.0
    fp32 = fp32.eval()
    with torch.no_grad():
        for batch in itertools.islice(batches, max_batches):
            inputs, _ = io.split(batch)
            expected, got = io.run(fp32, inputs.to("cpu")).float(), io.run(int8, inputs).float()
            if expected.dim() > 1:
                agree += int((expected.argmax(-1) == got.argmax(-1)).sum())
            else:
                agree += len(expected)
            total += len(expected)
            diff += float((got - expected).pow(2).sum())
            norm += float(expected.pow(2).sum())
    return Parity(agreement=agree / max(total, 1), relative_error=(diff / max(norm, 1e-12)) ** 0.5, samples=total)


def check_int8_parity(parity: Parity, *, what: str, tolerance: Int8Tolerance | None = None) -> None:
    """Raise :class:`~autoprune.errors.Int8ToleranceError` (an input error: exit 2 in the CLI) when ``parity``
    misses the ``tolerance``."""
    t = tolerance or Int8Tolerance()
    if parity.agreement < t.min_agreement or parity.relative_error > t.max_relative_error:
        raise Int8ToleranceError(f"{what}: the int8 model agrees with the fp32 model on {parity.agreement:.1%} of "
                          f"{parity.samples} samples (at least {t.min_agreement:.0%} needed) with a relative output "
                          f"error of {parity.relative_error:.3f} (at most {t.max_relative_error} allowed). If the "
                          "search's metric, which scored the int8 model itself, says its quality is enough, loosen the "
                          "tolerance: --int8-min-agreement / --int8-max-error (int8_tolerance= in Python; an "
                          "embedder's outputs have no top-1 class: --int8-min-agreement 0)")
