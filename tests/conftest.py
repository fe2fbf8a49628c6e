"""Shared fixtures: the architecture zoo with example inputs, and quiet, deterministic torch."""

from __future__ import annotations

import os

import pytest
import torch

from autoprune.zoo import ZOO, example_input

torch.set_num_threads(1)


def in_ci() -> bool:
    """Under CI (``CI=true``) optional components must be there: their tests run (and fail), never skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=sorted(ZOO))
def zoo_model(request):
    """(name, model in eval mode, example input) for every zoo architecture."""
    torch.manual_seed(0)
    model = ZOO[request.param]().eval()
    return request.param, model, example_input(model)


@pytest.fixture(scope="session")
def digits():
    """A narrow digits CNN trained for 2 epochs (enough to be far above chance) and its data; searches prune
    copies, so one model serves every test."""
    from autoprune.demo import DigitsCNN, DigitsDataModule, train_classifier

    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=64)
    return train_classifier(DigitsCNN(width=8), data.train_dataloader(), epochs=2), data


def output_of(model, x):
    """The output a loss sees (the logits of a dict output) of ``model`` on example inputs ``x`` of any form
    (a tensor, a tuple, a dict of keyword tensors)."""
    from autoprune.modelio import Inputs, ModelIO

    return ModelIO().run(model, Inputs.of(x))


def fast_profile(**overrides):
    from autoprune.measure import HardwareProfile

    settings = dict(warmup=1, repeats=3, min_sample_ms=0.5)
    settings.update(overrides)
    return HardwareProfile(**settings)
