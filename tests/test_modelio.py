"""ModelIO and Inputs: how batches of every form reach a model and its outputs reach the loss."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from autoprune.errors import DataError, ExampleInputsError
from autoprune.modelio import Inputs, ModelIO, Selected
from autoprune.zoo import KeywordMLP


def test_a_tuple_batch_is_inputs_then_target():
    x, y = torch.randn(4, 3), torch.arange(4)
    inputs, target = ModelIO().split((x, y))
    assert inputs.args[0] is x and not inputs.kwargs and target is y
    inputs, _ = ModelIO().split(((x, x), y))  # several positional inputs
    assert len(inputs.args) == 2


def test_a_dict_batch_is_keyword_inputs_and_its_labels():
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5), "labels": torch.zeros(2)}
    inputs, target = ModelIO().split(batch)
    assert sorted(inputs.kwargs) == ["attention_mask", "input_ids"] and target is batch["labels"]
    inputs, target = ModelIO(target="attention_mask", inputs=("input_ids",)).split(batch)
    assert list(inputs.kwargs) == ["input_ids"] and target is batch["attention_mask"]


@pytest.mark.parametrize("io, batch, message", [
    (ModelIO(), (torch.randn(2, 3),), "target at index 1"),
    (ModelIO(inputs=("pixels",)), {"features": torch.randn(2, 3)}, r"lack the input key\(s\) \['pixels'\]"),
    (ModelIO(), "not a batch", "tuples or dicts of tensors"),
])
def test_a_batch_that_does_not_fit_says_how(io, batch, message):
    with pytest.raises(DataError, match=message):
        io.split(batch)


def test_the_loss_sees_logits_or_the_first_output_or_what_it_is_told():
    logits, hidden = torch.randn(2, 3), torch.randn(2, 5)
    assert ModelIO().select(OrderedDict(last_hidden_state=hidden, logits=logits)) is logits
    assert ModelIO().select((hidden, logits)) is hidden
    assert ModelIO(output="hidden").select({"logits": logits, "hidden": hidden}) is hidden
    assert ModelIO(output=1).select((hidden, logits)) is logits
    with pytest.raises(DataError, match="has no 'pooled'"):
        ModelIO(output="pooled").select({"logits": logits})


def test_example_inputs_of_every_form_and_what_timing_makes_of_them():
    ids = torch.arange(12).view(3, 4)
    inputs = Inputs.of({"input_ids": ids, "flag": True})
    assert inputs.names == ["input_ids"] and inputs.batch_size == 3
    repeated = inputs.repeat_first(5)
    assert repeated.kwargs["input_ids"].shape == (5, 4) and bool((repeated.kwargs["input_ids"] == ids[0]).all())
    assert repeated.kwargs["flag"] is True and inputs.take(1).kwargs["input_ids"].shape == (1, 4)
    assert inputs.to("cpu", torch.bfloat16).kwargs["input_ids"].dtype == torch.long, "ids stay integer"
    with pytest.raises(ExampleInputsError, match="got str"):
        Inputs.of("x")


def test_positional_and_keyword_inputs_bind_to_the_forward_for_tracing():
    model = KeywordMLP()
    features, mask = torch.randn(2, 16), torch.ones(2, 16)
    assert set(Inputs(args=(features,), kwargs={"mask": mask}).for_tracing(model)) == {"features", "mask"}
    assert Inputs(args=(features,)).for_tracing(model) == (features,)
    with pytest.raises(ExampleInputsError, match="do not fit KeywordMLP.forward"):
        Inputs(args=(features, mask), kwargs={"mask": mask}).for_tracing(model)


def test_the_exportable_wrapper_takes_tensors_positionally_and_returns_the_selected_output():
    model = KeywordMLP().eval()
    inputs = Inputs.of({"features": torch.randn(2, 16), "mask": torch.ones(2, 16)})
    wrapped = Selected(model, inputs)
    assert torch.equal(wrapped(*inputs.tensors), model(**inputs.kwargs)["logits"])
    traced = torch.jit.trace(wrapped, tuple(inputs.tensors))
    assert torch.allclose(traced(*inputs.tensors), wrapped(*inputs.tensors))
    assert isinstance(Selected(nn.Linear(3, 2), Inputs.of(torch.randn(1, 3)))(torch.randn(4, 3)), torch.Tensor)
