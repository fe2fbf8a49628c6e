"""Search backends: ``optuna`` (embedded, in-process or many workers on one storage) and ``ray`` (Ray Tune).

Each backend module is the only one that imports its engine; this package file imports neither, so
the options below can be built without Ray installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from autoprune.errors import AutopruneInputError

BACKENDS = ("optuna", "ray")


@dataclass(frozen=True)
class RayOptions:
    """How the Ray backend places trials.

    Attributes:
        address: ``None`` starts a local Ray instance; ``"auto"`` joins the cluster this machine belongs
            to (``ray start``); ``"HOST:PORT"`` joins that head node's GCS.
        max_concurrent: at most this many trials at once (default: as many as the resources allow).
        cpus_per_trial: CPUs reserved per trial; torch in the trial uses this many threads.
        gpus_per_trial: GPUs per trial (fractions share a GPU); trials fine-tune on CUDA when > 0.

    Example:
        >>> RayOptions(address="auto", max_concurrent=4, cpus_per_trial=1.0).max_concurrent
        4
    """

    address: str | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def __post_init__(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise AutopruneInputError(f"max_concurrent must be at least 1, got {self.max_concurrent}")
        if not self.cpus_per_trial > 0:
            raise AutopruneInputError(f"cpus_per_trial must be positive, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise AutopruneInputError(f"gpus_per_trial must be 0 or more, got {self.gpus_per_trial}")


def prepare_ray_environment(options: RayOptions) -> None:
    """Environment Ray reads when it is imported, so call this before the first ``import ray``.

    * No usage statistics (machines without internet), the plain Tune output.
    * ``ray start`` (Ray >= 2.59) turns on token authentication and writes the token to
      ``~/.ray/auth_token``; a driver joining that cluster must be in token mode to send it. Set
      ``RAY_AUTH_MODE`` yourself to override this (``disabled`` for a cluster without authentication).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") \
        or (Path.home() / ".ray" / "auth_token").is_file()
    if options.address and token:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
