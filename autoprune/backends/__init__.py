"""Search backends: where a search's trials run. One interface (:class:`Backend`), a registry of backend
objects, and the built-in ``optuna`` (in-process; many workers on one storage) and ``ray`` (Ray Tune).

This package imports no engine: Optuna and Ray load when a backend first runs, so the options below
can be built cheaply (and without Ray installed).

Example:
    >>> from autoprune.backends import RayBackend, RayOptions, get_backend
    >>> get_backend("ray", options=RayOptions(cpus_per_trial=2.0)).options.cpus_per_trial
    2.0
"""

from __future__ import annotations

from autoprune.backends.base import Backend, available_backends, get_backend, register_backend
from autoprune.backends.builtin import OptunaBackend, RayBackend, RayOptions, prepare_ray_environment

register_backend(OptunaBackend(), overwrite=True)
register_backend(RayBackend(), overwrite=True)

__all__ = ["Backend", "OptunaBackend", "RayBackend", "RayOptions", "available_backends", "get_backend",
           "prepare_ray_environment", "register_backend"]
