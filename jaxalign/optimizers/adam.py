"""Adam (optax) on the differentiable ``"expected"`` readout (``method="gradient"``).

With the ``"expected"`` readout the loss is a smooth function of the search vector (softmax over
the five answer tokens -> expected answer -> linear indices -> L1), so ``jax.grad`` through the
fitness gives its gradient. One step per target::

    z (C, n) -> fitness(z[:, None]) -> sum_c loss_c -> grad (C, n) (the targets' gradients are
    independent) -> Adam (elementwise, so per target) -> z'

The step scores the current iterate ``z`` (so the loop's best-so-far is the best iterate seen);
Adam starts at ``args.z0``. Its step size is ``config.learning_rate`` in search-space units:
``z`` units in a subspace, embedding standard deviations in the full space.

Budget: an Adam step scores one member forward and backpropagates through it (the layer scan
rematerialised), so it costs several forward passes; the run measures that cost from the
compiled programs (:func:`jaxalign.optimize.pipeline.measure_cost`) and gets
:func:`gradient_steps` steps within DE's ``population * (generations + 1)`` forward passes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign.optimizers.base import Optimizer, Update, same_types

FALLBACK_FORWARDS_PER_STEP = 4.0  # an Adam step when XLA reports no FLOPs: forward, recompute, backward


def gradient_steps(population: int, generations: int,
                   forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Adam steps with DE's forward-pass budget: ``floor(population * (generations + 1) / cost)``.

    ``forwards_per_step``: an Adam step's cost in forward passes. Raises ValueError when the
    budget holds no step."""
    total = population * (generations + 1)
    steps = int(np.floor(total / forwards_per_step + 1e-9))
    if steps < 1:
        raise ValueError(f"gradient: a budget of {total} forward passes (population x (generations + 1)) "
                         f"holds no Adam step ({forwards_per_step:.3g} forward passes each); raise generations")
    return steps


def transform(step: Any) -> optax.GradientTransformation:
    """The run's Adam: NaN gradients zeroed, then Adam at the config's rate in search-space units."""
    config = step.config
    rate = config.learning_rate if config.subspace is not None else config.learning_rate * step.embedding_std
    return optax.chain(optax.zero_nans(), optax.adam(rate))


def init(step: Any, args: Any) -> Any:
    """``(z (C, n), Adam state)`` starting at ``args.z0``."""
    z = jnp.asarray(args.z0, jnp.float32)  # (C, n)
    return z, transform(step).init(z)


def update(step: Any, state: Any, args: Any, fitness: Any, opt: Any = None) -> Update:
    """One Adam step of every target from ``opt`` (default ``state.opt``): ``z (C, n)``."""
    z, opt_state = state.opt if opt is None else opt

    def total_loss(z_):  # (C, n): sum over targets; each target's gradient is its own
        losses, aux = fitness(z_[:, None])
        return jnp.sum(losses), (losses, aux)

    (_, (losses, aux)), grad = jax.value_and_grad(total_loss, has_aux=True)(z)
    updates, opt_state = transform(step).update(grad, opt_state, z)
    new = same_types((optax.apply_updates(z, updates), opt_state), (z, opt_state))
    return Update(new, z[:, None], losses, aux)


def phases(config: Any, forwards_per_step: float) -> tuple[int, int]:
    """No evolution step; :func:`gradient_steps` Adam steps."""
    return 0, gradient_steps(config.population, config.generations, forwards_per_step)


OPTIMIZER = Optimizer(name="gradient", init=init, update=update, phases=phases, gradient=True,
                      unit="step", summary="Adam on the expected readout, at DE's forward-pass budget")
