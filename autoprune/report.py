"""What a person reads of a search: the front as a table, every trial as CSV, the front as JSON, a plot.

:func:`write_files` writes a run directory's ``pareto.json``, ``trials.csv`` and ``pareto.png`` (each
under a temporary name, then renamed: workers sharing a run directory never leave a torn file);
:func:`print_front` and :func:`print_time_breakdown` are what ``autoprune search`` and ``report`` print.

Example:
    >>> from autoprune.result import SearchResult, TrialRecord
    >>> result = SearchResult(trials=[TrialRecord(0, "complete", True, 0.98, 2.0, 1.0)])
    >>> to_dataframe(result)[["number", "accuracy", "on_front"]].values.tolist()
    [[0, 0.98, True]]
    >>> policy_label({"layers": {"fc": {"sparsity": 0.5, "method": "l1_structured"}}, "drop": ["layers.1"]})
    'l1_structured,1 block(s) dropped'
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.table import Table

from autoprune.result import SearchResult

PARETO_JSON, TRIALS_CSV, PARETO_PNG = "pareto.json", "trials.csv", "pareto.png"


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that replaces it atomically on success."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- files ------------------------------------------------------------------------------------------------

def to_dataframe(result: SearchResult):  # -> pandas.DataFrame
    """Every trial as a row: its record's fields (the metric under its own name), per-phase timings as
    ``time_<phase>`` columns, and whether it is on the front."""
    import pandas as pd

    front = {c.number for c in result.pareto}
    rows = []
    for r in result.trials:
        row = {k: v for k, v in r.to_dict().items() if k not in ("policy", "timings")}
        row.update({f"time_{k}": v for k, v in r.timings.items()})
        row["on_front"] = r.number in front
        rows.append(row)
    return pd.DataFrame(rows).rename(columns={"metric": result.metric_name})


def front_json(result: SearchResult) -> dict[str, Any]:
    """What ``pareto.json`` holds: the study, its budgets and latency profile, the best trial, the front."""
    best = result.best()
    return {"study_name": result.study_name, "metric": result.metric_name,
            "budget_ms": result.budget_ms, "budget_mb": result.budget_mb, "budget_ratio": result.meta.budget_ratio,
            "reference_latency_ms": result.reference_latency_ms, "profile": result.meta.profile,
            "dense_metric": result.meta.dense_metric,
            "best": best.number if best else None, "pareto": [c.to_dict() for c in result.pareto]}


def write_files(result: SearchResult, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write pareto.json, trials.csv and pareto.png into ``out_dir`` (default: the result's run directory)."""
    out = Path(out_dir or result.out_dir or ".")
    out.mkdir(parents=True, exist_ok=True)
    files = {"pareto": out / PARETO_JSON, "trials": out / TRIALS_CSV, "plot": out / PARETO_PNG}
    with replacing(files["pareto"]) as tmp:
        tmp.write_text(json.dumps(front_json(result), indent=2))
    with replacing(files["trials"]) as tmp:
        to_dataframe(result).to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
    with replacing(files["plot"]) as tmp:
        plot_front(result, tmp)
    return files


def plot_front(result: SearchResult, path: str | Path) -> Path:
    """Metric vs latency of every complete trial, size as colour, the front joined, the budget as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in result.trials if r.complete]
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
        front = result.pareto
        ax.plot([r.latency_ms for r in front], [r.metric for r in front], "-o", color="crimson",
                mfc="none", ms=9, label="Pareto front", zorder=3)
        fig.colorbar(scatter, ax=ax, label="size (MB)")
    if result.budget_ms is not None:
        ax.axvline(result.budget_ms, color="black", linestyle="--", label=f"budget {result.budget_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(result.metric_name)
    ax.set_title(f"autoprune: {result.study_name or 'search'}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing labelled when no trial completed
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --- the terminal -----------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def policy_label(policy: dict | None) -> str:
    """What a candidate's policy does, for the front's table: its methods, how many blocks it drops, and its
    quantization."""
    policy = policy or {}
    parts = sorted({lp["method"] for lp in policy.get("layers", {}).values() if lp["sparsity"] > 0})
    parts += [f"{len(policy['drop'])} block(s) dropped"] if policy.get("drop") else []
    parts = [",".join(parts) or "dense"]
    parts += [policy["quantize"]] if policy.get("quantize", "none") != "none" else []
    return " + ".join(parts)


def print_front(result: SearchResult, console: Console) -> None:
    """The front as a table, the best candidate within the budgets (or the closest trials), failures."""
    front = result.pareto
    best = result.best()
    rungs = any(t.rung for t in result.trials)  # a multi-fidelity study: say how long each candidate was tuned
    table = Table(title=f"Pareto front ({len(front)} of {len(result.trials)} trials)")
    recovered = any(c.recovery_steps for c in front)  # recovered candidates: from which trial, at what metric
    metric_of = {t.number: t.metric for t in result.trials}
    columns = ["trial", result.metric_name, "latency ms", "size MB", "sparse MB", "params", "MMACs", "method"]
    for column in columns + (["rung", "ft steps"] if rungs or recovered else []):
        table.add_column(column, justify="right")
    for c in front:
        mark = " *" if best is not None and c.number == best.number else ""
        row = [f"{c.number}{mark}", fmt(c.metric, 4), fmt(c.latency_ms), fmt(c.size_mb), fmt(c.size_mb_sparse),
               str(c.params), fmt((c.macs or 0) / 1e6, 2), policy_label(c.policy)]
        row += [str(c.rung), str(c.finetune_steps)] if rungs or recovered else []
        table.add_row(*row)
    console.print(table)
    for c in front:
        if c.recovery_steps:
            console.print(f"trial {c.number} recovered trial {c.parent}: {result.metric_name} "
                          f"{fmt(metric_of.get(c.parent), 4)} -> {fmt(c.metric, 4)} after {c.recovery_steps} more steps",
                          highlight=False)
    budget = ", ".join(f"{k} {v:g}" for k, v in (("latency ms <=", result.budget_ms), ("size MB <=", result.budget_mb))
                       if v is not None) or "none"
    if best is not None:
        console.print(f"best within budget ({budget}): trial {best.number} (*), {result.metric_name} "
                      f"{best.metric:.4f}, {best.latency_ms:.3f} ms, {best.size_mb:.3f} MB")
    elif result.trials and not any(t.complete for t in result.trials):
        failed = [t for t in result.trials if t.state == "failed" and t.counts]
        reasons = Counter(t.failure_reason for t in failed)
        common = f"; the most common reason ({reasons.most_common(1)[0][1]} of them): {reasons.most_common(1)[0][0]}" \
            if reasons else ""
        console.print(f"[bold red]no trial completed: {len(failed)} failed{common}[/]", highlight=False)
    else:
        console.print(f"[bold red]no candidate meets the budget ({budget}).[/] Closest trials:")
        for r in result.closest():
            console.print(f"  trial {r.number}: {result.metric_name} {fmt(r.metric, 4)}, "
                          f"{fmt(r.latency_ms)} ms, {fmt(r.size_mb)} MB")
    for t in [t for t in result.trials if t.state == "failed"][:5]:
        console.print(f"  trial {t.number} failed: {t.failure_reason}")
    drift = result.dense_drift()
    if drift is not None:
        console.print(f"[bold yellow]warning:[/] {drift}")


def print_time_breakdown(result: SearchResult, console: Console) -> None:
    """One line: the session's wall time and each phase's share of it (search overhead included)."""
    breakdown = result.time_breakdown()
    total = result.wall_seconds or sum(breakdown.values())
    if total <= 0:
        return
    parts = ", ".join(f"{k} {v:.1f}s ({v / total:.0%})" for k, v in breakdown.items())
    console.print(f"time: {total:.1f}s in all: {parts}")


def print_study_counts(result: SearchResult, console: Console) -> None:
    """How many of the study's trials completed, failed and run, of its total."""
    states = [t.state for t in result.trials]
    total = f" of {result.meta.n_trials}" if result.meta.n_trials else ""
    console.print(f"study {result.study_name}: {states.count('complete')} complete, {states.count('failed')} failed, "
                  f"{states.count('running')} running{total}")


def print_refined(refined: list[Any], result: SearchResult, steps: int, console: Console) -> None:
    """Each refined candidate's metric before and after the long fine-tune."""
    table = Table(title=f"refined: {steps} more steps each")
    for column in ("trial", f"{result.metric_name} before", "after", "latency ms", "size MB", "lr", "seconds"):
        table.add_column(column, justify="right")
    for r in refined:
        after = fmt(r.metric, 4) + (" (worse after it: the search's weights kept)" if r.undone else "")
        table.add_row(str(r.number), fmt(r.metric_before, 4), after, fmt(r.latency_ms),
                      fmt(r.size_mb), f"{r.lr:.2e}", f"{r.seconds:.1f}")
    console.print(table)
