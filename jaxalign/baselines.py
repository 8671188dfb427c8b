"""Baselines scored with the same scorer and readout as an aligned soft prompt.

- **Naive**: the plain model, no soft prompt, no system text.
- **Persona**: a system text asking the model to answer as a person from the target country.
  A custom target (no country) has no persona: the baseline is skipped for it.
- **ICL**: a system text that describes the target culture, built from the target's published
  scores (the number and a sentence per available dimension).

The texts are the project's own wording. A baseline's loss is directly comparable with an aligned
prompt's loss: same items, same readout, same constants, same L1 over the same dimensions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxalign.model import LM
from jaxalign.survey import Instrument, Target

BASELINES: tuple[str, ...] = ("naive", "persona", "icl")

# dimension -> (sentence for a low score, sentence for a high score); scores 40..60 get both halves
_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "PDI": (
        "people expect power to be shared; bosses consult their staff and hierarchy is a matter of convenience",
        "people accept that power is distributed unequally; subordinates expect to be told what to do and seldom contradict their superiors",
    ),
    "IDV": (
        "people belong to close groups such as the extended family that look after them in exchange for loyalty",
        "people are expected to look after themselves and their immediate family; personal time and freedom matter",
    ),
    "MAS": (
        "caring for others and quality of life matter more than standing out; consensus and pleasant relations are valued",
        "competition, achievement and success drive people; recognition and advancement matter a great deal",
    ),
    "UAI": (
        "people are comfortable with ambiguity; rules can be flexible and the unfamiliar is interesting rather than threatening",
        "people feel uneasy with ambiguity; they value rules, structure and security and often feel tense",
    ),
    "LTO": (
        "people hold on to time-honoured traditions, look for quick results and feel strong national pride",
        "people take a pragmatic long-term view: thrift and perseverance matter and traditions adapt to new circumstances",
    ),
    "IVR": (
        "people restrain their desires; leisure matters little and social norms keep gratification in check",
        "people value enjoying life and having fun, and feel free to act as they please",
    ),
}

_NAMES = {
    "PDI": "power distance",
    "IDV": "individualism",
    "MAS": "masculinity",
    "UAI": "uncertainty avoidance",
    "LTO": "long-term orientation",
    "IVR": "indulgence",
}


def persona_text(target: Target) -> str:
    """The Persona baseline's system text for ``target``."""
    return (
        f"You are a person from {target.name}. Answer every question as a typical person "
        f"from {target.name} would."
    )


def icl_text(target: Target) -> str:
    """The ICL baseline's system text: the target culture described from its published scores.

    Only the target's available dimensions are described; a score below 40 gets the dimension's
    "low" sentence, above 60 its "high" sentence, in between a moderate phrasing.
    """
    place = target.name if target.code else "a country"
    sentences = []
    for name, value in zip(target.dimensions, np.asarray(target.values, np.float64)):
        if math.isnan(value) or name not in _DESCRIPTIONS:
            continue
        low, high = _DESCRIPTIONS[name]
        if value < 40:
            level, text = "low", low
        elif value > 60:
            level, text = "high", high
        else:
            level, text = "moderate", f"neither extreme holds: on the one hand {low}; on the other, {high}"
        sentences.append(
            f"{_NAMES[name].capitalize()} is {level} ({name} {value:.0f} on Hofstede's scale): {text}."
        )
    return (
        f"You are a person from {place}. Here is how researchers describe its culture. "
        + " ".join(sentences)
        + f" Answer every question as a typical person from {place} would."
    )


def baseline_system(name: str, target: Target) -> str | None:
    """The system text of baseline ``name`` for ``target``: ``None`` for ``"naive"``,
    :func:`persona_text` or :func:`icl_text`. Raises ValueError for another name."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    if name == "naive":
        return None
    return persona_text(target) if name == "persona" else icl_text(target)


@dataclasses.dataclass(frozen=True)
class BaselineResult:
    """One baseline's outcome: its system text (None for naive), six dims, loss, answers."""

    name: str
    system: str | None
    dims: np.ndarray        # (D,)
    loss: float
    probs: np.ndarray       # (Q, 5)


def run_baselines(
    lm: LM,
    instrument: Instrument,
    target: Target,
    *,
    names: tuple[str, ...] = BASELINES,
    readout: str = "expected",
    constants=None,
    seed: int = 0,
    shown: Sequence[Any] | None = None,
    offsets: np.ndarray | None = None,
) -> dict[str, BaselineResult]:
    """Scores the named baselines (``"naive"``, ``"persona"``, ``"icl"``) for ``target``.

    ``"persona"`` is skipped for a custom target (one without a Hofstede country code).
    ``shown``: the presentations (:class:`~jaxalign.survey.presentations.Presentation`) a run
    scores, whose dims and answer distributions are averaged as the run averages them (default:
    the instrument as listed); ``offsets`` ``(D,)``: the run's objective constants, added to the
    dims before the L1 (default none: the paper's loss).
    """
    from jaxalign.scoring import make_scorer
    from jaxalign.survey import l1_loss

    if isinstance(names, str):
        names = (names,)
    if not target.code:
        names = tuple(n for n in names if n != "persona")
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
    views = [(instrument, None)] if shown is None else [(p.instrument, p.option_order) for p in shown]
    results = {}
    for name in names:
        system = baseline_system(name, target)
        d = lm.config.hidden_size
        scores = [make_scorer(lm, wording, k=0, target=target, system=system, readout=readout,
                              constants=constants, seed=seed, option_order=order)(np.zeros((1, 0, d), np.float32))
                  for wording, order in views]
        dims = np.mean([np.asarray(s.dims[0]) for s in scores], axis=0)          # (D,)
        probs = np.mean([np.asarray(s.probs[0]) for s in scores], axis=0)        # (Q, 5)
        shifted = dims if offsets is None else dims + np.asarray(offsets, np.float32)
        results[name] = BaselineResult(
            name=name,
            system=system,
            dims=dims,
            loss=float(l1_loss(shifted, target.values)),
            probs=probs,
        )
    return results
