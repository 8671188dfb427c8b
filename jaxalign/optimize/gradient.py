"""A gradient baseline for the derivative-free optimiser: Adam (optax) on the relaxed survey loss.

With the ``"expected"`` readout the L1 loss is a smooth function of the soft prompt (softmax over
the five answer tokens -> expected answer -> linear indices -> L1), so ``jax.grad`` through the
scorer's pure ``score_fn`` gives its gradient. :func:`jaxalign.gradient_align` (``method="gradient"``
of the one pipeline, :mod:`jaxalign.optimize.pipeline`) tunes the prompt with Adam in
**the same parameterisation as** :func:`jaxalign.align`: the same ``p0`` (``init_text`` or random
vocabulary rows from ``seed``), the same random subspace (``subspace=n``, basis from ``seed + 1``)
or the full ``K x d`` space, the same ``K``, starting at ``z = 0`` (DE's member 0).

Budget, counted honestly. Differential Evolution scores ``population * (generations + 1)``
prompts (the initial population and every generation). One Adam step scores one prompt forward
and backpropagates through it, and the layer scan is rematerialised (``jax.checkpoint``), so the
backward pass recomputes the forward. What a step costs in forward passes is read from the
compiled programs (XLA's FLOP counts of one Adam step and of one scoring pass of P members,
:func:`jaxalign.optimize.pipeline.measure_cost`), and Adam gets ``floor(population *
(generations + 1) / cost)`` steps (:func:`gradient_steps`). ``AlignResult.evaluations`` reports
``cost * steps`` forward passes, never more than DE's count; ``AlignResult.cost`` the measurement.

Readouts. Adam always trains on the ``"expected"`` loss (the only differentiable one). The
returned result (``dims``, ``loss``, ``probs``, baselines) is scored with ``config.readout``, so an
``argmax`` config compares Adam's prompt with DE's on the non-differentiable argmax loss.
The prompt returned is the iterate with the lowest training loss seen. Steps run in device
chunks (``lax.scan``) of the shared run loop, :mod:`jaxalign.optimize.pipeline`.

Learning rate units follow ``init_scale``: in a subspace, ``z`` units (a unit step moves each
prompt coordinate by about one embedding standard deviation); in the full space, embedding
standard deviations (multiplied by the embedding std).
"""

from __future__ import annotations

from jaxalign.optimize.budget import FALLBACK_FORWARDS_PER_STEP, gradient_steps

DEFAULT_LEARNING_RATE = 0.1

__all__ = ["DEFAULT_LEARNING_RATE", "FALLBACK_FORWARDS_PER_STEP", "gradient_steps"]
