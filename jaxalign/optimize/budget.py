"""Budgets counted in forward passes of one member, and what an Adam step costs in them.

Every method of a run spends at most DE's budget, ``population * (generations + 1)`` forward
passes of one member (step 0 scores the initial population)::

    budget(config)                          -> int    P * (G + 1)
    RunCost.from_flops(adam, forward, P)    -> RunCost  an Adam step in forward passes (XLA FLOPs)
    evolution_steps / total_steps / spent   what a config runs and spends at that cost (each
                                            optimizer's ``phases``: :mod:`jaxalign.optimizers`)

The measurement itself (compiling one Adam step and one scoring pass) is
:func:`jaxalign.optimize.pipeline.measure_cost`; this module only counts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxalign import optimizers
from jaxalign.config import AlignConfig
from jaxalign.optimizers.adam import FALLBACK_FORWARDS_PER_STEP


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


def evolution_steps(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Steps run by the evosax strategy (all for DE, none for Adam, the first phase of hybrid):
    the first of the optimizer's :attr:`~jaxalign.optimizers.Optimizer.phases`."""
    return optimizers.get(config.method).phases(config, forwards_per_step)[0]


def total_steps(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Steps of a run, both phases of its optimizer (DE ``generations + 1``: step 0 is the
    initial population)."""
    return sum(optimizers.get(config.method).phases(config, forwards_per_step))


def spent(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> float:
    """Forward passes a run spends (never more than :func:`budget`): ``population`` per evolution
    step (DE, SNES, CMA: step 0's initial population included), ``forwards_per_step`` per Adam step."""
    evolution, adam = optimizers.get(config.method).phases(config, forwards_per_step)
    return config.population * evolution + forwards_per_step * adam
