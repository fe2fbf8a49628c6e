"""Distillation from the dense model (autoprune/distill.py): the layer-wise (hidden-state) term."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from autoprune import Policy, prune
from autoprune.distill import Distillation, LayerTap, Teacher, encoder_layers, hidden_term
from autoprune.errors import AutopruneInputError
from autoprune.finetune import Recipe, as_lightning, finetune
from autoprune.modelio import Inputs, ModelIO
from tests.conftest import in_ci

if in_ci():
    import transformers
else:
    transformers = pytest.importorskip("transformers", reason="pip install -e '.[hf]'")

VOCAB = 60
LAYERS = [f"bert.encoder.layer.{i}" for i in range(3)]


def tiny_bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2,
                                     initializer_range=0.3)  # layers that change the states
    return transformers.BertForSequenceClassification(config).eval()


def batches(n: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(1, VOCAB, (12,), generator=generator)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return DataLoader(rows, batch_size=8)


def layer_error(student, teacher: Teacher, loader: DataLoader) -> float:
    """The hidden-state term of ``student`` against the teacher, averaged over ``loader``'s batches."""
    tap, io, total = LayerTap(student, teacher.layers), ModelIO(), 0.0
    try:
        with torch.inference_mode():
            for batch in loader:
                inputs, _ = io.split(batch)
                io.run(student, inputs)
                total += float(hidden_term(tap.take(), teacher.both(inputs)[1], inputs.kwargs["attention_mask"]))
    finally:
        tap.remove()
    return total / len(loader)


def test_the_encoder_layers_are_the_attention_holding_entries_of_the_layer_list():
    assert encoder_layers(tiny_bert()) == LAYERS


def test_a_dense_copy_has_no_layer_wise_error_and_a_dropped_layer_does():
    model = tiny_bert()
    teacher = Teacher.of(model, ModelIO(), Distillation(hidden=1.0))
    assert layer_error(copy.deepcopy(model), teacher, batches()) == pytest.approx(0.0, abs=1e-10)
    dropped = prune(model, Policy(drop=("bert.encoder.layer.1",)), next(iter(batches())))
    assert layer_error(dropped, teacher, batches()) > 0.01


def test_a_dropped_layer_is_not_tapped():
    model = prune(tiny_bert(), Policy(drop=("bert.encoder.layer.1",)), next(iter(batches())))
    tap = LayerTap(model, LAYERS)
    ModelIO().run(model, Inputs.of(next(iter(batches()))))
    assert sorted(tap.take()) == ["bert.encoder.layer.0", "bert.encoder.layer.2"]
    tap.remove()


def test_padding_positions_carry_no_weight():
    teacher = torch.ones(1, 4, 3)
    student = teacher.clone()
    student[0, 2:] = 100.0  # wrong only where the mask says padding
    mask = torch.tensor([[1, 1, 0, 0]])
    assert float(hidden_term({"l": student}, {"l": teacher}, mask)) == 0.0
    assert float(hidden_term({"l": student}, {"l": teacher}, None)) > 1.0


def test_layer_wise_distillation_pulls_the_hidden_states_towards_the_dense_model():
    """The same pruned model fine-tuned the same steps, the output's KL alone against KL plus the hidden term:
    the hidden term leaves the kept layers' states nearer the dense model's."""
    model, loader = tiny_bert(), batches()
    example = next(iter(loader))
    policy = Policy(drop=("bert.encoder.layer.1",))
    errors = {}
    for weight in (0.0, 1.0):
        net = prune(model, policy, example)
        distill = Distillation(weight=1.0, kind="kl", hidden=weight)
        torch.manual_seed(0)
        module = as_lightning(net, loss=None, recipe=Recipe(lr=3e-3), io=ModelIO(), distill=distill,
                              teacher=Teacher.of(model, ModelIO(), distill))
        finetune(module, loader, policy=policy, max_steps=40)
        errors[weight] = layer_error(net, Teacher.of(model, ModelIO(), Distillation(hidden=1.0)), loader)
    assert errors[1.0] < 0.5 * errors[0.0], errors


def test_no_hook_stays_on_the_model_after_the_fine_tune():
    model, loader = tiny_bert(), batches()
    net = prune(model, Policy(drop=("bert.encoder.layer.1",)), next(iter(loader)))
    distill = Distillation(weight=1.0, hidden=1.0)
    module = as_lightning(net, loss=None, recipe=Recipe(lr=1e-3), io=ModelIO(), distill=distill,
                          teacher=Teacher.of(model, ModelIO(), distill))
    finetune(module, loader, policy=Policy(), max_steps=2)
    assert not any(m._forward_hooks for m in net.modules())


def test_without_a_hidden_weight_the_teacher_keeps_no_states():
    teacher = Teacher.of(tiny_bert(), ModelIO(), Distillation())
    assert teacher.layers == [] and teacher.both(Inputs.of(next(iter(batches()))))[1] == {}


@pytest.mark.parametrize("bad", [-0.5, True, "1"])
def test_a_bad_hidden_weight_is_refused(bad):
    with pytest.raises(AutopruneInputError, match="hidden-state"):
        Distillation(hidden=bad)


def test_search_refuses_hidden_states_of_a_model_without_encoder_layers_before_creating_anything(tmp_path):
    from autoprune.api import search
    from autoprune.zoo import MLP

    x = torch.randn(32, 16)
    loader = DataLoader(list(zip(x, torch.randint(0, 4, (32,)))), batch_size=8)
    with pytest.raises(AutopruneInputError, match="no ModuleList entry holds an attention"):
        search(MLP(in_features=16, num_classes=4), (loader, loader), n_trials=1, out_dir=tmp_path / "run",
               distill=Distillation(hidden=1.0))
    assert not (tmp_path / "run").exists()


def test_a_search_distilling_hidden_states_completes_its_trials(tmp_path):
    from autoprune.api import search
    from tests.conftest import fast_profile

    rows = [{**row, "labels": int(row["input_ids"][0] > VOCAB // 2)} for row in batches().dataset]
    loader = DataLoader(rows, batch_size=8)
    result = search(tiny_bert(), (loader, loader), space="transformer", n_trials=2, out_dir=tmp_path, seed=0,
                    profile=fast_profile(), distill=Distillation(weight=0.5, hidden=1.0))
    assert [t.state for t in result.trials] == ["complete"] * 2, [t.failure_reason for t in result.trials]


def test_the_command_line_refuses_hidden_states_without_distillation(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "autoprune.cli", "search", "--no-distill", "--distill-hidden", "1",
                           "--trials", "1", "--out", str(tmp_path / "run")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "--distill-hidden" in done.stderr and "--distill" in done.stderr
    assert not (tmp_path / "run").exists()
