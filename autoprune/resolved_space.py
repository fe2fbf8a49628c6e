"""A search space bound to one model: drawing a trial's policy from it, and the seeded policies' parameters.

:meth:`autoprune.space.SearchSpace.resolve` binds a space to a model (its searched layers, coupled
units, removable blocks) and returns a :class:`ResolvedSpace`, which

* :meth:`ResolvedSpace.sample` draws one policy and its fine-tune settings through any object with
  Optuna's ``suggest_float(name, low, high, step=, log=)`` / ``suggest_categorical(name, choices)``
  methods (an Optuna ``Trial``, or a backend's adapter): this module imports neither optuna nor ray;
* :meth:`ResolvedSpace.seed_params` gives the parameters of the dense model and of the seeded policies,
  which a new study queues first.

Example:
    >>> import optuna
    >>> from autoprune.space import load_space
    >>> from autoprune.zoo import MLP
    >>> resolved = load_space("structured").resolve(MLP(), protected=["head"])
    >>> policy, settings = resolved.sample(optuna.create_study().ask())
    >>> sorted(policy.layers), settings.max_steps
    (['fc1', 'fc2'], 60)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from autoprune.errors import SearchSpaceError
from autoprune.methods import get_method
from autoprune.policy import LayerPolicy, Policy, Regularizer, inside
from autoprune.sparsity_modes import MODES, SparsityMode, drop_param

if TYPE_CHECKING:
    from autoprune.space import SearchSpace


#: the shares of the removable blocks the ranked shallow seeds drop (the cheapest first)
SHALLOW_SHARES = (1 / 3, 1 / 2)
#: the width level of the mixed seed (the cheapest block dropped, every unit thinned this much): a shape between
#: depth alone and width alone. all-MiniLM-L6-v2 recovered one layer and 20% of the others' heads and neurons to
#: 0.957 at 1.44x, two layers to 0.953 at 1.49x (a fixed run; in a search the two tied at 200 steps); on
#: EfficientNet-Lite0, where any width costs much, it is one trial spent (docs/benchmarks.md)
MIXED_LEVEL = 0.2


class Suggester(Protocol):
    """The part of Optuna's ``Trial`` interface a space (and a backend's trial job) needs."""

    number: int  # the trial's number in the study

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class FinetuneSettings:
    """The fine-tuning a trial runs: optimiser steps, learning rate and the optimiser's recipe."""

    max_steps: int
    lr: float
    calibration_batches: int
    optimizer: str = "adam"
    weight_decay: float = 0.0
    warmup_steps: int = 0
    #: ``linear``: the learning rate decays to zero over ``max_steps`` (a recovery); ``none``: constant
    decay: str = "none"
    #: ``off``: dropout and the like stay as at inference while fine-tuning (:data:`autoprune.dropout.DROPOUT`)
    dropout: str = "keep"


@dataclass(frozen=True)
class ResolvedSpace:
    """A space bound to one model. ``sample`` draws a (Policy, FinetuneSettings).

    ``units`` maps each searched unit's name to its layers: a layer on its own (named as the layer), or
    coupled layers searched together (named ``"a+b"``); ``per_layer`` and ``global_scale`` draw one
    value per unit. ``blocks`` are the residual blocks the search may drop whole (one yes/no each); a
    dropped block's layers leave the policy.
    """

    space: SearchSpace
    layers: tuple[str, ...]
    groups: dict[str, list[str]]
    units: dict[str, tuple[str, ...]]
    blocks: tuple[str, ...] = ()

    @property
    def mode(self) -> SparsityMode:
        """How the space's sparsity is drawn and seeded (:mod:`autoprune.sparsity_modes`)."""
        return MODES[self.space.sparsity.mode]

    def sample(self, trial: Suggester) -> tuple[Policy, FinetuneSettings]:
        s = self.space
        sparsity = self.mode.draw(trial, s.sparsity, units=self.units, groups=self.groups)
        drop = tuple(b for b in self.blocks if trial.suggest_categorical(drop_param(b), [False, True]))
        method = trial.suggest_categorical("method", list(s.methods))
        round_to = trial.suggest_categorical("round_to", list(s.round_to))
        kind = trial.suggest_categorical("regularizer", list(s.regularizer.kinds))
        strength = 0.0
        if kind != "none":
            r = s.regularizer.strength
            strength = trial.suggest_float("strength", r.low, r.high, log=r.log)
        lr = trial.suggest_float("lr", s.finetune.lr.low, s.finetune.lr.high, log=s.finetune.lr.log)
        # a space without quantization draws no parameter for it (its studies keep their parameters)
        quantize = trial.suggest_categorical("quantize", list(s.quantize)) if s.quantizes else "none"
        if kind == "group_lasso" and not get_method(method).STRUCTURED:
            kind = "l1"  # group lasso pushes whole channels to zero: only useful before structured removal
        policy = Policy(
            layers={n: LayerPolicy(sparsity=round(v, 6), method=method) for n, v in sparsity.items()
                    if not inside(n, drop)},
            regularizer=Regularizer(kind=kind, strength=strength),
            round_to=round_to,
            drop=drop,
            quantize=quantize,
        )
        ft = s.finetune
        return policy, FinetuneSettings(ft.max_steps, lr, ft.calibration_batches, optimizer=ft.optimizer,
                                        weight_decay=ft.weight_decay, warmup_steps=ft.warmup_steps,
                                        dropout=ft.dropout)

    def policy_of(self, params: Mapping[str, Any]) -> tuple[Policy, FinetuneSettings]:
        """The (Policy, FinetuneSettings) that ``params`` (a trial's or a seed's parameters) stand for."""
        return self.sample(_Fixed(params))

    def seed_params(self, levels: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9), *,
                    scales: Mapping[str, float] | None = None,
                    scaled_levels: tuple[float, ...] = (0.5, 0.7, 0.85),
                    shallow_levels: tuple[float, ...] = (0.0, 0.5),
                    block_order: Sequence[str] | None = None, free_blocks: Sequence[str] = (),
                    round_to: int | None | str = "first") -> list[dict[str, Any]]:
        """Parameters of the dense model (level 0), of uniform policies at ``levels``; given per-unit
        ``scales`` (from :mod:`autoprune.sensitivity`, keyed by ``units``), of scaled policies at
        ``scaled_levels``; and, when the space may drop blocks, of shallow policies (:meth:`shallow_seeds`:
        the cheapest blocks of ``block_order`` and the ``free_blocks`` dropped, or the :attr:`shallow_blocks`
        at ``shallow_levels``).

        Enqueued first, so the search's front is never worse than uniform pruning at those points and
        starts with non-uniform policies that follow the layers' sensitivity, and with shallow ones (a
        sampler that only ever saw every block kept would rarely try dropping one). Levels outside the
        space's range are left out. Every seed uses the space's first method and ``round_to`` (one of the
        space's options, by default its first). The uniform and shallow seeds fine-tune at the middle of
        the learning-rate range, the scaled ones at three quarters of the way up it (on a log range): a
        harder-pruned network recovers faster with larger steps in a short fine-tune, and seeds at two
        learning rates let the sampler learn that rather than copy one value. A space that may quantize or not
        seeds the uniform and shallow policies in both forms.
        """
        s = self.space
        round_to = s.round_to[0] if round_to == "first" else round_to
        if round_to not in s.round_to:
            raise SearchSpaceError(f"seed round_to {round_to!r} is not one of the space's options {list(s.round_to)}")
        sp, mode = s.sparsity, self.mode

        def in_range(level: float) -> bool:
            return sp.low <= level <= sp.high or (level == 0.0 and sp.low == 0.0)

        def uniform(level: float) -> dict[str, Any]:
            return mode.uniform(units=self.units, groups=self.groups, level=level)

        int8 = [m for m in s.quantize if m != "none"]

        def quantized_too(plain: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return plain + [{**seed, "quantize": int8[0]} for seed in plain] if int8 and "none" in s.quantize else plain

        # the uniform and shallow policies quantized too: dense + int8 is the baseline to beat, and depth + int8
        # is where the two compound (int8 speeds the matrix products up, dropping a layer its every operator)
        seeds = quantized_too([self._with_common(uniform(level), round_to=round_to) for level in levels
                               if in_range(level)])
        for level in scaled_levels if scales else ():
            params = mode.scaled(sp, units=self.units, level=level, scales=scales) if in_range(level) else None
            if params is not None:
                seeds.append(self._with_common(params, lr_at=0.75, round_to=round_to))
        seeds += quantized_too([self._with_common(uniform(level), round_to=round_to, drop=dropped)
                                for level, dropped in self.shallow_seeds(shallow_levels, block_order, free_blocks)
                                if in_range(level)])
        return seeds

    def shallow_seeds(self, levels: tuple[float, ...] = (0.0, 0.5), block_order: Sequence[str] | None = None,
                      free: Sequence[str] = ()) -> list[tuple[float, tuple[str, ...]]]:
        """The shallow seeds' ``(level, blocks dropped)``.

        Given the blocks cheapest to drop first (``block_order``, from
        :func:`autoprune.sensitivity.block_scan`: the metric a block's removal costs per latency it saves),
        the cheapest third and the cheapest half of the removable blocks go, at the first of ``levels``:
        depth alone, where it is cheapest (in a pretrained encoder the last layers matter most and the
        middle ones least, and which is which differs by model). Blocks whose removal alone costs nothing
        measurable (``free``, :func:`autoprune.sensitivity.free_blocks`) go in every shallow seed, and
        with any such block one more seed drops them at the last of ``levels``, width pruned too: the
        corner where an over-parameterised network is fastest. With three or more ranked blocks, one more
        (mixed) seed drops the cheapest block alone (and the free ones) with every unit thinned by
        :data:`MIXED_LEVEL`: depth and width in small doses each. An encoder keeps at least half its layers.

        Without a ranking, the :attr:`shallow_blocks` go at each of ``levels``."""
        if not self.blocks or not levels:
            return []
        ranked = [b for b in block_order or () if b in self.blocks]
        if not ranked:
            return [(level, self.shallow_blocks) for level in levels]
        free_set = {b for b in free if b in ranked}

        def dropped(k: int) -> tuple[str, ...]:
            picked = set(ranked[:k]) | free_set
            for members, encoder in self._containers():
                if encoder:  # at most half an encoder's layers, the cheapest
                    inside = [b for b in ranked if b in members and b in picked]
                    picked -= set(inside[len(members) // 2:])
            return tuple(b for b in self.blocks if b in picked)

        counts = [min(len(ranked), max(1, int(len(self.blocks) * share + 0.5))) for share in SHALLOW_SHARES]
        seeds = [(levels[0], blocks) for blocks in dict.fromkeys(dropped(k) for k in counts)]
        if free_set and len(levels) > 1:
            seeds.append((levels[-1], seeds[-1][1]))
        if len(ranked) >= 3:
            seeds.append((MIXED_LEVEL, dropped(1)))
        return seeds

    def _containers(self) -> list[tuple[tuple[str, ...], bool]]:
        """The removable blocks grouped by the module that holds them, and whether the group is an encoder's
        layers (consecutive entries from the first, each of which could go)."""
        runs: dict[str, list[str]] = {}
        for block in self.blocks:
            runs.setdefault(block.rpartition(".")[0], []).append(block)
        return [(tuple(members), len(members) > 1 and [b.rpartition(".")[2] for b in members] ==
                 [str(i) for i in range(len(members))]) for members in runs.values()]

    @property
    def shallow_blocks(self) -> tuple[str, ...]:
        """The blocks the shallow seeds drop without a ranking: every droppable block, except in an encoder
        (see :meth:`_containers`): there every other one goes, from the second (DistilBERT's way), so the
        seeds never drop a whole encoder."""
        chosen = [b for members, encoder in self._containers() for i, b in enumerate(members)
                  if not encoder or i % 2 == 1]
        return tuple(b for b in self.blocks if b in chosen)

    def _with_common(self, params: dict[str, Any], *, round_to: int | None, lr_at: float = 0.5,
                     drop: tuple[str, ...] = ()) -> dict[str, Any]:
        """The seed's other choices; its learning rate ``lr_at`` of the way up the range; the blocks in
        ``drop`` dropped, every other block kept."""
        s = self.space
        if s.quantizes:
            params["quantize"] = "none" if "none" in s.quantize else s.quantize[0]
        params.update({"method": s.methods[0], "round_to": round_to, "regularizer": s.regularizer.kinds[0],
                       "lr": s.finetune.lr.at(lr_at),
                       **{drop_param(b): b in drop for b in self.blocks}})
        if s.regularizer.kinds[0] != "none":
            params["strength"] = math.sqrt(s.regularizer.strength.low * s.regularizer.strength.high)
        return params


class _Fixed:
    """A :class:`Suggester` that answers from fixed parameters (a seed's), as the trial that ran them did."""

    number = -1

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return float(self.params[name])

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.params[name]


