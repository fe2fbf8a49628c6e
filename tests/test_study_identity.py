"""Studies keep to themselves (issue 20, points 2 and 3), with real files: two studies of one name beside
each other never share candidates, a candidate's weights are checked to be the file its trial saved, and a
study refuses to be resumed with another base model."""

from __future__ import annotations

import shutil

import pytest
import torch

from autoprune import search
from autoprune.errors import CandidateError, StudyError
from autoprune.loading import STUDY_MARKER, load_result
from autoprune.zoo import MLP
from tests.conftest import fast_profile
from tests.test_search import TINY


def _data(seed: int = 0):
    torch.manual_seed(seed)
    batches = [(torch.randn(16, 16), torch.randint(0, 10, (16,))) for _ in range(3)]
    return batches, batches


def _run(model, out, *, storage=None, study_name="build", n_trials=2, **kwargs):
    return search(model, _data(), space=TINY, n_trials=n_trials, out_dir=out, storage=storage, study_name=study_name,
                  profile=fast_profile(), seed=0, **kwargs)


def _model(seed: int = 0, hidden: int = 32) -> MLP:
    torch.manual_seed(seed)
    return MLP(hidden=hidden).eval()


def test_two_studies_of_one_name_beside_each_other_keep_their_own_candidates(tmp_path):
    """Two journal studies named alike in one folder save candidates in two directories, each marked with its
    study, and each study's candidates load as the models it saved."""
    shared = tmp_path / "coll"
    first = _run(_model(0), tmp_path / "a", storage=str(shared / "a.log"))
    second = _run(_model(0), tmp_path / "b", storage=str(shared / "b.log"), n_trials=3)
    assert first.meta.artifacts != second.meta.artifacts
    for result in (first, second):
        assert (tmp_path / result.meta.artifacts / STUDY_MARKER).is_file()
    again = load_result(storage=str(shared / "a.log"), study_name="build", base_model=_model(0))
    x = torch.randn(4, 16)
    for candidate in first.pareto:
        assert torch.equal(again.load_model(candidate)(x), first.load_model(candidate)(x))


def test_weights_overwritten_by_another_study_are_refused_when_loaded(tmp_path):
    """A candidate's weights file replaced by another trial's fails to load, naming the file, instead of
    loading the wrong model."""
    result = _run(_model(0), tmp_path / "a", n_trials=4)
    saved = [c for c in result.trials if c.artifact_dir is not None]
    assert len(saved) >= 2, "two saved candidates to swap"
    root = tmp_path / result.meta.artifacts
    shutil.copy(root / saved[1].artifact_dir / "weights.pt", root / saved[0].artifact_dir / "weights.pt")
    with pytest.raises(CandidateError, match="is not the file trial"):
        result.load_model(saved[0])


def test_a_candidates_directory_of_another_study_is_refused(tmp_path):
    """Pointing a second study at the first one's candidates directory fails before any trial runs."""
    first = _run(_model(0), tmp_path / "a", n_trials=1)
    with pytest.raises(StudyError, match="holds the candidates of another study"):
        _run(_model(0), tmp_path / "b", n_trials=1, artifacts_dir=first.meta.artifacts)


def test_resuming_with_another_architecture_is_refused_naming_it(tmp_path):
    _run(_model(0), tmp_path, n_trials=1)
    with pytest.raises(StudyError, match="another model: MLP with"):
        _run(_model(0, hidden=48), tmp_path, n_trials=2)


def test_resuming_with_other_weights_is_refused(tmp_path):
    _run(_model(0), tmp_path, n_trials=1)
    with pytest.raises(StudyError, match="other weights"):
        _run(_model(1), tmp_path, n_trials=2)


def test_resuming_with_the_same_model_runs_the_missing_trials(tmp_path):
    _run(_model(0), tmp_path, n_trials=1)
    result = _run(_model(0), tmp_path, n_trials=2)
    assert sum(t.complete for t in result.trials) == 2
