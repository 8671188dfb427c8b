"""The ``jaxalign`` command.

Each subcommand is one function ``add_<name>_command(subparsers)`` that adds its parser and
sets ``run=<function(args) -> exit code>``; :data:`COMMANDS` lists them, and ``jaxalign --help``
shows every registered one. Heavy imports (jax, the model) belong inside the ``run`` functions,
so that ``jaxalign --help`` and ``jaxalign countries`` start fast.

Bad input (ValueError, FileNotFoundError, :class:`CommandError`) is reported on stderr as
``jaxalign: error: ...`` with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence

from jaxalign import __version__


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


# ------------------------------------------------------------------------------ registry
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (add_countries_command,)


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
