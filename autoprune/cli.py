"""The ``autoprune`` console script: thin; parse, call the API, print.

Exit codes: 0 done, 1 unexpected error, 2 usage or bad input, 130 interrupted (Ctrl-C; re-run the same
command to resume). Errors print one paragraph; ``--debug`` adds the traceback.

    autoprune search --budget-ms 5              # the embedded digits default
    autoprune report --out runs/digits
    autoprune export --out runs/digits --to exported/
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autoprune.errors import AutopruneInputError, ModelLoadError, StudyError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search per-layer pruning policies under latency and size budgets.")
console = Console(stderr=True, soft_wrap=True)
out_console = Console()

DEMO = "embedded:digits"

# Options shared by several commands: --debug by all, the rest by those that open a finished search
# (report, export, refine).
_DEBUG = typer.Option(False, help="print tracebacks.")
_RUN_DIR = typer.Option(None, help="the run directory of a search (default with --storage: runs/<study-name>).")
_STORAGE = typer.Option(None, help="storage URL or journal file (default: the run directory's study.db).")
_STUDY_NAME = typer.Option(None, help="study name (default: the only study in the storage).")
_ARTIFACTS = typer.Option(None, help="the candidates directory, if not where the study recorded it.")
_FORMATS = typer.Option(None, "--format", help="torchscript and/or onnx (default: both when onnx is installed).")


def _import_object(spec: str, what: str) -> Any:
    """Import ``package.module:attribute``; ModelLoadError with what was wrong otherwise."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"--{what} must look like package.module:function, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ModelLoadError(f"--{what} {spec!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    finally:
        sys.path.pop(0)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelLoadError(f"--{what} {spec!r}: module {module_name!r} has no attribute {attr!r}") from None


def build_model(spec: str, weights: str | None, run_dir: Path) -> Any:
    """The base model named by ``spec`` (or the embedded default), with ``weights`` loaded."""
    import torch
    from torch import nn

    if spec == DEMO:
        from autoprune.demo import pretrained_digits_cnn

        return pretrained_digits_cnn(run_dir)
    factory = _import_object(spec, "model")
    try:
        model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    except Exception as exc:
        raise ModelLoadError(f"--model {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ModelLoadError(f"--weights {weights}: no such file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelLoadError(f"--weights {weights} is not a weights file torch.load(weights_only=True) "
                                 f"can read: {type(exc).__name__}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # a Lightning checkpoint
        problem = _state_dict_mismatch(model, state)
        if problem:
            raise ModelLoadError(f"--weights {weights} does not fit --model {spec}: {problem}")
        model.load_state_dict(state)
    return model


def _state_dict_mismatch(model: Any, state: Any) -> str:
    """Why ``state`` cannot load into ``model`` (empty when it can): missing, unexpected, mis-shaped keys."""
    if not isinstance(state, dict):
        return f"the file holds a {type(state).__name__}, not a state_dict"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    parts = [f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}"
             for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes differ:", shapes))
             if items]
    return "; ".join(parts)


def build_data(spec: str, batch_size: int) -> Any:
    if spec == DEMO:
        from autoprune.demo import DigitsDataModule

        return DigitsDataModule(batch_size=batch_size)
    factory = _import_object(spec, "data")
    try:
        data = factory() if callable(factory) else factory
    except Exception as exc:
        raise ModelLoadError(f"--data {spec!r} raised {type(exc).__name__}: {exc}") from None
    return data


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def policy_label(policy: dict | None) -> str:
    """What a candidate's policy does, for the front's table: its methods and how many blocks it drops."""
    policy = policy or {}
    parts = sorted({lp["method"] for lp in policy.get("layers", {}).values() if lp["sparsity"] > 0})
    parts += [f"{len(policy['drop'])} block(s) dropped"] if policy.get("drop") else []
    return ",".join(parts) or "dense"


def print_front(result: Any) -> None:
    front = result.pareto
    best = result.best()
    table = Table(title=f"Pareto front ({len(front)} of {len(result.trials)} trials)")
    for column in ("trial", result.metric_name, "latency ms", "size MB", "sparse MB", "params", "MMACs", "method"):
        table.add_column(column, justify="right")
    for c in front:
        mark = " *" if best is not None and c.number == best.number else ""
        table.add_row(f"{c.number}{mark}", _fmt(c.metric, 4), _fmt(c.latency_ms), _fmt(c.size_mb),
                      _fmt(c.size_mb_sparse), str(c.params), _fmt((c.macs or 0) / 1e6, 2), policy_label(c.policy))
    out_console.print(table)
    budget = ", ".join(f"{k} {v:g}" for k, v in (("latency ms <=", result.budget_ms), ("size MB <=", result.budget_mb))
                       if v is not None) or "none"
    if best is not None:
        out_console.print(f"best within budget ({budget}): trial {best.number} (*), {result.metric_name} "
                          f"{best.metric:.4f}, {best.latency_ms:.3f} ms, {best.size_mb:.3f} MB")
    else:
        out_console.print(f"[bold red]no candidate meets the budget ({budget}).[/] Closest trials:")
        for r in result.closest():
            out_console.print(f"  trial {r.number}: {result.metric_name} {_fmt(r.metric, 4)}, "
                              f"{_fmt(r.latency_ms)} ms, {_fmt(r.size_mb)} MB")
    failed = [t for t in result.trials if t.state == "failed"]
    for t in failed[:5]:
        out_console.print(f"  trial {t.number} failed: {t.failure_reason}")


def print_time_breakdown(result: Any) -> None:
    breakdown = result.time_breakdown()
    total = result.wall_seconds or sum(breakdown.values())
    if total <= 0:
        return
    parts = ", ".join(f"{k} {v:.1f}s ({v / total:.0%})" for k, v in breakdown.items())
    out_console.print(f"time: {total:.1f}s in all: {parts}")


def _progress_callback(progress: Progress, task: Any, metric_name: str) -> Callable:
    def update(record: Any, result: Any) -> None:
        best = result.best()
        best_text = f"{best.metric:.4f}" if best else "none yet"
        done = sum(1 for t in result.trials if t.state in ("complete", "failed")
                   and t.failure_reason != "interrupted")  # every worker's trials
        progress.update(task, completed=done, front=len(result.pareto),
                        best=f"best {metric_name} in budget: {best_text}")
    return update


def _run(debug: bool, body: Callable[[], None]) -> None:
    """Run a command body, mapping errors to the documented exit codes."""
    try:
        body()
    except AutopruneInputError as exc:
        if debug:
            traceback.print_exc()
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: finished trials are kept; run the same command again to resume.")
        raise typer.Exit(130)
    except typer.Exit:
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                      highlight=False)
        raise typer.Exit(1)


@app.command()
def search(
    model: Optional[str] = typer.Option(None, help="package.module:function returning the trained nn.Module "
                                                   "(default: the embedded digits CNN)."),
    weights: Optional[str] = typer.Option(None, help="state_dict file for --model (torch.save of model.state_dict())."),
    data: Optional[str] = typer.Option(None, help="package.module:function returning a LightningDataModule "
                                                  "or (train_loader, val_loader)."),
    space: str = typer.Option("default", help="default, structured, unstructured, or a YAML file."),
    budget_ms: Optional[float] = typer.Option(None, help="latency budget in ms (under the hardware profile)."),
    budget_mb: Optional[float] = typer.Option(None, help="size budget in MB (dense checkpoint)."),
    trials: int = typer.Option(20, help="total trials in the study (a resumed study runs only the missing ones)."),
    timeout: Optional[float] = typer.Option(None, help="stop starting trials after this many seconds."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage: a URL (sqlite:///..., postgresql://...) or a "
                                                     "journal file path; workers on the same storage and study "
                                                     "name share one study (default: sqlite in the run directory)."),
    study_name: Optional[str] = typer.Option(None, help="study name (default: digits, or the model function's name)."),
    out: Optional[Path] = typer.Option(None, help="run directory (default: runs/<study-name>)."),
    artifacts: Optional[Path] = typer.Option(None, help="directory for front candidates' weights that every worker "
                                                        "can reach (default: beside the study)."),
    resume: bool = typer.Option(False, help="continue an existing study (fails if there is none); re-running "
                                            "the same command without it resumes too."),
    seed: Optional[int] = typer.Option(None, help="seed for the sampler and random baselines."),
    sampler: str = typer.Option("auto", help="auto (multi-objective TPE), tpe, nsga2, gp or random."),
    backend: str = typer.Option("optuna", help="optuna (trials in this process) or ray (Ray Tune trials)."),
    address: Optional[str] = typer.Option(None, help="ray backend: auto or HOST:PORT of a running cluster "
                                                     "(default: start a local Ray instance)."),
    max_concurrent: Optional[int] = typer.Option(None, help="ray backend: at most this many trials at once."),
    cpus_per_trial: float = typer.Option(1.0, help="ray backend: CPUs (and torch threads) per trial."),
    gpus_per_trial: float = typer.Option(0.0, help="ray backend: GPUs per trial (fractions share a GPU)."),
    torch_threads: Optional[int] = typer.Option(None, help="torch threads for this worker's fine-tuning (set it "
                                                           "so that workers sharing a machine do not fight)."),
    heartbeat_interval: int = typer.Option(10, help="seconds between heartbeats of a running trial; a worker "
                                                    "silent for 3 intervals is presumed dead and its trial re-queued."),
    device: str = typer.Option("cpu", help="cpu or cuda: where latency is measured and trials fine-tune."),
    batch_size: int = typer.Option(64, help="batch size of the latency measurement (1 for single-sample latency)."),
    threads: int = typer.Option(1, help="CPU threads of the latency measurement."),
    interleave: bool = typer.Option(True, help="time each candidate in alternation with the dense model, so a "
                                               "shared machine's drift cancels (--no-interleave: alone, faster)."),
    runtime: str = typer.Option("eager", help="what runs the timed forwards: eager (PyTorch) or onnxruntime (the "
                                              "exported ONNX model in ONNX Runtime on the CPU; needs autoprune[onnx])."),
    progress: bool = typer.Option(True, help="show a progress bar."),
    debug: bool = _DEBUG,
) -> None:
    """Search pruning policies; write pareto.json, trials.csv, pareto.png and the best model to --out."""

    def body() -> None:
        import torch

        from autoprune.api import check_budget, search as run_search
        from autoprune.backends import BACKENDS, RayOptions
        from autoprune.backends.optuna import mask_url
        from autoprune.measure import HardwareProfile
        from autoprune.space import load_space

        if backend not in BACKENDS:
            raise AutopruneInputError(f"--backend must be one of {list(BACKENDS)}, got {backend!r}")
        if backend != "ray" and (address or max_concurrent):
            raise AutopruneInputError("--address and --max-concurrent need --backend ray")
        if torch_threads is not None:
            if torch_threads < 1:
                raise AutopruneInputError(f"--torch-threads must be at least 1, got {torch_threads}")
            torch.set_num_threads(torch_threads)
        ray_options = RayOptions(address=address, max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
                                 gpus_per_trial=gpus_per_trial)
        if (model is None) != (data is None):
            raise AutopruneInputError("give both --model and --data, or neither for the embedded digits default")
        if weights and not model:
            raise AutopruneInputError("--weights needs --model")
        check_budget("--budget-ms", budget_ms)
        check_budget("--budget-mb", budget_mb)
        the_space = load_space(space)
        model_spec, data_spec = model or DEMO, data or DEMO
        name = study_name or ("digits" if model_spec == DEMO else model_spec.rpartition(":")[2])
        run_dir = out or Path("runs") / name
        profile = HardwareProfile(device=device, threads=threads, batch_size=batch_size, interleave=interleave,
                                  runtime=runtime)
        base = build_model(model_spec, weights, run_dir)
        datamodule = build_data(data_spec, batch_size=64)
        attrs = {"model": model_spec, "data": data_spec, "weights": str(Path(weights).resolve()) if weights else None, "space": space}
        columns = [TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("front {task.fields[front]}"), TextColumn("{task.fields[best]}")]
        if storage:
            console.print(f"study {name!r} on {mask_url(storage)} ({backend} backend)", highlight=False)
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task("search", total=trials, front=0, best="")
            result = run_search(base, datamodule, space=the_space, budget_ms=budget_ms, budget_mb=budget_mb,
                                n_trials=trials, timeout=timeout, storage=storage, study_name=name, sampler=sampler,
                                profile=profile, out_dir=run_dir, artifacts_dir=artifacts, seed=seed,
                                accelerator="gpu" if device.startswith("cuda") else "cpu", backend=backend,
                                ray=ray_options, resume=resume, heartbeat_interval=heartbeat_interval,
                                on_trial_end=_progress_callback(bar, task, "accuracy"), study_attrs=attrs)
        print_front(result)
        print_time_breakdown(result)
        out_console.print(f"results in {run_dir}/ (pareto.json, trials.csv, pareto.png"
                          + (", best/)" if result.best() else ")"))

    _run(debug, body)


def _open_result(out: Path | None, storage: str | None, study_name: str | None, artifacts: Path | None,
                 with_model: bool = False) -> tuple[Any, Path]:
    """The study's result and the run directory to write into (default runs/<study-name> with --storage)."""
    from autoprune.api import attach_candidates, default_storage, load_result
    from autoprune.backends.optuna import list_study_names, make_storage

    if out is None and storage is None:
        raise AutopruneInputError("give --out (a search's run directory) or --storage")
    if storage is None and not (out / "study.db").is_file():
        raise StudyError(f"{out} holds no study.db: give the run directory of a search, or --storage")
    url = storage or default_storage(out)
    if study_name is None:
        names = list_study_names(make_storage(url, must_exist=True)[0])
        if len(names) != 1:
            raise StudyError(f"the storage holds studies {names}: choose one with --study-name")
        study_name = names[0]
    out = out or Path("runs") / study_name
    result = load_result(storage=url, study_name=study_name, out_dir=out)
    if with_model:
        base = build_model(result.attrs.get("model", DEMO), result.attrs.get("weights"), out)
        attach_candidates(result, base, storage=url, artifacts_dir=artifacts)
    return result, out


@app.command()
def report(
    out: Optional[Path] = _RUN_DIR,
    storage: Optional[str] = _STORAGE,
    study_name: Optional[str] = _STUDY_NAME,
    debug: bool = _DEBUG,
) -> None:
    """Print the Pareto front of a stored study (every worker's trials) and write pareto.json, trials.csv, pareto.png."""

    def body() -> None:
        result, out_dir = _open_result(out, storage, study_name, None)
        states = [t.state for t in result.trials]
        out_console.print(f"study {result.study_name}: {states.count('complete')} complete, "
                          f"{states.count('failed')} failed, {states.count('running')} running"
                          + (f" of {result.attrs['n_trials']}" if result.attrs.get("n_trials") else ""))
        print_front(result)
        result.save(out_dir)
        out_console.print(f"written {out_dir}/pareto.json, trials.csv, pareto.png")

    _run(debug, body)


@app.command()
def export(
    out: Optional[Path] = _RUN_DIR,
    to: Path = typer.Option(..., help="directory to write the exported model into."),
    trial: Optional[int] = typer.Option(None, help="trial number of a Pareto candidate (default: the best)."),
    fmt: list[str] = _FORMATS,
    storage: Optional[str] = _STORAGE,
    study_name: Optional[str] = _STUDY_NAME,
    artifacts: Optional[Path] = _ARTIFACTS,
    debug: bool = _DEBUG,
) -> None:
    """Write a Pareto candidate as policy JSON + weights + TorchScript/ONNX, checked against the model."""

    def body() -> None:
        from autoprune.export import save_pruned
        from autoprune.finetune import first_inputs, resolve_data

        result, _ = _open_result(out, storage, study_name, artifacts, with_model=True)
        chosen = result.best() if trial is None else result.candidates([trial])[0]
        if chosen is None:
            raise AutopruneInputError("no candidate meets the study's budgets; pass --trial")
        model = result.load_model(chosen)
        _, val = resolve_data(build_data(result.attrs.get("data", DEMO), 64))
        files = save_pruned(model, result.policy(chosen), to, example_inputs=first_inputs(val), formats=fmt or None)
        out_console.print(f"exported trial {chosen.number}: " + ", ".join(str(p) for p in files.values()))

    _run(debug, body)


@app.command(name="refine")
def refine_command(
    out: Optional[Path] = _RUN_DIR,
    steps: int = typer.Option(..., help="optimiser steps of the long fine-tune (the search's trials ran the "
                                        "space's finetune.max_steps, 60 by default)."),
    trial: Optional[list[int]] = typer.Option(None, help="a Pareto candidate to refine (repeatable; default: "
                                                         "every candidate that prunes something)."),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: each trial's own)."),
    to: Optional[Path] = typer.Option(None, help="where the refined candidates go (default: <out>/refined)."),
    fmt: list[str] = _FORMATS,
    storage: Optional[str] = _STORAGE,
    study_name: Optional[str] = _STUDY_NAME,
    artifacts: Optional[Path] = _ARTIFACTS,
    debug: bool = _DEBUG,
) -> None:
    """Fine-tune Pareto candidates longer and save each as an exported model, with its new accuracy."""

    def body() -> None:
        from autoprune.refine import REFINED_DIR, REFINED_JSON, check_lr, check_steps, refine

        check_steps(steps)
        check_lr(lr)
        result, out_dir = _open_result(out, storage, study_name, artifacts, with_model=True)
        data = build_data(result.attrs.get("data", DEMO), 64)
        target = to or out_dir / REFINED_DIR
        with console.status(f"refining for {steps} steps each ..."):
            refined = refine(result, data, steps=steps, trials=trial or None, lr=lr, out_dir=target,
                             formats=fmt or None)
        table = Table(title=f"refined: {steps} more steps each")
        for column in ("trial", f"{result.metric_name} before", "after", "latency ms", "size MB", "lr", "seconds"):
            table.add_column(column, justify="right")
        for r in refined:
            table.add_row(str(r.number), _fmt(r.metric_before, 4), _fmt(r.metric, 4), _fmt(r.latency_ms),
                          _fmt(r.size_mb), f"{r.lr:.2e}", f"{r.seconds:.1f}")
        out_console.print(table)
        out_console.print(f"refined models in {target}/trial_NNNNN/, summary in {target / REFINED_JSON}")

    _run(debug, body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
