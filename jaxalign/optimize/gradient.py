"""A gradient baseline for the derivative-free optimiser: Adam (optax) on the relaxed survey loss.

With the ``"expected"`` readout the L1 loss is a smooth function of the soft prompt (softmax over
the five answer tokens -> expected answer -> linear indices -> L1), so ``jax.grad`` through the
scorer's pure ``score_fn`` gives its gradient. :func:`gradient_align` tunes the prompt with Adam in
**the same parameterisation as** :func:`jaxalign.align`: the same ``p0`` (``init_text`` or random
vocabulary rows from ``seed``), the same random subspace (``subspace=n``, basis from ``seed + 1``)
or the full ``K x d`` space, the same ``K``, starting at ``z = 0`` (DE's member 0).

Budget, counted honestly. Differential Evolution scores ``population * (generations + 1)``
prompts (the initial population and every generation). One Adam step scores one prompt forward
and backpropagates through it; a backward pass costs about two forwards, so a step costs about
three forward passes, and Adam gets ``population * (generations + 1) // 3`` steps
(:func:`gradient_steps`). ``AlignResult.evaluations`` reports ``3 * steps`` forward-pass
equivalents, never more than DE's count.

Readouts. Adam always trains on the ``"expected"`` loss (the only differentiable one). The
returned result (``dims``, ``loss``, ``probs``, baselines) is scored with ``config.readout``, so an
``argmax`` config compares Adam's prompt with DE's on the non-differentiable argmax loss.
The prompt returned is the iterate with the lowest training loss seen.

Learning rate units follow ``init_scale``: in a subspace, ``z`` units (a unit step moves each
prompt coordinate by about one embedding standard deviation); in the full space, embedding
standard deviations (multiplied by the embedding std).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

FORWARDS_PER_STEP = 3  # one forward + one backward (about two forwards)
DEFAULT_LEARNING_RATE = 0.1
_PROGRESS_EVERY = 10


def gradient_steps(population: int, generations: int) -> int:
    """Adam steps with DE's forward-pass budget: ``population * (generations + 1) // 3``."""
    return max(1, population * (generations + 1) // FORWARDS_PER_STEP)


@dataclasses.dataclass(frozen=True)
class _Carry:
    z: jax.Array             # (n,)
    opt_state: Any
    best_z: jax.Array        # (n,)
    best_loss: jax.Array     # ()
    best_dims: jax.Array     # (D,)
    best_probs: jax.Array    # (Q, 5)


jax.tree_util.register_dataclass(
    _Carry, data_fields=["z", "opt_state", "best_z", "best_loss", "best_dims", "best_probs"],
    meta_fields=[],
)


def gradient_align(
    lm: Any,
    target: Any,
    *,
    instrument: Any = None,
    config: Any = None,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    progress: bool = False,
    scorer_options: Mapping[str, Any] | None = None,
    **overrides: Any,
):
    """Tunes a soft prompt with Adam on the ``expected``-readout L1 loss; returns an ``AlignResult``.

    Args:
      lm: the frozen model (:func:`jaxalign.load_model`).
      target: a Target, a country name or code, ``"PDI=80,..."`` or a mapping.
      instrument: the survey (default: the built-in VSM 2013 wording).
      config: an :class:`~jaxalign.AlignConfig`: ``k``, ``subspace``, ``init_text``, ``seed``,
        ``slot``, ``system`` set the parameterisation; ``population * (generations + 1)`` the
        forward-pass budget (:func:`gradient_steps`); ``readout`` the readout of the returned
        scores; ``baselines`` the baselines scored. Strategy fields are ignored.
      learning_rate: Adam's step size (units: see the module docstring).
      progress: show a progress bar over steps.
      scorer_options: extra :func:`jaxalign.scoring.make_scorer` arguments (e.g. ``n_buckets``);
        they change speed and memory, not the numbers.
      overrides: replace fields of ``config``.

    Returns:
      :class:`~jaxalign.AlignResult`: ``soft_prompt (K, d)``, ``dims (D,)`` and ``loss`` under
      ``config.readout``; ``history`` per step (row 0 = the starting prompt): ``best_loss``
      (best-so-far training loss), ``mean_loss`` (the training loss of that step's iterate),
      ``best_dims``; ``evaluations = 3 * steps`` forward-pass equivalents.
    """
    from jaxalign.api import AlignConfig, AlignResult, fix_chat_date, resolve_problem, search_space
    from jaxalign.baselines import run_baselines
    from jaxalign.prompting.chat_formats import chat_template_name
    from jaxalign.scoring import make_scorer, readout_means
    from jaxalign.survey import l1_loss

    t_start = time.perf_counter()
    config = dataclasses.replace(config or AlignConfig(), **overrides)
    if not (isinstance(learning_rate, (int, float)) and np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    target, instrument = resolve_problem(lm, target, instrument)
    lm, config = fix_chat_date(lm, config)  # one date for a template that writes today's

    common = dict(k=config.k, target=target, system=config.system, slot=config.slot, seed=config.seed,
                  mode=config.scoring_mode)
    train = make_scorer(lm, instrument, readout="expected", **common, **dict(scorer_options or {}))
    space, embedding_std = search_space(lm, config)
    step_size = learning_rate if config.subspace is not None else learning_rate * embedding_std
    steps = gradient_steps(config.population, config.generations)
    optimizer = optax.chain(optax.zero_nans(), optax.adam(step_size))

    def loss_fn(z, inputs, space_):
        scores = train.score_fn(space_.decode(z)[None], inputs)
        return scores.loss[0], (scores.dims[0], scores.probs[0])

    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

    def one_step(carry: _Carry, inputs, space_) -> tuple[_Carry, tuple[jax.Array, jax.Array]]:
        (loss, (dims, probs)), grad = value_and_grad(carry.z, inputs, space_)
        better = jnp.isfinite(loss) & (loss < carry.best_loss)
        updates, opt_state = optimizer.update(grad, carry.opt_state, carry.z)
        new = _Carry(
            z=optax.apply_updates(carry.z, updates),
            opt_state=opt_state,
            best_z=jnp.where(better, carry.z, carry.best_z),
            best_loss=jnp.where(better, loss, carry.best_loss),
            best_dims=jnp.where(better, dims, carry.best_dims),
            best_probs=jnp.where(better, probs, carry.best_probs),
        )
        return new, (loss, new.best_loss, new.best_dims)

    step_fn = jax.jit(one_step)
    n_dims = len(instrument.dimensions)
    z0 = jnp.zeros((space.dim,), jnp.float32)
    carry = _Carry(z=z0, opt_state=optimizer.init(z0), best_z=z0, best_loss=jnp.float32(jnp.inf),
                   best_dims=jnp.full((n_dims,), jnp.nan, jnp.float32),
                   best_probs=jnp.full((instrument.n_items, instrument.n_options), jnp.nan, jnp.float32))
    t0 = time.perf_counter()
    compiled = step_fn.lower(carry, train.inputs, space).compile()
    compile_s = time.perf_counter() - t0
    bar = _progress_bar(steps) if progress else None
    trace = []  # device arrays; read back once at the end (no host sync per step)
    try:
        for step in range(steps):
            carry, out = compiled(carry, train.inputs, space)
            trace.append(out)
            if bar is not None and (step + 1 == steps or (step + 1) % _PROGRESS_EVERY == 0):
                bar.n = step + 1
                bar.set_postfix(best_loss=f"{float(out[1]):.3f}")
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    losses, best_losses, best_dims = (np.stack([np.asarray(t[i]) for t in trace]) for i in range(3))

    prompt = np.asarray(space.decode(carry.best_z))  # (K, d)
    # the best iterate's answer distribution, read out as configured (as make_scorer would:
    # same readout function, same respondents' key), without compiling another scorer
    probs = carry.best_probs  # (Q, 5)
    item_means = readout_means(probs, config.readout, key=train.inputs.sample_key,
                               n_respondents=config.n_respondents)
    dims = instrument.indices(item_means, train.inputs.constants)  # (D,)
    loss = l1_loss(dims, train.inputs.target_values)
    baselines = run_baselines(lm, instrument, target, names=config.baselines, readout=config.readout,
                              seed=config.seed)
    return AlignResult(
        method="gradient",
        target=target,
        soft_prompt=prompt,
        dims=np.asarray(dims),
        loss=float(loss),
        probs=np.asarray(probs),
        baselines=baselines,
        history={
            "best_loss": best_losses.tolist(),
            "mean_loss": losses.tolist(),
            "best_dims": best_dims.tolist(),
        },
        model=lm.name,
        chat_template=chat_template_name(lm.tokenizer),
        wording=instrument.wording,
        dimensions=tuple(instrument.dimensions),
        config=config,
        wall_s=time.perf_counter() - t_start,
        compile_s=compile_s,
        evaluations=FORWARDS_PER_STEP * steps,
    )


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="adam steps", unit="step")
