"""The method contract (:mod:`autoprune.testing.methods`), run for every method in the registry (built-in and any
a test registers) on every architecture of the zoo: one test per promise."""

from __future__ import annotations

import pytest
import torch

from autoprune.methods import available_methods
from autoprune.testing import methods as contract


@pytest.mark.parametrize("method", available_methods())
def test_output_shape_unchanged_and_backward_works(zoo_model, method):
    _, model, x = zoo_model
    contract.check_output_shape_and_backward(method, model, x)


@pytest.mark.parametrize("method", available_methods())
def test_original_model_untouched(zoo_model, method):
    _, model, x = zoo_model
    contract.check_original_untouched(method, model, x)


@pytest.mark.parametrize("method", available_methods(structured=False))
@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_unstructured_sparsity_within_two_points(zoo_model, method, sparsity):
    _, model, x = zoo_model
    contract.check_unstructured_sparsity(method, model, x, sparsity)


@pytest.mark.parametrize("method", available_methods(structured=True))
def test_structured_sparsity_within_two_points(zoo_model, method):
    _, model, x = zoo_model
    contract.check_structured_sparsity(method, model, x)


@pytest.mark.parametrize("method", available_methods(structured=True))
def test_structured_lowers_params_and_macs(zoo_model, method):
    _, model, x = zoo_model
    contract.check_structured_shrinks(method, model, x)


def test_a_prune_that_modifies_the_callers_model_fails_the_contract(monkeypatch):
    """The suite can fail: a prune that shifts a weight of the caller's model is caught."""
    real = contract.prune

    def in_place(model, *args, **kwargs):
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(contract, "prune", in_place)
    with pytest.raises(AssertionError, match="the caller's model changed"):
        contract.check_method("l1_unstructured", architectures=["MLP"])
