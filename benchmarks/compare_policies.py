"""Is the search worth it? autoprune vs random search, uniform pruning and Torch-Pruning's global pruning.

Two models trained on scikit-learn's digits (the embedded digits CNN, and a ResNet-style CNN with
residual blocks), the same fine-tuning for every candidate, and per model and seed:

* ``autoprune``: ``search()`` with the default sampler over ``search_spaces/default.yaml`` (``--trials``);
* ``random``: random search over the same space, the same number of trials, no seeded policies;
* ``uniform``: ``l1_structured`` at the same sparsity in every layer, swept 0.1..0.9;
* ``uniform_r8``: the same, with channel counts rounded to multiples of 8 (what autoprune's scaled seeds
  use: shows how much of autoprune's lead is alignment alone; the targets compare with ``uniform``);
* ``tp_global``: Torch-Pruning's global pruning (one ratio, L1 importance ranked across layers), 0.1..0.9.

Candidates are chosen on the validation split (the search's metric); every figure reported uses the
held-out **test** split (20% of digits, never seen by the search). Per method and seed:

* ``speedup_at_1pt`` / ``speedup_at_0.5pt``: dense latency over the fastest front candidate whose test
  accuracy is within 1 (0.5) point of the dense model's;
* ``acc_at_10pct`` / ``acc_at_15pct`` / ``acc_at_25pct``: best test accuracy among front candidates at
  <= 10% (15%, 25%) of the dense latency;
* ``hypervolume``: area dominated by the front in (latency / dense latency, test accuracy / dense test
  accuracy), reference point (1, 0): 0 for the dense model alone, 1 for dense accuracy at zero latency;
* ``wall_s``: wall time of the method.

Also: real speedup vs MAC reduction for the structured front candidates, where autoprune's trial time
goes, and what skipping the fine-tuning of over-budget trials saves at a tight budget.

Then every figure again after a long fine-tune (``--refine-steps``, 180 by default; 0 skips it): each
search's Pareto candidates go through ``autoprune.refine`` (that many more steps from their saved
weights, at the trial's learning rate), and each baseline's sweep is run again and every one of its
candidates fine-tuned the same number of steps more at its learning rate. A search ranks policies by
their accuracy after a brief fine-tune; this shows whether the ranking survives a full one.

Latency: the default HardwareProfile (CPU, 1 thread, batch 64; eager PyTorch, or ONNX Runtime with
``--runtime onnxruntime``), every candidate timed against the dense
model (interleaved samples; each search run's latencies are rescaled to this script's dense timing).
``floor``: the latency of the model with every removable residual block dropped and one channel left in
every other searched layer, the least any policy of the default space can reach. Writes benchmarks/results/
compare_policies.json, compare_policies.md and compare_policies.png; partial results are cached in
the work directory so an interrupted run resumes (each cached run keeps the dense timing it was made
against, and its latencies are rescaled to the current one: the machine's speed differs between runs).

    python benchmarks/compare_policies.py [--trials 30] [--seeds 0 1 2] [--models digits_cnn resnet]
                                          [--runtime eager|onnxruntime] [--refine-steps 180]

``--runtime onnxruntime`` times every candidate in ONNX Runtime (the exported model as deployed) instead of
eager PyTorch, and writes compare_policies_onnxruntime.{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from autoprune.api import search
from autoprune.loading import default_storage, load_result
from autoprune.depth import removable_blocks
from autoprune.demo import DigitsDataModule, pretrained_digits_cnn, train_classifier
from autoprune.export import load_pruned
from autoprune.finetune import accuracy, as_lightning, finetune, first_inputs
from autoprune.layers import output_layers, prunable_layers
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.methods.structured import torch_pruning_global
from autoprune.objective import TrialContext, dense_copy, run_trial
from autoprune.policy import Policy, inside
from autoprune.prune import prune
from autoprune.refine import refine, refine_model
from autoprune.resolved_space import FinetuneSettings
from autoprune.space import load_space
from autoprune.zoo import ResNetCNN

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LEVELS = [round(0.1 * i, 1) for i in range(1, 10)]
METHODS = ("autoprune", "random", "uniform", "uniform_r8", "tp_global")
SAMPLERS = {"autoprune": "auto", "random": "random"}  # the methods that are searches, and their sampler


def build_model(name: str, cache: Path) -> torch.nn.Module:
    if name == "digits_cnn":
        return pretrained_digits_cnn(cache)
    return trained_resnet(cache / "resnet.pt", widths=(32, 64), epochs=15)


def trained_resnet(path: Path, *, widths: tuple[int, ...], epochs: int) -> torch.nn.Module:
    """A ResNet-style CNN (2 blocks a stage) trained on digits from a fixed seed, cached at ``path``."""
    torch.manual_seed(0)
    model = ResNetCNN(in_channels=1, widths=widths, blocks=2)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train_classifier(model, DigitsDataModule(seed=0).train_dataloader(), epochs=epochs)
    torch.save(model.state_dict(), path)
    return model.eval()


def settings_of_default_space() -> FinetuneSettings:
    """The default space's fine-tuning, at the middle of its learning-rate range (what the seeds use)."""
    ft = load_space("default").finetune
    return FinetuneSettings(max_steps=ft.max_steps, lr=ft.lr.at(0.5), calibration_batches=ft.calibration_batches)


def point(model, loaders, metrics, val=None) -> dict:
    _, val_loader, test_loader = loaders
    return {"val": accuracy(model, val_loader) if val is None else val, "test": accuracy(model, test_loader),
            "latency_ms": metrics.latency_ms, "macs": metrics.macs, "params": metrics.params}


def run_search(model, data, loaders, sampler: str, seed: int, trials: int, work: Path, dense_ms: float,
               profile: HardwareProfile) -> dict:
    out = work / f"{sampler}-{seed}"
    started = time.perf_counter()
    result = search(model, data, n_trials=trials, sampler=sampler, seed=seed, out_dir=out, study_name="bench",
                    seed_policies=sampler != "random", profile=profile)
    wall = time.perf_counter() - started
    # Each search timed its candidates against its own timing of the dense model: put them on this scale.
    scale = dense_ms / result.reference_latency_ms if result.reference_latency_ms else 1.0
    front = []
    for c in result.pareto:
        net = result.load_model(c)
        front.append({"val": c.metric, "test": accuracy(net, loaders[2]), "latency_ms": c.latency_ms * scale,
                      "macs": c.macs, "params": c.params})
    trials_all = [{"val": t.metric, "latency_ms": t.latency_ms * scale}
                  for t in result.trials if t.state == "complete"]
    return {"front": front, "trials": trials_all, "wall_s": wall, "breakdown": result.time_breakdown(),
            "failed": sum(t.state == "failed" for t in result.trials)}


def searched_layers(model, example) -> list[str]:
    return [n for n in prunable_layers(model) if n not in output_layers(model, example)]


def floor_policy(model, example) -> Policy:
    """Every removable block dropped and one channel left in every other searched layer: the fastest
    model the default space can reach."""
    blocks = removable_blocks(model, example)
    layers = [n for n in searched_layers(model, example) if not inside(n, blocks)]
    return dataclasses.replace(Policy.uniform(layers, sparsity=0.999, method="l1_structured"), drop=tuple(blocks))


def sweep(seed: int, one_level) -> dict:
    """``one_level(level)`` -> point for every level of LEVELS, each from the same torch seed, timed in all."""
    started = time.perf_counter()
    points = []
    for level in LEVELS:
        torch.manual_seed(seed)
        points.append({**one_level(level), "level": level})
    return {"front": points, "wall_s": time.perf_counter() - started}


def uniform_level(ctx: TrialContext, layers: list[str], settings: FinetuneSettings, level: float,
                  round_to: int | None = None, quantize: str = "none", method: str = "l1_structured"):
    """The uniform policy at ``level`` (quantized as ``quantize`` says, channels scored by ``method``), pruned,
    timed and fine-tuned: (model, metrics, validation metric); the model is the int8 one when the policy
    quantizes (what was scored)."""
    outcome = run_trial(ctx, Policy.uniform(layers, sparsity=level, method=method, round_to=round_to,
                                            quantize=quantize), settings)
    return outcome.deployed or outcome.model, outcome.metrics, outcome.metric


def uniform_points(ctx: TrialContext, layers: list[str], settings: FinetuneSettings, levels: list[float], *,
                   seed: int, test, quantize: str = "none", method: str = "l1_structured") -> tuple[list[dict], float]:
    """The uniform policy at each of ``levels`` (:func:`uniform_level`, each from torch seed ``seed``): points of
    level, validation metric, ``test(model)``, latency as a share of ``ctx.reference`` and parameters, and the
    seconds the trials took (the test evaluation not counted). Used by the real-model benchmarks."""
    points, wall = [], 0.0
    for level in levels:
        torch.manual_seed(seed)
        begun = time.perf_counter()
        model, metrics, val = uniform_level(ctx, layers, settings, level, quantize=quantize, method=method)
        wall += time.perf_counter() - begun
        points.append({"level": level, "quantize": quantize, "method": method, "steps": settings.max_steps,
                       "val": val, "test": test(model),
                       "ratio": metrics.latency_ms / ctx.reference.latency_ms, "params": metrics.params})
        print(f"  uniform {level} {quantize} {method} {settings.max_steps} steps: val {val:.4f} test {points[-1]['test']:.4f} at {points[-1]['ratio']:.3f} "
              "of dense latency", flush=True)
    return points, wall


def front_figures(points: list[dict], *, key: str, targets: tuple[float, ...], floor: float) -> dict:
    """Over the front of ``points`` (``key`` higher is better, ``ratio`` = latency / dense lower): the speedup
    of the fastest point with ``key`` >= each target, and the hypervolume above ``floor`` (reference point
    (1, floor), divided by 1 - floor). Used by the real-model benchmarks."""
    front = [p for p in points if not any(q[key] >= p[key] and q["ratio"] <= p["ratio"]
                                          and (q[key] > p[key] or q["ratio"] < p["ratio"]) for q in points)]
    front.sort(key=lambda p: p["ratio"])
    out = {f"speedup_at_{t}": max((1 / p["ratio"] for p in front if p[key] >= t), default=None) for t in targets}
    area, best = 0.0, floor
    box = sorted((p["ratio"], max(floor, p[key])) for p in front if p["ratio"] < 1)
    for i, (x, y) in enumerate(box):
        best = max(best, y)
        area += ((box[i + 1][0] if i + 1 < len(box) else 1.0) - x) * (best - floor)
    out["hypervolume"] = area / (1 - floor)
    out["front"] = front
    return out


def tp_global_level(model, ctx: TrialContext, settings: FinetuneSettings, level: float):
    """Torch-Pruning's global pruning at ``level``, fine-tuned and timed: (model, metrics, None)."""
    protected = output_layers(model, ctx.example_inputs)
    net = torch_pruning_global(dense_copy(model), ctx.example_inputs, sparsity=level, protected=protected)
    finetune(as_lightning(net, loss=None, lr=settings.lr), ctx.train_loader, policy=Policy(),
             max_steps=settings.max_steps, prefix="net.")
    return net, measure(net, ctx.example_inputs, ctx.profile, reference=ctx.reference), None


def baseline_level(method: str, model, ctx: TrialContext, settings: FinetuneSettings):
    """``level -> (model, metrics, val or None)`` for a hand-made baseline."""
    if method == "tp_global":
        return lambda level: tp_global_level(model, ctx, settings, level)
    layers = searched_layers(model, ctx.example_inputs)
    return lambda level: uniform_level(ctx, layers, settings, level, round_to=8 if method == "uniform_r8" else None)


def run_baseline(method: str, model, loaders, ctx: TrialContext, settings: FinetuneSettings, seed: int) -> dict:
    one_level = baseline_level(method, model, ctx, settings)

    def level_point(level: float) -> dict:
        net, metrics, val = one_level(level)
        return point(net, loaders, metrics, val=val)

    return sweep(seed, level_point)


def refine_search(model, data, loaders, sampler: str, seed: int, work: Path, steps: int) -> dict:
    """The search's Pareto candidates refined (``autoprune.refine``: ``steps`` more fine-tuning steps at each
    trial's learning rate), test accuracy after; the dense candidate as it is."""
    out = work / f"{sampler}-{seed}"
    result = load_result(storage=default_storage(out), study_name="bench", out_dir=out, base_model=model)
    started = time.perf_counter()
    refined = {r.number: r for r in refine(result, data, steps=steps, seed=seed, out_dir=out / "refined",
                                           formats=("torchscript",))}
    wall = time.perf_counter() - started
    front = []
    for c in result.pareto:
        r = refined.get(c.number)
        net = load_pruned(r.directory, model) if r else result.load_model(c)
        front.append({"val": r.metric if r else c.metric, "test": accuracy(net, loaders[2]),
                      "latency_ms": c.latency_ms, "macs": c.macs, "params": c.params})
    return {"front": front, "wall_s": wall, "dense_ms": result.reference_latency_ms}


def refine_baseline(method: str, model, loaders, ctx: TrialContext, settings: FinetuneSettings, seed: int,
                    steps: int) -> dict:
    """The baseline's sweep again, each candidate then fine-tuned ``steps`` more steps at the same learning
    rate with ``autoprune.refine.refine_model`` (what ``refine`` does to a search's candidates); wall time
    counts the refining only."""
    one_level = baseline_level(method, model, ctx, settings)
    refining = []

    def level_point(level: float) -> dict:
        net, metrics, _ = one_level(level)
        started = time.perf_counter()
        refine_model(net, Policy(), loaders[0], steps=steps, lr=settings.lr, seed=seed)
        refining.append(time.perf_counter() - started)
        return point(net, loaders, metrics)

    return {**sweep(seed, level_point), "wall_s": sum(refining), "dense_ms": ctx.reference.latency_ms}


def on_scale(run: dict, dense_ms: float) -> dict:
    """A cached run's latencies rescaled to this invocation's dense timing.

    Each run's candidates were timed against the dense model as calibrated when the run was made
    (``run["dense_ms"]``); the machine's speed differs between invocations, so a resumed benchmark puts
    every run on one scale by keeping each candidate's ratio to its own dense timing.
    """
    factor = dense_ms / run["dense_ms"]
    scaled = dict(run)
    for key in ("front", "trials"):
        if key in run:
            scaled[key] = [{**p, "latency_ms": p["latency_ms"] * factor} for p in run[key]]
    return scaled


def cached_runs(store: dict, seeds: list[int], run_one, dense: dict, save, label: str = "") -> dict:
    """Every method's run for every seed: taken from ``store`` (the cache), or made by ``run_one(method, seed)``,
    put in ``store`` and saved (``save()``) at once, so an interrupted benchmark resumes. Returned for ``seeds``
    only, on this invocation's dense timing (:func:`on_scale`)."""
    for seed in seeds:
        for method in METHODS:
            if str(seed) in store.setdefault(method, {}):
                continue
            started = time.perf_counter()
            run = store[method][str(seed)] = run_one(method, seed)
            save()
            f = figures(on_scale(run, dense["latency_ms"])["front"], dense)
            print(f"  {label}{method} seed {seed}: {time.perf_counter() - started:.0f}s, speedup@1pt "
                  f"{f['speedup_at_1pt']}, acc@10% {f['acc_at_10pct']}, hv {f['hypervolume']:.3f}", flush=True)
    return {m: {s: on_scale(r, dense["latency_ms"]) for s, r in store[m].items() if int(s) in seeds} for m in METHODS}


def val_front(points: list[dict]) -> list[dict]:
    """Candidates no other candidate beats on both validation accuracy and latency (the search's view)."""
    front = [p for p in points if not any(
        q["val"] >= p["val"] and q["latency_ms"] <= p["latency_ms"]
        and (q["val"] > p["val"] or q["latency_ms"] < p["latency_ms"]) for q in points)]
    return sorted(front, key=lambda p: p["latency_ms"])


def hypervolume(points: list[dict], dense_ms: float, dense_acc: float) -> float:
    """Area dominated in (latency/dense, test acc/dense) with reference point (1, 0)."""
    pts = sorted((p["latency_ms"] / dense_ms, p["test"] / dense_acc) for p in points if p["latency_ms"] < dense_ms)
    area, best = 0.0, 0.0
    for i, (x, y) in enumerate(pts):
        best = max(best, y)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else 1.0
        area += (nxt - x) * best
    return area


def figures(points: list[dict], dense: dict) -> dict:
    front = val_front(points)
    d_ms, d_acc = dense["latency_ms"], dense["test"]

    def speedup(tol: float):
        ok = [p for p in front if p["test"] >= d_acc - tol]
        return max((d_ms / p["latency_ms"] for p in ok), default=None)

    def acc_at(share: float):
        ok = [p["test"] for p in front if p["latency_ms"] <= share * d_ms]
        return max(ok, default=None)

    return {"speedup_at_1pt": speedup(0.01), "speedup_at_0.5pt": speedup(0.005), "acc_at_10pct": acc_at(0.10),
            "acc_at_15pct": acc_at(0.15), "acc_at_25pct": acc_at(0.25), "hypervolume": hypervolume(front, d_ms, d_acc), "front": front}


def mac_efficiency(runs: dict, dense: dict) -> dict:
    """Real speedup over MAC reduction of the front candidates, overall and by how far MACs were cut."""
    pairs = []
    for method in METHODS:
        for run in runs.get(method, {}).values():
            for p in val_front(run["front"]):
                mac_red = dense["macs"] / p["macs"] if p["macs"] else None
                if mac_red and mac_red > 1.05:
                    pairs.append((mac_red, (dense["latency_ms"] / p["latency_ms"]) / mac_red))
    if not pairs:
        return {}
    ratios = [r for _, r in pairs]
    out = {"candidates": len(ratios), "median": statistics.median(ratios), "min": min(ratios),
           "share_at_least_0.8": sum(r >= 0.8 for r in ratios) / len(ratios), "by_mac_reduction": {}}
    for label, lo, hi in (("<=2x", 0, 2), ("2-4x", 2, 4), (">4x", 4, math.inf)):
        part = [r for m, r in pairs if lo < m <= hi]
        if part:
            out["by_mac_reduction"][label] = {"candidates": len(part), "median": statistics.median(part)}
    return out


def shortcut(model, data, dense: dict, trials: int, work: Path, profile: HardwareProfile) -> dict:
    """A tight budget (15% of dense latency): infeasible trials skip fine-tuning; what that saved."""
    budget = 0.15 * dense["latency_ms"]
    started = time.perf_counter()
    result = search(model, data, n_trials=trials, seed=0, out_dir=work / "tight", study_name="bench", budget_ms=budget,
                    profile=profile)
    wall = time.perf_counter() - started
    done = [t for t in result.trials if t.state == "complete"]
    feasible = [t for t in done if t.feasible]
    skipped = [t for t in done if not t.feasible]
    mean_ft = statistics.mean(t.timings.get("finetune", 0.0) for t in feasible) if feasible else None
    return {"budget_ms": budget, "trials": len(done), "infeasible": len(skipped), "wall_s": wall,
            "mean_finetune_s": mean_ft}


def shortcut_savings(run: dict, searches: dict) -> dict:
    """What the skipped fine-tunes would have cost: the infeasible trials times the mean fine-tune of the
    tight run's feasible trials or, when none was feasible, of the budget-free searches' trials."""
    mean_ft, source = run["mean_finetune_s"], "feasible trials of the tight run"
    if not mean_ft:
        mean_ft = statistics.mean(r["breakdown"].get("finetune", 0.0) / max(1, len(r["trials"]))
                                  for r in searches.values())
        source = "trials of the budget-free autoprune searches"
    saved = mean_ft * run["infeasible"]
    return {**run, "mean_finetune_s": mean_ft, "mean_finetune_from": source, "estimated_saved_s": saved,
            "estimated_share_saved": saved / (run["wall_s"] + saved)}


def summarise(name: str, runs: dict, dense: dict) -> dict:
    out = {}
    for method in METHODS:
        per_seed = {seed: figures(run["front"], dense) for seed, run in runs[method].items()}
        out[method] = {"per_seed": {s: {k: v for k, v in f.items() if k != "front"} for s, f in per_seed.items()},
                       "wall_s": {s: runs[method][s]["wall_s"] for s in runs[method]}}
    return out


def _fmt(values: list, pct: bool = False, digits: int = 2) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "none"
    scale = 100 if pct else 1
    mean = statistics.mean(vals) * scale
    missing = len(values) - len(vals)
    text = f"{mean:.{digits}f}" + (f" ± {statistics.stdev(vals) * scale:.{digits}f}" if len(vals) > 1 else "")
    return text + (f" ({missing} seed(s) none)" if missing else "")


def table(summary: dict, wall: str = "wall s") -> list[str]:
    lines = ["| method | speedup @1pt | speedup @0.5pt | acc. @10% latency | acc. @15% latency "
             f"| acc. @25% latency | hypervolume | {wall} |",
             "|---|---|---|---|---|---|---|---|"]
    for method, res in summary.items():
        seeds = list(res["per_seed"].values())
        col = lambda k, **kw: _fmt([s[k] for s in seeds], **kw)  # noqa: E731
        lines.append(f"| {method} | {col('speedup_at_1pt')} | {col('speedup_at_0.5pt')} | "
                     f"{col('acc_at_10pct', pct=True, digits=1)} | {col('acc_at_15pct', pct=True, digits=1)} | "
                     f"{col('acc_at_25pct', pct=True, digits=1)} | "
                     f"{col('hypervolume', digits=3)} | {_fmt(list(res['wall_s'].values()), digits=0)} |")
    return lines


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']}; torch {report['torch']}; {report['trials']} trials per search, "
             f"seeds {report['seeds']}. Mean ± std over seeds; accuracy on the held-out test split.", ""]
    for name, model in report["models"].items():
        dense = model["dense"]
        lines += [f"**{name}**: dense test accuracy {dense['test'] * 100:.2f}%, {dense['latency_ms']:.2f} ms "
                  f"(batch 64, 1 thread, {report['runtime']}), {dense['macs'] / 1e6:.2f} MMACs; latency floor (removable blocks "
                  f"dropped, one channel left in every other searched layer) {model['floor'] * 100:.1f}% of dense.", ""]
        lines += table(model["summary"]) + [""]
        if "refined" in model:
            lines += [f"After refining every method's candidates ({model['refined']['steps']} more fine-tuning steps "
                      "each, at the candidate's learning rate; a search's Pareto candidates, a baseline's whole sweep):",
                      ""] + table(model["refined"]["summary"], wall="refine s") + [""]
        eff = model.get("mac_efficiency") or {}
        if eff:
            bins = "; ".join(f"{k} fewer MACs: {v['median']:.2f} ({v['candidates']})"
                             for k, v in eff.get("by_mac_reduction", {}).items())
            lines.append(f"Real speedup / MAC reduction over {eff['candidates']} structured front candidates: median "
                         f"{eff['median']:.2f}, min {eff['min']:.2f}, {eff['share_at_least_0.8'] * 100:.0f}% at >= 0.8. "
                         f"Median by MAC reduction: {bins}.")
            lines.append("")
    for line in report.get("targets", []):
        lines.append(f"- {line}")
    return "\n".join(lines) + "\n"


def plot(report: dict, runs_by_model: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(runs_by_model)
    rows = 2 if len(panels) > len(report["models"]) else 1
    cols = len(report["models"])
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), dpi=120, squeeze=False)
    colours = {"autoprune": "crimson", "random": "tab:orange", "uniform": "tab:blue", "uniform_r8": "tab:purple",
               "tp_global": "tab:green"}
    order = [p for p in panels if not p.endswith(" refined")] + [p for p in panels if p.endswith(" refined")]
    for ax, panel in zip(axes.flat, order):
        name = panel.removesuffix(" refined")
        dense = report["models"][name]["dense"]
        for method in METHODS:
            for i, (seed, run) in enumerate(sorted(runs_by_model[panel][method].items())):
                front = val_front(run["front"])
                ax.plot([p["latency_ms"] / dense["latency_ms"] for p in front], [p["test"] * 100 for p in front],
                        "-o", ms=3, color=colours[method], alpha=0.8, label=method if i == 0 else None)
        ax.axhline(dense["test"] * 100 - 1, color="grey", ls=":", label="dense - 1 pt")
        ax.set_xscale("log")
        ax.set_xlabel("latency / dense latency (log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0, dense["test"] * 100 - 40), 100.5)
        ax.set_title(f"{panel}: fronts of every seed" + (f" ({report['models'][name]['refined']['steps']} more steps)"
                                                        if panel != name else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def setup(work: Path) -> tuple[dict, Path, DigitsDataModule]:
    """One torch thread, the work directory, its cache of finished runs (and its file), the digits splits."""
    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    cache_file = work / "cache.json"
    data = DigitsDataModule(batch_size=64, seed=0)
    data.setup()
    return (json.loads(cache_file.read_text()) if cache_file.is_file() else {}), cache_file, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "resnet"])
    parser.add_argument("--runtime", choices=["eager", "onnxruntime"], default="eager",
                        help="what runs the timed forwards (HardwareProfile.runtime)")
    parser.add_argument("--refine-steps", type=int, default=180,
                        help="fine-tune every method's candidates this many more steps and report the fronts "
                             "again (0: skip)")
    parser.add_argument("--work", type=Path, default=None, help="cache directory (default: runs/benchmark-compare, "
                                                                "with -onnxruntime appended for that runtime)")
    args = parser.parse_args()
    suffix = "" if args.runtime == "eager" else f"_{args.runtime}"
    args.work = args.work or Path("runs/benchmark-compare" + suffix.replace("_", "-"))
    cache, cache_file, data = setup(args.work)
    loaders = (data.train_dataloader(), data.val_dataloader(), data.test_dataloader())
    settings = settings_of_default_space()
    profile = HardwareProfile(runtime=args.runtime)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, no GPU",
              "torch": torch.__version__, "runtime": args.runtime, "trials": args.trials, "seeds": args.seeds, "models": {},
              "reference_point": "(latency/dense = 1, accuracy/dense = 0)"}
    runs_by_model = {}
    for name in args.models:
        work = args.work / name
        work.mkdir(exist_ok=True)
        model = build_model(name, work)
        example = first_inputs(loaders[1])
        # The dense latency normalises every figure: the median of 3 timings; candidates are timed against it.
        reference = LatencyReference.calibrate(model, example, profile, rounds=3)
        dense = point(model, loaders, measure(model, example, profile, reference=reference))
        dense["latency_ms"] = reference.latency_ms
        ctx = TrialContext(base_model=dense_copy(model), example_inputs=example, train_loader=loaders[0],
                           val_loader=loaders[1], profile=profile, reference=reference)
        floor = measure(prune(model, floor_policy(model, example), example), example, profile, reference=reference)
        print(f"{name}: dense test {dense['test']:.4f}, {dense['latency_ms']:.2f} ms, floor "
              f"{floor.latency_ms / dense['latency_ms']:.3f}", flush=True)
        save = lambda: cache_file.write_text(json.dumps(cache))  # noqa: E731

        def run_one(method: str, seed: int) -> dict:
            if method in SAMPLERS:
                run = run_search(model, data, loaders, SAMPLERS[method], seed, args.trials, work, dense["latency_ms"],
                                 profile)
            else:
                run = run_baseline(method, model, loaders, ctx, settings, seed)
            return {**run, "dense_ms": dense["latency_ms"]}

        runs = cached_runs(cache.setdefault(name, {}), args.seeds, run_one, dense, save)
        runs_by_model[name] = runs
        entry = {"dense": dense, "floor": floor.latency_ms / dense["latency_ms"],
                 "summary": summarise(name, runs, dense), "mac_efficiency": mac_efficiency(runs, dense)}
        entry["autoprune_time_breakdown_s"] = {
            k: sum(run["breakdown"].get(k, 0.0) for run in runs["autoprune"].values())
            for k in ("prune", "measure", "finetune", "evaluate", "export", "search overhead")}
        if args.refine_steps:
            def refine_one(method: str, seed: int) -> dict:
                if method in SAMPLERS:
                    return refine_search(model, data, loaders, SAMPLERS[method], seed, work, args.refine_steps)
                return refine_baseline(method, model, loaders, ctx, settings, seed, args.refine_steps)

            refined = cached_runs(cache[name].setdefault(f"refined_{args.refine_steps}", {}), args.seeds, refine_one,
                                  dense, save, label="refined ")
            runs_by_model[f"{name} refined"] = refined
            entry["refined"] = {"steps": args.refine_steps, "summary": summarise(name, refined, dense)}
        if name == "digits_cnn":
            if "shortcut" not in cache.get("extra", {}):
                cache.setdefault("extra", {})["shortcut"] = shortcut(model, data, dense, args.trials, work, profile)
                cache_file.write_text(json.dumps(cache))
            entry["tight_budget_shortcut"] = shortcut_savings(cache["extra"]["shortcut"], runs["autoprune"])
        report["models"][name] = entry
    report["targets"] = targets(report)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"compare_policies{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    plot(report, runs_by_model, stem.with_suffix(".png"))
    print(markdown(report))


def targets(report: dict) -> list[str]:
    """The issue's targets, checked per model on the seed means (and per seed for the hypervolume); again
    after refining, when the report has refined fronts."""
    lines = []
    for name, model in report["models"].items():
        lines += summary_targets(name, model["summary"], model["floor"])
        if "refined" in model:
            lines += summary_targets(f"{name} after refining", model["refined"]["summary"], model["floor"])
    return lines


def summary_targets(name: str, s: dict, floor: float) -> list[str]:
    def mean(method, key):
        vals = [v[key] for v in s[method]["per_seed"].values() if v[key] is not None]
        return statistics.mean(vals) if vals else None

    lines = []
    a, u = mean("autoprune", "speedup_at_1pt"), mean("uniform", "speedup_at_1pt")
    ok = a is not None and u is not None and a >= 1.5 * u
    r8 = mean("uniform_r8", "speedup_at_1pt")
    lines.append(f"{name}: speedup @1pt autoprune {a and round(a, 2)} vs uniform {u and round(u, 2)} "
                 f"(target >= 1.5x uniform): {'met' if ok else 'MISSED'}; uniform_r8 (not a target) "
                 f"{r8 and round(r8, 2)}")
    a, u = mean("autoprune", "acc_at_10pct"), mean("uniform", "acc_at_10pct")
    seeds_with = sum(v["acc_at_10pct"] is not None for v in s["autoprune"]["per_seed"].values())
    ok = a is not None and seeds_with == len(s["autoprune"]["per_seed"]) and (u is None or a >= u + 0.03)
    lines.append(f"{name}: accuracy @10% latency autoprune {a and round(a * 100, 1)} "
                 f"({seeds_with} of {len(s['autoprune']['per_seed'])} seeds reach 10%) vs uniform "
                 f"{u and round(u * 100, 1)} (target >= +3 pts; latency floor {floor * 100:.1f}%): "
                 f"{'met' if ok else 'MISSED'}")
    wins = [s["autoprune"]["per_seed"][k]["hypervolume"] > max(s["uniform"]["per_seed"][k]["hypervolume"],
                                                             s["random"]["per_seed"][k]["hypervolume"])
            for k in s["autoprune"]["per_seed"] if k in s["uniform"]["per_seed"] and k in s["random"]["per_seed"]]
    lines.append(f"{name}: hypervolume above uniform and random in {sum(wins)} of {len(wins)} seeds "
                 f"(target: every seed): {'met' if wins and all(wins) else 'MISSED'}")
    return lines


if __name__ == "__main__":
    main()
