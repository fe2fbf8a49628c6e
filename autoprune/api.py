"""``search()``: the one facade. Wires space -> objective -> backend -> result.

Example:
    >>> from autoprune import search
    >>> from autoprune.demo import DigitsDataModule, pretrained_digits_cnn
    >>> result = search(pretrained_digits_cnn(), DigitsDataModule(), n_trials=2,
    ...                 out_dir=tmp_dir, seed=0)   # doctest: +SKIP
    >>> best = result.best()                     # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import re
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from autoprune.backends import BACKENDS, RayOptions, prepare_ray_environment
from autoprune.backends import optuna as optuna_backend
from autoprune.depth import removable_blocks
from autoprune.errors import AutopruneInputError, DataError, StudyError
from autoprune.export import load_pruned, save_pruned
from autoprune.finetune import first_inputs, resolve_data
from autoprune.layers import output_layers, prunable_layers, run_model
from autoprune.measure import HardwareProfile, LatencyReference
from autoprune.methods.structured import coupled_layers
from autoprune.objective import TrialContext, dense_copy, execute_trial
from autoprune.policy import Policy
from autoprune.result import PROFILE_ATTR, REFERENCE_ATTR, SearchResult, TrialRecord
from autoprune.sensitivity import alignment_rates, layer_scan, pruning_costs, sensitivity_scales
from autoprune.space import SearchSpace, load_space

CANDIDATES_DIR = "candidates"
BEST_DIR = "best"
STUDY_DB = "study.db"


def candidate_loader(artifacts_dir: Path, base_model: nn.Module) -> Callable[[TrialRecord], nn.Module]:
    """Rebuilds a candidate from its saved weights (under ``artifacts_dir``) on a private copy of ``base_model``."""
    base = dense_copy(base_model)
    return lambda record: load_pruned(Path(artifacts_dir) / record.artifact_dir, base)


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / STUDY_DB).resolve()}"


def default_artifacts(storage: str, out_dir: Path, study_name: str) -> Path:
    """Beside the study: next to its file (journal or SQLite), else in the run directory."""
    file = optuna_backend.storage_file(storage)
    where = file.resolve().parent if file is not None else out_dir.resolve()
    return where / CANDIDATES_DIR / study_name


def _sensitivity_scales(resolved: Any, base: nn.Module, example_inputs: tuple, train_loader: Any, val_loader: Any,
                        *, metric: Any, loss: Any, profile: HardwareProfile,
                        reference: LatencyReference | None) -> dict[str, float] | None:
    """Per-unit scales for the seeded policies from a one-pass scan of what pruning each unit costs in
    metric per latency saved (None if it cannot run)."""
    sp = resolved.space.sparsity
    if sp.mode == "per_group" or len(resolved.units) < 2:
        return None
    try:
        scan = layer_scan(base, resolved.units, example_inputs, val_loader, method=resolved.space.methods[0],
                          metric=metric, loss=loss, calibration_data=itertools.islice(iter(train_loader), 2),
                          profile=profile, reference=reference)
    except Exception as exc:  # the seeds are a head start, not a requirement
        warnings.warn(f"layer sensitivity scan failed ({type(exc).__name__}: {exc}); seeding uniform policies only")
        return None
    costs = pruning_costs(scan.units, base=scan.base)
    if sp.mode == "global_scale":
        return sensitivity_scales(costs, low=sp.scale_low, high=sp.scale_high, step=sp.scale_step)
    return sensitivity_scales(costs, low=0.5, high=1.5, step=None)


_ALIGNMENT_MARGIN = 1.1


def _seed_alignment(resolved: Any, base: nn.Module, example_inputs: tuple, train_loader: Any, *, loss: Any,
                    profile: HardwareProfile, reference: LatencyReference | None) -> int | None:
    """The ``round_to`` of the seeded policies: the space's first option, unless another one's shapes run
    clearly faster in this profile's runtime (more than ``_ALIGNMENT_MARGIN`` times the MACs per ms of a
    uniform probe: closer rates are timing noise). On our 2-core VM the probes of the digits CNN and the
    ResNet ran within 10% of each other in eager PyTorch, either way round from one run to the next, and
    2.5-2.9 times faster aligned to 8 in ONNX Runtime."""
    space = resolved.space
    first = space.round_to[0]
    if len(space.round_to) < 2:
        return first
    sp = space.sparsity
    try:
        rates = alignment_rates(base, resolved.layers, example_inputs,
                                options=space.round_to, method=space.methods[0], profile=profile,
                                sparsity=min(max(0.7, sp.low), sp.high), reference=reference, loss=loss,
                                calibration_data=itertools.islice(iter(train_loader), 2))
    except Exception as exc:  # the seeds are a head start, not a requirement
        warnings.warn(f"channel alignment probe failed ({type(exc).__name__}: {exc}); seeds use the first round_to")
        return first
    best = max(rates, key=rates.__getitem__)
    return best if rates[best] > _ALIGNMENT_MARGIN * rates[first] else first


def _coupled(space: SearchSpace, base: nn.Module, example_inputs: tuple, protected: list[str]) -> list[tuple[str, ...]]:
    """Coupled layers, searched as one unit (traced only for spaces whose methods are all structured)."""
    if not space.structured_only:
        return []
    try:
        return coupled_layers(base, example_inputs, prunable_layers(base), protected=protected)
    except Exception as exc:  # a tracing failure shows again, with its reason, in the trials that prune
        warnings.warn(f"could not trace coupled layers ({type(exc).__name__}: {exc}); searching one value per layer")
        return []


def _reference_attr(reference: LatencyReference | None) -> dict[str, Any] | None:
    if reference is None:
        return None
    return {"latency_ms": reference.latency_ms, "profile": asdict(reference.profile)}


#: the profile fields that define what a latency is (the rest only change how carefully it is timed)
_LATENCY_DEFINED_BY = ("device", "threads", "batch_size", "dtype", "runtime")


def _check_same_latency(stored: Mapping[str, Any] | None, profile: HardwareProfile, study_name: str) -> None:
    """Refuse to add trials timed under another profile to a study: its front would mix two scales."""
    if not stored:
        return
    then = {"runtime": "eager", **stored}  # studies made before the runtime field timed eager PyTorch
    differ = [k for k in _LATENCY_DEFINED_BY if k in then and then[k] != getattr(profile, k)]
    if differ:
        said = ", ".join(f"{k} {then[k]!r} (now {getattr(profile, k)!r})" for k in differ)
        raise StudyError(f"study {study_name!r} measured latency with {said}; resume it with the same profile, "
                         "or start a new study: latencies of two profiles are not comparable")


def _study_reference(stored: Mapping[str, Any] | None, calibrated: LatencyReference | None, base: nn.Module,
                     example_inputs: tuple, profile: HardwareProfile) -> LatencyReference:
    """The dense model as latency reference, scaled by the study's stored timing when it was taken under
    the same profile (every worker then reports latencies on one scale), else by a fresh timing."""
    if stored and stored.get("profile") == asdict(profile):
        if calibrated is not None:
            return replace(calibrated, latency_ms=stored["latency_ms"])
        return LatencyReference.calibrate(base, example_inputs, profile, latency_ms=stored["latency_ms"])
    return calibrated or LatencyReference.calibrate(base, example_inputs, profile)


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
    artifacts_dir: str | Path | None = None,
    seed: int | None = None,
    accelerator: str = "cpu",
    backend: str = "optuna",
    ray: RayOptions | None = None,
    resume: bool = False,
    seed_policies: bool = True,
    heartbeat_interval: int = optuna_backend.HEARTBEAT_INTERVAL,
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
        n_trials: total trials of the study, over every worker (a resumed study runs only the missing ones).
        timeout: stop starting new trials after this many seconds.
        storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``) or a journal file path
            (``runs/study.log``); default ``sqlite:///<out_dir>/study.db``. Workers that pass the same
            storage and study name share one study.
        study_name: default ``"autoprune"``.
        sampler: ``auto`` (multi-objective TPE), ``tpe``, ``nsga2``, ``gp`` or ``random``.
        metric: higher is better; default top-1 accuracy; a callable ``metric(model, val_loader)``, or
            the name of a metric the LightningModule logs in ``validation_step``.
        loss: ``loss(output, target)`` for plain modules (default cross-entropy).
        profile: the :class:`~autoprune.measure.HardwareProfile` that defines latency.
        out_dir: the run directory (result files, default study); default ``runs/<study_name>``.
        artifacts_dir: where front candidates' weights go, reachable by every worker; default beside
            the study (``<dir of the storage file or out_dir>/candidates/<study_name>``). A worker that
            joins an existing study uses the directory the study was created with unless given one.
        seed: seeds the sampler and the random pruning baselines.
        backend: ``optuna`` (trials in this process) or ``ray`` (Ray Tune trials; see ``ray``).
        ray: placement options of the Ray backend (:class:`~autoprune.backends.RayOptions`).
        resume: require the study to exist already (re-running without it also resumes).
        seed_policies: start a new study with the dense model and uniform policies at 30/50/70/90%, and
            sensitivity-scaled policies at 50/70/85% (a one-pass per-layer scan), before the sampler's
            own trials (``False`` for a pure sampler, e.g. the random-search baseline).
        heartbeat_interval: seconds between a running trial's heartbeats; a trial whose worker misses
            three is failed and queued again.
        on_trial_end: called after every trial with its record and the result so far (progress bars).
        study_attrs: extra attributes stored with a new study (the CLI records how to rebuild the model).

    Returns:
        A :class:`~autoprune.result.SearchResult` of the whole study; its files are written to ``out_dir``.
    """
    if not isinstance(model, nn.Module):
        raise AutopruneInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(n_trials, int) or n_trials < 1:
        raise AutopruneInputError(f"n_trials must be a positive integer, got {n_trials!r}")
    if backend not in BACKENDS:
        raise AutopruneInputError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if not isinstance(heartbeat_interval, int) or heartbeat_interval < 1:
        raise AutopruneInputError(f"heartbeat_interval must be a positive integer, got {heartbeat_interval!r}")
    check_budget("budget_ms", budget_ms)
    check_budget("budget_mb", budget_mb)
    study_name = study_name or "autoprune"
    if not re.fullmatch(r"[\w.\-]+", study_name):
        raise AutopruneInputError(f"study_name {study_name!r} may use letters, digits, '.', '_' and '-' only")
    out = Path(out_dir) if out_dir is not None else Path("runs") / study_name
    the_space = load_space(space)
    profile = profile or HardwareProfile()
    profile.check_available()
    ray_options = ray or RayOptions()
    if backend == "ray":
        prepare_ray_environment(ray_options)
        from autoprune.backends import ray as ray_backend

        ray_backend.connect(ray_options)  # fails fast (exit 2 in the CLI) when the address does not answer

    out.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out)
    store, liveness = optuna_backend.make_storage(
        storage, heartbeat_interval=heartbeat_interval if backend == "optuna" else None)
    if resume and not optuna_backend.study_exists(store, study_name):
        raise StudyError(f"--resume: there is no study {study_name!r} in {optuna_backend.mask_url(storage)}; "
                         "start it without --resume")
    train_loader, val_loader = resolve_data(data)
    example_inputs = first_inputs(val_loader)
    base = dense_copy(model)
    run_model(base, example_inputs)
    protected = output_layers(base, example_inputs)
    resolved = the_space.resolve(base, protected=protected, coupled=_coupled(the_space, base, example_inputs, protected),
                                 blocks=removable_blocks(base, example_inputs) if the_space.drop_blocks else ())
    metric_name = _metric_name(metric)
    fallback_artifacts = default_artifacts(storage, out, study_name)
    reference = None
    if profile.interleave and not optuna_backend.study_exists(store, study_name):
        reference = LatencyReference.calibrate(base, example_inputs, profile)
    study, created = optuna_backend.open_study(
        storage=store, study_name=study_name,
        sampler=optuna_backend.make_sampler(sampler, seed=seed, n_trials=n_trials),
        fingerprint=the_space.fingerprint(), metric_name=metric_name,
        attrs={"budget_ms": budget_ms, "budget_mb": budget_mb, "n_trials": n_trials,
               "artifacts": str(Path(artifacts_dir or fallback_artifacts).resolve()),
               REFERENCE_ATTR: _reference_attr(reference), PROFILE_ATTR: asdict(profile), **(study_attrs or {})})
    _check_same_latency(study.user_attrs.get(PROFILE_ATTR), profile, study_name)
    if profile.interleave:
        reference = _study_reference(study.user_attrs.get(REFERENCE_ATTR), reference, base, example_inputs, profile)
    artifacts = Path(artifacts_dir or study.user_attrs.get("artifacts") or fallback_artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    if created and seed_policies:
        optuna_backend.enqueue_seeds(study, resolved.seed_params(
            scales=_sensitivity_scales(resolved, base, example_inputs, train_loader, val_loader, metric=metric,
                                       loss=loss, profile=profile, reference=reference),
            round_to=_seed_alignment(resolved, base, example_inputs, train_loader, loss=loss, profile=profile,
                                     reference=reference)))
    ctx = TrialContext(base_model=base, example_inputs=example_inputs, train_loader=train_loader,
                       val_loader=val_loader, profile=profile, loss=loss, metric=metric, budget_ms=budget_ms,
                       budget_mb=budget_mb, seed=seed or 0, artifacts_dir=artifacts, reference=reference,
                       accelerator="gpu" if backend == "ray" and ray_options.gpus_per_trial > 0 else accelerator)

    result = SearchResult(trials=optuna_backend.records(study), metric_name=metric_name, budget_ms=budget_ms,
                          budget_mb=budget_mb, out_dir=out, study_name=study_name, session_trials=set(),
                          model_loader=candidate_loader(artifacts, base), attrs=dict(study.user_attrs))

    def sample(trial: Any) -> tuple[Policy, Any]:
        policy, settings = resolved.sample(trial)
        trial.set_user_attr("policy", policy.to_dict())
        return policy, settings

    def front() -> list[tuple[float, float, float]]:
        return [c.objectives() for c in result.pareto]

    def objective(trial: Any) -> list[float]:
        policy, settings = sample(trial)
        report = execute_trial(ctx, policy, settings, number=trial.number, front=front())
        optuna_backend.set_constraints(trial, report.constraints)
        for key, value in report.user_attrs.items():
            trial.set_user_attr(key, value)
        return report.values

    def record_trial(record: TrialRecord) -> None:
        result.trials = optuna_backend.records(study)  # every worker's trials: the front is the study's
        result.session_trials.add(record.number)
        if on_trial_end is not None:
            on_trial_end(record, result)

    started = time.perf_counter()
    try:
        if backend == "ray":
            try:
                ray_backend.run(study, ctx, sample=sample, front=front, n_trials=n_trials, timeout=timeout,
                                options=ray_options, on_trial_end=record_trial, storage_path=out / "ray_results")
            finally:
                ray_backend.shutdown()
        else:
            optuna_backend.optimize(study, objective, n_trials=n_trials, timeout=timeout, on_trial_end=record_trial,
                                    liveness=liveness)
    finally:
        result.trials = optuna_backend.records(study)
        result.wall_seconds = time.perf_counter() - started
        result.save(out)
    best = result.best()
    if best is not None and best.artifact_dir is not None:
        save_pruned(result.load_model(best), Policy.from_dict(best.policy), out / BEST_DIR,
                    example_inputs=example_inputs, base_model=base)
    return result


def load_result(*, storage: str, study_name: str, out_dir: str | Path | None = None,
                base_model: nn.Module | None = None, artifacts_dir: str | Path | None = None) -> SearchResult:
    """Rebuild a :class:`SearchResult` of the whole study from its storage (what ``autoprune report`` shows).

    With ``base_model`` its candidates load too (see :func:`attach_candidates`).
    """
    store, _ = optuna_backend.make_storage(storage, must_exist=True)
    study = optuna_backend.load_study(storage=store, study_name=study_name)
    attrs = study.user_attrs
    if not study.trials:
        raise DataError(f"study {study_name!r} has no trials yet")
    result = SearchResult(trials=optuna_backend.records(study), metric_name=attrs.get("metric", "accuracy"),
                          budget_ms=attrs.get("budget_ms"), budget_mb=attrs.get("budget_mb"),
                          out_dir=Path(out_dir) if out_dir is not None else None, study_name=study_name,
                          attrs=dict(attrs))
    if base_model is not None:
        attach_candidates(result, base_model, storage=storage, artifacts_dir=artifacts_dir)
    return result


def attach_candidates(result: SearchResult, base_model: nn.Module, *, storage: str,
                      artifacts_dir: str | Path | None = None) -> SearchResult:
    """Let ``result.load_model`` rebuild candidates on ``base_model`` from the study's candidates directory.

    ``artifacts_dir`` overrides the directory the study was created with (a worker that mounts the
    shared directory elsewhere).
    """
    out = result.out_dir or Path("runs") / result.study_name
    artifacts = artifacts_dir or result.attrs.get("artifacts") or default_artifacts(storage, out, result.study_name)
    result.model_loader = candidate_loader(Path(artifacts), base_model)
    return result
