"""The ``autoprune`` console script: parse options, call the facades, print.

Loading models and data (:mod:`autoprune.loading`), searching (:mod:`autoprune.api`), refining
(:mod:`autoprune.refine`) and the tables and files (:mod:`autoprune.report`) live elsewhere, shared with
Python callers; this module imports them only when a command runs, so ``--help`` and usage errors
answer without loading torch.

Exit codes: 0 done, 1 unexpected error, 2 usage or bad input, 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM); after either, re-run the same command to resume. Errors print one paragraph; ``--debug`` adds the traceback.

    autoprune search --budget-ms 5              # the embedded digits default
    autoprune report --out runs/digits
    autoprune export --out runs/digits --to exported/
"""

from __future__ import annotations

import importlib.util
import pkgutil
import signal
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from autoprune import defaults
from autoprune.errors import AutopruneInputError, Terminated

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search per-layer pruning policies under latency and size budgets.")
console = Console(stderr=True, soft_wrap=True)
out_console = Console()

# Options shared by several commands: --debug by all, the rest by those that open a finished search
# (report, export, refine).
_DEBUG = typer.Option(False, help="print tracebacks.")


def _builtin_runtimes() -> str:
    """The built-in runtimes' names (the modules of autoprune.runtimes), found without importing them: the
    CLI starts without torch."""
    spec = importlib.util.find_spec("autoprune.runtimes")
    return ", ".join(sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations or [])
                            if m.name != "base"))


_RUNTIMES = _builtin_runtimes()
_RUN_DIR = typer.Option(None, help="the run directory of a search (default with --storage: runs/<study-name>).")
_STORAGE = typer.Option(None, envvar=defaults.STORAGE_ENV,
                        help="storage URL or journal file (default: the run directory's study.db); read from "
                             f"${defaults.STORAGE_ENV} when not given, which keeps a password out of ps and history.")
_STUDY_NAME = typer.Option(None, help="study name (default: the only study in the storage).")
_ARTIFACTS = typer.Option(None, help="the candidates directory, if not where the study recorded it.")
_FORMATS = typer.Option(None, "--format", help="torchscript and/or onnx (default: both when onnx is installed).")
# What search and analyze are given (the embedded digits default without them)
_MODEL = typer.Option(None, help="package.module:function returning the trained nn.Module (default: the embedded "
                                 "digits CNN).")
_WEIGHTS = typer.Option(None, help="state_dict file for --model (torch.save of model.state_dict()).")
_DATA = typer.Option(None, help="package.module:function returning a LightningDataModule or (train_loader, "
                                "val_loader).")
_MODEL_AGAIN = typer.Option(None, "--model", help="package.module:function of the base model (default: the one the "
                                                  "study recorded; code named in a shared storage runs here, so name "
                                                  "it yourself when you do not trust who writes the storage).")
_WEIGHTS_AGAIN = typer.Option(None, "--weights", help="state_dict file for --model.")
_DATA_AGAIN = typer.Option(None, "--data", help="package.module:function of the data (default: the study's record).")


FIDELITY = {"on": True, "off": False, "space": None}


def _progress_callback(progress: Progress, task: Any, metric_name: str) -> Callable:
    def update(record: Any, result: Any) -> None:
        best = result.best()
        best_text = f"{best.metric:.4f}" if best else "none yet"
        done = sum(1 for t in result.trials if t.counts)  # every worker's, as the study counts them
        rungs = [sum(1 for t in result.trials if t.complete and t.rung == r)
                 for r in range(1 + max((t.rung for t in result.trials), default=0))]
        rung_text = f"rungs {'/'.join(map(str, rungs))} " if len(rungs) > 1 else ""
        progress.update(task, completed=done, front=len(result.pareto),
                        best=f"{rung_text}best {metric_name} in budget: {best_text}")
    return update


#: exception classes (by name, as their libraries raise them) that mean the study's storage stopped answering
OUTAGES = ("OperationalError", "InterfaceError", "DisconnectionError", "StorageInternalError")


def _storage_outage(exc: BaseException | None) -> BaseException | None:
    """The deepest error in ``exc``'s chain that says the study's storage stopped answering (None: not an outage);
    Optuna's own wrapper blames "invalid data in the commit", what it wraps says what happened."""
    found, seen = None, set()
    while exc is not None and id(exc) not in seen:  # the error, and what it was raised from
        seen.add(id(exc))
        if any(c.__name__ in OUTAGES and c.__module__.split(".")[0] in ("sqlalchemy", "optuna", "psycopg2")
               for c in type(exc).__mro__):
            found = exc
        exc = exc.__cause__ or exc.__context__
    return found


def _thread_error(args: threading.ExceptHookArgs) -> None:
    what = "the study's storage stopped answering" if _storage_outage(args.exc_value) is not None else "it stopped"
    console.print(f"[bold yellow]warning:[/] background thread {args.thread.name if args.thread else '?'}: "
                  f"{type(args.exc_value).__name__} ({what}; --debug shows the traceback)", highlight=False)


def _default_name(model_spec: str) -> str:
    """The study and run-directory name of a model: ``digits`` for the embedded default, else its function's."""
    return "digits" if model_spec == defaults.DEMO else model_spec.rpartition(":")[2]


def _check_model_args(model: str | None, data: str | None, weights: str | None) -> None:
    if (model is None) != (data is None):
        raise AutopruneInputError("give both --model and --data, or neither for the embedded digits default")
    if weights and not model:
        raise AutopruneInputError("--weights needs --model")


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def _run(debug: bool, body: Callable[[], None], *,
         interrupted: str = "finished trials are kept; run the same command again to resume.") -> None:
    """Run a command body, mapping errors to the documented exit codes; SIGTERM is handled as Ctrl-C is
    (the running trial recorded interrupted, files written) and exits 143. ``interrupted`` is what an
    interrupt leaves, as the user is told."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    previous_hook = threading.excepthook
    if not debug:  # a background thread's error (a heartbeat on a storage that went away) in one line
        threading.excepthook = _thread_error
    from autoprune.backends.storage import mask_url  # no message ever shows a storage password

    try:
        body()
    except AutopruneInputError as exc:
        if debug:
            traceback.print_exc()
        console.print(f"[bold red]error:[/] {mask_url(str(exc))}", highlight=False)
        raise typer.Exit(2)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        console.print(f"{what}: {interrupted}")
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130)
    except typer.Exit:
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        outage = _storage_outage(exc)
        if outage is not None:
            first = (mask_url(str(outage)).strip().splitlines() or [""])[0][:300]
            console.print(f"[bold red]error:[/] the study's storage stopped answering ({type(outage).__name__}: {first}). "
                          "Finished trials are kept in it; when it answers again, run the same command to resume.",
                          highlight=False)
        else:
            console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {mask_url(str(exc))} (run with --debug for the "
                          "traceback)", highlight=False)
        raise typer.Exit(1)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        threading.excepthook = previous_hook


@app.command()
def search(
    model: Optional[str] = _MODEL,
    weights: Optional[str] = _WEIGHTS,
    data: Optional[str] = _DATA,
    space: str = typer.Option(defaults.SPACE, help="default, structured, unstructured, transformer, compress "
                                                   "(pruning and int8), pretrained (pretrained CNNs), or a YAML "
                                                   "file."),
    budget_ms: Optional[float] = typer.Option(None, help="latency budget in ms (under the hardware profile)."),
    budget_mb: Optional[float] = typer.Option(None, help="size budget in MB (dense checkpoint)."),
    budget_ratio: Optional[float] = typer.Option(None, help="latency budget as a share of the dense model's latency "
                                                            "(0.5: twice as fast), instead of --budget-ms."),
    trials: int = typer.Option(defaults.N_TRIALS, help="total trials in the study (a resumed study runs only the "
                                                       "missing ones)."),
    timeout: Optional[float] = typer.Option(None, help="stop starting trials after this many seconds."),
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
    runtime: str = typer.Option(defaults.RUNTIME, help=f"what runs the timed forwards: one of {_RUNTIMES} (eager: "
                                                       "PyTorch; onnxruntime: the exported ONNX model on the CPU, "
                                                       "needs autoprune[onnx])."),
    distill: bool = typer.Option(False, help="fine-tune every trial against the dense model's outputs too "
                                             "(knowledge distillation; best for pretrained models)."),
    distill_weight: float = typer.Option(defaults.DISTILL_WEIGHT, help="the distillation term's share of the fine-tuning loss."),
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
    progress: bool = typer.Option(True, help="show a progress bar."),
    debug: bool = _DEBUG,
) -> None:
    """Search pruning policies; write pareto.json, trials.csv, pareto.png and the best model to --out."""

    def body() -> None:
        import torch

        from autoprune import RayOptions
        from autoprune.analyze import Analysis
        from autoprune.api import check_arguments, check_setup, search as run_search
        from autoprune.distill import Distillation
        from autoprune.loading import build_data, build_model, check_space_fits, storage_label
        from autoprune.measure import HardwareProfile
        from autoprune.recovery import Recovery
        from autoprune.report import print_front, print_time_breakdown

        check_arguments(n_trials=trials, budget_ms=budget_ms, budget_mb=budget_mb, budget_ratio=budget_ratio,
                        timeout=timeout, study_name=study_name, heartbeat_interval=heartbeat_interval, sampler=sampler,
                        backend=backend, seed=seed, storage=storage, out_dir=out, artifacts_dir=artifacts)
        if backend != "ray" and (address or max_concurrent):
            raise AutopruneInputError("--address and --max-concurrent need --backend ray")
        _check_model_args(model, data, weights)
        if torch_threads is not None:
            if torch_threads < 1:
                raise AutopruneInputError(f"--torch-threads must be at least 1, got {torch_threads}")
            torch.set_num_threads(torch_threads)
        ray_options = RayOptions(address=address, max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
                                 gpus_per_trial=gpus_per_trial) if backend == "ray" else None
        distillation = Distillation(weight=distill_weight) if distill else None
        if recover_steps < 0:
            raise AutopruneInputError(f"--recover-steps must be 0 (none) or a positive integer, got {recover_steps}")
        recovery = Recovery(steps=recover_steps, top=recover_top) if recover_steps else None
        if fidelity not in FIDELITY:
            raise AutopruneInputError(f"--fidelity must be one of {sorted(FIDELITY)}, got {fidelity!r}")
        head_start = Analysis.load(analysis) if analysis is not None else None
        profile = HardwareProfile(device=device, threads=threads, batch_size=batch_size, interleave=interleave,
                                  runtime=runtime)
        accelerator = "gpu" if device.startswith("cuda") else "cpu"
        the_space, _ = check_setup(space=space, profile=profile, precision=precision, accelerator=accelerator,
                                   fidelity=FIDELITY[fidelity], bn=bn,
                                   reconstruct=reconstruct)  # before a model is loaded, or trained
        model_spec, data_spec = model or defaults.DEMO, data or defaults.DEMO
        check_space_fits(the_space, model_spec)
        name = study_name or _default_name(model_spec)
        run_dir = out or defaults.run_dir(name)
        base = build_model(model_spec, weights, run_dir)
        datamodule = build_data(data_spec)
        attrs = {"model": model_spec, "data": data_spec, "weights": str(Path(weights).resolve()) if weights else None,
                 "space": space}
        columns = [TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("front {task.fields[front]}"), TextColumn("{task.fields[best]}")]
        if storage:
            console.print(f"study {name!r} on {storage_label(storage)} ({backend} backend)", highlight=False)
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task("search", total=trials, front=0, best="")
            result = run_search(base, datamodule, space=space, budget_ms=budget_ms, budget_mb=budget_mb,
                                budget_ratio=budget_ratio,
                                n_trials=trials, timeout=timeout, storage=storage, study_name=name, sampler=sampler,
                                profile=profile, out_dir=run_dir, artifacts_dir=artifacts, seed=seed,
                                accelerator=accelerator, backend=backend,
                                ray=ray_options, resume=resume, heartbeat_interval=heartbeat_interval,
                                on_trial_end=_progress_callback(bar, task, "accuracy"), study_attrs=attrs,
                                distill=distillation, precision=precision, fidelity=FIDELITY[fidelity],
                                analysis=head_start, bn=bn, reconstruct=reconstruct, recover=recovery)
        print_front(result, out_console)
        print_time_breakdown(result, out_console)
        out_console.print(f"results in {run_dir}/ (pareto.json, trials.csv, pareto.png"
                          + (", best/)" if result.best() else ")"))

    _run(debug, body)


@app.command()
def analyze(
    model: Optional[str] = _MODEL,
    weights: Optional[str] = _WEIGHTS,
    data: Optional[str] = _DATA,
    space: str = typer.Option(defaults.SPACE, help="the space the search would use (its layers, units, method)."),
    sparsities: str = typer.Option("0.25,0.5,0.75", help="sparsities each unit is pruned alone at, comma-separated "
                                                         "(the seeds' 0.5 is always scanned)."),
    out: Optional[Path] = typer.Option(None, help="where analysis.json and analysis.png go (default: "
                                                  "runs/<name>, the search's run directory)."),
    json_output: bool = typer.Option(False, "--json", help="print analysis.json to stdout instead of the tables."),
    device: str = typer.Option(defaults.DEVICE, help="cpu or cuda: where latency is measured."),
    batch_size: int = typer.Option(defaults.BATCH_SIZE, help="batch size of the latency measurement."),
    threads: int = typer.Option(defaults.THREADS, help="CPU threads of the latency measurement."),
    runtime: str = typer.Option(defaults.RUNTIME, help=f"what runs the timed forwards: one of {_RUNTIMES}."),
    debug: bool = _DEBUG,
) -> None:
    """Where the model's parameters, compute and latency are, and what pruning each unit alone costs."""

    def body() -> None:
        import json

        from autoprune.analysis_report import print_analysis, write_analysis
        from autoprune.analyze import ANALYSIS_FILE, analyze as run_analyze, check_sparsities
        from autoprune.api import check_not_a_file, make_directory
        from autoprune.loading import build_data, build_model, check_space_fits
        from autoprune.measure import HardwareProfile
        from autoprune.space import load_space

        _check_model_args(model, data, weights)
        levels = check_sparsities(_sparsities(sparsities))
        the_space = load_space(space)
        model_spec, data_spec = model or defaults.DEMO, data or defaults.DEMO
        run_dir = out or defaults.run_dir(_default_name(model_spec))
        check_not_a_file(run_dir, "--out")
        if (run_dir / ANALYSIS_FILE).is_dir():
            raise AutopruneInputError(f"{run_dir / ANALYSIS_FILE} is a directory, where the analysis is written: "
                                      "remove it, or give another --out")
        profile = HardwareProfile(device=device, threads=threads, batch_size=batch_size, runtime=runtime)
        profile.check_available()
        check_space_fits(the_space, model_spec)
        # everything that can be refused is, before --out is created: a model that cannot be built, too
        base = build_model(model_spec, weights, run_dir) if model_spec != defaults.DEMO else None
        make_directory(run_dir, "--out")
        base = base or build_model(model_spec, weights, run_dir)  # the default trains once into --out
        with console.status("analysing: timing every module, pruning each unit alone ..."):
            result = run_analyze(base, build_data(data_spec), space=the_space, profile=profile, sparsities=levels)
        paths = write_analysis(result, run_dir)
        if json_output:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            print_analysis(result, out_console)
        console.print(f"written {paths['json']} and {paths['png']}; start a search from it with "
                      f"autoprune search --analysis {paths['json']} (same --model, --space and profile)",
                      highlight=False)

    _run(debug, body, interrupted="the analysis was not finished and nothing of it was written; run the same "
         "command again to start it afresh.")


def _sparsities(text: str) -> list[float]:
    """``--sparsities 0.25,0.5`` (commas or spaces) as numbers; an input error naming a bad one."""
    values = []
    for part in text.replace(",", " ").split():
        try:
            values.append(float(part))
        except ValueError:
            raise AutopruneInputError(f"--sparsities takes numbers in [0, 1) separated by commas, got {part!r}") from None
    return values


@app.command()
def report(
    out: Optional[Path] = _RUN_DIR,
    storage: Optional[str] = _STORAGE,
    study_name: Optional[str] = _STUDY_NAME,
    debug: bool = _DEBUG,
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

    _run(debug, body, interrupted="the study is unchanged; run the same command again.")


_INT8_AGREEMENT = typer.Option(defaults.INT8_MIN_AGREEMENT, "--int8-min-agreement",
                               help="a quantizing candidate's int8 model must give the fp32 model's top-1 class on "
                                    "this share of validation samples (0 for an embedder).")
_INT8_ERROR = typer.Option(defaults.INT8_MAX_ERROR, "--int8-max-error",
                           help="... and stay within this relative output error of it.")


@app.command()
def export(
    out: Optional[Path] = _RUN_DIR,
    to: Path = typer.Option(..., help="directory to write the exported model into."),
    trial: Optional[int] = typer.Option(None, help="trial number of a Pareto candidate (default: the best)."),
    fmt: list[str] = _FORMATS,
    storage: Optional[str] = _STORAGE,
    study_name: Optional[str] = _STUDY_NAME,
    artifacts: Optional[Path] = _ARTIFACTS,
    model: Optional[str] = _MODEL_AGAIN,
    weights: Optional[str] = _WEIGHTS_AGAIN,
    data: Optional[str] = _DATA_AGAIN,
    int8_min_agreement: float = _INT8_AGREEMENT,
    int8_max_error: float = _INT8_ERROR,
    debug: bool = _DEBUG,
) -> None:
    """Write a Pareto candidate as policy JSON + weights + TorchScript/ONNX, checked against the model."""

    def body() -> None:
        from autoprune.api import check_not_a_file
        from autoprune.export import check_formats, save_pruned
        from autoprune.finetune import first_inputs, resolve_data
        from autoprune.loading import build_data, open_result
        from autoprune.quantize import Int8Tolerance, deployed_model

        check_formats(fmt or ())
        tolerance = Int8Tolerance(min_agreement=int8_min_agreement, max_relative_error=int8_max_error)
        check_not_a_file(to, "--to")
        result, _, _ = open_result(out=out, storage=storage, study_name=study_name, artifacts=artifacts,
                                   with_model=True, model=model, weights=weights)
        chosen = result.best() if trial is None else result.candidates([trial])[0]
        if chosen is None:
            raise AutopruneInputError("no candidate meets the study's budgets; pass --trial")
        pruned = result.load_model(chosen)
        train, val = resolve_data(build_data(data or result.meta.data or defaults.DEMO))
        policy, example = result.policy(chosen), first_inputs(val)
        int8 = deployed_model(pruned, policy, example, train_loader=train)  # re-quantized from the fp32 weights
        files = save_pruned(pruned, policy, to, example_inputs=example, formats=fmt or None, int8=int8,
                            parity_batches=iter(val), int8_tolerance=tolerance)
        out_console.print(f"exported trial {chosen.number}: " + ", ".join(str(p) for p in files.values()))

    _run(debug, body, interrupted="nothing was exported (no half-written folder is left); run the same command "
         "again.")


@app.command(name="refine")
def refine_command(
    out: Optional[Path] = _RUN_DIR,
    steps: int = typer.Option(..., help="optimiser steps of the long fine-tune (the search's trials ran the "
                                        "space's finetune.max_steps, 60 by default)."),
    trial: Optional[list[int]] = typer.Option(None, help="a Pareto candidate to refine (repeatable; default: "
                                                         "every candidate that prunes something)."),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: each trial's own)."),
    distill: bool = typer.Option(False, help="fine-tune against the dense model's outputs too (distillation)."),
    to: Optional[Path] = typer.Option(None, help="where the refined candidates go (default: <out>/refined)."),
    fmt: list[str] = _FORMATS,
    storage: Optional[str] = _STORAGE,
    study_name: Optional[str] = _STUDY_NAME,
    artifacts: Optional[Path] = _ARTIFACTS,
    model: Optional[str] = _MODEL_AGAIN,
    weights: Optional[str] = _WEIGHTS_AGAIN,
    data: Optional[str] = _DATA_AGAIN,
    int8_min_agreement: float = _INT8_AGREEMENT,
    int8_max_error: float = _INT8_ERROR,
    debug: bool = _DEBUG,
) -> None:
    """Fine-tune Pareto candidates longer and save each as an exported model, with its new accuracy."""

    def body() -> None:
        from autoprune.loading import build_data, open_result
        from autoprune.refine import REFINED_DIR, REFINED_JSON, check_lr, check_steps, refine
        from autoprune.report import print_refined

        from autoprune.export import check_formats
        from autoprune.quantize import Int8Tolerance

        check_steps(steps)
        tolerance = Int8Tolerance(min_agreement=int8_min_agreement, max_relative_error=int8_max_error)
        check_lr(lr)
        check_formats(fmt or ())
        result, out_dir, base = open_result(out=out, storage=storage, study_name=study_name, artifacts=artifacts,
                                            with_model=True, model=model, weights=weights)
        datamodule = build_data(data or result.meta.data or defaults.DEMO)
        target = to or out_dir / REFINED_DIR
        with console.status(f"refining for {steps} steps each ..."):
            refined = refine(result, datamodule, steps=steps, trials=trial or None, lr=lr, out_dir=target,
                             formats=fmt or None, distill=distill, teacher=base if distill else None,
                             int8_tolerance=tolerance)
        print_refined(refined, result, steps, out_console)
        out_console.print(f"refined models in {target}/trial_NNNNN/, summary in {target / REFINED_JSON}")

    _run(debug, body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
