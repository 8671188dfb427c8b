"""What the ``jaxalign`` commands share: argument types, model loading, messages, errors.

Nothing here imports jax at module level; :func:`_load` imports the model code when called.
"""

from __future__ import annotations

import argparse
import math
import sys
import time


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def target_argument(text: str):
    """``type=`` for a ``--target`` option: a country name/alias/code or ``"DIM=value,..."``.

    Returns a :class:`jaxalign.survey.Target`. A bad value is the user's data, not a misuse of the
    command line: it raises :class:`CommandError` with the lookup's message (closest matches,
    accepted dimensions), which :func:`main` prints as one line without argparse's usage block.
    A score no answers to VSM 2013 can give (``PDI=800``) is refused the same way; one that can
    be reached but lies outside the published scores (0..112) is kept with one warning (see
    :mod:`jaxalign.survey.targets`).
    """
    from jaxalign.survey.targets import (
        check_reachable,
        outside_published,
        published_range,
        resolve_target,
    )
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


def _format_score(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


MODEL_HELP = "checkpoint folder, GGUF file, Hugging Face Hub id, or 'tiny-random' (the offline tiny model)"
MODEL_FROM_PROMPT_HELP = (MODEL_HELP + "; default: the model the --soft-prompt was tuned on (its recorded "
                          "path or Hub id), else tiny-random")
DTYPE_HELP = ("weights and activations dtype; auto: float32 on a CPU backend (XLA:CPU has no fast "
              "bfloat16 matmul) and for tiny-random, bfloat16 on GPUs and TPUs "
              "(float16: for GPUs without bfloat16, e.g. a T4)")


def _add_model_arguments(parser: argparse.ArgumentParser, *, from_prompt: bool = False) -> None:
    """``--model``, ``--dtype``, ``--quantize``, ``--wording``, ``--chat-template``. ``from_prompt``:
    ``--model`` defaults to ``None``, resolved by :func:`model_from_prompt`."""
    if from_prompt:
        parser.add_argument("--model", default=None, help=MODEL_FROM_PROMPT_HELP)
    else:
        parser.add_argument("--model", default="tiny-random", help=MODEL_HELP)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help=DTYPE_HELP)
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


def model_from_prompt(args: argparse.Namespace) -> str:
    """The model a command runs: ``--model`` when given; else the one its ``--soft-prompt`` was
    tuned on (:func:`jaxalign.saved_prompt.recorded_model`: path or Hub id; its content is checked
    against the prompt's fingerprint once loaded), said in one line on stderr; else tiny-random.
    Sets ``args.model``.

    Raises:
      CommandError: the prompt was tuned on a local model that is no longer at its path.
    """
    if getattr(args, "model", None) is None:
        args.model = "tiny-random"
        if getattr(args, "soft_prompt", None):
            from jaxalign.saved_prompt import recorded_model
            from jaxalign.softprompt import load_soft_prompt

            _, metadata = load_soft_prompt(args.soft_prompt)
            try:
                recorded = recorded_model(metadata)
            except ValueError as error:
                raise CommandError(str(error)) from None
            if recorded is not None:
                _note(f"model: {recorded} (the one the soft prompt was tuned on; --model chooses another)")
                args.model = recorded
    return args.model


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


def note_partial_target(target) -> None:
    """One line on stderr when a single target lacks some dimensions (e.g. Albania: LTO and IVR
    only): the loss covers only those it has, and the others print as a dash."""
    import numpy as np

    if target is None or isinstance(target, (list, tuple)):
        return
    values = np.asarray(target.values, np.float64)
    have = [d for d, v in zip(target.dimensions, values) if not np.isnan(v)]
    if len(have) < len(values):
        _note(f"note: target {target.name} has {len(have)} of {len(values)} dimensions ({', '.join(have)}); "
              "the loss covers only those (the others print as '-')")


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


def add_allow_mismatch_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-mismatch", action="store_true",
        help="use a soft prompt tuned on another model, wording or slot as your explicit choice "
             "(recorded in the output); without it such a prompt is used with a warning. A prompt "
             "of another hidden size is always refused")


#: where an interrupted ``jaxalign align`` leaves the command that continues it (in its --out folder)
RESUME_COMMAND_FILE = "resume_command.json"


def keep_resume_command(checkpoint_dir: str | None, command: str) -> None:
    """Writes the command that continues an interrupted run (and the folder it was started from)
    into the run's folder (the parent of ``checkpoint_dir``), for ``jaxalign show``; nothing when
    there is no such folder or it cannot be written."""
    import json
    import os
    from pathlib import Path

    if checkpoint_dir is None:
        return
    folder = Path(checkpoint_dir).parent
    jax = sys.modules.get("jax")
    if not folder.is_dir() or (jax is not None and jax.distributed.is_initialized() and jax.process_index() != 0):
        return
    try:
        (folder / RESUME_COMMAND_FILE).write_text(json.dumps({"command": command, "cwd": os.getcwd()}) + "\n")
    except OSError:
        pass


def read_resume_command(run_dir) -> str | None:
    """The command an interrupted run left in ``run_dir`` (:func:`keep_resume_command`), with
    ``cd FOLDER &&`` in front when it was started from another folder than this one; ``None``
    when it left none."""
    import json
    import os
    import shlex
    from pathlib import Path

    try:
        record = json.loads((Path(run_dir) / RESUME_COMMAND_FILE).read_text())
        command, cwd = str(record["command"]), str(record.get("cwd") or "")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if cwd and os.path.realpath(cwd) != os.path.realpath(os.getcwd()):
        return f"cd {shlex.quote(cwd)} && {command}"
    return command


def warn_on_stderr(message: str) -> None:
    """A diagnostic line on stderr (stdout is kept for results, e.g. --json)."""
    print(f"jaxalign: warning: {message}", file=sys.stderr)
