"""Search results: trial records, the Pareto front, and their files (pareto.json, trials.csv, pareto.png).

Plain data, no optuna: the backends convert their trials into :class:`TrialRecord` objects.
The front is computed over *feasible, complete* trials on (metric max, latency_ms min, size_mb min).

Example:
    >>> r = SearchResult(trials=[], metric_name="accuracy")
    >>> r.pareto, r.best()
    ([], None)
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from torch import nn

from autoprune.errors import AutopruneInputError
from autoprune.policy import Policy

PARETO_JSON, TRIALS_CSV, PARETO_PNG = "pareto.json", "trials.csv", "pareto.png"


#: study attribute: the dense model's latency that candidates are timed against, and its profile
REFERENCE_ATTR = "latency_reference"
#: study attribute: the HardwareProfile (as a dict) the study's latencies were measured under
PROFILE_ATTR = "profile"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: state is ``complete``, ``failed``, ``running`` or ``waiting``."""

    number: int
    state: str
    feasible: bool = False
    metric: float | None = None
    latency_ms: float | None = None
    size_mb: float | None = None
    size_mb_sparse: float | None = None
    params: int | None = None
    macs: int | None = None
    latency_cv: float | None = None
    policy: dict[str, Any] | None = None
    failure_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    artifact_dir: str | None = None
    #: the fine-tuning learning rate the trial sampled (None in studies made before it was recorded)
    lr: float | None = None

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def objectives(self) -> tuple[float, float, float]:
        return (self.metric, self.latency_ms, self.size_mb)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Candidate = TrialRecord  # a Pareto candidate is a feasible, complete trial record


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that replaces it atomically on success."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def dominates_point(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """For (metric max, latency min, size min) points: ``a`` is no worse everywhere and better somewhere."""
    (ma, la, sa), (mb, lb, sb) = a, b
    at_least = ma >= mb and la <= lb and sa <= sb
    return at_least and (ma > mb or la < lb or sa < sb)


def dominates(a: TrialRecord, b: TrialRecord) -> bool:
    """True if ``a`` is at least as good as ``b`` on every objective and better on one."""
    return dominates_point(a.objectives(), b.objectives())


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """Non-dominated feasible complete records, sorted by latency."""
    pool = [r for r in records if r.complete and r.feasible]
    front = [r for r in pool if not any(dominates(o, r) for o in pool if o is not r)]
    return sorted(front, key=lambda r: (r.latency_ms, -r.metric))


@dataclass
class SearchResult:
    """What a search returns; also rebuilt from storage by ``autoprune report``.

    Attributes:
        trials: every trial, with state, feasibility and failure reason.
        metric_name: what ``metric`` means (``accuracy`` by default).
        budget_ms, budget_mb: the hard budgets, if any.
        dense: the unpruned base model's record (trial of the dense policy), when it ran.
    """

    trials: list[TrialRecord]
    metric_name: str = "accuracy"
    budget_ms: float | None = None
    budget_mb: float | None = None
    out_dir: Path | None = None
    model_loader: Callable[[TrialRecord], nn.Module] | None = None
    study_name: str | None = None
    wall_seconds: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    #: numbers of the trials run by this call (a resumed study also holds earlier ones)
    session_trials: set[int] | None = None

    def time_breakdown(self) -> dict[str, float]:
        """Seconds spent per phase over this session's trials, plus ``search overhead`` (sampler, storage,
        bookkeeping: the wall time no trial phase accounts for). Needs ``wall_seconds``."""
        phases = ("prune", "measure", "finetune", "evaluate", "export")
        mine = [r for r in self.trials if self.session_trials is None or r.number in self.session_trials]
        totals = {p: sum(r.timings.get(p, 0.0) for r in mine) for p in phases}
        if self.wall_seconds is not None:
            totals["search overhead"] = max(0.0, self.wall_seconds - sum(totals.values()))
        return totals

    @property
    def reference_latency_ms(self) -> float | None:
        """The dense model's latency that candidates were timed against (interleaved timing), if any."""
        return (self.attrs.get(REFERENCE_ATTR) or {}).get("latency_ms")

    @property
    def pareto(self) -> list[TrialRecord]:
        return pareto_front(self.trials)

    def best(self, *, max_latency_ms: float | None = None, max_size_mb: float | None = None) -> TrialRecord | None:
        """The most accurate front candidate within the given limits (the search's budgets by default)."""
        max_latency_ms = self.budget_ms if max_latency_ms is None else max_latency_ms
        max_size_mb = self.budget_mb if max_size_mb is None else max_size_mb
        fits = [c for c in self.pareto
                if (max_latency_ms is None or c.latency_ms <= max_latency_ms)
                and (max_size_mb is None or c.size_mb <= max_size_mb)]
        return max(fits, key=lambda c: (c.metric, -c.latency_ms), default=None)

    def closest(self, n: int = 3) -> list[TrialRecord]:
        """When nothing meets the budgets: the complete trials that come nearest, by relative overshoot."""
        def overshoot(r: TrialRecord) -> float:
            over = 0.0
            if self.budget_ms:
                over += max(0.0, r.latency_ms / self.budget_ms - 1)
            if self.budget_mb:
                over += max(0.0, r.size_mb / self.budget_mb - 1)
            return over
        return sorted((r for r in self.trials if r.complete), key=lambda r: (overshoot(r), -r.metric))[:n]

    def candidates(self, numbers: Sequence[int]) -> list[TrialRecord]:
        """The Pareto candidates with these trial numbers, in that order (repeats once); an
        :class:`~autoprune.errors.AutopruneInputError` listing the candidates when one is not on the front."""
        front = {c.number: c for c in self.pareto}
        missing = [n for n in numbers if n not in front]
        if missing:
            raise AutopruneInputError(f"trial(s) {missing} are not Pareto candidates (only those are saved); "
                                      f"candidates: {sorted(front)}")
        return [front[n] for n in dict.fromkeys(numbers)]

    def load_model(self, candidate: TrialRecord) -> nn.Module:
        """The pruned, fine-tuned model of a Pareto candidate, rebuilt from its saved weights."""
        if candidate.artifact_dir is None:
            raise KeyError(f"trial {candidate.number} has no saved weights: only Pareto candidates are saved")
        if self.model_loader is None:
            raise RuntimeError("this result was read without its base model; use autoprune.search() or "
                               "autoprune.export.load_pruned(dir, base_model)")
        return self.model_loader(candidate)

    def policy(self, candidate: TrialRecord) -> Policy:
        return Policy.from_dict(candidate.policy or {})

    def to_dataframe(self):  # -> pandas.DataFrame
        import pandas as pd

        rows = []
        for r in self.trials:
            row = {k: v for k, v in r.to_dict().items() if k not in ("policy", "timings")}
            row.update({f"time_{k}": v for k, v in r.timings.items()})
            row["on_front"] = any(r.number == c.number for c in self.pareto)
            rows.append(row)
        return pd.DataFrame(rows).rename(columns={"metric": self.metric_name})

    def save(self, out_dir: str | Path | None = None) -> dict[str, Path]:
        """Write pareto.json, trials.csv and pareto.png into ``out_dir``."""
        out = Path(out_dir or self.out_dir or ".")
        out.mkdir(parents=True, exist_ok=True)
        files = {"pareto": out / PARETO_JSON, "trials": out / TRIALS_CSV, "plot": out / PARETO_PNG}
        best = self.best()
        # Written under a temporary name and renamed: workers sharing a run directory never leave a torn file.
        with replacing(files["pareto"]) as tmp:
            tmp.write_text(json.dumps({
                "study_name": self.study_name, "metric": self.metric_name,
                "budget_ms": self.budget_ms, "budget_mb": self.budget_mb,
                "reference_latency_ms": self.reference_latency_ms,
                "profile": self.attrs.get(PROFILE_ATTR),
                "best": best.number if best else None,
                "pareto": [c.to_dict() for c in self.pareto],
            }, indent=2))
        with replacing(files["trials"]) as tmp:
            self.to_dataframe().to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
        with replacing(files["plot"]) as tmp:
            self.plot(tmp)
        return files

    def plot(self, path: str | Path) -> Path:
        """Metric vs latency of every complete trial, size as colour, the front joined, the budget as a line."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        done = [r for r in self.trials if r.complete]
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        if done:
            sizes = [r.size_mb for r in done]
            feasible = [r for r in done if r.feasible]
            infeasible = [r for r in done if not r.feasible]
            scatter = ax.scatter([r.latency_ms for r in feasible], [r.metric for r in feasible],
                                 c=[r.size_mb for r in feasible], cmap="viridis", vmin=min(sizes),
                                 vmax=max(sizes), s=28, label="feasible trials", zorder=2)
            ax.scatter([r.latency_ms for r in infeasible], [r.metric for r in infeasible], marker="x",
                       c="grey", s=22, label="over budget (not fine-tuned)", zorder=1)
            front = self.pareto
            ax.plot([r.latency_ms for r in front], [r.metric for r in front], "-o", color="crimson",
                    mfc="none", ms=9, label="Pareto front", zorder=3)
            fig.colorbar(scatter, ax=ax, label="size (MB)")
        if self.budget_ms is not None:
            ax.axvline(self.budget_ms, color="black", linestyle="--", label=f"budget {self.budget_ms:g} ms")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel(self.metric_name)
        ax.set_title(f"autoprune: {self.study_name or 'search'}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path)
