"""The evolution loop: any evosax 0.3 strategy on a jax-traceable fitness function, run on device.

The loop knows nothing of models or surveys. It minimises ``fitness_fn(z_pop, fitness_args)``:

* ``z_pop``: (P, n) float32 population of search vectors;
* ``fitness_args``: any pytree of arrays (e.g. model weights); it is an *argument* of the jitted
  chunk function, never a closed-over constant, so weights are not baked into the compiled program;
* returns ``(losses (P,), aux)`` where ``aux`` is a pytree whose leaves have leading axis P
  (e.g. the six dimension scores, (P, 6)), or ``None``.

Steps. Step 0 evaluates the initial population (``z0`` as member 0, the others
``z0 + init_scale * N(0, 1)``) and initialises the strategy (a distribution-based one, such as
SNES or CMA_ES, is then told that population: it is a draw of its initial distribution, so its P
evaluations are not wasted); step ``g >= 1`` is generation ``g``:
ask -> fitness -> sanitise -> tell -> update the best-so-far. The PRNG key of step ``s`` is
``jax.random.fold_in(PRNGKey(seed), s)``, so the trajectory does not depend on chunk boundaries:
a different ``chunk_size``, a resumed run and an uninterrupted run give the same result.

Device-side chunks. One jitted function runs ``chunk_size`` steps with ``jax.lax.scan``; a step
past the chunk's end (``s >= s_end``, traced) is skipped with ``lax.cond``, so every chunk, the
short last one included, reuses the single compiled executable. The fitness function appears once
in that program (step 0 and the generations share the evaluation). Between chunks the loop returns
to the host for the progress callback, logging and checkpoints.

Non-finite fitness. Losses that are NaN or +-inf count as failures: the best-so-far ignores them
(``+inf``), and the strategy sees ``+inf`` for population-based strategies (comparison-based
selection: DE keeps the parent, a failed trial never becomes the elite; evosax DE would otherwise
keep a NaN as elite because ``argmin`` returns NaNs first) and the worst finite loss of the
generation for distribution-based strategies (which do arithmetic on fitness, where ``inf`` would
turn the mean into NaN; their samples are redrawn every generation anyway). A generation in which
*no* member has a finite loss leaves the strategy state untouched (for every strategy), so it never
counts as an improvement. When :data:`NONFINITE_PATIENCE` steps in a row (the initial population
counts as one) fail entirely, the run stops with :class:`NonFiniteFitnessError` (before
that chunk's checkpoint is written, so the last checkpoint is the last good state).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import evosax.algorithms as ea
import jax
import jax.numpy as jnp
import numpy as np
from evosax.algorithms.population_based.base import PopulationBasedAlgorithm

from jaxalign.optimize.checkpoint import RunCheckpointer, normalise_json

logger = logging.getLogger(__name__)

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


def _build_chunk_fn(strategy: Any, params: Any, fitness_fn: FitnessFn, config: EvolutionConfig) -> Callable:
    """The device-side chunk ``chunk(carry, fitness_args, z0, base_key, s_start, s_end) -> (carry, records)``.

    It scans a fixed ``chunk_size + 1`` steps (room for step 0 plus ``chunk_size`` generations in
    the first chunk) and skips the steps ``s >= s_end``; records of skipped steps are dropped on
    the host.
    """
    pop_size = config.population_size
    length = config.chunk_size + 1
    init_scale = float(config.init_scale)
    population_based = isinstance(strategy, PopulationBasedAlgorithm)

    def for_strategy(losses: jax.Array) -> jax.Array:
        finite = jnp.isfinite(losses)
        if population_based:
            return jnp.where(finite, losses, jnp.inf)
        worst = jnp.max(jnp.where(finite, losses, -jnp.inf))
        # with no finite loss at all the strategy's update is discarded (tell_state below)
        return jnp.where(finite, losses, jnp.where(jnp.any(finite), worst, 0.0))

    def step(carry, s, fitness_args, z0, base_key):
        state, best_z, best_loss, best_aux = carry
        key_ask, key_tell, key_pop = jax.random.split(jax.random.fold_in(base_key, s), 3)
        is_init = s == 0

        asked, _ = strategy.ask(key_ask, state, params)
        noise = init_scale * jax.random.normal(key_pop, (pop_size, z0.shape[0]), jnp.float32)
        initial = (z0 + noise).at[0].set(z0)
        population = jnp.where(is_init, initial, asked.astype(jnp.float32))  # (P, n)

        losses, aux = fitness_fn(population, fitness_args)
        losses = losses.astype(jnp.float32)  # (P,)
        finite = jnp.isfinite(losses)
        clean = jnp.where(finite, losses, jnp.inf)
        shaped = for_strategy(losses)

        def tell(before):
            told = strategy.tell(key_tell, population, shaped, before, params)[0]
            # a generation without one finite loss teaches nothing: keep the state as it was
            # (DE would otherwise swap +inf parents for +inf trials, and a distribution-based
            # strategy would rank arbitrary members)
            any_finite = jnp.any(finite)
            return jax.tree.map(lambda new, old: jnp.where(any_finite, new, old), told, before)

        def init_state(_):
            if population_based:
                return strategy.init(key_tell, population, shaped, params)
            # the initial population is a draw of the strategy's initial distribution (mean z0,
            # spread init_scale): it is told, so step 0's P evaluations are not wasted
            return tell(_same_types(strategy.init(key_tell, z0, params), state))

        def tell_state(_):
            return tell(state)

        new_state = jax.lax.cond(is_init, init_state, tell_state, None)
        new_state = _same_types(new_state, state)

        idx = jnp.argmin(clean)
        improved = clean[idx] < best_loss
        best_z = jnp.where(improved, population[idx], best_z)
        best_loss = jnp.where(improved, clean[idx], best_loss)
        best_aux = jax.tree.map(lambda new, old: jnp.where(improved, new[idx], old), aux, best_aux)
        best_aux = _same_types(best_aux, carry[3])

        num_failed = jnp.sum(~finite).astype(jnp.int32)
        mean_loss = jnp.sum(jnp.where(finite, losses, 0.0)) / jnp.sum(finite)  # NaN if none finite
        record = {"best_loss": best_loss, "mean_loss": mean_loss, "num_failed": num_failed, "best_aux": best_aux}
        return (new_state, best_z, best_loss, best_aux), record

    def chunk(carry, fitness_args, z0, base_key, s_start, s_end):
        def body(carry, s):
            def skip(carry):
                record = {
                    "best_loss": carry[2],
                    "mean_loss": jnp.float32(jnp.nan),
                    "num_failed": jnp.int32(0),
                    "best_aux": carry[3],
                }
                return carry, record

            def run(carry):
                return step(carry, s, fitness_args, z0, base_key)

            return jax.lax.cond(s < s_end, run, skip, carry)

        steps = s_start + jnp.arange(length, dtype=jnp.int32)
        return jax.lax.scan(body, carry, steps)

    return chunk


def _trailing_failed_steps(num_failed: np.ndarray, pop_size: int, before: int) -> int:
    """Consecutive steps at the end of a chunk in which every member failed (continuing ``before``)."""
    count = before
    for failed in np.asarray(num_failed):
        count = count + 1 if int(failed) >= pop_size else 0
    return count


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
        fitness_args: pytree of arrays passed to ``fitness_fn`` (an argument of the jitted chunk).
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
    strategy, params = _make_strategy(config, n)
    base_key = jax.random.PRNGKey(config.seed)
    if isinstance(strategy, PopulationBasedAlgorithm):
        template_state = strategy.init(
            base_key, jnp.zeros((pop_size, n), jnp.float32), jnp.zeros((pop_size,), jnp.float32), params
        )
    else:
        template_state = strategy.init(base_key, jnp.asarray(z0), params)
    carry = _strong(
        (
            template_state,
            z0,
            np.float32(np.inf),
            jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), aux_spec),
        )
    )
    args_z0, args_key = jnp.asarray(z0), _strong(base_key)

    run_fingerprint = normalise_json(
        {
            "user": dict(fingerprint or {}),
            "config": config.trajectory_fields(),
            "problem": {"n": int(n), "z0_sha256": _z0_digest(z0)},
        }
    )
    records: list[dict[str, Any]] = []  # host copies of per-step records
    step, resumed_from = 0, None
    checkpointer = RunCheckpointer(checkpoint_dir) if checkpoint_dir is not None else None
    try:
        if checkpointer is not None:
            latest = checkpointer.latest_step()
            if latest is not None and not resume:
                raise ValueError(
                    f"checkpoint_dir {checkpointer.directory!r} already holds checkpoints (latest: "
                    f"generation {latest}); pass resume=True to continue that run, or use an empty folder"
                )
            if latest is None and resume:
                logger.warning("resume=True but %s holds no checkpoint: starting a fresh run", checkpointer.directory)
            if latest is not None:  # refuse a mismatch before spending time on the compile
                checkpointer.check_resumable(latest, run_fingerprint, config.generations)
                carry, records, step = _restore(checkpointer, latest, config, carry, aux_spec)
                resumed_from = step - 1
                logger.info("resumed from generation %d in %s", resumed_from, checkpointer.directory)

        compile_s, loop_s, steps_run, failed_steps = 0.0, 0.0, 0, 0
        if step < total_steps:
            t_compile = time.perf_counter()
            compiled = (
                jax.jit(_build_chunk_fn(strategy, params, fitness_fn, config))
                .lower(carry, fitness_args, args_z0, args_key, np.int32(0), np.int32(0))
                .compile()
            )
            compile_s = time.perf_counter() - t_compile

        while step < total_steps:
            s_end = min(step + config.chunk_size + (step == 0), total_steps)
            if checkpointer is not None and config.checkpoint_every is not None:
                next_save = (max(step - 1, 0) // config.checkpoint_every + 1) * config.checkpoint_every
                s_end = min(s_end, next_save + 1)
            t_chunk = time.perf_counter()
            carry, chunk_records = compiled(
                carry, fitness_args, args_z0, args_key, np.int32(step), np.int32(s_end)
            )
            chunk_records = jax.tree.map(lambda x: np.asarray(x)[: s_end - step], chunk_records)
            loop_s += time.perf_counter() - t_chunk
            steps_run += s_end - step
            failed_steps = _trailing_failed_steps(chunk_records["num_failed"], pop_size, failed_steps)
            if failed_steps >= min(NONFINITE_PATIENCE, total_steps):
                first = s_end - failed_steps
                raise NonFiniteFitnessError(
                    f"every loss of {pop_size} members was NaN or inf in {failed_steps} step(s) in a row "
                    f"(generations {max(first - 1, 0)}..{s_end - 1}"
                    + (", the initial population included" if first == 0 else "")
                    + "): nothing can be optimised. Likely causes: the dtype overflows (e.g. bfloat16 "
                    "activations; try float32), the model weights hold NaN/inf (a broken checkpoint "
                    "or conversion), a resumed run's checkpoint is broken, or the target leaves no "
                    "dimension to compare. The last checkpoint, if any, is the state before these steps."
                )
            records.append(chunk_records)
            step = s_end
            done = step - 1
            best_loss = float(chunk_records["best_loss"][-1])
            logger.info(
                "generation %d/%d: best %.6g, mean %.6g, failed %d (%.2fs)",
                done, config.generations, best_loss, float(chunk_records["mean_loss"][-1]),
                int(chunk_records["num_failed"][-1]), time.perf_counter() - t_chunk,
            )
            if checkpointer is not None:
                due = config.checkpoint_every is None or done % config.checkpoint_every == 0
                if due or step == total_steps:
                    _save(checkpointer, done, carry, records, base_key, run_fingerprint, config)
            if progress is not None:
                progress(done, best_loss)
    finally:
        if checkpointer is not None:
            checkpointer.close()

    history = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *records)
    state, best_z, best_loss, best_aux = carry
    return EvolutionResult(
        best_z=np.asarray(best_z),
        best_loss=float(best_loss),
        best_aux=jax.tree.map(np.asarray, best_aux),
        history=history,
        generations_run=total_steps - 1,
        evaluations=pop_size * total_steps,
        wall_s=time.perf_counter() - t_start,
        compile_s=compile_s,
        resumed_from=resumed_from,
        state=state,
        loop_s=loop_s,
        steps_run=steps_run,
    )


def _save(
    checkpointer: RunCheckpointer,
    generation: int,
    carry: Any,
    records: list[dict[str, Any]],
    base_key: jax.Array,
    run_fingerprint: dict[str, Any],
    config: EvolutionConfig,
) -> None:
    history = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *records)
    tree = {"carry": carry, "history": history, "base_key": base_key}
    record = {"fingerprint": run_fingerprint, "generation": int(generation), "generations_target": config.generations}
    checkpointer.save(generation, tree, record)


def _restore(
    checkpointer: RunCheckpointer,
    generation: int,
    config: EvolutionConfig,
    carry_template: Any,
    aux_spec: Any,
) -> tuple[Any, list[dict[str, Any]], int]:
    """Read the checkpoint at ``generation``: (carry, [history], next step)."""
    history_template = {
        "best_loss": np.zeros((1,), np.float32),
        "mean_loss": np.zeros((1,), np.float32),
        "num_failed": np.zeros((1,), np.int32),
        "best_aux": jax.tree.map(lambda s: np.zeros((1, *s.shape), s.dtype), aux_spec),
    }
    template = {"carry": carry_template, "history": history_template, "base_key": np.asarray(jax.random.PRNGKey(config.seed))}
    tree = checkpointer.restore(generation, template, free_leading_axis=("['history']",))
    if not np.array_equal(tree["base_key"], template["base_key"]):
        raise ValueError("the checkpoint's PRNG key does not match this run's seed")
    history = tree["history"]
    if history["best_loss"].shape[0] != generation + 1:
        raise ValueError(
            f"corrupt checkpoint: history has {history['best_loss'].shape[0]} rows for generation {generation}"
        )
    return _strong(tree["carry"]), [history], generation + 1
