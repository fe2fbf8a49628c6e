"""The contract every backend keeps (see :mod:`autoprune.backends`): whatever runs the trials, the study's
rules hold (:mod:`autoprune.backends.loop`).

Each check runs real searches through the backend on the digits CNN (a few seconds each on a CPU):

* :func:`check_reaches_the_total`: ``n_trials`` trials count, the study holds what the backend ran, the
  result files are written;
* :func:`check_resumes_to_a_larger_total`: a second search on the same study runs only the missing trials;
* :func:`check_promotes`: with multi-fidelity on, candidates are promoted to the next rung, continuing their
  parent's policy (a backend that skips the book's promotion step fails here);
* :func:`check_failing_trial_recorded`: a trial that raises is recorded failed with its reason, counts
  towards the total, and the search goes on.

Example (about 20 seconds)::

    from autoprune.testing.backends import check_backend
    check_backend(MyBackend(), workdir=tmp_path)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.api import search
from autoprune.backends import Backend
from autoprune.demo import DigitsCNN, DigitsDataModule, train_classifier
from autoprune.finetune import accuracy
from autoprune.loading import load_result
from autoprune.result import SearchResult
from autoprune.space import SearchSpace
from autoprune.testing import FAST_PROFILE

#: a small structured space with a 2-step fine-tune (the rungs of multi-fidelity: 0 and 2 steps)
SPACE = SearchSpace.model_validate({
    "version": 1,
    "sparsity": {"mode": "global_scale", "low": 0.0, "high": 0.8, "step": 0.1, "scale_low": 0.5,
                 "scale_high": 1.5, "scale_step": 0.5},
    "methods": ["l1_structured"], "round_to": [None],
    "finetune": {"max_steps": 2, "lr": {"low": 1e-3, "high": 1e-2, "log": True}, "calibration_batches": 1},
})
WIDTH = 8


@functools.lru_cache(maxsize=1)
def digits() -> tuple[nn.Module, DigitsDataModule]:
    """The digits CNN trained for 2 epochs, and its data (trained once per process)."""
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=64)
    return train_classifier(DigitsCNN(width=WIDTH), data.train_dataloader(), epochs=2), data


def _search(backend: Backend | str, out: Path, n_trials: int, **kwargs: Any) -> SearchResult:
    model, data = digits()
    kwargs.setdefault("space", SPACE)
    return search(model, data, n_trials=n_trials, out_dir=out, seed=0, profile=FAST_PROFILE, backend=backend,
                  **kwargs)


def _stored(out: Path) -> SearchResult:
    return load_result(storage=f"sqlite:///{Path(out) / 'study.db'}", study_name="autoprune")


def check_reaches_the_total(backend: Backend | str, workdir: Path) -> None:
    """A search of 3 trials ends with 3 that count, the same in the study, and writes the front."""
    out = Path(workdir) / "total"
    result = _search(backend, out, n_trials=3)
    counted = [t.number for t in result.trials if t.counts]
    assert len(counted) == 3, f"{backend}: the search ended with trials {counted} counting, not 3"
    stored = [t.number for t in _stored(out).trials if t.counts]
    assert stored == counted, f"{backend}: the study holds trials {stored}, the result says {counted}"
    assert json.loads((out / "pareto.json").read_text())["pareto"], f"{backend}: pareto.json holds no candidate"


def check_resumes_to_a_larger_total(backend: Backend | str, workdir: Path) -> None:
    """A search of 2 trials, then the same study to 3: only the missing trial runs, and 3 count."""
    out = Path(workdir) / "resume"
    _search(backend, out, n_trials=2)
    again = _search(backend, out, n_trials=3)
    assert sum(t.counts for t in again.trials) == 3, f"{backend}: the resumed study does not hold 3 trials"
    assert again.session_trials is not None and len(again.session_trials) == 1, \
        f"{backend}: the resumed search ran trials {sorted(again.session_trials or [])}, not just the missing one"


def check_promotes(backend: Backend | str, workdir: Path, *, n_trials: int = 6) -> None:
    """With multi-fidelity on, some candidate is promoted: a trial at rung 1 that continues a complete rung-0
    trial's policy, with the full fine-tune."""
    out = Path(workdir) / "promote"
    result = _search(backend, out, n_trials=n_trials, fidelity=True, sampler="random", seed_policies=False)
    by_number = {t.number: t for t in result.trials}
    promoted = [t for t in result.trials if t.complete and t.rung > 0]
    assert promoted, f"{backend}: no candidate was promoted in {n_trials} multi-fidelity trials (the book's " \
                     "promotion step, StudyBook.next_step, was skipped?)"
    for t in promoted:
        parent = by_number.get(t.parent)
        assert parent is not None and parent.complete and parent.rung == t.rung - 1, \
            f"{backend}: trial {t.number} at rung {t.rung} continues {t.parent}, which is not a complete trial " \
            "of the rung below"
        assert parent.policy == t.policy, f"{backend}: trial {t.number} changed its parent's policy"


#: the failure reason :func:`check_failing_trial_recorded` expects
FAILURE = "contract check: a pruned model's metric raises"


def fails_when_pruned(model: nn.Module, loader: Any) -> float:
    """A metric that raises for any model smaller than the dense digits CNN (importable, so Ray workers run it)."""
    dense = sum(p.numel() for p in DigitsCNN(width=WIDTH).parameters())
    if sum(p.numel() for p in model.parameters()) < dense:
        raise ValueError(FAILURE)
    return accuracy(model, loader)


def check_failing_trial_recorded(backend: Backend | str, workdir: Path) -> None:
    """Trials whose metric raises fail with that reason, count towards the total, and the search goes on to it."""
    out = Path(workdir) / "failing"
    result = _search(backend, out, n_trials=4, metric=fails_when_pruned, seed_policies=False)
    failed = [t for t in result.trials if t.state == "failed"]
    assert failed, f"{backend}: no trial failed although every pruned model's metric raises"
    wrong = [t.failure_reason for t in failed if FAILURE not in (t.failure_reason or "")]
    assert not wrong, f"{backend}: failed trials record {wrong}, not the error they raised"
    assert sum(t.counts for t in result.trials) == 4, f"{backend}: failed trials do not count towards the total"


def check_backend(backend: Backend | str, workdir: Path) -> None:
    """The whole suite for ``backend`` (an object or a registered name), in a fresh folder ``workdir``."""
    check_reaches_the_total(backend, workdir)
    check_resumes_to_a_larger_total(backend, workdir)
    check_promotes(backend, workdir)
    check_failing_trial_recorded(backend, workdir)
