"""``jaxalign score``: the survey's dims of the plain model or of a saved soft prompt."""

from __future__ import annotations

import argparse
import json
import math

from jaxalign.cli import common
from jaxalign.cli.common import (  # noqa: I001
    CommandError,
    _add_mesh_arguments,
    _add_model_arguments,
    _dims_table,
    _instrument,
    _mesh,
    _start_distributed,
    add_allow_mismatch_argument,
    target_argument,
    warn_on_stderr,
)


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
    _add_model_arguments(parser, from_prompt=True)
    parser.add_argument("--soft-prompt", default=None, help="soft_prompt.safetensors written by 'jaxalign align'")
    parser.add_argument("--steering", default=None, metavar="FILE",
                        help="a steering vector (safetensors: tensor 'vector' (d,) and metadata 'layer', "
                             "0-based block it is added after, at every position); not with --soft-prompt")
    parser.add_argument("--persona", default=None, help="system text, e.g. 'You are a person from Japan.'")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--country", type=target_argument, help="target country for the loss")
    group.add_argument("--target", type=target_argument, help="custom target for the loss, 'PDI=80,...'")
    parser.add_argument("--readout", default=None, choices=("expected", "argmax", "sample"),
                        help="default: the soft prompt's own, else 'expected'")
    parser.add_argument("--orders", default="one", choices=("one", "both", "cyclic"),
                        help="score each item in these option orders (as listed; and reversed; the five "
                             "rotations) and average the answers, mapped back to the answer codes")
    parser.add_argument("--wording-pool", action="append", default=[], metavar="FILE",
                        help="also score this JSON wording file in every order (repeatable); averaged in")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_allow_mismatch_argument(parser)
    _add_mesh_arguments(parser)
    parser.set_defaults(run=run_score)


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

    from jaxalign.survey import load_wording

    instrument = _instrument(args.wording)
    pool = [load_wording(path, instrument) for path in args.wording_pool]
    common.note_partial_target(args.country or args.target)
    common.model_from_prompt(args)
    mesh = _mesh(args)
    target = args.country or args.target
    if args.steering is not None:
        from jaxalign.cli.steering import score_steering

        if args.orders != "one" or pool:
            raise CommandError("--steering is scored on one presentation: leave out --orders and --wording-pool")

        lm, chat_date, scores, steering = score_steering(args, instrument, target, mesh)
        provenance = None
    else:
        # file and width errors before the weights load; then provenance and the prompt's own date
        loaded = load_prompt(args.soft_prompt, lambda: common._load(args.model, args.dtype, mesh, args.quantize,
                                                             args.chat_template),
                             model=args.model, instrument=instrument, allow_mismatch=args.allow_mismatch,
                             warn=warn_on_stderr)
        lm, chat_date, provenance, steering = loaded.lm, loaded.chat_date, loaded.provenance, None
        scores = score(lm, soft_prompt=loaded.vectors, system=args.persona or loaded.system,
                       target=target, instrument=instrument, slot=loaded.slot,
                       readout=args.readout or loaded.readout or "expected", mesh=mesh,
                       orders=args.orders, wordings=pool)
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
            "orders": args.orders,
            "wordings": [instrument.wording] + [w.wording for w in pool],
        }
        if target is not None:
            out["target"] = {"name": target.name, "dims": {
                n: (None if math.isnan(v) else float(v)) for n, v in zip(target.dimensions, target.values)}}
            out["loss"] = float(scores.loss[0])
        if provenance is not None:
            out["soft_prompt_provenance"] = provenance
        if steering is not None:
            out["steering"] = steering
        print(json.dumps(out, indent=2))
        return 0
    steered = steering and "steering after block " + ",".join(map(str, steering["layers"]))
    label = " + ".join(n for n, on in (("soft prompt", args.soft_prompt), (steered, steered),
                                        ("persona", args.persona)) if on)
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
