"""Budgets counted in forward passes of one member, and what an Adam step costs in them.

Every method of a run spends at most DE's budget, ``population * (generations + 1)`` forward
passes of one member (step 0 scores the initial population)::

    budget(config)                          -> int    P * (G + 1)
    RunCost.from_flops(adam, forward, P)    -> RunCost  an Adam step in forward passes (XLA FLOPs)
    gradient_steps(P, G, cost)              -> int    Adam steps that fit the budget
    hybrid_steps(P, G, fraction, cost)      -> (evolution steps, Adam steps)
    evolution_steps / total_steps / spent   what a config runs and spends at that cost

The measurement itself (compiling one Adam step and one scoring pass) is
:func:`jaxalign.optimize.pipeline.measure_cost`; this module only counts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxalign.config import AlignConfig

FALLBACK_FORWARDS_PER_STEP = 4.0  # an Adam step when XLA reports no FLOPs: forward, recompute, backward


@dataclasses.dataclass(frozen=True)
class RunCost:
    """What an Adam step costs in forward passes of one member, read from the compiled programs.

    ``adam_step_flops`` and ``forward_flops`` are XLA's cost analysis (``'flops'``) of the
    compiled Adam step of the run (C targets, one member each) and of one scoring pass of its
    ``members`` (C * P) members. XLA counts a loop's body once, so each figure stands for one
    layer of the layer scan plus the work outside it; their ratio per member,
    ``forwards_per_step``, is what an Adam step costs in forward passes (the rematerialised
    backward included). ``source``: ``"xla"`` (measured) or ``"fallback"``
    (:data:`FALLBACK_FORWARDS_PER_STEP`, when XLA gave no FLOP count).
    """

    forwards_per_step: float
    adam_step_flops: float | None = None
    forward_flops: float | None = None
    members: int = 1
    targets: int = 1
    source: str = "fallback"

    @classmethod
    def from_flops(cls, *, adam_step_flops: float | None, forward_flops: float | None, members: int,
                   targets: int = 1) -> RunCost:
        """The cost from the two FLOP counts (C targets' Adam step; one pass of ``members``)."""
        ok = all(v is not None and np.isfinite(v) and v > 0 for v in (adam_step_flops, forward_flops))
        if not ok:
            return cls(FALLBACK_FORWARDS_PER_STEP, adam_step_flops, forward_flops, members, targets, "fallback")
        ratio = (adam_step_flops / targets) / (forward_flops / members)
        return cls(float(ratio), float(adam_step_flops), float(forward_flops), members, targets, "xla")

    def to_dict(self) -> dict[str, Any]:
        return {"forwards_per_step": round(self.forwards_per_step, 6), "adam_step_flops": self.adam_step_flops,
                "forward_flops": self.forward_flops, "forward_members": self.members,
                "targets": self.targets, "source": self.source}


def budget(config: AlignConfig) -> int:
    """A run's budget in forward passes of one member: ``population * (generations + 1)``."""
    return config.population * (config.generations + 1)


def gradient_steps(population: int, generations: int,
                   forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Adam steps with DE's forward-pass budget: ``floor(population * (generations + 1) / cost)``.

    ``forwards_per_step``: an Adam step's cost in forward passes (:class:`RunCost`). Raises
    ValueError when the budget holds no step."""
    total = population * (generations + 1)
    steps = int(np.floor(total / forwards_per_step + 1e-9))
    if steps < 1:
        raise ValueError(f"gradient: a budget of {total} forward passes (population x (generations + 1)) "
                         f"holds no Adam step ({forwards_per_step:.3g} forward passes each); raise generations")
    return steps


def hybrid_steps(population: int, generations: int, fraction: float,
                 forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> tuple[int, int]:
    """``(evolution steps, Adam steps)`` of a hybrid run within DE's forward-pass budget.

    The evolution phase gets ``round(fraction * (generations + 1))`` steps (at least 2: the
    initial population and one generation, where the budget allows), capped so that one Adam
    step still fits; Adam gets what is left at ``forwards_per_step`` each. The total never exceeds
    ``population * (generations + 1)``; ValueError when not even one evolution step and one Adam
    step fit.
    """
    total = population * (generations + 1)
    room = int(np.floor((total - forwards_per_step) / population + 1e-9))  # evolution steps that leave an Adam step
    if room < 1:
        raise ValueError(f"hybrid: a budget of {total} forward passes (population x (generations + 1)) "
                         f"holds no evolution step ({population}) and one Adam step "
                         f"({forwards_per_step:.3g}); raise generations")
    evolution = min(max(2, round(fraction * (generations + 1))), room)
    left = total - population * evolution
    return evolution, int(np.floor(left / forwards_per_step + 1e-9))


def evolution_steps(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Steps run by the evosax strategy (all for DE, none for Adam, the first phase of hybrid)."""
    if config.method == "gradient":
        return 0
    if config.method == "hybrid":
        return hybrid_steps(config.population, config.generations, config.hybrid_fraction, forwards_per_step)[0]
    return config.generations + 1


def total_steps(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Steps of a run: DE ``generations + 1`` (step 0 = the initial population), Adam
    :func:`gradient_steps`, hybrid both phases of :func:`hybrid_steps`."""
    if config.method == "gradient":
        return gradient_steps(config.population, config.generations, forwards_per_step)
    if config.method == "hybrid":
        return sum(hybrid_steps(config.population, config.generations, config.hybrid_fraction, forwards_per_step))
    return config.generations + 1


def spent(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> float:
    """Forward passes a run spends (never more than :func:`budget`): ``population`` per evolution
    step (DE, SNES, CMA: step 0's initial population included), ``forwards_per_step`` per Adam step."""
    evolution = evolution_steps(config, forwards_per_step)
    adam = total_steps(config, forwards_per_step) - evolution
    return config.population * evolution + forwards_per_step * adam
