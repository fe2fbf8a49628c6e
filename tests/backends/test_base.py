"""The backend interface: a backend written against it alone runs a whole search; the registry's errors."""

from __future__ import annotations

import json

import pytest

from autoprune.api import search
from autoprune.backends import OptunaBackend, RayOptions, available_backends, get_backend, register_backend
from autoprune.backends.base import REGISTRY
from autoprune.errors import BackendError
from autoprune.loading import load_result
from tests.backends.conftest import REPO
from tests.backends.test_contract import SequentialBackend
from tests.conftest import fast_profile

TINY = REPO / "tests" / "data" / "tiny.yaml"


def _search(digits, out, backend, n_trials):
    model, data = digits
    return search(model, data, space=TINY, n_trials=n_trials, out_dir=out, seed=0, profile=fast_profile(),
                  backend=backend)


def test_a_registered_backend_runs_a_search_by_name(digits, tmp_path, monkeypatch):
    """A backend registered under a name runs every trial of the study, and the usual files are written."""
    toy = SequentialBackend()
    monkeypatch.setitem(REGISTRY.entries, toy.name, toy)
    result = _search(digits, tmp_path, "sequential-test", n_trials=3)
    assert toy.runs == 1 and toy.executed == 3
    assert [t.state for t in result.trials] == ["complete"] * 3 and result.session_trials == {0, 1, 2}
    assert json.loads((tmp_path / "pareto.json").read_text())["pareto"]
    stored = load_result(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="autoprune")
    assert [t.number for t in stored.trials] == [0, 1, 2], "the study holds what the backend ran"


def test_a_backend_object_resumes_a_study_to_its_total(digits, tmp_path):
    """An unregistered backend object passed in resumes a study: only the missing trial runs."""
    _search(digits, tmp_path, SequentialBackend(), n_trials=2)
    again = _search(digits, tmp_path, SequentialBackend(), n_trials=3)
    assert len(again.trials) == 3 and again.session_trials == {2}


def test_an_unknown_backend_is_named_with_the_registered_ones():
    with pytest.raises(BackendError, match=r"unknown backend 'slurm'.*\['optuna', 'ray'\]"):
        get_backend("slurm")


def test_ray_options_need_the_ray_backend():
    """ray= options given to a backend that takes none are refused, not ignored."""
    with pytest.raises(BackendError, match="takes no options"):
        get_backend("optuna", options=RayOptions())
    assert get_backend("ray", options=RayOptions(cpus_per_trial=2.0)).options.cpus_per_trial == 2.0


def test_only_backend_objects_register_and_names_do_not_clash():
    with pytest.raises(BackendError, match="instance of Backend"):
        register_backend("optuna")
    with pytest.raises(BackendError, match="already registered"):
        register_backend(OptunaBackend())
    assert available_backends() == ["optuna", "ray"]
