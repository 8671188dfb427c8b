"""The evosax side of the optimizers: :class:`EvolutionConfig` (one strategy's settings), its
result type, the strategy constructor and the non-finite-fitness error.

The loop that runs a strategy is the alignment pipeline's (:mod:`jaxalign.optimize.pipeline`);
:func:`jaxalign.optimize.evolve` (in :mod:`jaxalign.optimize.minimize`) runs it on a user's
fitness function. Step semantics, keys, chunks and the handling of NaN/inf losses are described
there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import evosax.algorithms as ea
import jax
import jax.numpy as jnp
import numpy as np



FitnessFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]

NONFINITE_PATIENCE = 3  # consecutive steps whose every loss is NaN/inf before a run is stopped


class NonFiniteFitnessError(ValueError):
    """Every member's loss stayed NaN/inf: the fitness function cannot be optimised as it is."""


def available_strategies() -> list[str]:
    """Names accepted by ``EvolutionConfig.strategy`` (the classes of ``evosax.algorithms``)."""
    return sorted(ea.algorithms)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
    """Settings of an evolution run.

    Attributes:
        strategy: name of an evosax 0.3 algorithm (``evosax.algorithms.<Name>``), e.g.
            ``"DifferentialEvolution"``, ``"SNES"``, ``"Sep_CMA_ES"``, ``"CMA_ES"``, ``"PSO"``.
        population_size: P, members per generation (>= 4 for DE, >= 2 otherwise).
        generations: number of generations after the initial population (>= 1).
        crossover_rate: DE's CR in [0, 1] (DE only; ignored by other strategies).
        differential_weight: DE's F in [0, 2] (DE only).
        dither: DE only; ``(F_min, F_max)`` with 0 <= F_min < F_max <= 2 draws F uniformly each
            generation (evosax's ``differential_weight_min/max``); ``None`` keeps F fixed.
        elitism: DE only; ``True`` builds every mutant on the current best member (DE/best/1/bin,
            evosax's default), ``False`` on a random other member (DE/rand/1/bin).
        chunk_size: generations per device-side ``lax.scan`` chunk (progress is reported per chunk).
        init_scale: std of the initial population around ``z0``; for distribution-based strategies
            it is also their ``std_init`` where the strategy has one.
        seed: PRNG seed of the whole run.
        checkpoint_every: save a checkpoint every this many generations (chunks are cut to end
            there); ``None`` saves at the end of every chunk. Only used with a ``checkpoint_dir``.
    """

    strategy: str = "DifferentialEvolution"
    population_size: int = 32
    generations: int = 50
    crossover_rate: float = 0.9
    differential_weight: float = 0.8
    dither: tuple[float, float] | None = None
    elitism: bool = True
    chunk_size: int = 10
    init_scale: float = 1.0
    seed: int = 0
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ea.algorithms:
            raise ValueError(
                f"unknown evosax strategy {self.strategy!r}; valid names: {', '.join(available_strategies())}"
            )
        min_pop = 4 if self.is_de else 2
        if not _is_int(self.population_size) or self.population_size < min_pop:
            raise ValueError(
                f"population_size must be an integer >= {min_pop} for {self.strategy}, got {self.population_size!r}"
            )
        if not _is_int(self.generations) or self.generations < 1:
            raise ValueError(f"generations must be an integer >= 1, got {self.generations!r}")
        if not _is_int(self.chunk_size) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {self.chunk_size!r}")
        if self.checkpoint_every is not None and (not _is_int(self.checkpoint_every) or self.checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be None or an integer >= 1, got {self.checkpoint_every!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not (0.0 <= float(self.crossover_rate) <= 1.0):
            raise ValueError(f"crossover_rate must lie in [0, 1], got {self.crossover_rate!r}")
        if not (0.0 <= float(self.differential_weight) <= 2.0):
            raise ValueError(f"differential_weight must lie in [0, 2], got {self.differential_weight!r}")
        if not isinstance(self.elitism, (bool, np.bool_)):
            raise ValueError(f"elitism must be True (DE/best/1) or False (DE/rand/1), got {self.elitism!r}")
        object.__setattr__(self, "elitism", bool(self.elitism))
        if not (math.isfinite(float(self.init_scale)) and float(self.init_scale) > 0):
            raise ValueError(f"init_scale must be a finite number > 0, got {self.init_scale!r}")
        if self.dither is not None:
            try:
                low, high = (float(v) for v in self.dither)
            except (TypeError, ValueError):
                raise ValueError(f"dither must be None or a pair (F_min, F_max), got {self.dither!r}") from None
            if not (0.0 <= low < high <= 2.0):
                raise ValueError(f"dither must satisfy 0 <= F_min < F_max <= 2, got {self.dither!r}")
            object.__setattr__(self, "dither", (low, high))

    @property
    def is_de(self) -> bool:
        return self.strategy == "DifferentialEvolution"

    def trajectory_fields(self) -> dict[str, Any]:
        """The fields that change the sequence of populations (``generations`` only extends it)."""
        fields = {
            "strategy": self.strategy,
            "population_size": int(self.population_size),
            "init_scale": float(self.init_scale),
            "seed": int(self.seed),
        }
        if self.is_de:
            fields.update(
                crossover_rate=float(self.crossover_rate),
                differential_weight=float(self.differential_weight),
                dither=None if self.dither is None else list(self.dither),
                elitism=bool(self.elitism),
            )
        return fields


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


def _make_strategy(config: EvolutionConfig, n: int) -> tuple[Any, Any]:
    cls = ea.algorithms[config.strategy]
    template = jnp.zeros((n,), dtype=jnp.float32)
    try:
        strategy = cls(population_size=config.population_size, solution=template)
    except (TypeError, AssertionError) as err:
        raise ValueError(
            f"cannot build evosax strategy {config.strategy} with population_size="
            f"{config.population_size} and n={n}: {err}"
        ) from err
    params = strategy.default_params
    if config.is_de:
        f_min, f_max = config.dither if config.dither is not None else (config.differential_weight,) * 2
        params = params.replace(
            crossover_rate=float(config.crossover_rate),
            differential_weight=float(config.differential_weight),
            differential_weight_min=float(f_min),
            differential_weight_max=float(f_max),
            elitism=bool(config.elitism),
        )
    elif any(f.name == "std_init" for f in dataclasses.fields(params)):
        params = params.replace(std_init=jnp.asarray(config.init_scale, dtype=jnp.float32))
    return strategy, params


def _strong(tree: Any) -> Any:
    """Device copy of a pytree with fixed (non-weak) dtypes, so chunk inputs keep one signature."""
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), tree)


def _same_types(new: Any, old: Any) -> Any:
    """Cast ``new`` leaf-wise to ``old``'s dtypes (drops weak types so the carry is stable)."""
    return jax.tree.map(lambda a, b: jax.lax.convert_element_type(a, b.dtype), new, old)
