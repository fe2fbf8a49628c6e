"""The brief Lightning fine-tune of one trial, the data it reads, and the metric it reports.

* A plain ``nn.Module`` is wrapped in :class:`ClassifierModule` (Adam at the sampled learning rate,
  cross-entropy or the user's ``loss(output, target)``).
* A ``LightningModule`` fine-tunes with its own ``training_step`` and ``configure_optimizers``; the
  sampled learning rate is written to its ``lr`` or ``learning_rate`` attribute when it has one
  (Lightning's own convention), else its optimiser settings are used as they are.
* The model fine-tunes in train mode (batch norm updates its statistics to the pruned channels), whatever
  mode it arrives in; it is left in eval mode.
* Unstructured zeros stay zero: :class:`KeepZeros` re-applies the mask of every layer a method of the
  unstructured kind pruned (the registry says which, whatever the method's name) after every optimiser
  step, so a trial reports the sparsity it really has.
* A loss that becomes NaN or infinite stops the trial with :class:`~autoprune.errors.NonFiniteLossError`.
* Inside trials Lightning is silenced: no logger, no checkpoints, no progress bar, no model summary,
  no banners or tips.

Example:
    >>> import torch
    >>> from autoprune.finetune import resolve_data
    >>> loaders = (torch.utils.data.DataLoader([(torch.zeros(2), 0)]),) * 2
    >>> train, val = resolve_data(loaders)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Literal, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from autoprune import defaults
from autoprune.distill import Distillation, LayerTap, Teacher, hidden_term
from autoprune.dropout import DROPOUT, InferenceMode
from autoprune.errors import AutopruneInputError, DataError, NonFiniteLossError, Terminated
from autoprune.methods import get_method
from autoprune.modelio import Inputs, ModelIO
from autoprune.policy import Policy
from autoprune.regularize import SparsityRegularizer

Metric = Callable[[nn.Module, DataLoader], float]

#: the fine-tune's optimisers by the name a space or recipe gives (the space's choices are read from here):
#: ``sgd`` (momentum 0.9, the usual way to fine-tune a CNN) moves each weight by its gradient, where Adam and
#: AdamW move every weight by about the learning rate whatever its gradient.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": functools.partial(torch.optim.SGD, momentum=0.9)}


def resolve_data(data: Any) -> tuple[DataLoader, DataLoader]:
    """(train_loader, val_loader) from a LightningDataModule or a pair of loaders."""
    if isinstance(data, L.LightningDataModule):
        data.prepare_data()
        data.setup("fit")
        return data.train_dataloader(), data.val_dataloader()
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(hasattr(d, "__iter__") for d in data):
        return data[0], data[1]
    raise DataError(f"data must be a lightning.LightningDataModule or a (train_loader, val_loader) pair, "
                    f"got {type(data).__name__}")


def first_inputs(loader: DataLoader, n: int = 2, io: ModelIO | None = None) -> Inputs:
    """The inputs of the first batch (first ``n`` samples): example inputs for tracing and timing."""
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise DataError("the validation loader yields no batch") from None
    inputs, _ = (io or ModelIO()).split(batch)
    return inputs.take(n)


@dataclass(frozen=True)
class Recipe:
    """The optimiser of a fine-tune: Adam, AdamW or SGD at ``lr`` with ``weight_decay``, the learning rate
    warmed up linearly over the first ``warmup_steps`` steps (pretrained transformers want AdamW, a small
    rate and a warm-up; the small CNNs of the default space, Adam) and, with ``decay_steps``, decayed
    linearly to zero by that step (a long recovery fine-tune settles instead of ending at full rate)."""

    lr: float = 1e-3
    optimizer: Literal[tuple(OPTIMIZERS)] = "adam"  # the names of OPTIMIZERS
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay_steps: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise AutopruneInputError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")

    @classmethod
    def of(cls, settings: Any) -> Recipe:
        """The recipe of a trial's :class:`~autoprune.resolved_space.FinetuneSettings`."""
        return cls(lr=settings.lr, optimizer=settings.optimizer, weight_decay=settings.weight_decay,
                   warmup_steps=settings.warmup_steps,
                   decay_steps=settings.max_steps if getattr(settings, "decay", "none") == "linear" else 0)

    def factor(self, step: int) -> float:
        """The share of ``lr`` at optimiser step ``step`` (from 0)."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if not self.decay_steps:
            return warm
        span = max(1, self.decay_steps - self.warmup_steps)
        return warm * max(0.0, 1.0 - max(0, step - self.warmup_steps) / span)

    def configure(self, parameters: Any) -> Any:
        """What a LightningModule's ``configure_optimizers`` returns for this recipe."""
        optimiser = OPTIMIZERS[self.optimizer](parameters, lr=self.lr, weight_decay=self.weight_decay)
        if not self.warmup_steps and not self.decay_steps:
            return optimiser
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, self.factor)
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ClassifierModule(L.LightningModule):
    """Fine-tunes a plain ``nn.Module`` with ``loss(output, target)`` and the ``recipe``'s optimiser, reading
    batches and outputs through ``io`` (see :mod:`autoprune.modelio`); with ``distill`` and a ``teacher``
    (the dense model), the loss mixes in the distillation term (see :mod:`autoprune.distill`)."""

    def __init__(self, net: nn.Module, *, loss: Callable[[Any, Any], torch.Tensor] | None = None, lr: float = 1e-3,
                 io: ModelIO | None = None, recipe: Recipe | None = None, distill: Distillation | None = None,
                 teacher: Teacher | None = None):
        super().__init__()
        self.net, self.loss, self.io = net, loss or F.cross_entropy, io or ModelIO()
        self.recipe = recipe or Recipe(lr=lr)
        self.lr = self.recipe.lr
        self.distill = distill
        self.teacher = teacher if distill is not None else None
        self._tap: LayerTap | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)
            if self.distill.hidden and self.teacher.layers:  # layer-wise distillation: keep the student's states
                self._tap = LayerTap(self.net, self.teacher.layers)

    def teardown(self, stage: str) -> None:  # after fit, also when it failed: no hook stays on the user's model
        if self._tap is not None:
            self._tap.remove()
            self._tap = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, target = self.io.split(batch)
        out = self.io.run(self.net, inputs)
        task = self.loss(out, target) if target is not None else None
        if self.teacher is None:
            if task is None:
                raise DataError("the training batches carry no target for the loss: say where it is with "
                                "ModelIO(target=...), or fine-tune by distillation alone (distill=)")
            return task
        if self._tap is None:
            return self.distill.loss(out, self.teacher.outputs(inputs), task)
        teacher_out, teacher_states = self.teacher.both(inputs)
        layers = hidden_term(self._tap.take(), teacher_states, inputs.kwargs.get("attention_mask"))
        return self.distill.loss(out, teacher_out, task, layers)

    def configure_optimizers(self) -> Any:
        return replace(self.recipe, lr=self.lr).configure(self.parameters())


class KeepZeros(L.Callback):
    """Re-zero the weights that unstructured pruning removed, after every optimiser step."""

    def __init__(self, module: nn.Module, layers: Sequence[str]) -> None:
        modules = dict(module.named_modules())
        self.masks = [(modules[n].weight, modules[n].weight.detach() != 0) for n in layers]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        with torch.no_grad():
            for weight, mask in self.masks:
                weight.mul_(mask)


class FiniteLoss(L.Callback):
    """Stop with :class:`~autoprune.errors.NonFiniteLossError` as soon as the training loss is NaN or infinite."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            raise NonFiniteLossError(f"the fine-tuning loss became {float(loss)} at step {trainer.global_step}")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's banners, tips and data-loader advice, and Hugging Face's load reports and advice,
    for the duration of a trial."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "transformers")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning.*")
            warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers).*")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def as_lightning(model: nn.Module, *, loss: Callable | None, lr: float | None = None, io: ModelIO | None = None,
                 recipe: Recipe | None = None, distill: Distillation | None = None,
                 teacher: Teacher | None = None) -> L.LightningModule:
    """The LightningModule that fine-tunes ``model`` (itself when it already is one: its own optimiser and
    steps then apply, and only the learning rate is set, on its ``lr`` or ``learning_rate`` attribute);
    with ``distill``, against the dense model's outputs from ``teacher`` too."""
    recipe = recipe or Recipe(lr=1e-3 if lr is None else lr)
    if isinstance(model, L.LightningModule):
        for attr in ("lr", "learning_rate"):
            if hasattr(model, attr):
                setattr(model, attr, recipe.lr)
        return model
    return ClassifierModule(model, loss=loss, io=io, recipe=recipe, distill=distill, teacher=teacher)


#: Lightning's precision settings a fine-tune may use (mixed precision autocasts; weights stay float32)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def check_precision(precision: str, accelerator: str = "cpu") -> str:
    """``precision`` when it is one of :data:`PRECISIONS` and fits ``accelerator``: the mixed ones autocast on a
    GPU, so on the CPU they are refused rather than run as something else than asked."""
    if precision not in PRECISIONS:
        raise AutopruneInputError(f"precision (--precision) must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "32-true" and accelerator == "cpu":
        raise AutopruneInputError(f"precision {precision!r} is mixed precision on a GPU, and the fine-tune runs on the "
                                  "CPU: use 32-true, or fine-tune on a GPU (--device cuda, accelerator='gpu')")
    return precision


def check_accelerator(accelerator: Any) -> str:
    """``accelerator`` when Lightning can fine-tune on it here; an input error naming it otherwise (so a missing
    GPU or torch_xla is one error up front, not a failure in every trial)."""
    if not isinstance(accelerator, str):
        raise AutopruneInputError(f"accelerator must be a Lightning accelerator name such as 'cpu' or 'gpu', got "
                                  f"{accelerator!r}")
    if accelerator == "cpu":
        return accelerator
    try:
        with quiet():
            L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    except Exception as exc:
        raise AutopruneInputError(f"accelerator {accelerator!r} cannot be used here ({type(exc).__name__}: "
                                  f"{(str(exc).strip().splitlines() or [''])[0][:200]}): use 'cpu', or run on a "
                                  "machine that has it") from None
    return accelerator


class _Batches:
    """A list of batches as one iterable: Lightning takes a list or tuple of loaders as several loaders."""

    def __init__(self, batches: Sequence[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def one_loader(loader: Any) -> Any:
    """``loader`` as Lightning should see it: one loader, also when it is a plain list of batches."""
    return _Batches(loader) if isinstance(loader, (list, tuple)) else loader


@contextlib.contextmanager
def interrupts_kept() -> Iterator[None]:
    """Ctrl-C and SIGTERM inside a Lightning ``fit``/``validate`` raised as interrupts again.

    Lightning turns a KeyboardInterrupt into ``sys.exit(1)`` (and ignores SIGINT from then on), and SIGTERM
    into a ``SystemExit`` with no code (exit 0): a search would stop as if it had failed, or succeeded, with
    its running trial left RUNNING. Here they become KeyboardInterrupt and :class:`~autoprune.errors.Terminated`
    again, so the trial is recorded interrupted and the CLI exits 130 or 143, and SIGINT is restored.
    """
    sigint = signal.getsignal(signal.SIGINT)
    try:
        yield
    except SIGTERMException:
        raise Terminated("SIGTERM received while fine-tuning") from None
    except SystemExit as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C, or our SIGTERM handler's Terminated
            raise exc.__context__ from None
        raise
    finally:
        if (threading.current_thread() is threading.main_thread() and sigint is not None
                and signal.getsignal(signal.SIGINT) is not sigint):
            signal.signal(signal.SIGINT, sigint)


def _trainer(*, max_steps: int, accelerator: str, callbacks: list[L.Callback],
             precision: str = defaults.PRECISION) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps, max_epochs=-1, accelerator=accelerator, devices=1, logger=False, precision=precision,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks, deterministic=False,
    )


def layer_prefix(module: L.LightningModule) -> str:
    """How a policy's layer names are prefixed inside ``module``: ``"net."`` for a plain model
    :func:`as_lightning` wrapped, ``""`` for a LightningModule of the caller's own."""
    return "net." if isinstance(module, ClassifierModule) else ""


def finetune(module: L.LightningModule, train_loader: DataLoader, *, policy: Policy, max_steps: int,
             accelerator: str = "cpu", prefix: str | None = None, precision: str = defaults.PRECISION,
             bn: str = "train", dropout: str = "keep") -> None:
    """Fine-tune ``module`` in place for ``max_steps`` optimiser steps with the policy's regulariser, on
    ``accelerator`` at ``precision`` (``bf16-mixed`` or ``16-mixed`` autocast on a GPU; see :data:`PRECISIONS`).
    ``bn="freeze"`` keeps BatchNorm statistics as they came (:mod:`autoprune.batchnorm`); ``dropout="off"``
    keeps every other layer as at inference (:data:`DROPOUT`).

    ``prefix`` maps the policy's layer names to names inside ``module``; by default the one
    :func:`as_lightning` gave it (``"net."`` for a plain model it wrapped, ``""`` for a LightningModule).
    """
    if max_steps <= 0:
        return
    prefix = layer_prefix(module) if prefix is None else prefix
    unstructured = [prefix + n for n, lp in policy.layers.items()
                    if lp.sparsity > 0 and not get_method(lp.method).STRUCTURED]
    callbacks: list[L.Callback] = [FiniteLoss(), KeepZeros(module, unstructured)]
    if dropout not in DROPOUT:
        raise AutopruneInputError(f"dropout must be one of {list(DROPOUT)}, got {dropout!r}")
    if dropout == "off":
        callbacks.append(InferenceMode(batchnorm_too=bn == "freeze"))
    elif bn == "freeze":
        from autoprune.batchnorm import FreezeBatchNorm

        callbacks.append(FreezeBatchNorm())
    if policy.regularizer.active:
        callbacks.append(SparsityRegularizer(kind=policy.regularizer.kind, strength=policy.regularizer.strength,
                                             layers=[prefix + n for n in policy.layers]))
    # Lightning >= 2.2 keeps the train/eval mode a module arrives in, and a pruned copy arrives in eval mode:
    # without this, batch norm would fine-tune on the dense model's frozen statistics. A LightningModule
    # that keeps layers frozen sets them to eval in its own on_train_start hook, which runs after this.
    module.train()
    with quiet(), interrupts_kept():
        _trainer(max_steps=max_steps, accelerator=accelerator, callbacks=callbacks,
                 precision=precision).fit(module, one_loader(train_loader))
    module.eval()


def accuracy(model: nn.Module, loader: DataLoader, io: ModelIO | None = None) -> float:
    """Top-1 accuracy of ``model`` on labelled batches (read through ``io``)."""
    io = io or ModelIO()
    model.eval()
    correct = total = 0
    device = next(model.parameters(), torch.empty(0)).device  # a model with none (int8 ONNX) runs on the CPU
    with torch.no_grad():
        for batch in loader:
            inputs, y = io.split(batch)
            if y is None:
                raise DataError("accuracy needs labelled batches: give a metric, or say where the target is with "
                                "ModelIO(target=...)")
            out = io.run(model, inputs.to(device))
            correct += int((out.argmax(dim=-1).cpu() == y.cpu()).sum())
            total += len(y)
    if total == 0:
        raise DataError("the validation loader yields no sample")
    return correct / total


def evaluate(module: nn.Module, val_loader: DataLoader, metric: Metric | str | None, *,
             accelerator: str = "cpu", io: ModelIO | None = None) -> float:
    """The trial's metric (higher is better): accuracy, a callable, or a name the module logs in validation."""
    if metric is None:
        return accuracy(module, val_loader, io)
    if callable(metric):
        return float(metric(module, val_loader))
    if not isinstance(module, L.LightningModule) or not hasattr(type(module), "validation_step"):
        raise DataError(f"metric {metric!r} is a logged-metric name, which needs a LightningModule "
                        "with a validation_step that logs it")
    with quiet(), interrupts_kept():
        trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False)
        results = trainer.validate(module, one_loader(val_loader), verbose=False)
    logged = {k: v for r in results for k, v in r.items()}
    if metric not in logged:
        raise DataError(f"metric {metric!r} was not logged in validation_step; logged metrics: {sorted(logged)}")
    return float(logged[metric])
