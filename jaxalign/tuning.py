"""What a run tunes: one :class:`Tuning` per intervention kind, the run loop's only view of it.

The run loop (:mod:`jaxalign.optimize.pipeline`) is the same for every kind: an optimizer
proposes search vectors ``z (C, M, n)``, the kind decodes them into its parameters, its scoring
programs score them (one jitted batched pass per presentation for all C*M members), and the
best ``z`` per target becomes the result. What differs between kinds is reached through the
:class:`Tuning` of ``AlignConfig.intervention`` (:func:`get`), never by testing the kind's name:

=================  ===================================  =====================================
                   ``"soft_prompt"``                    ``"steering"``
=================  ===================================  =====================================
parameters         ``(K, d)`` at the chat's slot        ``(d,)`` after block ``layer``
search space       ``p0`` (text or vocabulary rows) +   zero + ``z A``, scaled to the residual
                   ``z A``, scaled to the embedding     stream's std after that block
                   std (:mod:`jaxalign.search_space`)   (:func:`~jaxalign.interventions.steering.steering_space`)
scorer / program   :func:`jaxalign.scoring.make_scorer`  :func:`jaxalign.scoring_steering.make_steering_scorer`
file               ``soft_prompt.safetensors``          ``steering.safetensors`` (provenance)
=================  ===================================  =====================================

A new kind adds its :class:`~jaxalign.interventions.base.InterventionKind` (its file's tensor,
``file_name``, ``layered``) to :data:`jaxalign.interventions.base.KINDS` and one
:class:`Tuning` here with :func:`register`; every optimizer, objective, presentation, budget,
checkpoint and resume then works for it unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxalign.config import AlignConfig
from jaxalign.interventions.base import KINDS, InterventionKind
from jaxalign.softprompt import SoftPromptSpace


@dataclasses.dataclass(frozen=True)
class Tuning:
    """How a run tunes one intervention kind (every field a function; see the module docstring).

    Attributes:
      name: ``AlignConfig.intervention``.
      resolve: ``(config, lm) -> config``: the model-dependent defaults filled in (a steering
        run's ``layer``) and the settings the kind cannot take refused (``ValueError``), before
        anything is rendered; idempotent.
      make_scorer: ``(lm, presentation, config, *, readout, members_per_pass=..., mesh, options)
        -> scorer``: a scorer of this kind for one presentation (:class:`~jaxalign.survey.
        presentations.Presentation`); it has ``inputs``, ``batch``, ``members_per_pass``,
        ``program(members_per_pass)`` (hashable), ``with_inputs(inputs)`` and
        ``__call__(params (P, ...)) -> Scores``.
      space: ``(lm, config, scorers) -> (space, scale)``: the search space (``decode(z (N, n))``
        gives ``(N, *rows)``) and the scale of one unit of it (what ``init_scale`` and Adam's rate
        are measured in for the full space).
      decode: ``(space, z (N, n)) -> params (N, *member shape)``.
      score: ``(program, params, inputs) -> Scores``: the pure pass the run loop traces.
      result_fields: ``(problem, params (member shape), target) -> dict``: the kind's fields of
        :class:`~jaxalign.AlignResult`.
      save: ``(result, out folder) -> Path``: writes the tuned parameters' file.
      describe: ``(result) -> dict``: what ``results.json`` records of the kind beyond the config
        (``{}`` for none).
    """

    name: str
    resolve: Callable[[AlignConfig, Any], AlignConfig]
    make_scorer: Callable[..., Any]
    space: Callable[[Any, AlignConfig, tuple], tuple[SoftPromptSpace, float]]
    decode: Callable[[SoftPromptSpace, jax.Array], jax.Array]
    score: Callable[[Any, jax.Array, Any], Any]
    result_fields: Callable[[Any, np.ndarray, Any], dict[str, Any]]
    save: Callable[[Any, Path], Path]
    describe: Callable[[Any], dict[str, Any]] = lambda result: {}

    @property
    def kind(self) -> InterventionKind:
        """Its file and site (:data:`jaxalign.interventions.base.KINDS`)."""
        return KINDS[self.name]

    @property
    def file_name(self) -> str:
        return self.kind.file_name


TUNINGS: dict[str, Tuning] = {}


def register(tuning: Tuning) -> Tuning:
    """Adds ``tuning`` under its name (its :class:`InterventionKind` must be in ``KINDS``)."""
    if tuning.name not in KINDS:
        raise ValueError(f"{tuning.name!r} has no InterventionKind in jaxalign.interventions.base.KINDS")
    TUNINGS[tuning.name] = tuning
    return tuning


def get(name: str) -> Tuning:
    """The :class:`Tuning` of ``name`` (``AlignConfig.intervention``); a ``ValueError`` naming the
    kinds that can be tuned otherwise."""
    if name not in TUNINGS:
        raise ValueError(f"{name!r} cannot be tuned; tunable interventions: {', '.join(TUNINGS)}")
    return TUNINGS[name]


# ----------------------------------------------------------------------------- soft prompts
def _soft_scorer(lm: Any, presentation: Any, config: AlignConfig, *, readout: str, mesh: Any = None,
                 options: Mapping[str, Any] | None = None, **members: Any) -> Any:
    from jaxalign.scoring import make_scorer

    return make_scorer(lm, presentation.instrument, option_order=presentation.option_order, readout=readout,
                       **members, k=config.k, system=config.system, slot=config.slot,
                       n_respondents=config.n_respondents, seed=config.seed, mode=config.scoring_mode,
                       mesh=mesh, **dict(options or {}))


def _soft_space(lm: Any, config: AlignConfig, scorers: tuple) -> tuple[SoftPromptSpace, float]:
    from jaxalign.search_space import search_space

    return search_space(lm, config)


def _soft_score(program: Any, prompts: jax.Array, inputs: Any) -> Any:
    from jaxalign.scoring import score_members

    return score_members(program, prompts, inputs)


def _soft_save(result: Any, out: Path) -> Path:
    from jaxalign.softprompt import save_soft_prompt

    return save_soft_prompt(Path(out) / KINDS["soft_prompt"].file_name, result.soft_prompt,
                            result.prompt_metadata())


SOFT_PROMPT = register(Tuning(
    name="soft_prompt",
    resolve=lambda config, lm: config,
    make_scorer=_soft_scorer,
    space=_soft_space,
    decode=lambda space, z: space.decode(z),                                  # (N, K, d)
    score=_soft_score,
    result_fields=lambda problem, params, target: {"soft_prompt": params},
    save=_soft_save,
))


# ----------------------------------------------------------------------------- steering vectors
def steering_layer(config: AlignConfig, n_layers: int) -> int:
    """The block a steering run adds its vector after: ``config.layer``, or ``n_layers // 2``
    when it is ``None`` (a placeholder default until a sweep over layers picks a better one)."""
    return int(n_layers) // 2 if config.layer is None else int(config.layer)


def _steering_resolve(config: AlignConfig, lm: Any) -> AlignConfig:
    from jaxalign.interventions.steering import check_layers

    n_layers = lm.config.num_hidden_layers
    layer = steering_layer(config, n_layers)
    check_layers(layer, n_layers)  # ValueError naming the model's range
    if config.init_text is not None:
        raise ValueError("init_text sets a soft prompt's start; a steering vector starts at zero (the plain "
                         "model): leave init_text out")
    if config.members_per_pass == "auto":
        raise ValueError("members_per_pass='auto' is measured for soft prompts only; give a steering run a "
                         "number that divides the population, or None")
    return config if config.layer == layer else dataclasses.replace(config, layer=layer)


def _steering_scorer(lm: Any, presentation: Any, config: AlignConfig, *, readout: str, mesh: Any = None,
                     options: Mapping[str, Any] | None = None, members_per_pass: Any = None) -> Any:
    from jaxalign.scoring_steering import make_steering_scorer

    if mesh is not None:
        raise ValueError("steering vectors are not tuned on a mesh yet: run on one device (mesh=None)")
    known = {"n_buckets", "constants"}
    extra = {k: v for k, v in dict(options or {}).items() if k in known}
    return make_steering_scorer(lm, presentation.instrument, layer=steering_layer(config, lm.config.num_hidden_layers),
                                option_order=presentation.option_order, system=config.system, slot=config.slot,
                                readout=readout, n_respondents=config.n_respondents, seed=config.seed,
                                members_per_pass=members_per_pass, **extra)


def _steering_space(lm: Any, config: AlignConfig, scorers: tuple) -> tuple[SoftPromptSpace, float]:
    from jaxalign.interventions.steering import residual_std, steering_space

    scorer = scorers[0]  # the instrument's wording in its first order: the survey's rendered items
    scale = residual_std(lm, scorer.batch, scorer.layer)
    space = steering_space(lm.config.hidden_size, residual_scale=scale, subspace=config.subspace,
                           key=None if config.subspace is None else jax.random.key(config.seed + 1))
    return space, scale


def _steering_score(program: Any, vectors: jax.Array, inputs: Any) -> Any:
    from jaxalign.scoring_steering import score_steering_members

    return score_steering_members(program, vectors, inputs)


def _steering_fields(problem: Any, vector: np.ndarray, target: Any) -> dict[str, Any]:
    from jaxalign.interventions.steering import steering_metadata

    config = problem.config
    metadata = steering_metadata(problem.lm, instrument=problem.instrument, target=target,
                                 config=config.to_dict(), residual_scale=problem.embedding_std)
    width = problem.lm.config.hidden_size
    return {"soft_prompt": np.zeros((0, width), np.float32), "steering": np.asarray(vector, np.float32),
            "file_metadata": metadata}


def _steering_save(result: Any, out: Path) -> Path:
    from jaxalign.interventions.steering import save_steering

    metadata = dict(result.file_metadata or {})
    metadata.update(loss=f"{result.loss:.6g}", readout=result.config.readout, slot=result.config.slot,
                    system=result.config.system or "", chat_date=result.config.chat_date or "")
    return save_steering(Path(out) / KINDS["steering"].file_name, result.steering, result.config.layer, metadata)


def _steering_describe(result: Any) -> dict[str, Any]:
    meta = result.file_metadata or {}
    return {"steering": {"file": KINDS["steering"].file_name, "layer": result.config.layer,
                         "norm": float(np.linalg.norm(result.steering)),
                         "residual_std": float(meta["residual_std"]) if "residual_std" in meta else None}}


STEERING = register(Tuning(
    name="steering",
    resolve=_steering_resolve,
    make_scorer=_steering_scorer,
    space=_steering_space,
    decode=lambda space, z: space.decode(z)[:, 0, :],                         # (N, 1, d) -> (N, d)
    score=_steering_score,
    result_fields=_steering_fields,
    save=_steering_save,
    describe=_steering_describe,
))
