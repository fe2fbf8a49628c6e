"""Search spaces: the shipped files validate, errors name file and field, sampling stays in range."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoprune.errors import LayerMatchError, SearchSpaceError
from autoprune.resolved_space import MIXED_LEVEL
from autoprune.space import BUILTIN_SPACES, load_space
from autoprune.zoo import ResNetCNN

TINY = Path(__file__).parent / "data" / "tiny.yaml"


class Replay:
    """A suggester that returns fixed values, else the low end (records what was asked)."""

    def __init__(self, params=None):
        self.params, self.asked = dict(params or {}), {}

    def suggest_float(self, name, low, high, *, step=None, log=False):
        self.asked[name] = (low, high)
        return self.params.get(name, high)

    def suggest_categorical(self, name, choices):
        self.asked[name] = tuple(choices)
        return self.params.get(name, choices[-1])


@pytest.mark.parametrize("name", BUILTIN_SPACES)
def test_builtin_spaces_load_by_name(name):
    """Each shipped space loads by name (from package data) and has a distinct fingerprint."""
    assert load_space(name).version == 1
    assert len({load_space(n).fingerprint() for n in BUILTIN_SPACES}) == len(BUILTIN_SPACES)


def test_exponent_without_dot_is_a_number(tmp_path):
    """PyYAML reads 1e-5 as a string; the space coerces it to a float."""
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nregularizer: {kinds: [l1], strength: {low: 1e-7, high: 1e-5, log: true}}\n")
    assert load_space(path).regularizer.strength.low == pytest.approx(1e-7)


def test_invalid_field_error_names_file_field_and_allowed(tmp_path):
    """A bad value is reported with the file, the dotted field path and the constraint."""
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nsparsity: {high: 1.5}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_space(path)
    assert "bad.yaml" in str(info.value) and "sparsity.high" in str(info.value) and "less than 1" in str(info.value)


def test_unknown_method_and_unknown_field_are_rejected(tmp_path):
    """Unknown methods list the allowed ones; unknown keys are refused (typos do not pass silently)."""
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nmethods: [l9]\nmethodz: [x]\n")
    message = str(pytest.raises(SearchSpaceError, load_space, path).value)
    assert "l9" in message and "l1_structured" in message and "methodz" in message


def test_missing_file_is_a_clear_error():
    with pytest.raises(SearchSpaceError, match="neither a built-in space"):
        load_space("no/such/space.yaml")


def test_sampled_sparsities_stay_within_the_range():
    """global_scale: level x scale is capped at `high`; the output layer is never searched."""
    space = load_space(TINY).resolve(ResNetCNN(), protected=["head"])
    assert "head" not in space.layers
    policy, settings = space.sample(Replay())
    assert all(0.0 <= lp.sparsity <= 0.8 for lp in policy.layers.values())
    assert settings.max_steps == 2


def test_seed_params_reproduce_uniform_policies():
    """The seeds decode to the dense policy and to uniform policies at their levels."""
    space = load_space(TINY).resolve(ResNetCNN(), protected=["head"])
    seeds = space.seed_params()
    decoded = [space.sample(Replay(p))[0] for p in seeds]
    assert decoded[0].is_dense
    for params, policy in zip(seeds[1:], decoded[1:]):
        assert {lp.sparsity for lp in policy.layers.values()} == {params["sparsity.global"]}


def test_seeds_take_the_round_to_they_are_given_among_the_spaces_options():
    """seed_params(round_to=8) seeds aligned policies; an alignment the space does not offer is refused."""
    space = load_space("default").resolve(ResNetCNN(), protected=["head"])
    assert {p["round_to"] for p in space.seed_params()} == {None}
    assert {p["round_to"] for p in space.seed_params(round_to=8)} == {8}
    with pytest.raises(SearchSpaceError, match="round_to 4"):
        space.seed_params(round_to=4)


def test_layer_globs_that_match_nothing_are_rejected(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nlayers: ['nothing.*']\n")
    with pytest.raises(LayerMatchError, match="nothing"):
        load_space(path).resolve(ResNetCNN(), protected=["head"])


def test_scaled_seeds_follow_the_given_scales():
    """Seeds built from per-layer scales decode to non-uniform policies: a larger scale, more sparsity."""
    space = load_space(TINY).resolve(ResNetCNN(), protected=["head"])
    scales = {n: (1.5 if i == 0 else 0.5) for i, n in enumerate(space.layers)}
    seeds = space.seed_params(scales=scales, scaled_levels=(0.5,))
    policy = space.sample(Replay(seeds[-1]))[0]
    first, *rest = space.layers
    assert all(policy.layers[first].sparsity > policy.layers[n].sparsity for n in rest)


def test_scaled_seeds_fine_tune_with_larger_steps_than_uniform_ones():
    """Uniform seeds use the learning-rate range's (log) middle, scaled seeds three quarters up it."""
    space = load_space(TINY).resolve(ResNetCNN(), protected=["head"])
    scales = {n: 1.0 for n in space.layers}
    seeds = space.seed_params(levels=(0.3,), scales=scales, scaled_levels=(0.5,))
    lr = space.space.finetune.lr
    uniform, scaled = (space.sample(Replay(p))[1].lr for p in seeds)
    assert uniform == pytest.approx((lr.low * lr.high) ** 0.5)
    assert scaled == pytest.approx(lr.low ** 0.25 * lr.high ** 0.75)
    assert lr.low <= uniform < scaled <= lr.high


def test_coupled_layers_are_searched_as_one_unit():
    """With only structured methods, coupled layers get one scale and always the same sparsity."""
    coupled = [("stem", "layers.0.conv2"), ("layers.1.conv2", "layers.1.shortcut.0")]
    space = load_space(TINY).resolve(ResNetCNN(), protected=["head"], coupled=coupled)
    replay = Replay({"scale.stem+layers.0.conv2": 0.5, "scale.layers.0.conv1": 1.5, "sparsity.global": 0.4})
    policy = space.sample(replay)[0]
    assert "scale.stem+layers.0.conv2" in replay.asked and "scale.stem" not in replay.asked
    assert policy.layers["stem"].sparsity == policy.layers["layers.0.conv2"].sparsity == pytest.approx(0.2)
    assert policy.layers["layers.0.conv1"].sparsity == pytest.approx(0.6)
    assert len([k for k in replay.asked if k.startswith("scale.")]) == 4
    assert set(policy.layers) == set(space.layers)


def test_seeds_use_the_unit_parameters():
    """Every seeded parameter is one the sampler asks for, so the seeds decode as enqueued."""
    coupled = [("stem", "layers.0.conv2")]
    space = load_space(TINY).resolve(ResNetCNN(), protected=["head"], coupled=coupled)
    seeds = space.seed_params(scales={u: 1.0 for u in space.units}, scaled_levels=(0.5,))
    replay = Replay(seeds[-1])
    space.sample(replay)
    assert set(seeds[-1]) == set(replay.asked)


def test_a_space_with_unstructured_methods_keeps_coupled_layers_apart(tmp_path):
    """Unstructured methods zero weights per layer: coupled layers may differ, so each is its own unit."""
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nmethods: [l1_structured, l1_unstructured]\n")
    space = load_space(path).resolve(ResNetCNN(), protected=["head"], coupled=[("stem", "layers.0.conv2")])
    assert space.units["stem"] == ("stem",) and space.units["layers.0.conv2"] == ("layers.0.conv2",)


def _deep_space(tmp_path, drop_blocks="auto"):
    path = tmp_path / "deep.yaml"
    path.write_text(TINY.read_text() + f"drop_blocks: {drop_blocks}\n")
    return load_space(path)


BLOCKS = ["layers.0", "layers.1", "layers.3"]  # removable_blocks(ResNetCNN(blocks=2))


def test_each_droppable_block_is_one_choice_and_leaves_the_policy_when_dropped(tmp_path):
    """drop_blocks: auto asks drop.<block> per block; a dropped block's layers are not in the policy."""
    space = _deep_space(tmp_path).resolve(ResNetCNN(blocks=2), protected=["head"], blocks=BLOCKS)
    replay = Replay({"drop.layers.0": False, "drop.layers.1": True, "drop.layers.3": False})
    policy = space.sample(replay)[0]
    assert [k for k in replay.asked if k.startswith("drop.")] == [f"drop.{b}" for b in BLOCKS]
    assert policy.drop == ("layers.1",)
    assert not any(n.startswith("layers.1.") for n in policy.layers) and "layers.0.conv1" in policy.layers


def test_drop_blocks_globs_select_blocks_and_a_glob_matching_none_is_refused(tmp_path):
    assert _deep_space(tmp_path, '["layers.1"]').droppable(BLOCKS) == ("layers.1",)
    with pytest.raises(SearchSpaceError, match=r"drop_blocks pattern 'stage\*'.*removable.*layers.0"):
        _deep_space(tmp_path, '["stage*"]').droppable(BLOCKS)


def test_seeds_keep_every_block_except_the_shallow_seeds_which_drop_them_all(tmp_path):
    space = _deep_space(tmp_path).resolve(ResNetCNN(blocks=2), protected=["head"], blocks=BLOCKS)
    seeds = space.seed_params()
    drops = [tuple(p[f"drop.{b}"] for b in BLOCKS) for p in seeds]
    assert drops[-2:] == [(True,) * 3] * 2 and set(drops[:-2]) == {(False,) * 3}
    assert [p["sparsity.global"] for p in seeds[-2:]] == [0.0, 0.5]
    assert space.sample(Replay(seeds[-1]))[0].drop == tuple(BLOCKS)
    no_blocks = load_space(TINY).resolve(ResNetCNN(blocks=2), protected=["head"], blocks=BLOCKS)
    assert not any(k.startswith("drop.") for p in no_blocks.seed_params() for k in p)


def test_a_space_without_drop_blocks_keeps_the_fingerprint_it_had_before_depth_pruning():
    """Studies made before drop_blocks existed still resume: tiny.yaml's fingerprint, from the older code."""
    assert load_space(TINY).fingerprint() == "c5ec630a0d7b0bf8"


def test_shallow_seeds_drop_every_removable_block_but_half_an_encoders_layers():
    """Blocks of a network with other layers between them all go in the shallow seeds; an encoder whose
    every layer could go keeps every other one (never the whole encoder)."""
    from autoprune.resolved_space import ResolvedSpace

    space = load_space("default")
    resnet = ResolvedSpace(space=space, layers=("a",), groups={}, units={"a": ("a",)},
                           blocks=("layers.0", "layers.1", "layers.3"))
    assert resnet.shallow_blocks == ("layers.0", "layers.1", "layers.3")
    encoder = ResolvedSpace(space=space, layers=("a",), groups={}, units={"a": ("a",)},
                            blocks=tuple(f"encoder.layer.{i}" for i in range(6)))
    assert encoder.shallow_blocks == ("encoder.layer.1", "encoder.layer.3", "encoder.layer.5")
    shallow = [p for p in encoder.seed_params() if any(v is True for k, v in p.items() if k.startswith("drop."))]
    assert shallow and all([k for k, v in p.items() if k.startswith("drop.") and v] ==
                           [f"drop.encoder.layer.{i}" for i in (1, 3, 5)] for p in shallow)


def depth_alone(seeds: list[tuple[float, tuple[str, ...]]]) -> list[tuple[float, tuple[str, ...]]]:
    """The shallow seeds but the mixed one (see the mixed seed's own test)."""
    return [s for s in seeds if s[0] != MIXED_LEVEL]


def test_ranked_shallow_seeds_drop_the_cheapest_third_and_half_of_the_blocks():
    """Given the blocks cheapest to drop first, the shallow seeds drop the cheapest third and the cheapest
    half (depth alone, level 0), whatever their positions; blocks the ranking leaves out are never dropped."""
    from autoprune.resolved_space import ResolvedSpace

    layers = tuple(f"encoder.layer.{i}" for i in range(6))
    encoder = ResolvedSpace(space=load_space("default"), layers=("a",), groups={}, units={"a": ("a",)}, blocks=layers)
    order = [layers[i] for i in (3, 1, 2, 4)]  # 0 and 5 save no measurable time: unranked
    assert depth_alone(encoder.shallow_seeds(block_order=order)) == [(0.0, (layers[1], layers[3])),
                                                                     (0.0, (layers[1], layers[2], layers[3]))]
    shallow = [p for p in encoder.seed_params(block_order=order) if any(v is True for k, v in p.items()
                                                                       if k.startswith("drop."))
               and p["sparsity.global"] != MIXED_LEVEL]
    assert [[k for k, v in p.items() if k.startswith("drop.") and v] for p in shallow] == [
        ["drop.encoder.layer.1", "drop.encoder.layer.3"],
        ["drop.encoder.layer.1", "drop.encoder.layer.2", "drop.encoder.layer.3"]]
    assert all(p["sparsity.global"] == 0.0 for p in shallow)
    two = ResolvedSpace(space=load_space("default"), layers=("a",), groups={}, units={"a": ("a",)}, blocks=layers[:2])
    assert two.shallow_seeds(block_order=[layers[1]]) == [(0.0, (layers[1],))]
    assert encoder.shallow_seeds(block_order=[]) == encoder.shallow_seeds()  # no ranking: every other layer


def test_free_blocks_go_in_every_shallow_seed_and_add_one_with_width_pruned_too():
    """Blocks whose removal costs nothing are dropped in every ranked shallow seed, and one more seed drops
    them with width pruned (the last level); in an encoder at most half the layers go, the cheapest."""
    from autoprune.resolved_space import ResolvedSpace

    space = load_space("default")
    resnet = ResolvedSpace(space=space, layers=("a",), groups={}, units={"a": ("a",)},
                           blocks=("layers.0", "layers.1", "layers.3", "layers.5", "layers.7"))
    everything = resnet.blocks
    assert depth_alone(resnet.shallow_seeds(block_order=everything, free=everything)) == [(0.0, everything),
                                                                                          (0.5, everything)]
    assert depth_alone(resnet.shallow_seeds(block_order=everything, free=("layers.7",))) == [
        (0.0, ("layers.0", "layers.1", "layers.7")), (0.0, ("layers.0", "layers.1", "layers.3", "layers.7")),
        (0.5, ("layers.0", "layers.1", "layers.3", "layers.7"))]
    layers = tuple(f"encoder.layer.{i}" for i in range(6))
    encoder = ResolvedSpace(space=space, layers=("a",), groups={}, units={"a": ("a",)}, blocks=layers)
    order = [layers[i] for i in (3, 1, 2, 4, 0, 5)]
    assert depth_alone(encoder.shallow_seeds(block_order=order, free=layers)) == [
        (0.0, (layers[1], layers[2], layers[3])), (0.5, (layers[1], layers[2], layers[3]))]


def test_the_mixed_seed_drops_the_cheapest_block_with_every_unit_thinned_a_little():
    """With three or more ranked blocks, one shallow seed drops the cheapest block alone (with any free one)
    at MIXED_LEVEL of width; with fewer there is none (the third-share seed is already one block)."""
    from autoprune.resolved_space import ResolvedSpace

    layers = tuple(f"encoder.layer.{i}" for i in range(6))
    encoder = ResolvedSpace(space=load_space("default"), layers=("a",), groups={}, units={"a": ("a",)}, blocks=layers)
    mixed = [s for s in encoder.shallow_seeds(block_order=[layers[i] for i in (2, 1, 3)]) if s[0] == MIXED_LEVEL]
    assert mixed == [(MIXED_LEVEL, (layers[2],))]
    freed = encoder.shallow_seeds(block_order=[layers[i] for i in (2, 1, 3)], free=(layers[3],))
    assert freed[-1] == (MIXED_LEVEL, (layers[2], layers[3]))
    params = [p for p in encoder.seed_params(block_order=[layers[i] for i in (2, 1, 3)])
              if p["sparsity.global"] == MIXED_LEVEL]
    assert [[k for k, v in p.items() if k.startswith("drop.") and v] for p in params] == [["drop.encoder.layer.2"]]
    assert all(s[0] != MIXED_LEVEL for s in encoder.shallow_seeds(block_order=layers[:2]))


def test_the_optimizer_choices_are_the_fine_tunes_and_nothing_else(tmp_path):
    """Every optimiser the fine-tune knows is a valid space choice; a name it does not know is refused, listing them."""
    from autoprune.finetune import OPTIMIZERS

    for name in OPTIMIZERS:
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"version: 1\nfinetune: {{optimizer: {name}}}\n")
        assert load_space(path).finetune.optimizer == name
    path = tmp_path / "rmsprop.yaml"
    path.write_text("version: 1\nfinetune: {optimizer: rmsprop}\n")
    message = str(pytest.raises(SearchSpaceError, load_space, path).value)
    assert "rmsprop" in message and all(name in message for name in OPTIMIZERS)


def test_dropout_off_written_bare_in_yaml_reaches_every_trial_s_fine_tune(tmp_path):
    """YAML reads a bare ``off`` as false: ``finetune.dropout: off`` still means off, and a trial's settings carry
    it (the pretrained space's fine-tunes run without dropout); the older spaces keep their fingerprints."""
    path = tmp_path / "s.yaml"
    path.write_text("finetune:\n  dropout: off\n")
    assert load_space(path).finetune.dropout == "off"
    resolved = load_space("pretrained").resolve(ResNetCNN(blocks=2), protected=["head"], blocks=BLOCKS)
    assert resolved.policy_of(resolved.seed_params()[0])[1].dropout == "off"
    assert load_space("default").finetune.dropout == "keep"
