"""Item-pair halves of VSM 2013: tune on one item pair per index, test on the other.

Every VSM 2013 index is two item-pair differences plus a constant, e.g.
``PDI = 35 (m07 - m02) + 25 (m20 - m23) + C`` (:data:`~jaxalign.survey.vsm13.VSM13_FORMULAS`, pairs
in the manual's order). Half ``"a"`` keeps the first pair of every index, half ``"b"`` the second::

    weights (D, Q)  ->  half h: one pair per row, its coefficient set to the row's sum of pair
                        coefficients (PDI: 60 (m07 - m02) for "a", 60 (m20 - m23) for "b")

so each half reads on the full index's scale: where both pairs move alike (``m07 - m02 = m20 - m23``)
both halves equal the full index, and the full index is the coefficient-weighted mean of the halves
(``35/60 a + 25/60 b`` for PDI). The items, their wording and the constants stay as they are, so a
half composes with every wording and presentation; a prompt tuned on ``"a"`` has seen the items of
``"b"`` (they are rendered and scored) but never a loss that depends on them, and
``jaxalign eval matrix --item-pairs b`` reads it on the differences it was never tuned on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxalign.survey.instrument import Instrument
from jaxalign.survey.vsm13 import VSM13_FORMULAS

#: The halves: ``"a"`` the first item pair of every index, ``"b"`` the second.
HALVES: tuple[str, ...] = ("a", "b")


def _pairs() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``{dimension: (first pair's item ids, second pair's)}`` in the manual's order."""
    out = {}
    for dim, formula in VSM13_FORMULAS.items():
        ids = tuple(formula)  # (+first, -first, +second, -second)
        out[dim] = (ids[:2], ids[2:])
    return out


def half_weights(instrument: Instrument, half: str) -> np.ndarray:
    """The ``(D, Q)`` weights of one half of ``instrument``'s VSM 2013 formulas (module docstring).

    Raises ValueError for another half name, or an instrument whose formulas are not VSM 2013's
    (other dimensions, items or coefficients)."""
    if half not in HALVES:
        raise ValueError(f"item-pair half must be one of {', '.join(HALVES)}, got {half!r}")
    ids = [item.id for item in instrument.items]
    known = tuple(instrument.dimensions) == tuple(VSM13_FORMULAS) and all(
        i in ids for formula in VSM13_FORMULAS.values() for i in formula)
    if known:
        full = np.zeros((len(VSM13_FORMULAS), len(ids)))  # (D, Q) VSM 2013's own weights
        for d, formula in enumerate(VSM13_FORMULAS.values()):
            for item_id, coefficient in formula.items():
                full[d, ids.index(item_id)] = coefficient
        known = np.array_equal(full, np.asarray(instrument.weights, np.float64))
    if not known:
        raise ValueError(f"item-pair halves are defined for VSM 2013's formulas; {instrument.name!r} "
                         "has other dimensions, items or coefficients")
    weights = np.zeros_like(np.asarray(instrument.weights, np.float64))  # (D, Q)
    which = HALVES.index(half)
    for d, (dim, pairs) in enumerate(_pairs().items()):
        total = sum(abs(VSM13_FORMULAS[dim][pair[0]]) for pair in pairs)  # the row's pair coefficients
        plus, minus = pairs[which]
        weights[d, ids.index(plus)] = total
        weights[d, ids.index(minus)] = -total
    return weights


def item_pair_half(instrument: Instrument, half: str | None) -> Instrument:
    """``instrument`` with the weights of one half (``None``: ``instrument`` itself); items,
    wording and constants unchanged. Raises ValueError as :func:`half_weights`."""
    if half is None:
        return instrument
    return dataclasses.replace(instrument, weights=half_weights(instrument, half))
