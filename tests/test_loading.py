"""Loading: models, weights and data named as the CLI names them, and a stored study read back."""

from __future__ import annotations

import pytest
import torch

from autoprune.errors import DataError, ModelLoadError, StudyError
from autoprune.loading import build_data, build_model, import_object, load_result, load_weights, open_result
from autoprune.zoo import MLP


@pytest.mark.parametrize("spec, message", [
    ("autoprune.zoo", "must look like package.module:function"),
    ("no_such_pkg.models:build", "cannot import 'no_such_pkg.models'"),
    ("autoprune.zoo:NoSuchNet", "has no attribute 'NoSuchNet'"),
])
def test_a_spec_that_names_nothing_importable_says_what_is_wrong(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        import_object(spec, "model")


def test_a_factory_builds_the_model_with_its_weights(tmp_path):
    torch.manual_seed(0)
    trained = MLP()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    model = build_model("autoprune.zoo:MLP", tmp_path / "w.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))


def test_weights_of_another_shape_name_the_keys_that_differ(tmp_path):
    torch.save(MLP(hidden=8).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelLoadError, match=r"does not fit .*fc1.weight \(8, 16\) in the file, \(32, 16\)"):
        load_weights(MLP(), tmp_path / "w.pt")


def test_a_saved_model_file_is_refused_saying_to_give_its_python_model_and_weights(tmp_path):
    torch.jit.script(MLP()).save(str(tmp_path / "model.pt"))
    with pytest.raises(ModelLoadError, match="cannot be pruned.*package.module:function.*--weights"):
        build_model(str(tmp_path / "model.pt"))


def test_a_factory_that_returns_no_module_is_refused():
    with pytest.raises(ModelLoadError, match="not a torch.nn.Module"):
        build_model("autoprune.defaults:N_TRIALS")


def test_a_data_factory_that_raises_is_named():
    """A factory that needs arguments cannot build the data: the error names the spec and the exception."""
    with pytest.raises(ModelLoadError, match="--data 'autoprune.loading:state_dict_mismatch' raised TypeError"):
        build_data("autoprune.loading:state_dict_mismatch")


def test_a_directory_without_a_study_is_refused(tmp_path):
    with pytest.raises(StudyError, match="holds no study.db"):
        open_result(out=tmp_path, storage=None, study_name=None)


def test_a_study_without_trials_has_no_result(tmp_path):
    from autoprune.backends.book import StudyBook
    from autoprune.backends.samplers import make_sampler
    from autoprune.backends.storage import make_storage
    from autoprune.study import StudyMeta

    url = f"sqlite:///{tmp_path / 'study.db'}"
    StudyBook.open(make_storage(url), study_name="empty", sampler=make_sampler("random", seed=0, n_trials=1),
                   meta=StudyMeta(space_fingerprint="f"))
    with pytest.raises(DataError, match="no trials yet"):
        load_result(storage=url, study_name="empty")
