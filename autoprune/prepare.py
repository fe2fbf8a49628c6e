"""What ``search()`` sets up before its first trial: the model it prunes and the study it records in.

* :func:`prepare_model`: a private dense copy of the caller's model (the caller's is never touched), the
  data loaders, the example inputs every trial traces and times, and the search space bound to the
  model (its prunable layers, coupled units and removable blocks).
* :func:`prepare_study`: the study created, or joined after checking that it agrees with this search
  (space, metric, objectives, the profile latency is measured under), and the latency reference every
  worker of the study times its candidates against.

Example:
    >>> import torch
    >>> from autoprune.space import load_space
    >>> from autoprune.zoo import MLP
    >>> batches = [(torch.randn(4, 16), torch.randint(0, 10, (4,)))]
    >>> prepared = prepare_model(MLP(), (batches, batches), load_space("structured"))
    >>> prepared.resolved.layers, prepared.example_inputs.args[0].shape
    (('fc1', 'fc2'), torch.Size([2, 16]))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from autoprune.backends.book import StudyBook
from autoprune.backends.storage import Storage
from autoprune.depth import removable_blocks
from autoprune.errors import DataError
from autoprune.finetune import first_inputs, resolve_data
from autoprune.layers import output_layers, run_model
from autoprune.measure import HardwareProfile, LatencyReference, measure
from autoprune.methods import get_method
from autoprune.modelio import Inputs, ModelIO
from autoprune.objective import dense_copy
from autoprune.seeds import HeadStart, Seeds, coupled_units, hidden_units, seed_params
from autoprune.resolved_space import ResolvedSpace
from autoprune.space import SearchSpace
from autoprune.study import StudyMeta


@dataclass(frozen=True)
class PreparedModel:
    """The dense model a search prunes (a private copy), its data, example inputs and resolved space."""

    base: nn.Module
    train_loader: Any
    val_loader: Any
    example_inputs: Inputs
    resolved: ResolvedSpace
    io: ModelIO = field(default_factory=ModelIO)

    def seeds(self, *, metric: Any, loss: Any, profile: HardwareProfile, reference: LatencyReference | None,
              head_start: HeadStart | None = None) -> Seeds:
        """A new study's seeded policies (see :mod:`autoprune.seeds`); a ``head_start`` from a saved analysis
        stands for the start-up scan."""
        return seed_params(self.resolved, self.base, self.example_inputs, self.train_loader, self.val_loader,
                           metric=metric, loss=loss, profile=profile, reference=reference, io=self.io,
                           head_start=head_start)


def prepare_model(model: nn.Module, data: Any, space: SearchSpace, io: ModelIO | None = None) -> PreparedModel:
    """Copy ``model``, resolve ``data`` into loaders (batches read through ``io``), and bind ``space`` to the copy.

    Raises:
        DataError: ``data`` is neither a LightningDataModule nor a ``(train_loader, val_loader)`` pair, or its
            training loader is empty.
        ExampleInputsError: the model cannot run the first validation batch.
        DataError: ``io`` selects no per-sample tensor of the model's output.
        SearchSpaceError, LayerMatchError: the space selects nothing, or a glob matches nothing.
    """
    io = io or ModelIO()
    train_loader, val_loader = resolve_data(data)
    example_inputs = first_inputs(val_loader, io=io)
    first = next(iter(train_loader), None)
    if space.finetune.max_steps > 0 and first is None:
        raise DataError("the training loader yields no batch, so no trial could fine-tune: check its dataset "
                        "(or set the space's finetune.max_steps to 0)")
    labelled = [m for m in space.methods if get_method(m).NEEDS_GRADIENTS]
    if labelled and first is not None and io.split(first)[1] is None:
        raise DataError(f"the space's method(s) {labelled} score channels by the task loss's gradients, and the "
                        "training batches carry no target: choose activation_structured (no labels needed) or "
                        "l1_structured, or give batches with labels")
    base = dense_copy(model)
    io.check_output(run_model(base, example_inputs), example_inputs)
    protected = output_layers(base, example_inputs)
    resolved = space.resolve(base, protected=protected, coupled=coupled_units(space, base, example_inputs, protected),
                             blocks=removable_blocks(base, example_inputs) if space.drop_blocks else (),
                             hidden=hidden_units(space, base, example_inputs, protected))
    return PreparedModel(base=base, train_loader=train_loader, val_loader=val_loader,
                         example_inputs=example_inputs, resolved=resolved, io=io)


def latency_budget(*, budget_ms: float | None, budget_ratio: float | None, meta: StudyMeta,
                   prepared: PreparedModel, profile: HardwareProfile) -> float | None:
    """The latency budget in ms: ``budget_ms`` as given, or ``budget_ratio`` times the study's stored dense
    timing (:attr:`StudyMeta.dense_ms`: one for every worker and for ``report``), or, for an older study
    that stored none, a timing of the dense model now."""
    if budget_ratio is None:
        return budget_ms
    if meta.dense_ms is None:  # an older study: its dense model timed now, resolved by the study's one rule
        meta = replace(meta, budget_dense_ms=measure(prepared.base, prepared.example_inputs, profile).latency_ms)
    return replace(meta, budget_ratio=budget_ratio).latency_budget_ms


def prepare_study(storage: Storage, *, study_name: str, sampler: Any, meta: StudyMeta, prepared: PreparedModel,
                  profile: HardwareProfile) -> tuple[StudyBook, LatencyReference | None]:
    """Create the study with ``meta`` (the dense model timed first, when candidates are timed against it),
    or join it; return its book and the latency reference (None when ``profile.interleave`` is off).

    Raises:
        StudyError: the stored study has another space, metric, objectives or latency profile (it is left
            as it is).
    """
    reference = None
    if not storage.has_study(study_name):
        if profile.interleave:
            reference = LatencyReference.calibrate(prepared.base, prepared.example_inputs, profile)
        elif meta.budget_ratio is not None:  # the one dense timing the ratio is resolved against, stored
            meta = replace(meta, budget_dense_ms=measure(prepared.base, prepared.example_inputs, profile).latency_ms)
    book = StudyBook.open(storage, study_name=study_name, sampler=sampler, meta=meta.with_reference(reference))
    stored = book.meta
    stored.check_profile(profile, study_name)
    if profile.interleave:
        reference = stored.reference(prepared.base, prepared.example_inputs, profile, calibrated=reference)
    return book, reference
