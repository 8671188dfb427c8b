"""Optimisers: the alignment pipeline (one loop for DE, any evosax strategy, Adam and hybrid) and
:func:`evolve`, that loop on any fitness function.

``evolve`` is imported on first use: the pipeline sits above the configuration modules, which
import :mod:`jaxalign.optimize.evolution` (and so this package) themselves.
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
