"""Sparsity modes (autoprune.sparsity_modes): the parameters a mode seeds are the ones it draws, so a seed's
policy is what its parameters say, in every mode."""

from __future__ import annotations

import pytest

from autoprune.space import SearchSpace
from autoprune.sparsity_modes import MODES
from autoprune.zoo import MLP

GROUPS = {"first": ["fc1"], "second": ["fc2"]}


def _resolved(mode: str):
    sparsity = {"mode": mode, "low": 0.0, "high": 0.8, "step": 0.1, "scale_low": 0.5, "scale_high": 1.5,
                "scale_step": 0.5, **({"groups": GROUPS} if mode == "per_group" else {})}
    space = SearchSpace.model_validate({"version": 1, "sparsity": sparsity, "methods": ["l1_structured"],
                                        "round_to": [None]})
    return space.resolve(MLP(), protected=["head"])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_uniform_seed_prunes_every_layer_at_its_level(mode):
    resolved = _resolved(mode)
    seeds = resolved.seed_params(levels=(0.5,), scaled_levels=())
    policy, _ = resolved.policy_of(seeds[0])
    assert {n: lp.sparsity for n, lp in policy.layers.items()} == {"fc1": 0.5, "fc2": 0.5}


@pytest.mark.parametrize("mode", [m for m in sorted(MODES) if MODES[m].scales_units])
def test_a_scaled_seed_prunes_each_unit_at_its_scaled_level(mode):
    resolved = _resolved(mode)
    seeds = resolved.seed_params(levels=(), scaled_levels=(0.4,), scales={"fc1": 0.5, "fc2": 1.5})
    policy, _ = resolved.policy_of(seeds[0])
    assert {n: lp.sparsity for n, lp in policy.layers.items()} == pytest.approx({"fc1": 0.2, "fc2": 0.6})


def test_a_mode_that_cannot_scale_units_seeds_no_scaled_policy():
    resolved = _resolved("per_group")
    assert resolved.seed_params(levels=(), scaled_levels=(0.4,), scales={"fc1": 0.5, "fc2": 1.5}) == []


def test_the_space_accepts_exactly_the_registered_modes():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="per_layer"):
        SearchSpace.model_validate({"version": 1, "sparsity": {"mode": "per_block"}})
