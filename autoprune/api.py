"""``search()``: the one facade. Wires space -> objective -> backend -> result.

Example:
    >>> from autoprune import search
    >>> from autoprune.demo import DigitsDataModule, pretrained_digits_cnn
    >>> result = search(pretrained_digits_cnn(), DigitsDataModule(), n_trials=2,
    ...                 out_dir=tmp_dir, seed=0)   # doctest: +SKIP
    >>> best = result.best()                     # doctest: +SKIP
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from autoprune.backends import optuna as optuna_backend
from autoprune.errors import AutopruneInputError, DataError
from autoprune.export import load_pruned, save_pruned
from autoprune.finetune import first_inputs, resolve_data
from autoprune.layers import output_layers, run_model
from autoprune.measure import HardwareProfile
from autoprune.objective import TrialContext, dense_copy, run_trial
from autoprune.policy import Policy
from autoprune.result import SearchResult, TrialRecord, dominates
from autoprune.space import SearchSpace, load_space

CANDIDATES_DIR = "candidates"
BEST_DIR = "best"
STUDY_DB = "study.db"


def candidate_loader(out_dir: Path, base_model: nn.Module) -> Callable[[TrialRecord], nn.Module]:
    """Rebuilds a candidate from its saved weights on a private copy of ``base_model``."""
    base = dense_copy(base_model)
    return lambda record: load_pruned(Path(out_dir) / record.artifact_dir, base)


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / STUDY_DB).resolve()}"


def _metric_name(metric: Any) -> str:
    if metric is None:
        return "accuracy"
    if isinstance(metric, str):
        return metric
    return getattr(metric, "__name__", "metric")


def check_budget(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise AutopruneInputError(f"{name} must be a positive number, got {value!r}")


def search(
    model: nn.Module,
    data: Any,
    *,
    space: str | Path | SearchSpace = "default",
    budget_ms: float | None = None,
    budget_mb: float | None = None,
    n_trials: int = 30,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: str = "auto",
    metric: Callable[[nn.Module, Any], float] | str | None = None,
    loss: Callable[[Any, Any], Any] | None = None,
    profile: HardwareProfile | None = None,
    out_dir: str | Path | None = None,
    seed: int | None = None,
    accelerator: str = "cpu",
    on_trial_end: Callable[[TrialRecord, SearchResult], None] | None = None,
    study_attrs: Mapping[str, Any] | None = None,
) -> SearchResult:
    """Search pruning policies for ``model``; return the Pareto front of metric vs latency and size.

    Args:
        model: a trained ``nn.Module`` (fine-tuned with cross-entropy or ``loss``), or a
            ``LightningModule`` (its own ``training_step``/``configure_optimizers`` fine-tune it).
        data: a ``LightningDataModule`` or a ``(train_loader, val_loader)`` pair of ``(x, y)`` batches.
        space: a built-in space name (``default``, ``structured``, ``unstructured``) or a YAML path.
        budget_ms, budget_mb: hard budgets on latency (under ``profile``) and dense checkpoint size.
        n_trials: total trials of the study (a resumed study runs only the missing ones).
        timeout: stop starting new trials after this many seconds.
        storage: an Optuna storage URL; default ``sqlite:///<out_dir>/study.db``.
        study_name: default ``"autoprune"``.
        sampler: ``auto`` (multi-objective TPE), ``tpe``, ``nsga2``, ``gp`` or ``random``.
        metric: higher is better; default top-1 accuracy; a callable ``metric(model, val_loader)``, or
            the name of a metric the LightningModule logs in ``validation_step``.
        loss: ``loss(output, target)`` for plain modules (default cross-entropy).
        profile: the :class:`~autoprune.measure.HardwareProfile` that defines latency.
        out_dir: the run directory (study, candidates, result files); default ``runs/<study_name>``.
        seed: seeds the sampler and the random pruning baselines.
        on_trial_end: called after every trial with its record and the result so far (progress bars).
        study_attrs: extra attributes stored with a new study (the CLI records how to rebuild the model).

    Returns:
        A :class:`~autoprune.result.SearchResult`; its files are already written to ``out_dir``.
    """
    if not isinstance(model, nn.Module):
        raise AutopruneInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(n_trials, int) or n_trials < 1:
        raise AutopruneInputError(f"n_trials must be a positive integer, got {n_trials!r}")
    check_budget("budget_ms", budget_ms)
    check_budget("budget_mb", budget_mb)
    study_name = study_name or "autoprune"
    if not re.fullmatch(r"[\w.\-]+", study_name):
        raise AutopruneInputError(f"study_name {study_name!r} may use letters, digits, '.', '_' and '-' only")
    out = Path(out_dir) if out_dir is not None else Path("runs") / study_name
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out)
    the_space = load_space(space)
    profile = profile or HardwareProfile()
    profile.check_available()

    train_loader, val_loader = resolve_data(data)
    example_inputs = first_inputs(val_loader)
    base = dense_copy(model)
    run_model(base, example_inputs)
    resolved = the_space.resolve(base, protected=output_layers(base, example_inputs))
    ctx = TrialContext(base_model=base, example_inputs=example_inputs, train_loader=train_loader,
                       val_loader=val_loader, profile=profile, loss=loss, metric=metric, budget_ms=budget_ms,
                       budget_mb=budget_mb, accelerator=accelerator, seed=seed or 0)
    metric_name = _metric_name(metric)
    study = optuna_backend.open_study(
        storage=storage, study_name=study_name,
        sampler=optuna_backend.make_sampler(sampler, seed=seed, n_trials=n_trials),
        fingerprint=the_space.fingerprint(), metric_name=metric_name,
        attrs={"budget_ms": budget_ms, "budget_mb": budget_mb, "n_trials": n_trials, **(study_attrs or {})})
    optuna_backend.enqueue_seeds(study, resolved.seed_params())

    result = SearchResult(trials=optuna_backend.records(study), metric_name=metric_name, budget_ms=budget_ms,
                          budget_mb=budget_mb, out_dir=out, study_name=study_name, session_trials=set(),
                          model_loader=candidate_loader(out, base))

    def objective(trial: Any) -> list[float]:
        started = time.perf_counter()
        policy, settings = resolved.sample(trial)
        trial.set_user_attr("policy", policy.to_dict())
        outcome = run_trial(ctx, policy, settings)
        optuna_backend.set_constraints(trial, outcome.constraints)
        trial.set_user_attr("feasible", outcome.feasible)
        trial.set_user_attr("metrics", {k: v for k, v in outcome.metrics.to_dict().items() if k != "profile"})
        new = TrialRecord(number=trial.number, state="complete", feasible=outcome.feasible, metric=outcome.metric,
                          latency_ms=outcome.metrics.latency_ms, size_mb=outcome.metrics.size_mb)
        if outcome.feasible and not any(dominates(r, new) for r in result.pareto):
            export_started = time.perf_counter()
            relative = f"{CANDIDATES_DIR}/trial_{trial.number:05d}"
            save_pruned(outcome.model, policy, out / relative, example_inputs=example_inputs, base_model=base,
                        formats=("torchscript",))
            trial.set_user_attr("artifact_dir", relative)
            outcome.timings["export"] = time.perf_counter() - export_started
        outcome.timings["trial"] = time.perf_counter() - started
        trial.set_user_attr("timings", outcome.timings)
        return outcome.values

    def record_trial(record: TrialRecord) -> None:
        result.trials = [t for t in result.trials if t.number != record.number] + [record]
        result.session_trials.add(record.number)
        if on_trial_end is not None:
            on_trial_end(record, result)

    started = time.perf_counter()
    try:
        optuna_backend.optimize(study, objective, n_trials=n_trials, timeout=timeout, on_trial_end=record_trial)
    finally:
        result.trials = optuna_backend.records(study)
        result.wall_seconds = time.perf_counter() - started
        result.save(out)
    best = result.best()
    if best is not None:
        save_pruned(result.load_model(best), Policy.from_dict(best.policy), out / BEST_DIR,
                    example_inputs=example_inputs, base_model=base)
    return result


def load_result(*, storage: str, study_name: str, out_dir: str | Path | None = None,
                base_model: nn.Module | None = None) -> SearchResult:
    """Rebuild a :class:`SearchResult` from a stored study (what ``autoprune report`` shows)."""
    study = optuna_backend.load_study(storage=storage, study_name=study_name)
    attrs = study.user_attrs
    out = Path(out_dir) if out_dir is not None else None
    loader = candidate_loader(out, base_model) if base_model is not None and out is not None else None
    if not study.trials:
        raise DataError(f"study {study_name!r} has no trials yet")
    return SearchResult(trials=optuna_backend.records(study), metric_name=attrs.get("metric", "accuracy"),
                        budget_ms=attrs.get("budget_ms"), budget_mb=attrs.get("budget_mb"), out_dir=out,
                        study_name=study_name, model_loader=loader, attrs=dict(attrs))
