"""The commands that load a model and its data: ``search`` and ``analyze``."""

from __future__ import annotations

import dataclasses

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from autoprune import defaults
from autoprune.cli.given import load_given, space_for
from autoprune.cli.options import (DATA, DEBUG, DISTILL_HIDDEN, FIDELITY, MODEL, READING, RUNTIMES, WEIGHTS, Reading,
                                   check_distill_hidden, check_model_args, default_name,
                                   sparsities as parse_sparsities)
from autoprune.cli.running import console, out_console, progress_callback, run
from autoprune.errors import AutopruneInputError


@READING
def search(
    model: Optional[str] = MODEL,
    weights: Optional[str] = WEIGHTS,
    data: Optional[str] = DATA,
    space: Optional[str] = typer.Option(None, help="default, structured, unstructured, transformer, compress "
                                                   "(pruning and int8), pretrained (pretrained CNNs), or a YAML "
                                                   "file (default: transformer for a model folder, pretrained for an "
                                                   "image folder, else default)."),
    reading: Reading = None,  # the options of @READING
    budget_ms: Optional[float] = typer.Option(None, help="latency budget in ms (under the hardware profile)."),
    budget_mb: Optional[float] = typer.Option(None, help="size budget in MB (dense checkpoint)."),
    budget_ratio: Optional[float] = typer.Option(None, help="latency budget as a share of the dense model's latency "
                                                            "(0.5: twice as fast), instead of --budget-ms."),
    trials: int = typer.Option(defaults.N_TRIALS, help="total trials in the study (a resumed study runs only the "
                                                       "missing ones)."),
    timeout: Optional[float] = typer.Option(None, help="stop starting trials after this many seconds."),
    time_budget: Optional[float] = typer.Option(None, help="seconds for the whole search, start-up, trials and "
                                                           "--recover-steps' recovery (instead of --timeout): the "
                                                           "trials stop in time to leave the recovery its estimated "
                                                           "time."),
    storage: Optional[str] = typer.Option(None, envvar=defaults.STORAGE_ENV,
                                          help="Optuna storage: a URL (sqlite:///..., postgresql://...) or a "
                                               "journal file path; workers on the same storage and study name share "
                                               "one study (default: sqlite in the run directory). Read from "
                                               f"${defaults.STORAGE_ENV} when not given (a password stays out of ps "
                                               "and shell history)."),
    study_name: Optional[str] = typer.Option(None, help="study name (default: digits, or the model function's name)."),
    out: Optional[Path] = typer.Option(None, help="run directory (default: runs/<study-name>)."),
    artifacts: Optional[Path] = typer.Option(None, help="directory for front candidates' weights that every worker "
                                                        "can reach (default: beside the study)."),
    resume: bool = typer.Option(False, help="continue an existing study (fails if there is none); re-running "
                                            "the same command without it resumes too."),
    seed: Optional[int] = typer.Option(None, help="seed for the sampler and random baselines."),
    sampler: str = typer.Option(defaults.SAMPLER, help="auto (multi-objective TPE), tpe, nsga2, gp or random."),
    backend: str = typer.Option(defaults.BACKEND, help="optuna (trials in this process) or ray (Ray Tune trials)."),
    address: Optional[str] = typer.Option(None, help="ray backend: auto or HOST:PORT of a running cluster "
                                                     "(default: start a local Ray instance)."),
    max_concurrent: Optional[int] = typer.Option(None, help="ray backend: at most this many trials at once."),
    cpus_per_trial: float = typer.Option(1.0, help="ray backend: CPUs (and torch threads) per trial."),
    gpus_per_trial: float = typer.Option(0.0, help="ray backend: GPUs per trial (fractions share a GPU)."),
    torch_threads: Optional[int] = typer.Option(None, help="torch threads for this worker's fine-tuning (set it "
                                                           "so that workers sharing a machine do not fight)."),
    heartbeat_interval: int = typer.Option(defaults.HEARTBEAT_INTERVAL,
                                           help="seconds between heartbeats of a running trial; a worker silent "
                                                "for 3 intervals is presumed dead and its trial re-queued."),
    device: str = typer.Option(defaults.DEVICE, help="cpu or cuda: where latency is measured and trials fine-tune."),
    batch_size: int = typer.Option(defaults.BATCH_SIZE, help="batch size of the latency measurement (1 for "
                                                             "single-sample latency)."),
    threads: int = typer.Option(defaults.THREADS, help="CPU threads of the latency measurement."),
    interleave: bool = typer.Option(True, help="time each candidate in alternation with the dense model, so a "
                                               "shared machine's drift cancels (--no-interleave: alone, faster)."),
    runtime: str = typer.Option(defaults.RUNTIME, help=f"what runs the timed forwards: one of {RUNTIMES} (eager: "
                                                       "PyTorch; onnxruntime: the exported ONNX model on the CPU, "
                                                       "needs autoprune[onnx])."),
    distill: Optional[bool] = typer.Option(None, "--distill/--no-distill",
                                           help="fine-tune every trial against the dense model's outputs too "
                                                "(knowledge distillation; best for pretrained models; default: on "
                                                "for a model folder, as its task presets, else off)."),
    distill_weight: float = typer.Option(defaults.DISTILL_WEIGHT, help="the distillation term's share of the fine-tuning loss."),
    distill_hidden: Optional[float] = DISTILL_HIDDEN,
    precision: str = typer.Option(defaults.PRECISION, help="the fine-tune's precision: 32-true, or bf16-mixed / 16-mixed "
                                                  "on a GPU (--device cuda)."),
    fidelity: str = typer.Option("space", help="multi-fidelity search: on (screen new policies without fine-tuning, "
                                               "fine-tune longer only each rung's best), off (fine-tune every "
                                               "trial fully), or space (as the space's fidelity section says)."),
    analysis: Optional[Path] = typer.Option(None, help="an analysis.json of autoprune analyze (same model, space and "
                                                       "profile): a new study's seeds come from it instead of a "
                                                       "start-up scan."),
    bn: Optional[str] = typer.Option(None, help="what trials' fine-tunes do to BatchNorm statistics: auto (freeze "
                                                "them when train-mode batches alone harm the dense model), train, "
                                                "freeze, or adapt (recomputed before each evaluation); default: the "
                                                "space's finetune.bn."),
    reconstruct: Optional[bool] = typer.Option(None, "--reconstruct/--no-reconstruct",
                                               help="refit the layers that read removed channels to the dense model's "
                                                    "outputs on calibration batches (default: the space's "
                                                    "reconstruct)."),
    recover_steps: int = typer.Option(0, help="when the trials are done, fine-tune --recover-top front candidates "
                                              "this many more steps each (learning rate decaying to zero); the "
                                              "front and best/ then hold the recovered candidates (0: none)."),
    recover_top: int = typer.Option(3, help="how many front candidates --recover-steps recovers, spread along the "
                                            "front."),
    recover_floor: Optional[float] = typer.Option(None, help="recover instead the --recover-top fastest candidates "
                                                             "that keep this share of the dense model's metric (0.9: "
                                                             "those a recovery may lift over the quality you deploy "
                                                             "at)."),
    progress: bool = typer.Option(True, help="show a progress bar."),
    debug: bool = DEBUG,
) -> None:
    """Search pruning policies; write pareto.json, trials.csv, pareto.png and the best model to --out."""

    def body() -> None:
        import time

        import torch

        from autoprune import RayOptions
        from autoprune.analyze import Analysis
        from autoprune.api import check_arguments, check_setup, search as run_search
        from autoprune.distill import Distillation
        from autoprune.loading import check_space_fits, storage_label
        from autoprune.measure import HardwareProfile
        from autoprune.recovery import Recovery
        from autoprune.report import print_front, print_time_breakdown

        started = time.perf_counter()  # --time-budget counts the model's loading too
        check_arguments(n_trials=trials, budget_ms=budget_ms, budget_mb=budget_mb, budget_ratio=budget_ratio,
                        timeout=timeout, time_budget=time_budget, study_name=study_name,
                        heartbeat_interval=heartbeat_interval, sampler=sampler, backend=backend, seed=seed,
                        storage=storage, out_dir=out, artifacts_dir=artifacts)
        if backend != "ray" and (address or max_concurrent):
            raise AutopruneInputError("--address and --max-concurrent need --backend ray")
        check_model_args(model, data, weights)
        if torch_threads is not None:
            if torch_threads < 1:
                raise AutopruneInputError(f"--torch-threads must be at least 1, got {torch_threads}")
            torch.set_num_threads(torch_threads)
        ray_options = RayOptions(address=address, max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
                                 gpus_per_trial=gpus_per_trial) if backend == "ray" else None
        space_name = space_for(model, space, data)
        if recover_steps < 0:
            raise AutopruneInputError(f"--recover-steps must be 0 (none) or a positive integer, got {recover_steps}")
        recovery = Recovery(steps=recover_steps, top=recover_top, floor=recover_floor) if recover_steps else None
        if fidelity not in FIDELITY:
            raise AutopruneInputError(f"--fidelity must be one of {sorted(FIDELITY)}, got {fidelity!r}")
        head_start = Analysis.load(analysis) if analysis is not None else None
        profile = HardwareProfile(device=device, threads=threads, batch_size=batch_size, interleave=interleave,
                                  runtime=runtime)
        accelerator = "gpu" if device.startswith("cuda") else "cpu"
        the_space, _ = check_setup(space=space_name, profile=profile, precision=precision, accelerator=accelerator,
                                   fidelity=FIDELITY[fidelity], bn=bn,
                                   reconstruct=reconstruct)  # before a model is loaded, or trained
        check_distill_hidden(distill or (distill is None and defaults.is_hf_spec(model)),  # a folder presets it
                             distill_hidden)
        model_spec = model or defaults.DEMO
        check_space_fits(the_space, model_spec)
        name = study_name or default_name(model_spec)
        run_dir = out or defaults.run_dir(name)
        given = load_given(model, data, weights, run_dir, task=reading.task, text=reading.text(seed),
                           images=reading.images(seed))
        options = dict(given.options)
        if distill is not None:  # as the user says, at --distill-weight
            kind = getattr(options.get("distill"), "kind", "auto")
            options["distill"] = Distillation(weight=distill_weight, kind=kind) if distill else None
        if distill_hidden is not None:
            options["distill"] = dataclasses.replace(options["distill"], hidden=distill_hidden)
        if given.summary:
            distillation = options.get("distill")  # the options above override the task's
            changed = "" if distillation == given.options.get("distill") else \
                f"; distillation as given: {distillation.describe() if distillation else 'none'}"
            console.print(f"settings: {given.summary}; space {space_name}{changed}", highlight=False)
        columns = [TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("front {task.fields[front]}"), TextColumn("{task.fields[best]}")]
        if storage:
            console.print(f"study {name!r} on {storage_label(storage)} ({backend} backend)", highlight=False)
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            bar_task = bar.add_task("search", total=trials, front=0, best="")
            result = run_search(given.model, given.data, space=space_name, budget_ms=budget_ms, budget_mb=budget_mb,
                                budget_ratio=budget_ratio,
                                n_trials=trials, timeout=timeout, storage=storage, study_name=name, sampler=sampler,
                                profile=profile, out_dir=run_dir, artifacts_dir=artifacts, seed=seed,
                                accelerator=accelerator, backend=backend,
                                ray=ray_options, resume=resume, heartbeat_interval=heartbeat_interval,
                                on_trial_end=progress_callback(bar, bar_task, given.metric_name),
                                study_attrs={**given.attrs, "space": space_name}, precision=precision, fidelity=FIDELITY[fidelity],
                                analysis=head_start, bn=bn, reconstruct=reconstruct, recover=recovery,
                                time_budget=None if time_budget is None else
                                max(time_budget - (time.perf_counter() - started), 1e-3),
                                **options)
        print_front(result, out_console)
        print_time_breakdown(result, out_console)
        out_console.print(f"results in {run_dir}/ (pareto.json, trials.csv, pareto.png"
                          + (", best/)" if result.best() else ")"))

    run(debug, body)


@READING
def analyze(
    model: Optional[str] = MODEL,
    weights: Optional[str] = WEIGHTS,
    data: Optional[str] = DATA,
    space: Optional[str] = typer.Option(None, help="the space the search would use (its layers, units, method; "
                                                   "default: transformer for a model folder, pretrained for an "
                                                   "image folder, else default)."),
    reading: Reading = None,  # the options of @READING
    sparsities: str = typer.Option("0.25,0.5,0.75", help="sparsities each unit is pruned alone at, comma-separated "
                                                         "(the seeds' 0.5 is always scanned)."),
    out: Optional[Path] = typer.Option(None, help="where analysis.json and analysis.png go (default: "
                                                  "runs/<name>, the search's run directory)."),
    json_output: bool = typer.Option(False, "--json", help="print analysis.json to stdout instead of the tables."),
    device: str = typer.Option(defaults.DEVICE, help="cpu or cuda: where latency is measured."),
    batch_size: int = typer.Option(defaults.BATCH_SIZE, help="batch size of the latency measurement."),
    threads: int = typer.Option(defaults.THREADS, help="CPU threads of the latency measurement."),
    runtime: str = typer.Option(defaults.RUNTIME, help=f"what runs the timed forwards: one of {RUNTIMES}."),
    debug: bool = DEBUG,
) -> None:
    """Where the model's parameters, compute and latency are, and what pruning each unit alone costs."""

    def body() -> None:
        import json

        from autoprune.analysis_report import print_analysis, write_analysis
        from autoprune.analyze import ANALYSIS_FILE, analyze as run_analyze, check_sparsities
        from autoprune.api import check_not_a_file, make_directory
        from autoprune.loading import check_space_fits
        from autoprune.measure import HardwareProfile
        from autoprune.space import load_space

        check_model_args(model, data, weights)
        levels = check_sparsities(parse_sparsities(sparsities))
        the_space = load_space(space_for(model, space, data))
        model_spec = model or defaults.DEMO
        run_dir = out or defaults.run_dir(default_name(model_spec))
        check_not_a_file(run_dir, "--out")
        if (run_dir / ANALYSIS_FILE).is_dir():
            raise AutopruneInputError(f"{run_dir / ANALYSIS_FILE} is a directory, where the analysis is written: "
                                      "remove it, or give another --out")
        profile = HardwareProfile(device=device, threads=threads, batch_size=batch_size, runtime=runtime)
        profile.check_available()
        check_space_fits(the_space, model_spec)
        # everything that can be refused is, before --out is created: a model that cannot be built, too
        reading_options = dict(task=reading.task, text=reading.text(None), images=reading.images(None))
        given = load_given(model, data, weights, run_dir, **reading_options) if model is not None else None
        make_directory(run_dir, "--out")
        given = given or load_given(model, data, weights, run_dir, **reading_options)  # digits trains into --out
        if given.summary:
            console.print(f"settings: {given.summary}", highlight=False)
        options = {k: v for k, v in given.options.items() if k in ("metric", "io", "loss")}
        with console.status("analysing: timing every module, pruning each unit alone ..."):
            result = run_analyze(given.model, given.data, space=the_space, profile=profile, sparsities=levels,
                                 **options)
        paths = write_analysis(result, run_dir)
        if json_output:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            print_analysis(result, out_console)
        console.print(f"written {paths['json']} and {paths['png']}; start a search from it with "
                      f"autoprune search --analysis {paths['json']} (same --model, --space and profile)",
                      highlight=False)

    run(debug, body, interrupted="the analysis was not finished and nothing of it was written; run the same "
         "command again to start it afresh.")
