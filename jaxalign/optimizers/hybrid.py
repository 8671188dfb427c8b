"""The hybrid (``method="hybrid"``): an evosax strategy for a share of the budget, then Adam from
the best member found, composed of :mod:`~jaxalign.optimizers.evolution` and
:mod:`~jaxalign.optimizers.adam`.

State ``(evolution state, (z (C, n), Adam state))``; steps ``< step.switch`` are evolution steps,
the others Adam steps, and the first Adam step starts at ``state.best_z``. The switch is a share
of the whole budget (:func:`hybrid_steps`), so it is fixed when the run starts and a resume may not
change the number of generations (``fixed_total``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.optimizers import adam, evolution
from jaxalign.optimizers.base import Optimizer, Update


def hybrid_steps(population: int, generations: int, fraction: float,
                 forwards_per_step: float = adam.FALLBACK_FORWARDS_PER_STEP) -> tuple[int, int]:
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
    evolution_count = min(max(2, round(fraction * (generations + 1))), room)
    left = total - population * evolution_count
    return evolution_count, int(np.floor(left / forwards_per_step + 1e-9))


def init(step: Any, args: Any) -> Any:
    return evolution.init(step, args), adam.init(step, args)


def update(step: Any, state: Any, args: Any, fitness: Any) -> Update:
    evolution_opt, (z, adam_opt) = state.opt

    def evolve(_):
        done = evolution.update(step, dataclasses.replace(state, opt=evolution_opt), args, fitness)
        return Update((done.opt, (z, adam_opt)), done.population, done.losses, done.aux)

    def descend(_):
        start = jnp.where(state.step == step.switch, state.best_z, z)  # Adam starts at the best member
        done = adam.update(step, state, args, fitness, opt=(start, adam_opt))
        # one member per target: padded to the evolution phase's P so both branches agree in shape
        return Update((evolution_opt, done.opt), *_pad(done, step.evolution.population_size))

    return jax.lax.cond(state.step < step.switch, evolve, descend, None)


def _pad(done: Update, members: int) -> tuple[Any, Any, Any]:
    """The Adam step's one member repeated ``members`` times (the loop picks the best; equal)."""
    grow = lambda x: jnp.repeat(x, members, axis=1)
    return grow(done.population), grow(done.losses), jax.tree.map(grow, done.aux)


def phases(config: Any, forwards_per_step: float) -> tuple[int, int]:
    return hybrid_steps(config.population, config.generations, config.hybrid_fraction, forwards_per_step)


OPTIMIZER = Optimizer(name="hybrid", init=init, update=update, phases=phases, gradient=True,
                      fixed_total=True, unit="step",
                      summary="an evosax strategy for a share of the budget, then Adam from its best member")
