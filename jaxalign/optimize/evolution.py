"""What :func:`jaxalign.optimize.evolve` returns (:class:`EvolutionResult`), the fitness
function's type and the non-finite-fitness error of the run loop.

A strategy's settings (:class:`EvolutionConfig`) and its step live with the optimizers
(:mod:`jaxalign.optimizers.evolution`); they are importable from here too. The loop that runs
them is the alignment pipeline's (:mod:`jaxalign.optimize.pipeline`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxalign.optimizers.evolution import EvolutionConfig, available_strategies  # noqa: F401

FitnessFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]

NONFINITE_PATIENCE = 3  # consecutive steps whose every loss is NaN/inf before a run is stopped


class NonFiniteFitnessError(ValueError):
    """Every member's loss stayed NaN/inf: the fitness function cannot be optimised as it is."""


@dataclasses.dataclass(frozen=True)
class EvolutionResult:
    """Outcome of :func:`evolve`.

    Attributes:
        best_z: (n,) float32, best search vector seen (the initial population included).
        best_loss: its loss (``inf`` if every evaluation failed).
        best_aux: the fitness function's aux for ``best_z`` (leaves without the leading P axis).
        history: per step, arrays of length ``generations_run + 1`` (row 0 = initial population,
            row g = after generation g): ``"best_loss"`` best-so-far loss, ``"mean_loss"`` mean of the
            finite losses of that step's population (NaN if none), ``"num_failed"`` (int32) members
            with a non-finite loss, ``"best_aux"`` the aux pytree of the best-so-far, leading axis
            ``generations_run + 1``.
        generations_run: generations completed (equals ``config.generations``).
        evaluations: fitness evaluations, ``population_size * (generations_run + 1)`` over the whole
            run (resumed parts included).
        wall_s: seconds spent in this call, compile included.
        compile_s: seconds spent compiling the chunk function (once per call).
        loop_s: seconds spent running the chunks of this call (every evaluation and update of its
            steps, the copy of their records to the host included; compile and checkpoints not).
        steps_run: steps run in this call (step 0, the initial population, counts as one).
        resumed_from: generation the run resumed from, or None.
        state: final evosax strategy state (device arrays).
    """

    best_z: np.ndarray
    best_loss: float
    best_aux: Any
    history: dict[str, Any]
    generations_run: int
    evaluations: int
    wall_s: float
    compile_s: float
    resumed_from: int | None
    state: Any
    loop_s: float = 0.0
    steps_run: int = 0

    @property
    def s_per_generation(self) -> float:
        """Steady seconds per generation in this call: ``loop_s / steps_run`` (NaN if none ran)."""
        return self.loop_s / self.steps_run if self.steps_run else float("nan")


