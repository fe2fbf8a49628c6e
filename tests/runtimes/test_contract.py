"""The runtime contract (:mod:`autoprune.testing.runtimes`), run for every runtime in the registry (built-in and
any a test registers): one test per promise and architecture."""

from __future__ import annotations

import pytest

from autoprune.runtimes import available_runtimes
from autoprune.testing import runtimes as contract


@pytest.mark.parametrize("runtime", available_runtimes())
@pytest.mark.parametrize("make", contract.MODELS)
def test_the_forward_computes_the_modules_outputs(runtime, make):
    contract.check_forward_computes_the_outputs(runtime, make)


@pytest.mark.parametrize("runtime", available_runtimes())
def test_the_module_is_left_untouched(runtime):
    contract.check_module_untouched(runtime)


def test_a_runtime_that_computes_something_else_fails_the_contract(monkeypatch):
    """The suite can fail: a runtime whose forward returns zeros is caught."""
    import torch

    from autoprune.runtimes import get_runtime

    eager = get_runtime("eager")
    real = eager.forward
    monkeypatch.setattr(type(eager), "forward", lambda self, *a, **k: (lambda: torch.zeros_like(real(*a, **k)())))
    with pytest.raises(AssertionError, match="does not compute the module's outputs"):
        contract.check_forward_computes_the_outputs("eager", contract.MODELS[0])
