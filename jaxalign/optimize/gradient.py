"""A gradient baseline for the derivative-free optimiser: Adam (optax) on the relaxed survey loss.

With the ``"expected"`` readout the L1 loss is a smooth function of the soft prompt (softmax over
the five answer tokens -> expected answer -> linear indices -> L1), so ``jax.grad`` through the
scorer's pure ``score_fn`` gives its gradient. :func:`gradient_align` tunes the prompt with Adam in
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

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxalign.optimize.pipeline import FALLBACK_FORWARDS_PER_STEP, gradient_steps

DEFAULT_LEARNING_RATE = 0.1

__all__ = ["DEFAULT_LEARNING_RATE", "FALLBACK_FORWARDS_PER_STEP", "gradient_align", "gradient_steps"]


def gradient_align(
    lm: Any,
    target: Any,
    *,
    instrument: Any = None,
    config: Any = None,
    learning_rate: float | None = None,
    progress: bool = False,
    scorer_options: Mapping[str, Any] | None = None,
    **overrides: Any,
):
    """Tunes a soft prompt with Adam on the ``expected``-readout L1 loss; returns an ``AlignResult``.

    A thin entry point over :mod:`jaxalign.optimize.pipeline` with ``config.method = "gradient"``
    (also reachable as ``jaxalign.align(lm, target, method="gradient")``).

    Args:
      lm: the frozen model (:func:`jaxalign.load_model`).
      target: a Target, a country name or code, ``"PDI=80,..."`` or a mapping; or a list of
        them (one Adam run per target, all in one compiled program; returns a list).
      instrument: the survey (default: the built-in VSM 2013 wording).
      config: an :class:`~jaxalign.AlignConfig`: ``k``, ``subspace``, ``init_text``, ``seed``,
        ``slot``, ``system`` set the parameterisation; ``population * (generations + 1)`` the
        forward-pass budget (:func:`gradient_steps`); ``readout`` the readout of the returned
        scores; ``baselines`` the baselines scored. Strategy fields are ignored.
      learning_rate: Adam's step size (units: see the module docstring); ``None`` keeps
        ``config.learning_rate`` (default :data:`DEFAULT_LEARNING_RATE` = ``AlignConfig``'s).
      progress: show a progress bar over steps.
      scorer_options: extra :func:`jaxalign.scoring.make_scorer` arguments (e.g. ``n_buckets``);
        they change speed and memory, not the numbers.
      overrides: replace fields of ``config``.

    Returns:
      :class:`~jaxalign.AlignResult`: ``soft_prompt (K, d)``, ``dims (D,)`` and ``loss`` under
      ``config.readout``; ``history`` per step (row 0 = the starting prompt): ``best_loss``
      (best-so-far training loss), ``mean_loss`` (the training loss of that step's iterate),
      ``best_dims``; ``evaluations``: ``steps`` times the measured cost of a step in forward
      passes (``cost``).
    """
    from jaxalign.api import AlignConfig, resolve_targets, run_pipeline

    config = dataclasses.replace(config or AlignConfig(), **overrides)
    fields: dict[str, Any] = {"method": "gradient"}
    if learning_rate is not None:  # None keeps the configured step size
        fields["learning_rate"] = learning_rate
    config = dataclasses.replace(config, **fields)
    targets, several = resolve_targets(target)
    found = run_pipeline(lm, targets, instrument=instrument, config=config, progress=progress,
                         scorer_options=scorer_options)
    return found if several else found[0]
