"""The run machinery: the alignment pipeline (one loop for every optimizer of
:mod:`jaxalign.optimizers`), its problem, budgets, checkpoints and resume rules, and
:func:`evolve`, that loop on any fitness function.

``evolve`` is imported on first use, so that importing the package for its settings types does
not import the pipeline.
"""

from typing import Any

from jaxalign.optimize.evolution import (
    EvolutionConfig,
    EvolutionResult,
    NonFiniteFitnessError,
    available_strategies,
)

__all__ = ["EvolutionConfig", "EvolutionResult", "NonFiniteFitnessError", "available_strategies", "evolve"]


def __getattr__(name: str) -> Any:
    if name == "evolve":
        from jaxalign.optimize.minimize import evolve

        return evolve
    raise AttributeError(f"module 'jaxalign.optimize' has no attribute {name!r}")
