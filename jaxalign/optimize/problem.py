"""What a run is, fixed before anything compiles: the :class:`Problem`, and the pytrees a step
reads (:class:`Step`, :class:`RunArgs`, :class:`RunState`).

    build_problem(lm, targets, instrument, config)  -> Problem  (targets checked, items rendered
                                                                  per presentation, search space)
    problem.step()                                  -> Step     (hashable: config, scale, programs)
    problem.plan()                                  -> LoopPlan (what the host loop needs: steps,
                                                                  chunks, checkpoint fingerprint)
    RunArgs   the arrays a step takes: scorer inputs, space, targets (C, D), keys (C, 2), z0 (C, n)
    RunState  step (), optimizer state (C, ...), best_z (C, n), best_loss (C,), best_dims (C, D)

The same :class:`Step`, :class:`LoopPlan` and pytrees also describe a run on a user's fitness
function (:func:`jaxalign.optimize.evolve`): ``Step.fitness_fn`` replaces the scoring programs,
``RunArgs.inputs`` holds that function's arguments and ``RunState.best_dims`` its aux.

:func:`jaxalign.optimize.pipeline.setup` is :func:`build_problem` plus the measured cost of an
Adam step; the loop that runs a problem is :mod:`jaxalign.optimize.pipeline`.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxalign.config import AlignConfig
from jaxalign.fingerprint import (
    instrument_fingerprint,
    model_fingerprint,
    prompt_fingerprint,
    space_fingerprint,
    target_fingerprint,
    targets_fingerprint,
)
from jaxalign.optimize.budget import (
    FALLBACK_FORWARDS_PER_STEP,
    RunCost,
    budget,
    evolution_steps,
    spent,
    total_steps,
)
from jaxalign.optimize.checkpoint import normalise_json
from jaxalign import optimizers, tuning
from jaxalign.optimizers.evolution import EvolutionConfig
from jaxalign.parallel import replicate
from jaxalign.optimize.resume import recorded_fields
from jaxalign.scoring import Scorer, ScoringProgram, make_scorer
from jaxalign.softprompt import SoftPromptSpace
from jaxalign.survey import Instrument, Target
from jaxalign.survey.objectives import Objective, make_objective
from jaxalign.survey.presentations import Presentation
from jaxalign.survey.presentations import presentations as survey_presentations



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
      presentations: the names of the (wording, option order) pairs scored each step
        (:func:`jaxalign.survey.presentations.presentations`: ``"normal"``, ``"reversed"``,
        ``"cyclic1"``.., then ``"wording:<name>[/<order>]"`` per ``config.extra_wordings`` file);
        the item means are averaged over them before the indices and the loss.
      result_scorers: score the best prompts for the results (``config.readout``), one per
        presentation.
      objective: the loss (:mod:`jaxalign.survey.objectives`); ``offsets`` ``(D,)`` its constants,
        fixed for the run; ``plain`` the plain model's dims per presentation (when the objective
        or several presentations need them; ``None`` otherwise).
      space: the search space of the tuned intervention (shared by all targets):
        ``tuning.decode(space, z)`` gives its parameters.
      embedding_std: the scale the space and init_scale are measured in (the embedding std for
        soft prompts; the residual stream's std after the block for a steering vector).
      mesh: a device mesh or ``None``.
    """

    lm: Any
    instrument: Instrument
    targets: tuple[Target, ...]
    config: AlignConfig
    scorers: tuple[Scorer, ...]
    presentations: tuple[str, ...]
    result_scorers: tuple[Scorer, ...]
    space: SoftPromptSpace
    embedding_std: float
    mesh: Any = None
    content: Mapping[str, Any] | None = None  # content fingerprints (jaxalign.fingerprint)
    cost: RunCost | None = None  # an Adam step's measured cost (gradient, hybrid): measure_cost
    objective: Objective = Objective("paper")
    offsets: np.ndarray | None = None    # (D,) the objective's constants, added to every member's dims
    plain: Mapping[str, np.ndarray] | None = None  # presentation -> the plain model's dims (D,)
    shown: tuple[Presentation, ...] = ()  # the presentations themselves (names: presentations)

    @property
    def tuning(self) -> tuning.Tuning:
        """What the run tunes (:func:`jaxalign.tuning.get` of ``config.intervention``)."""
        return tuning.get(self.config.intervention)

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
        if not self.optimizer.gradient:
            return budget(self.config)
        return float(spent(self.config, self.forwards_per_step))

    @property
    def optimizer(self) -> optimizers.Optimizer:
        """The run's optimizer (:func:`jaxalign.optimizers.get` of ``config.method``)."""
        return optimizers.get(self.config.method)

    @property
    def label(self) -> str:
        """``AlignResult.method``: ``"de"``, ``"gradient"``, with ``"-both-orders"`` or
        ``"-cyclic-orders"`` when so tuned."""
        return self.config.method + {"one": "", "both": "-both-orders", "cyclic": "-cyclic-orders"}[self.config.orders]

    def target_values(self) -> np.ndarray:
        return np.stack([np.asarray(t.values, np.float32) for t in self.targets])  # (C, D)

    def step(self) -> Step:
        """What a step's trace reads from this problem (see :class:`Step`)."""
        members = self.n_targets * (self.config.population if self.evolution_steps else 1)
        programs = []
        for scorer in self.scorers:
            per_pass = scorer.members_per_pass
            if per_pass == "auto":  # only DE trains with "auto": one pass scores C*P members
                per_pass = scorer.auto_members_per_pass(members)
            programs.append(scorer.program(per_pass))
        # the seed reaches the loop only through its arguments (the targets' keys, the space), so
        # runs that differ only in their seed share one loop
        switch = self.evolution_steps  # a two-phase optimizer's first phase (hybrid: evolution, then Adam)
        return Step(config=dataclasses.replace(self.config, seed=0), embedding_std=float(self.embedding_std),
                    space_dim=int(self.space.dim), mesh=self.mesh, programs=tuple(programs), switch=switch,
                    evolution=traced_evolution(self.config.evolution_config(self.embedding_std)))

    def plan(self) -> LoopPlan:
        """What the host loop reads of this problem (see :class:`LoopPlan`)."""
        config = self.config
        return LoopPlan(total_steps=self.total_steps, chunk_size=config.chunk_size,
                        checkpoint_every=config.checkpoint_every, population=config.population,
                        evolution_steps=self.evolution_steps, fingerprint=self.fingerprint(),
                        record={"targets": [t.name for t in self.targets], "method": config.method},
                        unit=self.optimizer.unit)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint of this problem must match to be resumed (JSON-able)."""
        return normalise_json({
            "model": self.lm.name,
            "dtype": str(np.dtype(self.lm.dtype)),
            "wording": self.instrument.wording,
            "targets": targets_fingerprint(self.targets),
            "n": int(self.space.dim),
            **recorded_fields(self.config),
            "content": dict(self.content or {}),
        })

    def fingerprints(self, c: int) -> dict[str, Any]:
        """Target ``c``'s content fingerprints as ``results.json`` records them."""
        content = dict(self.content or {})
        targets = content.pop("targets", [])
        return {**content, "target": targets[c] if c < len(targets) else None}


def build_problem(
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
    tuned = tuning.get(config.intervention)  # what is tuned: its scorers, space, decoding, file
    config = tuned.resolve(config, lm)
    objective = make_objective(config.loss, config.reference, n_targets=len(targets))
    # every (wording, option order) the run scores: the instrument's wording, then each user
    # wording tuned on beside it, each in every order of config.orders
    shown = survey_presentations(instrument, config.orders,
                                 [tuning_wording(path, instrument) for path in config.extra_wordings])
    presentations = tuple(p.name for p in shown)
    if optimizers.get(config.method).gradient:  # a gradient trains on the only differentiable readout
        train = dict(readout="expected", members_per_pass=None)
    else:
        train = dict(readout=config.readout, members_per_pass=config.members_per_pass)
    scorers = tuple(tuned.make_scorer(lm, p, config, **train, mesh=mesh, options=options) for p in shown)
    if not optimizers.get(config.method).gradient and config.members_per_pass is None:
        result_scorers = scorers  # same readout: reuse their compiled functions
    else:
        result_scorers = tuple(tuned.make_scorer(lm, p, config, readout=config.readout, mesh=mesh, options=options)
                               for p in shown)
    plain = None
    if objective.uses_plain or len(shown) > 1:  # the plain model in every presentation
        plain = plain_dims(lm, shown, config, mesh=mesh, options=options)  # {name: (D,)}
    target_values = np.stack([np.asarray(t.values, np.float32) for t in targets])  # (C, D)
    mean_plain = None if plain is None else np.mean(np.stack(list(plain.values())), axis=0)
    offsets = objective.offsets(target_values, mean_plain)
    space, embedding_std = tuned.space(lm, config, scorers)
    if space_file is not None:
        from jaxalign.search_space import saved_search_space

        space = saved_search_space(Path(space_file), space, resume=resume)
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
                      presentations=presentations, result_scorers=result_scorers, space=space,
                      embedding_std=embedding_std, mesh=mesh, content=content, objective=objective,
                      offsets=offsets, plain=plain, shown=shown)
    return problem


def tuning_wording(path: str, instrument: Instrument) -> Instrument:
    """An extra wording to tune on (a JSON wording file, :func:`jaxalign.survey.load_wording`).

    The project's held-out wordings (:data:`jaxalign.survey.paraphrase.HELDOUT_WORDINGS`) are
    refused, by name and by text: they exist to measure generalisation, so a prompt tuned on one
    would make the held-out figures meaningless.
    """
    from jaxalign.survey.paraphrase import HELDOUT_WORDINGS, heldout_wording
    from jaxalign.survey.vsm13 import load_wording

    if str(path) in HELDOUT_WORDINGS:
        raise ValueError(f"{str(path)!r} is a held-out wording, kept out of tuning so that "
                         "`jaxalign eval robustness` measures generalisation; tune on your own wordings")
    extra = load_wording(path, instrument)
    texts = {item.id: item.text.strip() for item in extra.items}
    for name in HELDOUT_WORDINGS:
        held = {item.id: item.text.strip() for item in heldout_wording(name).items}
        same = [i for i, text in texts.items() if held.get(i) == text]
        if same:
            raise ValueError(
                f"wording file {str(path)!r} repeats the project's held-out wording {name!r} (items "
                f"{', '.join(same[:5])}{'...' if len(same) > 5 else ''}); the held-out wordings are kept "
                "out of tuning so that `jaxalign eval robustness` measures generalisation; tune on your "
                "own wordings")
    return extra


def plain_dims(lm: Any, shown: Sequence[Presentation], config: AlignConfig, *, mesh: Any = None,
               options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The plain model's indices ``(D,)`` in each presentation (no soft prompt; the run's system
    text, slot and readout), keyed by presentation name."""
    out = {}
    for p in shown:
        scorer = make_scorer(lm, p.instrument, k=0, option_order=p.option_order, system=config.system,
                             slot=config.slot, readout=config.readout, n_respondents=config.n_respondents,
                             seed=config.seed, mode=config.scoring_mode, mesh=mesh, **dict(options or {}))
        out[p.name] = np.asarray(scorer(np.zeros((1, 0, lm.config.hidden_size), np.float32)).dims[0])
    return out


# ----------------------------------------------------------------------------- state and args
def traced_evolution(evolution: EvolutionConfig) -> EvolutionConfig:
    """``evolution`` with the fields a step's trace never reads set to fixed values (seed 0, one
    generation, chunks of 1, no checkpoints), so runs that differ only there share one loop."""
    return dataclasses.replace(evolution, seed=0, generations=1, chunk_size=1, checkpoint_every=None)


@dataclasses.dataclass(frozen=True)
class Step:
    """Everything a step's trace reads besides its arguments: no arrays, no weights (hashable).

    Equal steps trace equal programs, so :func:`run` compiles one loop per ``Step`` and length in
    a process. Holding no weights, a kept loop never keeps a model alive.

    Attributes:
      config: the run's :class:`~jaxalign.AlignConfig` (method, population, Adam's rate...), its
        seed set to 0 (the seed is in the arguments); ``None`` for a user fitness function.
      embedding_std: the scale of the search space and the initial spread.
      space_dim: ``n``, the search vector's size.
      mesh: a device mesh or ``None``.
      programs: one :class:`~jaxalign.scoring.ScoringProgram` per presentation (none with
        ``fitness_fn``).
      switch: the steps of the optimizer's first phase (its ``phases``; the hybrid switches to
        Adam there).
      evolution: the evosax strategy's settings, ``init_scale`` in search-space units
        (:func:`traced_evolution`: the fields the trace never reads fixed).
      fitness_fn: a user fitness function ``(z (P, n), inputs) -> (losses (P,), aux)`` scored
        instead of the programs (:func:`jaxalign.optimize.evolve`); ``None`` for alignment.
    """

    config: AlignConfig | None
    embedding_std: float
    space_dim: int
    mesh: Any
    programs: tuple[ScoringProgram, ...]
    switch: int = 0  # first-phase steps (they depend on the measured cost of an Adam step)
    evolution: EvolutionConfig | None = None
    fitness_fn: Callable[[Any, Any], tuple[Any, Any]] | None = None

    @property
    def method(self) -> str:
        """The optimizer's registry name (:mod:`jaxalign.optimizers`); ``"de"`` for a user fitness."""
        return "de" if self.config is None else self.config.method


@dataclasses.dataclass(frozen=True)
class LoopPlan:
    """What the host loop (:func:`jaxalign.optimize.pipeline.run_loop`) reads of a run.

    Attributes:
      total_steps: steps of the whole run (step 0, the initial population, then the generations).
      chunk_size: steps per device-side chunk (the first chunk runs one more: step 0).
      checkpoint_every: generations between checkpoints; ``None``: after every chunk.
      population: members per target in an evolution step (an Adam step has one).
      evolution_steps: steps ``< evolution_steps`` are evolution steps, the others Adam steps.
      fingerprint: what a checkpoint must match to be resumed (JSON-able).
      record: further JSON fields stored with every checkpoint.
      unit: the progress bar's unit (``"gen"`` or ``"step"``).
    """

    total_steps: int
    chunk_size: int
    checkpoint_every: int | None
    population: int
    evolution_steps: int
    fingerprint: Mapping[str, Any]
    record: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    unit: str = "gen"


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """The arrays a step takes as jit arguments (weights included: never baked in)."""

    inputs: Any              # one ScorerInputs per presentation (a user fitness: its arguments)
    space: SoftPromptSpace | None  # None for a user fitness function
    targets: jax.Array       # (C, D) float32, NaN where missing ((C, 0) for a user fitness)
    keys: jax.Array          # (C, 2) uint32, one PRNG key per target
    z0: jax.Array            # (C, n) float32, each target's starting point (zeros for alignment)
    offsets: Any = None      # (D,) float32, the objective's constants added to the dims (None: 0)


@dataclasses.dataclass(frozen=True)
class RunState:
    """The run's state after ``step`` steps (a pytree; what a checkpoint stores).

    Attributes:
      step: () int32, the next step to run.
      opt: the optimizer state, every leaf with leading axis C (evosax state vmapped over the
        targets, or ``(z (C, n), Adam state)``).
      best_z: (C, n) best search vector per target; best_loss: (C,); best_dims: (C, D), the
        best member's dimension scores (a user fitness function's aux, every leaf (C, ...)).
    """

    step: jax.Array
    opt: Any
    best_z: jax.Array
    best_loss: jax.Array
    best_dims: jax.Array


for _cls in (RunArgs, RunState):
    jax.tree_util.register_dataclass(
        _cls, data_fields=[f.name for f in dataclasses.fields(_cls)], meta_fields=[])
