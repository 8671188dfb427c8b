"""The ``jaxalign generate``, ``jaxalign chat`` and ``jaxalign export`` commands.

``generate`` answers prompts given on the command line (with ``--compare``: the plain and the
aligned model side by side, in one batch); ``chat`` is a multi-turn session on stdin/stdout whose
answers stream as they decode; ``export --format peft`` writes a ``start``-slot prompt as a PEFT
adapter. Heavy imports stay inside the ``run_*`` functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

# The survey items asked as open questions by ``generate --compare`` when none are given.
COMPARE_ITEMS: tuple[str, ...] = ("1", "11", "19", "20")


def _add_decoding_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    from jaxalign.cli.common import _add_model_arguments

    _add_model_arguments(parser, from_prompt=True)
    parser.add_argument("--soft-prompt", default=None, help="soft_prompt.safetensors from 'jaxalign align'")
    parser.add_argument("--slot", default=None,
                        help="soft-prompt slot (default: the one stored with the soft prompt)")
    parser.add_argument("--system", default=None, help="system text (default: the soft prompt's own, if any)")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help="most tokens generated per answer (a row stops earlier at end of turn)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 decodes greedily")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1: the whole distribution)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled tokens (same seed, same tokens)")


# ------------------------------------------------------------------------------ generate
def add_generate_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="answer prompts with the model and an optional soft prompt (or both, --compare)",
        description=(
            "Answer each PROMPT (a user message) with the frozen model, with the soft prompt in its "
            "slot of the chat when --soft-prompt is given. With --compare, the plain and the aligned "
            "model answer the same questions in one batch, printed in two columns (default "
            "questions: a few VSM 2013 items asked as open questions)."
        ),
    )
    parser.add_argument("prompts", nargs="*", metavar="PROMPT", help="user messages to answer")
    _add_decoding_arguments(parser, max_new_tokens=64)
    parser.add_argument("--steering", default=None, metavar="FILE",
                        help="a steering vector file: added after its block at every position (prompt and "
                             "generated tokens); instead of --soft-prompt")
    parser.add_argument("--compare", action="store_true",
                        help="plain vs aligned model side by side (needs --soft-prompt or --steering)")
    parser.add_argument("--width", type=int, default=100, help="--compare: total width of the two columns")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from jaxalign.cli.common import CommandError
    from jaxalign.generation.decoding import generate

    if args.steering is not None and args.soft_prompt is not None:
        raise CommandError("--steering and --soft-prompt together are not supported yet: give one")
    if args.compare and args.soft_prompt is None and args.steering is None:
        raise CommandError("--compare needs --soft-prompt or --steering (the aligned model to compare with the plain one)")
    questions = list(args.prompts)
    if not questions:
        if not args.compare:
            raise CommandError("give at least one PROMPT (or --compare with --soft-prompt)")
        questions = default_questions(args.wording)
    if args.steering is not None:
        from jaxalign.cli.steering import load_with_steering

        lm, aligned, chat_date = load_with_steering(args)
    else:
        lm, aligned, chat_date = _load_with_prompt(args)
    soft = [None, aligned] if args.compare else [aligned]
    result = generate(lm, questions, soft, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      top_p=args.top_p, seed=args.seed, system=args.system, chat_date=chat_date)
    settings = {"model": lm.name, "soft_prompt": args.soft_prompt,
                "slot": getattr(aligned, "slot", None), "chat_date": chat_date,
                "max_new_tokens": args.max_new_tokens,
                "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed}
    if args.steering is not None:
        settings |= {"steering": args.steering, "steering_layers": list(aligned.layers)}
    if args.compare:
        answers = [{"question": q, "plain": result.texts[0][n], "aligned": result.texts[1][n],
                    "plain_stopped": bool(result.stopped[0, n]), "aligned_stopped": bool(result.stopped[1, n])}
                   for n, q in enumerate(questions)]
        if args.json:
            print(json.dumps({**settings, "answers": answers}, indent=2))
        else:
            print(two_columns(answers, args.width))
        return 0
    answers = [{"prompt": q, "answer": result.texts[0][n], "stopped": bool(result.stopped[0, n]),
                "tokens": int(result.lengths[0, n])} for n, q in enumerate(questions)]
    if args.json:
        print(json.dumps({**settings, "answers": answers}, indent=2))
        return 0
    for answer in answers:
        if len(answers) > 1:
            print(f"> {answer['prompt']}")
        print(answer["answer"])
        if len(answers) > 1:
            print()
    return 0


def default_questions(wording: str | None = None) -> list[str]:
    """The texts of the VSM 2013 items :data:`COMPARE_ITEMS`, asked as open questions."""
    from jaxalign.survey import vsm13

    items = {item.id: item for item in vsm13(wording=wording).items}
    return [str(items[i].text).strip() for i in COMPARE_ITEMS]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text.replace("\n", " ")).strip()


def two_columns(answers: list[dict], width: int = 100) -> str:
    """Each question, then the plain and the aligned answer wrapped side by side."""
    column = max(20, (width - 3) // 2)
    lines = []
    for answer in answers:
        lines.append(textwrap.fill(f"Q: {answer['question']}", width=2 * column + 3))
        left = textwrap.wrap(_printable(answer["plain"]), column) or [""]
        right = textwrap.wrap(_printable(answer["aligned"]), column) or [""]
        lines.append(f"{'plain':<{column}} | aligned")
        lines.append(f"{'-' * column}-+-{'-' * column}")
        for row in range(max(len(left), len(right))):
            a = left[row] if row < len(left) else ""
            b = right[row] if row < len(right) else ""
            lines.append(f"{a:<{column}} | {b}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip("\n")


# ------------------------------------------------------------------------------ chat
def add_chat_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="multi-turn chat with the model and an optional soft prompt, answers streamed",
        description=(
            "Chat with the frozen model: each line on stdin is a user turn; the answer is printed on "
            "stdout as it decodes. The soft prompt stays in its slot of the first user turn (or of "
            "the system turn). '/reset' starts a new conversation; '/quit' or end of input ends."
        ),
    )
    _add_decoding_arguments(parser, max_new_tokens=128)
    parser.add_argument("--chunk", type=int, default=4, help="tokens decoded per streamed chunk")
    parser.set_defaults(run=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from jaxalign.cli.common import CommandError
    from jaxalign.generation.decoding import prepare

    if args.chunk < 1:
        raise CommandError(f"--chunk must be >= 1, got {args.chunk}")
    lm, aligned, chat_date = _load_with_prompt(args)
    interactive = sys.stdin.isatty()
    history: list[dict[str, str]] = []
    turn = 0
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if line.strip() in ("/quit", "/exit"):
            break
        if line.strip() == "/reset":
            history = []
            print("(new conversation)", file=sys.stderr)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        decoder, _, _ = prepare(lm, [history], aligned, max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, top_p=args.top_p, seed=args.seed + turn,
                                system=args.system, chat_date=chat_date)
        print("assistant> ", end="", flush=True)
        state = decoder.start()
        shown = ""
        while True:
            state = decoder.advance(state, args.chunk)
            tokens, lengths, stopped = decoder.emitted(state)
            text = decoder.text(tokens[0], int(lengths[0]))
            finished = bool(stopped[0]) or int(state.step) >= args.max_new_tokens
            if not text.endswith("\ufffd") or finished:  # hold back half a multi-byte character
                print(text[len(shown):], end="", flush=True)
                shown = text
            if finished:
                break
        print(flush=True)
        history.append({"role": "assistant", "content": shown})
        turn += 1
    return 0


# ------------------------------------------------------------------------------ export
def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a soft prompt (PEFT prompt tuning) or a steering vector (llama.cpp control vector)",
        description=(
            "--format peft: write a soft prompt tuned in the 'start' slot (jaxalign align --slot start) as a "
            "PEFT prompt-tuning adapter: adapter_config.json and adapter_model.safetensors, loadable with "
            "peft.PeftModel.from_pretrained(base_model, OUT). Prompts of other slots are refused. "
            "--format llama.cpp: write a --steering vector as a llama.cpp control-vector GGUF file for "
            "'llama-cli --control-vector OUT.gguf' (jaxalign's 0-based block L is llama.cpp's direction.L; "
            "L = 0 cannot be expressed)."
        ),
    )
    parser.add_argument("--format", required=True, choices=("peft", "llama.cpp"),
                        help="'peft' writes a PEFT prompt-tuning adapter (--soft-prompt); 'llama.cpp' a "
                             "control-vector GGUF (--steering)")
    parser.add_argument("--soft-prompt", default=None, help="soft_prompt.safetensors from 'jaxalign align'")
    parser.add_argument("--steering", default=None, metavar="FILE", help="a steering vector file (--format llama.cpp)")
    parser.add_argument("--out", default=None, help="adapter folder (peft) or .gguf file (llama.cpp) to write (required)")
    parser.add_argument("--base-model", default=None,
                        help="base model id or path recorded in the adapter (default: the prompt's own)")
    parser.add_argument("--model-hint", default=None,
                        help="llama.cpp: controlvector.model_hint, the model's architecture (default: the "
                             "steering file's model_type)")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from jaxalign.cli.common import CommandError, _note

    if args.out is None:  # one line, not argparse's usage block
        raise CommandError("export needs --out: the adapter folder (peft) or .gguf file (llama.cpp) to write")
    if args.format == "llama.cpp":
        from jaxalign.cli.steering import export_steering

        return export_steering(args)
    if args.soft_prompt is None or args.steering is not None:
        raise CommandError("--format peft exports a --soft-prompt (a steering vector exports with --format llama.cpp)")
    from jaxalign.generation.export import export_peft, peft_base_model
    from jaxalign.softprompt import load_soft_prompt

    out = export_peft(args.soft_prompt, args.out, base_model=args.base_model,
                      note=lambda text: _note(f"note: {text}"))
    if args.base_model is None:
        base, _ = peft_base_model(load_soft_prompt(args.soft_prompt)[1])
        if base is not None:
            _note(f"base model: {base} (the one the soft prompt was tuned on; --base-model chooses another)")
    print(f"wrote a PEFT prompt-tuning adapter to {out}")
    return 0


def _load_with_prompt(args: argparse.Namespace) -> tuple[Any, Any, str | None]:
    """``(lm, soft prompt or None, chat date)`` for ``generate`` / ``chat``: the ``--soft-prompt``
    file read and its width checked before the weights load, its provenance warned on stderr
    (another model or slot), and the date it was tuned under bound to the model
    (:func:`jaxalign.saved_prompt.load_prompt`)."""
    from jaxalign.cli.common import _load, model_from_prompt, warn_on_stderr
    from jaxalign.generation.decoding import SoftPrompt, check_decoding
    from jaxalign.prompting.layout import check_slot
    from jaxalign.saved_prompt import load_prompt

    if args.slot is not None and args.soft_prompt is not None:
        check_slot(args.slot)  # before the weights load
    check_decoding(args.max_new_tokens, args.temperature, args.top_p)  # so are these
    model_from_prompt(args)
    loaded = load_prompt(
        args.soft_prompt,
        lambda: _load(args.model, args.dtype, quantize=args.quantize, chat_template=args.chat_template),
        model=args.model, slot=args.slot, warn=warn_on_stderr)
    aligned = None if loaded.vectors is None else SoftPrompt.from_loaded(loaded)
    return loaded.lm, aligned, loaded.chat_date
