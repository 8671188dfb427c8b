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
from collections.abc import Callable, Iterator, Sequence

from jaxalign import __version__
from jaxalign.prompting.layout import SLOTS


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


# ------------------------------------------------------------------------------ shared arguments
def target_argument(text: str):
    """``type=`` for a ``--target`` option: a country name/alias/code or ``"DIM=value,..."``.

    Returns a :class:`jaxalign.survey.Target`; a bad value becomes argparse's usage error
    (exit code 2) with the lookup's message (closest matches, accepted dimensions).
    """
    from jaxalign.survey.targets import resolve_target

    try:
        return resolve_target(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
        help="weights and activations dtype; auto: float32 for tiny-random, bfloat16 otherwise",
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
    crossover_rate=0.9, differential_weight=0.8, dither=(0.5, 1.0), init_scale=1.0, readout="expected",
    n_respondents=100, slot="user_start", seed=0, chunk_size=10,
)


def add_align_command(subparsers: argparse._SubParsersAction) -> None:
    defaults = ALIGN_DEFAULTS
    parser = subparsers.add_parser(
        "align",
        help="tune a soft prompt so the model's VSM 2013 answers match a target profile",
        description=(
            "Tune a soft prompt with an evolution strategy (Differential Evolution by default) so "
            "that the frozen model's VSM 2013 answers give the target's six dimension scores. "
            "Writes results.json, soft_prompt.safetensors and dims.png into --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_model_arguments(parser)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--country", type=target_argument, help="target country or region (name, alias or code)")
    group.add_argument("--target", type=target_argument, help="custom target, e.g. 'PDI=80,IDV=20' (others left out)")
    parser.add_argument("--out", required=True, help="output folder (checkpoints and results)")
    parser.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    parser.add_argument("--generations", type=int, default=defaults.generations)
    parser.add_argument("--population", type=int, default=defaults.population)
    parser.add_argument("-k", "--k", type=int, default=defaults.k, help="soft-prompt length (virtual tokens)")
    parser.add_argument(
        "--subspace", type=int, default=defaults.subspace,
        help="search a random subspace of this dimension (0: the full K x d space)",
    )
    parser.add_argument("--strategy", default=defaults.strategy, help="evosax algorithm name")
    parser.add_argument("--crossover-rate", type=float, default=defaults.crossover_rate)
    parser.add_argument("--differential-weight", type=float, default=defaults.differential_weight)
    parser.add_argument(
        "--dither", type=_float_pair, default=defaults.dither, metavar="FMIN,FMAX",
        help="draw the differential weight uniformly in [FMIN, FMAX] each generation; 'none' keeps it fixed",
    )
    parser.add_argument("--init-scale", type=float, default=defaults.init_scale,
                        help="spread of the initial population, in embedding standard deviations")
    parser.add_argument("--init-text", default=None, help="initialise the soft prompt from this text's embeddings")
    parser.add_argument("--readout", default=defaults.readout, choices=("expected", "argmax", "sample"))
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
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--chunk-size", type=int, default=defaults.chunk_size,
                        help="generations per on-device chunk (progress and checkpoints in between)")
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--members-per-pass", type=int, default=None,
                        help="population members per forward pass when memory is short (default: all at once)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_mesh_arguments(parser)
    parser.set_defaults(run=run_align)


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
    from jaxalign.api import AlignConfig, align, check_out_dir

    config = AlignConfig(
        k=args.k,
        subspace=None if args.subspace == 0 else args.subspace,
        population=args.population,
        generations=args.generations,
        strategy=args.strategy,
        crossover_rate=args.crossover_rate,
        differential_weight=args.differential_weight,
        dither=args.dither,
        init_scale=args.init_scale,
        readout=args.readout,
        n_respondents=args.respondents,
        slot=args.slot,
        system=args.system,
        init_text=args.init_text,
        seed=args.seed,
        chunk_size=args.chunk_size,
        checkpoint_every=args.checkpoint_every,
        members_per_pass=args.members_per_pass,
        chat_date=args.chat_date,
    )
    check_out_dir(args.out, resume=args.resume)
    instrument = _instrument(args.wording)
    mesh = _mesh(args)
    lm = _load(args.model, args.dtype, mesh, args.chat_template)
    target = args.country or args.target
    result = align(lm, target, instrument=instrument, config=config, out=args.out,
                   resume=args.resume, progress=not args.no_progress, mesh=mesh)
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
    if parallel.is_main_process():
        print(f"mesh {parallel.describe_mesh(mesh)}")
    return mesh


def _load(model: str, dtype: str, mesh=None, chat_template: str | None = None):
    from jaxalign.model import load_model
    from jaxalign.prompting.chat_formats import resolve_chat_template, with_chat_format

    if chat_template is not None:
        resolve_chat_template(chat_template)  # a bad name or file fails before the weights load
    if dtype == "auto":
        dtype = "float32" if model == "tiny-random" else "bfloat16"
    lm = load_model(model, dtype=dtype, mesh=mesh)
    return lm if chat_template is None else with_chat_format(lm, chat_template)


def _dims_table(dimensions, rows) -> str:
    header = f"{'':10s}" + "".join(f"{d:>8s}" for d in dimensions) + f"{'L1':>8s}"
    lines = [header]
    for row in rows:
        name, values = row[0], row[1]
        loss = row[2] if len(row) > 2 else float("nan")
        cells = "".join(f"{_format_score(float(v)):>8s}" for v in values)
        lines.append(f"{name:10s}{cells}{_format_score(float(loss)):>8s}")
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
    _add_mesh_arguments(parser)
    parser.set_defaults(run=run_score)


def run_score(args: argparse.Namespace) -> int:
    _start_distributed(args)
    from jaxalign.api import score
    from jaxalign.prompting.chat_formats import bind_run_date, chat_template_name
    from jaxalign.softprompt import check_soft_prompt, load_soft_prompt

    instrument = _instrument(args.wording)
    prompt, metadata = None, {}
    if args.soft_prompt is not None:
        prompt, metadata = load_soft_prompt(args.soft_prompt)  # read errors before loading the model
    mesh = _mesh(args)
    lm = _load(args.model, args.dtype, mesh, args.chat_template)
    lm, chat_date = bind_run_date(lm, metadata.get("chat_date") or None)  # the prompt's own date
    if prompt is not None:
        check_soft_prompt(prompt, lm.config.hidden_size)
    target = args.country or args.target
    scores = score(lm, soft_prompt=args.soft_prompt, system=args.persona, target=target,
                   instrument=instrument, readout=args.readout, mesh=mesh)
    dims = [float(v) for v in scores.dims[0]]
    probs = [[round(float(p), 6) for p in row] for row in scores.probs[0]]
    if args.json:
        out = {
            "model": lm.name,
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
        print(json.dumps(out, indent=2))
        return 0
    rows = [("model", dims, float(scores.loss[0]))]
    if target is not None:
        rows.insert(0, ("target", target.values))
    print(f"model {lm.name}; wording {instrument.wording}")
    print(_dims_table(instrument.dimensions, rows))
    print("\nitem  mean   P(1)   P(2)   P(3)   P(4)   P(5)")
    for item_id, mean, row in zip(instrument.item_ids, scores.item_means[0], probs):
        print(f"{item_id:>4s}  {float(mean):4.2f}  " + "  ".join(f"{p:5.3f}" for p in row))
    return 0


# ------------------------------------------------------------------------------ registry
from jaxalign.evaluate.cli import add_eval_command  # noqa: E402  (light: argparse only)

COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_countries_command,
    add_align_command,
    add_score_command,
    add_eval_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="jaxalign",
        description=(
            "Align a frozen Llama with a country's Hofstede cultural profile (VSM 2013) by "
            "tuning a soft prompt with Differential Evolution, in JAX."
        ),
    )
    parser.add_argument("--version", action="version", version=f"jaxalign {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxalign`` command; returns the exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or argparse's own usage error
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with _stdout_on_process_zero_only():
            return int(args.run(args) or 0)
    except (CommandError, ValueError, FileNotFoundError) as error:
        print(f"jaxalign: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `jaxalign countries | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("jaxalign: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
