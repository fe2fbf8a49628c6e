"""``prune()``: apply a :class:`~autoprune.policy.Policy` to a copy of a model.

Order: the policy's dropped residual blocks are replaced by their identity shortcut first (depth
pruning, :mod:`autoprune.depth`); then, when a policy mixes methods, **structured methods** (they
change shapes: channels are physically removed group by group, see :mod:`autoprune.methods.structured`),
**then unstructured methods** on the weights that remain. So a layer's unstructured sparsity is the zero
fraction of its weights *after* any structured removal it was coupled into.

Example:
    >>> import torch, torch.nn as nn
    >>> from autoprune import prune, Policy, LayerPolicy
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> policy = Policy(layers={"0": LayerPolicy(sparsity=0.5, method="l1_structured")})
    >>> pruned = prune(model, policy, example_inputs=torch.randn(2, 8))
    >>> pruned[0].out_features, model[0].out_features
    (8, 16)
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from autoprune.attention import check_supported
from autoprune.calibration import input_statistics
from autoprune.depth import drop_blocks, removable_blocks
from autoprune.attention import attention_blocks
from autoprune.errors import CalibrationError, ExampleInputsError, LayerMatchError, PolicyError, PruningError
from autoprune.layers import output_layers, prunable_layers, run_model
from autoprune.methods import StructuredMethod, UnstructuredMethod, get_method
from autoprune.methods.structured import accumulate_gradients, apply_structured
from autoprune.methods.unstructured import apply_unstructured
from autoprune.modelio import ModelIO
from autoprune.policy import Policy
from autoprune.reconstruct import BATCHES as RECONSTRUCT_BATCHES, reconstruct_layers, removed_channels

LossFn = Callable[[Any, Any], torch.Tensor]


def _check_round_to(model: nn.Module, round_to: int | None, pruned: list[str]) -> None:
    """Refuse a ``round_to`` larger than every layer the policy prunes: channel counts are kept in multiples of
    it, so the policy would silently prune nothing."""
    if round_to is None or not pruned:
        return
    modules = dict(model.named_modules())
    heads = {name for block in attention_blocks(model) for name in block.projections}  # round_to does not apply
    widths = {n: modules[n].weight.shape[0] for n in pruned
              if n not in heads and getattr(modules[n], "weight", None) is not None}
    if widths and all(round_to > w for w in widths.values()):
        widest = max(widths, key=widths.__getitem__)
        raise PolicyError(f"round_to {round_to} is larger than every layer the policy prunes (the widest, {widest}, "
                          f"has {widths[widest]} output channels): channel counts are kept in multiples of round_to, "
                          f"so nothing would be pruned; use a round_to of at most {widths[widest]}, or none")


def prune(
    model: nn.Module,
    policy: Policy,
    example_inputs: Any,
    *,
    calibration_data: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    calibration_batches: int = 4,
    seed: int = 0,
    io: ModelIO | None = None,
    reconstruct: bool = False,
) -> nn.Module:
    """Return a pruned copy of ``model``; ``model`` itself is never modified.

    Args:
        model: any ``nn.Module`` (a ``LightningModule`` too) whose forward accepts ``example_inputs``.
        policy: which layers to prune, how much, with which registered method; which blocks to drop.
        example_inputs: a tensor, a tuple of tensors or a dict of named tensors the model can run (used to
            trace coupled channels).
        calibration_data: an iterable of labelled batches; required by methods that need gradients
            (``taylor_structured``).
        loss_fn: ``loss_fn(outputs, targets)`` for calibration; cross-entropy by default.
        calibration_batches: how many calibration batches to accumulate gradients over.
        seed: seeds the random baselines so a policy prunes reproducibly.
        io: how calibration batches and outputs are read (:class:`~autoprune.modelio.ModelIO`).
        reconstruct: after removing channels, refit the layers that read them so that their outputs match
            the dense model's on the calibration batches (:mod:`autoprune.reconstruct`; needs
            ``calibration_data``, labels not needed; it reads at least ``reconstruct.BATCHES`` of them).

    Raises:
        UnknownMethodError, SparsityError, LayerMatchError, NoPrunableLayersError, ExampleInputsError,
        CalibrationError: bad input, named in the message. Nothing is returned half-pruned.
        PruningError: the pruned model no longer runs (a defect, not bad input).
    """
    layers = prunable_layers(model)
    unknown = [name for name in policy.layers if name not in layers]
    if unknown:
        raise LayerMatchError(f"policy names layer(s) {unknown} that are not prunable layers of the model; "
                              f"prunable layers are {layers}")
    methods = {name: get_method(lp.method) for name, lp in policy.layers.items()}
    run_model(model, example_inputs)  # fail early, with ExampleInputsError, before copying anything
    if policy.drop:
        blocks = removable_blocks(model, example_inputs)
        wrong = [b for b in policy.drop if b not in blocks]
        if wrong:
            raise LayerMatchError(f"policy drops {wrong}, which are not removable residual blocks of the model "
                                  f"(a block whose output adds its unchanged input); removable blocks are {blocks}")

    structured = {n: (m, policy.layers[n].sparsity) for n, m in methods.items() if isinstance(m, StructuredMethod)}
    check_supported(model, [n for n, (_, s) in structured.items() if s > 0])
    _check_round_to(model, policy.round_to, [n for n, (_, s) in structured.items() if s > 0])
    pruned = drop_blocks(copy.deepcopy(model), policy.drop)
    unstructured = {n: (m, policy.layers[n].sparsity) for n, m in methods.items() if isinstance(m, UnstructuredMethod)}

    active = {n: (m, s) for n, (m, s) in structured.items() if s > 0}
    gradients = [n for n, (m, _) in active.items() if m.NEEDS_GRADIENTS and not m.NEEDS_ACTIVATIONS]
    activations = [n for n, (m, _) in active.items() if m.NEEDS_ACTIVATIONS]
    fisher = any(active[n][0].NEEDS_GRADIENTS for n in activations)
    needed = gradients + activations + (["reconstruction"] if reconstruct and active else [])
    batches: list[Any] = []
    if needed:
        if calibration_data is None:
            raise CalibrationError(f"{needed} need calibration batches (gradients, activations or the dense "
                                   "outputs to reconstruct): pass calibration_data= an iterable of batches")
        wanted = max(calibration_batches, RECONSTRUCT_BATCHES) if reconstruct and active else calibration_batches
        batches = list(itertools.islice(iter(calibration_data), wanted))
        if not batches:
            raise CalibrationError(f"calibration_data yielded no batch; {needed} need at least one")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if gradients:
            try:
                accumulate_gradients(pruned, batches, loss_fn or F.cross_entropy, max_batches=calibration_batches,
                                     io=io)
            except Exception as exc:
                raise CalibrationError(f"calibration for {gradients} failed: {type(exc).__name__}: {exc}") from exc
        stats = None
        if activations:
            try:
                stats = input_statistics(pruned, batches, layers=prunable_layers(pruned), fisher=fisher,
                                         loss_fn=loss_fn, max_batches=calibration_batches, io=io)
            except Exception as exc:
                raise CalibrationError(f"calibration for {activations} failed: {type(exc).__name__}: {exc}") from exc
        if structured:
            results = apply_structured(pruned, example_inputs, structured, protected=output_layers(model, example_inputs),
                                       round_to=policy.round_to, stats=stats)
            if reconstruct:
                reconstruct_layers(pruned, model, batches, removed=removed_channels(results), io=io,
                                   max_batches=len(batches))
        apply_unstructured(pruned, unstructured, seed=seed)

    try:
        run_model(pruned, example_inputs)
    except ExampleInputsError as exc:  # a defect of ours or of the dependency graph: say so plainly
        raise PruningError(f"the pruned model no longer runs ({exc}); the original model is untouched: exclude "
                           "the layers named in the error from the space, or report it") from exc
    return pruned
