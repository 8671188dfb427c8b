"""Every evosax strategy as one optimizer (``method="de"``, the strategy named by
``AlignConfig.strategy``): :class:`EvolutionConfig` (one strategy's settings), the strategy
constructor, and the step.

One step for C targets and a population of P::

    z (C, P, n)   evosax ask per target (vmapped over the C states; step 0: z0 as member 0,
                  z0 + init_scale N(0, 1) the others, told to SNES/CMA as their first generation)
      -> fitness  (C, P) losses; a NaN/inf loss never replaces a parent (DE) or is ranked as the
                  generation's worst finite loss (distribution-based strategies)
      -> evosax tell per target

Keys: step ``s`` of target ``c`` splits ``fold_in(key_c, s)`` into ask, tell and the initial
population's noise; at step 0 a distribution-based strategy's ``init`` and its first ``tell``
take two keys split from the tell key.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import evosax.algorithms as ea
import jax
import jax.numpy as jnp
import numpy as np
from evosax.algorithms.population_based.base import PopulationBasedAlgorithm

from jaxalign.optimizers.base import Optimizer, Update, same_types, step_keys


def available_strategies() -> list[str]:
    """Names accepted by ``EvolutionConfig.strategy`` (the classes of ``evosax.algorithms``)."""
    return sorted(ea.algorithms)


def is_int(x: Any) -> bool:
    """A Python or numpy integer, not a bool (a setting's type check)."""
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
        if not is_int(self.population_size) or self.population_size < min_pop:
            raise ValueError(
                f"population_size must be an integer >= {min_pop} for {self.strategy}, got {self.population_size!r}"
            )
        if not is_int(self.generations) or self.generations < 1:
            raise ValueError(f"generations must be an integer >= 1, got {self.generations!r}")
        if not is_int(self.chunk_size) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {self.chunk_size!r}")
        if self.checkpoint_every is not None and (not is_int(self.checkpoint_every) or self.checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be None or an integer >= 1, got {self.checkpoint_every!r}")
        if not is_int(self.seed):
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


def make_strategy(config: EvolutionConfig, n: int) -> tuple[Any, Any]:
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


def _strategy(step: Any):
    return make_strategy(step.evolution, step.space_dim)


def init(step: Any, args: Any) -> Any:
    """A state template per target (step 0 replaces it): leaves (C, ...)."""
    strategy, params = _strategy(step)
    pop, n = step.evolution.population_size, step.space_dim
    if isinstance(strategy, PopulationBasedAlgorithm):
        return jax.vmap(lambda k: strategy.init(
            k, jnp.zeros((pop, n), jnp.float32), jnp.zeros((pop,), jnp.float32), params))(args.keys)
    return jax.vmap(lambda k, z0: strategy.init(k, z0, params))(args.keys, jnp.asarray(args.z0, jnp.float32))


def update(step: Any, state: Any, args: Any, fitness: Any) -> Update:
    """Step ``state.step`` of every target's strategy (see the module docstring)."""
    strategy, params = _strategy(step)
    evo = step.evolution
    pop, n, s = evo.population_size, step.space_dim, state.step
    population_based = isinstance(strategy, PopulationBasedAlgorithm)
    keys = step_keys(args, s, 3)  # (C, 3, 2)
    key_ask, key_tell, key_pop = keys[:, 0], keys[:, 1], keys[:, 2]
    is_init = s == 0
    z0 = args.z0  # (C, n)

    asked, _ = jax.vmap(lambda k, st: strategy.ask(k, st, params))(key_ask, state.opt)
    noise = evo.init_scale * jax.vmap(lambda k: jax.random.normal(k, (pop, n), jnp.float32))(key_pop)
    initial = (z0[:, None] + noise).at[:, 0].set(z0)  # (C, P, n)
    population = jnp.where(is_init, initial, asked.astype(jnp.float32))  # (C, P, n)

    losses, aux = fitness(population)
    losses = losses.astype(jnp.float32)  # (C, P)
    finite = jnp.isfinite(losses)
    if population_based:  # a failed trial never replaces its parent
        shaped = jnp.where(finite, losses, jnp.inf)
    else:  # distribution-based: the worst finite loss of the generation (inf would poison means)
        worst = jnp.max(jnp.where(finite, losses, -jnp.inf), axis=1, keepdims=True)
        shaped = jnp.where(finite, losses, jnp.where(jnp.any(finite, axis=1, keepdims=True), worst, 0.0))

    def tell(before, told_keys):
        told = jax.vmap(lambda k, p, f, st: strategy.tell(k, p, f, st, params)[0])(
            told_keys, population, shaped, before)
        # a generation without one finite loss teaches nothing: that target's state stays as it
        # was (DE would swap +inf parents for +inf trials; a distribution-based strategy would
        # rank arbitrary members as if they all had the best loss 0.0)
        any_finite = jnp.any(finite, axis=1)  # (C,)
        keep = lambda new, old: jnp.where(any_finite.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
        return jax.tree.map(keep, told, before)

    def init_state(_):
        if population_based:
            return jax.vmap(lambda k, p, f: strategy.init(k, p, f, params))(key_tell, population, shaped)
        # SNES, CMA...: the initial population is a draw of the strategy's initial distribution
        # (mean z0, spread init_scale), so it is told: step 0's P evaluations are not wasted
        split = jax.vmap(jax.random.split)(key_tell)  # (C, 2, 2): one key for init, one for tell
        fresh = jax.vmap(lambda k, z: strategy.init(k, z, params))(split[:, 0], z0)
        return tell(same_types(fresh, state.opt), split[:, 1])

    opt = same_types(jax.lax.cond(is_init, init_state, lambda _: tell(state.opt, key_tell), None), state.opt)
    return Update(opt, population, losses, aux)


def phases(config: Any, forwards_per_step: float) -> tuple[int, int]:
    """Every step is an evolution step: step 0 (the initial population) and ``generations``."""
    return config.generations + 1, 0


OPTIMIZER = Optimizer(name="de", init=init, update=update, phases=phases, unit="gen",
                      summary="an evosax strategy (--strategy; Differential Evolution by default)")
