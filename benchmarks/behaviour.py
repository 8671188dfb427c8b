"""What does an aligned model say, and does the soft prompt break its English?

For soft prompts found by ``benchmarks/optimizers.py`` (read from a study folder's
``prompts.npz``, each in the slot its study tuned it in) and the plain model beside them:

- greedy answers to ten fixed open questions about work, family, authority and leisure
  (``benchmarks/questions/open_questions.txt``), all prompts in ONE batch of
  :func:`jaxalign.generate` (the decoder of ``jaxalign generate --compare``);
- the mean per-token log-likelihood of a fixed neutral English text
  (``benchmarks/questions/neutral_text.txt``, about kettles) as the answer to a request for it
  (:func:`jaxalign.reply_log_likelihood`), and its change from the plain model's: near 0, the
  prompt leaves ordinary English alone; strongly negative, it pulls the model away from it.

Writes ``behaviour.json`` (every answer, the figures, the command) and ``behaviour.md`` (the
figures, then the answers prompt by prompt) into ``--out``.

Example::

    python benchmarks/behaviour.py --model SmolLM2-135M-Instruct.Q4_1.gguf --dtype float32 \\
        --prompt "DE=benchmarks/results/smollm2_study_user_end:de|normal|China|0" \\
        --prompt "Adam=benchmarks/results/smollm2_study_user_end:gradient|normal|China|0" \\
        --out benchmarks/results/smollm2_behaviour
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "questions" / "open_questions.txt"
NEUTRAL = HERE / "questions" / "neutral_text.txt"
NEUTRAL_REQUEST = "Please write a short paragraph about kettles."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder, .gguf file or Hub id")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--prompt", action="append", default=[], metavar="LABEL=FOLDER:KEY",
                        help="a soft prompt: KEY (method|option|country|seed) of FOLDER/prompts.npz; repeat")
    parser.add_argument("--questions", default=str(QUESTIONS), help="one open question per line")
    parser.add_argument("--neutral-text", default=str(NEUTRAL), help="the reply scored by log-likelihood")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.prompt:
        parser.error("give at least one --prompt LABEL=FOLDER:KEY")
    return args


def read_prompt(spec: str) -> tuple[str, Any]:
    """``LABEL=FOLDER:KEY`` -> ``(label, SoftPrompt)`` in its study's slot. Raises ValueError for a
    malformed spec, a folder without a study or a key the study does not hold."""
    from jaxalign.generation.decoding import SoftPrompt

    label, sep, rest = spec.partition("=")
    folder, sep2, key = rest.rpartition(":")
    if not (sep and sep2 and label and folder and key):
        raise ValueError(f"--prompt {spec!r}: expected LABEL=FOLDER:KEY")
    study = Path(folder) / "optimizers.json"
    if not study.is_file():
        raise ValueError(f"--prompt {spec!r}: {folder} holds no study (optimizers.json)")
    setup = json.loads(study.read_text())["setup"]
    with np.load(Path(folder) / "prompts.npz") as saved:
        if key not in saved:
            raise ValueError(f"--prompt {spec!r}: no key {key!r} in {folder}/prompts.npz "
                             f"(there: {', '.join(sorted(saved))})")
        vectors = np.asarray(saved[key], np.float32)
    return label, SoftPrompt(vectors=vectors, slot=setup.get("slot", "user_start"), name=label)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jaxalign

    meta = common.run_metadata("benchmarks/behaviour.py", args.argv)
    try:
        prompts = [read_prompt(spec) for spec in args.prompt]  # every spec checked before loading
    except ValueError as error:
        raise SystemExit(f"behaviour.py: {error}") from None
    questions = [q.strip() for q in Path(args.questions).read_text().splitlines() if q.strip()]
    neutral = Path(args.neutral_text).read_text().strip()
    lm = jaxalign.load_model(args.model, dtype=args.dtype)
    labels = ["plain model"] + [label for label, _ in prompts]
    soft = [None] + [p for _, p in prompts]
    t0 = time.perf_counter()
    answers = jaxalign.generate(lm, questions, soft, max_new_tokens=args.max_new_tokens)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loglik = jaxalign.reply_log_likelihood(lm, NEUTRAL_REQUEST, neutral, soft)[:, 0]  # (S,)
    loglik_s = time.perf_counter() - t0
    report = {
        **meta, "device": common.describe_device(), "model": lm.name, "dtype": args.dtype,
        "max_new_tokens": args.max_new_tokens, "questions": questions,
        "neutral_request": NEUTRAL_REQUEST, "neutral_text": neutral,
        "prompts": [{"label": label, "source": spec.split("=", 1)[1], "slot": p.slot, "k": int(p.vectors.shape[0])}
                    for (label, p), spec in zip(prompts, args.prompt)],
        "log_likelihood": {label: float(v) for label, v in zip(labels, loglik)},
        "log_likelihood_change": {label: float(v - loglik[0]) for label, v in zip(labels, loglik)},
        "answers": {label: list(texts) for label, texts in zip(labels, answers.texts)},
        "stopped": {label: [bool(s) for s in row] for label, row in zip(labels, answers.stopped)},
        "seconds": {"generate": round(generate_s, 1), "log_likelihood": round(loglik_s, 1)},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "behaviour.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (out / "behaviour.md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """The figures, then every answer prompt by prompt."""
    lines = [f"# What the aligned model says: {report['model']}", "",
             f"Date {report['date']}; command `{report['command']}`; device {report['device']}; "
             f"{report['dtype']}; greedy, at most {report['max_new_tokens']} new tokens.", "",
             f"Mean per-token log-likelihood (natural log) of a fixed neutral text ({len(report['neutral_text'].split())} "
             f"words about kettles) as the reply to \"{report['neutral_request']}\", and its change from the "
             "plain model's:", "",
             "| prompt | source (study folder: key) | slot | K | log-likelihood per token | change |",
             "|---|---|---|---:|---:|---:|",
             f"| plain model | - | - | 0 | {report['log_likelihood']['plain model']:.4f} | 0 |"]
    for p in report["prompts"]:
        source = p["source"].replace("|", "\\|")
        lines.append(f"| {p['label']} | `{source}` | {p['slot']} | {p['k']} | "
                     f"{report['log_likelihood'][p['label']]:.4f} | {report['log_likelihood_change'][p['label']]:+.4f} |")
    lines += ["", "## Answers", ""]
    for i, question in enumerate(report["questions"]):
        lines += [f"### {i + 1}. {question}", ""]
        for label, texts in report["answers"].items():
            text = " ".join(texts[i].split())
            cut = "" if report["stopped"][label][i] else " [cut at the token limit]"
            lines.append(f"- **{label}**: {text}{cut}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
