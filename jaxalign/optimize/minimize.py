"""``evolve``: minimise a user's jax-traceable fitness function with an evosax strategy.

A thin entry point over the alignment pipeline's loop (:mod:`jaxalign.optimize.pipeline`): the
same step (ask -> fitness -> sanitise -> tell -> best-so-far), the same device-side chunks, the
same checkpoints, resumption and non-finite patience. It minimises ``fitness_fn(z_pop, fitness_args)``:

* ``z_pop``: (P, n) float32 population of search vectors;
* ``fitness_args``: any pytree of arrays (e.g. model weights); it is an *argument* of the jitted
  loop, never a closed-over constant, so weights are not baked into the compiled program;
* returns ``(losses (P,), aux)`` where ``aux`` is a pytree whose leaves have leading axis P
  (e.g. the six dimension scores, (P, 6)), or ``None``.

Mapped onto the pipeline::

    fitness_fn, fitness_args   -> Step.fitness_fn, RunArgs.inputs
    z0 (n,)                    -> RunArgs.z0 (1, n): one "target"
    PRNGKey(seed)              -> RunArgs.keys (1, 2)
    EvolutionConfig            -> Step.evolution (the trace) and LoopPlan (steps, chunks, saves)
    RunState (leading axis 1)  -> EvolutionResult (that axis dropped)

Steps. Step 0 evaluates the initial population (``z0`` as member 0, the others
``z0 + init_scale * N(0, 1)``) and initialises the strategy (a distribution-based one, such as
SNES or CMA_ES, is then told that population: it is a draw of its initial distribution, so its P
evaluations are not wasted); step ``g >= 1`` is generation ``g``. The PRNG key of step ``s`` is
``jax.random.fold_in(PRNGKey(seed), s)``, so the trajectory does not depend on chunk boundaries:
a different ``chunk_size``, a resumed run and an uninterrupted run give the same result.

Non-finite fitness. Losses that are NaN or +-inf count as failures: the best-so-far ignores them,
and the strategy sees ``+inf`` for population-based strategies (comparison-based selection: DE
keeps the parent, a failed trial never becomes the elite) and the worst finite loss of the
generation for distribution-based ones (which do arithmetic on fitness). A generation in which
*no* member has a finite loss leaves the strategy state untouched. When
:data:`~jaxalign.optimize.evolution.NONFINITE_PATIENCE` steps in a row (the initial population
counts as one) fail entirely, the run stops with
:class:`~jaxalign.optimize.evolution.NonFiniteFitnessError` (before that chunk's checkpoint is
written, so the last checkpoint is the last good state).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.optimize.checkpoint import normalise_json
from jaxalign.optimize.evolution import EvolutionConfig, EvolutionResult, FitnessFn
from jaxalign.optimizers.evolution import make_strategy
from jaxalign.optimize.pipeline import initial_state, run_loop
from jaxalign.optimize.problem import LoopPlan, RunArgs, Step, traced_evolution


def _fitness_spec(fitness_fn: FitnessFn, fitness_args: Any, pop: int, n: int) -> Any:
    """Shape-check the fitness function; return the aux ShapeDtypeStruct tree (per member)."""
    z_spec = jax.ShapeDtypeStruct((pop, n), jnp.float32)
    try:
        out = jax.eval_shape(fitness_fn, z_spec, fitness_args)
    except Exception as err:
        raise ValueError(f"fitness_fn failed on a ({pop}, {n}) float32 population: {err}") from err
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError("fitness_fn must return a pair (losses (P,), aux pytree with leading axis P)")
    losses, aux = out
    if losses.shape != (pop,) or not jnp.issubdtype(losses.dtype, jnp.floating):
        raise ValueError(f"fitness_fn losses must be a float array of shape ({pop},), got {losses.dtype}{losses.shape}")
    bad = [
        (jax.tree_util.keystr(p), leaf.shape)
        for p, leaf in jax.tree_util.tree_flatten_with_path(aux)[0]
        if leaf.ndim < 1 or leaf.shape[0] != pop
    ]
    if bad:
        raise ValueError(f"every aux leaf must have leading axis P={pop}; offending leaves: {bad}")
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), aux)


def _z0_digest(z0: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(z0, dtype=np.float32).tobytes()).hexdigest()[:16]


def evolve(
    fitness_fn: FitnessFn,
    fitness_args: Any,
    z0: Any,
    config: EvolutionConfig = EvolutionConfig(),
    *,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    fingerprint: Mapping[str, Any] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> EvolutionResult:
    """Minimise ``fitness_fn`` over search vectors with an evosax strategy.

    Args:
        fitness_fn: ``fitness_fn(z_pop (P, n) float32, fitness_args) -> (losses (P,), aux)``,
            jax-traceable; ``aux`` is a pytree with leading axis P (or None).
        fitness_args: pytree of arrays passed to ``fitness_fn`` (an argument of the jitted loop).
        z0: (n,) starting point (member 0 of the initial population; cast to float32).
        config: run settings.
        checkpoint_dir: folder for orbax checkpoints (the latest two are kept). Without
            ``resume`` it must not hold checkpoints already.
        resume: continue from the latest checkpoint in ``checkpoint_dir``. Its fingerprint must
            equal this run's (``fingerprint``, the trajectory fields of ``config``, n and a hash of
            ``z0``) except ``generations``, which may be raised; otherwise ``ValueError`` lists the
            differing fields. With no checkpoint there, the run starts fresh and logs a warning.
        fingerprint: JSON-able dict describing the problem (target, model id, K, n, readout...),
            stored in checkpoints and compared on resume.
        progress: ``progress(generations_done, best_loss)`` called after every chunk (after the
            checkpoint of that chunk, if any, is written). An exception raised there stops the run.

    Returns:
        EvolutionResult. Reruns with the same seed and configuration give identical results,
        whatever the chunk size and however the run was interrupted and resumed.
    """
    t_start = time.perf_counter()
    if not isinstance(config, EvolutionConfig):
        raise TypeError(f"config must be an EvolutionConfig, got {type(config).__name__}")
    z0 = np.asarray(z0, dtype=np.float32)
    if z0.ndim != 1 or z0.size < 1:
        raise ValueError(f"z0 must be a non-empty 1-D vector (n,), got shape {z0.shape}")
    if not np.all(np.isfinite(z0)):
        raise ValueError("z0 must be finite")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    n, pop_size, total_steps = z0.shape[0], config.population_size, config.generations + 1
    aux_spec = _fitness_spec(fitness_fn, fitness_args, pop_size, n)
    make_strategy(config, n)  # a strategy that cannot be built for (P, n) is refused here, clearly

    traced = Step(config=None, embedding_std=1.0, space_dim=int(n), mesh=None, programs=(),
                  evolution=traced_evolution(config), fitness_fn=fitness_fn)
    args = RunArgs(inputs=fitness_args, space=None, targets=jnp.zeros((1, 0), jnp.float32),
                   keys=jnp.asarray(np.asarray(jax.random.PRNGKey(config.seed))[None]),  # (1, 2)
                   z0=jnp.asarray(z0[None]))                                             # (1, n)
    best_aux = jax.tree.map(lambda s: np.zeros((1, *s.shape), s.dtype), aux_spec)
    plan = LoopPlan(
        total_steps=total_steps, chunk_size=config.chunk_size, checkpoint_every=config.checkpoint_every,
        population=pop_size, evolution_steps=total_steps,
        fingerprint=normalise_json({
            "user": dict(fingerprint or {}),
            "config": config.trajectory_fields(),
            "problem": {"n": int(n), "z0_sha256": _z0_digest(z0)},
        }))
    outcome = run_loop(plan, traced, initial_state(traced, args, best_aux), args,
                       checkpoint_dir=checkpoint_dir, resume=resume, callback=progress)
    state, history = outcome.state, outcome.history
    one = lambda x: np.asarray(x)[0]  # the single target's row
    return EvolutionResult(
        best_z=one(state.best_z),
        best_loss=float(one(state.best_loss)),
        best_aux=jax.tree.map(one, state.best_dims),
        history={"best_loss": history["best_loss"][:, 0], "mean_loss": history["mean_loss"][:, 0],
                 "num_failed": history["num_failed"][:, 0],
                 "best_aux": jax.tree.map(lambda x: x[:, 0], history["best_dims"])},
        generations_run=total_steps - 1,
        evaluations=pop_size * total_steps,
        wall_s=time.perf_counter() - t_start,
        compile_s=outcome.compile_s,
        resumed_from=outcome.resumed_from,
        state=jax.tree.map(lambda x: x[0], state.opt),
        loop_s=outcome.loop_s,
        steps_run=outcome.steps_run,
    )
