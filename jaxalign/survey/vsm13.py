"""Hofstede & Minkov's Values Survey Module 2013 (VSM 2013): 24 content items, six indices.

The official questionnaire text is copyright Geert Hofstede BV and is not shipped. The package
ships its own wording of each item (``wording="jaxalign-v1"``): the same topics, scales and
answer directions, phrased independently, each item self-contained because a model sees one
item at a time. Users who hold the official text (free for academic research) load it from a
JSON file with :func:`load_wording`; ``Instrument.wording`` then says ``"user:<name>"``.

Index formulas (VSM 2013 manual; ``m_k`` = mean answer to item k, coded 1..5)::

    PDI = 35(m07 - m02) + 25(m20 - m23) + C
    IDV = 35(m04 - m01) + 35(m09 - m06) + C
    MAS = 35(m05 - m03) + 35(m08 - m10) + C      (35 on both terms; "25" is a known typo)
    UAI = 40(m18 - m15) + 25(m21 - m24) + C
    LTO = 40(m13 - m14) + 25(m19 - m22) + C
    IVR = 35(m12 - m11) + 40(m17 - m16) + C

The constants default to 0. VSM scores of a new sample are comparable to other samples of the
same kind, not directly to published country scores; see
:func:`jaxalign.survey.anchor_constants` to anchor a reference sample on published scores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from jaxalign.survey.dimensions import DIMENSIONS
from jaxalign.survey.instrument import N_OPTIONS, Constants, Instrument, Item

BUILTIN_WORDING = "jaxalign-v1"

VSM13_FORMULAS: dict[str, dict[str, float]] = {
    "PDI": {"7": 35, "2": -35, "20": 25, "23": -25},
    "IDV": {"4": 35, "1": -35, "9": 35, "6": -35},
    "MAS": {"5": 35, "3": -35, "8": 35, "10": -35},
    "UAI": {"18": 40, "15": -40, "21": 25, "24": -25},
    "LTO": {"13": 40, "14": -40, "19": 25, "22": -25},
    "IVR": {"12": 35, "11": -35, "17": 40, "16": -40},
}
assert tuple(VSM13_FORMULAS) == DIMENSIONS

# ---------------------------------------------------------------------------- own wording
# Answer scales (1 is always the first label).
_IMPORTANCE = (
    "extremely important",
    "very important",
    "moderately important",
    "only slightly important",
    "of little or no importance",
)
_AGREEMENT = (
    "strongly agree",
    "agree",
    "neither agree nor disagree",
    "disagree",
    "strongly disagree",
)
_FREQUENCY_ALWAYS_FIRST = ("always", "often", "sometimes", "rarely", "never")

_JOB = (
    "Picture the job you would most like to have, leaving aside any job you hold at the "
    "moment. When choosing that ideal job, how important would it be to you {}?"
)
_PRIVATE = "Thinking about your private life rather than your work, how important to you is {}?"
_STATEMENT = 'How far do you agree or disagree with the following statement? "{}"'

# items 1-10: what the ideal job would offer; 11-14: what matters in private life
_JOB_TOPICS = (
    "that it leaves you sufficient time for your personal or family life",
    "to have a boss (your direct superior) whom you can respect",
    "that good work on your part is recognised",
    "that your employment is secure",
    "that the people you work with are pleasant",
    "that the work itself is interesting",
    "that your boss asks for your views before making decisions that involve your work",
    "that the job lets you live in an area you find desirable",
    "that it is a job your family and friends hold in high regard",
    "that the job offers opportunities for promotion",
)
_PRIVATE_TOPICS = (
    "having free time set aside for fun and enjoyment",
    "moderation, in the sense of wanting only a few things",
    "doing a favour for a friend",
    "thrift, in the sense of not spending more money than necessary",
)

_OWN_WORDING: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    *((str(k), _JOB.format(topic), _IMPORTANCE) for k, topic in enumerate(_JOB_TOPICS, 1)),
    *((str(k), _PRIVATE.format(topic), _IMPORTANCE) for k, topic in enumerate(_PRIVATE_TOPICS, 11)),
    (
        "15",
        "How frequently do you find yourself feeling nervous or tense?",
        _FREQUENCY_ALWAYS_FIRST,
    ),
    (
        "16",
        "How frequently would you say that you are a happy person?",
        _FREQUENCY_ALWAYS_FIRST,
    ),
    (
        "17",
        "Do you find that other people, or your circumstances, keep you from doing the things "
        "you truly want to do?",
        ("yes, always", "yes, often", "sometimes", "no, rarely", "no, never"),
    ),
    (
        "18",
        "Taking everything into account, how would you rate your health at present?",
        ("very good", "good", "fair", "poor", "very poor"),
    ),
    (
        "19",
        "How much pride do you take in being a citizen of your country?",
        ("very proud", "quite proud", "somewhat proud", "not very proud", "not proud at all"),
    ),
    (
        "20",
        "From what you have seen, how frequently are employees afraid to disagree openly with "
        "their superior (or students with their teacher)?",
        ("never", "rarely", "sometimes", "often", "always"),  # reversed: 1 = never
    ),
    (
        "21",
        _STATEMENT.format(
            "Someone can be a good manager without being able to give an exact answer to every "
            "question a subordinate brings up about their work."
        ),
        _AGREEMENT,
    ),
    (
        "22",
        _STATEMENT.format("Steady, persistent effort is the most reliable way to get results."),
        _AGREEMENT,
    ),
    (
        "23",
        _STATEMENT.format(
            "Organisations should do everything they can to avoid structures in which some "
            "employees report to two bosses."
        ),
        _AGREEMENT,
    ),
    (
        "24",
        _STATEMENT.format(
            "Employees should keep to their organisation's rules, even where they believe that "
            "breaking a rule would benefit the organisation."
        ),
        _AGREEMENT,
    ),
)

VSM13_ITEM_IDS: tuple[str, ...] = tuple(str(k) for k in range(1, 25))


def builtin_items() -> tuple[Item, ...]:
    """The package's own wording of the 24 VSM 2013 content items (``"jaxalign-v1"``)."""
    return tuple(Item(item_id, text, options) for item_id, text, options in _OWN_WORDING)


def vsm13(
    wording: Union[None, str, os.PathLike] = None,
    constants: Constants = None,
) -> Instrument:
    """The VSM 2013 instrument: 24 items (ids ``"1"``..``"24"``), dimensions :data:`DIMENSIONS`.

    Args:
        wording: None or ``"jaxalign-v1"`` for the package's own wording; otherwise the path of
            a JSON wording file (schema in :func:`load_wording`).
        constants: None (all 0), ``{dimension: value}`` (others 0) or ``(6,)``.

    Returns:
        The instrument; ``weights`` is ``(6, 24)``, ``constants`` ``(6,)``.
    """
    instrument = Instrument.from_formulas(
        "VSM 2013", BUILTIN_WORDING, builtin_items(), VSM13_FORMULAS, constants=constants
    )
    if wording is None or (isinstance(wording, str) and wording == BUILTIN_WORDING):
        return instrument
    return load_wording(wording, instrument)


def load_wording(path: Union[str, os.PathLike], instrument: Instrument | None = None) -> Instrument:
    """Apply a wording read from a JSON file to an instrument (default: :func:`vsm13`).

    Schema (UTF-8 JSON)::

        {
          "name": "official-en",              # optional; default: the file name
          "items": [
            {"id": "1", "text": "...", "options": ["label 1", "...", "...", "...", "label 5"]},
            ...                                # exactly one entry per item of the instrument
          ]
        }

    - ``id``: the item id as a string (an integer is accepted); VSM 2013 uses ``"1"``..``"24"``.
    - ``text``: the whole question as a respondent should see it.
    - ``options``: the five answer labels; the first is coded 1, the fifth 5, so they must run
      in the direction the scoring formulas assume (e.g. item 20: 1 = never ... 5 = always).
    - Items may come in any order; other keys are ignored.

    The returned instrument has ``wording == "user:<name>"`` and keeps ``instrument``'s weights
    and constants. Either the whole file is valid or nothing is returned.

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad JSON, a missing field, a wrong option count, a duplicate, unknown or
            missing item id; the message names the file and the item.
    """
    base = vsm13() if instrument is None else instrument
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"wording file not found: {str(file)!r} (a wording is {BUILTIN_WORDING!r}, the "
            f"package's own, or the path of a JSON wording file)"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file.name}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{file.name}: not UTF-8 text ({error})") from None
    name, items = _parse_wording(data, file.name)
    try:
        return base.with_items(items, wording=f"user:{name}")
    except ValueError as error:
        raise ValueError(f"{file.name}: {error}") from None


def save_wording(
    instrument: Instrument, path: Union[str, os.PathLike], name: str | None = None
) -> Path:
    """Write an instrument's wording in the :func:`load_wording` schema (UTF-8 JSON).

    Handy as a template: ``save_wording(vsm13(), "official.json")``, replace each text and label
    by the official ones, then ``vsm13(wording="official.json")``.

    Returns:
        The path written.
    """
    file = Path(path)
    payload = {
        "name": name or instrument.wording,
        "items": [
            {"id": item.id, "text": item.text, "options": list(item.options)}
            for item in instrument.items
        ],
    }
    file.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return file


def _parse_wording(data: Any, source: str) -> tuple[str, list[Item]]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: the top level must be a JSON object with an 'items' list")
    name = data.get("name", source)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: 'name' must be a non-empty string")
    if "items" not in data:
        raise ValueError(f"{source}: missing field 'items'")
    entries = data["items"]
    if not isinstance(entries, list):
        raise ValueError(f"{source}: 'items' must be a list of objects")
    items: list[Item] = []
    for position, entry in enumerate(entries, start=1):
        where = f"{source}: items[{position - 1}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be an object with 'id', 'text' and 'options'")
        for field in ("id", "text", "options"):
            if field not in entry:
                raise ValueError(f"{where}: missing field {field!r}")
        item_id = entry["id"]
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)
        if not isinstance(item_id, str):
            raise ValueError(f"{where}: 'id' must be a string, got {item_id!r}")
        where = f"{source}: item {item_id!r}"
        options = entry["options"]
        if not isinstance(options, list):
            raise ValueError(f"{where}: 'options' must be a list of {N_OPTIONS} labels")
        if len(options) != N_OPTIONS:
            raise ValueError(
                f"{where}: expected {N_OPTIONS} option labels, got {len(options)}"
            )
        try:
            items.append(Item(item_id, entry["text"], tuple(options)))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
    return name.strip(), items
