"""Presentations: the ways one survey item is shown to a model, and the map back to its scale.

A model's answer to a five-point item moves with *where* an option is printed (the first
option, the last one) as well as with what it says. A presentation is one (wording, option
order) pair; scoring every item in several presentations and averaging the item means (in the
instrument's answer codes) **before** the indices are formed cancels what follows the position
and keeps what follows the content::

    instrument, orders="both", wordings=(pool...)
      -> presentations  (wording x option order)                       S presentations
      -> item means per presentation, each mapped back to codes 1..5   (S, P, Q)
      -> mean over presentations                                       (P, Q)
      -> instrument indices                                            (P, D)

Option orders (:data:`ORDERS`): ``"one"`` (as listed), ``"both"`` (as listed and reversed) and
``"cyclic"`` (the five cyclic rotations: every code is shown once at every position, so a pure
position effect cancels exactly in the mean). An order is the tuple of original codes in the
order shown: ``(5, 4, 3, 2, 1)`` is the reversed one, ``(2, 3, 4, 5, 1)`` a rotation.

The VSM indices are linear in the item means, so the indices of the averaged means equal the
average of each presentation's indices: :func:`average_presentations` averages item means and
answer distributions, and the indices follow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxalign.survey.instrument import Instrument

#: The option-order sets a run or a score may use.
ORDERS: tuple[str, ...] = ("one", "both", "cyclic")


@dataclasses.dataclass(frozen=True)
class Presentation:
    """One way of showing every item: a wording and an option order.

    Attributes:
      name: ``"normal"``, ``"reversed"``, ``"cyclic1"``..``"cyclic4"`` for the instrument's own
        wording; ``"wording:<name>"`` (as listed) or ``"wording:<name>/<order>"`` for another
        wording (e.g. ``"wording:jaxalign-heldout-v2/reversed"``).
      instrument: the wording's instrument (same formulas and constants as the run's).
      option_order: ``(n,)`` original codes in the order shown (``(1, 2, 3, 4, 5)``: as listed).
    """

    name: str
    instrument: Instrument
    option_order: tuple[int, ...]

    @property
    def reversed(self) -> bool:
        return self.option_order == tuple(range(len(self.option_order), 0, -1))


def option_orders(kind: str, n_options: int = 5) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(name, order)`` pairs of the option-order set ``kind`` (:data:`ORDERS`) for ``n`` options.

    ``"one"``: ``normal``; ``"both"``: ``normal``, ``reversed``; ``"cyclic"``: ``normal`` then
    ``cyclic1``..``cyclic{n-1}`` (rotation by 1..n-1: ``cyclic1`` shows codes ``2, 3, ..., n, 1``).
    """
    if kind not in ORDERS:
        raise ValueError(f"unknown option orders {kind!r}; choose one of {', '.join(ORDERS)}")
    listed = tuple(range(1, n_options + 1))
    if kind == "one":
        return (("normal", listed),)
    if kind == "both":
        return (("normal", listed), ("reversed", listed[::-1]))
    return (("normal", listed),) + tuple(
        (f"cyclic{r}", listed[r:] + listed[:r]) for r in range(1, n_options))


def presentations(instrument: Instrument, orders: str = "one",
                  wordings: Sequence[Instrument] = ()) -> tuple[Presentation, ...]:
    """Every (wording, option order) of a run: ``instrument`` first, then each of ``wordings``,
    each in every order of :func:`option_orders` (``orders``). Names are unique."""
    n_options = len(tuple(instrument.items[0].options))
    out = []
    for i, wording in enumerate((instrument, *wordings)):
        for order_name, order in option_orders(orders, n_options):
            name = order_name if i == 0 else f"wording:{wording.wording}" + (
                "" if order_name == "normal" else f"/{order_name}")
            out.append(Presentation(name=name, instrument=wording, option_order=order))
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two presentations share a name ({', '.join(names)}): give each wording its own name")
    return tuple(out)


def average_presentations(values: Sequence[np.ndarray]):
    """The mean over presentations of per-presentation arrays already in answer-code order
    (item means ``(P, Q)``, answer distributions ``(P, Q, 5)`` or indices ``(P, D)``)."""
    if not values:
        raise ValueError("no presentation to average")
    return sum(values[1:], values[0]) / len(values)


def position_content_split(shift_normal: np.ndarray, shift_reversed: np.ndarray) -> dict[str, np.ndarray]:
    """Splits a prompt's shift of the indices from the plain model, read in the normal and the
    reversed option order, into the part that follows the option's **position**
    ``(normal - reversed) / 2`` and the part that follows its **content** ``(normal + reversed) / 2``
    (arrays ``(..., D)``; a shift that only moves answers towards the first printed option is all
    position, one that moves the meaning alike in both orders all content)."""
    shift_normal, shift_reversed = np.asarray(shift_normal), np.asarray(shift_reversed)
    return {"position": (shift_normal - shift_reversed) / 2, "content": (shift_normal + shift_reversed) / 2}
