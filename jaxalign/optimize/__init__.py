"""Optimisers that only see a fitness function: the evosax evolution loop and its checkpoints."""

from jaxalign.optimize.evolution import (
    EvolutionConfig,
    EvolutionResult,
    NonFiniteFitnessError,
    available_strategies,
    evolve,
)

__all__ = ["EvolutionConfig", "EvolutionResult", "NonFiniteFitnessError", "available_strategies", "evolve"]
