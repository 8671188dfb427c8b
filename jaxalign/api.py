"""The Python API behind ``jaxalign align`` and ``jaxalign score``.

>>> lm = jaxalign.load_model("tiny-random")
>>> result = jaxalign.align(lm, "China", generations=50, population=32)
>>> result.loss, result.baselines["naive"].loss
>>> result.save("runs/china")   # results.json, soft_prompt.safetensors, dims.png
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign._io import atomic_path, write_text_atomic
from jaxalign.baselines import BASELINES, BaselineResult, run_baselines
from jaxalign.model import LM
from jaxalign.parallel import gather_to_all, is_main_process, replicate, sync_processes
from jaxalign.optimize import EvolutionConfig, evolve
from jaxalign.scoring import MODES, READOUTS, Scores, check_members_per_pass, make_scorer
from jaxalign.prompting.chat_formats import bind_run_date, chat_template_name, check_date
from jaxalign.softprompt import (
    SoftPromptSpace,
    check_soft_prompt,
    full_space,
    init_from_ids,
    init_random_vocab,
    load_soft_prompt,
    save_soft_prompt,
    subspace,
)
from jaxalign.survey import Instrument, Target, resolve_target, vsm13

MAX_K = 512
MAX_POPULATION = 65536
CHECKPOINT_FOLDER = "checkpoints"


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
        The default dither (0.5, 1.0) recovered planted targets on the tiny model more reliably
        than a fixed F = 0.8 (final/initial loss 0.07 and 0.11 against 0.36 and 0.08, two seeds).
      init_scale: spread of the initial population around p0, in embedding standard deviations.
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
        divide ``population``; ``None``: the whole population at once).
      scoring_mode: ``"cached"`` (default: shared tokens computed once) or ``"full"``.
      baselines: baselines scored beside the aligned prompt.
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
    init_scale: float = 1.0
    readout: str = "expected"
    n_respondents: int = 100
    slot: str = "user_start"
    system: str | None = None
    init_text: str | None = None
    seed: int = 0
    chunk_size: int = 10
    checkpoint_every: int | None = None
    members_per_pass: int | None = None
    scoring_mode: str = "cached"
    baselines: tuple[str, ...] = BASELINES
    chat_date: str | None = None

    def __post_init__(self) -> None:
        if self.chat_date is not None:
            check_date(self.chat_date)
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
        if self.members_per_pass is not None:
            if not _is_int(self.members_per_pass) or self.members_per_pass < 1:
                raise ValueError(
                    f"members_per_pass must be None or an integer >= 1, got {self.members_per_pass!r}")
            check_members_per_pass(self.members_per_pass, self.population)
        if self.scoring_mode not in MODES:
            raise ValueError(f"unknown scoring_mode {self.scoring_mode!r}; choose one of {', '.join(MODES)}")
        self.evolution_config(1.0)  # validates the optimizer fields (strategy name, rates, ...)

    def evolution_config(self, embedding_std: float) -> EvolutionConfig:
        """The optimizer settings; ``init_scale`` is converted to search-space units."""
        scale = self.init_scale if self.subspace is not None else self.init_scale * embedding_std
        return EvolutionConfig(
            strategy=self.strategy,
            population_size=self.population,
            generations=self.generations,
            crossover_rate=self.crossover_rate,
            differential_weight=self.differential_weight,
            dither=self.dither,
            chunk_size=self.chunk_size,
            init_scale=float(scale),
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["baselines"] = list(self.baselines)
        out["dither"] = None if self.dither is None else list(self.dither)
        return out


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
      evaluations: number of prompts scored by the optimizer (forward-pass equivalents).
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
    evaluations: int
    resumed_from: int | None = None
    method: str = "de"
    s_per_generation: float = float("nan")
    chat_template: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Everything ``results.json`` holds (NaN written as null)."""

        def dims_dict(values) -> dict[str, float | None]:
            return {n: _num(v) for n, v in zip(self.dimensions, np.asarray(values, np.float64))}

        methods = {
            name: {"loss": _num(b.loss), "dims": dims_dict(b.dims), "system": b.system}
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
            "resumed_from": self.resumed_from,
            "wall_s": round(self.wall_s, 3),
            "compile_s": round(self.compile_s, 3),
            "s_per_generation": _num(round(self.s_per_generation, 5)),
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
        return {
            "model": self.model,
            "wording": self.wording,
            "readout": self.config.readout,
            "slot": self.config.slot,
            "system": self.config.system or "",
            "chat_template": self.chat_template or "",
            "chat_date": self.config.chat_date or "",
            "target": self.target.name,
            "loss": f"{self.loss:.6g}",
        }


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _version() -> str:
    from jaxalign import __version__

    return __version__


def check_out_dir(out: str | os.PathLike, *, resume: bool) -> Path:
    """Checks that ``out`` can hold a run: writable, and not holding another run unless resuming."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"cannot write to --out {str(out)!r}: {error.strerror or error}") from None
    holds_run = (out / "results.json").exists() or (out / CHECKPOINT_FOLDER).exists()
    if holds_run and not resume:
        raise ValueError(
            f"{str(out)!r} already holds a run; pass resume=True (--resume) to continue it, "
            "or choose another folder"
        )
    return out


def initial_prompt(lm: LM, k: int, *, text: str | None, seed: int) -> np.ndarray:
    """``(k, d)`` starting prompt: the embeddings of ``text``'s tokens, or random vocabulary rows."""
    if text is None:
        return np.asarray(init_random_vocab(lm.embedding_matrix, k, jax.random.key(seed)))
    if lm.tokenizer is None:
        raise ValueError("init_text needs the model's tokenizer, and this model has none")
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError("init_text is empty after tokenisation")
    return np.asarray(init_from_ids(lm.embedding_matrix, np.asarray(ids), k))


def resolve_problem(
    lm: LM, target: Target | str | Mapping[str, float], instrument: Instrument | None
) -> tuple[Target, Instrument]:
    """Checks and resolves what every alignment method needs: the target and the instrument."""
    instrument = instrument or vsm13()
    if not isinstance(target, Target):
        target = resolve_target(target)
    if tuple(target.dimensions) != tuple(instrument.dimensions):
        raise ValueError(
            f"target dimensions {target.dimensions} do not match the instrument's {instrument.dimensions}"
        )
    if lm.tokenizer is None:
        raise ValueError(f"model {lm.name!r} has no tokenizer; pass tokenizer= to load_model")
    return target, instrument


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


def result_from_evolution(
    evo: Any,
    space: SoftPromptSpace,
    scorer: Any,
    *,
    lm: LM,
    instrument: Instrument,
    target: Target,
    config: AlignConfig,
    baselines: dict[str, BaselineResult],
    t_start: float,
    method: str,
) -> AlignResult:
    """An :class:`AlignResult` for the best prompt of an evolution run, scored by ``scorer``."""
    prompt = np.asarray(space.decode(jnp.asarray(evo.best_z)))  # (K, d)
    final = scorer(prompt[None])
    return AlignResult(
        method=method,
        target=target,
        soft_prompt=prompt,
        dims=np.asarray(final.dims[0]),
        loss=float(final.loss[0]),
        probs=np.asarray(final.probs[0]),
        baselines=baselines,
        history={
            "best_loss": np.asarray(evo.history["best_loss"]).tolist(),
            "mean_loss": np.asarray(evo.history["mean_loss"]).tolist(),
            "best_dims": np.asarray(evo.history["best_aux"]).tolist(),
        },
        model=lm.name,
        wording=instrument.wording,
        dimensions=tuple(instrument.dimensions),
        config=config,
        wall_s=time.perf_counter() - t_start,
        compile_s=float(evo.compile_s),
        evaluations=int(evo.evaluations),
        resumed_from=evo.resumed_from,
        s_per_generation=float(evo.s_per_generation),
        chat_template=chat_template_name(lm.tokenizer),
    )


def align(
    lm: LM,
    target: Target | str | Mapping[str, float],
    *,
    instrument: Instrument | None = None,
    config: AlignConfig | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    mesh: Any = None,
    **overrides: Any,
) -> AlignResult:
    """Tunes a soft prompt so that ``lm``'s survey answers give ``target``'s dimension scores.

    Args:
      lm: the frozen model (:func:`jaxalign.load_model`).
      target: a :class:`~jaxalign.survey.Target`, a country name or code, ``"PDI=80,IDV=20"``
        or a mapping of dimension scores (missing dimensions are left out of the loss).
      instrument: the survey; the built-in VSM 2013 wording by default.
      config: an :class:`AlignConfig`; keyword ``overrides`` replace its fields
        (``align(lm, "China", generations=100)``).
      out: folder for checkpoints and, at the end, ``results.json``,
        ``soft_prompt.safetensors`` and ``dims.png``. ``None`` keeps everything in memory.
      resume: continue the run checkpointed in ``out``; a checkpoint of another configuration
        is refused. The resumed result equals the uninterrupted one.
      progress: show a progress bar with the best loss (on process 0 only).
      mesh: a :class:`jax.sharding.Mesh` (:func:`jaxalign.parallel.make_mesh`): the population is
        sharded over its ``"data"`` axis and the weights over ``"model"`` (load the model with
        ``load_model(..., mesh=mesh)``); the optimizer state is small and stays replicated. The
        result equals the one-device run up to float rounding. With several processes
        (:func:`jaxalign.parallel.initialize_distributed`) only process 0 writes ``out``'s
        result files; orbax writes the checkpoints from every process itself.

    Every argument is checked before anything is compiled.
    """
    t_start = time.perf_counter()
    config = dataclasses.replace(config or AlignConfig(), **overrides)
    target, instrument = resolve_problem(lm, target, instrument)
    out_dir = check_out_dir(out, resume=resume) if out is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs out= (the folder holding the checkpoints)")
    # every process checks `out` before process 0 can create its checkpoint folder there
    sync_processes("jaxalign.align: out checked")
    lm, config = fix_chat_date(lm, config, out_dir if resume else None)

    scorer = make_scorer(
        lm, instrument, k=config.k, target=target, system=config.system, slot=config.slot,
        readout=config.readout, n_respondents=config.n_respondents, seed=config.seed,
        members_per_pass=config.members_per_pass, mode=config.scoring_mode, mesh=mesh,
    )
    space, embedding_std = search_space(lm, config)
    if mesh is not None:
        space = replicate(space, mesh)  # every device decodes its own members' prompts

    baselines = run_baselines(
        lm, instrument, target, names=config.baselines, readout=config.readout, seed=config.seed
    )

    def fitness(z_pop, args):  # (P, n) -> (P,), (P, D)
        inputs, space_ = args
        z_pop = gather_to_all(z_pop, mesh)  # the optimizer's state stays replicated
        scores = scorer.score_fn(space_.decode(z_pop), inputs)
        return gather_to_all((scores.loss, scores.dims), mesh)  # the one gather per generation

    fingerprint = {
        "model": lm.name,
        "dtype": str(np.dtype(lm.dtype)),
        "wording": instrument.wording,
        "target": [_num(v) for v in np.asarray(target.values, np.float64)],
        **{key: value for key, value in config.to_dict().items()
           if key not in ("generations", "chunk_size", "checkpoint_every", "baselines")
           and not (key == "chat_date" and value is None)},
    }
    if chat_template_name(lm.tokenizer) not in (None, "model"):  # chosen with --chat-template
        fingerprint["chat_template"] = chat_template_name(lm.tokenizer)
    bar = _progress_bar(config.generations, enabled=progress and is_main_process())
    try:
        evo = evolve(
            fitness,
            (scorer.inputs, space),
            np.zeros((space.dim,), np.float32),
            config.evolution_config(embedding_std),
            checkpoint_dir=None if out_dir is None else str((out_dir / CHECKPOINT_FOLDER).resolve()),
            resume=resume,
            fingerprint=fingerprint,
            progress=bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()

    result = result_from_evolution(
        evo, space, scorer, lm=lm, instrument=instrument, target=target, config=config,
        baselines=baselines, t_start=t_start, method="de",
    )
    if out_dir is not None and is_main_process():
        result.save(out_dir)
    return result


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
    from jaxalign.optimize.checkpoint import RunCheckpointer

    folder = Path(out_dir) / CHECKPOINT_FOLDER
    if not folder.is_dir():
        return None
    checkpointer = RunCheckpointer(str(folder.resolve()))
    try:
        latest = checkpointer.latest_step()
        if latest is None:
            return None
        return checkpointer.read_record(latest).get("fingerprint", {}).get("user", {}).get("chat_date")
    finally:
        checkpointer.close()


class _progress_bar:
    """A tqdm bar over generations that shows the best loss (no-op when disabled)."""

    def __init__(self, total: int, *, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="generations", unit="gen")

    def __bool__(self) -> bool:
        return self._bar is not None

    def update(self, generations_done: int, best_loss: float) -> None:
        self._bar.n = generations_done
        self._bar.set_postfix(best_loss=f"{best_loss:.3f}")
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


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
    chat_date: str | None = None,
) -> Scores:
    """Scores one prompt: the plain model, a system text, a soft prompt, or both.

    Args:
      soft_prompt: ``(K, d)`` array or a ``.safetensors`` file from :func:`align`; its stored
        readout and slot are used unless given here.
      system: system text (e.g. a persona) before the soft prompt.
      target: computes the loss against it (a Target, a country, or ``"PDI=..."``).
      chat_date: the date a chat template that reads today's date renders (``YYYY-MM-DD``);
        default: the one stored with the soft prompt, else the one bound to ``lm``, else today.

    Returns:
      :class:`~jaxalign.scoring.Scores` for a population of one: ``probs (1, Q, 5)``,
      ``item_means (1, Q)``, ``dims (1, D)``, ``loss (1,)``.
    """
    instrument = instrument or vsm13()
    metadata: dict[str, str] = {}
    if soft_prompt is None:
        prompt = np.zeros((0, lm.config.hidden_size), np.float32)
    elif isinstance(soft_prompt, (str, os.PathLike)):
        prompt, metadata = load_soft_prompt(soft_prompt)
    else:
        prompt = np.asarray(soft_prompt, np.float32)
    if prompt.shape[0]:
        check_soft_prompt(prompt, lm.config.hidden_size)
    if target is not None and not isinstance(target, Target):
        target = resolve_target(target)
    if system is None and metadata.get("system"):
        system = metadata["system"]
    lm, _ = bind_run_date(lm, chat_date or metadata.get("chat_date") or None)
    scorer = make_scorer(
        lm, instrument, k=prompt.shape[0], target=target, system=system,
        slot=slot or metadata.get("slot", "user_start"),
        readout=readout or metadata.get("readout", "expected"), seed=seed, mesh=mesh,
    )
    return scorer(prompt[None])


def plot_dims(result: AlignResult, path: str | os.PathLike) -> None:
    """Bar chart of the six dimensions: target, each baseline and the aligned prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("target", np.asarray(result.target.values, np.float64))]
    series += [(name, np.asarray(b.dims, np.float64)) for name, b in result.baselines.items()]
    series += [("aligned", np.asarray(result.dims, np.float64))]
    n_dims = len(result.dimensions)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(1.6 * n_dims + 2, 4))
    for i, (name, values) in enumerate(series):
        xs = np.arange(n_dims) + (i - (len(series) - 1) / 2) * width
        ok = ~np.isnan(values)
        ax.bar(xs[ok], values[ok], width, label=name)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(np.arange(n_dims), result.dimensions)
    ax.set_ylabel("index (constants C as configured)")
    ax.set_title(
        f"{result.target.name}: L1 aligned {result.loss:.1f}"
        + "".join(f", {n} {b.loss:.1f}" for n, b in result.baselines.items())
    )
    ax.legend(fontsize="small", ncols=len(series))
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
