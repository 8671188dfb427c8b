"""The Python API behind ``jaxalign align`` and ``jaxalign score``.

>>> lm = jaxalign.load_model("tiny-random")
>>> result = jaxalign.align(lm, "China", generations=50, population=32)
>>> result.loss, result.baselines["naive"].loss
>>> result.save("runs/china")   # results.json, soft_prompt.safetensors, dims.png
>>> several = jaxalign.align(lm, ["China", "India", "Saudi Arabia"], generations=50)
>>> several["India"].loss, several.table()

Every entry point (``align``, ``gradient_align``, ``align_both_orders``) runs
:func:`run_pipeline`, which sets up the problem and runs the one loop of
:mod:`jaxalign.optimize.pipeline`. This module is the facade: the pieces live in their own
modules, which know nothing of it, and their public names are re-exported here::

    jaxalign.config        AlignConfig, PRESETS                 (what to run)
    jaxalign.search_space  initial_prompt, search_space          (where to search)
    jaxalign.optimize.resume  check_out_dir, check_resume, ...      (run folders, resuming)
    jaxalign.progress      RunProgress, RunLog, RunInterrupted   (what the user sees while it runs)
    jaxalign.results       AlignResult, AlignResults, plots      (what comes back)
    jaxalign.optimize.pipeline   the one loop (DE, Adam, hybrid; one or several targets)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxalign.config import (  # noqa: F401  (re-exported: jaxalign.api.AlignConfig, ...)
    INIT_SCALE,
    MAX_K,
    MAX_POPULATION,
    PRESETS,
    AlignConfig,
)
from jaxalign import optimizers, tuning
from jaxalign.model import LM
from jaxalign.parallel import is_main_process, shared_text, sync_processes
from jaxalign.scoring import Scores, make_scorer
from jaxalign.prompting.chat_formats import bind_run_date
from jaxalign.survey import Instrument, Target, resolve_target, vsm13
from jaxalign.progress import (  # noqa: F401
    LOGGERS, RunInterrupted, RunLog, RunProgress, check_logger, sigterm_as_interrupt)
from jaxalign.results import AlignResult, AlignResults, plot_dims, plot_targets, target_folder  # noqa: F401
from jaxalign.optimize.resume import (  # noqa: F401
    CHECKPOINT_FOLDER,
    RESUMABLE_CHANGES,
    latest_record,
    check_out_dir,
    check_resume,
    resume_differences,
    resume_refusal,
)
from jaxalign.search_space import SPACE_FILE, initial_prompt, saved_search_space, search_space  # noqa: F401
from jaxalign.survey.targets import check_reachable


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
    """Tunes a soft prompt (or, with ``intervention="steering"``, a steering vector added after
    block ``layer``) so that ``lm``'s survey answers give ``target``'s dimension scores.

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
        (``align(lm, "China", generations=100)``; ``method="gradient"`` runs Adam;
        ``intervention="steering", layer=L`` tunes a steering vector ``(d,)`` through the same
        loop, optimizers, objectives and presentations: :mod:`jaxalign.tuning`).
      out: folder for checkpoints and, at the end, ``results.json``,
        ``soft_prompt.safetensors`` (a steering run: ``steering.safetensors``) and ``dims.png`` (for a list of targets: one sub-folder per
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

    Raises:
      RunInterrupted: Ctrl-C, or SIGTERM (preemption, a batch scheduler) while SIGTERM has its
        default handler (:func:`jaxalign.progress.sigterm_as_interrupt`), during the run: the
        checkpoint is kept and, with ``out``, the best prompt so far is written as partial results.

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
    from jaxalign.survey.item_pairs import item_pair_half
    from jaxalign.survey.presentations import option_orders

    t_start = time.perf_counter()
    instrument = item_pair_half(instrument or vsm13(), config.item_pairs)  # the indices the run tunes
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
    # what is tuned: its model-dependent defaults (a steering run's layer) filled in and checked
    # before anything is rendered, so a resume compares the settings the run really used
    config = tuning.get(config.intervention).resolve(config, lm)
    if resume:  # changed settings are refused before anything is rendered or compiled
        check_resume(out_dir, config, targets, instrument=instrument, model=lm.name,
                     dtype=str(np.dtype(lm.dtype)))
    unit = optimizers.get(config.method).unit
    folder = _RunFolder(out_dir) if out_dir is not None else None
    checkpoint_dir = None if out_dir is None else str((out_dir / CHECKPOINT_FOLDER).resolve())
    report = None
    restore_sigterm = sigterm_as_interrupt()  # a preempted run (SIGTERM) stops as Ctrl-C does
    try:
        run_log = None
        if log is not None and is_main_process():
            run_log = RunLog(log, out_dir / "logs", targets=[t.name for t in targets],
                             dimensions=instrument.dimensions, config=config.to_dict())
        report = RunProgress(0, enabled=progress if is_main_process() else False, unit=unit, log=run_log)
        n_items = len(instrument.items) * len(option_orders(config.orders)) * (1 + len(config.extra_wordings))
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
    finally:
        restore_sigterm()


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
    latest = latest_record(out_dir)
    if latest is None:
        return
    differences = resume_differences(latest[1].get("fingerprint", {}), problem.fingerprint(),
                                     problem.instrument.dimensions)
    if differences:
        raise ValueError(resume_refusal(out_dir / CHECKPOINT_FOLDER, differences))


def fix_chat_date(lm: LM, config: AlignConfig, resume_from: Path | None = None) -> tuple[LM, AlignConfig]:
    """Binds one date for the whole run when ``lm``'s chat template reads today's date.

    The date is ``config.chat_date`` if set, else (resuming from ``resume_from``) the date the
    checkpointed run recorded, else today, as process 0 reads it (every process of a
    several-process run renders the same tokens); the returned config records it. A template that does
    not read the date leaves both unchanged.
    """
    date = config.chat_date or (_checkpointed_chat_date(resume_from) if resume_from else None)
    lm, date = bind_run_date(lm, date)
    # one date for every process: each host reads its own clock, which can differ across midnight
    shared = shared_text(date)
    if shared != date:
        lm, date = bind_run_date(lm, shared)
    return lm, config if date is None else dataclasses.replace(config, chat_date=date)


def _checkpointed_chat_date(out_dir: Path) -> str | None:
    """The ``chat_date`` in the latest checkpoint's fingerprint under ``out_dir`` (None if none)."""
    latest = latest_record(Path(out_dir))
    return None if latest is None else latest[1].get("fingerprint", {}).get("chat_date")


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
    orders: str = "one",
    wordings: Sequence[Instrument] = (),
    option_order: Sequence[int] | None = None,
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
      orders: the option orders to score each item in (``"one"``, ``"both"``, ``"cyclic"``;
        :mod:`jaxalign.survey.presentations`), each of ``instrument`` and ``wordings`` in every
        order; answers, item means and dims are averaged over these presentations (answers
        mapped back to the answer codes first) and the loss is the L1 of the averaged dims.
      option_order: score one presentation with the options in this order instead (original
        codes in the order shown, e.g. ``(5, 4, 3, 2, 1)``); not with ``orders`` other than "one".

    Returns:
      :class:`~jaxalign.scoring.Scores` for a population of one: ``probs (1, Q, 5)``,
      ``item_means (1, Q)``, ``dims (1, D)``, ``loss (1,)``.
    """
    import jax.numpy as jnp

    from jaxalign.survey import l1_loss
    from jaxalign.survey.presentations import average_presentations, presentations

    from jaxalign.saved_prompt import load_prompt

    instrument = instrument or vsm13()
    if soft_prompt is not None and not isinstance(soft_prompt, (str, os.PathLike)) and not np.shape(soft_prompt)[0]:
        soft_prompt = None  # a (0, d) array: the plain model
    loaded = load_prompt(soft_prompt, lm, instrument=instrument, slot=slot, allow_mismatch=allow_mismatch,
                         chat_date=chat_date)
    prompt = loaded.vectors if loaded.vectors is not None else np.zeros((0, lm.config.hidden_size), np.float32)
    if target is not None and not isinstance(target, Target):
        target = resolve_target(target)
    if option_order is not None and (orders != "one" or wordings):
        raise ValueError("option_order scores one presentation: give it without orders or wordings")
    shown = presentations(instrument, orders, tuple(wordings))
    scores = [make_scorer(
        loaded.lm, p.instrument, k=prompt.shape[0], target=target,
        system=system if system is not None else loaded.system, slot=loaded.slot,
        readout=readout or loaded.readout or "expected", seed=seed, mesh=mesh,
        option_order=tuple(option_order) if option_order is not None else p.option_order,
    )(prompt[None]) for p in shown]  # (1, K, d) each
    if len(scores) == 1:
        return scores[0]
    dims = average_presentations([s.dims for s in scores])                      # (1, D)
    loss = l1_loss(dims, target.values) if target is not None else scores[0].loss
    return Scores(probs=average_presentations([s.probs for s in scores]),
                  item_means=average_presentations([s.item_means for s in scores]), dims=dims,
                  loss=jnp.reshape(jnp.asarray(loss, jnp.float32), (1,)))


# ------------------------------------------------------------------ thin entry points of the pipeline
def gradient_align(
    lm: Any,
    target: Any,
    *,
    instrument: Any = None,
    config: Any = None,
    learning_rate: float | None = None,
    progress: bool = False,
    scorer_options: Mapping[str, Any] | None = None,
    **overrides: Any,
):
    """Tunes a soft prompt with Adam on the ``expected``-readout L1 loss; returns an ``AlignResult``.

    A thin entry point over :mod:`jaxalign.optimize.pipeline` with ``config.method = "gradient"``
    (also reachable as ``jaxalign.align(lm, target, method="gradient")``).

    Args:
      lm: the frozen model (:func:`jaxalign.load_model`).
      target: a Target, a country name or code, ``"PDI=80,..."`` or a mapping; or a list of
        them (one Adam run per target, all in one compiled program; returns a list).
      instrument: the survey (default: the built-in VSM 2013 wording).
      config: an :class:`~jaxalign.AlignConfig`: ``k``, ``subspace``, ``init_text``, ``seed``,
        ``slot``, ``system`` set the parameterisation; ``population * (generations + 1)`` the
        forward-pass budget (:func:`jaxalign.optimizers.adam.gradient_steps`); ``readout`` the readout of the returned
        scores; ``baselines`` the baselines scored. Strategy fields are ignored.
      learning_rate: Adam's step size (units: see :mod:`jaxalign.optimizers.adam`); ``None`` keeps
        ``config.learning_rate`` (default ``AlignConfig``'s, 0.1).
      progress: show a progress bar over steps.
      scorer_options: extra :func:`jaxalign.scoring.make_scorer` arguments (e.g. ``n_buckets``);
        they change speed and memory, not the numbers.
      overrides: replace fields of ``config``.

    Returns:
      :class:`~jaxalign.AlignResult`: ``soft_prompt (K, d)``, ``dims (D,)`` and ``loss`` under
      ``config.readout``; ``history`` per step (row 0 = the starting prompt): ``best_loss``
      (best-so-far training loss), ``mean_loss`` (the training loss of that step's iterate),
      ``best_dims``; ``evaluations``: ``steps`` times the measured cost of a step in forward
      passes (``cost``).
    """
    fields: dict[str, Any] = {"method": "gradient"}
    if learning_rate is not None:  # None keeps the configured step size
        fields["learning_rate"] = learning_rate
    return _in_memory_run(lm, target, fields, instrument=instrument, config=config, progress=progress,
                          scorer_options=scorer_options, overrides=overrides)


def _in_memory_run(lm: Any, target: Any, fields: Mapping[str, Any], *, instrument: Any, config: Any,
                   progress: bool, scorer_options: Mapping[str, Any] | None,
                   overrides: Mapping[str, Any]):
    """The pipeline without a run folder, for ``config`` with ``overrides`` then ``fields`` set:
    one result, or a list for a list of targets (the entry points below :func:`align`)."""
    config = dataclasses.replace(dataclasses.replace(config or AlignConfig(), **overrides), **fields)
    targets, several = resolve_targets(target)
    found = run_pipeline(lm, targets, instrument=instrument, config=config, progress=progress,
                         scorer_options=scorer_options)
    return found if several else found[0]


def align_both_orders(
    lm: Any,
    target: Any,
    *,
    instrument: Any = None,
    config: Any = None,
    progress: bool = False,
    scorer_options: Mapping[str, Any] | None = None,
    **overrides: Any,
):
    """:func:`jaxalign.align` with the fitness averaged over the normal and reversed option orders.

    Same parameterisation, optimizer, budget and seed as ``align(lm, target, config=config)``
    (no checkpoints): a thin entry point over :mod:`jaxalign.optimize.pipeline` with
    ``config.both_orders = True`` (the mean of the two orders' L1 losses). The
    returned :class:`~jaxalign.AlignResult` scores the best prompt on the normal order (``dims``,
    ``loss``), like ``align``; ``history["best_loss"]`` is the averaged objective.
    ``scorer_options`` go to :func:`jaxalign.scoring.make_scorer` (e.g. ``n_buckets``). A list of
    targets returns a list of results (one compiled program).
    """
    return _in_memory_run(lm, target, {"both_orders": True}, instrument=instrument, config=config,
                          progress=progress, scorer_options=scorer_options, overrides=overrides)
