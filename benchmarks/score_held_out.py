"""Score the candidates of a finished command-line MiniLM run on sentences it never saw (a test split).

``autoprune search --model hf:DIR --data FILE`` scores candidates on a validation split of FILE, which the
search also chose them by; this scores chosen trials of the run on other sentences: those
``examples/sentences.py`` makes after the first ``--skip`` (the file holds the first ``--count``), as the
mean cosine of their embeddings to the dense model's, batches of 16 padded per batch (as the run's). A
candidate whose policy quantizes is scored as its int8 ONNX model (what the run measured and ships).

    python benchmarks/score_held_out.py runs/minilm-cli-hidden --trials 6 24 --skip 4500 --count 500
    python benchmarks/score_held_out.py runs/minilm-cli --front     # the run's whole front, with its figures

With ``--front``, every candidate of the run's front is scored, and the figures ``real_transformer.py``
reports are computed over them as it computes them (the speedup of the fastest held-out candidate at mean
cosine >= 0.95 and 0.90, the hypervolume above 0.90; latencies as the run measured them, ratios to its
dense model), so a command-line run can be compared with that script's Python one.
Writes ``held_out.json`` into the run directory and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from autoprune.loading import open_result  # noqa: E402
from autoprune.modelio import Inputs  # noqa: E402
from examples.sentences import docstring_sentences  # noqa: E402


def deployed(result, record):
    """What ships for a candidate: its int8 ONNX model (saved beside its weights) when its policy quantizes, else
    its fp32 model."""
    if result.policy(record).quantize == "none":
        return result.load_model(record)
    from autoprune.quantize import INT8_FILE, QuantizedModel

    return QuantizedModel.load(Path(result.model_loader.artifacts_dir) / record.artifact_dir / INT8_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--trials", type=int, nargs="+")
    group.add_argument("--front", action="store_true", help="every candidate of the run's front, and its figures")
    parser.add_argument("--skip", type=int, default=4500)
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(2)
    opened = open_result(out=args.run, storage=None, study_name=None, with_model=True)
    result, base = opened.result, opened.base_model
    from transformers import AutoTokenizer

    folder = result.meta.model.removeprefix("hf:")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = docstring_sentences()[args.skip:args.skip + args.count]
    batches = [tokenizer(texts[i:i + 16], padding=True, truncation=True, max_length=64, return_tensors="pt")
               for i in range(0, len(texts), 16)]

    def embed(model) -> list[torch.Tensor]:
        model.eval()
        with torch.inference_mode():
            return [Inputs(kwargs=dict(b)).run(model) for b in batches]  # every input the tokenizer gives (ONNX)

    dense = embed(base)
    records = {t.number: t for t in result.trials}
    scores = {}
    numbers = [c.number for c in result.pareto] if args.front else args.trials
    for number in numbers:
        out = embed(deployed(result, records[number]))
        cosine = torch.cat([F.cosine_similarity(a, b, dim=-1) for a, b in zip(out, dense)]).mean()
        scores[number] = {"validation": records[number].metric, "held_out": float(cosine),
                          "latency_ms": records[number].latency_ms}
    report = {"sentences": f"docstring_sentences()[{args.skip}:{args.skip + args.count}]", "trials": scores}
    if args.front:
        from compare_policies import front_figures
        from real_transformer import FLOOR, TARGETS

        points = [{"trial": n, "test": s["held_out"], "val": s["validation"],
                   "ratio": s["latency_ms"] / result.reference_latency_ms} for n, s in scores.items()]
        report["dense_ms"] = result.reference_latency_ms
        int8_dense = [t for t in result.trials if t.complete and t.policy is not None and result.policy(t).is_dense
                      and result.policy(t).quantize != "none" and t.recovery_steps is None]
        if int8_dense:  # the run's own timing of int8 alone: what a pruned int8 candidate must beat
            report["int8_dense_ms"] = int8_dense[0].latency_ms
            for n, s in scores.items():
                s["speedup_over_int8_dense"] = int8_dense[0].latency_ms / s["latency_ms"]
                s["quantize"] = result.policy(records[n]).quantize
        report["figures"] = front_figures(points, key="test", targets=TARGETS, floor=FLOOR)
    (args.run / "held_out.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
