"""Multi-fidelity search: rungs of fine-tuning, and which candidates of a rung go on to the next.

A trial at fidelity rung 0 *screens* a sampled policy: it is pruned, timed and scored with no fine-tune
(BatchNorm statistics recomputed on a few training batches: adaptive BN, as EagleEye scores candidates),
which costs a fraction of a trial. The candidates that are non-dominated at a rung, within the budgets,
are *promoted*: a new trial of the study continues from the candidate's saved weights with the next
rung's share of fine-tuning steps (successive halving, asynchronous: a worker that is free promotes what
is due, or samples a new policy, and never waits). Optuna's pruners cannot do this for multi-objective
studies (``Trial.should_prune`` raises there), so autoprune keeps the rungs in the study itself: each
trial records its ``rung``, its ``parent`` (the trial it continues) and its total ``finetune_steps``.

Which candidates a rung promotes (:func:`promotable`): of the rung's ``n`` complete trials, at most
``floor(n * promote)`` are ever promoted; only feasible, non-dominated ones (on metric max, latency min,
size min), ranked by their hypervolume contribution when there are more of them than that. A point that is
dominated when it completes stays dominated, so a rung saves the weights of its non-dominated trials only.

Example:
    >>> fidelity = Fidelity(steps=(0, 20, 60), promote=0.5)
    >>> fidelity.rungs, fidelity.more_steps(2)
    (3, 40)
    >>> points = {1: (0.9, 2.0, 1.0), 2: (0.8, 1.0, 1.0), 3: (0.7, 3.0, 1.0), 4: (0.95, 4.0, 2.0)}
    >>> promotable(points, promote=1.0)  # the non-dominated ones (3 is dominated by 1), best metric first
    [4, 1, 2]
    >>> promotable(points, promote=0.5)  # two of four: the largest hypervolume contributions
    [1, 2]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from autoprune.result import dominates_point

Point = tuple[float, float, float]  # (metric max, latency_ms min, size_mb min)


@dataclass(frozen=True)
class Fidelity:
    """The rungs of a multi-fidelity search.

    Attributes:
        steps: the total fine-tune steps a candidate has had at each rung, strictly increasing; the first
            is usually 0 (screening, no fine-tune) and the last the space's full fine-tune.
        promote: the share of a rung's candidates promoted to the next (successive halving's 1/eta).
        screen_batches: training batches whose statistics BatchNorm layers are reset to at a 0-step rung.
    """

    steps: tuple[int, ...]
    promote: float = 1 / 3
    screen_batches: int = 10

    def __post_init__(self) -> None:
        if len(self.steps) < 2 or any(b <= a for a, b in zip(self.steps, self.steps[1:])) or self.steps[0] < 0:
            raise ValueError(f"fidelity steps must be at least two strictly increasing step counts >= 0, got "
                             f"{list(self.steps)}")
        if not 0 < self.promote <= 1:
            raise ValueError(f"fidelity promote must be in (0, 1], got {self.promote}")

    @property
    def rungs(self) -> int:
        return len(self.steps)

    @property
    def top(self) -> int:
        return len(self.steps) - 1

    def more_steps(self, rung: int) -> int:
        """The fine-tune steps a trial at ``rung`` runs on top of its parent's (all of them at rung 0)."""
        return self.steps[rung] - (self.steps[rung - 1] if rung else 0)

    @classmethod
    def default_for(cls, max_steps: int) -> Fidelity:
        """Three rungs for a space with ``max_steps`` fine-tune steps: screening, a third, all of them."""
        if max_steps < 2:
            raise ValueError(f"multi-fidelity needs a fine-tune of at least 2 steps, the space has {max_steps}")
        return cls(steps=(0, max(1, max_steps // 3), max_steps))


def non_dominated(points: Mapping[int, Point]) -> list[int]:
    """The keys of the points no other point dominates (metric max, latency min, size min)."""
    return [k for k, p in points.items() if not any(dominates_point(q, p) for j, q in points.items() if j != k)]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume dominated by ``points`` (to be *minimised* on every axis) and bounded by ``reference``:
    exact, by slicing along the first axis and sweeping the last two (fine for the tens of points a rung
    has)."""
    inside = sorted((tuple(p) for p in points if all(x < r for x, r in zip(p, reference))), key=lambda p: p[0])
    volume = 0.0
    for i, p in enumerate(inside):
        upper = inside[i + 1][0] if i + 1 < len(inside) else reference[0]
        if upper <= p[0]:
            continue
        volume += (upper - p[0]) * _area([q[1:] for q in inside[: i + 1]], reference[1:])
    return volume


def _area(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    area, best = 0.0, reference[1]
    for x, y in sorted(points):
        if y < best:
            area += (reference[0] - x) * (best - y)
            best = y
    return area


def contributions(points: Mapping[int, Point]) -> dict[int, float]:
    """Each point's exclusive hypervolume, the objectives scaled to [0, 1] over ``points`` and the
    reference 10% past the worst of each."""
    keys = list(points)
    minimised = [(-points[k][0], points[k][1], points[k][2]) for k in keys]
    low = [min(p[i] for p in minimised) for i in range(3)]
    span = [(max(p[i] for p in minimised) - low[i]) or 1.0 for i in range(3)]
    scaled = [tuple((p[i] - low[i]) / span[i] for i in range(3)) for p in minimised]
    reference = (1.1, 1.1, 1.1)
    whole = hypervolume(scaled, reference)
    return {k: whole - hypervolume(scaled[:i] + scaled[i + 1:], reference) for i, k in enumerate(keys)}


def promotable(points: Mapping[int, Point], *, promote: float, completed: int | None = None) -> list[int]:
    """The candidates of one rung that earn promotion, best first.

    Args:
        points: trial number -> objectives of the rung's complete, *feasible* trials.
        promote: the share of the rung promoted (at most ``floor(completed * promote)``, at least one of a
            full rung).
        completed: how many trials the rung has completed, feasible or not (default: ``len(points)``).

    Returns:
        The non-dominated numbers, by hypervolume contribution (ties: better metric first), cut to the quota.
        Some may have been promoted already: the caller skips those.
    """
    completed = len(points) if completed is None else completed
    quota = math.floor(completed * promote + 1e-9)
    if quota <= 0 or not points:
        return []
    front = {k: points[k] for k in non_dominated(points)}
    gain = contributions(front) if len(front) > quota else {k: 0.0 for k in front}
    ranked = sorted(front, key=lambda k: (-gain[k], -front[k][0], front[k][1], k))
    return ranked[:quota]
