"""restrict_vocabulary(): a text model keeps the embedding rows of the tokens its data uses."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from autoprune.api import search
from autoprune.errors import DataError, ModelLoadError
from autoprune.export import load_pruned, save_pruned
from autoprune.policy import Policy
from autoprune.vocab import RemappedEmbedding, restrict_vocabulary
from tests.conftest import fast_profile, in_ci, output_of

if in_ci():
    import transformers
else:
    transformers = pytest.importorskip("transformers", reason="pip install -e '.[hf]'")

VOCAB, USED, UNK = 500, 40, 3  # the data uses ids 5..44 of 500


def bert(head: str = "classifier"):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)
    make = transformers.BertForSequenceClassification if head == "classifier" else transformers.BertForMaskedLM
    return make(config).eval()


def batches(n: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(5, 5 + USED, (12,), generator=generator)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": int(ids[0] > 25)})
    return DataLoader(rows, batch_size=8)


def test_outputs_on_the_data_s_tokens_are_unchanged():
    model = bert()
    small, _ = restrict_vocabulary(model, batches(), unknown_id=UNK)
    for batch in batches():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        torch.testing.assert_close(output_of(small, inputs), output_of(model, inputs), atol=1e-6, rtol=0)


def test_tokens_the_data_never_used_read_as_the_unknown_token():
    model = bert()
    small, _ = restrict_vocabulary(model, batches(), unknown_id=UNK)
    ids = torch.tensor([[5, 300, 7, 499]])
    as_unknown = torch.tensor([[5, UNK, 7, UNK]])
    torch.testing.assert_close(output_of(small, {"input_ids": ids}), output_of(model, {"input_ids": as_unknown}))


def test_the_embedding_shrinks_to_the_tokens_kept_and_the_caller_s_model_is_untouched():
    model = bert()
    before = sum(p.numel() for p in model.parameters())
    small, report = restrict_vocabulary(model, batches(), unknown_id=UNK, keep=[0, 1, 2])
    assert report.module == "bert.embeddings.word_embeddings"
    assert (report.before, report.kept) == (VOCAB, USED + 4)  # the data's tokens, unknown, and three kept
    assert isinstance(small.bert.embeddings.word_embeddings, RemappedEmbedding)
    assert sum(p.numel() for p in small.parameters()) == before - (VOCAB - report.kept) * 32
    assert report.bytes_saved == (VOCAB - report.kept) * 32 * 4 - VOCAB * 8
    assert model.bert.embeddings.word_embeddings.num_embeddings == VOCAB


def test_a_search_runs_on_the_restricted_model_and_its_candidates_reload(tmp_path):
    """The restricted model is an ordinary base model: trials prune it, and candidates save and reload."""
    small, _ = restrict_vocabulary(bert(), batches(), unknown_id=UNK)
    loader = batches()
    result = search(small, (loader, loader), space="transformer", n_trials=2, out_dir=tmp_path, seed=0,
                    profile=fast_profile(), seed_policies=False)
    assert [t.state for t in result.trials] == ["complete"] * 2, [t.failure_reason for t in result.trials]
    x = {k: v for k, v in next(iter(loader)).items() if k != "labels"}
    policy = Policy.uniform(["bert.encoder.layer.0.intermediate.dense"], sparsity=0.5, method="l1_structured")
    from autoprune.prune import prune

    pruned = prune(small, policy, x)
    save_pruned(pruned, policy, tmp_path / "saved", example_inputs=x, formats=("onnx",), base_model=small)
    torch.testing.assert_close(output_of(load_pruned(tmp_path / "saved", small), x), output_of(pruned, x))


def test_a_language_model_head_tied_to_the_embedding_is_refused():
    with pytest.raises(ModelLoadError, match="tied"):
        restrict_vocabulary(bert(head="mlm"), batches(), unknown_id=UNK)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"key": "tokens"}, DataError, "under 'tokens'"),
    ({"unknown_id": VOCAB + 1}, DataError, "outside the embedding"),
    ({"embedding": "bert.embeddings.nothing"}, ModelLoadError, "no nn.Embedding named"),
    ({"unknown_id": None}, DataError, "unknown_id must be"),
    ({"unknown_id": True}, DataError, "unknown_id must be"),
    ({"keep": "abc"}, DataError, "keep must be a list of token ids"),
    ({"keep": [1, -2]}, DataError, "keep must be a list of token ids"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    settings = {"unknown_id": UNK, **kwargs}
    with pytest.raises(error, match=message):
        restrict_vocabulary(bert(), batches(), **settings)


def test_no_batches_is_refused():
    with pytest.raises(DataError, match="yield nothing"):
        restrict_vocabulary(bert(), [], unknown_id=UNK)


def test_ids_beyond_the_vocabulary_are_a_data_error_not_torch_s_index_error():
    """The docstring promised DataError; the model's own forward raised IndexError first (issue 29, point 9)."""
    rows = [{"input_ids": torch.tensor([1, 2, VOCAB + 7]), "attention_mask": torch.ones(3, dtype=torch.long),
             "labels": 0}]
    with pytest.raises(DataError, match="cannot embed the batches' token ids"):
        restrict_vocabulary(bert(), DataLoader(rows, batch_size=1), unknown_id=UNK)


def test_a_restriction_that_saves_nothing_warns_and_returns_the_model_unchanged():
    every = [{"input_ids": ids, "attention_mask": torch.ones(10, dtype=torch.long), "labels": 0}
             for ids in torch.arange(VOCAB).view(-1, 10)]
    model = bert()
    with pytest.warns(UserWarning, match="saves nothing"):
        same, report = restrict_vocabulary(model, DataLoader(every, batch_size=5), unknown_id=UNK)
    assert report.bytes_saved == 0 and report.kept == VOCAB
    assert not any(isinstance(m, RemappedEmbedding) for m in same.modules())
