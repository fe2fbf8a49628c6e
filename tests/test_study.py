"""StudyMeta: what a study stores besides its trials, read back the same, and what a joining worker must match."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from autoprune.errors import StudyError
from autoprune.measure import HardwareProfile, LatencyReference
from autoprune.study import StudyMeta
from autoprune.zoo import MLP
from tests.conftest import fast_profile

PROFILE = fast_profile()


def _meta(**overrides) -> StudyMeta:
    values = dict(metric="accuracy", space_fingerprint="abc", budget_ms=5.0, n_trials=20, artifacts="/x/candidates",
                  profile=asdict(PROFILE), reference_ms=2.5, reference_profile=asdict(PROFILE), model="pkg:build",
                  data="pkg:data", space="default", extra={"owner": "me"})
    values.update(overrides)
    return StudyMeta(**values)


def test_the_stored_attributes_read_back_as_the_same_metadata():
    assert StudyMeta.from_attrs(_meta().to_attrs()) == _meta()


def test_a_study_written_before_the_typed_metadata_reads_the_same():
    """The flat attributes earlier versions stored (as a study holds them) give the same fields."""
    old = {"metric": "val_acc", "budget_ms": 5.0, "budget_mb": None, "n_trials": 30, "artifacts": "/a",
           "latency_reference": {"latency_ms": 3.2, "profile": asdict(PROFILE)}, "profile": asdict(PROFILE),
           "model": "examples.custom_model:build", "data": "examples.custom_model:loaders", "weights": None,
           "space": "structured", "space_fingerprint": "f00"}
    meta = StudyMeta.from_attrs(old)
    assert (meta.metric, meta.space_fingerprint, meta.reference_ms, meta.model, meta.space) == \
        ("val_acc", "f00", 3.2, "examples.custom_model:build", "structured")
    assert meta.extra == {}


def test_a_worker_with_another_space_or_metric_cannot_join():
    with pytest.raises(StudyError, match="another search space"):
        _meta().check_joinable(_meta(space_fingerprint="other"), "s")
    with pytest.raises(StudyError, match="optimises 'accuracy', not 'f1'"):
        _meta().check_joinable(_meta(metric="f1"), "s")
    _meta().check_joinable(_meta(budget_ms=1.0), "s")  # budgets may differ per worker


def test_a_profile_that_defines_latency_otherwise_is_refused():
    with pytest.raises(StudyError, match=r"batch_size 64 \(now 8\)"):
        _meta().check_profile(fast_profile(batch_size=8), "s")
    _meta().check_profile(fast_profile(repeats=9), "s")  # how carefully it is timed does not matter


def test_the_reference_is_the_studys_timing_under_the_same_profile_only():
    """A worker scales by the study's stored dense timing when its profile is the study's, else times anew."""
    model, x = MLP(), torch.randn(2, 16)
    calibrated = LatencyReference.calibrate(model, x, PROFILE, latency_ms=9.0)
    assert _meta().reference(model, x, PROFILE, calibrated=calibrated).latency_ms == 2.5
    other = HardwareProfile(**{**asdict(PROFILE), "repeats": 4})
    mine = LatencyReference.calibrate(model, x, other, latency_ms=7.0)
    assert _meta().reference(model, x, other, calibrated=mine).latency_ms == 7.0
