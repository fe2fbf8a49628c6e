"""The samplers a search may use: a name of :data:`SAMPLERS`, or any Optuna ``BaseSampler`` you built.

* ``auto`` (the default) and ``tpe``: multi-objective TPE (multivariate, grouped for the conditional
  regulariser strength), learning from its first trials (a third of the total, 2 to 10). With the
  budgets people run (20-100 trials) NSGA-II's default population of 50 would leave most of a search
  random, and GP's per-trial fitting cost grows with the trial count; TPE supports constraints and
  costs milliseconds per suggestion.
* ``nsga2`` (population a quarter of the trials, 4 to 50), ``gp``, ``random``.

Every built-in sampler reads the budgets as constraints (``Trial.set_constraint``). A sampler object
passed in is used as it is: its seed is its own, and constraints reach it only if it reads them.

Example:
    >>> import optuna
    >>> type(make_sampler("auto", seed=0, n_trials=20)).__name__
    'TPESampler'
    >>> mine = optuna.samplers.QMCSampler(seed=1)
    >>> make_sampler(mine, seed=0, n_trials=20) is mine
    True
"""

from __future__ import annotations

from typing import Callable

import optuna

from autoprune.errors import StudyError


def _tpe(seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=min(10, max(2, n_trials // 3)))


def _nsga2(seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 4)))


#: sampler name -> ``factory(seed, n_trials)``
SAMPLERS: dict[str, Callable[[int | None, int], optuna.samplers.BaseSampler]] = {
    "auto": _tpe,
    "tpe": _tpe,
    "nsga2": _nsga2,
    "gp": lambda seed, n_trials: optuna.samplers.GPSampler(seed=seed),
    "random": lambda seed, n_trials: optuna.samplers.RandomSampler(seed=seed),
}


def check_sampler(sampler: str | optuna.samplers.BaseSampler) -> None:
    """Refuse a sampler that is neither a known name nor an Optuna sampler object."""
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise StudyError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)} or pass an "
                         "optuna.samplers.BaseSampler")


def make_sampler(sampler: str | optuna.samplers.BaseSampler, *, seed: int | None,
                 n_trials: int) -> optuna.samplers.BaseSampler:
    """The sampler ``sampler`` names, seeded and sized for ``n_trials``; a sampler object as it is."""
    check_sampler(sampler)
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    return SAMPLERS[sampler](seed, n_trials)
