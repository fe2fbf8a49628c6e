"""Samplers: a name of the built-in ones, or an Optuna sampler object the search uses as it is."""

from __future__ import annotations

import optuna
import pytest

from autoprune.api import search
from autoprune.backends.samplers import SAMPLERS, make_sampler
from autoprune.errors import StudyError
from tests.backends.conftest import REPO
from tests.conftest import fast_profile

TINY = REPO / "tests" / "data" / "tiny.yaml"


class CountingSampler(optuna.samplers.RandomSampler):
    """Random sampling that counts the parameters it drew."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.draws = 0

    def sample_independent(self, study, trial, param_name, param_distribution):
        self.draws += 1
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_a_sampler_object_drives_the_search(digits, tmp_path):
    """search(sampler=<an optuna sampler>) samples every trial's policy with that very object."""
    model, data = digits
    mine = CountingSampler(seed=0)
    result = search(model, data, space=TINY, n_trials=2, out_dir=tmp_path, sampler=mine, seed_policies=False,
                    profile=fast_profile())
    assert [t.state for t in result.trials] == ["complete", "complete"]
    assert mine.draws >= 2 * 4, "global level, a scale per unit, the regulariser and lr, for each trial"


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_named_sampler_is_an_optuna_sampler(name):
    assert isinstance(make_sampler(name, seed=0, n_trials=20), optuna.samplers.BaseSampler)


@pytest.mark.parametrize("bad", ["annealing", 3, None])
def test_anything_else_is_refused_with_the_names(bad):
    with pytest.raises(StudyError, match="unknown sampler.*'auto'"):
        make_sampler(bad, seed=0, n_trials=20)
