"""Does an alignment survive a change of answer order or of wording?

A soft prompt is tuned on one presentation of the 24 VSM 2013 items. :func:`evaluate_robustness`
scores it (and the plain model beside it) under three conditions, with the same readout,
constants and target:

- ``"tuned"``: the wording and option order it was tuned on;
- ``"reversed"``: the same items with the options listed 5..1 (numbered 1..5 in that order;
  the answers are mapped back to the original codes before scoring, so a model that reads the
  labels rather than the digits gives the same dims);
- ``"heldout"``: the project's second, held-out wording of the items
  (:func:`jaxalign.survey.paraphrase.heldout_vsm13`), never used for tuning.

To tune on the normal and the reversed order at once (the mean of the two orders' L1 losses, so
a prompt cannot win by exploiting the digit positions of one order), use
``AlignConfig(both_orders=True)`` or :func:`jaxalign.align_both_orders`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxalign._io import json_number

CONDITIONS: tuple[str, ...] = ("tuned", "reversed", "heldout")
CONDITION_LABELS: dict[str, str] = {
    "tuned": "tuned wording",
    "reversed": "reversed order",
    "heldout": "held-out wording",
}


@dataclasses.dataclass(frozen=True)
class ConditionScores:
    """Scores of one prompt under one condition.

    Attributes:
      condition: ``"tuned"``, ``"reversed"`` or ``"heldout"``.
      prompt: ``"naive"`` (plain model) or ``"soft prompt"``.
      wording: the instrument wording scored.
      dims: ``(D,)`` indices; ``loss``: L1 to the target (mean over available dimensions).
      item_means: ``(Q,)`` readout per item, in answer-code order.
      n_items: items scored.
    """

    condition: str
    prompt: str
    wording: str
    dims: np.ndarray
    loss: float
    item_means: np.ndarray
    n_items: int


@dataclasses.dataclass(frozen=True)
class RobustnessReport:
    """:func:`evaluate_robustness`'s result: one row per (condition, prompt)."""

    target: Any
    dimensions: tuple[str, ...]
    readout: str
    rows: tuple[ConditionScores, ...]

    def row(self, condition: str, prompt: str = "soft prompt") -> ConditionScores:
        for r in self.rows:
            if r.condition == condition and r.prompt == prompt:
                return r
        raise KeyError(f"no row for condition {condition!r}, prompt {prompt!r}")

    def table(self) -> str:
        """A text table: target, then each condition's naive and soft-prompt rows."""
        width = max(len(f"{CONDITION_LABELS[r.condition]}, {r.prompt}") for r in self.rows) + 2
        head = f"{'':{width}s}" + "".join(f"{d:>8s}" for d in self.dimensions) + f"{'L1':>8s}"
        lines = [head, f"{'target':{width}s}" + "".join(_cell(v) for v in np.asarray(self.target.values))]
        for r in self.rows:
            name = f"{CONDITION_LABELS[r.condition]}, {r.prompt}"
            lines.append(f"{name:{width}s}" + "".join(_cell(v) for v in r.dims) + _cell(r.loss))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": {"name": self.target.name,
                       "dims": {d: json_number(v) for d, v in zip(self.dimensions, np.asarray(self.target.values))}},
            "readout": self.readout,
            "rows": [
                {"condition": r.condition, "prompt": r.prompt, "wording": r.wording, "n_items": r.n_items,
                 "loss": json_number(r.loss), "dims": {d: json_number(v) for d, v in zip(self.dimensions, r.dims)}}
                for r in self.rows
            ],
        }


def _cell(v: Any) -> str:
    v = float(v)
    return f"{'-':>8s}" if math.isnan(v) else f"{v:8.1f}"


def heldout_for(instrument: Any) -> Any:
    """The held-out wording with ``instrument``'s formulas and constants (VSM 2013 ids needed)."""
    from jaxalign.survey.paraphrase import heldout_vsm13

    try:
        return heldout_vsm13(base=instrument)
    except ValueError as error:
        raise ValueError(
            f"the held-out wording covers the 24 VSM 2013 items; instrument {instrument.name!r} "
            f"differs ({error}); pass heldout= your own second wording"
        ) from None


def evaluate_robustness(
    lm: Any,
    soft_prompt: Any,
    target: Any,
    *,
    instrument: Any = None,
    heldout: Any = None,
    readout: str = "expected",
    system: str | None = None,
    slot: str = "user_start",
    seed: int = 0,
    **scorer_options: Any,
) -> RobustnessReport:
    """Scores ``soft_prompt (K, d)`` and the plain model on the tuned, reversed and held-out items.

    Args:
      lm: the model.
      soft_prompt: ``(K, d)`` array (e.g. ``AlignResult.soft_prompt`` or a loaded file).
      target: a Target, country, ``"PDI=..."`` or mapping; every loss is against it.
      instrument: the wording the prompt was tuned on (default: built-in VSM 2013).
      heldout: the held-out wording (default: :func:`heldout_for` ``(instrument)``).
      readout: ``"expected"``, ``"argmax"`` or ``"sample"`` (``seed`` seeds its respondents).
      system, slot: the prompt layout the soft prompt was tuned with.
      scorer_options: passed to :func:`jaxalign.scoring.make_scorer` (``mode``, ``n_buckets``,
        ``members_per_pass``, ``constants``); they change speed and memory, not the numbers.

    Returns:
      :class:`RobustnessReport` with rows ``(condition, prompt)`` for condition in
      :data:`CONDITIONS` and prompt in ``("naive", "soft prompt")``. Deterministic.
    """
    from jaxalign.scoring import make_scorer
    from jaxalign.softprompt import check_soft_prompt
    from jaxalign.survey import Target, resolve_target, vsm13

    instrument = instrument or vsm13()
    heldout = heldout or heldout_for(instrument)
    if tuple(heldout.dimensions) != tuple(instrument.dimensions):
        raise ValueError("the held-out instrument must have the tuned instrument's dimensions")
    if not isinstance(target, Target):
        target = resolve_target(target)
    prompt = np.asarray(soft_prompt, np.float32)
    check_soft_prompt(prompt, lm.config.hidden_size)
    empty = np.zeros((0, lm.config.hidden_size), np.float32)
    settings = {"tuned": (instrument, False), "reversed": (instrument, True), "heldout": (heldout, False)}
    rows = []
    for condition in CONDITIONS:
        inst, reverse = settings[condition]
        for name, p in (("naive", empty), ("soft prompt", prompt)):
            # the naive model gets no system text: it is the plain model
            scorer = make_scorer(lm, inst, k=p.shape[0], target=target, readout=readout, seed=seed,
                                 system=system if p.shape[0] else None, slot=slot, reverse_options=reverse,
                                 **scorer_options)
            scores = scorer(p[None])
            rows.append(ConditionScores(
                condition=condition, prompt=name, wording=inst.wording,
                dims=np.asarray(scores.dims[0]), loss=float(scores.loss[0]),
                item_means=np.asarray(scores.item_means[0]), n_items=inst.n_items,
            ))
    return RobustnessReport(target=target, dimensions=tuple(instrument.dimensions), readout=readout,
                            rows=tuple(rows))
