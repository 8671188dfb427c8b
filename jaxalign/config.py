"""The configuration of an alignment run: :class:`AlignConfig` and its named :data:`PRESETS`.

A frozen dataclass whose fields are checked when it is made (so a bad value fails before any
model is loaded); :meth:`AlignConfig.evolution` turns it into the optimizer's settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from jaxalign.baselines import BASELINES
from jaxalign.interventions.base import KINDS
from jaxalign import optimizers
from jaxalign.optimizers.evolution import EvolutionConfig, is_int
from jaxalign.scoring import MODES, READOUTS, check_members_per_pass
from jaxalign.prompting.chat_formats import check_date
from jaxalign.survey.item_pairs import HALVES
from jaxalign.survey.objectives import objective_kind
from jaxalign.survey.presentations import ORDERS


MAX_K = 512


MAX_POPULATION = 65536


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """Settings of one alignment run (every field is recorded in ``results.json``).

    Attributes:
      k: soft-prompt length K (virtual tokens), 1..512.
      subspace: search in a random subspace of this dimension (prompt = p0 + A z, A scaled to
        the embedding statistics); ``None`` searches the full K x d space. Differential
        Evolution barely moves in 1e4+ dimensions, so real models need a subspace.
      population: population size P.
      generations: optimizer generations.
      strategy: an evosax algorithm name (``DifferentialEvolution``, ``SNES``, ``Sep_CMA_ES``...).
      crossover_rate, differential_weight, dither: Differential Evolution's CR, F and
        ``(F_min, F_max)``: F drawn uniformly per generation ("dither"; ``None`` keeps F fixed).
      elitism: Differential Evolution's base vector: ``True`` builds every mutant on the current
        best member (DE/best/1/bin, evosax's default and the paper's), ``False`` on a random
        other member (DE/rand/1/bin).
      init_scale: spread of the initial population around p0, in embedding standard deviations
        (for SNES, CMA-ES and the like also their initial std). ``None`` (the default) is
        :data:`INIT_SCALE` (1.0, every strategy); ``to_dict`` and ``results.json`` record the number used.
        Other spreads were measured and not made the default (wider on the tiny model, 0.5 on
        SmolLM2-135M-Instruct): ``benchmarks/RESULTS.md``.
      readout: ``"expected"``, ``"argmax"`` or ``"sample"`` (see :mod:`jaxalign.scoring`).
      n_respondents: respondents per item for the ``"sample"`` readout.
      slot: soft-prompt position (``"user_start"``, ``"system"``, ``"after_item"``, ``"user_end"``;
        see :mod:`jaxalign.prompting.layout`).
      system: optional system text placed before the soft prompt in every item.
      init_text: initialise p0 from this text's token embeddings; ``None`` uses random vocabulary rows.
      seed: seed of the initialisation, the subspace and the optimizer.
      chunk_size: generations per on-device chunk (progress and checkpoints between chunks).
      checkpoint_every: generations between checkpoints (``None``: every chunk).
      members_per_pass: population members scored per forward pass, to bound memory (must
        divide ``population``; ``None``: the whole population at once; ``"auto"``: the largest
        slice that fits the device's free memory, see :mod:`jaxalign.memory`).
      scoring_mode: ``"auto"`` (default: chosen per layout from measured rules, see
        :func:`jaxalign.scoring.resolve_mode`), ``"cached"`` (shared tokens computed once) or
        ``"full"``.
      baselines: baselines scored beside the aligned prompt.
      method: a registered optimizer (:mod:`jaxalign.optimizers`): ``"de"`` (the evosax
        strategy ``strategy``), ``"gradient"`` (Adam on the ``"expected"`` readout with DE's
        forward-pass budget, :mod:`jaxalign.optimizers.adam`) or ``"hybrid"`` (the evosax strategy for a
        ``hybrid_fraction`` share of the budget, then Adam from its best prompt; both phases on
        the ``"expected"`` readout).
      learning_rate: Adam's step size (``method="gradient"`` or ``"hybrid"``; units as ``init_scale``).
      extra_wordings: JSON wording files (:func:`jaxalign.survey.load_wording`) tuned on beside
        the instrument: the loss is the mean over every presentation (the normal order, the
        reversed one with ``both_orders``, each extra wording). The project's held-out wording
        is refused.
      hybrid_fraction: share of the forward-pass budget ``population * (generations + 1)``
        that ``method="hybrid"`` spends on its evolution phase (0 < f <= 1).
      both_orders: tune on the normal and the reversed option order: the same as
        ``orders="both"`` (kept for older code; set from ``orders``).
      orders: the option orders every item is scored in each step (``"one"``, ``"both"``,
        ``"cyclic"``; :mod:`jaxalign.survey.presentations`), each wording (the instrument's and
        every ``extra_wordings`` file) in every order; the item means are averaged over these
        presentations **before** the indices and the loss are formed, so an effect of the
        option's position cancels inside the objective.
      loss: ``"paper"`` (C = 0, the paper's), ``"anchored"`` (constants that read the plain
        model as a respondent from ``reference``) or ``"relative"`` (several targets: one
        constant per dimension shared by the run's countries, fitted on the plain model); see
        :mod:`jaxalign.survey.objectives`.
      reference: the reference country of ``loss="anchored"`` (a name, alias or code).
      item_pairs: ``None`` (every index from both of its item pairs), ``"a"`` or ``"b"``: tune on
        one item pair per index, the indices read on the full scale from that pair alone
        (:mod:`jaxalign.survey.item_pairs`); the other half is the test
        (``jaxalign eval matrix --item-pairs``).
      chat_date: ``YYYY-MM-DD``, the date a chat template that reads today's date (Llama-3.2's
        ``strftime_now``) renders in every prompt of the run; ``None``: today, or on resume the
        date the run started with (see :mod:`jaxalign.prompting.chat_formats`). Not used (and left
        ``None``) when the template does not read the date.
    """

    k: int = 10
    subspace: int | None = 64
    population: int = 32
    generations: int = 50
    strategy: str = "DifferentialEvolution"
    crossover_rate: float = 0.9
    differential_weight: float = 0.8
    dither: tuple[float, float] | None = (0.5, 1.0)
    elitism: bool = True
    init_scale: float | None = None
    readout: str = "expected"
    n_respondents: int = 100
    slot: str = "user_start"
    system: str | None = None
    init_text: str | None = None
    seed: int = 0
    chunk_size: int = 10
    checkpoint_every: int | None = None
    members_per_pass: int | str | None = None
    scoring_mode: str = "auto"
    baselines: tuple[str, ...] = BASELINES
    method: str = "de"
    learning_rate: float = 0.1
    both_orders: bool = False
    hybrid_fraction: float = 0.25
    extra_wordings: tuple[str, ...] = ()
    chat_date: str | None = None
    orders: str = "one"
    loss: str = "paper"
    reference: str | None = None
    item_pairs: str | None = None
    intervention: str = "soft_prompt"
    layer: int | None = None

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "AlignConfig":
        """A config with the named preset's optimizer settings (:data:`PRESETS`), then ``overrides``.

        ``AlignConfig.from_preset("paper")`` replicates the paper's optimizer; ``"default"`` is
        ``AlignConfig()``.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def __post_init__(self) -> None:
        if self.chat_date is not None:
            check_date(self.chat_date)
        if self.orders not in ORDERS:
            raise ValueError(f"unknown orders {self.orders!r}; choose one of {', '.join(ORDERS)}")
        if self.both_orders and self.orders == "cyclic":
            raise ValueError("both_orders=True means orders='both'; it cannot be combined with orders='cyclic'")
        if self.both_orders:
            object.__setattr__(self, "orders", "both")
        object.__setattr__(self, "both_orders", self.orders == "both")
        takes_reference = objective_kind(self.loss).takes_reference  # ValueError naming the kinds
        if takes_reference != (self.reference is not None):
            raise ValueError(f"loss={self.loss!r} needs a reference country, and only such a loss takes one"
                             if takes_reference else
                             f"a reference country is only used by loss='anchored', not {self.loss!r}")
        optimizers.get(self.method)  # ValueError naming the registered optimizers
        if self.item_pairs is not None and self.item_pairs not in HALVES:
            raise ValueError(f"item_pairs must be None or one of {', '.join(HALVES)}, got {self.item_pairs!r}")
        if self.intervention not in KINDS:
            raise ValueError(f"unknown intervention {self.intervention!r}; choose one of {', '.join(KINDS)}")
        if self.layer is not None:
            if not KINDS[self.intervention].layered:
                raise ValueError(f"layer is the block a steering vector is added after; a "
                                 f"{self.intervention.replace('_', ' ')} takes none (set "
                                 "intervention='steering', or leave layer None)")
            if not is_int(self.layer) or self.layer < 0:
                raise ValueError(f"layer must be a 0-based block index >= 0 (or None), got {self.layer!r}")
        if isinstance(self.extra_wordings, (str, os.PathLike)):
            raise ValueError("extra_wordings must be a list of wording files, not one string")
        object.__setattr__(self, "extra_wordings", tuple(str(p) for p in self.extra_wordings))
        f = self.hybrid_fraction
        if not (isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1):
            raise ValueError(f"hybrid_fraction must be a number in (0, 1], got {f!r}")
        lr = self.learning_rate
        if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {lr!r}")
        if self.init_scale is not None and not (
                isinstance(self.init_scale, (int, float, np.floating)) and not isinstance(self.init_scale, bool)):
            raise ValueError(f"init_scale must be None (the strategy's default) or a number > 0, got {self.init_scale!r}")
        if not is_int(self.k) or not 1 <= self.k <= MAX_K:
            raise ValueError(f"k (soft-prompt length) must be an integer in 1..{MAX_K}, got {self.k!r}")
        if not is_int(self.population) or not 4 <= self.population <= MAX_POPULATION:
            raise ValueError(
                f"population must be an integer in 4..{MAX_POPULATION}, got {self.population!r}"
            )
        if self.subspace is not None and (not is_int(self.subspace) or self.subspace < 1):
            raise ValueError(f"subspace must be None (full space) or an integer >= 1, got {self.subspace!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose one of {', '.join(READOUTS)}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if self.members_per_pass is not None and self.members_per_pass != "auto":
            if not is_int(self.members_per_pass) or self.members_per_pass < 1:
                raise ValueError(
                    f"members_per_pass must be None, 'auto' or an integer >= 1, got {self.members_per_pass!r}")
            check_members_per_pass(self.members_per_pass, self.population)
        if self.scoring_mode not in MODES:
            raise ValueError(f"unknown scoring_mode {self.scoring_mode!r}; choose one of {', '.join(MODES)}")
        self.evolution_config(1.0)  # validates the optimizer fields (strategy name, rates, ...)

    @property
    def spread(self) -> float:
        """The initial spread used: ``init_scale``, or its strategy's default when ``None``."""
        if self.init_scale is not None:
            return float(self.init_scale)
        return INIT_SCALE

    def evolution_config(self, embedding_std: float) -> EvolutionConfig:
        """The optimizer settings; ``init_scale`` is converted to search-space units."""
        scale = self.spread if self.subspace is not None else self.spread * embedding_std
        return EvolutionConfig(
            strategy=self.strategy,
            population_size=self.population,
            generations=self.generations,
            crossover_rate=self.crossover_rate,
            differential_weight=self.differential_weight,
            dither=self.dither,
            elitism=self.elitism,
            chunk_size=self.chunk_size,
            init_scale=float(scale),
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["baselines"] = list(self.baselines)
        out["extra_wordings"] = list(self.extra_wordings)
        out["dither"] = None if self.dither is None else list(self.dither)
        out["init_scale"] = self.spread
        return out


#: The initial spread (DE's, and the other strategies' std_init) when ``AlignConfig.init_scale`` is None.
INIT_SCALE = 1.0


#: Named optimizer settings (``AlignConfig.from_preset``, ``jaxalign align --preset``).
#:
#: - ``"paper"``: plain Differential Evolution as in evosax and the paper's replication in this
#:   project (DE/best/1/bin, CR 0.9, fixed F 0.8, initial spread 1 embedding std).
#: - ``"de-p8"``: the paper's DE with 8 members and an initial spread of 2, for a fixed budget of
#:   forward passes: give it ``generations = budget / 8 - 1`` (twice the generations of P = 16).
#:   The best DE of the tiny-model equal-budget study (``benchmarks/RESULTS.md``, "Which optimizer
#:   per unit of compute?"); measured on a random tiny model only: run
#:   ``benchmarks/optimizers.py --methods de-p8,SNES`` on yours.
#: - ``"default"``: ``AlignConfig()``.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(strategy="DifferentialEvolution", crossover_rate=0.9, differential_weight=0.8,
                  dither=None, elitism=True, init_scale=1.0),
    "de-p8": dict(strategy="DifferentialEvolution", crossover_rate=0.9, differential_weight=0.8,
                  dither=None, elitism=True, init_scale=2.0, population=8),
    "default": {},
}


