"""``--steering FILE`` for the commands: ``score`` with a steering vector, ``export --format llama.cpp``.

A steering file (:mod:`jaxalign.interventions.steering`) is read and its width checked against the
model's config before any weight loads; then its layers are checked against the model's depth and
its provenance against the model (another model warned on stderr, a plain file noted once).
"""

from __future__ import annotations

import argparse
from typing import Any

from jaxalign.cli import common
from jaxalign.cli.common import CommandError, warn_on_stderr


def read_steering(path: str, model: str | None) -> Any:
    """The :class:`~jaxalign.interventions.steering.SteeringVector` of ``path``; file errors, and a width
    other than ``model``'s config says (when it can be read without weights), as :class:`CommandError`."""
    from jaxalign.interventions.steering import load_steering
    from jaxalign.model.loader import peek_hidden_size

    try:
        steering = load_steering(path)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from err
    hidden = peek_hidden_size(model) if model is not None else None
    if hidden is not None and hidden != steering.width:
        raise CommandError(f"steering vector width d={steering.width} does not match the hidden size {hidden} "
                           f"of model {model!r}; it was made for another model (refused before loading the weights)")
    return steering


def score_steering(args: argparse.Namespace, instrument: Any, target: Any, mesh: Any) -> tuple[Any, Any, Any, dict]:
    """``jaxalign score --steering FILE``: ``(lm, chat date, Scores (P = 1), the JSON record)``."""
    from jaxalign.interventions.steering import steering_provenance
    from jaxalign.saved_prompt import load_prompt
    from jaxalign.scoring_steering import make_steering_scorer

    if args.soft_prompt is not None:
        raise CommandError("--steering and --soft-prompt together are not supported yet: score one intervention at a time")
    if mesh is not None:
        raise CommandError("--steering does not run on a mesh yet: leave out the mesh options")
    steering = read_steering(args.steering, args.model)
    loaded = load_prompt(None, lambda: common._load(args.model, args.dtype, mesh, args.quantize, args.chat_template))
    lm = loaded.lm
    try:
        provenance = steering_provenance(steering, lm, instrument=instrument, allow_mismatch=args.allow_mismatch,
                                         warn=warn_on_stderr)
    except ValueError as err:  # another width or a layer outside the model
        raise CommandError(str(err)) from err
    scorer = make_steering_scorer(lm, instrument, layer=steering.layers, target=target, system=args.persona,
                                  readout=args.readout or "expected")
    vectors = steering.vectors[0] if len(steering.layers) == 1 else steering.vectors
    record = {"file": args.steering, "layers": list(steering.layers),
              "norms": [round(float((row ** 2).sum() ** 0.5), 6) for row in steering.vectors],
              "provenance": provenance}
    return lm, loaded.chat_date, scorer(vectors), record


def export_steering(args: argparse.Namespace) -> int:
    """``jaxalign export --format llama.cpp --steering FILE --out X.gguf``."""
    from jaxalign.generation.control_vector import export_control_vector
    from jaxalign.interventions.steering import NO_PROVENANCE_NOTE

    if args.steering is None or args.soft_prompt is not None:
        raise CommandError("--format llama.cpp exports a --steering vector (a soft prompt has no llama.cpp form; "
                           "a 'start'-slot one exports with --format peft)")
    steering = read_steering(args.steering, None)
    if not steering.has_provenance:
        common._note("note: " + NO_PROVENANCE_NOTE)
    try:
        out = export_control_vector(steering, args.out, model_hint=args.model_hint)
    except ValueError as err:
        raise CommandError(str(err)) from err
    blocks = ", ".join(f"block {layer} -> direction.{layer}" for layer in steering.layers)
    print(f"wrote a llama.cpp control vector to {out} ({blocks}); use it with "
          f"llama-cli -m MODEL.gguf --control-vector {out}")
    return 0


def load_with_steering(args: argparse.Namespace) -> tuple[Any, Any, str | None]:
    """``generate --steering FILE``: ``(lm, SteeringVector, chat date)``; the file read and its width
    checked before the weights load, its layers and provenance after (warnings on stderr)."""
    from jaxalign.interventions.steering import steering_provenance
    from jaxalign.saved_prompt import load_prompt

    steering = read_steering(args.steering, args.model)
    loaded = load_prompt(None, lambda: common._load(args.model, args.dtype, quantize=args.quantize,
                                                    chat_template=args.chat_template))
    try:
        steering_provenance(steering, loaded.lm, warn=warn_on_stderr)
    except ValueError as err:
        raise CommandError(str(err)) from err
    return loaded.lm, steering, loaded.chat_date
