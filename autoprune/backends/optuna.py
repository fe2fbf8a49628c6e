"""The embedded backend: an Optuna study in this process. The only module that imports optuna.

* Objectives: ``[metric (maximize), latency_ms (minimize), size_mb (minimize)]``.
* Budgets are constraints, stored with Optuna 5's ``Trial.set_constraint`` (``latency_ms_over_budget``,
  ``size_mb_over_budget``), so the constraint-aware samplers (TPE, NSGA-II, GP) learn where the
  feasible region is; a trial is feasible when every value is <= 0.
* Default sampler (``"auto"``): multi-objective TPE (multivariate, grouped for the conditional
  regulariser strength). With the budgets users run (20-100 trials) NSGA-II's default population of
  50 would leave most of a search random, and GP's per-trial fitting cost grows with the trial count;
  TPE learns from its first ten trials, supports constraints, and costs milliseconds per suggestion.
  ``nsga2``, ``tpe``, ``gp`` and ``random`` can be chosen explicitly.
* Storage: any Optuna storage URL; the study keeps the space's fingerprint and the metric name, and
  a second run with a different space or objectives refuses to join (the stored study is left as is).
* Resume: ``n_trials`` is a total. Trials that completed, or failed for a reason of their own, count;
  trials interrupted by Ctrl-C (or left RUNNING by a crash) do not, so they are run again.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.errors import StudyError
from autoprune.result import TrialRecord

DIRECTIONS = ["maximize", "minimize", "minimize"]
INTERRUPTED = "interrupted"
SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")

optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in our own summary
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ``***`` (safe to print and log)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", str(url))


CONSTRAINT_KEYS = ("latency_ms_over_budget", "size_mb_over_budget")


def set_constraints(trial: optuna.Trial, values: list[float]) -> None:
    """Store the trial's constraint values (<= 0 is feasible) where Optuna's samplers read them."""
    for key, value in zip(CONSTRAINT_KEYS, values):
        trial.set_constraint(key, value)


def make_sampler(name: str, *, seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    if name in ("auto", "tpe"):
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=min(10, max(2, n_trials // 3)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed,
                                             population_size=max(4, min(50, n_trials // 4)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise StudyError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")


def open_study(*, storage: str, study_name: str, sampler: optuna.samplers.BaseSampler, fingerprint: str,
               metric_name: str, attrs: dict[str, Any] | None = None) -> optuna.Study:
    """Create the study, or load it if it exists and matches this search's objectives and space."""
    try:
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage=storage)}
    except Exception as exc:
        raise StudyError(f"cannot open storage {mask_url(storage)}: {type(exc).__name__}: "
                         f"{mask_url(str(exc)).splitlines()[0]}") from None
    if study_name in existing:
        summary = existing[study_name]
        directions = [d.name.lower() for d in summary.directions]
        if directions != DIRECTIONS:
            raise StudyError(f"study {study_name!r} in {mask_url(storage)} has objectives {directions}, not "
                             f"autoprune's {DIRECTIONS}; choose another --study-name")
        stored = summary.user_attrs.get("space_fingerprint")
        if stored != fingerprint:
            raise StudyError(f"study {study_name!r} was created with another search space (fingerprint {stored}, "
                             f"this one {fingerprint}); use the same space or another --study-name")
        if summary.user_attrs.get("metric") != metric_name:
            raise StudyError(f"study {study_name!r} optimises {summary.user_attrs.get('metric')!r}, "
                             f"not {metric_name!r}; choose another --study-name")
    study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler, directions=DIRECTIONS,
                                load_if_exists=True)
    if study_name not in existing:
        study.set_user_attr("space_fingerprint", fingerprint)
        study.set_user_attr("metric", metric_name)
        for key, value in (attrs or {}).items():
            study.set_user_attr(key, value)
    return study


def list_study_names(storage: str) -> list[str]:
    try:
        return sorted(s.study_name for s in optuna.get_all_study_summaries(storage=storage))
    except Exception as exc:
        raise StudyError(f"cannot open storage {mask_url(storage)}: {type(exc).__name__}") from None


def load_study(*, storage: str, study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(storage=storage, study_name=study_name)
    except KeyError:
        raise StudyError(f"no study named {study_name!r} in {mask_url(storage)}") from None
    except Exception as exc:
        raise StudyError(f"cannot open storage {mask_url(storage)}: {type(exc).__name__}") from None


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards the total: complete, or failed for a reason other than an interruption."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    return sum(1 for t in trials
               if t.state == TrialState.COMPLETE or t.user_attrs.get("failure_reason") != INTERRUPTED)


def enqueue_seeds(study: optuna.Study, seeds: list[dict[str, Any]]) -> None:
    """Enqueue seed parameter sets once, when the study is new."""
    if study.get_trials(deepcopy=False):
        return
    for params in seeds:
        study.enqueue_trial(params, skip_if_exists=True)


def optimize(study: optuna.Study, objective: Callable[[Any], list[float]], *, n_trials: int,
             timeout: float | None, on_trial_end: Callable[[TrialRecord], None] | None = None) -> None:
    """Run trials until ``n_trials`` count in total (see module docstring) or ``timeout`` seconds pass.

    Exceptions raised by ``objective`` mark the trial failed (with the reason stored as a user attribute)
    and the search goes on; KeyboardInterrupt marks it interrupted and propagates.
    """
    remaining = n_trials - counted_trials(study)
    if remaining <= 0:
        return

    def wrapped(trial: optuna.Trial) -> list[float]:
        try:
            return objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("failure_reason", INTERRUPTED)
            raise
        except Exception as exc:
            trial.set_user_attr("failure_reason", f"{type(exc).__name__}: {exc}")
            raise

    callbacks = [lambda s, t: on_trial_end(to_record(t))] if on_trial_end else []
    study.optimize(wrapped, n_trials=remaining, timeout=timeout, catch=(Exception,), callbacks=callbacks)


def to_record(trial: FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    metrics = attrs.get("metrics", {})
    state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.RUNNING: "running",
             TrialState.WAITING: "waiting", TrialState.PRUNED: "failed"}[trial.state]
    values = trial.values if trial.state == TrialState.COMPLETE else None
    return TrialRecord(
        number=trial.number, state=state, feasible=bool(attrs.get("feasible", False)) and state == "complete",
        metric=values[0] if values else None, latency_ms=values[1] if values else None,
        size_mb=values[2] if values else None, size_mb_sparse=metrics.get("size_mb_sparse"),
        params=metrics.get("params"), macs=metrics.get("macs"), latency_cv=metrics.get("latency_cv"),
        policy=attrs.get("policy"), failure_reason=attrs.get("failure_reason"),
        timings=dict(attrs.get("timings", {})), artifact_dir=attrs.get("artifact_dir"),
    )


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial that ran or runs (enqueued trials still WAITING are left out)."""
    return [to_record(t) for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
