"""Hugging Face transformers, built tiny from configs (nothing is downloaded): heads and feed-forward pruned
whole, encoder layers dropped, exports that reload, and a search on dict batches with distillation."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune import Policy, prune, prunable_layers
from autoprune.api import search
from autoprune.attention import attention_blocks
from autoprune.depth import removable_blocks
from autoprune.distill import Distillation
from autoprune.errors import LayerMatchError
from autoprune.export import load_pruned, save_pruned
from autoprune.layers import output_layers
from autoprune.measure import measure
from autoprune.space import load_space
from tests.conftest import fast_profile, in_ci, output_of

if in_ci():  # installed by the dev extra: under CI these tests must run
    import transformers
else:
    transformers = pytest.importorskip("transformers", reason="pip install -e '.[hf]'")

VOCAB = 60


def tiny_bert(layers: int = 2) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config).eval()


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, num_labels=5)
    return transformers.ViTForImageClassification(config).eval()


def tokens(batch: int = 2, length: int = 10) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def tiny_distilbert() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                           max_position_embeddings=16, num_labels=2)
    return transformers.DistilBertForSequenceClassification(config).eval()


MODELS = {"bert": (tiny_bert, tokens), "vit": (tiny_vit, lambda: torch.randn(2, 3, 16, 16)),
          "distilbert": (tiny_distilbert, tokens)}


def _heads_and_ffn(model, x, sparsity=0.5):
    """Every searched layer but the hidden size's writers, as the transformer space searches them."""
    protected = set(output_layers(model, x))
    hidden = ("attention.output", "output.dense", "out_lin", "lin2")  # the residual stream's writers
    layers = [n for n in prunable_layers(model) if n not in protected and not any(h in n for h in hidden)]
    return Policy.uniform(layers, sparsity=sparsity, method="l1_structured")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_heads_go_whole_and_the_model_still_runs_forward_and_backward(name):
    """Half the heads of every layer go whole (2 of 4, head size unchanged), the feed-forward blocks lose half
    their neurons, the output keeps its shape, and parameters and MACs drop."""
    make, inputs = MODELS[name]
    model, x = make(), inputs()
    pruned = prune(model, _heads_and_ffn(model, x), x)
    assert [(b.heads, b.head_size) for b in attention_blocks(pruned)] == [(2, 8), (2, 8)]
    assert all(block.heads * block.head_size == pruned.get_submodule(block.projections[0]).out_features
               for block in attention_blocks(pruned))
    assert output_of(pruned, x).shape == output_of(model, x).shape
    pruned.train()
    output_of(pruned, x).sum().backward()
    dense, small = measure(model, x, fast_profile()), measure(pruned, x, fast_profile())
    assert small.params < dense.params and small.macs < dense.macs


def test_the_lowest_scoring_heads_are_the_ones_removed():
    """A head whose query/key/value weights are near zero goes first."""
    model, x = tiny_bert(), tokens()
    attention = model.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        for layer in (attention.query, attention.key, attention.value):
            layer.weight[8:16] *= 1e-3  # head 1
    layers = [f"bert.encoder.layer.0.attention.self.{p}" for p in ("query", "key", "value")]
    pruned = prune(model, Policy.uniform(layers, sparsity=0.25, method="l1_structured"), x)
    kept = pruned.bert.encoder.layer[0].attention.self.query.weight
    expected = torch.cat([attention.query.weight[:8], attention.query.weight[16:]])
    assert torch.equal(kept, expected)


def test_pruned_bert_exports_with_named_inputs_and_reloads(tmp_path):
    """save_pruned checks TorchScript, ONNX (inputs named as the batch's keys, sequence axis open) and the
    reload through load_pruned against the model in memory; a longer sequence runs in ONNX Runtime."""
    import onnxruntime

    model, x = tiny_bert(), tokens()
    policy = _heads_and_ffn(model, x)
    pruned = prune(model, policy, x)
    save_pruned(pruned, policy, tmp_path, example_inputs=x, base_model=model)
    reloaded = load_pruned(tmp_path, model)
    torch.testing.assert_close(output_of(reloaded, x), output_of(pruned, x), atol=1e-5, rtol=0)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    longer = tokens(3, 14)
    got = session.run(None, {k: v.numpy() for k, v in longer.items()})[0]
    torch.testing.assert_close(torch.from_numpy(got), output_of(pruned, longer), atol=1e-4, rtol=0)


def test_an_encoder_layer_can_be_dropped():
    model, x = tiny_bert(layers=3), tokens()
    assert removable_blocks(model, x) == [f"bert.encoder.layer.{i}" for i in range(3)]
    pruned = prune(model, Policy(drop=("bert.encoder.layer.1",)), x)
    assert output_of(pruned, x).shape == (2, 2)
    assert measure(pruned, x, fast_profile()).params < measure(model, x, fast_profile()).params


class _OpaqueAttention(nn.Module):
    """An attention that keeps its head count to itself."""

    def __init__(self):
        super().__init__()
        self.qkv, self.proj, self._heads = nn.Linear(8, 24), nn.Linear(8, 8), 2

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self._heads, 4).permute(2, 0, 3, 1, 4)
        return self.proj((q @ k.transpose(-1, -2)).softmax(-1).matmul(v).transpose(1, 2).reshape(b, t, 8))


def test_an_attention_autoprune_cannot_read_is_refused_with_what_to_exclude():
    model = nn.Sequential(nn.Linear(8, 8), _OpaqueAttention(), nn.Linear(8, 2))
    with pytest.raises(LayerMatchError, match=r"head layout of '1'.*exclude: \['1\.\*'\]"):
        prune(model, Policy.uniform(["1.qkv"], sparsity=0.5, method="l1_structured"), torch.randn(2, 5, 8))


def test_the_transformer_space_searches_heads_and_ffn_but_not_the_hidden_size(tmp_path):
    """Units per layer: the attention (query+key+value) and the feed-forward block; the residual stream's
    writers stay out unless the space says prune_hidden: true."""
    from autoprune.prepare import prepare_model

    model = tiny_bert()
    data = (DataLoader([{**{k: v[0] for k, v in tokens(1).items()}, "labels": 0}] * 4, batch_size=2),) * 2
    units = prepare_model(model, data, load_space("transformer")).resolved.units
    assert "bert.encoder.layer.0.attention.self.query+bert.encoder.layer.0.attention.self.key+" \
           "bert.encoder.layer.0.attention.self.value" in units
    assert "bert.encoder.layer.0.intermediate.dense" in units
    assert not any("output.dense" in u for u in units)
    space = tmp_path / "hidden.yaml"
    space.write_text(load_space("transformer").model_copy(update={"prune_hidden": True}).model_dump_json())
    wide = prepare_model(model, data, load_space(space)).resolved.units
    assert any("output.dense" in u for u in wide)


def _labelled_batches(n: int = 48) -> DataLoader:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(n):
        ids = torch.randint(1, VOCAB, (12,), generator=generator)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": int(ids[0] > VOCAB // 2)})
    return DataLoader(rows, batch_size=16)


def test_a_search_on_dict_batches_with_distillation_completes_every_trial(tmp_path):
    """Three trials of the transformer space, dict batches, distilled from the dense model: all complete, the
    front is not empty, and the best candidate reloads."""
    loader = _labelled_batches()
    result = search(tiny_bert(), (loader, loader), space="transformer", n_trials=3, out_dir=tmp_path, seed=0,
                    profile=fast_profile(), distill=Distillation(weight=0.5))
    assert [t.state for t in result.trials] == ["complete"] * 3, [t.failure_reason for t in result.trials]
    assert result.pareto and json.loads((tmp_path / "pareto.json").read_text())["pareto"]
    best = result.load_model(result.best())
    assert output_of(best, tokens()).shape == (2, 2)


def test_a_dropped_layer_and_the_heads_of_the_others_go_in_one_policy():
    """A model that returns its hidden states protects every layer's residual writers; those of a dropped
    layer are gone from the pruned copy, and pruning the other layers' heads in the same policy still works."""
    from autoprune.zoo import TinyBert, example_input

    model = TinyBert(layers=3).eval()
    x = example_input(model)
    heads = [f"layers.{i}.attention.{p}" for i in (0, 2) for p in ("query", "key", "value")]
    policy = Policy(layers=Policy.uniform(heads, sparsity=0.5, method="l1_structured").layers, drop=("layers.1",))
    pruned = prune(model, policy, x)
    assert [b.heads for b in attention_blocks(pruned)] == [2, 2]
    assert output_of(pruned, x).shape == (4, 3)
