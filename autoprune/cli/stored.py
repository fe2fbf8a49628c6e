"""The commands that open a finished search: ``report``, ``export`` and ``refine``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autoprune import defaults
from autoprune.cli.options import (DEBUG, DISTILL_HIDDEN, FORMATS, INT8, RUN_DIR, STORAGE, STORED, STUDY_NAME,
                                   Int8Limits, StoredStudy, check_distill_hidden)
from autoprune.cli.running import console, out_console, run
from autoprune.errors import AutopruneInputError


def report(
    out: Optional[Path] = RUN_DIR,
    storage: Optional[str] = STORAGE,
    study_name: Optional[str] = STUDY_NAME,
    debug: bool = DEBUG,
) -> None:
    """Print the Pareto front of a stored study (every worker's trials) and write pareto.json, trials.csv, pareto.png."""

    def body() -> None:
        from autoprune.loading import open_result
        from autoprune.report import print_front, print_study_counts, write_files

        result, out_dir, _ = open_result(out=out, storage=storage, study_name=study_name)
        print_study_counts(result, out_console)
        print_front(result, out_console)
        write_files(result, out_dir)
        out_console.print(f"written {out_dir}/pareto.json, trials.csv, pareto.png")

    run(debug, body, interrupted="the study is unchanged; run the same command again.")


@STORED
@INT8
def export(
    out: Optional[Path] = RUN_DIR,
    to: Path = typer.Option(..., help="directory to write the exported model into."),
    trial: Optional[int] = typer.Option(None, help="trial number of a Pareto candidate (default: the best)."),
    fmt: list[str] = FORMATS,
    study: StoredStudy = None,  # the options of @STORED
    int8: Int8Limits = None,  # the options of @INT8
    debug: bool = DEBUG,
) -> None:
    """Write a Pareto candidate as policy JSON + weights + TorchScript/ONNX, checked against the model."""

    def body() -> None:
        from autoprune.api import check_not_a_file
        from autoprune.export import check_formats, save_pruned
        from autoprune.finetune import first_inputs, resolve_data
        from autoprune.hf import save_preprocessing
        from autoprune.loading import build_data, open_result
        from autoprune.quantize import Int8Tolerance, deployed_model

        check_formats(fmt or ())
        tolerance = Int8Tolerance(min_agreement=int8.min_agreement, max_relative_error=int8.max_error)
        check_not_a_file(to, "--to")
        result, _, _ = open_result(out=out, storage=study.storage, study_name=study.study_name,
                                   artifacts=study.artifacts, with_model=True, model=study.model, weights=study.weights)
        chosen = result.best() if trial is None else result.candidates([trial])[0]
        if chosen is None:
            raise AutopruneInputError("no candidate meets the study's budgets; pass --trial")
        pruned = result.load_model(chosen)
        train, val = resolve_data(build_data(study.data or result.meta.data or defaults.DEMO, meta=result.meta))
        policy, example = result.policy(chosen), first_inputs(val)
        quantized = deployed_model(pruned, policy, example, train_loader=train)  # re-quantized from fp32 weights
        files = save_pruned(pruned, policy, to, example_inputs=example, formats=fmt or None, int8=quantized,
                            parity_batches=iter(val), int8_tolerance=tolerance)
        if defaults.is_hf_spec(result.meta.model):  # the tokenizer or image processor beside the model: the folder
            files = {**files, **save_preprocessing(result.meta.model, to)}  # is all a user needs
        out_console.print(f"exported trial {chosen.number}: " + ", ".join(str(p) for p in files.values()))

    run(debug, body, interrupted="nothing was exported (no half-written folder is left); run the same command "
         "again.")


@STORED
@INT8
def refine(
    out: Optional[Path] = RUN_DIR,
    steps: int = typer.Option(..., help="optimiser steps of the long fine-tune (the search's trials ran the "
                                        "space's finetune.max_steps, 60 by default)."),
    trial: Optional[list[int]] = typer.Option(None, help="a Pareto candidate to refine (repeatable; default: "
                                                         "every candidate that prunes something)."),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: each trial's own)."),
    distill: bool = typer.Option(False, help="fine-tune against the dense model's outputs too (distillation)."),
    distill_hidden: Optional[float] = DISTILL_HIDDEN,
    to: Optional[Path] = typer.Option(None, help="where the refined candidates go (default: <out>/refined)."),
    fmt: list[str] = FORMATS,
    study: StoredStudy = None,  # the options of @STORED
    int8: Int8Limits = None,  # the options of @INT8
    debug: bool = DEBUG,
) -> None:
    """Fine-tune Pareto candidates longer and save each as an exported model, with its new accuracy."""

    def body() -> None:
        from autoprune.loading import build_data, open_result, task_options
        from autoprune.refine import REFINED_DIR, REFINED_JSON, check_lr, check_steps, refine
        from autoprune.report import print_refined

        from autoprune.export import check_formats
        from autoprune.quantize import Int8Tolerance

        check_steps(steps)
        tolerance = Int8Tolerance(min_agreement=int8.min_agreement, max_relative_error=int8.max_error)
        check_lr(lr)
        check_formats(fmt or ())
        result, out_dir, base = open_result(out=out, storage=study.storage, study_name=study.study_name,
                                            artifacts=study.artifacts, with_model=True, model=study.model,
                                            weights=study.weights)
        datamodule = build_data(study.data or result.meta.data or defaults.DEMO, meta=result.meta)
        target = to or out_dir / REFINED_DIR
        preset = task_options(result.meta, base)  # a model folder's task: its metric, batches, distillation
        distillation = True if distill else preset.pop("distill", None)
        check_distill_hidden(distillation, distill_hidden)
        if distill_hidden is not None:
            from dataclasses import replace

            from autoprune.distill import Distillation

            distillation = replace(Distillation() if distillation is True else distillation, hidden=distill_hidden)
        with console.status(f"refining for {steps} steps each ..."):
            refined = refine(result, datamodule, steps=steps, trials=trial or None, lr=lr, out_dir=target,
                             formats=fmt or None, distill=distillation, teacher=base if distillation else None,
                             int8_tolerance=tolerance, **preset)
        print_refined(refined, result, steps, out_console)
        out_console.print(f"refined models in {target}/trial_NNNNN/, summary in {target / REFINED_JSON}")

    run(debug, body)
