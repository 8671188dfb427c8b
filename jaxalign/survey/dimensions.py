"""Hofstede's six dimensions and the parsing of dimension names typed by users.

Numpy-free and jax-free on purpose: the ``countries`` command imports it and should start fast.
"""

from __future__ import annotations

from collections.abc import Sequence

DIMENSIONS: tuple[str, ...] = ("PDI", "IDV", "MAS", "UAI", "LTO", "IVR")
"""The six VSM 2013 / Hofstede dimensions, in the order used by every ``(..., 6)`` array:
power distance, individualism, masculinity, uncertainty avoidance, long-term orientation,
indulgence versus restraint."""

DIMENSION_NAMES: dict[str, str] = {
    "PDI": "power distance",
    "IDV": "individualism",
    "MAS": "masculinity",
    "UAI": "uncertainty avoidance",
    "LTO": "long-term orientation",
    "IVR": "indulgence versus restraint",
}

# other spellings users meet in the literature and in the data file -> canonical name
_DIMENSION_ALIASES: dict[str, str] = {"LTOWVS": "LTO"}


def canonical_dimension(name: str, dimensions: Sequence[str] = DIMENSIONS) -> str:
    """Return the entry of ``dimensions`` that ``name`` names (case-insensitive, spaces ignored).

    ``LTOWVS`` (the data file's column) is accepted for ``LTO``. Raises ValueError naming the
    accepted names otherwise.
    """
    if not isinstance(name, str):
        raise ValueError(f"a dimension name must be a string, got {name!r}")
    key = name.strip().upper()
    key = _DIMENSION_ALIASES.get(key, key)
    by_upper = {d.upper(): d for d in dimensions}
    if key not in by_upper:
        raise ValueError(
            f"unknown dimension {name!r}; accepted: {', '.join(dimensions)} (case-insensitive)"
        )
    return by_upper[key]
