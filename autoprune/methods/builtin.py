"""The built-in pruning methods: pure scoring and masking rules, registered at import.

| name                  | kind         | removes                                                        |
|-----------------------|--------------|----------------------------------------------------------------|
| ``l1_unstructured``   | unstructured | the weights of smallest magnitude                              |
| ``random_unstructured``| unstructured| random weights (a baseline)                                    |
| ``l1_structured``     | structured   | channels of smallest L1 norm (summed over coupled layers)      |
| ``l2_structured``     | structured   | channels of smallest L2 norm                                   |
| ``taylor_structured`` | structured   | channels of smallest first-order Taylor score abs(w * dL/dw),   |
|                       |              | gradients accumulated over a few calibration batches           |
| ``activation_structured`` | structured | channels of smallest ``sum |W| x ||X||`` at the layers that read |
|                       |              | them (weights times the channel's activation norm on calibration|
|                       |              | batches, Wanda's rule per channel): data-aware, needs no labels |
| ``fisher_structured`` | structured   | channels of smallest Fisher information of a mask on them       |
|                       |              | (Kwon et al. 2022), at the layers that read them; needs labels  |
| ``random_structured`` | structured   | random channels (a baseline)                                   |

The two data-aware methods score a channel where it is read (an attention head at the output projection,
a feed-forward neuron at the second linear, a convolution's channel at the next convolution, after its
BatchNorm and activation): see :mod:`autoprune.calibration`. A channel no layer reads with statistics
(only its writer is in the group) scores by its writer's L1 norm, so the method always ranks.
"""

from __future__ import annotations

import torch

from autoprune.methods.base import Member, StructuredMethod, UnstructuredMethod, register_method


def _mask_lowest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that drops exactly ``round(sparsity * n)`` entries of lowest score."""
    n_drop = int(round(sparsity * scores.numel()))
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_drop > 0:
        drop = torch.topk(scores.flatten(), n_drop, largest=False).indices
        mask[drop] = False
    return mask.view_as(scores)


class L1Unstructured(UnstructuredMethod):
    name = "l1_unstructured"

    def compute_mask(self, weight: torch.Tensor, sparsity: float, *, generator: torch.Generator) -> torch.Tensor:
        return _mask_lowest(weight.detach().abs(), sparsity)


class RandomUnstructured(UnstructuredMethod):
    name = "random_unstructured"

    def compute_mask(self, weight: torch.Tensor, sparsity: float, *, generator: torch.Generator) -> torch.Tensor:
        scores = torch.rand(weight.shape, generator=generator).to(weight.device)
        return _mask_lowest(scores, sparsity)


class L1Structured(StructuredMethod):
    name = "l1_structured"

    def channel_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.abs().sum(dim=1)


class L2Structured(StructuredMethod):
    name = "l2_structured"

    def channel_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.pow(2).sum(dim=1).sqrt()


class TaylorStructured(StructuredMethod):
    name = "taylor_structured"
    NEEDS_GRADIENTS = True

    def channel_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        if grad is None:  # a layer the loss does not reach carries no information: score it as unimportant
            return torch.zeros(weight.shape[0], device=weight.device)
        return (weight * grad).abs().sum(dim=1)


class ActivationStructured(StructuredMethod):
    name = "activation_structured"
    NEEDS_ACTIVATIONS = True

    def channel_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.abs().sum(dim=1)  # a member with no statistics: its L1 norm (see member_scores)

    def member_scores(self, member: Member) -> torch.Tensor:
        if member.outputs or member.input_norm is None:
            return torch.zeros(member.weight.shape[0], device=member.weight.device)
        return member.weight.abs().sum(dim=1) * member.input_norm.to(member.weight.device)


class FisherStructured(StructuredMethod):
    name = "fisher_structured"
    NEEDS_ACTIVATIONS = True
    NEEDS_GRADIENTS = True

    def channel_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.abs().sum(dim=1)

    def member_scores(self, member: Member) -> torch.Tensor:
        if member.outputs or member.input_fisher is None:
            return torch.zeros(member.weight.shape[0], device=member.weight.device)
        return member.input_fisher.to(member.weight.device)


class RandomStructured(StructuredMethod):
    name = "random_structured"

    def channel_scores(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return torch.rand(weight.shape[0], device=weight.device)


for _method in (L1Unstructured(), RandomUnstructured(), L1Structured(), L2Structured(), TaylorStructured(),
                ActivationStructured(), FisherStructured(), RandomStructured()):
    register_method(_method, overwrite=True)
