"""The Python API behind ``jaxalign align`` and ``jaxalign score``.

>>> lm = jaxalign.load_model("tiny-random")
>>> result = jaxalign.align(lm, "China", generations=50, population=32)
>>> result.loss, result.baselines["naive"].loss
>>> result.save("runs/china")   # results.json, soft_prompt.safetensors, dims.png
>>> several = jaxalign.align(lm, ["China", "India", "Saudi Arabia"], generations=50)
>>> several["India"].loss, several.table()

Every entry point (``align``, ``gradient_align``, ``align_both_orders``) runs
:func:`run_pipeline`, which sets up the problem and runs the one loop of
:mod:`jaxalign.optimize.pipeline`; this module keeps the configuration, the results and the files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign._io import write_text_atomic
from jaxalign.baselines import BASELINES, BaselineResult
from jaxalign.model import LM
from jaxalign.parallel import is_main_process, sync_processes
from jaxalign.optimize import EvolutionConfig
from jaxalign.scoring import MODES, READOUTS, Scores, check_members_per_pass, make_scorer
from jaxalign.prompting.chat_formats import bind_run_date, check_date
from jaxalign.softprompt import (
    SoftPromptSpace,
    full_space,
    init_from_ids,
    init_random_vocab,
    ordinary_token_ids,
    save_soft_prompt,
    subspace,
)
from jaxalign.survey import Instrument, Target, resolve_target, vsm13
from jaxalign.survey.targets import check_reachable

MAX_K = 512
METHODS: tuple[str, ...] = ("de", "gradient", "hybrid")
MAX_POPULATION = 65536
CHECKPOINT_FOLDER = "checkpoints"
SPACE_FILE = "search_space.safetensors"  # p0 and the subspace basis, so a resume never redraws them


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
        :data:`DE_INIT_SCALE` (1.0); ``to_dict`` and ``results.json`` record the number used.
        A wider DE start was tried and not kept: in ``benchmarks/de_sweep.py`` (tiny model, K = 10,
        subspace 32, P = 16, 40 generations, China/U.S.A./India, one seed) the final L1 was 10.92,
        9.94 and 7.42 at spreads 0.5, 1 and 2, but the 3-seed study
        (``benchmarks/results/optimizers_tiny_2026-12-01``) gave 10.61 ± 2.90 at spread 2 against
        10.29 ± 0.73 for the paper's DE, and on the planted target of ``tests/test_align.py`` the
        spread of 2 kept 0.33, 0.33 and 0.19 of the starting loss where these defaults (dither
        0.5-1.0, spread 1) kept 0.10, 0.19 and 0.10.
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
      method: ``"de"`` (the evosax strategy ``strategy``), ``"gradient"`` (Adam on the
        ``"expected"`` readout with DE's forward-pass budget, see
        :mod:`jaxalign.optimize.gradient`) or ``"hybrid"`` (the evosax strategy for a
        ``hybrid_fraction`` share of the budget, then Adam from its best prompt; both phases on
        the ``"expected"`` readout).
      learning_rate: Adam's step size (``method="gradient"`` or ``"hybrid"``; units as ``init_scale``).
      extra_wordings: JSON wording files (:func:`jaxalign.survey.load_wording`) tuned on beside
        the instrument: the loss is the mean over every presentation (the normal order, the
        reversed one with ``both_orders``, each extra wording). The project's held-out wording
        is refused.
      hybrid_fraction: share of the forward-pass budget ``population * (generations + 1)``
        that ``method="hybrid"`` spends on its evolution phase (0 < f <= 1).
      both_orders: tune on the mean loss of the normal and the reversed option order
        (:func:`jaxalign.evaluate.robustness.align_both_orders`).
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
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
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
        if not _is_int(self.k) or not 1 <= self.k <= MAX_K:
            raise ValueError(f"k (soft-prompt length) must be an integer in 1..{MAX_K}, got {self.k!r}")
        if not _is_int(self.population) or not 4 <= self.population <= MAX_POPULATION:
            raise ValueError(
                f"population must be an integer in 4..{MAX_POPULATION}, got {self.population!r}"
            )
        if self.subspace is not None and (not _is_int(self.subspace) or self.subspace < 1):
            raise ValueError(f"subspace must be None (full space) or an integer >= 1, got {self.subspace!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose one of {', '.join(READOUTS)}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if self.members_per_pass is not None and self.members_per_pass != "auto":
            if not _is_int(self.members_per_pass) or self.members_per_pass < 1:
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
        return DE_INIT_SCALE if self.strategy == "DifferentialEvolution" else OTHER_INIT_SCALE

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


#: Differential Evolution's initial spread when ``AlignConfig.init_scale`` is None (see there).
DE_INIT_SCALE = 1.0
#: The other strategies' initial spread (their std_init) when ``AlignConfig.init_scale`` is None.
OTHER_INIT_SCALE = 1.0

#: Named optimizer settings (``AlignConfig.from_preset``, ``jaxalign align --preset``).
#:
#: - ``"paper"``: plain Differential Evolution as in evosax and the paper's replication in this
#:   project (DE/best/1/bin, CR 0.9, fixed F 0.8, initial spread 1 embedding std).
#: - ``"de-p8"``: the paper's DE with 8 members and an initial spread of 2, for a fixed budget of
#:   forward passes: give it ``generations = budget / 8 - 1`` (twice the generations of P = 16).
#:   In the equal-budget study on the tiny model (656 forward passes, K = 10, subspace 32, 3 seeds
#:   x China/U.S.A./India; ``benchmarks/results/de_sweep3_tiny_2026-12-02``) its final L1 was
#:   6.63 ± 3.35, against 6.97 ± 1.37 for SNES (the best evolution strategy there) and
#:   10.29 ± 0.73 for ``"paper"``; with spread 1 it was 9.35, with F 0.5 11.11. Measured on a random
#:   tiny model only: run ``benchmarks/optimizers.py --methods de-p8,SNES`` on yours.
#: - ``"default"``: ``AlignConfig()``.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(strategy="DifferentialEvolution", crossover_rate=0.9, differential_weight=0.8,
                  dither=None, elitism=True, init_scale=1.0),
    "de-p8": dict(strategy="DifferentialEvolution", crossover_rate=0.9, differential_weight=0.8,
                  dither=None, elitism=True, init_scale=2.0, population=8),
    "default": {},
}


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class AlignResult:
    """The outcome of :func:`align`.

    Attributes:
      target: the target profile.
      soft_prompt: ``(K, d)`` float32, the best prompt found.
      dims: ``(D,)`` the aligned model's indices; ``loss``: its L1 loss (mean over available dims).
      probs: ``(Q, 5)`` the aligned model's answer distribution per item.
      baselines: name -> :class:`~jaxalign.baselines.BaselineResult` (same scorer and readout).
      history: per generation (row 0 = the initial population): ``best_loss``, ``mean_loss``,
        ``best_dims`` (best-so-far), as lists.
      model, wording, dimensions: what produced the numbers.
      config: the :class:`AlignConfig`.
      wall_s, compile_s: seconds for the whole run and for compiling the optimizer loop.
      s_per_generation: steady seconds per optimizer step (one population scored and updated),
        measured over the run's device chunks (compile, set-up, baselines and checkpoints
        excluded); NaN where not measured.
      evaluations: forward passes of one prompt the optimizer spent (an Adam step counted at its
        measured cost, ``cost``).
      cost: for ``"gradient"``/``"hybrid"``, an Adam step's cost read from the compiled programs
        (:class:`jaxalign.optimize.pipeline.RunCost` as a dict); ``None`` otherwise.
      method: how the prompt was found: ``"de"`` (evosax strategy ``config.strategy``),
        ``"gradient"`` (:func:`jaxalign.optimize.gradient.gradient_align`), ``"de-both-orders"``.
    """

    target: Target
    soft_prompt: np.ndarray
    dims: np.ndarray
    loss: float
    probs: np.ndarray
    baselines: dict[str, BaselineResult]
    history: dict[str, list]
    model: str
    wording: str
    dimensions: tuple[str, ...]
    config: AlignConfig
    wall_s: float
    compile_s: float
    evaluations: int | float
    resumed_from: int | None = None
    method: str = "de"
    s_per_generation: float = float("nan")
    partial: bool = False
    fingerprints: dict[str, Any] | None = None
    chat_template: str | None = None
    cost: dict[str, Any] | None = None  # gradient/hybrid: an Adam step's measured cost (RunCost.to_dict)

    def to_json(self) -> dict[str, Any]:
        """Everything ``results.json`` holds (NaN written as null)."""

        def dims_dict(values) -> dict[str, float | None]:
            return {n: _num(v) for n, v in zip(self.dimensions, np.asarray(values, np.float64))}

        methods = {
            name: {"loss": _num(b.loss), "dims": dims_dict(b.dims), "system": b.system,
                   "answers": np.asarray(b.probs, np.float64).round(6).tolist()}
            for name, b in self.baselines.items()
        }
        methods["optimized"] = {"loss": _num(self.loss), "dims": dims_dict(self.dims),
                                 "method": self.method}
        return {
            "jaxalign_version": _version(),
            "model": self.model,
            "wording": self.wording,
            "chat_template": self.chat_template,
            "chat_date": self.config.chat_date,
            "target": {
                "name": self.target.name,
                "code": self.target.code,
                "dims": dims_dict(self.target.values),
                "source": self.target.source,
            },
            "loss": "mean absolute difference over the target's available dimensions",
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "methods": methods,
            "answers": np.asarray(self.probs, np.float64).round(6).tolist(),
            "history": {
                "best_loss": [_num(v) for v in self.history["best_loss"]],
                "mean_loss": [_num(v) for v in self.history["mean_loss"]],
            },
            "evaluations": self.evaluations,
            **({"cost": self.cost} if self.cost is not None else {}),
            "resumed_from": self.resumed_from,
            "wall_s": round(self.wall_s, 3),
            "compile_s": round(self.compile_s, 3),
            "s_per_generation": _num(round(self.s_per_generation, 5)),
            "fingerprints": self.fingerprints,
            **({"partial": True, "generations_done": len(self.history["best_loss"]) - 1}
               if self.partial else {}),
        }

    def save(self, out: str | os.PathLike) -> Path:
        """Writes ``results.json``, ``soft_prompt.safetensors`` and ``dims.png`` into ``out``.

        Each file is written to a temporary name and renamed, so a reader never sees half a file.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_soft_prompt(out / "soft_prompt.safetensors", self.soft_prompt, self.prompt_metadata())
        plot_dims(self, out / "dims.png")
        write_text_atomic(out / "results.json", json.dumps(self.to_json(), indent=2) + "\n")
        return out

    def prompt_metadata(self) -> dict[str, str]:
        """The metadata stored with the soft prompt (what ``jaxalign score`` needs to reuse it)."""
        meta = {
            "model": self.model,
            "wording": self.wording,
            "readout": self.config.readout,
            "slot": self.config.slot,
            "system": self.config.system or "",
            "chat_template": self.chat_template or "",
            "chat_date": self.config.chat_date or "",
            "target": self.target.name,
            "loss": f"{self.loss:.6g}",
            "hidden_size": str(self.soft_prompt.shape[1]),
        }
        if self.fingerprints:
            from jaxalign.fingerprint import model_digest

            model = self.fingerprints["model"]
            meta.update(
                model_fingerprint=model_digest(model),
                chat_format=model.get("chat_template", ""),
                wording_fingerprint=self.fingerprints["instrument"]["items"],
                target_fingerprint=self.fingerprints["target"]["values"],
            )
        return meta


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _version() -> str:
    from jaxalign import __version__

    return __version__


def check_out_dir(out: str | os.PathLike, *, resume: bool, cli: bool = False) -> Path:
    """Checks that ``out`` can hold a run: a folder (or one that can be made), writable, and not
    holding another run unless resuming. Creates nothing: :func:`run_pipeline` makes the folder
    when the run starts and removes what it made there if the run fails before its first
    checkpoint, so a run refused or failed early leaves no empty folder behind.

    ``cli``: word the messages for the command line (``--resume``) instead of the API
    (``resume=True``).
    """
    out = Path(out)
    where = f"--out {str(out)!r}" if cli else f"out {str(out)!r}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{where} exists and is not a folder")
    existing = out
    while not existing.exists() and existing != existing.parent:  # the nearest folder that exists
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{str(existing)!r} is not a folder")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".jaxalign-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"cannot write to {where}: {error.strerror or error}") from None
    holds_run = any((out / name).exists() for name in ("results.json", "summary.json", CHECKPOINT_FOLDER))
    if holds_run and not resume:
        raise ValueError(
            f"{str(out)!r} already holds a run; pass --resume to continue it, or choose another --out"
            if cli else
            f"{str(out)!r} already holds a run; pass resume=True to continue it, or choose another out folder")
    return out


#: Config fields a checkpoint does not record (:meth:`jaxalign.optimize.pipeline.Problem.fingerprint`
#: leaves them out): they may change on resume (``generations`` only upwards).
RESUMABLE_CHANGES: tuple[str, ...] = ("generations", "chunk_size", "checkpoint_every", "baselines")
# the order in which a refused resume lists what changed: the settings a person chose first,
# content digests (the "content" entry) after them
_SETTINGS_ORDER: tuple[str, ...] = (
    "model", "dtype", "wording", "targets", *(f.name for f in dataclasses.fields(AlignConfig)), "n")


def _latest_record(out_dir: Path) -> tuple[int, dict[str, Any]] | None:
    """``(generation, record)`` of the newest checkpoint under ``out_dir``; ``None`` if none (reads
    no array, creates nothing)."""
    from jaxalign.optimize.checkpoint import RunCheckpointer

    folder = Path(out_dir) / CHECKPOINT_FOLDER
    if not folder.is_dir():
        return None
    checkpointer = RunCheckpointer(str(folder.resolve()))
    try:
        latest = checkpointer.latest_step()
        return None if latest is None else (latest, checkpointer.read_record(latest))
    finally:
        checkpointer.close()


def _targets_fingerprint(targets: Sequence[Target]) -> list[dict[str, Any]]:
    """The ``targets`` entry of a checkpoint's fingerprint (as ``Problem.fingerprint`` writes it)."""
    return [{"name": t.name, "dims": [_num(v) for v in np.asarray(t.values, np.float64)]} for t in targets]


def resume_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       dimensions: Sequence[str]) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's, for a person to read:
    ``["population: 8 -> 16", ...]`` (checkpoint -> now), the settings first (model, dtype,
    wording, targets, then :class:`AlignConfig`'s fields), content digests last. Targets of the
    same names are compared per dimension (``"targets.Japan.PDI: 54.0 -> 55.0"``)."""
    from jaxalign.optimize.checkpoint import changed_fields

    saved, current = dict(saved), dict(current)
    order = list(_SETTINGS_ORDER)
    old, new = saved.get("targets"), current.get("targets")
    if isinstance(old, list) and isinstance(new, list):
        old_names, new_names = [t.get("name") for t in old], [t.get("name") for t in new]
        if old_names != new_names:
            saved["targets"], current["targets"] = ", ".join(map(str, old_names)), ", ".join(map(str, new_names))
        else:
            del saved["targets"], current["targets"]
            for name, a, b in zip(new_names, old, new):
                key = f"targets.{name}"
                saved[key] = dict(zip(dimensions, a.get("dims", [])))
                current[key] = dict(zip(dimensions, b.get("dims", [])))
                order.insert(order.index("targets") + 1, key)
    return changed_fields(saved, current, order=order)


def resume_refusal(directory: str | os.PathLike, differences: Sequence[str], *, cli: bool = False) -> str:
    """The one-line message refusing a resume: the changed settings first, then content."""
    settings = [d for d in differences if not d.startswith("content")]
    content = [d for d in differences if d.startswith("content")]
    parts = []
    if settings:
        parts.append(f"the settings differ from the checkpoint's (checkpoint -> now): {'; '.join(settings)}")
    if content:
        parts.append(f"what the run is made of differs (checkpoint -> now): {'; '.join(content)}")
    elsewhere = "another --out" if cli else "another out folder"
    return (f"refusing to resume from {str(directory)!r}: {'; and '.join(parts)}. Resume with the "
            f"checkpoint's settings, or start the new run in {elsewhere}")


def check_resume(
    out: str | os.PathLike,
    config: AlignConfig,
    targets: Sequence[Target],
    *,
    instrument: Instrument,
    model: str | None = None,
    dtype: str | None = None,
    cli: bool = False,
) -> int | None:
    """Refuses, before any model is loaded or anything compiled, to resume the run checkpointed in
    ``out`` with settings a person changed (``population: 8 -> 16``).

    Compares what the checkpoint recorded of ``config`` (all fields but
    :data:`RESUMABLE_CHANGES`; ``chat_date`` only when set, a resume inherits the run's), the
    targets, the wording's name, and ``model`` / ``dtype`` when given (the name passed to
    :func:`jaxalign.load_model` and its dtype name). The content (weights, rendered tokens,
    search space) is compared after the model is loaded. ``cli``: word the messages for the
    command line. Returns the checkpoint's generation, or ``None`` when ``out`` holds none.
    """
    latest = _latest_record(Path(out))
    if latest is None:
        return None
    step, record = latest
    saved = record.get("fingerprint", {})
    fields = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    if config.chat_date is None:
        del fields["chat_date"]
    current: dict[str, Any] = {"wording": instrument.wording, "targets": _targets_fingerprint(targets), **fields}
    if model is not None:
        current["model"] = str(model)
    if dtype is not None:
        current["dtype"] = str(dtype)
    from jaxalign.optimize.checkpoint import normalise_json

    current = normalise_json(current)
    differences = resume_differences({k: saved[k] for k in current if k in saved}, current,
                                     instrument.dimensions)
    if differences:
        raise ValueError(resume_refusal(Path(out) / CHECKPOINT_FOLDER, differences, cli=cli))
    if config.method == "de" and step > config.generations:
        asked = f"--generations {config.generations}" if cli else f"generations={config.generations}"
        raise ValueError(f"the checkpoint in {str(Path(out) / CHECKPOINT_FOLDER)!r} is at generation {step}, "
                         f"beyond {asked}; ask for at least {step} generations")
    return step


def initial_prompt(lm: LM, k: int, *, text: str | None, seed: int) -> np.ndarray:
    """``(k, d)`` starting prompt: the embeddings of ``text``'s tokens, or ``k`` random rows.

    Without ``text`` the rows are drawn (seed ``seed``) from the tokenizer's ordinary tokens
    (:func:`~jaxalign.softprompt.ordinary_token_ids`: no special, reserved, added or padding
    row), or from every row of a model without a tokenizer.
    """
    if text is None:
        n_rows = int(lm.embedding_matrix.shape[0])
        allowed = None if lm.tokenizer is None else ordinary_token_ids(lm.tokenizer, n_rows)
        return np.asarray(init_random_vocab(lm.embedding_matrix, k, jax.random.key(seed), allowed_ids=allowed))
    if lm.tokenizer is None:
        raise ValueError("init_text needs the model's tokenizer, and this model has none")
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError("init_text is empty after tokenisation")
    return np.asarray(init_from_ids(lm.embedding_matrix, np.asarray(ids), k))


def search_space(lm: LM, config: AlignConfig) -> tuple[SoftPromptSpace, float]:
    """The soft-prompt search space for ``config`` and the embedding std it is scaled by.

    ``p0`` from ``config.init_text`` or ``config.k`` random vocabulary rows (``config.seed``); a
    random subspace of ``config.subspace`` dimensions (basis from ``config.seed + 1``), or the
    full space when it is ``None``. Every method (DE, gradient, both orders) searches this space.
    """
    embedding_std = float(jnp.std(lm.embedding_matrix.astype(jnp.float32)))
    p0 = initial_prompt(lm, config.k, text=config.init_text, seed=config.seed)
    if config.subspace is None:
        return full_space(p0), embedding_std
    return subspace(p0, config.subspace, jax.random.key(config.seed + 1), embedding_std), embedding_std


def _saved_search_space(path: Path, space: SoftPromptSpace, *, resume: bool) -> SoftPromptSpace:
    """The run's search space, kept in ``path`` (``p0`` and the basis ``A``, exact float32).

    A fresh run writes ``space`` there (process 0, atomically) before its first checkpoint; a
    resume reads it back instead of redrawing ``A`` from the seed, so the DE state continues in
    the space it was made in even where another JAX release would draw other random bits. The
    checkpoint's record holds the space's exact digest, so an edited or swapped file is refused.
    """
    from safetensors.numpy import load_file, save_file

    from jaxalign._io import atomic_path

    if resume and path.is_file():
        try:
            saved = load_file(str(path))
        except Exception as error:
            raise ValueError(f"{str(path)!r} is not a readable search-space file: {error}") from None
        if "p0" not in saved:
            raise ValueError(f"{str(path)!r} holds no p0 tensor; was it written by jaxalign?")
        basis = saved.get("basis")
        same_shapes = saved["p0"].shape == tuple(space.p0.shape) and (
            (basis is None and space.basis is None)
            or (basis is not None and space.basis is not None and basis.shape == tuple(space.basis.shape)))
        if not same_shapes:  # another k/subspace: the configuration check names the difference
            return space
        return SoftPromptSpace(p0=jnp.asarray(saved["p0"]),
                               basis=None if basis is None else jnp.asarray(basis))
    if is_main_process():
        tensors = {"p0": np.ascontiguousarray(np.asarray(space.p0, np.float32))}
        if space.basis is not None:
            tensors["basis"] = np.ascontiguousarray(np.asarray(space.basis, np.float32))
        with atomic_path(path) as tmp:
            save_file(tensors, tmp)
    return space


def resolve_targets(
    target: Target | str | Mapping[str, float] | Sequence[Any],
) -> tuple[tuple[Target, ...], bool]:
    """``(targets, several)``: one target, or a list/tuple of them (``several`` is then True).

    Each item is a :class:`~jaxalign.survey.Target`, a country name or code, ``"PDI=80,..."`` or a
    mapping of dimension scores.
    """
    if isinstance(target, (list, tuple)):
        if not target:
            raise ValueError("the list of targets is empty; give at least one country or target")
        return tuple(t if isinstance(t, Target) else resolve_target(t) for t in target), True
    return (target if isinstance(target, Target) else resolve_target(target),), False


def align(
    lm: LM,
    target: Target | str | Mapping[str, float] | Sequence[Any],
    *,
    instrument: Instrument | None = None,
    config: AlignConfig | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool | str = True,
    mesh: Any = None,
    log: str | None = None,
    **overrides: Any,
) -> AlignResult | AlignResults:
    """Tunes a soft prompt so that ``lm``'s survey answers give ``target``'s dimension scores.

    Args:
      lm: the frozen model (:func:`jaxalign.load_model`).
      target: a :class:`~jaxalign.survey.Target`, a country name or code, ``"PDI=80,IDV=20"``
        or a mapping of dimension scores (missing dimensions are left out of the loss; a score
        no answers can give, e.g. ``PDI=800``, is refused: see :mod:`jaxalign.survey.targets`); or a
        list of those: C independent searches in one compiled program (the C x P members share
        every scoring pass), each target's result equal to its own single run with the same
        seed up to float rounding (see :mod:`jaxalign.optimize.pipeline`).
      instrument: the survey; the built-in VSM 2013 wording by default.
      config: an :class:`AlignConfig`; keyword ``overrides`` replace its fields
        (``align(lm, "China", generations=100)``; ``method="gradient"`` runs Adam).
      out: folder for checkpoints and, at the end, ``results.json``,
        ``soft_prompt.safetensors`` and ``dims.png`` (for a list of targets: one sub-folder per
        target plus ``summary.md``, ``summary.json`` and ``summary.png``). ``None`` keeps
        everything in memory.
      resume: continue the run checkpointed in ``out``; a checkpoint of another configuration
        (or another set of targets) is refused, naming what changed (``population: 8 -> 16``).
        The resumed result equals the uninterrupted one.
      progress: show a progress bar with the best loss (on process 0 only; for several targets
        the mean of their best losses), and a line for each phase before it; ``"lines"`` prints
        one plain line per chunk instead of the bar (``True`` does so when stderr is not a
        terminal); ``False`` prints nothing.
      log: ``"tensorboard"`` or ``"wandb"``: stream each generation's losses and dims while the
        run goes (:class:`RunLog`; TensorBoard event files go to ``out/logs``).
      mesh: a :class:`jax.sharding.Mesh` (:func:`jaxalign.parallel.make_mesh`): the population
        (all C x P members) is sharded over its ``"data"`` axis and the weights over ``"model"``
        (load the model with ``load_model(..., mesh=mesh)``); the optimizer state is small and
        stays replicated. The result equals the one-device run up to float rounding. With
        several processes (:func:`jaxalign.parallel.initialize_distributed`) only process 0
        writes ``out``'s result files; orbax writes the checkpoints from every process itself.

    Returns:
      an :class:`AlignResult` for one target; an :class:`AlignResults` for a list.

    Every argument is checked before anything is compiled.
    """
    config = dataclasses.replace(config or AlignConfig(), **overrides)
    targets, several = resolve_targets(target)
    found = run_pipeline(lm, targets, instrument=instrument, config=config, out=out, resume=resume,
                         progress=progress, mesh=mesh, layout="sets" if several else "single",
                         log=log)
    return AlignResults(tuple(found)) if several else found[0]


def run_pipeline(
    lm: LM,
    targets: Sequence[Target],
    *,
    instrument: Instrument | None = None,
    config: AlignConfig,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
    mesh: Any = None,
    scorer_options: Mapping[str, Any] | None = None,
    layout: str = "single",
    log: str | None = None,
) -> list[AlignResult]:
    """The one alignment pipeline behind :func:`align`, ``gradient_align`` and
    ``align_both_orders``: set-up, run loop, baselines, results (one per target), files.

    ``layout="single"`` writes one target's files into ``out``; ``"sets"`` one folder per target
    plus the summary files. ``out`` is created when the run starts; a run that fails before its
    first checkpoint removes what it made there (see :class:`_RunFolder`). With ``resume``, the
    changed settings are refused first (:func:`check_resume`), the changed content after the
    set-up, before the baselines are scored or anything is compiled.
    """
    from jaxalign.optimize import pipeline

    t_start = time.perf_counter()
    instrument = instrument or vsm13()
    targets = tuple(targets)
    out_dir = check_out_dir(out, resume=resume) if out is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs out= (the folder holding the checkpoints)")
    if log is not None:
        if out_dir is None:
            raise ValueError("log= needs out= (the logs are written under out/logs)")
        check_logger(log)
    for target in targets:  # a score no answers can give (PDI=800) is a typo, not a target
        if tuple(target.dimensions) == tuple(instrument.dimensions):  # else setup names the mismatch
            check_reachable(target, instrument)
    # every process checks `out` before process 0 can create its checkpoint folder there
    sync_processes("jaxalign.align: out checked")
    lm, config = fix_chat_date(lm, config, out_dir if resume else None)
    if resume:  # changed settings are refused before anything is rendered or compiled
        check_resume(out_dir, config, targets, instrument=instrument, model=lm.name,
                     dtype=str(np.dtype(lm.dtype)))
    unit = "gen" if config.method == "de" else "step"
    folder = _RunFolder(out_dir) if out_dir is not None else None
    checkpoint_dir = None if out_dir is None else str((out_dir / CHECKPOINT_FOLDER).resolve())
    report = None
    try:
        run_log = None
        if log is not None and is_main_process():
            run_log = RunLog(log, out_dir / "logs", targets=[t.name for t in targets],
                             dimensions=instrument.dimensions, config=config.to_dict())
        report = RunProgress(0, enabled=progress if is_main_process() else False, unit=unit, log=run_log)
        n_items = len(instrument.items) * (2 if config.both_orders else 1)
        report.phase(f"rendering {n_items} survey items with {lm.name}'s chat template "
                     f"({len(targets)} target{'s' if len(targets) > 1 else ''}, slot {config.slot})")
        problem = pipeline.setup(lm, targets, instrument, config, mesh=mesh, scorer_options=scorer_options,
                                 space_file=None if out_dir is None else out_dir / SPACE_FILE, resume=resume)
        if resume:  # what the run is made of (weights, tokens, space), before the baselines are scored
            _check_resume_content(out_dir, problem)
        report.total = problem.total_steps - 1
        report.phase(f"scoring the baselines ({', '.join(config.baselines) or 'none'})")
        if "persona" in config.baselines:
            for target in targets:
                if not target.code:
                    report.phase(f"no persona baseline for {target.name}: a custom target names no "
                                 "country for the persona to come from")
        baseline_rows = pipeline.baselines(problem)

        def write(found: list[AlignResult]) -> None:
            if out_dir is not None and is_main_process():
                if layout == "single":
                    found[0].save(out_dir)
                else:
                    AlignResults(tuple(found)).save(out_dir)

        try:
            outcome = pipeline.run(problem, checkpoint_dir=checkpoint_dir, resume=resume, progress=report)
        except RunInterrupted as stop:
            # keep the best prompt so far next to the checkpoint (a second Ctrl-C skips it)
            if stop.state is not None and stop.generation >= 0 and out_dir is not None:
                try:
                    partial = pipeline.RunOutcome(state=stop.state, history=stop.history, compile_s=0.0,
                                                  loop_s=0.0, steps_run=0, resumed_from=None)
                    found = pipeline.results(problem, partial, t_start=t_start, baseline_rows=baseline_rows)
                    write([dataclasses.replace(r, partial=True) for r in found])
                    stop.partial = str(out_dir)
                except KeyboardInterrupt:
                    pass
            raise
        found = pipeline.results(problem, outcome, t_start=t_start, baseline_rows=baseline_rows)
        write(found)
        return found
    except RunInterrupted:
        raise
    except KeyboardInterrupt:  # before the loop (rendering, baselines, compiling): say how to go on
        kept = None if out_dir is None else _newest_checkpoint_step(out_dir)
        stop = RunInterrupted(-1, 0 if report is None else report.total, kept, checkpoint_dir)
        stop.phase = None if report is None else report.last_phase
        raise stop from None
    except Exception:
        if folder is not None:
            folder.remove_if_unfinished()
        raise


class _RunFolder:
    """The ``out`` folder of one run: made (with its parents) when the run starts; when the run
    fails before it has anything to keep (a checkpoint, results), what it made there is removed
    again (the search-space file, an empty checkpoint folder, logs, the folders it created), so a
    failed first run leaves nothing behind. Entries that were there before, or that the run did
    not make, are never touched, and a folder holding any is kept. With several processes only
    process 0 removes, and a folder another process made first is left (empty)."""

    MADE_BY_A_RUN = (SPACE_FILE, CHECKPOINT_FOLDER, "logs")

    def __init__(self, path: Path):
        self.path = Path(path)
        self.before = set(os.listdir(self.path)) if self.path.is_dir() else set()
        self.created = []  # the folders this run makes, deepest first
        folder = self.path
        while not folder.exists() and folder != folder.parent:
            self.created.append(folder)
            folder = folder.parent
        self.path.mkdir(parents=True, exist_ok=True)

    def remove_if_unfinished(self) -> None:
        """Removes what the run made, unless it wrote a checkpoint or results (process 0 only)."""
        import shutil

        if not is_main_process() or not self.path.is_dir():
            return
        if any((self.path / n).exists() for n in ("results.json", "summary.json")):
            return
        checkpoints = self.path / CHECKPOINT_FOLDER
        try:  # a checkpoint (or a step being written) is the run's to resume: keep everything
            if checkpoints.is_dir() and any(checkpoints.iterdir()):
                return
        except OSError:
            return
        for name in self.MADE_BY_A_RUN:
            entry = self.path / name
            if name in self.before or not (entry.exists() or entry.is_symlink()):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        for folder in self.created:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break


def _newest_checkpoint_step(out_dir: Path) -> int | None:
    """The newest complete checkpoint step under ``out_dir``, read from the folder names (orbax
    names a finished step by its number, one being written gets a suffix); no orbax call, so one
    process may ask alone."""
    try:
        steps = [int(p.name) for p in (Path(out_dir) / CHECKPOINT_FOLDER).iterdir()
                 if p.is_dir() and p.name.isdigit()]
    except OSError:
        return None
    return max(steps) if steps else None


def _check_resume_content(out_dir: Path, problem: Any) -> None:
    """Refuses to resume when the checkpoint was made of other content (weights, wording,
    rendered tokens, search space): the full fingerprint of the set-up ``problem``."""
    latest = _latest_record(out_dir)
    if latest is None:
        return
    differences = resume_differences(latest[1].get("fingerprint", {}), problem.fingerprint(),
                                     problem.instrument.dimensions)
    if differences:
        raise ValueError(resume_refusal(out_dir / CHECKPOINT_FOLDER, differences))


def target_folder(target: Target) -> str:
    """The sub-folder name of a target in a several-target run (its name, filesystem-safe)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", target.name).strip("._-")
    return name or (target.code or "target")


def fix_chat_date(lm: LM, config: AlignConfig, resume_from: Path | None = None) -> tuple[LM, AlignConfig]:
    """Binds one date for the whole run when ``lm``'s chat template reads today's date.

    The date is ``config.chat_date`` if set, else (resuming from ``resume_from``) the date the
    checkpointed run recorded, else today; the returned config records it. A template that does
    not read the date leaves both unchanged.
    """
    date = config.chat_date or (_checkpointed_chat_date(resume_from) if resume_from else None)
    lm, date = bind_run_date(lm, date)
    return lm, config if date is None else dataclasses.replace(config, chat_date=date)


def _checkpointed_chat_date(out_dir: Path) -> str | None:
    """The ``chat_date`` in the latest checkpoint's fingerprint under ``out_dir`` (None if none)."""
    latest = _latest_record(Path(out_dir))
    return None if latest is None else latest[1].get("fingerprint", {}).get("chat_date")



@dataclasses.dataclass(frozen=True)
class AlignResults:
    """The outcome of :func:`align` for a list of targets: one :class:`AlignResult` per target.

    Index it by position or target name (``results["China"]``); iterate over it.
    """

    results: tuple[AlignResult, ...]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, key: int | str) -> AlignResult:
        if isinstance(key, str):
            for result in self.results:
                if key in (result.target.name, result.target.code):
                    return result
            raise KeyError(f"no target {key!r}; targets: {', '.join(r.target.name for r in self.results)}")
        return self.results[key]

    def summary(self) -> list[dict[str, Any]]:
        """One row per target: name, available dimensions, loss per method (NaN as None)."""
        rows = []
        for r in self.results:
            losses = {name: _num(b.loss) for name, b in r.baselines.items()}
            losses["aligned"] = _num(r.loss)
            rows.append({"target": r.target.name, "code": r.target.code,
                         "dims_available": list(r.target.available), "loss": losses})
        return rows

    def to_json(self) -> dict[str, Any]:
        first = self.results[0]
        rows = self.summary()
        methods = list(rows[0]["loss"])
        means = {m: _num(np.nanmean([np.nan if row["loss"].get(m) is None else row["loss"][m]
                                     for row in rows])) for m in methods}
        return {
            "jaxalign_version": _version(), "model": first.model, "wording": first.wording,
            "method": first.method, "config": first.config.to_dict(), "n_targets": len(rows),
            "loss": "mean absolute difference over each target's available dimensions",
            "targets": rows, "mean_loss": means,
            "folders": {r.target.name: target_folder(r.target) for r in self.results},
            "wall_s": round(max(r.wall_s for r in self.results), 3),
            "compile_s": round(first.compile_s, 3),
            "s_per_generation": _num(round(first.s_per_generation, 5)),
        }

    def table(self) -> str:
        """A Markdown table: one row per target, L1 per method, and the mean row."""
        summary = self.to_json()
        methods = list(summary["mean_loss"])
        lines = ["| target | dims | " + " | ".join(methods) + " |",
                 "|---|---|" + "---:|" * len(methods)]
        cell = lambda v: "-" if v is None else f"{v:.2f}"
        for row in summary["targets"]:
            lines.append(f"| {row['target']} | {len(row['dims_available'])} | "
                         + " | ".join(cell(row["loss"].get(m)) for m in methods) + " |")
        lines.append("| **mean** | | " + " | ".join(cell(summary["mean_loss"][m]) for m in methods) + " |")
        return "\n".join(lines)

    def save(self, out: str | os.PathLike) -> Path:
        """Writes each target's files into ``out/<target>/`` and ``summary.md``, ``summary.json``,
        ``summary.png`` (model vs target per dimension, every target) into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for result in self.results:
            result.save(out / target_folder(result.target))
        first = self.results[0]
        header = (f"# jaxalign: {len(self)} targets\n\nmodel {first.model}; wording {first.wording}; "
                  f"method {first.method}; readout {first.config.readout}; population "
                  f"{first.config.population}; generations {first.config.generations}; seed "
                  f"{first.config.seed}\n\nL1 = mean absolute difference over each target's available "
                  "dimensions.\n\n")
        write_text_atomic(out / "summary.md", header + self.table() + "\n")
        plot_targets(self.results, out / "summary.png")
        write_text_atomic(out / "summary.json", json.dumps(self.to_json(), indent=2) + "\n")
        return out


class RunProgress:
    """What a run tells the user while it goes, on stderr (process 0 only).

    ``mode``: ``"bar"`` a tqdm bar over generations with the best loss; ``"lines"`` one plain
    line per device chunk (for logs and non-terminals); ``"auto"`` a bar on a terminal, lines
    otherwise; ``"off"`` nothing. :meth:`phase` prints a line for each phase before the loop
    (rendering prompts, compiling, resuming) in every mode but ``"off"``.
    """

    def __init__(self, total: int, *, enabled: bool | str = True, unit: str = "gen",
                 log: "RunLog | None" = None):
        import sys

        mode = {True: "auto", False: "off"}.get(enabled, enabled)
        if mode not in ("auto", "bar", "lines", "off"):
            raise ValueError(f"progress must be True, False, 'bar', 'lines' or 'off', not {enabled!r}")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.total, self.unit, self._bar = mode, total, unit, None
        self._what = "adam steps" if unit == "step" else "generations"
        self._start = 0
        self.log = log
        self.last_phase: str | None = None  # the latest phase() text (said by an interrupt)

    def record(self, first_generation: int, chunk: Mapping[str, np.ndarray]) -> None:
        """A chunk of history rows, for the run's logger (TensorBoard / wandb), if any."""
        if self.log is not None:
            self.log.record(first_generation, chunk)

    def __bool__(self) -> bool:
        return self.mode != "off"

    def phase(self, text: str) -> None:
        """One line about a phase of the run (before the loop starts, or a notice)."""
        self.last_phase = text
        if self.mode != "off":
            import sys

            print(text, file=sys.stderr, flush=True)

    def start(self, done: int) -> None:
        """The loop starts with ``done`` generations already run (a resumed run)."""
        self._start = done
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=done, desc=self._what, unit=self.unit)

    def update(self, generations_done: int, best_loss: float) -> None:
        if self.mode == "bar":
            if self._bar is None:
                self.start(self._start)
            self._bar.n = generations_done
            self._bar.set_postfix(best_loss=f"{best_loss:.3f}")
            self._bar.refresh()
        elif self.mode == "lines":
            self.phase(f"{self._what[:-1]} {generations_done}/{self.total}: best loss {best_loss:.4f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.log is not None:
            self.log.close()
            self.log = None



LOGGERS: tuple[str, ...] = ("tensorboard", "wandb")
_LOGGER_PACKAGES = {"tensorboard": ("tensorboardX", "pip install 'jaxalign[log]'"),
                    "wandb": ("wandb", "pip install wandb (then wandb login)")}


def check_logger(kind: str) -> None:
    """Raises ``ValueError`` unless ``kind`` is a :data:`LOGGERS` name whose package is installed
    (checked without importing it, so a run can refuse before it loads the model)."""
    import importlib.util

    if kind not in LOGGERS:
        raise ValueError(f"log must be one of {', '.join(LOGGERS)}, not {kind!r}")
    package, install = _LOGGER_PACKAGES[kind]
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"logging to {kind} needs the {package} package: {install}")


class RunLog:
    """Streams each generation's losses and dims to TensorBoard or Weights & Biases while a run goes.

    ``kind="tensorboard"`` writes event files into ``folder`` (needs ``tensorboardX``:
    ``pip install "jaxalign[log]"``); ``kind="wandb"`` logs to a wandb run (needs ``wandb``
    installed and logged in). Per generation ``g`` and target ``t``: ``t/best_loss``,
    ``t/mean_loss`` and ``t/dims/<DIM>`` (the best-so-far prompt's indices).
    """

    def __init__(self, kind: str, folder: str | os.PathLike, *, targets: Sequence[str],
                 dimensions: Sequence[str], config: Mapping[str, Any]):
        self.kind, self.targets, self.dimensions = kind, list(targets), list(dimensions)
        check_logger(kind)
        if kind == "tensorboard":
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=str(folder))
        else:
            import wandb

            self._writer = wandb.init(project="jaxalign", dir=str(folder), config=dict(config),
                                      name=", ".join(self.targets)[:128])

    def record(self, first_generation: int, chunk: Mapping[str, np.ndarray]) -> None:
        """Logs a chunk of history rows (leading axis: generations from ``first_generation``)."""
        best, mean, dims = chunk["best_loss"], chunk["mean_loss"], chunk["best_dims"]  # (S, C), (S, C, D)
        for i in range(best.shape[0]):
            g = first_generation + i
            scalars = {}
            for c, name in enumerate(self.targets):
                scalars[f"{name}/best_loss"] = float(best[i, c])
                scalars[f"{name}/mean_loss"] = float(mean[i, c])
                for d, dim in enumerate(self.dimensions):
                    scalars[f"{name}/dims/{dim}"] = float(dims[i, c, d])
            if self.kind == "tensorboard":
                for tag, value in scalars.items():
                    self._writer.add_scalar(tag, value, g)
            else:
                self._writer.log(scalars, step=g)
        if self.kind == "tensorboard":
            self._writer.flush()

    def close(self) -> None:
        if self.kind == "tensorboard":
            self._writer.close()
        else:
            self._writer.finish()


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`align`: what was kept and how to continue.

    Raised for a Ctrl-C at any point of the run once ``out`` is checked: during the loop, or
    before it (rendering, baselines, compiling: ``generation`` is then -1 and ``phase`` says
    what was under way); :meth:`explain` says how to continue or start again.

    Attributes:
      generation: generations completed when the run stopped (of ``total``); -1 before the loop.
      checkpoint: the generation of the newest checkpoint kept on disk (``None``: none yet).
      checkpoint_dir: where the checkpoints are (``None`` without ``out=``).
      partial: the folder holding the partial results (best prompt so far, ``results.json``
        marked ``"partial": true``), or ``None`` when none were written.
      phase: the last phase the run announced (``"compiling the optimizer loop..."``), set for
        an interrupt before the loop; else ``None``.
    """

    def __init__(self, generation: int, total: int, checkpoint: int | None,
                 checkpoint_dir: str | None, partial: str | None = None, state: Any = None,
                 history: Any = None):
        super().__init__(f"interrupted after generation {generation} of {total}")
        self.generation, self.total, self.checkpoint = generation, total, checkpoint
        self.checkpoint_dir, self.partial = checkpoint_dir, partial
        self.state, self.history = state, history
        self.phase: str | None = None  # what the run was doing, for an interrupt before the loop

    def explain(self, resume_command: str | None = None) -> str:
        """Several lines for the user: what is kept and how to continue (the ``resume_command``
        given, else the ``align(...)`` call with ``resume=True``)."""
        if self.generation < 0:  # before the loop: rendering, baselines, compiling
            during = f" (while {self.phase.rstrip('.')})" if self.phase else ""
            lines = [f"interrupted before the first generation{during}." if self.checkpoint is None else
                     f"interrupted before the run went on from generation {self.checkpoint}{during}."]
        else:
            lines = [f"interrupted after generation {self.generation} of {self.total}."]
        if self.checkpoint is not None:
            lines.append(f"kept: the checkpoint of generation {self.checkpoint} in {self.checkpoint_dir}")
        else:
            lines.append("no checkpoint had been written yet: the run starts again from the beginning")
        if self.partial is not None:
            lines.append(f"partial results (best prompt so far, marked partial) in {self.partial}")
        if self.checkpoint is not None or self.checkpoint_dir is not None:
            lines.append("continue with:" if self.checkpoint is not None else "start it again with:")
            lines.append(f"  {resume_command}" if resume_command else
                         "  the same align(...) call with resume=True")
        return "\n".join(lines)


def score(
    lm: LM,
    *,
    soft_prompt: np.ndarray | str | os.PathLike | None = None,
    system: str | None = None,
    target: Target | str | Mapping[str, float] | None = None,
    instrument: Instrument | None = None,
    readout: str | None = None,
    slot: str | None = None,
    seed: int = 0,
    mesh: Any = None,
    allow_mismatch: bool = False,
    chat_date: str | None = None,
) -> Scores:
    """Scores one prompt: the plain model, a system text, a soft prompt, or both.

    Args:
      soft_prompt: ``(K, d)`` array or a ``.safetensors`` file from :func:`align`; a file is read
        by :func:`jaxalign.saved_prompt.load_prompt` (provenance checked) and its stored readout,
        slot, system text and chat date are used unless given here.
      system: system text (e.g. a persona) before the soft prompt.
      target: computes the loss against it (a Target, a country, or ``"PDI=..."``).
      allow_mismatch: a prompt file tuned on another model, wording or slot is used with a
        warning (:func:`jaxalign.softprompt.prompt_provenance`); ``True`` records it as the
        caller's choice. A prompt of another width is always refused.
      chat_date: the date a chat template that reads today's date renders (``YYYY-MM-DD``);
        default: the one stored with the soft prompt, else the one bound to ``lm``, else today.

    Returns:
      :class:`~jaxalign.scoring.Scores` for a population of one: ``probs (1, Q, 5)``,
      ``item_means (1, Q)``, ``dims (1, D)``, ``loss (1,)``.
    """
    from jaxalign.saved_prompt import load_prompt

    instrument = instrument or vsm13()
    if soft_prompt is not None and not isinstance(soft_prompt, (str, os.PathLike)) and not np.shape(soft_prompt)[0]:
        soft_prompt = None  # a (0, d) array: the plain model
    loaded = load_prompt(soft_prompt, lm, instrument=instrument, slot=slot, allow_mismatch=allow_mismatch,
                         chat_date=chat_date)
    prompt = loaded.vectors if loaded.vectors is not None else np.zeros((0, lm.config.hidden_size), np.float32)
    if target is not None and not isinstance(target, Target):
        target = resolve_target(target)
    scorer = make_scorer(
        loaded.lm, instrument, k=prompt.shape[0], target=target,
        system=system if system is not None else loaded.system, slot=loaded.slot,
        readout=readout or loaded.readout or "expected", seed=seed, mesh=mesh,
    )
    return scorer(prompt[None])  # (1, K, d)


def plot_dims(result: AlignResult, path: str | os.PathLike) -> None:
    """Bar chart of the six dimensions (target, each baseline, the aligned prompt) saved to ``path``.

    Drawn without pyplot (:func:`jaxalign.plots.dims_figure`), so the user's matplotlib backend
    is never switched.
    """
    from jaxalign.plots import dims_figure, save_figure

    save_figure(dims_figure(result.to_json()), path)


def plot_targets(results: Sequence[AlignResult], path: str | os.PathLike) -> None:
    """Model vs target score per dimension, one point per target: the aligned prompt and each
    baseline (the diagonal is a perfect match; targets missing a dimension are left out there).

    Drawn without pyplot, so the user's matplotlib backend is never switched."""
    from matplotlib.figure import Figure

    from jaxalign.plots import save_figure

    dimensions = results[0].dimensions
    names = ["aligned"] + list(results[0].baselines)
    n_cols = min(3, len(dimensions))
    n_rows = -(-len(dimensions) // n_cols)
    fig = Figure(figsize=(4 * n_cols, 3.6 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    markers = {"aligned": "o", "naive": "x", "persona": "^", "icl": "s"}
    for j, dim in enumerate(dimensions):
        ax = axes[j // n_cols][j % n_cols]
        target = np.array([float(r.target.values[j]) for r in results])
        ok = ~np.isnan(target)
        for name in names:
            model = np.array([float(r.dims[j]) if name == "aligned" else
                              float(r.baselines[name].dims[j]) if name in r.baselines else np.nan
                              for r in results])
            ax.scatter(target[ok], model[ok], s=18, marker=markers.get(name, "o"), label=name,
                       alpha=0.8)
        if ok.any():
            low, high = float(np.nanmin(target)), float(np.nanmax(target))
            ax.plot([low, high], [low, high], color="black", linewidth=0.6)
        if ok.sum() <= 8:
            for r, x in zip([r for r, k in zip(results, ok) if k], target[ok]):
                ax.annotate(r.target.code or r.target.name, (x, float(r.dims[j])), fontsize=6)
        ax.set_title(dim)
        ax.set_xlabel("target")
        ax.set_ylabel("model")
    for j in range(len(dimensions), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].axis("off")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{results[0].model}: model vs target, {len(results)} targets")
    fig.tight_layout()
    save_figure(fig, path)
