"""``jaxalign eval culturalbench``, ``jaxalign eval robustness`` (``eval matrix``: :mod:`jaxalign.cli.matrix`).

Building the parsers imports nothing heavy; jax and the model load inside the ``run`` functions.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any


def add_eval_command(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``eval`` with its two subcommands to the ``jaxalign`` parser."""
    from jaxalign.cli.common import add_allow_mismatch_argument, target_argument

    parser = subparsers.add_parser(
        "eval",
        help="evaluate a soft prompt beyond the tuned items (CulturalBench, robustness)",
        description="Evaluate a soft prompt (and the plain model beside it) beyond the survey items it was tuned on.",
    )
    evals = parser.add_subparsers(title="evaluations", dest="evaluation", metavar="EVALUATION")
    parser.set_defaults(run=lambda args: _missing_evaluation(parser))

    bench = evals.add_parser(
        "culturalbench",
        help="CulturalBench accuracy with a 95%% Wilson interval",
        description=(
            "CulturalBench (Chiu et al. 2024, CC-BY-4.0) accuracy of the plain model and, with "
            "--soft-prompt, of the model with the soft prompt: Easy is 4-option multiple choice "
            "read from the logits of A-D; Hard is one true/false judgement per option, and a "
            "question counts only when all its judgements are right. Prints accuracy, its 95%% "
            "Wilson interval and the number of questions."
        ),
    )
    _model_arguments(bench)
    bench.add_argument("--soft-prompt", default=None, help="soft_prompt.safetensors from 'jaxalign align'")
    bench.add_argument("--country", default=None,
                       help="CulturalBench country or region, e.g. 'China'; a survey name such as 'U.S.A.' finds "
                            "the benchmark's 'United States' (default: all questions)")
    bench.add_argument("--data", default=None,
                       help="CulturalBench CSV/JSONL/JSON/parquet file, or a folder holding "
                       "CulturalBench-Easy.csv / -Hard.csv (default: download from the Hub)")
    bench.add_argument("--set", default="easy", choices=("easy", "hard", "both"), dest="bench_set",
                       help="which CulturalBench set: Easy (multiple choice), Hard (true/false per "
                            "option) or both")
    bench.add_argument("--batch-size", type=int, default=None,
                       help="sequences per forward pass (default: the library's, 64; bounds memory)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    add_allow_mismatch_argument(bench)
    bench.set_defaults(run=run_culturalbench)

    robust = evals.add_parser(
        "robustness",
        help="dims and L1 of a soft prompt on the tuned wording, reversed options, held-out wording",
        description=(
            "Score a soft prompt and the plain model on the wording the prompt was tuned on, on "
            "the same items with the options in reverse order (mapped back before scoring), and "
            "on jaxalign's held-out second wording of the 24 VSM 2013 items."
        ),
    )
    _model_arguments(robust)
    robust.add_argument("--wording", default=None,
                        help="JSON wording file the prompt was tuned on (default: jaxalign's own)")
    robust.add_argument("--soft-prompt", required=True, help="soft_prompt.safetensors from 'jaxalign align'")
    group = robust.add_mutually_exclusive_group(required=True)
    group.add_argument("--country", type=target_argument, help="target country (name, alias or code)")
    group.add_argument("--target", type=target_argument, help="custom target, e.g. 'PDI=80,IDV=20'")
    robust.add_argument("--readout", default=None, choices=("expected", "argmax", "sample"),
                        help="default: the soft prompt's own, else 'expected'")
    robust.add_argument("--seed", type=int, default=0, help="seed of the 'sample' readout")
    robust.add_argument("--json", action="store_true", help="print one JSON object")
    add_allow_mismatch_argument(robust)
    robust.set_defaults(run=run_robustness)

    from jaxalign.cli.matrix import add_matrix_command

    add_matrix_command(evals, _model_arguments)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxalign.cli.common import DTYPE_HELP, MODEL_FROM_PROMPT_HELP

    parser.add_argument("--model", default=None, help=MODEL_FROM_PROMPT_HELP)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help=DTYPE_HELP)
    parser.add_argument("--quantize", default="none", choices=("none", "int8"),
                        help="int8: decoder linear weights in int8 (see jaxalign.model.quantize)")
    from jaxalign.cli.common import add_chat_template_argument

    add_chat_template_argument(parser)


def _missing_evaluation(parser: argparse.ArgumentParser) -> int:
    import sys

    parser.print_help(sys.stderr)
    return 2


def _load_prompt(args: argparse.Namespace, *, instrument: Any = None,
                 before_weights: Callable[[], None] | None = None) -> Any:
    """``--soft-prompt`` read and width-checked, then the model of ``--model``/``--dtype``/
    ``--quantize`` in the ``--chat-template`` format loaded (after ``before_weights()``, if given),
    the prompt's provenance checked and its chat date bound (:func:`jaxalign.saved_prompt.load_prompt`)."""
    from jaxalign.cli.common import _load, model_from_prompt, warn_on_stderr
    from jaxalign.saved_prompt import load_prompt

    model_from_prompt(args)

    def load():
        if before_weights is not None:
            before_weights()
        return _load(args.model, args.dtype, None, args.quantize, args.chat_template)

    return load_prompt(args.soft_prompt, load, model=args.model, instrument=instrument,
                       allow_mismatch=args.allow_mismatch, warn=warn_on_stderr)


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def _start_distributed() -> None:
    """On a multi-host launch: ``jax.distributed`` first, so only process 0 prints (see jaxalign.cli)."""
    from jaxalign.parallel import initialize_distributed

    initialize_distributed()


def run_culturalbench(args: argparse.Namespace) -> int:
    _start_distributed()
    from jaxalign.evaluate.culturalbench import (
        CULTURALBENCH_CITATION,
        DEFAULT_BATCH_SIZE,
        evaluate_culturalbench,
        load_culturalbench,
    )

    sets = ("easy", "hard") if args.bench_set == "both" else (args.bench_set,)
    benches: list[Any] = []
    # prompt file errors first, then the data's, then the weights load; CulturalBench is not the
    # survey: model and slot are what the provenance checks
    loaded = _load_prompt(args, before_weights=lambda: benches.extend(
        load_culturalbench(args.data, set=s).for_country(args.country) for s in sets))
    lm, prompt = loaded.lm, loaded.vectors
    out: dict[str, Any] = {"model": lm.name, "country": args.country or "all", "sets": {}}
    if prompt is not None:
        out["soft_prompt_provenance"] = loaded.provenance
    for bench in benches:
        size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size
        results = {"naive": evaluate_culturalbench(lm, bench, batch_size=size)}
        if prompt is not None:
            results["soft prompt"] = evaluate_culturalbench(
                lm, bench, soft_prompt=prompt, system=loaded.system, slot=loaded.slot,
                batch_size=size)
        out["sets"][bench.name] = {"source": bench.source, **{k: r.to_json() for k, r in results.items()}}
        if args.json:
            continue
        first = next(iter(results.values()))
        where = bench.questions[0].country if args.country else "all countries"
        print(f"CulturalBench-{bench.name.title()}, {where}: "
              f"{first.n_questions} questions ({first.n_judgements} sequences"
              + (f", {bench.skipped} skipped for empty values" if bench.skipped else "") + f"); model {lm.name}")
        print(f"{'prompt':12s} {'accuracy':>9s}  {'95% CI':>16s}  right/questions")
        for name, r in results.items():
            ci = f"[{_fmt(r.ci95[0])}, {_fmt(r.ci95[1])}]"
            print(f"{name:12s} {_fmt(r.accuracy):>9s}  {ci:>16s}  {r.n_correct}/{r.n_questions}")
        print()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"Data: {CULTURALBENCH_CITATION}.")
    return 0


def run_robustness(args: argparse.Namespace) -> int:
    _start_distributed()
    from jaxalign.evaluate.robustness import evaluate_robustness
    from jaxalign.survey import vsm13

    from jaxalign.cli.common import note_partial_target

    instrument = vsm13(wording=args.wording)
    note_partial_target(args.country or args.target)
    loaded = _load_prompt(args, instrument=instrument)
    lm = loaded.lm
    target = args.country or args.target
    readout = args.readout or loaded.readout or "expected"
    report = evaluate_robustness(
        lm, loaded.vectors, target, instrument=instrument, readout=readout, seed=args.seed,
        system=loaded.system, slot=loaded.slot,
    )
    if args.json:
        print(json.dumps({"model": lm.name, **report.to_json(), "soft_prompt_provenance": loaded.provenance},
                         indent=2))
        return 0
    print(f"target {report.target.name}; model {lm.name}; readout {readout}; "
          f"{report.rows[0].n_items} items per condition; held-out wording {report.row('heldout').wording}")
    print(report.table())
    return 0
