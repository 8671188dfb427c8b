"""One alignment pipeline: a problem set-up and one run loop for DE (any evosax strategy), Adam
and both-orders tuning, for one target or C targets at once.

:func:`jaxalign.align`, :func:`jaxalign.api.align_both_orders` and
:func:`jaxalign.api.gradient_align` are thin entry points over it::

    setup(lm, targets, instrument, config)  -> Problem    (problem.build_problem: targets,
                                                           scorers per presentation, search
                                                           space; then an Adam step's cost)
    problem.step()                          -> Step       (what a step's trace reads: the
                                                           config and scoring programs, no arrays)
    initialise(problem, step, args)         -> RunState   (step 0 not run yet)
    generation(step, state, args)           -> RunState, record     (one step, on device)
    run_chunk(step, state, args, s_end)     -> RunState, records    (lax.scan of steps)
    save_checkpoint / restore_checkpoint    (orbax; the state pytree and the history)
    run(problem, ...)                       -> RunOutcome            (run_loop for a problem)
    run_loop(plan, step, state, args, ...)  -> RunOutcome            (host loop: chunks,
                                                                      checkpoints, progress bar)
    results(problem, outcome, ...)          -> [AlignResult] * C

The same step and host loop run :func:`jaxalign.optimize.evolve` on a user's fitness function
(``Step.fitness_fn``; one "target", the run's own ``PRNGKey(seed)``): there is one optimizer
loop in the package.

The problem and the pytrees a step reads live in :mod:`jaxalign.optimize.problem`; the budget
arithmetic in :mod:`jaxalign.optimize.budget`; this module runs them.

One step for C targets and a population of P (``config.method == "de"``)::

    z                         (C, P, n)   evosax ask per target (vmapped over the C states;
                                          step 0: z0 as member 0, z0 + init_scale N(0, 1) the others)
      -> prompts p0 + z A     (C*P, K, d) ONE population: the C targets share the scoring pass
                                          (the intervention's decode, jaxalign.tuning: a steering
                                          vector is (C*P, d) and scored by the steering scorer)
      -> scorer(s)            (C*P, D)    one per presentation (normal; reversed order)
      -> L1 per target        (C, P)      each row against its own target, missing dims masked
      -> evosax tell per target, best-so-far per target

With ``method == "gradient"`` a step is one Adam step per target on the ``"expected"`` readout:
``z (C, n)`` -> ``(C, K, d)`` prompts scored together -> ``sum_c loss_c`` differentiated (the
targets' gradients are independent) -> Adam (elementwise, so per target).

Independence of the targets. Target ``c`` draws every random number from its own key,
``fold_in(PRNGKey(seed), crc32(target identity))`` (:func:`target_key`), folded with the step
number; its optimizer state is its own row of the vmapped state; the soft-prompt space (``p0``,
the subspace basis) depends only on the config. So a target's trajectory does not depend on the
other targets run beside it: ``align(lm, ["China", "India"])[0]`` equals ``align(lm, "China")``
up to float rounding of the batched forward pass. On a mesh the C*P members are one population
sharded over the ``"data"`` axis; the optimizer states stay replicated.

One compile per :class:`Step`. The traced loop reads only a :class:`Step` (the config, the
embedding scale, the search dimension, the mesh and the scoring programs); every array, the
weights included, is an argument (:class:`RunArgs`). So :func:`run` keeps one jitted loop per
``Step`` in the process: a resumed run, or the same settings for other targets, model weights or
search space of equal shapes, reuses the compiled loop instead of tracing and compiling it again.

Steps and keys. Step 0 scores the initial population (DE: ``z0`` as member 0, the others
``z0 + init_scale * N(0, 1)``, told to SNES/CMA as their first generation; Adam starts at ``z0``;
``z0 = 0``, the space's origin ``p0``, for alignment);
step ``s`` uses ``fold_in(key_c, s)``, so chunk
boundaries, checkpoints and resumption do not change the trajectory: a resumed run equals the
uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.baselines import BaselineResult, run_baselines
from jaxalign.config import AlignConfig
from jaxalign.optimize.budget import FALLBACK_FORWARDS_PER_STEP, RunCost
from jaxalign.optimize.checkpoint import RunCheckpointer, normalise_json
from jaxalign import optimizers
from jaxalign.optimize.evolution import NONFINITE_PATIENCE, NonFiniteFitnessError
from jaxalign.optimizers.base import strong
from jaxalign.optimize.problem import (  # noqa: F401  (problem names kept importable from here)
    LoopPlan,
    Problem,
    RunArgs,
    RunState,
    Step,
    build_problem,
    target_key,
    tuning_wording,
)
from jaxalign.parallel import gather_to_all
from jaxalign.progress import RunInterrupted, RunProgress
from jaxalign.prompting.chat_formats import chat_template_name
from jaxalign.results import AlignResult
from jaxalign import tuning
from jaxalign.survey import Instrument, Target, l1_loss
from jaxalign.survey.presentations import position_content_split

logger = logging.getLogger(__name__)

def setup(lm: Any, targets: Sequence[Target], instrument: Instrument, config: AlignConfig,
          **options: Any) -> Problem:
    """The :class:`~jaxalign.optimize.problem.Problem` of a run (:func:`build_problem`: targets
    checked, items rendered, search space built or read back from ``space_file``), with the
    measured cost of an Adam step for ``method="gradient"`` / ``"hybrid"`` (:func:`measure_cost`),
    which sets their number of steps within the budget. ``options``: :func:`build_problem`'s
    keywords (``mesh``, ``scorer_options``, ``space_file``, ``resume``)."""
    problem = build_problem(lm, targets, instrument, config, **options)
    if config.method in ("gradient", "hybrid"):  # the budget's Adam steps follow the measured cost
        problem = dataclasses.replace(problem, cost=measure_cost(problem))
    return problem


_COSTS: dict[tuple, RunCost] = {}


def _flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    return None if not analysis or "flops" not in analysis else float(analysis["flops"])


def _unplaced(tree: Any) -> Any:
    """Every array leaf of ``tree`` as a bare ``ShapeDtypeStruct`` (no sharding, no device)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x, tree)


def measure_cost(problem: Problem) -> RunCost:
    """An Adam step's cost in forward passes, read from the compiled programs (:class:`RunCost`).

    Compiles (never runs) one Adam step for one target and one scoring pass of ``population``
    members of the run's training scorers, and takes the ratio of XLA's FLOP counts per member.
    Kept per process for equal settings; falls back to :data:`FALLBACK_FORWARDS_PER_STEP` (with a
    warning) when the backend gives no FLOP count.
    """
    one = dataclasses.replace(problem, targets=problem.targets[:1], cost=None)
    meshed = one.step()
    # measured as one device's programs: on a mesh XLA counts each device's share, and the two
    # programs split their work differently (members over "data", one Adam member replicated);
    # the ratio is the same for every layout, so a run on a mesh and on one device agree
    step = dataclasses.replace(meshed, switch=0, mesh=None,
                               programs=tuple(p if getattr(p, "mesh", None) is None else dataclasses.replace(p, mesh=None)
                                              for p in meshed.programs))
    key = (step, int(one.space.dim))
    if key in _COSTS:
        return _COSTS[key]
    members = problem.config.population
    try:
        args = run_args(one)
        adam_step = dataclasses.replace(step, config=dataclasses.replace(step.config, method="gradient"))
        state = initialise(one, meshed, args, method="gradient")
        args, state = _unplaced(args), _unplaced(state)   # shapes only: no sharding, nothing run
        z = jax.ShapeDtypeStruct((1, members, one.space.dim), jnp.float32)  # (1, P, n)
        forward = _flops(jax.jit(lambda z_, a: fitness(step, z_, a)).lower(z, args).compile())
        adam = _flops(jax.jit(lambda st, a: generation(adam_step, st, a)).lower(state, args).compile())
    except Exception as error:  # a backend without cost analysis: the budget still holds
        logger.warning("no FLOP count from XLA (%s); an Adam step is counted as %g forward passes",
                       error, FALLBACK_FORWARDS_PER_STEP)
        forward = adam = None
    cost = RunCost.from_flops(adam_step_flops=adam, forward_flops=forward, members=members)
    if cost.source == "fallback" and forward is not None:
        logger.warning("XLA gave no usable FLOP count; an Adam step is counted as %g forward passes",
                       FALLBACK_FORWARDS_PER_STEP)
    _COSTS[key] = cost
    return cost


def run_args(problem: Problem) -> RunArgs:
    keys = jnp.stack([target_key(problem.config.seed, t) for t in problem.targets])  # (C, 2)
    return RunArgs(
        inputs=tuple(s.inputs for s in problem.scorers),
        space=problem.space,
        targets=jnp.asarray(problem.target_values()),
        keys=strong(keys),
        z0=jnp.zeros((problem.n_targets, problem.space.dim), jnp.float32),  # the space's origin p0
        offsets=jnp.asarray(problem.offsets if problem.offsets is not None
                            else np.zeros(len(problem.instrument.dimensions)), jnp.float32),  # (D,)
    )


def initialise(problem: Problem, step: Step, args: RunArgs, *, method: str | None = None) -> RunState:
    """The state before step 0 of ``problem`` (:func:`initial_state`, best dims zero)."""
    dims = np.zeros((problem.n_targets, len(problem.instrument.dimensions)), np.float32)  # (C, D)
    return initial_state(step, args, dims, method=method)


def initial_state(step: Step, args: RunArgs, best_dims: Any, *, method: str | None = None) -> RunState:
    """The state before step 0: the optimizer's state template (step 0 replaces it), the best
    member ``z0``, no loss yet.

    ``best_dims``: the best-so-far aux before anything is scored (zeros, every leaf (C, ...));
    ``method``: the step's own by default (:func:`measure_cost` asks for an Adam state).
    """
    c = args.keys.shape[0]
    opt = optimizers.get(step.method if method is None else method).init(step, args)
    return strong(RunState(
        step=np.int32(0), opt=opt, best_z=np.asarray(args.z0, np.float32),
        best_loss=np.full((c,), np.inf, np.float32), best_dims=best_dims,
    ))


# ----------------------------------------------------------------------------- one step
def fitness(step: Step, z: jax.Array, args: RunArgs) -> tuple[jax.Array, jax.Array]:
    """Scores ``z (C, M, n)`` against each row's target: ``losses (C, M)``, ``dims (C, M, D)``.

    The C*M members are one population for the scorer (one pass; on a mesh, sharded over
    ``"data"``). With several presentations (option orders, wordings) the dims are their mean,
    which equals the indices of the item means averaged over the presentations (the indices are
    linear in the item means), and the loss is the objective's on that mean: ``L1(dims + offsets,
    target)`` (``args.offsets``, the objective's constants, fixed for the run).
    A user fitness function (``step.fitness_fn``) scores the C*M members instead: its losses
    ``(C, M)`` and aux (every leaf ``(C, M, ...)``).
    """
    c, m, n = z.shape
    if step.fitness_fn is not None:
        losses, aux = step.fitness_fn(z.reshape(c * m, n), args.inputs)
        return losses.reshape(c, m), jax.tree.map(lambda x: x.reshape(c, m, *x.shape[1:]), aux)
    flat = gather_to_all(z.reshape(c * m, n), step.mesh)  # the optimizer state is replicated
    tuned = tuning.get(step.config.intervention)
    params = tuned.decode(args.space, flat)  # (C*M, K, d) soft prompts, (C*M, d) steering vectors
    dims = [tuned.score(program, params, inputs).dims.reshape(c, m, -1)  # (C, M, D) each
            for program, inputs in zip(step.programs, args.inputs)]
    dim = sum(dims[1:], dims[0]) / len(dims)                                    # (C, M, D)
    shifted = dim if args.offsets is None else dim + args.offsets
    loss = jax.vmap(l1_loss)(shifted, args.targets)                             # (C, M)
    return gather_to_all((loss, dim), step.mesh)


def generation(step: Step, state: RunState, args: RunArgs) -> tuple[RunState, dict[str, jax.Array]]:
    """Runs step ``state.step`` for every target: the optimizer's update
    (:mod:`jaxalign.optimizers`, by ``step.method``), then each target's best-so-far member;
    ``(new state, record)``, record leaves (C, ...)."""
    done = optimizers.get(step.method).update(step, state, args, lambda z: fitness(step, z, args))
    losses = done.losses.astype(jnp.float32)  # (C, M)
    finite = jnp.isfinite(losses)
    clean = jnp.where(finite, losses, jnp.inf)
    new, record = update_best(state, done.population, clean, done.aux, finite, losses)
    return dataclasses.replace(new, opt=done.opt), record


def update_best(state: RunState, population, clean, dims, finite, losses):
    """Best-so-far per target from this step's ``(C, M, ...)`` members; the step's record.

    ``dims``: the members' dimension scores ``(C, M, D)``, or any aux pytree of leaves ``(C, M, ...)``."""
    idx = jnp.argmin(clean, axis=1)  # (C,)
    pick = lambda x: jnp.take_along_axis(x, idx.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]
    top = pick(clean)  # (C,)
    improved = top < state.best_loss
    where = lambda new, old: jnp.where(improved.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)
    best_z = where(pick(population), state.best_z)
    best_loss = where(top, state.best_loss)
    best_dims = jax.tree.map(lambda new, old: where(pick(new), old).astype(old.dtype), dims, state.best_dims)
    mean_loss = jnp.sum(jnp.where(finite, losses, 0.0), axis=1) / jnp.sum(finite, axis=1)  # NaN if none
    record = {"best_loss": best_loss, "mean_loss": mean_loss,
              "num_failed": jnp.sum(~finite, axis=1).astype(jnp.int32), "best_dims": best_dims}
    new = RunState(step=state.step + 1, opt=state.opt, best_z=best_z, best_loss=best_loss,
                   best_dims=best_dims)
    return new, record


def run_chunk(step: Step, state: RunState, args: RunArgs, s_end: jax.Array, length: int):
    """Scans ``length`` steps on device; steps ``>= s_end`` are skipped (their records dropped on
    the host), so every chunk, the short last one included, reuses one compiled program."""

    def body(state, _):
        def skip(state):
            nan = jnp.full_like(state.best_loss, jnp.nan)
            return state, {"best_loss": state.best_loss, "mean_loss": nan,
                           "num_failed": jnp.zeros(state.best_loss.shape, jnp.int32),
                           "best_dims": state.best_dims}

        return jax.lax.cond(state.step < s_end, lambda st: generation(step, st, args), skip, state)

    return jax.lax.scan(body, state, None, length=length)


_LOOPS: dict[tuple[Step, int], Any] = {}
MAX_LOOPS = 16  # jitted loops kept per process (each holds its compiled programs, never weights)


def loop_program(step: Step, length: int):
    """The jitted :func:`run_chunk` for ``step`` and chunk ``length``, one per process.

    jit's own cache then keys on the arguments' shapes and shardings, so an equal step with
    arrays of the same shapes reuses the compiled program. The oldest loop is dropped past
    ``MAX_LOOPS``.
    """
    key = (step, length)
    fn = _LOOPS.pop(key, None)
    if fn is None:
        fn = jax.jit(lambda st, a, e: run_chunk(step, st, a, e, length))
        while len(_LOOPS) >= MAX_LOOPS:
            _LOOPS.pop(next(iter(_LOOPS)))
    _LOOPS[key] = fn  # most recently used last
    return fn


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(checkpointer: RunCheckpointer, plan: LoopPlan, state: RunState,
                    history: dict[str, Any]) -> None:
    """Writes the state and history after ``state.step - 1`` generations; the record is a dict."""
    done = int(state.step) - 1
    record = {"fingerprint": plan.fingerprint, "generation": done, "generations_target": plan.total_steps - 1,
              **plan.record}
    checkpointer.save(done, {"state": state, "history": history}, record)


def restore_checkpoint(checkpointer: RunCheckpointer, plan: LoopPlan, template: RunState,
                       generation: int) -> tuple[RunState, dict[str, Any]]:
    """Reads the checkpoint at ``generation`` after checking it was made by this run's plan."""
    checkpointer.check_resumable(generation, plan.fingerprint, plan.total_steps - 1)
    row = lambda x, dtype=None: np.zeros((1, *np.shape(x)), dtype or x.dtype)  # one step's record
    history_template = {"best_loss": row(template.best_loss), "mean_loss": row(template.best_loss),
                        "num_failed": row(template.best_loss, np.int32),
                        "best_dims": jax.tree.map(row, template.best_dims)}
    tree = checkpointer.restore(generation, {"state": template, "history": history_template},
                                free_leading_axis=("['history']",))
    history = tree["history"]
    if history["best_loss"].shape[0] != generation + 1 or int(tree["state"].step) != generation + 1:
        raise ValueError(f"corrupt checkpoint in {checkpointer.directory!r} at generation {generation}")
    return strong(tree["state"]), history


# ----------------------------------------------------------------------------- the host loop
@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What :func:`run` returns: the final state, the history (leading axes (steps, C)), timings."""

    state: RunState
    history: dict[str, Any]
    compile_s: float
    loop_s: float
    steps_run: int
    resumed_from: int | None

    @property
    def s_per_generation(self) -> float:
        return self.loop_s / self.steps_run if self.steps_run else float("nan")


def run(problem: Problem, *, checkpoint_dir: str | None = None, resume: bool = False,
        progress: bool | str | RunProgress = False) -> RunOutcome:
    """Runs the problem to ``problem.total_steps`` steps (:func:`run_loop` with its plan, step,
    initial state and arguments); see there for checkpoints, progress and Ctrl-C."""
    args = run_args(problem)
    traced = problem.step()  # what the loop's trace reads; also builds the initial optimizer state
    return run_loop(problem.plan(), traced, initialise(problem, traced, args), args,
                    checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)


def run_loop(plan: LoopPlan, traced: Step, state: RunState, args: RunArgs, *,
             checkpoint_dir: str | None = None, resume: bool = False,
             progress: bool | str | RunProgress = False,
             callback: Callable[[int, float], None] | None = None) -> RunOutcome:
    """Runs ``state`` to ``plan.total_steps`` steps in device chunks of ``plan.chunk_size``.

    Checkpoints go to ``checkpoint_dir`` every ``plan.checkpoint_every`` generations (every
    chunk when ``None``); ``resume`` continues from the latest one, after checking its
    fingerprint. Progress (the mean of the targets' best losses) is reported after each chunk,
    after its checkpoint: ``progress`` is a :class:`~jaxalign.progress.RunProgress` or its
    ``enabled`` argument; then ``callback(generations_done, mean best loss)``, if given, is
    called (an exception raised there stops the run).

    Ctrl-C (KeyboardInterrupt) during the loop raises :class:`~jaxalign.progress.RunInterrupted`
    holding the state and history of the last completed chunk and the newest checkpoint kept.
    """
    total = plan.total_steps
    records: list[dict[str, Any]] = []
    resumed_from = None
    checkpointer = RunCheckpointer(checkpoint_dir) if checkpoint_dir is not None else None
    bar = progress if isinstance(progress, RunProgress) else RunProgress(total - 1, enabled=progress, unit=plan.unit)
    try:
        if checkpointer is not None:
            latest = checkpointer.latest_step()
            if latest is not None and not resume:
                raise ValueError(
                    f"checkpoint_dir {checkpointer.directory!r} already holds checkpoints (latest: "
                    f"generation {latest}); pass resume=True to continue that run, or use an empty folder")
            if latest is None and resume:
                logger.warning("%s holds no checkpoint yet, so there is nothing to resume: starting a fresh run",
                               checkpointer.directory)
            if latest is not None:  # refused on a mismatch before any time goes to the compile
                state, history = restore_checkpoint(checkpointer, plan, state, latest)
                records.append(history)
                resumed_from = latest
                logger.info("resumed from generation %d in %s", latest, checkpointer.directory)
        step = int(state.step)
        if resumed_from is not None:
            bar.phase(f"resuming from generation {resumed_from} of {total - 1}")
        length = plan.chunk_size + 1
        compile_s = loop_s = 0.0
        steps_run = 0
        if step < total:
            bar.phase("compiling the optimizer loop (scoring pass included)...")
            t0 = time.perf_counter()
            compiled = loop_program(traced, length).lower(state, args, np.int32(0)).compile()
            compile_s = time.perf_counter() - t0
            bar.phase(f"compiled in {compile_s:.1f} s")
        bar.start(max(step - 1, 0))
        try:
            state, records, loop_s, steps_run = _loop(
                plan, compiled if step < total else None, state, args, records, checkpointer, bar, callback)
        except RunInterrupted as stop:
            stop.checkpoint = checkpointer.latest_step() if checkpointer is not None else None
            stop.checkpoint_dir = checkpoint_dir
            raise
    finally:
        if bar:
            bar.close()
        if checkpointer is not None:
            checkpointer.close()
    return RunOutcome(state=state, history=_concat(records), compile_s=compile_s, loop_s=loop_s,
                      steps_run=steps_run, resumed_from=resumed_from)


def _loop(plan: LoopPlan, compiled, state: RunState, args: RunArgs, records: list,
          checkpointer: RunCheckpointer | None, bar: RunProgress, callback):
    """The chunk loop of :func:`run_loop`; Ctrl-C becomes :class:`RunInterrupted` with the last
    completed chunk's state and history (one assignment updates both, so they always agree)."""
    total = plan.total_steps
    done_pair = (state, list(records))
    step, loop_s, steps_run, failed_steps = int(state.step), 0.0, 0, 0
    try:
        while step < total:
            s_end = min(step + plan.chunk_size + (step == 0), total)
            if checkpointer is not None and plan.checkpoint_every is not None:
                next_save = (max(step - 1, 0) // plan.checkpoint_every + 1) * plan.checkpoint_every
                s_end = min(s_end, next_save + 1)
            t0 = time.perf_counter()
            new_state, chunk = compiled(done_pair[0], args, np.int32(s_end))
            chunk = jax.tree.map(lambda x: np.asarray(x)[: s_end - step], chunk)
            loop_s += time.perf_counter() - t0
            steps_run += s_end - step
            failed_steps = _check_finite(chunk["num_failed"], plan, s_end, failed_steps)
            done_pair = (new_state, done_pair[1] + [chunk])
            step = s_end
            done = step - 1
            best = float(np.mean(chunk["best_loss"][-1]))
            logger.info("generation %d/%d: mean best %.6g (%.2fs)", done, total - 1, best,
                        time.perf_counter() - t0)
            if checkpointer is not None:
                due = plan.checkpoint_every is None or done % plan.checkpoint_every == 0
                if due or step == total:
                    save_checkpoint(checkpointer, plan, done_pair[0], _concat(done_pair[1]))
            bar.update(done, best)
            bar.record(done + 1 - chunk["best_loss"].shape[0], chunk)
            if callback is not None:
                callback(done, best)
    except KeyboardInterrupt:
        state, records = done_pair
        raise RunInterrupted(int(state.step) - 1, total - 1, None, None, state=state,
                             history=_concat(records) if records else None) from None
    return done_pair[0], done_pair[1], loop_s, steps_run


def _check_finite(num_failed: np.ndarray, plan: LoopPlan, s_end: int, before: int) -> int:
    """Counts consecutive steps in which every member of some target failed; raises
    :class:`~jaxalign.optimize.evolution.NonFiniteFitnessError` after ``NONFINITE_PATIENCE`` of them
    (before that chunk's checkpoint is written, so the last checkpoint is the last good state).

    ``num_failed (S, C)`` holds steps ``s_end - S .. s_end - 1``. A step's members per target
    depend on its phase: ``population`` in an evolution step, one in an Adam step (so a hybrid's
    Adam phase is checked like a gradient run)."""
    num_failed = np.asarray(num_failed)
    first_step = s_end - num_failed.shape[0]
    count = before
    for offset, failed in enumerate(num_failed):  # (C,) per step
        members = plan.population if first_step + offset < plan.evolution_steps else 1  # per target
        count = count + 1 if np.any(failed >= members) else 0
    if count >= min(NONFINITE_PATIENCE, plan.total_steps):
        first = s_end - count
        raise NonFiniteFitnessError(
            f"every loss of a target's members was NaN or inf in {count} step(s) in a row (generations "
            f"{max(first - 1, 0)}..{s_end - 1}" + (", the initial population included" if first == 0 else "")
            + "): nothing can be optimised. Likely causes: the dtype overflows (e.g. bfloat16 "
            "activations; try float32), the model weights hold NaN/inf (a broken checkpoint or "
            "conversion), a resumed run's checkpoint is broken, or the target leaves no dimension to "
            "compare. The last checkpoint, if any, is the state before these steps.")
    return count


def _concat(records: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *records)


# ----------------------------------------------------------------------------- results
def baselines(problem: Problem) -> list[dict[str, BaselineResult]]:
    """The configured baselines per target, scored in the run's presentations and read with its
    objective (the plain model is scored once for all targets)."""
    config, lm, instrument = problem.config, problem.lm, problem.instrument
    names = config.baselines
    common = dict(readout=config.readout, seed=config.seed, shown=problem.shown or None,
                  offsets=problem.offsets)
    naive = None
    if "naive" in names:
        naive = run_baselines(lm, instrument, problem.targets[0], names=("naive",), **common)["naive"]
    out = []
    for target in problem.targets:
        others = tuple(n for n in names if n != "naive")
        found = run_baselines(lm, instrument, target, names=others, **common) if others else {}
        row = {}
        for name in names:
            if name == "naive":
                shifted = naive.dims if problem.offsets is None else naive.dims + problem.offsets
                row[name] = dataclasses.replace(naive, loss=float(l1_loss(shifted, target.values)))
            elif name in found:
                row[name] = found[name]
        out.append(row)
    return out


def results(problem: Problem, outcome: RunOutcome, *, t_start: float,
            baseline_rows: list[dict[str, BaselineResult]]) -> list[AlignResult]:
    """One :class:`~jaxalign.AlignResult` per target: its best prompt scored with
    ``config.readout`` in every presentation of the run (all C prompts in one pass each), dims and
    answers averaged over them, the loss the run's objective."""
    config = problem.config
    tuned = problem.tuning
    prompts = np.asarray(tuned.decode(problem.space, jnp.asarray(outcome.state.best_z)))  # (C, K, d) or (C, d)
    by_presentation = {}
    for name, scorer in zip(problem.presentations, problem.result_scorers):
        if scorer.members_per_pass is not None:
            scorer = dataclasses.replace(scorer, members_per_pass=None)
        scored = scorer(prompts)
        by_presentation[name] = (np.asarray(scored.dims), np.asarray(scored.probs))  # (C, D), (C, Q, 5)
    dims = np.mean([d for d, _ in by_presentation.values()], axis=0)            # (C, D)
    probs = np.mean([p for _, p in by_presentation.values()], axis=0)           # (C, Q, 5)
    offsets = np.zeros(dims.shape[1], np.float32) if problem.offsets is None else problem.offsets
    losses = np.asarray(jax.vmap(l1_loss)(jnp.asarray(dims + offsets), jnp.asarray(problem.target_values())))
    objective = objective_record(problem, {name: d for name, (d, _) in by_presentation.items()})
    if config.readout == "sample":  # the elite kept its lucky draws: re-score it with fresh respondents
        fresh = _fresh_draws(problem, prompts, offsets)
        for c, record in enumerate(objective):
            record["fresh_draws"] = {"loss": float(fresh[0][c]), "dims": [float(v) for v in fresh[1][c]]}
    evaluations = problem.evaluations
    history = outcome.history
    out = []
    wall_s = time.perf_counter() - t_start
    steps_recorded = len(history["best_loss"])
    phases = ["evolution" if s < problem.evolution_steps else "adam" for s in range(steps_recorded)]
    for c, target in enumerate(problem.targets):
        out.append(AlignResult(
            method=problem.label,
            target=target,
            **tuned.result_fields(problem, prompts[c], target),
            dims=dims[c],
            loss=float(losses[c]),
            probs=probs[c],
            baselines=baseline_rows[c],
            history={"best_loss": history["best_loss"][:, c].tolist(),
                     "mean_loss": history["mean_loss"][:, c].tolist(),
                     "best_dims": history["best_dims"][:, c].tolist(),
                     "phase": phases},
            model=problem.lm.name,
            wording=problem.instrument.wording,
            dimensions=tuple(problem.instrument.dimensions),
            config=config,
            wall_s=wall_s,
            compile_s=outcome.compile_s,
            evaluations=evaluations,
            cost=problem.cost.to_dict() if problem.cost is not None else None,
            resumed_from=outcome.resumed_from,
            s_per_generation=outcome.s_per_generation,
            chat_template=chat_template_name(problem.lm.tokenizer),
            fingerprints=normalise_json(problem.fingerprints(c)),
            objective=normalise_json(objective[c]),
        ))
    return out


def _fresh_draws(problem: Problem, prompts: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Losses ``(C,)`` and dims ``(C, D)`` of the best prompts re-scored with respondents the run
    never drew (the ``"sample"`` readout's key folded with 1). Selection keeps the members whose
    draws happened to fall well, so the run's own figure is biased low; this one is not."""
    dims = []
    for scorer in problem.result_scorers:
        if scorer.members_per_pass is not None:
            scorer = dataclasses.replace(scorer, members_per_pass=None)
        key = jax.random.fold_in(scorer.inputs.sample_key, 1)
        scorer = scorer.with_inputs(dataclasses.replace(scorer.inputs, sample_key=key))
        dims.append(np.asarray(scorer(prompts).dims))
    mean = np.mean(dims, axis=0)                                                # (C, D)
    losses = np.asarray(jax.vmap(l1_loss)(jnp.asarray(mean + offsets), jnp.asarray(problem.target_values())))
    return losses, mean


def objective_record(problem: Problem, dims: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """What ``results.json`` records of the objective, per target: the loss kind, its constants,
    the reference, the presentations scored, and (``dims``: presentation -> ``(C, D)``) the
    prompt's dims per presentation, with the position and content parts of its shift from the
    plain model when both the normal and the reversed order were scored."""
    objective, plain = problem.objective, problem.plain
    offsets = np.zeros(len(problem.instrument.dimensions)) if problem.offsets is None else problem.offsets
    out = []
    for c in range(problem.n_targets):
        record: dict[str, Any] = {
            "loss": objective.kind, "description": objective.describe(),
            "reference": objective.reference_label,
            "constants": [float(v) for v in offsets],
            "orders": problem.config.orders, "presentations": list(problem.presentations),
            "dims_by_presentation": {name: [float(v) for v in d[c]] for name, d in dims.items()},
        }
        if plain is not None:
            record["plain_dims_by_presentation"] = {name: [float(v) for v in d] for name, d in plain.items()}
            if "normal" in dims and "reversed" in dims:
                split = position_content_split(dims["normal"][c] - plain["normal"],
                                               dims["reversed"][c] - plain["reversed"])
                record["shift"] = {part: [float(v) for v in values] for part, values in split.items()}
        out.append(record)
    return out
