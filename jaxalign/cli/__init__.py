"""The ``jaxalign`` command: the parser, its help, and :func:`main`.

One module per command (``countries``, ``align``, ``score``, ``show``, ``evaluate`` for ``eval``,
``generate`` for ``generate``/``chat``/``export``), the helpers they share in
:mod:`jaxalign.cli.common`; no command module imports this one. Each command is one function
``add_<name>_command(subparsers)`` that adds its parser and sets ``run=<function(args) -> exit
code>``; :data:`COMMANDS` lists them, and ``jaxalign --help`` shows every registered one. Heavy imports (jax, the model) belong inside the ``run`` functions,
so that ``jaxalign --help`` and ``jaxalign countries`` start fast.

Bad input (ValueError, FileNotFoundError, :class:`CommandError`) is reported on stderr as
``jaxalign: error: ...`` with exit code 2 and no traceback.

With several processes (``jax.distributed``), only process 0 prints to stdout; the others
stay quiet (errors still go to every process's stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence

from jaxalign import __version__

# every command module is light (argparse only); jax and the model load inside their run functions
from jaxalign.cli.align import (  # noqa: F401
    ALIGN_DEFAULTS,
    ALIGN_PRESETS,
    add_align_command,
    preset_settings,
)
from jaxalign.cli.common import CommandError, keep_resume_command, target_argument  # noqa: F401  (re-exported)
from jaxalign.cli.countries import add_countries_command, select_all_countries  # noqa: F401
from jaxalign.cli.evaluate import add_eval_command
from jaxalign.cli.generate import (
    add_chat_command,
    add_export_command,
    add_generate_command,
)
from jaxalign.cli.score import add_score_command
from jaxalign.cli.show import add_show_command

# ------------------------------------------------------------------------------ shared arguments


# ------------------------------------------------------------------------------ countries


# ------------------------------------------------------------------------------ align


# ------------------------------------------------------------------------------ score


# ------------------------------------------------------------------------------ show


# ------------------------------------------------------------------------------ registry

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
        "jaxalign align --country China --intervention steering --layer 2 --out runs/china-steer",
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
        else:  # jaxalign.api.RunInterrupted (Ctrl-C or SIGTERM): say what is kept and how to continue
            command = resume_command(args.argv)
            keep_resume_command(getattr(stop, "checkpoint_dir", None), command)  # for `jaxalign show`
            print("jaxalign: " + explain(command), file=sys.stderr)
        return 130
