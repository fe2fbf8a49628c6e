"""The long fine-tune of chosen Pareto candidates, once a search is over (NetAdapt's long-term fine-tune).

A search fine-tunes every trial briefly (the space's ``finetune.max_steps``, 60 steps in the default
space): enough to rank policies, rarely enough to recover all the accuracy a pruned network can.
:func:`refine` continues the fine-tune of the candidates worth deploying, from their saved weights, for
``steps`` more optimiser steps at each trial's own learning rate; evaluates them again; and saves each
one as an exported directory (``policy.json``, ``weights.pt``, ``model.ts``, and ``model.onnx`` when ONNX
is installed), every file checked against the model in memory as :func:`autoprune.export.save_pruned`
does. The sparse regulariser is off (the structure is final: nothing removes the channels it would push
to zero), and unstructured zeros stay zero. Latency and size are the candidate's: refining changes
weights, not shapes. Each refine starts again from the search's weights, so refining a trial twice
does not compound.

Example:
    >>> from autoprune import search
    >>> from autoprune.demo import DigitsDataModule, pretrained_digits_cnn
    >>> data = DigitsDataModule()
    >>> result = search(pretrained_digits_cnn(), data, n_trials=6, out_dir=tmp_dir)  # doctest: +SKIP
    >>> refined = refine(result, data, steps=300)                                 # doctest: +SKIP
    >>> [(r.number, r.metric_before, r.metric) for r in refined]                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from torch import nn

from autoprune.errors import AutopruneInputError
from autoprune.batchnorm import (BATCHES as BN_BATCHES, STUDY_ATTR as BN_STUDY_ATTR, adapt_batchnorm,
                                 check as check_bn)
from autoprune.dropout import STUDY_ATTR as DROPOUT_STUDY_ATTR
from autoprune.export import save_pruned
from autoprune.quantize import Int8Tolerance, deployed_model
from autoprune.finetune import Metric, as_lightning, evaluate, finetune, first_inputs, resolve_data
from autoprune.distill import Distillation, Teacher, as_distillation
from autoprune.modelio import ModelIO
from autoprune.policy import Policy, Regularizer
from autoprune.report import replacing
from autoprune.result import SearchResult, TrialRecord

REFINED_DIR = "refined"
REFINED_JSON = "refined.json"


@dataclass(frozen=True)
class RefinedCandidate:
    """One refined Pareto candidate: its metric before and after ``steps`` more fine-tuning steps at
    ``lr``, its (unchanged) latency and size, and the directory it was saved to. A refine never saves a
    candidate worse than the search left it: when the longer fine-tune scores lower, the search's weights
    are saved instead, ``metric`` is theirs and ``undone`` says so."""

    number: int
    metric_before: float
    metric: float
    latency_ms: float
    size_mb: float
    steps: int
    lr: float
    seconds: float
    directory: Path
    #: the longer fine-tune scored below the search's candidate, so the saved weights are the search's
    undone: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "directory": str(self.directory)}


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AutopruneInputError(f"steps must be a positive integer (optimiser steps), got {steps!r}")
    return steps


def check_lr(lr: Any) -> float | None:
    if lr is None:
        return None
    try:
        value = float(lr)
    except (TypeError, ValueError):
        value = math.nan
    if not (value > 0) or math.isinf(value):
        raise AutopruneInputError(f"lr must be a positive number, got {lr!r}")
    return value


def chosen_candidates(result: SearchResult, trials: Sequence[int] | None) -> list[TrialRecord]:
    """The Pareto candidates named by ``trials`` (in that order); by default every candidate that prunes
    something (the dense model has nothing to recover)."""
    if trials is not None:
        return result.candidates(trials)
    chosen = [c for c in result.pareto if not result.policy(c).is_dense]
    if not chosen:
        raise AutopruneInputError("the Pareto front holds no pruned candidate to refine: "
                                  "run more trials, or relax the budgets")
    return chosen


def refine_model(model: nn.Module, policy: Policy, train_loader: Any, *, steps: int, lr: float, loss: Any = None,
                 accelerator: str = "cpu", seed: int = 0, io: ModelIO | None = None,
                 distill: Distillation | None = None, teacher: Teacher | None = None,
                 bn: str = "train", dropout: str = "keep") -> L.LightningModule:
    """Fine-tune the pruned ``model`` (pruned by ``policy``) in place for ``steps`` more steps at ``lr``, the
    sparse regulariser off and unstructured zeros kept, distilled from ``teacher`` with ``distill``, BatchNorm
    statistics as ``bn`` says (:mod:`autoprune.batchnorm`: ``freeze`` keeps them, ``adapt`` recomputes them
    afterwards), dropout as ``dropout`` says (:mod:`autoprune.dropout`); returns the LightningModule that
    trained it (the model itself, or its wrapper), for evaluation. The benchmark refines its hand-made
    baselines with it."""
    module = as_lightning(model, loss=loss, lr=lr, io=io, distill=distill, teacher=teacher)
    torch.manual_seed(seed)
    finetune(module, train_loader, policy=dataclasses.replace(policy, regularizer=Regularizer()),
             max_steps=steps, accelerator=accelerator, bn=bn, dropout=dropout)
    if bn == "adapt":
        adapt_batchnorm(model, train_loader, batches=BN_BATCHES, io=io)
    return module


def _write_summary(directory: Path, refined: list[RefinedCandidate], study_name: str | None) -> Path:
    """Merge ``refined`` into ``directory/refined.json`` (entries of other trials are kept), atomically."""
    path = directory / REFINED_JSON
    entries: dict[str, Any] = {}
    if path.is_file():
        try:
            entries = {str(e["number"]): e for e in json.loads(path.read_text()).get("candidates", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            entries = {}  # a torn or hand-edited summary: the refined directories themselves are intact
    entries.update({str(r.number): r.to_dict() for r in refined})
    with replacing(path) as tmp:
        tmp.write_text(json.dumps({"study_name": study_name,
                                   "candidates": sorted(entries.values(), key=lambda e: e["number"])}, indent=2))
    return path


def refine(result: SearchResult, data: Any, *, steps: int, trials: Sequence[int] | None = None,
           lr: float | None = None, metric: Metric | str | None = None, loss: Any = None,
           out_dir: str | Path | None = None, formats: Sequence[str] | None = None, accelerator: str = "cpu",
           seed: int = 0, io: ModelIO | None = None, distill: Distillation | bool | None = None,
           teacher: nn.Module | None = None, int8_tolerance: Int8Tolerance | None = None,
           bn: str | None = None) -> list[RefinedCandidate]:
    """Fine-tune Pareto candidates of ``result`` for ``steps`` more steps; save and return them.

    Args:
        result: a search's result with its candidates attached (what :func:`autoprune.search` returns, or
            :func:`autoprune.api.load_result` with ``base_model``).
        data: the search's data: a ``LightningDataModule`` or ``(train_loader, val_loader)``.
        steps: optimiser steps of the long fine-tune (the search's trials ran ``finetune.max_steps``).
        trials: numbers of the Pareto candidates to refine; by default every one that prunes something.
        lr: the learning rate; by default each trial's own (the one the search sampled for it).
        metric, loss, io: as in :func:`autoprune.search` (higher metric is better).
        distill, teacher: distil from ``teacher`` (the dense base model) while refining, as
            :func:`autoprune.search` does with ``distill``.
        out_dir: where ``trial_NNNNN/`` directories and ``refined.json`` go; default
            ``<the result's run directory>/refined``.
        formats: export formats, as in :func:`autoprune.export.save_pruned`.
        seed: torch seed set before each candidate's fine-tune (the order batches are drawn in).
        int8_tolerance: how closely a quantizing candidate's int8 model must follow its refined fp32 weights
            (:class:`~autoprune.quantize.Int8Tolerance`).
        bn: what the fine-tune does to BatchNorm statistics (``train``, ``freeze``, ``adapt``); by default what the
            search's trials did (the study records it when ``auto`` resolved), else ``train``. Dropout is as the
            search's trials had it (the space's ``finetune.dropout``, recorded with the study).

    Returns:
        One :class:`RefinedCandidate` per refined trial, in the order refined.
    """
    steps = check_steps(steps)
    lr = check_lr(lr)
    bn = check_bn(bn) if bn is not None else str(result.meta.extra.get(BN_STUDY_ATTR, "train"))
    if bn == "auto":
        raise AutopruneInputError("bn='auto' is resolved by a search's start-up probe: give train, freeze or adapt")
    distillation = as_distillation(distill)
    if distillation is not None and teacher is None:
        raise AutopruneInputError("distill= needs the dense model to learn from: pass teacher=the base model")
    # one teacher for every candidate: batches that repeat (an unshuffled loader) run through it once
    outputs = Teacher.of(teacher, io or ModelIO(), distillation) if distillation is not None else None
    if result.model_loader is None:
        raise AutopruneInputError("this result was read without its base model, so its candidates cannot be "
                                  "loaded: use the result of search(), or load_result(..., base_model=model)")
    if out_dir is None and result.out_dir is None:
        raise AutopruneInputError("the result has no run directory: pass out_dir")
    chosen = chosen_candidates(result, trials)
    rates = {c.number: lr if lr is not None else c.lr for c in chosen}
    unknown = [n for n, rate in rates.items() if rate is None]
    if unknown:
        raise AutopruneInputError(f"trial(s) {unknown} recorded no learning rate (made by an older autoprune): "
                                  "pass lr")
    directory = Path(out_dir) if out_dir is not None else Path(result.out_dir) / REFINED_DIR
    train_loader, val_loader = resolve_data(data)
    example_inputs = first_inputs(val_loader, io=io)
    refined = []
    for candidate in chosen:
        started = time.perf_counter()
        policy = result.policy(candidate)
        model = result.load_model(candidate)
        module = refine_model(model, policy, train_loader, steps=steps, lr=rates[candidate.number], loss=loss,
                              accelerator=accelerator, seed=seed, io=io, distill=distillation, teacher=outputs, bn=bn,
                              dropout=str(result.meta.extra.get(DROPOUT_STUDY_ATTR, "keep")))
        int8 = deployed_model(model.cpu(), policy, example_inputs, train_loader=train_loader, io=io)
        value = evaluate(int8 if int8 is not None else module, val_loader, metric,
                         accelerator="cpu" if int8 is not None else accelerator, io=io)
        undone = value < candidate.metric  # the longer fine-tune made it worse: the search's weights are kept
        if undone:
            model = result.load_model(candidate)
            int8 = deployed_model(model, policy, example_inputs, train_loader=train_loader, io=io)
            value = candidate.metric
        target = directory / f"trial_{candidate.number:05d}"
        save_pruned(model.cpu(), policy, target, example_inputs=example_inputs, formats=formats, io=io, int8=int8,
                    parity_batches=iter(val_loader), int8_tolerance=int8_tolerance)
        refined.append(RefinedCandidate(
            number=candidate.number, metric_before=candidate.metric, metric=value, latency_ms=candidate.latency_ms,
            size_mb=candidate.size_mb, steps=steps, lr=rates[candidate.number],
            seconds=time.perf_counter() - started, directory=target, undone=undone))
        _write_summary(directory, refined, result.study_name)
    return refined
