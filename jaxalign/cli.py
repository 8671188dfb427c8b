"""The ``jaxalign`` command.

Each subcommand is one function ``add_<name>_command(subparsers)`` that adds its parser and
sets ``run=<function(args) -> exit code>``; :data:`COMMANDS` lists them, and ``jaxalign --help``
shows every registered one. Heavy imports (jax, the model) belong inside the ``run`` functions,
so that ``jaxalign --help`` and ``jaxalign countries`` start fast.

Bad input (ValueError, FileNotFoundError, :class:`CommandError`) is reported on stderr as
``jaxalign: error: ...`` with exit code 2 and no traceback.

With several processes (``jax.distributed``), only process 0 prints to stdout; the others
stay quiet (errors still go to every process's stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from jaxalign import __version__
from jaxalign.prompting.layout import SLOTS


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


# ------------------------------------------------------------------------------ shared arguments
def target_argument(text: str):
    """``type=`` for a ``--target`` option: a country name/alias/code or ``"DIM=value,..."``.

    Returns a :class:`jaxalign.survey.Target`. A bad value is the user's data, not a misuse of the
    command line: it raises :class:`CommandError` with the lookup's message (closest matches,
    accepted dimensions), which :func:`main` prints as one line without argparse's usage block.
    A score no answers to VSM 2013 can give (``PDI=800``) is refused the same way; one that can
    be reached but lies outside the published scores (0..112) is kept with one warning (see
    :mod:`jaxalign.survey.targets`).
    """
    from jaxalign.survey.targets import check_reachable, outside_published, published_range, resolve_target
    from jaxalign.survey.vsm13 import vsm13

    try:
        target = resolve_target(text)
        check_reachable(target, vsm13())  # every wording shares the formulas and constants
    except ValueError as error:
        raise CommandError(str(error)) from None
    far = outside_published(target)
    if far:
        low, high = published_range()
        warn_on_stderr(f"{', '.join(far)} lies outside the published Hofstede scores ({low:g}..{high:g}); "
                       "the run aims at it all the same")
    return target


def countries_argument(text: str):
    """``type=`` for ``align --country``: one country (a Target), a comma list (a list of
    Targets), or ``"all"`` (kept as the string; :func:`select_all_countries` resolves it)."""
    from jaxalign.survey.targets import resolve_target

    if text.strip().lower() == "all":
        return "all"
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise CommandError("--country is empty; give a country, a comma list, or 'all'")
    try:
        targets = [resolve_target(name) for name in names]
    except ValueError as error:
        raise CommandError(str(error)) from None
    return targets[0] if len(targets) == 1 and "," not in text else targets


def select_all_countries(min_dims: int):
    """Every Hofstede row with at least ``min_dims`` of the six dimensions (6: the 65 complete rows)."""
    from jaxalign.survey.targets import countries

    if not 1 <= min_dims <= 6:
        raise CommandError(f"--min-dims must be 1..6, got {min_dims}")
    return [t for t in countries() if int(t.mask.sum()) >= min_dims]


# ------------------------------------------------------------------------------ countries
def add_countries_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "countries",
        help="list Hofstede country scores (release 2015-08-16)",
        description=(
            "List the countries and regions of the shipped Hofstede six-dimension scores "
            "(release 2015-08-16), with their PDI, IDV, MAS, UAI, LTO and IVR scores "
            "('-' where missing). Any name, alias or code shown here is a valid --target."
        ),
    )
    parser.add_argument(
        "filter",
        nargs="?",
        default=None,
        help="keep rows whose name or code contains this text (case-insensitive); "
        "a common alias such as 'UK' or 'South Korea' also selects its row",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run_countries)


def run_countries(args: argparse.Namespace) -> int:
    from jaxalign.survey.dimensions import DIMENSIONS
    from jaxalign.survey.targets import (
        HOFSTEDE_CITATION,
        HOFSTEDE_RELEASE,
        HOFSTEDE_SOURCE,
        countries,
        hofstede,
    )

    rows = countries(args.filter)
    if not rows:
        try:  # an exact name/alias the substring test missed, else its "closest matches"
            rows = [hofstede(args.filter)]
        except ValueError as error:
            raise CommandError(f"no country matches {args.filter!r}: {error}") from None
    if args.json:
        payload = {
            "release": HOFSTEDE_RELEASE,
            "citation": HOFSTEDE_CITATION,
            "dimensions": list(DIMENSIONS),
            "countries": [{"name": t.name, "code": t.code, **t.as_dict()} for t in rows],
        }
        print(json.dumps(payload, indent=2))
        return 0
    name_width = max(len("country"), *(len(t.name) for t in rows))
    header = f"{'code':<4}  {'country':<{name_width}}" + "".join(f"{d:>5}" for d in DIMENSIONS)
    print(header)
    print("-" * len(header))
    for target in rows:
        scores = "".join(f"{_format_score(v):>5}" for v in target.values)
        print(f"{target.code:<4}  {target.name:<{name_width}}{scores}")
    print(f"\n{len(rows)} row(s). Source: {HOFSTEDE_SOURCE}.")
    return 0


def _format_score(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


# ------------------------------------------------------------------------------ align
def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="tiny-random",
        help="checkpoint folder, Hugging Face Hub id, or 'tiny-random' (the offline tiny model)",
    )
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
        help="weights and activations dtype; auto: float32 on a CPU backend (XLA:CPU has no fast "
             "bfloat16 matmul) and for tiny-random, bfloat16 on GPUs and TPUs "
             "(float16: for GPUs without bfloat16, e.g. a T4)",
    )
    parser.add_argument(
        "--quantize", default="none", choices=("none", "int8"),
        help="int8: the decoder's linear weights in int8 with per-output-channel scales "
             "(about half the memory of bfloat16); embedding and LM head stay in --dtype",
    )
    parser.add_argument(
        "--wording", default=None,
        help="JSON file with your own (e.g. the official) VSM 2013 wording; default: jaxalign's own",
    )
    add_chat_template_argument(parser)


CHAT_TEMPLATE_HELP = (
    "chat format: the checkpoint's own by default; 'plain' for base models (no chat markup), a "
    "format name (llama3, llama3.1, llama3.2, qwen2.5, mistral) or a Jinja file"
)


def add_chat_template_argument(parser: argparse.ArgumentParser) -> None:
    """``--chat-template NAME|FILE`` (see :mod:`jaxalign.prompting.chat_formats`)."""
    parser.add_argument("--chat-template", default=None, metavar="NAME|FILE", help=CHAT_TEMPLATE_HELP)


# AlignConfig's defaults, repeated here so that building the parser does not import jax
# (tests/test_cli_align.py checks that the two agree).
ALIGN_DEFAULTS = argparse.Namespace(
    k=10, subspace=64, population=32, generations=50, strategy="DifferentialEvolution",
    crossover_rate=0.9, differential_weight=0.8, dither=(0.5, 1.0), elitism=True, init_scale=None, readout="expected",
    n_respondents=100, slot="user_start", seed=0, chunk_size=10, method="de", learning_rate=0.1,
    hybrid_fraction=0.25,
)
ALIGN_PRESETS = ("paper", "de-p8", "default")  # jaxalign.api.PRESETS' names (tests check they agree)


def add_align_command(subparsers: argparse._SubParsersAction) -> None:
    defaults = ALIGN_DEFAULTS
    parser = subparsers.add_parser(
        "align",
        help="tune a soft prompt so the model's VSM 2013 answers match a target profile",
        description=(
            "Tune a soft prompt with an evolution strategy (Differential Evolution by default) so "
            "that the frozen model's VSM 2013 answers give the target's six dimension scores. "
            "Writes results.json, soft_prompt.safetensors and dims.png into --out. Several countries "
            "(--country China,India or --country all) run as one compiled program, one independent "
            "search per country: one sub-folder per country plus summary.md/json/png in --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_model_arguments(parser)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--country", type=countries_argument,
                       help="target country or region (name, alias or code); a comma list; or 'all' "
                            "(every country with all six dimensions, see --min-dims)")
    group.add_argument("--target", type=target_argument, help="custom target, e.g. 'PDI=80,IDV=20' (others left out; a score no "
                            "answers can give, such as PDI=800, is refused)")
    parser.add_argument("--min-dims", type=int, default=None,
                        help="with --country all: keep countries with at least this many of the six "
                             "dimensions (missing ones are masked in the loss; default 6)")
    parser.add_argument("--baselines", type=_baselines_argument, default=None,
                        help="baselines scored beside the aligned prompt: a comma list of naive, "
                             "persona, icl, or 'none' (default: all three)")
    parser.add_argument("--out", required=True, help="output folder (checkpoints and results)")
    parser.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    parser.add_argument("--generations", type=int, default=defaults.generations,
                        help="optimizer generations after the initial population (Adam: the same "
                             "forward-pass budget in steps)")
    parser.add_argument("--population", type=int, default=argparse.SUPPRESS,
                        help="soft prompts scored per generation (all in one batched pass; default: "
                             f"{defaults.population}, or the --preset's)")
    parser.add_argument("-k", "--k", type=int, default=defaults.k, help="soft-prompt length (virtual tokens)")
    parser.add_argument(
        "--subspace", type=int, default=defaults.subspace,
        help="search a random subspace of this dimension (0: the full K x d space)",
    )
    parser.add_argument(
        "--method", default=defaults.method, choices=("de", "gradient", "hybrid"),
        help="de: the evosax --strategy; gradient: Adam on the expected-readout loss with the same "
             "forward-pass budget (a backward pass counted as two forwards); hybrid: the --strategy "
             "for --hybrid-fraction of the budget, then Adam from its best prompt")
    parser.add_argument(
        "--preset", default=None, choices=ALIGN_PRESETS,
        help="named optimizer settings (strategy, crossover rate, differential weight, dither, "
             "elitism, init scale; de-p8 also the population): 'paper' replicates the paper's plain DE; "
             "'de-p8' is that DE with 8 members and spread 2, the best DE of the tiny-model study at an "
             "equal budget (give it twice the generations of P 16); options given explicitly win")
    parser.add_argument("--strategy", default=argparse.SUPPRESS,
                        help=f"evosax algorithm name (default: {defaults.strategy})")
    parser.add_argument("--crossover-rate", type=float, default=argparse.SUPPRESS,
                        help=f"DE's CR (default: {defaults.crossover_rate})")
    parser.add_argument("--differential-weight", type=float, default=argparse.SUPPRESS,
                        help=f"DE's F when --dither is none (default: {defaults.differential_weight})")
    parser.add_argument(
        "--dither", type=_float_pair, default=argparse.SUPPRESS, metavar="FMIN,FMAX",
        help="draw the differential weight uniformly in [FMIN, FMAX] each generation; 'none' keeps it "
             f"fixed (default: {_pair_text(defaults.dither)})",
    )
    parser.add_argument(
        "--elitism", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
        help="DE's base vector: --elitism builds every mutant on the current best member "
             "(DE/best/1/bin, the paper's), --no-elitism on a random member (DE/rand/1/bin; "
             f"default: {'--elitism' if defaults.elitism else '--no-elitism'})")
    parser.add_argument("--init-scale", type=float, default=argparse.SUPPRESS,
                        help="spread of the initial population, in embedding standard deviations "
                             "(default: 1.0 for DifferentialEvolution and the other strategies; "
                             "benchmarks/RESULTS.md has the sweep behind it)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help="Adam's step size for --method gradient/hybrid (units of --init-scale)")
    parser.add_argument("--both-orders", action="store_true",
                        help="tune on the mean loss of the normal and the reversed answer order")
    parser.add_argument("--extra-wording", action="append", default=[], metavar="FILE",
                        help="also tune on this JSON wording file (repeatable; the loss is the mean over "
                             "all presentations); the project's held-out wording is refused")
    parser.add_argument("--hybrid-fraction", type=float, default=defaults.hybrid_fraction,
                        help="share of the forward-pass budget --method hybrid spends on --strategy")
    parser.add_argument("--init-text", default=None, help="initialise the soft prompt from this text's embeddings")
    parser.add_argument("--readout", default=defaults.readout, choices=("expected", "argmax", "sample"),
                        help="how an item's answer distribution becomes its score: the expected "
                             "answer, the most likely one, or the mean of sampled respondents")
    parser.add_argument("--respondents", type=int, default=defaults.n_respondents,
                        help="respondents per item for --readout sample")
    parser.add_argument("--slot", default=defaults.slot, choices=SLOTS,
                        help="soft-prompt position: user_start (default), system, or item first: "
                             "after_item (before the answer instruction) or user_end (after it, the "
                             "fastest to score)")
    parser.add_argument("--system", default=None, help="system text placed before the soft prompt")
    parser.add_argument("--chat-date", default=None, metavar="YYYY-MM-DD",
                        help="date rendered by a chat template that writes today's date (Llama-3.2); "
                             "default: today, or the resumed run's date")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the initial prompt, the subspace and the optimizer")
    parser.add_argument("--chunk-size", type=int, default=defaults.chunk_size,
                        help="generations per on-device chunk (progress and checkpoints in between)")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="write a checkpoint every N generations (default: after every chunk)")
    parser.add_argument("--members-per-pass", type=_members_per_pass, default=None,
                        help="population members per forward pass when memory is short (default: all at "
                             "once); 'auto': the largest slice that fits the device's free memory")
    parser.add_argument("--log", default=None, choices=("tensorboard", "wandb"),
                        help="stream each generation's losses and dims to TensorBoard (event files "
                             "in OUT/logs; needs tensorboardX) or wandb (needs wandb); default: none")
    parser.add_argument("--no-progress", action="store_true",
                        help="one plain line per chunk on stderr instead of a progress bar (the "
                             "default is a bar on a terminal, plain lines otherwise)")
    _add_mesh_arguments(parser)
    parser.set_defaults(run=run_align)


def _members_per_pass(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def _baselines_argument(text: str) -> tuple[str, ...]:
    from jaxalign.baselines import BASELINES

    if text.strip().lower() == "none":
        return ()
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)} or 'none'")
    return names


def _pair_text(pair: tuple[float, float] | None) -> str:
    return "none" if pair is None else f"{pair[0]},{pair[1]}"


def preset_settings(args: argparse.Namespace) -> dict:
    """The optimizer fields of ``align``'s config (and the population): ``--preset``'s values (or
    the defaults), then the options given explicitly."""
    from jaxalign.api import PRESETS

    settings = dict(strategy=ALIGN_DEFAULTS.strategy, crossover_rate=ALIGN_DEFAULTS.crossover_rate,
                    differential_weight=ALIGN_DEFAULTS.differential_weight, dither=ALIGN_DEFAULTS.dither,
                    elitism=ALIGN_DEFAULTS.elitism, init_scale=ALIGN_DEFAULTS.init_scale,
                    population=ALIGN_DEFAULTS.population)
    settings.update(PRESETS[args.preset or "default"])
    # these options default to argparse.SUPPRESS: present in args only when given
    settings.update({k: getattr(args, k) for k in settings if hasattr(args, k)})
    return settings


def _float_pair(text: str) -> tuple[float, float] | None:
    if text.strip().lower() == "none":
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers 'FMIN,FMAX', got {text!r}") from None
    return low, high


def run_align(args: argparse.Namespace) -> int:
    _start_distributed(args)  # before jaxalign.api: importing evosax starts the XLA backend
    from jaxalign.api import AlignConfig, align, check_logger, check_out_dir, check_resume, resolve_targets
    from jaxalign.optimize.pipeline import tuning_wording

    config = AlignConfig(
        k=args.k,
        subspace=None if args.subspace == 0 else args.subspace,
        generations=args.generations,
        **preset_settings(args),
        method=args.method,
        learning_rate=args.learning_rate,
        hybrid_fraction=args.hybrid_fraction,
        both_orders=args.both_orders,
        extra_wordings=tuple(args.extra_wording),
        readout=args.readout,
        n_respondents=args.respondents,
        slot=args.slot,
        system=args.system,
        init_text=args.init_text,
        seed=args.seed,
        chunk_size=args.chunk_size,
        checkpoint_every=args.checkpoint_every,
        members_per_pass=args.members_per_pass,
        **({} if args.baselines is None else {"baselines": args.baselines}),
        chat_date=args.chat_date,
    )
    target = args.country or args.target
    if args.min_dims is not None and target != "all":
        raise CommandError("--min-dims only applies to --country all")
    if target == "all":
        target = select_all_countries(6 if args.min_dims is None else args.min_dims)
    # everything that can be checked without the model is checked before it loads; --out is
    # created only when the run starts (a refused or failed run leaves no folder behind)
    check_out_dir(args.out, resume=args.resume, cli=True)
    instrument = _instrument(args.wording)
    for path in config.extra_wordings:
        tuning_wording(path, instrument)
    if args.log is not None:
        check_logger(args.log)
    if args.resume:  # settings changed since the checkpoint: refused now, not after the load
        check_resume(args.out, config, resolve_targets(target)[0], instrument=instrument, model=args.model,
                     dtype=None if args.dtype == "auto" else args.dtype, cli=True)
    mesh = _mesh(args)
    lm = _load(args.model, args.dtype, mesh, args.quantize, args.chat_template)
    result = align(lm, target, instrument=instrument, config=config, out=args.out,
                   resume=args.resume, progress="lines" if args.no_progress else True, mesh=mesh,
                   log=args.log)
    if isinstance(target, list):
        print(f"{len(result)} targets; model {lm.name}; wording {instrument.wording}; readout {config.readout}")
        print(result.table())
        print(f"wall {result[0].wall_s:.1f} s (optimizer compile {result[0].compile_s:.1f} s); "
              f"wrote {args.out}/<country>/ and summary.md, summary.json, summary.png")
        return 0
    print(f"target {target.name}; model {lm.name}; wording {instrument.wording}; readout {config.readout}"
          + (f"; chat template {result.chat_template}" if result.chat_template else "")
          + (f"; chat date {result.config.chat_date}" if result.config.chat_date else ""))
    print(_dims_table(instrument.dimensions, [("target", target.values)]
                      + [(n, b.dims, b.loss) for n, b in result.baselines.items()]
                      + [("aligned", result.dims, result.loss)]))
    print(f"wall {result.wall_s:.1f} s (optimizer compile {result.compile_s:.1f} s); wrote {args.out}")
    return 0


def _instrument(wording: str | None):
    from jaxalign.survey import vsm13

    return vsm13(wording=wording)


def _add_mesh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mesh", default=None, metavar="data=N,model=M",
        help="device mesh: population over 'data', weights over 'model' (N x M = all devices of all "
             "hosts); default: every device on the data axis",
    )
    parser.add_argument(
        "--distributed", action="store_true",
        help="call jax.distributed.initialize() first (multi-host; detected by itself on TPU pod "
             "slices, SLURM and Open MPI)",
    )


def _start_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize()`` for --distributed or a multi-host launch; must come first."""
    from jaxalign import parallel

    parallel.initialize_distributed(force=True if args.distributed else None)


def _mesh(args: argparse.Namespace):
    """The mesh of --mesh/--distributed; ``None`` on a single device without --mesh."""
    import jax

    from jaxalign import parallel

    _start_distributed(args)
    if args.mesh is None and len(jax.devices()) == 1:
        return None
    sizes = parallel.parse_mesh(args.mesh) if args.mesh is not None else {}
    mesh = parallel.make_mesh(sizes.get("data"), sizes.get("model", 1))
    if parallel.is_main_process():  # a diagnostic: stdout is kept for the result (e.g. --json)
        print(f"mesh {parallel.describe_mesh(mesh)}", file=sys.stderr)
    return mesh


def _load(model: str, dtype: str, mesh=None, quantize: str = "none", chat_template: str | None = None):
    from jaxalign.model import load_model
    from jaxalign.prompting.chat_formats import resolve_chat_template, with_chat_format

    if chat_template is not None:
        resolve_chat_template(chat_template)  # a bad name or file fails before the weights load
    chosen = ""
    if dtype == "auto":
        from jaxalign.model.loader import auto_dtype

        dtype = auto_dtype(model, mesh)
        chosen = ", chosen by --dtype auto for this backend"
    _note(f"loading weights: {model} ({dtype}{'' if quantize == 'none' else ', ' + quantize}{chosen})")
    if model == "tiny-random":
        _note("note: tiny-random has random weights: its dims mean nothing cultural (it tests the "
              "machinery); pass --model with a real chat model for real figures")
    t0 = time.perf_counter()
    lm = load_model(model, dtype=dtype, mesh=mesh, quantize=None if quantize == "none" else quantize)
    from jaxalign.memory import weight_bytes_per_device

    _note(f"loaded {lm.config.num_parameters / 1e6:,.1f} M parameters "
          f"({weight_bytes_per_device(lm.params) / 2**20:,.1f} MiB per device) "
          f"in {time.perf_counter() - t0:.1f} s")
    return lm if chat_template is None else with_chat_format(lm, chat_template)


def _note(text: str) -> None:
    """A diagnostic line on stderr (process 0 only): never mixed into stdout's results."""
    jax = sys.modules.get("jax")
    if jax is not None and jax.distributed.is_initialized() and jax.process_index() != 0:
        return
    print(text, file=sys.stderr, flush=True)


def _dims_table(dimensions, rows) -> str:
    width = max(10, *(len(row[0]) + 2 for row in rows))
    header = " " * width + "".join(f"{d:>8s}" for d in dimensions) + f"{'L1':>8s}"
    lines = [header]
    for row in rows:
        name, values = row[0], row[1]
        loss = row[2] if len(row) > 2 else float("nan")
        cells = "".join(f"{_format_score(float(v)):>8s}" for v in values)
        lines.append(f"{name:{width}s}{cells}{_format_score(float(loss)):>8s}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ score
def add_score_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score the model (optionally with a soft prompt or persona) on VSM 2013",
        description=(
            "Print the six VSM 2013 indices and the answer distribution per item for the model, "
            "with an optional soft prompt (from 'jaxalign align') and/or system text; with a "
            "target, also the L1 loss."
        ),
    )
    _add_model_arguments(parser)
    parser.add_argument("--soft-prompt", default=None, help="soft_prompt.safetensors written by 'jaxalign align'")
    parser.add_argument("--persona", default=None, help="system text, e.g. 'You are a person from Japan.'")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--country", type=target_argument, help="target country for the loss")
    group.add_argument("--target", type=target_argument, help="custom target for the loss, 'PDI=80,...'")
    parser.add_argument("--readout", default=None, choices=("expected", "argmax", "sample"),
                        help="default: the soft prompt's own, else 'expected'")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_allow_mismatch_argument(parser)
    _add_mesh_arguments(parser)
    parser.set_defaults(run=run_score)


def add_allow_mismatch_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-mismatch", action="store_true",
        help="use a soft prompt tuned on another model, wording or slot as your explicit choice "
             "(recorded in the output); without it such a prompt is used with a warning. A prompt "
             "of another hidden size is always refused")


def warn_on_stderr(message: str) -> None:
    """A diagnostic line on stderr (stdout is kept for results, e.g. --json)."""
    print(f"jaxalign: warning: {message}", file=sys.stderr)


def _weights_types(lm) -> dict | None:
    """``{"format": "gguf", "tensor_types": {ggml type: count}}`` for a GGUF model (its
    quantisation, from the file's header), ``None`` for other models."""
    from pathlib import Path

    source = getattr(lm, "source", None)
    if source is None or Path(source).suffix.lower() != ".gguf":  # the rule of model_fingerprint
        return None
    from jaxalign.model.gguf import read_gguf

    return {"format": "gguf", "tensor_types": dict(read_gguf(source).tensor_types)}


def run_score(args: argparse.Namespace) -> int:
    _start_distributed(args)
    from jaxalign.api import score
    from jaxalign.prompting.chat_formats import chat_template_name
    from jaxalign.saved_prompt import load_prompt

    instrument = _instrument(args.wording)
    mesh = _mesh(args)
    # file and width errors before the weights load; then provenance and the prompt's own date
    loaded = load_prompt(args.soft_prompt, lambda: _load(args.model, args.dtype, mesh, args.quantize,
                                                         args.chat_template),
                         model=args.model, instrument=instrument, allow_mismatch=args.allow_mismatch,
                         warn=warn_on_stderr)
    lm, chat_date, provenance = loaded.lm, loaded.chat_date, loaded.provenance
    target = args.country or args.target
    scores = score(lm, soft_prompt=loaded.vectors, system=args.persona or loaded.system,
                   target=target, instrument=instrument, slot=loaded.slot,
                   readout=args.readout or loaded.readout or "expected", mesh=mesh)
    dims = [float(v) for v in scores.dims[0]]
    probs = [[round(float(p), 6) for p in row] for row in scores.probs[0]]
    weights = _weights_types(lm)
    if args.json:
        out = {
            "model": lm.name,
            "weights": weights,
            "wording": instrument.wording,
            "chat_template": chat_template_name(lm.tokenizer),
            "chat_date": chat_date,
            "dims": dict(zip(instrument.dimensions, dims)),
            "item_means": dict(zip(instrument.item_ids, (float(v) for v in scores.item_means[0]))),
            "answers": probs,
        }
        if target is not None:
            out["target"] = {"name": target.name, "dims": {
                n: (None if math.isnan(v) else float(v)) for n, v in zip(target.dimensions, target.values)}}
            out["loss"] = float(scores.loss[0])
        if provenance is not None:
            out["soft_prompt_provenance"] = provenance
        print(json.dumps(out, indent=2))
        return 0
    label = " + ".join(n for n, on in (("soft prompt", args.soft_prompt), ("persona", args.persona)) if on)
    rows = [(label or "plain", dims, float(scores.loss[0]))]
    if target is not None:
        rows.insert(0, ("target", target.values))
    kinds = "" if weights is None else "; weights " + ", ".join(
        f"{kind} x{count}" for kind, count in weights["tensor_types"].items())
    print(f"model {lm.name}{kinds}; wording {instrument.wording}")
    print(_dims_table(instrument.dimensions, rows))
    print("\nitem  mean   P(1)   P(2)   P(3)   P(4)   P(5)")
    for item_id, mean, row in zip(instrument.item_ids, scores.item_means[0], probs):
        print(f"{item_id:>4s}  {float(mean):4.2f}  " + "  ".join(f"{p:5.3f}" for p in row))
    return 0


# ------------------------------------------------------------------------------ show
def add_show_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="summarise a finished or interrupted run and draw its figures",
        description=(
            "Print the summary of the run in RUN (its results.json: target, model, losses and "
            "dims per method, generations done) and write its figures into RUN: dims.png (dims "
            "per method), loss.png (best-so-far and population-mean loss per generation) and "
            "answers.png (each item's answer distribution, plain vs aligned)."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="the --out folder of 'jaxalign align'")
    parser.add_argument("--no-figures", action="store_true",
                        help="print the summary only; write no figure (default: write them)")
    parser.add_argument("--open", action="store_true",
                        help="open the figures with the system's default viewer (default: no)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as one JSON document (default: a table)")
    parser.set_defaults(run=run_show)


def run_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    run_dir = Path(args.run_dir)
    results = run_dir / "results.json"
    if not run_dir.is_dir():
        raise CommandError(f"{str(run_dir)!r} is not a folder")
    if not results.is_file():
        hint = (" It holds a checkpoint: the run was interrupted before it wrote any results; "
                "continue it with 'jaxalign align ... --resume'."
                if (run_dir / "checkpoints").exists() else "")
        raise CommandError(f"no results.json in {str(run_dir)!r}.{hint}")
    try:
        run = json.loads(results.read_text())
    except json.JSONDecodeError as error:
        raise CommandError(f"{str(results)!r} is not valid JSON: {error}") from None
    dimensions = list(run["target"]["dims"])
    best = run.get("history", {}).get("best_loss", [])
    generations = run.get("config", {}).get("generations")
    done = max(len(best) - 1, 0)
    figures = []
    if not args.no_figures:
        from jaxalign.plots import save_run_figures

        figures = [str(p) for p in save_run_figures(run, run_dir)]
    if args.json:
        print(json.dumps({
            "run": str(run_dir), "partial": bool(run.get("partial")), "model": run.get("model"),
            "target": run["target"]["name"], "generations_done": done,
            "generations": generations,
            "methods": {m: {"loss": r.get("loss"), "dims": r.get("dims")}
                        for m, r in run["methods"].items()},
            "figures": figures,
        }, indent=2))
    else:
        state = "partial (interrupted)" if run.get("partial") else "finished"
        print(f"run {run_dir}: {state}, {done} of {generations} generations")
        print(f"target {run['target']['name']}; model {run.get('model')}; "
              f"wording {run.get('wording')}; readout {run.get('config', {}).get('readout')}")

        def value(v):
            return float("nan") if v is None else float(v)

        rows = [("target", [value(run["target"]["dims"][d]) for d in dimensions])]
        for method, record in run["methods"].items():
            name = "aligned" if method == "optimized" else method
            rows.append((name, [value(record["dims"].get(d)) for d in dimensions],
                         value(record.get("loss"))))
        print(_dims_table(dimensions, rows))
        if figures:
            print("figures: " + ", ".join(figures))
    if args.open and figures:
        import webbrowser

        for path in figures:
            webbrowser.open(Path(path).resolve().as_uri())
    return 0


# ------------------------------------------------------------------------------ registry
from jaxalign.evaluate.cli import add_eval_command  # noqa: E402  (light: argparse only)
from jaxalign.generation.cli import (  # noqa: E402  (light: argparse only)
    add_chat_command,
    add_export_command,
    add_generate_command,
)

COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_countries_command,
    add_align_command,
    add_score_command,
    add_eval_command,
    add_show_command,
    add_generate_command,
    add_chat_command,
    add_export_command,
)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the sentence already states it); an
    ``examples:`` epilog keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is argparse.SUPPRESS or not action.option_strings or action.required
                or "default" in text):
            return text
        if action.default is None or action.default is False:
            shown = "off" if isinstance(action, argparse._StoreTrueAction) else "none"
        else:
            shown = "%(default)s"
        return f"{text} (default: {shown})"


# Examples at the end of each command's --help ("eval" lists its evaluations' examples too).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "countries": ("jaxalign countries", "jaxalign countries korea", "jaxalign countries --json"),
    "align": (
        "jaxalign align --country China --out runs/china",
        "jaxalign align --model meta-llama/Meta-Llama-3-8B-Instruct --country Japan --population 64 "
        "--generations 100 --out runs/japan",
        "jaxalign align --target 'PDI=80,IDV=20' --out runs/custom    # no persona baseline: "
        "a custom target names no country",
    ),
    "score": (
        "jaxalign score --country China",
        "jaxalign score --soft-prompt runs/china/soft_prompt.safetensors --country China --json",
        "jaxalign score --persona 'You are a person from Japan.' --country Japan",
    ),
    "eval": (
        "jaxalign eval culturalbench --soft-prompt runs/china/soft_prompt.safetensors --country China "
        "--data CulturalBench-Easy.csv",
        "jaxalign eval robustness --soft-prompt runs/china/soft_prompt.safetensors --country China",
    ),
    "show": ("jaxalign show runs/china", "jaxalign show runs/china --no-figures --json",
             "jaxalign show runs/china --open        # also open the figures in the image viewer"),
    "generate": (
        "jaxalign generate 'What matters most in a good job?'",
        "jaxalign generate --soft-prompt runs/china/soft_prompt.safetensors --compare",
        "jaxalign generate --model Qwen/Qwen2.5-0.5B-Instruct --temperature 0.7 --seed 1 'Hello!'",
    ),
    "chat": ("jaxalign chat", "jaxalign chat --soft-prompt runs/china/soft_prompt.safetensors"),
    "export": (
        "jaxalign export --format peft --soft-prompt runs/start/soft_prompt.safetensors --out adapter/",
        "jaxalign export --format peft --soft-prompt runs/start/soft_prompt.safetensors --out adapter/ "
        "--base-model meta-llama/Meta-Llama-3-8B-Instruct",
    ),
    "culturalbench": (
        "jaxalign eval culturalbench --country China --data CulturalBench-Easy.csv",
        "jaxalign eval culturalbench --soft-prompt runs/china/soft_prompt.safetensors --country China "
        "--set both --data data/culturalbench/",
    ),
    "robustness": (
        "jaxalign eval robustness --soft-prompt runs/china/soft_prompt.safetensors --country China",
        "jaxalign eval robustness --soft-prompt runs/c/soft_prompt.safetensors --target 'PDI=80' --json",
    ),
}


def _finish_help(parser: argparse.ArgumentParser, name: str | None) -> None:
    """Gives ``parser`` and its sub-commands the defaults-showing formatter and their examples."""
    parser.formatter_class = HelpFormatter
    if name in EXAMPLES and not parser.epilog:
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                _finish_help(sub, sub_name)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="jaxalign",
        description=(
            "Align a frozen language model (Llama, Qwen2, Mistral) with a country's Hofstede "
            "cultural profile (VSM 2013) by tuning a soft prompt, in JAX."
        ),
    )
    parser.add_argument("--version", action="version", version=f"jaxalign {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    _finish_help(parser, None)
    return parser


class _ProcessZeroStdout:
    """A stdout that drops what is written once ``jax.distributed`` says this is not process 0."""

    def __init__(self, stream):
        self._stream = stream

    def _quiet(self) -> bool:
        jax = sys.modules.get("jax")  # never import jax here: `jaxalign countries` stays light
        return jax is not None and jax.distributed.is_initialized() and jax.process_index() != 0

    def write(self, text: str) -> int:
        return len(text) if self._quiet() else self._stream.write(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _stdout_on_process_zero_only() -> Iterator[None]:
    real = sys.stdout
    sys.stdout = _ProcessZeroStdout(real)
    try:
        yield
    finally:
        sys.stdout = real


@contextlib.contextmanager
def _logged_warnings_on_stderr() -> Iterator[None]:
    """While a command runs, jaxalign's logged warnings read like its other messages
    (``jaxalign: warning: ...`` on stderr) instead of Python logging's ``WARNING:name:...``."""
    import logging

    class Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"jaxalign: {record.levelname.lower()}: {record.getMessage()}"

    logger = logging.getLogger("jaxalign")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(Formatter())
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # not twice (a root handler set up by a library would repeat it)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def resume_command(argv: Sequence[str]) -> str:
    """The command line that continues an interrupted ``jaxalign align`` (``--resume`` added)."""
    import shlex

    argv = list(argv)
    return shlex.join(["jaxalign", *argv, *([] if "--resume" in argv else ["--resume"])])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxalign`` command; returns the exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or argparse's own usage error
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except CommandError as error:  # a value argparse accepted but the lookup refused (--country)
        print(f"jaxalign: error: {error}", file=sys.stderr)
        return 2
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _stdout_on_process_zero_only(), _logged_warnings_on_stderr():
            return int(args.run(args) or 0)
    except (CommandError, ValueError, FileNotFoundError) as error:
        print(f"jaxalign: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `jaxalign countries | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as stop:
        explain = getattr(stop, "explain", None)
        if explain is None:
            print("jaxalign: interrupted", file=sys.stderr)
        else:  # jaxalign.api.RunInterrupted: say what is kept and how to continue
            print("jaxalign: " + explain(resume_command(args.argv)), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
