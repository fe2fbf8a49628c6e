"""Policy: validation, immutability, and an exact JSON round-trip with a schema version."""

from __future__ import annotations

import dataclasses

import pytest

from autoprune import LayerPolicy, Policy, Regularizer
from autoprune.errors import PolicyError, SparsityError


def _policy():
    return Policy(
        layers={"b.conv": LayerPolicy(sparsity=0.25, method="l1_structured"),
                "a.fc": LayerPolicy(sparsity=0.5, method="l1_unstructured")},
        regularizer=Regularizer(kind="group_lasso", strength=1e-4),
        round_to=8,
    )


def test_dict_round_trip_is_exact():
    """from_dict(to_dict(p)) == p, and the dict carries the schema version."""
    policy = _policy()
    data = policy.to_dict()
    assert data["schema_version"] == 2  # version 2 added quantize
    assert Policy.from_dict(data) == policy
    assert Policy.from_dict(data).to_dict() == data


def test_json_file_round_trip(tmp_path):
    """A policy written to a JSON file reads back equal."""
    path = tmp_path / "policy.json"
    _policy().to_json(path)
    assert Policy.from_json(path) == _policy()


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), "half"])
def test_sparsity_outside_unit_interval_is_rejected(sparsity):
    """Sparsity must lie in [0, 1); the error is a SparsityError (a ValueError)."""
    with pytest.raises(SparsityError, match="sparsity"):
        LayerPolicy(sparsity=sparsity, method="l1_structured")
    assert issubclass(SparsityError, ValueError)


def test_policy_is_immutable():
    """Neither fields nor the layer mapping can be changed after construction."""
    policy = _policy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.round_to = 4
    with pytest.raises(TypeError):
        policy.layers["new"] = LayerPolicy(sparsity=0.1, method="l1_structured")


@pytest.mark.parametrize("data, match", [
    ({"schema_version": 99, "layers": {}}, "schema_version"),
    ({"schema_version": 1, "layers": {"x": {"sparsity": 0.1}}}, "missing"),
    ({"schema_version": 1, "layers": {}, "extra": 1}, "unknown policy field"),
    ({"schema_version": 1, "layers": {}, "regularizer": {"kind": "l3", "strength": 1}}, "regularizer kind"),
])
def test_malformed_dict_names_the_problem(data, match):
    """A malformed policy raises PolicyError naming the offending field."""
    with pytest.raises(PolicyError, match=match):
        Policy.from_dict(data)


def test_dropped_blocks_round_trip_and_policies_without_them_still_load():
    policy = Policy(layers={"stem": LayerPolicy(sparsity=0.5, method="l1_structured")}, drop=["layers.3", "layers.1"])
    assert policy.drop == ("layers.1", "layers.3") and not policy.is_dense
    assert Policy.from_dict(policy.to_dict()) == policy
    older = {k: v for k, v in _policy().to_dict().items() if k != "drop"}
    assert Policy.from_dict(older).drop == ()


def test_a_layer_inside_a_dropped_block_is_refused():
    with pytest.raises(PolicyError, match=r"layers.1.conv1.*inside dropped block"):
        Policy(layers={"layers.1.conv1": LayerPolicy(sparsity=0.5, method="l1_structured")}, drop=("layers.1",))
    with pytest.raises(PolicyError, match="drop must be a list"):
        Policy.from_dict({**_policy().to_dict(), "drop": "layers.1"})
