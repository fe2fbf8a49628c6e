"""The Ray Tune backend on a real local Ray instance: same results as the Optuna backend, stop and resume."""

from __future__ import annotations

import json

import pytest
import torch

from autoprune.api import search
from autoprune.backends import RayOptions
from autoprune.demo import DigitsCNN, DigitsDataModule, train_classifier
from autoprune.errors import AutopruneInputError, StudyError
from tests.backends.conftest import REPO, free_port
from tests.conftest import fast_profile

TINY = REPO / "tests" / "data" / "tiny.yaml"


def test_ray_search_stopped_and_resumed_reaches_the_total_and_writes_the_usual_files(tmp_path):
    """Stopped after 2 trials and run again: finished trials are kept, the total is met, the files are written."""
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=64)
    model = train_classifier(DigitsCNN(width=8), data.train_dataloader(), epochs=2)
    settings = dict(space=TINY, n_trials=5, out_dir=tmp_path, seed=0, profile=fast_profile(), backend="ray",
                    ray=RayOptions(cpus_per_trial=1))
    seen = []

    def stop_after_two(record, result):
        seen.append(record)
        if len(seen) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does to the driver

    with pytest.raises(KeyboardInterrupt):
        search(model, data, on_trial_end=stop_after_two, **settings)
    finished = {r.number: r.metric for r in seen if r.state == "complete"}
    assert len(finished) == 2

    result = search(model, data, **settings)
    complete = {t.number: t.metric for t in result.trials if t.state == "complete"}
    assert len(complete) == 5
    assert all(complete[n] == m for n, m in finished.items()), "finished trials kept as they were"
    assert not result.session_trials & set(finished), "finished trials not re-run"
    assert all(t.failure_reason == "interrupted" for t in result.trials if t.state == "failed")
    for name in ("pareto.json", "trials.csv", "pareto.png", "best/model.ts", "best/policy.json"):
        assert (tmp_path / name).is_file(), name
    front = json.loads((tmp_path / "pareto.json").read_text())["pareto"]
    assert {c["number"] for c in front} == {c.number for c in result.pareto}
    assert result.load_model(result.best())(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_ray_runs_a_multi_fidelity_search_with_promotions(tmp_path):
    """With the Ray backend the driver promotes as it suggests: promoted trials continue feasible trials of the
    rung below, none twice, and the study stops at the total."""
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=64)
    model = train_classifier(DigitsCNN(width=8), data.train_dataloader(), epochs=2)
    result = search(model, data, space=TINY, fidelity=True, n_trials=12, out_dir=tmp_path, seed=0,
                    profile=fast_profile(), backend="ray", ray=RayOptions(cpus_per_trial=1, max_concurrent=1))
    done = {t.number: t for t in result.trials if t.complete}
    assert len(done) == 12
    promoted = [t for t in done.values() if t.parent is not None]
    assert promoted and len({(t.parent, t.rung) for t in promoted}) == len(promoted)
    assert all(done[t.parent].rung == t.rung - 1 and done[t.parent].feasible for t in promoted)
    assert result.pareto and not {c.number for c in result.pareto} & {t.parent for t in promoted}


def test_a_ray_address_that_does_not_answer_is_a_study_error(tmp_path):
    """--address of a head node that is not there: StudyError before anything is created."""
    with pytest.raises(StudyError, match="does not answer"):
        search(DigitsCNN(width=8), DigitsDataModule(), n_trials=1, out_dir=tmp_path / "run", backend="ray",
               ray=RayOptions(address=f"127.0.0.1:{free_port()}"))
    assert not (tmp_path / "run").exists()


def test_bad_ray_options_are_refused():
    """Non-positive resources or concurrency are input errors naming the option."""
    with pytest.raises(AutopruneInputError, match="cpus_per_trial"):
        RayOptions(cpus_per_trial=0)
    with pytest.raises(AutopruneInputError, match="max_concurrent"):
        RayOptions(max_concurrent=0)


def test_the_searcher_pickles_without_its_live_study(tmp_path):
    """Tune pickles its searcher; the live study and callbacks (a progress bar holds locks) stay out."""
    import threading

    from ray import cloudpickle

    from autoprune.backends.book import StudyBook
    from autoprune.backends.ray import StudySearcher
    from autoprune.backends.samplers import make_sampler
    from autoprune.backends.storage import make_storage
    from autoprune.study import StudyMeta

    store = make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=None)
    book = StudyBook.open(store, study_name="s", sampler=make_sampler("random", seed=0, n_trials=2),
                          meta=StudyMeta(space_fingerprint="f"))
    lock = threading.RLock()
    searcher = StudySearcher(book, job=lock, n_trials=2, on_trial_end=lambda record: lock.acquire())
    restored = cloudpickle.loads(cloudpickle.dumps(searcher))
    assert restored.n_trials == 2 and restored.book is None
