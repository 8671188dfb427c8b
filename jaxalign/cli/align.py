"""``jaxalign align``: tune a soft prompt (or a steering vector) towards one or several countries
(the API's :func:`jaxalign.align`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxalign.cli import common
from jaxalign.cli.common import (
    CommandError,
    _add_mesh_arguments,
    _add_model_arguments,
    _dims_table,
    _instrument,
    _mesh,
    _start_distributed,
    countries_argument,
    target_argument,
)
from jaxalign.cli.countries import select_all_countries
from jaxalign.prompting.layout import SLOTS


def _loss(name: str) -> str:
    """``--loss``: a registered objective kind's name."""
    from jaxalign.survey.objectives import objective_kind

    try:
        objective_kind(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


# AlignConfig's defaults, repeated here so that building the parser does not import jax
# (tests/test_optimizers.py checks that the two agree; AlignConfig's module imports jax and evosax).
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
        help="tune a soft prompt (or a steering vector) so the model's VSM 2013 answers match a target profile",
        description=(
            "Tune a soft prompt with an evolution strategy (Differential Evolution by default) so "
            "that the frozen model's VSM 2013 answers give the target's six dimension scores. "
            "Writes results.json, soft_prompt.safetensors and dims.png into --out. --intervention "
            "steering tunes a vector added after block --layer instead, with the same optimizers, "
            "budget, objectives and presentations, and writes steering.safetensors. Several countries "
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
    parser.add_argument("-k", "--k", type=int, default=argparse.SUPPRESS,
                        help=f"soft-prompt length (virtual tokens; default: {defaults.k}); refused with "
                             "--intervention steering, which has no virtual tokens")
    parser.add_argument("--intervention", default="soft-prompt", choices=("soft-prompt", "steering"),
                        help="what is tuned: soft-prompt (K input embeddings at --slot; writes "
                             "soft_prompt.safetensors) or steering (a vector added to the residual stream "
                             "after block --layer at every position; writes steering.safetensors, for "
                             "`jaxalign score/generate --steering` and `jaxalign export --format llama.cpp`)")
    parser.add_argument("--layer", type=_layer, default=None,
                        help="--intervention steering: the 0-based decoder block the vector is added after "
                             "(0..n_layers-1; llama.cpp control vectors cannot steer block 0). Default: "
                             "n_layers // 2, a placeholder until a sweep over layers picks a better one")
    parser.add_argument(
        "--subspace", type=int, default=defaults.subspace,
        help="search a random subspace of this dimension (0: the full K x d space; steering: the full d)",
    )
    parser.add_argument(
        "--method", default=defaults.method, metavar="{de,gradient,hybrid,...}",
        help="de: the evosax --strategy; gradient: Adam on the expected-readout loss with the same "
             "forward-pass budget (a backward pass counted as two forwards); hybrid: the --strategy "
             "for --hybrid-fraction of the budget, then Adam from its best prompt; or any optimizer "
             "registered with jaxalign.optimizers.register (checked before the model loads; the "
             "registry is not imported while parsing: importing evosax would start the XLA backend "
             "before --distributed can)")
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
                        help="spread of the initial population, in embedding standard deviations (steering: "
                             "in standard deviations of the residual stream after --layer) "
                             "(default: 1.0 for DifferentialEvolution and the other strategies; "
                             "benchmarks/RESULTS.md has the sweep behind it)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help="Adam's step size for --method gradient/hybrid (units of --init-scale)")
    parser.add_argument("--orders", default="one", choices=("one", "both", "cyclic"),
                        help="option orders every item is scored in each step: as listed; as listed and "
                             "reversed; the five cyclic rotations. Item means are averaged over them (and "
                             "over the wordings) before the indices and the loss, so a position effect cancels")
    parser.add_argument("--both-orders", action="store_true", help="the same as --orders both")
    parser.add_argument("--loss", default="paper", type=_loss, metavar="{paper,anchored,relative,...}",
                        help="paper: L1 to the published scores with C = 0 (the paper's); anchored: constants "
                             "that read the plain model as a respondent from --reference; relative (several "
                             "countries): one constant per dimension shared by the run's countries, the median "
                             "over countries of target - plain-model index, so only differences between "
                             "countries count; or any kind registered with "
                             "jaxalign.survey.objectives.register_objective")
    parser.add_argument("--reference", default=None, type=target_argument,
                        help="reference country of --loss anchored (name, alias or code)")
    parser.add_argument("--item-pairs", default=None, choices=("a", "b"),
                        help="tune on one item pair per index (a: the manual's first pair, b: the second), "
                             "each index read on the full scale from that pair; the other half is the test "
                             "('jaxalign eval matrix --item-pairs'). Default: both pairs")
    parser.add_argument("--extra-wording", "--wording-pool", action="append", default=[], metavar="FILE",
                        dest="extra_wording",
                        help="also tune on this JSON wording file (repeatable), in every --orders order; item "
                             "means are averaged over all presentations; held-out wordings are refused")
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


def _layer(text: str) -> int:
    """``--layer``: a block index >= 0 (its upper bound is checked against the model's depth)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a 0-based block index, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a layer is a 0-based block index >= 0, got {value}")
    return value


def peek_num_layers(model: str) -> int | None:
    """The number of decoder blocks of ``model``, read without a weight (``tiny-random``'s preset,
    a checkpoint folder's ``config.json``); ``None`` when it cannot be told so (a GGUF file, a Hub
    id): the run then checks ``--layer`` against the loaded model, before anything is rendered."""
    import json

    if model == "tiny-random":
        from jaxalign.model.tiny import tiny_config

        return tiny_config(1).num_hidden_layers
    config_file = Path(model).expanduser() / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config = config.get("text_config", config)
        return int(config["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def intervention_settings(args: argparse.Namespace) -> dict:
    """``AlignConfig``'s ``k``, ``intervention`` and ``layer`` from ``align``'s options; a
    :class:`CommandError` for an option the intervention does not take (``-k``, ``--init-text``
    with steering; ``--layer`` with a soft prompt) or a layer outside the model (when its depth can
    be read without the weights)."""
    if args.intervention == "soft-prompt":
        if args.layer is not None:
            raise CommandError("--layer is the block a steering vector is added after; add --intervention steering")
        return {"k": getattr(args, "k", ALIGN_DEFAULTS.k)}
    if hasattr(args, "k"):
        raise CommandError("-k sets a soft prompt's length; --intervention steering tunes one vector (d,) and "
                           "takes no -k: leave it out")
    if args.init_text is not None:
        raise CommandError("--init-text starts a soft prompt; a steering vector starts at zero (the plain "
                           "model): leave it out")
    n_layers = peek_num_layers(args.model)
    if n_layers is not None and args.layer is not None and args.layer >= n_layers:
        raise CommandError(f"--layer {args.layer} is out of range: {args.model} has {n_layers} decoder blocks, "
                           f"so a layer is 0..{n_layers - 1} (0-based; the vector is added after that block)")
    layer = args.layer if args.layer is not None or n_layers is None else n_layers // 2
    return {"k": ALIGN_DEFAULTS.k, "intervention": "steering", "layer": layer}


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
    except ValueError:  # one line, not argparse's usage block (main prints CommandError alone)
        raise CommandError(f"--dither expects two numbers 'FMIN,FMAX' (e.g. 0.5,1.0) or 'none', got {text!r}") from None
    return low, high


def run_align(args: argparse.Namespace) -> int:
    _start_distributed(args)  # before jaxalign.api: importing evosax starts the XLA backend
    from jaxalign.api import (
        AlignConfig,
        align,
        check_logger,
        check_out_dir,
        check_resume,
        resolve_targets,
    )
    from jaxalign.optimize.pipeline import tuning_wording

    config = AlignConfig(
        **intervention_settings(args),
        subspace=None if args.subspace == 0 else args.subspace,
        generations=args.generations,
        **preset_settings(args),
        method=args.method,
        learning_rate=args.learning_rate,
        hybrid_fraction=args.hybrid_fraction,
        both_orders=args.both_orders,
        orders="both" if args.both_orders and args.orders == "one" else args.orders,
        loss=args.loss,
        item_pairs=args.item_pairs,
        reference=None if args.reference is None else args.reference.name,
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
    common.note_partial_target(target)
    # everything that can be checked without the model is checked before it loads; --out is
    # created only when the run starts (a refused or failed run leaves no folder behind).
    # align() checks the folder and the resume again: it is the API's entry point too, and the
    # checks only read the folder, so the command pays two reads, not a second model load
    from jaxalign.survey.objectives import make_objective

    n_targets = len(target) if isinstance(target, list) else 1
    make_objective(config.loss, args.reference, n_targets=n_targets)
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
    lm = common._load(args.model, args.dtype, mesh, args.quantize, args.chat_template)
    result = align(lm, target, instrument=instrument, config=config, out=args.out,
                   resume=args.resume, progress="lines" if args.no_progress else True, mesh=mesh,
                   log=args.log)
    (Path(args.out) / common.RESUME_COMMAND_FILE).unlink(missing_ok=True)  # the run is whole again
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
