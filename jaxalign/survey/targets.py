"""Country targets: Hofstede's published six-dimension scores, and user-made targets.

The shipped figures are Hofstede's "dimension data matrix", release 2015-08-16
(``data/hofstede_6d_2015-08-16.csv``, 111 rows: countries, regions such as "Arab countries"
and sub-national rows such as "Belgium French"). Missing scores are NaN and are left out of
the loss. Cite: Hofstede, G., Hofstede, G. J., & Minkov, M. (2010). *Cultures and
Organizations: Software of the Mind* (3rd ed.). McGraw-Hill.

Imports numpy only (no jax), so the ``jaxalign countries`` command starts fast.

How far a target may lie from the published scores: a value that no
answers can give (outside :func:`reachable_range` of the instrument, e.g. ``PDI=800``: VSM 2013's
PDI lies in -240..240 whatever the answers) is refused with an error by :func:`check_reachable`
(``jaxalign align``/``score`` on ``--target``, :func:`jaxalign.align` before it renders
anything). A reachable value outside :func:`published_range` (0..112 in the shipped release) is
legitimate (a planted target made from a random prompt's dims, another sample's constants), so
it is never refused; the command line warns once (:func:`outside_published`), the API stays
silent.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, Union

import numpy as np

from jaxalign.survey.dimensions import DIMENSIONS, canonical_dimension

HOFSTEDE_RELEASE = "2015-08-16"
HOFSTEDE_DATA_FILE = f"hofstede_6d_{HOFSTEDE_RELEASE}.csv"
HOFSTEDE_CITATION = (
    "Hofstede, G., Hofstede, G. J., & Minkov, M. (2010). Cultures and Organizations: "
    "Software of the Mind (3rd ed.). McGraw-Hill."
)
HOFSTEDE_SOURCE = (
    f"Hofstede 6-D country scores, release {HOFSTEDE_RELEASE} "
    f"(Hofstede, Hofstede & Minkov 2010, Cultures and Organizations, 3rd ed.)"
)

# CSV column -> dimension
_COLUMNS = {"pdi": "PDI", "idv": "IDV", "mas": "MAS", "uai": "UAI", "ltowvs": "LTO", "ivr": "IVR"}
_MISSING = "#NULL!"

# common names -> Hofstede code (keys are normalised with _normalise)
_ALIASES: dict[str, str] = {
    "us": "USA", "united states": "USA", "united states of america": "USA", "america": "USA",
    "uk": "GBR", "united kingdom": "GBR", "britain": "GBR", "great britain": "GBR",
    "england": "GBR", "gb": "GBR",
    "korea": "KOR", "south korea": "KOR", "republic of korea": "KOR",
    "arab world": "ARA", "arab countries": "ARA", "arab": "ARA", "arabic countries": "ARA",
    "czechia": "CZE", "czech republic": "CZE", "czech": "CZE",
    "slovakia": "SLK", "slovak republic": "SLK",
    "russian federation": "RUS",
    "kyrgyzstan": "KYR", "kyrgyz republic": "KYR",
    "macedonia": "MAC", "north macedonia": "MAC",
    "dominican republic": "DOM",
    "bosnia and herzegovina": "BOS", "bosnia herzegovina": "BOS",
    "china": "CHI", "prc": "CHI", "peoples republic of china": "CHI", "mainland china": "CHI",
    "viet nam": "VIE",
    "holland": "NET",
    "turkiye": "TUR", "türkiye": "TUR",
    "east germany": "GEE",
    "east africa": "AFE", "west africa": "AFW",
    "belgium dutch": "BEN", "belgium flemish": "BEN", "flanders": "BEN",
    "wallonia": "BEF",
    "french canada": "CAF", "quebec": "CAF",
    "trinidad": "TRI",
    "hong kong sar": "HOK",
    "republic of moldova": "MOL",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    """Scores a model should reach, one per dimension, NaN where unknown.

    Attributes:
        name: e.g. ``"China"`` or ``"custom"``.
        code: Hofstede's 3-letter code (``"CHI"``), or None for a custom target.
        values: ``(D,)`` float32, read-only, NaN where the dimension is missing.
        dimensions: names of the ``D`` values (default :data:`DIMENSIONS`).
        source: where the figures come from (release and citation for Hofstede targets).
    """

    name: str
    code: str | None
    values: np.ndarray  # (D,) float32, NaN = missing
    dimensions: tuple[str, ...] = DIMENSIONS
    source: str = ""

    def __post_init__(self) -> None:
        dimensions = tuple(self.dimensions)
        values = np.array(self.values, dtype=np.float32)
        if values.shape != (len(dimensions),):
            raise ValueError(
                f"target {self.name!r}: values must have shape ({len(dimensions)},) for "
                f"{dimensions}, got {values.shape}"
            )
        if np.any(np.isinf(values)):
            raise ValueError(f"target {self.name!r}: values must be finite or NaN (missing)")
        if np.all(np.isnan(values)):
            raise ValueError(f"target {self.name!r} has no usable dimension (all missing)")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "dimensions", dimensions)

    @property
    def mask(self) -> np.ndarray:
        """``(D,)`` bool, True where the target has a score."""
        return ~np.isnan(self.values)

    @property
    def available(self) -> tuple[str, ...]:
        """Names of the dimensions the target has."""
        return tuple(d for d, ok in zip(self.dimensions, self.mask) if ok)

    def as_dict(self) -> dict[str, float | None]:
        """``{dimension: score or None}``, JSON-ready."""
        return {
            d: (None if math.isnan(v) else float(v)) for d, v in zip(self.dimensions, self.values)
        }

    def __repr__(self) -> str:
        scores = ", ".join(
            f"{d}={'-' if v is None else f'{v:g}'}" for d, v in self.as_dict().items()
        )
        code = f" ({self.code})" if self.code else ""
        return f"Target({self.name!r}{code}: {scores})"


# ------------------------------------------------------------------------------ loading
def _read_rows() -> list[dict[str, str]]:
    text = resources.files("jaxalign.survey").joinpath("data", HOFSTEDE_DATA_FILE).read_text(
        encoding="utf-8"
    )
    return list(csv.DictReader(io.StringIO(text)))


def _target_from_row(row: Mapping[str, str]) -> Target:
    values = [
        math.nan if row[column].strip() == _MISSING else float(row[column])
        for column in _COLUMNS
    ]
    return Target(
        name=row["country"].strip(),
        code=row["ctr"].strip(),
        values=np.array(values, dtype=np.float32),
        dimensions=DIMENSIONS,
        source=HOFSTEDE_SOURCE,
    )


def countries(filter: str | None = None) -> list[Target]:
    """All Hofstede targets of the shipped release, in file order (111 rows).

    Args:
        filter: keep rows whose name or code contains this text (case-insensitive), plus the
            row a common alias names exactly (``"UK"``, ``"South Korea"``...). None keeps all.
    """
    targets = [_target_from_row(row) for row in _read_rows()]
    if filter is None or not filter.strip():
        return targets
    needle = _normalise(filter)
    alias_code = _ALIASES.get(needle)
    return [
        t
        for t in targets
        if needle in _normalise(t.name) or needle in t.code.lower() or t.code == alias_code
    ]


def hofstede(name_or_code: str) -> Target:
    """The published scores of one country or region, by name, alias or Hofstede code.

    Case, dots and a leading "the" are ignored: ``"china"``, ``"CHI"``, ``"USA"``, ``"U.S.A."``,
    ``"United States"``, ``"UK"``, ``"South Korea"``, ``"Arab World"``, ``"Czechia"`` all work.
    Note Hofstede's codes are not ISO codes (``CHI`` is China, ``GER`` Germany, ``MAL``
    Malaysia). Missing dimensions are NaN (e.g. Saudi Arabia has only LTO and IVR in this
    release; "Arab countries" has all six).

    Raises:
        ValueError: unknown name; the message lists the closest matches.
    """
    if not isinstance(name_or_code, str) or not name_or_code.strip():
        raise ValueError(f"a country name or code is required, got {name_or_code!r}")
    targets = countries()
    key = _normalise(name_or_code)
    by_key: dict[str, Target] = {}
    for target in targets:
        by_key[_normalise(target.name)] = target
        by_key[target.code.lower()] = target
    by_code = {t.code: t for t in targets}
    for alias, code in _ALIASES.items():
        by_key.setdefault(alias, by_code[code])
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=8, cutoff=0.6)
    suggestions: list[str] = []
    for match in close:
        label = f"{by_key[match].name} ({by_key[match].code})"
        if label not in suggestions:
            suggestions.append(label)
    hint = f"closest matches: {', '.join(suggestions)}" if suggestions else "no close match"
    raise ValueError(
        f"unknown country {name_or_code!r}; {hint}. "
        f"Run `jaxalign countries` for all {len(targets)} names and codes."
    )


def custom_target(spec: Union[str, Mapping[str, Any]], name: str = "custom") -> Target:
    """A target of your own: some or all of the six dimensions, the rest missing (NaN).

    Args:
        spec: ``{"PDI": 80, "IDV": 20}`` or the string ``"PDI=80,IDV=20"``; dimension names are
            case-insensitive (``LTOWVS`` is accepted for LTO); values must be finite numbers.
        name: the target's name.

    Raises:
        ValueError: empty spec, unknown or repeated dimension, or a value that is not a number.
    """
    if isinstance(spec, str):
        pairs = _parse_spec(spec)
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        raise ValueError(
            f"a custom target is a mapping {{'PDI': 80, ...}} or a string 'PDI=80,IDV=20', "
            f"got {type(spec).__name__}"
        )
    if not pairs:
        raise ValueError(
            "empty target: give at least one dimension, e.g. 'PDI=80,IDV=20' "
            f"(dimensions: {', '.join(DIMENSIONS)})"
        )
    values = np.full(len(DIMENSIONS), np.nan, dtype=np.float32)
    seen: set[str] = set()
    for key, raw in pairs:
        dim = canonical_dimension(key, DIMENSIONS)
        if dim in seen:
            raise ValueError(f"dimension {dim} given twice in the target")
        seen.add(dim)
        values[DIMENSIONS.index(dim)] = _to_number(raw, dim)
    return Target(name=name, code=None, values=values, dimensions=DIMENSIONS, source="user")


def resolve_target(text: Union[str, Mapping[str, Any], Target]) -> Target:
    """A target from what a user typed: a country name/alias/code, or ``"DIM=value,..."``.

    A :class:`Target` is returned as is; a mapping goes to :func:`custom_target`.
    """
    if isinstance(text, Target):
        return text
    if isinstance(text, Mapping):
        return custom_target(text)
    if not isinstance(text, str):
        raise ValueError(f"a target is a country name or 'DIM=value,...', got {text!r}")
    if "=" in text:
        return custom_target(text)
    return hofstede(text)


# ------------------------------------------------------------------------------ plausible values
def published_range() -> tuple[float, float]:
    """``(low, high)``: the lowest and highest score of the shipped release over all six
    dimensions (0 and 112 in release 2015-08-16; scores are not capped at 100)."""
    values = np.stack([t.values for t in countries()])  # (rows, D), NaN = missing
    return float(np.nanmin(values)), float(np.nanmax(values))


def outside_published(target: Target) -> list[str]:
    """The target's scores outside :func:`published_range`, as ``["PDI=150", ...]`` (empty if none)."""
    low, high = published_range()
    return [f"{d}={v:g}" for d, v in zip(target.dimensions, target.values.tolist())
            if not math.isnan(v) and not low <= v <= high]


def reachable_range(instrument: Any) -> np.ndarray:
    """``(D, 2)`` float64: the lowest and highest index each dimension of ``instrument`` can take.

    The indices are linear in the item means (``means @ weights.T + constants``) and every item
    mean lies in ``1..n_options``, so the extremes are the corners of that box: for VSM 2013 with
    constants 0, PDI lies in -240..240, IDV and MAS in -280..280, UAI and LTO in -260..260, IVR
    in -300..300. ``instrument`` is a :class:`jaxalign.survey.Instrument`.
    """
    weights = np.asarray(instrument.weights, np.float64)  # (D, Q)
    constants = np.asarray(instrument.constants, np.float64)  # (D,)
    top = float(instrument.n_options)
    low = np.where(weights > 0, 1.0, top) * weights  # (D, Q): each item at its lowering end
    high = np.where(weights > 0, top, 1.0) * weights
    return np.stack([low.sum(axis=1) + constants, high.sum(axis=1) + constants], axis=1)


def check_reachable(target: Target, instrument: Any) -> None:
    """Raises ``ValueError`` when a score of ``target`` lies where no answers can take the
    instrument's index (:func:`reachable_range`), e.g. ``PDI=800`` on VSM 2013.

    Such a target cannot be met and is most likely a typo; the message gives the reachable and
    the published ranges. Dimensions the target lacks are not checked.
    """
    bounds = reachable_range(instrument)  # (D, 2)
    far = [f"{d}={v:g} (reachable: {lo:g}..{hi:g})"
           for d, v, (lo, hi) in zip(instrument.dimensions, np.asarray(target.values, np.float64), bounds)
           if not math.isnan(v) and not lo <= v <= hi]
    if far:
        low, high = published_range()
        raise ValueError(
            f"target {target.name!r}: no answers to {instrument.name} can give {', '.join(far)}; "
            f"published Hofstede scores lie in {low:g}..{high:g} (release {HOFSTEDE_RELEASE})")


# ------------------------------------------------------------------------------ helpers
def _normalise(text: str) -> str:
    text = text.strip().lower().replace("&", " and ")
    text = re.sub(r"[.'’]", "", text)
    text = re.sub(r"[\s,_\-/]+", " ", text).strip()
    if text.startswith("the "):
        text = text[4:]
    return text


def _parse_spec(spec: str) -> list[tuple[str, str]]:
    pairs = []
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(
                f"cannot read {part.strip()!r} in target {spec!r}: expected DIM=value, "
                f"e.g. 'PDI=80,IDV=20'"
            )
        key, _, value = part.partition("=")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _to_number(raw: Any, dim: str) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"score for {dim} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"score for {dim} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"score for {dim} must be finite, got {raw!r} (leave it out if unknown)")
    return value
