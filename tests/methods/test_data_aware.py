"""The data-aware structured methods: activation_structured (weights x activation norm) and fisher_structured
(Fisher information of a channel mask), scored where a channel is read."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune import LayerPolicy, Policy, prune
from autoprune.calibration import input_statistics
from autoprune.errors import CalibrationError


class Silenced(nn.Module):
    """fc1 -> ReLU -> fc2, where fc1's channel 0 has the largest weights but is always negative (ReLU silences
    it) and channel 1 has small weights but carries the signal fc2 reads."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc1.weight.zero_()
            self.fc1.bias.copy_(torch.tensor([-100.0, 0.0, 0.0, 0.0]))
            self.fc1.weight[0] = 10.0  # big weights: L1 keeps it; but the bias keeps it below zero
            self.fc1.weight[1] = torch.tensor([0.1, 0.0, 0.0, 0.0])
            self.fc1.weight[2] = torch.tensor([0.0, 0.2, 0.0, 0.0])
            self.fc1.weight[3] = torch.tensor([0.0, 0.0, 0.3, 0.0])
            self.fc2.weight.fill_(1.0)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _batches():
    torch.manual_seed(0)
    x = torch.rand(64, 4)  # inputs in [0, 1]: channel 0 is -100 + at most 40 < 0
    return [(x, (x[:, 0] > 0.5).long())]


def _kept_rows(model, method):
    policy = Policy(layers={"fc1": LayerPolicy(sparsity=0.25, method=method)})
    pruned = prune(model, policy, torch.rand(2, 4), calibration_data=_batches())
    return pruned.fc1.weight.shape[0], pruned.fc1.bias.detach()


@pytest.mark.parametrize("method", ["activation_structured", "fisher_structured"])
def test_a_channel_the_activation_silences_goes_first_whatever_its_weights(method):
    model = Silenced()
    rows, bias = _kept_rows(model, method)
    assert rows == 3 and -100.0 not in bias.tolist(), "the silenced channel 0 was removed"
    _, bias = _kept_rows(model, "l1_structured")
    assert -100.0 in bias.tolist(), "L1 keeps it (its weights are the largest): the difference is the data"


def test_input_statistics_are_the_sums_of_squared_inputs_and_the_mask_fisher():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    stats = input_statistics(model, [(x, y)], layers=["2"], fisher=True)["2"]
    hidden = torch.relu(model[0](x)).detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model[2](hidden), y)
    (grad,) = torch.autograd.grad(loss, hidden)
    assert torch.allclose(stats.input_sq, hidden.detach().pow(2).sum(0), atol=1e-6)
    assert torch.allclose(stats.input_fisher, (hidden.detach() * grad).pow(2).sum(0), atol=1e-8)
    assert stats.samples == 6 and all(p.grad is None for p in model.parameters()), "gradients cleared"


def test_conv_statistics_sum_over_positions():
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 1, 1))
    x = torch.randn(4, 2, 6, 6)
    stats = input_statistics(conv, [(x, torch.zeros(4))], layers=["1"])["1"]
    assert torch.allclose(stats.input_sq, conv[0](x).detach().pow(2).sum(dim=(0, 2, 3)), rtol=1e-5)


def test_fisher_needs_labelled_batches():
    model = Silenced()
    policy = Policy(layers={"fc1": LayerPolicy(sparsity=0.25, method="fisher_structured")})
    unlabelled = [(torch.rand(8, 4), None)]
    with pytest.raises(CalibrationError, match="labelled batches"):
        prune(model, policy, torch.rand(2, 4), calibration_data=unlabelled)


def test_a_space_with_fisher_and_no_labels_is_refused_before_the_study():
    from autoprune.errors import DataError
    from autoprune.modelio import ModelIO
    from autoprune.prepare import prepare_model
    from autoprune.space import load_space

    space = load_space({"methods": ["fisher_structured"], "finetune": {"max_steps": 2}})
    batches = [torch.rand(8, 4) for _ in range(2)]
    with pytest.raises(DataError, match="activation_structured"):
        prepare_model(Silenced(), (batches, batches), space, ModelIO(target=None))
