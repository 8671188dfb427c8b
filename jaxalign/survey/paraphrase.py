"""A second, held-out wording of the 24 VSM 2013 content items (``"jaxalign-heldout-v1"``).

A soft prompt tuned on one wording of the survey may have learned that wording rather than the
values behind it. This module ships an independent rephrasing of every item, written for this
project (not the official questionnaire text, and not a light edit of the built-in
``"jaxalign-v1"`` wording): the same topic, the same answer scale and the same answer
**direction** per item, so the VSM 2013 index formulas keep their meaning. Use it only to
*evaluate* a prompt tuned on another wording (``jaxalign eval robustness``); never tune on it.

Directions kept (1 is always the first label):

- items 1-14: importance, 1 = the most important ... 5 = of little or no importance;
- items 15-16: frequency, 1 = all the time ... 5 = never;
- item 17: 1 = yes, always ... 5 = no, never;
- item 18: health, 1 = excellent ... 5 = very bad; item 19: pride, 1 = very proud ... 5 = not proud;
- item 20: frequency of fear of disagreeing, **1 = never ... 5 = all the time** (reversed, as in
  the manual);
- items 21-24: agreement, 1 = completely agree ... 5 = completely disagree.

Two more held-out wordings ship as package data (``jaxalign/survey/data/heldout_v2.json`` and
``heldout_v3.json``, the :func:`jaxalign.survey.load_wording` schema), each in its own style so
that they test generalisation across register, not one phrasing:

- ``"jaxalign-heldout-v2"``: plain, short, everyday language addressed to "you" ("Your dream
  job ...: How high a priority is that for you?", 1 = a top priority ... 5 = not a priority);
- ``"jaxalign-heldout-v3"``: a formal, impersonal scenario framing ("Scenario: a position is to
  be selected ... What degree of importance would you attach to ...", 1 = paramount ... 5 = of
  negligible importance).

Both keep every item's topic and direction as listed above (item 20: 1 = never ... 5 = always).
:data:`HELDOUT_WORDINGS` names all three; :func:`heldout_wording` returns any of them. None may
be tuned on (:func:`jaxalign.optimize.problem.tuning_wording` refuses them by name and by text).
"""

from __future__ import annotations

import json
from importlib import resources

from jaxalign.survey.instrument import Constants, Instrument, Item

HELDOUT_WORDING = "jaxalign-heldout-v1"
# every held-out wording: v1 is written below, v2 and v3 are package data (data/heldout_v<k>.json)
HELDOUT_WORDINGS: tuple[str, ...] = (HELDOUT_WORDING, "jaxalign-heldout-v2", "jaxalign-heldout-v3")
_DATA_FILES = {"jaxalign-heldout-v2": "heldout_v2.json", "jaxalign-heldout-v3": "heldout_v3.json"}

_IMPORTANCE = (
    "of the utmost importance",
    "of great importance",
    "of some importance",
    "of minor importance",
    "of very little or no importance",
)
_AGREEMENT = (
    "I completely agree",
    "I mostly agree",
    "I am undecided",
    "I mostly disagree",
    "I completely disagree",
)
_OFTEN_FIRST = ("all the time", "usually", "now and then", "seldom", "not at all")

_JOB = (
    "Suppose you could pick any job you liked, regardless of the work you do now. In that "
    "job of your choice, {}: how much would this matter to you?"
)
_PRIVATE = "Outside of work, in your own personal life, {}: how much does this matter to you?"
_STATEMENT = 'Here is an opinion: "{}" To what extent do you share it?'

_JOB_TOPICS = (  # items 1-10
    "having enough hours left over for your family and your personal interests",
    "working under a manager you can look up to",
    "being given credit when you do your work well",
    "knowing that you will not lose your position",
    "working alongside colleagues who are easy to get on with",
    "doing tasks that you find engaging",
    "being involved by your manager in the decisions that affect your own work",
    "living in a place that you like",
    "doing work that your relatives and friends think well of",
    "having good prospects of moving up to a higher position",
)
_PRIVATE_TOPICS = (  # items 11-14
    "keeping some time for leisure and having a good time",
    "being content with few possessions and desiring little",
    "helping out a friend when asked",
    "being careful with money and avoiding spending beyond what is needed",
)

_HELDOUT: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    *((str(k), _JOB.format(topic), _IMPORTANCE) for k, topic in enumerate(_JOB_TOPICS, 1)),
    *((str(k), _PRIVATE.format(topic), _IMPORTANCE) for k, topic in enumerate(_PRIVATE_TOPICS, 11)),
    ("15", "In your daily life, how often are you anxious or on edge?", _OFTEN_FIRST),
    ("16", "How often do you feel cheerful and content with your life?", _OFTEN_FIRST),
    (
        "17",
        "Are there people or situations that prevent you from doing what you would really "
        "like to do?",
        ("yes, all the time", "yes, usually", "now and then", "no, seldom", "no, not at all"),
    ),
    (
        "18",
        "How would you describe the state of your physical and mental health these days?",
        ("excellent", "fairly good", "average", "rather bad", "very bad"),
    ),
    (
        "19",
        "How proud are you to hold the citizenship of your country?",
        ("extremely proud", "fairly proud", "a little proud", "hardly proud", "not proud at all"),
    ),
    (
        "20",
        "Where you have worked or studied, how often are people reluctant to voice disagreement "
        "with the person in charge of them (a manager, or a teacher)?",
        ("not at all", "seldom", "now and then", "usually", "all the time"),  # 1 = never
    ),
    (
        "21",
        _STATEMENT.format(
            "A manager can do the job well even without knowing the precise answer to every "
            "work question that a member of staff asks."
        ),
        _AGREEMENT,
    ),
    (
        "22",
        _STATEMENT.format("Results come most surely to those who keep working hard and do not give up."),
        _AGREEMENT,
    ),
    (
        "23",
        _STATEMENT.format(
            "An organisation should never be set up so that a member of staff answers to two "
            "different managers."
        ),
        _AGREEMENT,
    ),
    (
        "24",
        _STATEMENT.format(
            "Staff must follow the rules of their organisation even when they think that "
            "breaking a rule would be good for the organisation."
        ),
        _AGREEMENT,
    ),
)


def heldout_items() -> tuple[Item, ...]:
    """The held-out wording of the 24 VSM 2013 content items, ids ``"1"``..``"24"``."""
    return tuple(Item(item_id, text, options) for item_id, text, options in _HELDOUT)


def heldout_vsm13(constants: Constants = None, base: Instrument | None = None) -> Instrument:
    """VSM 2013 with the held-out wording (``wording == "jaxalign-heldout-v1"``).

    Args:
        constants: constants C (None: those of ``base``, or all 0 without ``base``).
        base: the instrument whose formulas and constants to keep (default
            :func:`jaxalign.survey.vsm13`); it must have the VSM 2013 item ids.

    Returns:
        An :class:`~jaxalign.survey.Instrument` with the same weights ``(6, 24)`` as ``base``.
    """
    if base is None:
        from jaxalign.survey.vsm13 import vsm13

        base = vsm13()
    instrument = base.with_items(heldout_items(), wording=HELDOUT_WORDING)
    return instrument if constants is None else instrument.with_constants(constants)


def heldout_wording(name: str, constants: Constants = None, base: Instrument | None = None) -> Instrument:
    """VSM 2013 with one of the held-out wordings (:data:`HELDOUT_WORDINGS`).

    Args:
        name: ``"jaxalign-heldout-v1"`` (:func:`heldout_vsm13`), ``"jaxalign-heldout-v2"`` or
            ``"jaxalign-heldout-v3"`` (read from the package data).
        constants: constants C (None: those of ``base``, or all 0 without ``base``).
        base: the instrument whose formulas and constants to keep (default
            :func:`jaxalign.survey.vsm13`); it must have the VSM 2013 item ids.

    Returns:
        An :class:`~jaxalign.survey.Instrument` with ``wording == name`` and the weights of ``base``.

    Raises:
        ValueError: ``name`` is not a held-out wording (the message lists them).
    """
    if name == HELDOUT_WORDING:
        return heldout_vsm13(constants=constants, base=base)
    if name not in _DATA_FILES:
        raise ValueError(f"unknown held-out wording {name!r}; the held-out wordings are "
                         f"{', '.join(repr(n) for n in HELDOUT_WORDINGS)}")
    from jaxalign.survey.vsm13 import _parse_wording, vsm13

    source = _DATA_FILES[name]
    text = resources.files("jaxalign.survey").joinpath("data").joinpath(source).read_text(encoding="utf-8")
    file_name, items = _parse_wording(json.loads(text), source)
    if file_name != name:  # the packaged file must be the wording it is shipped as
        raise ValueError(f"package data {source} holds wording {file_name!r}, expected {name!r}")
    instrument = (vsm13() if base is None else base).with_items(items, wording=name)
    return instrument if constants is None else instrument.with_constants(constants)
