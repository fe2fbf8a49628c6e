"""What a person reads of an :class:`~autoprune.analyze.Analysis`: tables on the terminal, ``analysis.json``
and ``analysis.png`` (per-layer share of latency beside share of parameters; per-unit metric vs sparsity).

Example:
    >>> from autoprune.analysis_report import share
    >>> share(0.1234)
    '12.3%'
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from autoprune.analyze import ANALYSIS_FILE, Analysis
from autoprune.report import fmt, replacing

ANALYSIS_PNG = "analysis.png"


def share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_analysis(analysis: Analysis, console: Console) -> None:
    """The model's totals, a table of layers, a table of units (metric and latency saved per sparsity, rank),
    removable blocks, the suggested starting policy, and the notes."""
    a = analysis
    console.print(f"[bold]{a.model}[/]: {a.params:,} parameters, {a.macs / 1e6:.2f} MMACs per sample, "
                  f"{a.size_mb:.3f} MB, {a.latency_ms:.3f} ms dense ({a.profile['runtime']}, batch "
                  f"{a.profile['batch_size']}, {a.profile['threads']} thread(s)), {a.metric_name} {a.metric:.4f}",
                  highlight=False)
    layers = Table(title="Layers (own parameters, MACs and share of the forward's time)")
    for column in ("layer", "type", "params", "MACs", "latency", "out ch", "unit / why not searched", "block"):
        layers.add_column(column, justify="left" if column in ("layer", "type", "unit / why not searched") else "right")
    for layer in a.layers:
        searched = layer.unit if layer.unit is not None else f"[dim]{layer.why_not}[/]"
        layers.add_row(layer.name, layer.kind, share(layer.params / max(a.params, 1)),
                       share(layer.macs / max(a.macs, 1)), share(layer.latency_share), str(layer.out_channels or "-"),
                       searched, layer.block or "")
    layers.add_row("[dim]everything else[/]", "", share(a.other["params"] / max(a.params, 1)),
                   share(a.other["macs"] / max(a.macs, 1)), share(a.other["latency_share"]), "", "", "")
    console.print(layers)
    units = Table(title=f"Units pruned alone with {a.method}, no fine-tuning: {a.metric_name} / latency saved")
    for column in ("rank", "unit", "layers", *(f"@{s:g}" for s in a.sparsities), "seed scale"):
        units.add_column(column, justify="left" if column in ("unit", "layers") else "right")
    for unit in sorted(a.units, key=lambda u: (u.rank is None, u.rank or 0, u.name)):
        cells = [f"{fmt(unit.metric.get(s), 3)} / {share(unit.latency_saved.get(s))}" for s in a.sparsities]
        if unit.error:
            cells = ["[red]failed[/]"] + [""] * (len(a.sparsities) - 1)
        units.add_row(str(unit.rank or "-"), unit.name, str(len(unit.layers)), *cells, fmt(unit.scale, 2))
    console.print(units)
    for block in a.blocks:
        text = (f"failed ({block.error})" if block.error else
                f"{a.metric_name} {block.metric:.4f}, saves {share(block.latency_saved)} of the latency")
        console.print(f"removable block {block.name} ({block.params:,} parameters) dropped alone: {text}",
                      highlight=False)
    layer_sparsities = ", ".join(f"{n} {lp['sparsity']:g}" for n, lp in a.suggested["policy"]["layers"].items())
    console.print(f"suggested start (the seeds' sensitivity-scaled policy at {a.suggested['level']:g}, round_to "
                  f"{a.round_to}): {layer_sparsities or 'nothing to prune'}", highlight=False)
    console.print(f"[dim]latency shares: {a.timed_by}; the profiled forward took {a.hooked_ms:.3f} ms[/]",
                  highlight=False)
    for note in a.notes:
        console.print(f"[bold yellow]note:[/] {note}", highlight=False)


def plot_analysis(analysis: Analysis, path: str | Path) -> Path:
    """Two panels: per layer, share of latency beside share of parameters (bars); per unit, metric vs sparsity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = analysis
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    names = [layer.name for layer in a.layers] + ["everything else"]
    latency = [layer.latency_share for layer in a.layers] + [a.other["latency_share"]]
    params = [layer.params / max(a.params, 1) for layer in a.layers] + [a.other["params"] / max(a.params, 1)]
    ys = range(len(names))
    bars.barh([y - 0.2 for y in ys], latency, height=0.4, label="share of latency", color="crimson")
    bars.barh([y + 0.2 for y in ys], params, height=0.4, label="share of parameters", color="steelblue")
    bars.set_yticks(list(ys), names, fontsize=7)
    bars.invert_yaxis()
    bars.set_xlabel("share of the model")
    bars.set_title("where time and parameters are")
    bars.legend(fontsize=8, loc="lower right")
    bars.grid(axis="x", alpha=0.3)
    for unit in a.units:
        points = sorted(unit.metric.items())
        if points and points[0][0] > 0:  # the dense model is every unit at sparsity 0
            points = [(0.0, a.metric)] + points
        if points:
            curves.plot([s for s, _ in points], [m for _, m in points], "-o", ms=3,
                        label=unit.name if len(a.units) <= 12 else None)
    curves.axhline(a.metric, color="black", linestyle="--", linewidth=0.8, label=f"dense {a.metric:.3f}")
    curves.set_xlabel("sparsity of the unit alone")
    curves.set_ylabel(f"{a.metric_name} (no fine-tuning)")
    curves.set_title(f"sensitivity ({a.method})")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"autoprune analyze: {a.model}, {a.latency_ms:.3f} ms dense")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def write_analysis(analysis: Analysis, out_dir: str | Path) -> dict[str, Path]:
    """``analysis.json`` and ``analysis.png`` in ``out_dir`` (each written under a temporary name, then renamed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / ANALYSIS_FILE, "png": out / ANALYSIS_PNG}
    with replacing(paths["json"]) as tmp:
        analysis.save(tmp)
    with replacing(paths["png"]) as tmp:
        plot_analysis(analysis, tmp)
    return paths
