"""One alignment pipeline: a problem set-up and one run loop for DE (any evosax strategy), Adam
and both-orders tuning, for one target or C targets at once.

:func:`jaxalign.align`, :func:`jaxalign.evaluate.robustness.align_both_orders` and
:func:`jaxalign.optimize.gradient.gradient_align` are thin entry points over it::

    setup(lm, targets, instrument, config)  -> Problem    (resolve targets, scorers per
                                                           presentation, search space, keys)
    problem.step()                          -> Step       (what a step's trace reads: the
                                                           config and scoring programs, no arrays)
    initialise(problem, step, args)         -> RunState   (step 0 not run yet)
    generation(step, state, args)           -> RunState, record     (one step, on device)
    run_chunk(step, state, args, s_end)     -> RunState, records    (lax.scan of steps)
    save_checkpoint / restore_checkpoint    (orbax; the state pytree and the history)
    run(problem, ...)                       -> RunOutcome            (host loop: chunks,
                                                                      checkpoints, progress bar)
    results(problem, outcome, ...)          -> [AlignResult] * C

One step for C targets and a population of P (``config.method == "de"``)::

    z                         (C, P, n)   evosax ask per target (vmapped over the C states)
      -> prompts p0 + z A     (C*P, K, d) ONE population: the C targets share the scoring pass
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

Steps and keys. Step 0 scores the initial population (DE: ``z = 0`` as member 0, the others
``init_scale * N(0, 1)``, told to SNES/CMA as their first generation; Adam: ``z = 0``);
step ``s`` uses ``fold_in(key_c, s)``, so chunk
boundaries, checkpoints and resumption do not change the trajectory: a resumed run equals the
uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from evosax.algorithms.population_based.base import PopulationBasedAlgorithm

from jaxalign.api import (
    RESUMABLE_CHANGES,
    AlignConfig,
    _targets_fingerprint,
    AlignResult,
    RunInterrupted,
    RunProgress,
    search_space,
)
from jaxalign.baselines import BaselineResult, run_baselines
from jaxalign.fingerprint import (
    instrument_fingerprint,
    model_fingerprint,
    prompt_fingerprint,
    space_fingerprint,
    target_fingerprint,
)
from jaxalign.prompting.chat_formats import chat_template_name
from jaxalign.optimize.checkpoint import RunCheckpointer, normalise_json
from jaxalign.optimize.evolution import (
    NONFINITE_PATIENCE,
    NonFiniteFitnessError,
    _make_strategy,
    _same_types,
    _strong,
)
from jaxalign.parallel import gather_to_all, replicate
from jaxalign.scoring import Scorer, ScoringProgram, _score_members, make_scorer
from jaxalign.softprompt import SoftPromptSpace
from jaxalign.survey import Instrument, Target, l1_loss

logger = logging.getLogger(__name__)

FALLBACK_FORWARDS_PER_STEP = 4.0  # an Adam step when XLA reports no FLOPs: forward, recompute, backward
PRESENTATIONS = ("normal", "reversed")


@dataclasses.dataclass(frozen=True)
class RunCost:
    """What an Adam step costs in forward passes of one member, read from the compiled programs.

    ``adam_step_flops`` and ``forward_flops`` are XLA's cost analysis (``'flops'``) of the
    compiled Adam step of the run (C targets, one member each) and of one scoring pass of its
    ``members`` (C * P) members. XLA counts a loop's body once, so each figure stands for one
    layer of the layer scan plus the work outside it; their ratio per member,
    ``forwards_per_step``, is what an Adam step costs in forward passes (the rematerialised
    backward included). ``source``: ``"xla"`` (measured) or ``"fallback"``
    (:data:`FALLBACK_FORWARDS_PER_STEP`, when XLA gave no FLOP count).
    """

    forwards_per_step: float
    adam_step_flops: float | None = None
    forward_flops: float | None = None
    members: int = 1
    targets: int = 1
    source: str = "fallback"

    @classmethod
    def from_flops(cls, *, adam_step_flops: float | None, forward_flops: float | None, members: int,
                   targets: int = 1) -> RunCost:
        """The cost from the two FLOP counts (C targets' Adam step; one pass of ``members``)."""
        ok = all(v is not None and np.isfinite(v) and v > 0 for v in (adam_step_flops, forward_flops))
        if not ok:
            return cls(FALLBACK_FORWARDS_PER_STEP, adam_step_flops, forward_flops, members, targets, "fallback")
        ratio = (adam_step_flops / targets) / (forward_flops / members)
        return cls(float(ratio), float(adam_step_flops), float(forward_flops), members, targets, "xla")

    def to_dict(self) -> dict[str, Any]:
        return {"forwards_per_step": round(self.forwards_per_step, 6), "adam_step_flops": self.adam_step_flops,
                "forward_flops": self.forward_flops, "forward_members": self.members,
                "targets": self.targets, "source": self.source}


def budget(config: AlignConfig) -> int:
    """A run's budget in forward passes of one member: ``population * (generations + 1)``."""
    return config.population * (config.generations + 1)


def gradient_steps(population: int, generations: int,
                   forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Adam steps with DE's forward-pass budget: ``floor(population * (generations + 1) / cost)``.

    ``forwards_per_step``: an Adam step's cost in forward passes (:class:`RunCost`). Raises
    ValueError when the budget holds no step."""
    total = population * (generations + 1)
    steps = int(np.floor(total / forwards_per_step + 1e-9))
    if steps < 1:
        raise ValueError(f"gradient: a budget of {total} forward passes (population x (generations + 1)) "
                         f"holds no Adam step ({forwards_per_step:.3g} forward passes each); raise generations")
    return steps


def hybrid_steps(population: int, generations: int, fraction: float,
                 forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> tuple[int, int]:
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
    evolution = min(max(2, round(fraction * (generations + 1))), room)
    left = total - population * evolution
    return evolution, int(np.floor(left / forwards_per_step + 1e-9))


def evolution_steps(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Steps run by the evosax strategy (all for DE, none for Adam, the first phase of hybrid)."""
    if config.method == "gradient":
        return 0
    if config.method == "hybrid":
        return hybrid_steps(config.population, config.generations, config.hybrid_fraction, forwards_per_step)[0]
    return config.generations + 1


def total_steps(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> int:
    """Steps of a run: DE ``generations + 1`` (step 0 = the initial population), Adam
    :func:`gradient_steps`, hybrid both phases of :func:`hybrid_steps`."""
    if config.method == "gradient":
        return gradient_steps(config.population, config.generations, forwards_per_step)
    if config.method == "hybrid":
        return sum(hybrid_steps(config.population, config.generations, config.hybrid_fraction, forwards_per_step))
    return config.generations + 1


def spent(config: AlignConfig, forwards_per_step: float = FALLBACK_FORWARDS_PER_STEP) -> float:
    """Forward passes a run spends (never more than :func:`budget`): ``population`` per evolution
    step (DE, SNES, CMA: step 0's initial population included), ``forwards_per_step`` per Adam step."""
    evolution = evolution_steps(config, forwards_per_step)
    adam = total_steps(config, forwards_per_step) - evolution
    return config.population * evolution + forwards_per_step * adam


def target_key(seed: int, target: Target) -> jax.Array:
    """The PRNG key of ``target``'s search: ``seed`` folded with a hash of the target's identity.

    The identity is its name, code and scores, so the key (and the search) of one target never
    depends on which other targets run beside it.
    """
    values = ",".join("nan" if np.isnan(v) else f"{float(v):.6g}" for v in np.asarray(target.values))
    identity = f"{target.name}|{target.code or ''}|{values}"
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(identity.encode()) & 0x7FFFFFFF)


# ----------------------------------------------------------------------------- the problem
@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything a run needs, fixed before anything is compiled (one or C targets).

    Attributes:
      lm: the frozen model.
      instrument: the survey.
      targets: the C targets (C >= 1), searched independently.
      config: the :class:`~jaxalign.AlignConfig` (``method``, ``both_orders``, budget...).
      scorers: one scorer per presentation (``presentations``), with the training readout
        (``config.readout`` for DE, ``"expected"`` for Adam); targets are applied here, not in them.
      presentations: ``("normal",)``, ``("normal", "reversed")`` (both-orders tuning), then one
        ``"wording:<name>"`` per ``config.extra_wordings`` file; the loss is their mean.
      result_scorer: scores the best prompts for the results (``config.readout``, normal order).
      space: the soft-prompt search space (shared by all targets).
      embedding_std: the embedding std the space and init_scale are scaled by.
      mesh: a device mesh or ``None``.
    """

    lm: Any
    instrument: Instrument
    targets: tuple[Target, ...]
    config: AlignConfig
    scorers: tuple[Scorer, ...]
    presentations: tuple[str, ...]
    result_scorer: Scorer
    space: SoftPromptSpace
    embedding_std: float
    mesh: Any = None
    content: Mapping[str, Any] | None = None  # content fingerprints (jaxalign.fingerprint)
    cost: RunCost | None = None  # an Adam step's measured cost (gradient, hybrid): measure_cost

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    @property
    def forwards_per_step(self) -> float:
        """An Adam step's cost in forward passes: measured (:attr:`cost`) or the fallback."""
        return self.cost.forwards_per_step if self.cost is not None else FALLBACK_FORWARDS_PER_STEP

    @property
    def total_steps(self) -> int:
        """Steps of the run (:func:`total_steps` at the measured Adam-step cost)."""
        return total_steps(self.config, self.forwards_per_step)

    @property
    def evolution_steps(self) -> int:
        """Steps run by the evosax strategy (all for DE, none for Adam, the first phase of hybrid)."""
        return evolution_steps(self.config, self.forwards_per_step)

    @property
    def evaluations(self) -> int | float:
        """Forward passes of one member the whole run spends (:func:`spent`; an int for DE)."""
        if self.config.method not in ("gradient", "hybrid"):
            return budget(self.config)
        return float(spent(self.config, self.forwards_per_step))

    @property
    def label(self) -> str:
        """``AlignResult.method``: ``"de"``, ``"gradient"``, with ``"-both-orders"`` when so tuned."""
        return self.config.method + ("-both-orders" if self.config.both_orders else "")

    def target_values(self) -> np.ndarray:
        return np.stack([np.asarray(t.values, np.float32) for t in self.targets])  # (C, D)

    def step(self) -> Step:
        """What a step's trace reads from this problem (see :class:`Step`)."""
        members = self.n_targets * (1 if self.config.method == "gradient" else self.config.population)
        programs = []
        for scorer in self.scorers:
            per_pass = scorer.members_per_pass
            if per_pass == "auto":  # only DE trains with "auto": one pass scores C*P members
                per_pass = scorer.auto_members_per_pass(members)
            programs.append(scorer.program(per_pass))
        # the seed reaches the loop only through its arguments (the targets' keys, the space), so
        # runs that differ only in their seed share one loop
        switch = self.evolution_steps if self.config.method == "hybrid" else 0
        return Step(config=dataclasses.replace(self.config, seed=0), embedding_std=float(self.embedding_std),
                    space_dim=int(self.space.dim), mesh=self.mesh, programs=tuple(programs), switch=switch)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint of this problem must match to be resumed (JSON-able)."""
        config = self.config.to_dict()
        return normalise_json({
            "model": self.lm.name,
            "dtype": str(np.dtype(self.lm.dtype)),
            "wording": self.instrument.wording,
            "targets": _targets_fingerprint(self.targets),
            "n": int(self.space.dim),
            **{key: value for key, value in config.items()
               if key not in RESUMABLE_CHANGES},
            "content": dict(self.content or {}),
        })

    def fingerprints(self, c: int) -> dict[str, Any]:
        """Target ``c``'s content fingerprints as ``results.json`` records them."""
        content = dict(self.content or {})
        targets = content.pop("targets", [])
        return {**content, "target": targets[c] if c < len(targets) else None}


def setup(
    lm: Any,
    targets: Sequence[Target],
    instrument: Instrument,
    config: AlignConfig,
    *,
    mesh: Any = None,
    scorer_options: Mapping[str, Any] | None = None,
    space_file: Any = None,
    resume: bool = False,
) -> Problem:
    """Builds the :class:`Problem`: checks targets, renders the items, builds the search space.

    ``space_file``: where the run keeps ``p0`` and the basis (``search_space.safetensors``): a
    fresh run writes them, a resume (``resume=True``) reads them back instead of redrawing them.
    The problem's content fingerprints (model, instrument, targets, rendered prompts, space) are
    computed here once; checkpoints record them and a resume compares them.
    """
    targets = tuple(targets)
    if not targets:
        raise ValueError("no target given: pass a country, a custom target, or a list of them")
    for target in targets:
        if tuple(target.dimensions) != tuple(instrument.dimensions):
            raise ValueError(f"target dimensions {target.dimensions} do not match the instrument's "
                             f"{instrument.dimensions}")
    names = [t.name for t in targets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"each target may appear once; repeated: {', '.join(repeated)}")
    if lm.tokenizer is None:
        raise ValueError(f"model {lm.name!r} has no tokenizer; pass tokenizer= to load_model")
    options = dict(scorer_options or {})
    common = dict(k=config.k, system=config.system, slot=config.slot, n_respondents=config.n_respondents,
                  seed=config.seed, mode=config.scoring_mode, mesh=mesh, **options)
    presentations = PRESENTATIONS if config.both_orders else PRESENTATIONS[:1]
    wordings = {p: (instrument, p == "reversed") for p in presentations}
    for path in config.extra_wordings:  # user wordings tuned on beside the main one
        extra = tuning_wording(path, instrument)
        wordings[f"wording:{extra.wording}"] = (extra, False)
    presentations = tuple(wordings)
    if config.method in ("gradient", "hybrid"):  # Adam trains on the only differentiable readout
        train = dict(readout="expected", members_per_pass=None)
    else:
        train = dict(readout=config.readout, members_per_pass=config.members_per_pass)
    scorers = tuple(make_scorer(lm, wordings[p][0], reverse_options=wordings[p][1], **train, **common)
                    for p in presentations)
    if config.method == "de" and config.members_per_pass is None:
        result_scorer = scorers[0]  # same readout: reuse its compiled function
    else:
        result_scorer = make_scorer(lm, instrument, readout=config.readout, **common)
    space, embedding_std = search_space(lm, config)
    if space_file is not None:
        from jaxalign.api import _saved_search_space

        space = _saved_search_space(Path(space_file), space, resume=resume)
    content = {
        "model": model_fingerprint(lm),
        "instrument": instrument_fingerprint(instrument),
        "targets": [target_fingerprint(t) for t in targets],
        "prompts": {p: prompt_fingerprint(s.batch) for p, s in zip(presentations, scorers)},
        "space": space_fingerprint(space),
    }
    if mesh is not None:
        space = replicate(space, mesh)  # every device decodes its own members' prompts
    problem = Problem(lm=lm, instrument=instrument, targets=targets, config=config, scorers=scorers,
                      presentations=presentations, result_scorer=result_scorer, space=space,
                      embedding_std=embedding_std, mesh=mesh, content=content)
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
                               programs=tuple(dataclasses.replace(p, mesh=None) for p in meshed.programs))
    key = (step, int(one.space.dim))
    if key in _COSTS:
        return _COSTS[key]
    members = problem.config.population
    try:
        args = run_args(one)
        state = initialise(dataclasses.replace(one, config=dataclasses.replace(one.config, method="gradient")),
                           meshed, args)
        args, state = _unplaced(args), _unplaced(state)   # shapes only: no sharding, nothing run
        z = jax.ShapeDtypeStruct((1, members, one.space.dim), jnp.float32)  # (1, P, n)
        forward = _flops(jax.jit(lambda z_, a: fitness(step, z_, a)).lower(z, args).compile())
        adam = _flops(jax.jit(lambda st, a: _adam_step(step, st, a)).lower(state, args).compile())
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


def tuning_wording(path: str, instrument: Instrument) -> Instrument:
    """An extra wording to tune on (a JSON wording file, :func:`jaxalign.survey.load_wording`).

    The project's held-out wording is refused: it exists to measure generalisation, so a prompt
    tuned on it would make the held-out figures meaningless.
    """
    from jaxalign.survey.paraphrase import HELDOUT_WORDING, heldout_items
    from jaxalign.survey.vsm13 import load_wording

    if str(path) == HELDOUT_WORDING:
        raise ValueError(f"{HELDOUT_WORDING!r} is the held-out wording, kept out of tuning so that "
                         "`jaxalign eval robustness` measures generalisation; tune on your own wordings")
    extra = load_wording(path, instrument)
    held = {item.id: item.text.strip() for item in heldout_items()}
    same = [item.id for item in extra.items if held.get(item.id) == item.text.strip()]
    if same:
        raise ValueError(
            f"wording file {str(path)!r} repeats the project's held-out wording (items {', '.join(same[:5])}"
            f"{'...' if len(same) > 5 else ''}); the held-out wording is kept out of tuning so that "
            "`jaxalign eval robustness` measures generalisation; tune on your own wordings")
    return extra


# ----------------------------------------------------------------------------- state and args
@dataclasses.dataclass(frozen=True)
class Step:
    """Everything a step's trace reads besides its arguments: no arrays, no weights (hashable).

    Equal steps trace equal programs, so :func:`run` compiles one loop per ``Step`` and length in
    a process. Holding no weights, a kept loop never keeps a model alive.

    Attributes:
      config: the run's :class:`~jaxalign.AlignConfig` (method, population, strategy settings...),
        its seed set to 0 (the seed is in the arguments).
      embedding_std: the scale of the search space and the initial spread.
      space_dim: ``n``, the search vector's size.
      mesh: a device mesh or ``None``.
      programs: one :class:`~jaxalign.scoring.ScoringProgram` per presentation.
      switch: hybrid's evolution steps (then Adam); 0 for the other methods.
    """

    config: AlignConfig
    embedding_std: float
    space_dim: int
    mesh: Any
    programs: tuple[ScoringProgram, ...]
    switch: int = 0  # hybrid: the evolution steps before Adam (they depend on the measured cost)


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """The arrays a step takes as jit arguments (weights included: never baked in)."""

    inputs: tuple            # one ScorerInputs per presentation
    space: SoftPromptSpace
    targets: jax.Array       # (C, D) float32, NaN where missing
    keys: jax.Array          # (C, 2) uint32, one PRNG key per target


@dataclasses.dataclass(frozen=True)
class RunState:
    """The run's state after ``step`` steps (a pytree; what a checkpoint stores).

    Attributes:
      step: () int32, the next step to run.
      opt: the optimizer state, every leaf with leading axis C (evosax state vmapped over the
        targets, or ``(z (C, n), Adam state)``).
      best_z: (C, n) best search vector per target; best_loss: (C,); best_dims: (C, D).
    """

    step: jax.Array
    opt: Any
    best_z: jax.Array
    best_loss: jax.Array
    best_dims: jax.Array


for _cls in (RunArgs, RunState):
    jax.tree_util.register_dataclass(
        _cls, data_fields=[f.name for f in dataclasses.fields(_cls)], meta_fields=[])


def run_args(problem: Problem) -> RunArgs:
    keys = jnp.stack([target_key(problem.config.seed, t) for t in problem.targets])  # (C, 2)
    return RunArgs(
        inputs=tuple(s.inputs for s in problem.scorers),
        space=problem.space,
        targets=jnp.asarray(problem.target_values()),
        keys=_strong(keys),
    )


def _strategy(step: Step):
    return _make_strategy(step.config.evolution_config(step.embedding_std), step.space_dim)


def _optimizer(step: Step) -> optax.GradientTransformation:
    config = step.config
    step_size = config.learning_rate if config.subspace is not None else config.learning_rate * step.embedding_std
    return optax.chain(optax.zero_nans(), optax.adam(step_size))


def initialise(problem: Problem, step: Step, args: RunArgs) -> RunState:
    """The state before step 0 (the optimizer state is a template that step 0 replaces)."""
    c, n, d = problem.n_targets, problem.space.dim, len(problem.instrument.dimensions)
    z0 = jnp.zeros((n,), jnp.float32)
    z = jnp.zeros((c, n), jnp.float32)
    adam = (z, _optimizer(step).init(z))
    if problem.config.method == "gradient":
        opt = adam
    else:
        strategy, params = _strategy(step)
        pop = problem.config.population
        if isinstance(strategy, PopulationBasedAlgorithm):
            opt = jax.vmap(lambda k: strategy.init(
                k, jnp.zeros((pop, n), jnp.float32), jnp.zeros((pop,), jnp.float32), params))(args.keys)
        else:
            opt = jax.vmap(lambda k: strategy.init(k, z0, params))(args.keys)
        if problem.config.method == "hybrid":
            opt = (opt, adam)
    return _strong(RunState(
        step=np.int32(0), opt=opt, best_z=np.zeros((c, n), np.float32),
        best_loss=np.full((c,), np.inf, np.float32), best_dims=np.zeros((c, d), np.float32),
    ))


# ----------------------------------------------------------------------------- one step
def fitness(step: Step, z: jax.Array, args: RunArgs) -> tuple[jax.Array, jax.Array]:
    """Scores ``z (C, M, n)`` against each row's target: ``losses (C, M)``, ``dims (C, M, D)``.

    The C*M members are one population for the scorer (one pass; on a mesh, sharded over
    ``"data"``); with both orders the losses and dims are the means over the two presentations.
    """
    c, m, n = z.shape
    flat = gather_to_all(z.reshape(c * m, n), step.mesh)  # the optimizer state is replicated
    prompts = args.space.decode(flat)  # (C*M, K, d)
    losses, dims = [], []
    for program, inputs in zip(step.programs, args.inputs):
        d_ = _score_members(program, prompts, inputs).dims.reshape(c, m, -1)  # (C, M, D)
        dims.append(d_)
        losses.append(jax.vmap(l1_loss)(d_, args.targets))          # (C, M)
    loss, dim = sum(losses) / len(losses), sum(dims) / len(dims)
    return gather_to_all((loss, dim), step.mesh)


def generation(step: Step, state: RunState, args: RunArgs) -> tuple[RunState, dict[str, jax.Array]]:
    """Runs step ``state.step`` for every target: ``(new state, record)``; record leaves (C, ...)."""
    if step.config.method == "gradient":
        return _adam_step(step, state, args)
    if step.config.method == "hybrid":
        return _hybrid_step(step, state, args)
    return _evosax_step(step, state, args)


def _hybrid_step(step: Step, state: RunState, args: RunArgs):
    """An evosax step before the config's evolution steps, then Adam from the best prompt found."""
    switch = step.switch
    evolution_opt, (z, adam_opt) = state.opt

    def evolve(_):
        new, record = _evosax_step(step, dataclasses.replace(state, opt=evolution_opt), args)
        return dataclasses.replace(new, opt=(new.opt, (z, adam_opt))), record

    def descend(_):
        start = jnp.where(state.step == switch, state.best_z, z)  # Adam starts at the best member
        new, record = _adam_step(step, dataclasses.replace(state, opt=(start, adam_opt)), args)
        return dataclasses.replace(new, opt=(evolution_opt, new.opt)), record

    return jax.lax.cond(state.step < switch, evolve, descend, None)


def _evosax_step(step: Step, state: RunState, args: RunArgs):
    strategy, params = _strategy(step)
    evo = step.config.evolution_config(step.embedding_std)
    pop, n, s = evo.population_size, step.space_dim, state.step
    population_based = isinstance(strategy, PopulationBasedAlgorithm)
    keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, s), 3))(args.keys)  # (C, 3, 2)
    key_ask, key_tell, key_pop = keys[:, 0], keys[:, 1], keys[:, 2]
    is_init = s == 0
    z0 = jnp.zeros((n,), jnp.float32)

    asked, _ = jax.vmap(lambda k, st: strategy.ask(k, st, params))(key_ask, state.opt)
    noise = evo.init_scale * jax.vmap(lambda k: jax.random.normal(k, (pop, n), jnp.float32))(key_pop)
    initial = (z0 + noise).at[:, 0].set(z0)
    population = jnp.where(is_init, initial, asked.astype(jnp.float32))  # (C, P, n)

    losses, dims = fitness(step, population, args)
    losses = losses.astype(jnp.float32)  # (C, P)
    finite = jnp.isfinite(losses)
    clean = jnp.where(finite, losses, jnp.inf)
    if population_based:  # a failed trial never replaces its parent
        shaped = clean
    else:  # distribution-based: the worst finite loss of the generation (inf would poison means)
        worst = jnp.max(jnp.where(finite, losses, -jnp.inf), axis=1, keepdims=True)
        shaped = jnp.where(finite, losses, jnp.where(jnp.any(finite, axis=1, keepdims=True), worst, 0.0))

    def tell(before):
        told = jax.vmap(lambda k, p, f, st: strategy.tell(k, p, f, st, params)[0])(
            key_tell, population, shaped, before)
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
        return tell(_same_types(jax.vmap(lambda k: strategy.init(k, z0, params))(key_tell), state.opt))

    def tell_state(_):
        return tell(state.opt)

    opt = _same_types(jax.lax.cond(is_init, init_state, tell_state, None), state.opt)
    new, record = _update_best(state, population, clean, dims, finite, losses)
    return dataclasses.replace(new, opt=opt), record


def _update_best(state: RunState, population, clean, dims, finite, losses):
    """Best-so-far per target from this step's ``(C, M, ...)`` members; the step's record."""
    idx = jnp.argmin(clean, axis=1)  # (C,)
    pick = lambda x: jnp.take_along_axis(x, idx.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]
    top = pick(clean)  # (C,)
    improved = top < state.best_loss
    best_z = jnp.where(improved[:, None], pick(population), state.best_z)
    best_loss = jnp.where(improved, top, state.best_loss)
    best_dims = jnp.where(improved[:, None], pick(dims), state.best_dims).astype(state.best_dims.dtype)
    mean_loss = jnp.sum(jnp.where(finite, losses, 0.0), axis=1) / jnp.sum(finite, axis=1)  # NaN if none
    record = {"best_loss": best_loss, "mean_loss": mean_loss,
              "num_failed": jnp.sum(~finite, axis=1).astype(jnp.int32), "best_dims": best_dims}
    new = RunState(step=state.step + 1, opt=state.opt, best_z=best_z, best_loss=best_loss,
                   best_dims=best_dims)
    return new, record


def _adam_step(step: Step, state: RunState, args: RunArgs):
    optimizer = _optimizer(step)
    z, opt_state = state.opt

    def total_loss(z_):  # (C, n): sum over targets; each target's gradient is its own
        losses, dims = fitness(step, z_[:, None], args)
        return jnp.sum(losses), (losses[:, 0], dims[:, 0])

    (_, (losses, dims)), grad = jax.value_and_grad(total_loss, has_aux=True)(z)
    updates, opt_state = optimizer.update(grad, opt_state, z)
    finite = jnp.isfinite(losses)[:, None]
    clean = jnp.where(finite, losses[:, None], jnp.inf)
    new, record = _update_best(state, z[:, None], clean, dims[:, None], finite, losses[:, None])
    opt = _same_types((optax.apply_updates(z, updates), opt_state), state.opt)
    return dataclasses.replace(new, opt=opt), record


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
def save_checkpoint(checkpointer: RunCheckpointer, problem: Problem, state: RunState,
                    history: dict[str, np.ndarray]) -> None:
    """Writes the state and history after ``state.step - 1`` generations; the record is a dict."""
    done = int(state.step) - 1
    record = {"fingerprint": problem.fingerprint(), "generation": done,
              "generations_target": problem.total_steps - 1,
              "targets": [t.name for t in problem.targets], "method": problem.config.method}
    checkpointer.save(done, {"state": state, "history": history}, record)


def restore_checkpoint(checkpointer: RunCheckpointer, problem: Problem, template: RunState,
                       generation: int) -> tuple[RunState, dict[str, np.ndarray]]:
    """Reads the checkpoint at ``generation`` after checking it was made by this problem."""
    checkpointer.check_resumable(generation, problem.fingerprint(), problem.total_steps - 1)
    c, d = problem.n_targets, len(problem.instrument.dimensions)
    history_template = {"best_loss": np.zeros((1, c), np.float32), "mean_loss": np.zeros((1, c), np.float32),
                        "num_failed": np.zeros((1, c), np.int32), "best_dims": np.zeros((1, c, d), np.float32)}
    tree = checkpointer.restore(generation, {"state": template, "history": history_template},
                                free_leading_axis=("['history']",))
    history = tree["history"]
    if history["best_loss"].shape[0] != generation + 1 or int(tree["state"].step) != generation + 1:
        raise ValueError(f"corrupt checkpoint in {checkpointer.directory!r} at generation {generation}")
    return _strong(tree["state"]), history


# ----------------------------------------------------------------------------- the host loop
@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What :func:`run` returns: the final state, the history (leading axes (steps, C)), timings."""

    state: RunState
    history: dict[str, np.ndarray]
    compile_s: float
    loop_s: float
    steps_run: int
    resumed_from: int | None

    @property
    def s_per_generation(self) -> float:
        return self.loop_s / self.steps_run if self.steps_run else float("nan")


def run(problem: Problem, *, checkpoint_dir: str | None = None, resume: bool = False,
        progress: bool | str | RunProgress = False) -> RunOutcome:
    """Runs the problem to ``problem.total_steps`` steps in device chunks of ``config.chunk_size``.

    Checkpoints go to ``checkpoint_dir`` every ``config.checkpoint_every`` generations (every
    chunk when ``None``); ``resume`` continues from the latest one. Progress (the mean of the
    targets' best losses) is reported after each chunk, after its checkpoint: ``progress`` is a
    :class:`~jaxalign.api.RunProgress` or its ``enabled`` argument.

    Ctrl-C (KeyboardInterrupt) during the loop raises :class:`~jaxalign.api.RunInterrupted`
    holding the state and history of the last completed chunk and the newest checkpoint kept.
    """
    config, total = problem.config, problem.total_steps
    args = run_args(problem)
    traced = problem.step()  # what the loop's trace reads; also builds the initial optimizer state
    state = initialise(problem, traced, args)
    records: list[dict[str, np.ndarray]] = []
    resumed_from = None
    checkpointer = RunCheckpointer(checkpoint_dir) if checkpoint_dir is not None else None
    unit = "gen" if config.method == "de" else "step"
    bar = progress if isinstance(progress, RunProgress) else RunProgress(total - 1, enabled=progress, unit=unit)
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
            if latest is not None:
                state, history = restore_checkpoint(checkpointer, problem, state, latest)
                records.append(history)
                resumed_from = latest
        step = int(state.step)
        if resumed_from is not None:
            bar.phase(f"resuming from generation {resumed_from} of {total - 1}")
        length = config.chunk_size + 1
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
            state, records, compile_s, loop_s, steps_run = _loop(
                problem, compiled if step < total else None, state, args, records, checkpointer,
                bar, compile_s)
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


def _loop(problem: Problem, compiled, state: RunState, args: RunArgs, records: list,
          checkpointer: RunCheckpointer | None, bar: RunProgress, compile_s: float):
    """The chunk loop of :func:`run`; Ctrl-C becomes :class:`RunInterrupted` with the last
    completed chunk's state and history (one assignment updates both, so they always agree)."""
    config, total = problem.config, problem.total_steps
    done_pair = (state, list(records))
    step, loop_s, steps_run, failed_steps = int(state.step), 0.0, 0, 0
    try:
        while step < total:
            s_end = min(step + config.chunk_size + (step == 0), total)
            if checkpointer is not None and config.checkpoint_every is not None:
                next_save = (max(step - 1, 0) // config.checkpoint_every + 1) * config.checkpoint_every
                s_end = min(s_end, next_save + 1)
            t0 = time.perf_counter()
            new_state, chunk = compiled(done_pair[0], args, np.int32(s_end))
            chunk = jax.tree.map(lambda x: np.asarray(x)[: s_end - step], chunk)
            loop_s += time.perf_counter() - t0
            steps_run += s_end - step
            failed_steps = _check_finite(chunk["num_failed"], problem, s_end, failed_steps, total)
            done_pair = (new_state, done_pair[1] + [chunk])
            step = s_end
            done = step - 1
            best = float(np.mean(chunk["best_loss"][-1]))
            logger.info("generation %d/%d: mean best %.6g", done, total - 1, best)
            if checkpointer is not None:
                due = config.checkpoint_every is None or done % config.checkpoint_every == 0
                if due or step == total:
                    save_checkpoint(checkpointer, problem, done_pair[0], _concat(done_pair[1]))
            bar.update(done, best)
            bar.record(done + 1 - chunk["best_loss"].shape[0], chunk)
    except KeyboardInterrupt:
        state, records = done_pair
        raise RunInterrupted(int(state.step) - 1, total - 1, None, None, state=state,
                             history=_concat(records) if records else None) from None
    return done_pair[0], done_pair[1], compile_s, loop_s, steps_run


def _check_finite(num_failed: np.ndarray, problem: Problem, s_end: int, before: int, total: int) -> int:
    """Counts consecutive steps in which every member of some target failed; raises
    :class:`~jaxalign.optimize.evolution.NonFiniteFitnessError` after ``NONFINITE_PATIENCE`` of them
    (before that chunk's checkpoint is written, so the last checkpoint is the last good state).

    ``num_failed (S, C)`` holds steps ``s_end - S .. s_end - 1``. A step's members per target
    depend on its phase: ``population`` in an evolution step, one in an Adam step (so a hybrid's
    Adam phase is checked like a gradient run)."""
    num_failed = np.asarray(num_failed)
    first_step, switch = s_end - num_failed.shape[0], problem.evolution_steps
    count = before
    for offset, failed in enumerate(num_failed):  # (C,) per step
        members = problem.config.population if first_step + offset < switch else 1  # per target
        count = count + 1 if np.any(failed >= members) else 0
    if count >= min(NONFINITE_PATIENCE, total):
        first = s_end - count
        raise NonFiniteFitnessError(
            f"every loss was NaN or inf for a target in {count} step(s) in a row (generations "
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
    """The configured baselines per target (the plain model is scored once for all targets)."""
    config, lm, instrument = problem.config, problem.lm, problem.instrument
    names = config.baselines
    if problem.n_targets == 1:
        return [run_baselines(lm, instrument, problem.targets[0], names=names, readout=config.readout,
                              seed=config.seed)]
    naive = None
    if "naive" in names:
        naive = run_baselines(lm, instrument, problem.targets[0], names=("naive",), readout=config.readout,
                              seed=config.seed)["naive"]
    out = []
    for target in problem.targets:
        others = tuple(n for n in names if n != "naive")
        found = run_baselines(lm, instrument, target, names=others, readout=config.readout,
                              seed=config.seed) if others else {}
        row = {}
        for name in names:
            if name == "naive":
                loss = float(l1_loss(naive.dims, target.values))
                row[name] = dataclasses.replace(naive, loss=loss)
            elif name in found:
                row[name] = found[name]
        out.append(row)
    return out


def results(problem: Problem, outcome: RunOutcome, *, t_start: float,
            baseline_rows: list[dict[str, BaselineResult]]) -> list[AlignResult]:
    """One :class:`~jaxalign.AlignResult` per target: its best prompt scored with
    ``config.readout`` on the normal order (all C prompts in one pass)."""
    config = problem.config
    prompts = np.asarray(problem.space.decode(jnp.asarray(outcome.state.best_z)))  # (C, K, d)
    scorer = problem.result_scorer
    if scorer.members_per_pass is not None:
        scorer = dataclasses.replace(scorer, members_per_pass=None)
    final = scorer(prompts)
    losses = np.asarray(jax.vmap(l1_loss)(final.dims, jnp.asarray(problem.target_values())))
    evaluations = problem.evaluations
    history = outcome.history
    out = []
    wall_s = time.perf_counter() - t_start
    for c, target in enumerate(problem.targets):
        out.append(AlignResult(
            method=problem.label,
            target=target,
            soft_prompt=prompts[c],
            dims=np.asarray(final.dims[c]),
            loss=float(losses[c]),
            probs=np.asarray(final.probs[c]),
            baselines=baseline_rows[c],
            history={"best_loss": history["best_loss"][:, c].tolist(),
                     "mean_loss": history["mean_loss"][:, c].tolist(),
                     "best_dims": history["best_dims"][:, c].tolist()},
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
        ))
    return out
