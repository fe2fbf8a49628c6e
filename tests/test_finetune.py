"""The brief fine-tune: the mode the model trains in, the mode it is left in, and the zeros it keeps."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune.errors import AutopruneInputError
from autoprune.finetune import ClassifierModule, as_lightning, check_precision, finetune
from autoprune.methods import UnstructuredMethod
from autoprune.methods.base import REGISTRY
from autoprune.policy import Policy
from autoprune.prune import prune


def _loader() -> DataLoader:
    torch.manual_seed(0)
    samples = [(torch.randn(4) * 3 + 5, i % 2) for i in range(32)]
    return DataLoader(samples, batch_size=8)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_a_model_arriving_in_eval_mode_fine_tunes_in_train_mode():
    """Batch norm statistics follow the data even when the (pruned) model arrives in eval mode, as pruned
    copies do; Lightning >= 2.2 would otherwise keep the eval mode and freeze them."""
    net = _net().eval()
    before = net[1].running_mean.clone()
    finetune(as_lightning(net, loss=None, lr=1e-3), _loader(), policy=Policy(), max_steps=4, prefix="net.")
    assert not torch.allclose(net[1].running_mean, before)
    assert not any(m.training for m in net.modules())


class _Modes(nn.Module):
    """Records, at every forward, whether its dropout and its BatchNorm were in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.norm, self.drop, self.out = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((self.drop.training, self.norm.training))
        return self.out(self.drop(self.norm(self.fc(x))))


@pytest.mark.parametrize("bn, norm_trains", [("train", True), ("freeze", False)])
def test_dropout_off_runs_every_step_without_dropout_and_leaves_batchnorm_to_its_policy(bn, norm_trains):
    """dropout="off": no training step sees dropout in train mode; BatchNorm trains unless bn freezes it."""
    net = _Modes()
    finetune(as_lightning(net, loss=None, lr=1e-3), _loader(), policy=Policy(), max_steps=6, bn=bn, dropout="off")
    assert len(net.seen) == 6 and set(net.seen) == {(False, norm_trains)}
    kept = _Modes()
    finetune(as_lightning(kept, loss=None, lr=1e-3), _loader(), policy=Policy(), max_steps=2)
    assert set(kept.seen) == {(True, True)}
    with pytest.raises(AutopruneInputError, match="dropout"):
        finetune(as_lightning(_Modes(), loss=None, lr=1e-3), _loader(), policy=Policy(), max_steps=1, dropout="no")


def test_layers_frozen_in_on_train_start_stay_frozen():
    """A LightningModule that sets a layer to eval in on_train_start keeps that layer's statistics."""

    class Frozen(ClassifierModule):
        def on_train_start(self) -> None:
            self.net[1].eval()

    net = _net().eval()
    before = net[1].running_mean.clone()
    finetune(Frozen(net, lr=1e-3), _loader(), policy=Policy(), max_steps=4)
    assert torch.equal(net[1].running_mean, before)


class _KeepLargest(UnstructuredMethod):
    """A user's unstructured method whose name does not say so."""

    name = "keep_largest_mask"

    def compute_mask(self, weight, sparsity, *, generator):
        keep = weight.abs().flatten().argsort(descending=True)[: weight.numel() - round(sparsity * weight.numel())]
        mask = torch.zeros(weight.numel(), dtype=torch.bool)
        mask[keep] = True
        return mask.view_as(weight)


def test_zeros_of_a_registered_unstructured_method_survive_the_fine_tune(monkeypatch):
    """Which layers keep their zeros follows the method's declared kind, not its name: a registered
    unstructured method called ``keep_largest_mask`` keeps exactly its sparsity through the fine-tune."""
    monkeypatch.setitem(REGISTRY.entries, _KeepLargest.name, _KeepLargest())
    policy = Policy.uniform(["0", "3"], sparsity=0.5, method=_KeepLargest.name)
    pruned = prune(_net().eval(), policy, torch.randn(2, 4))
    finetune(as_lightning(pruned, loss=None, lr=1e-2), _loader(), policy=policy, max_steps=4, prefix="net.")
    for layer in (pruned[0], pruned[3]):
        assert float((layer.weight == 0).float().mean()) == 0.5


def test_a_mixed_precision_fine_tune_trains_and_keeps_float32_weights():
    """bf16-mixed autocasts the forward (CPU here, a GPU in use) and leaves the weights float32."""
    net = _net().eval()
    before = net[0].weight.detach().clone()
    finetune(as_lightning(net, loss=None, lr=1e-2), _loader(), policy=Policy(), max_steps=3, prefix="net.",
             precision="bf16-mixed")
    assert net[0].weight.dtype == torch.float32 and not torch.equal(net[0].weight, before)


def test_an_unknown_precision_is_refused():
    with pytest.raises(AutopruneInputError, match=r"precision \(--precision\) must be one of"):
        check_precision("fp8")


def test_a_plain_list_of_batches_fine_tunes_as_one_loader():
    """A list of (x, y) batches is one loader, as a DataLoader is (Lightning would take a list for several
    loaders and feed the model pieces of batches)."""
    net = _net()
    batches = list(_loader())
    before = net[0].weight.clone()
    finetune(as_lightning(net, loss=None, lr=1e-2), batches, policy=Policy(), max_steps=3, prefix="net.")
    assert not torch.equal(net[0].weight, before)



def test_a_wrapped_model_keeps_its_zeros_without_being_told_its_prefix():
    """finetune() finds the policy's layers inside the wrapper as_lightning made (no "net." from the caller)."""
    policy = Policy.uniform(["0", "3"], sparsity=0.5, method="l1_unstructured")
    pruned = prune(_net().eval(), policy, torch.randn(2, 4))
    finetune(as_lightning(pruned, loss=None, lr=1e-2), _loader(), policy=policy, max_steps=4)
    for layer in (pruned[0], pruned[3]):
        assert float((layer.weight == 0).float().mean()) == 0.5


def test_a_recipe_builds_the_optimiser_it_names_and_refuses_an_unknown_one():
    """Recipe(optimizer=name) configures what finetune.OPTIMIZERS names; an unknown name is an input error."""
    from autoprune.finetune import OPTIMIZERS, Recipe

    for name, make in OPTIMIZERS.items():
        built = Recipe(optimizer=name).configure([nn.Parameter(torch.zeros(1))])
        assert type(built) is type(make([nn.Parameter(torch.zeros(1))], lr=1e-3))
    with pytest.raises(AutopruneInputError, match="rmsprop"):
        Recipe(optimizer="rmsprop")


def test_sgd_moves_each_weight_by_its_gradient_where_adam_moves_every_weight_alike():
    """Why a fragile pretrained CNN fine-tunes with sgd: a weight with a thousand times smaller gradient moves a
    thousand times less (Adam's first step moves both by the learning rate)."""
    from autoprune.finetune import Recipe

    moved = {}
    for name in ("sgd", "adam"):
        weight = nn.Parameter(torch.zeros(2))
        optimiser = Recipe(optimizer=name, lr=1e-2).configure([weight])
        weight.grad = torch.tensor([1.0, 1e-3])
        optimiser.step()
        moved[name] = weight.detach().abs()
    assert moved["sgd"][1] / moved["sgd"][0] == pytest.approx(1e-3)
    assert moved["adam"][1] / moved["adam"][0] > 0.9
    assert Recipe(optimizer="sgd").configure([nn.Parameter(torch.zeros(1))]).defaults["momentum"] == 0.9
