"""Survey room: Likert instruments with linear indices, VSM 2013, country targets, losses.

Importing this package does not import jax (the losses and ``Instrument.indices`` import it
when first used), so the ``jaxalign countries`` command starts fast.

- :class:`Item`, :class:`Instrument`: any Likert instrument whose indices are linear in the
  item means; ``instrument.indices(item_means (..., Q)) -> (..., D)``.
- :func:`vsm13`, :func:`load_wording`, :func:`save_wording`: Hofstede & Minkov's VSM 2013, in
  the package's own wording or a wording from a user JSON file (``save_wording`` writes a
  template in that schema).
- :func:`anchor_constants`: constants that place a reference sample on published scores.
- :class:`Target`, :func:`hofstede`, :func:`countries`, :func:`custom_target`,
  :func:`resolve_target`: what to align to (Hofstede release 2015-08-16, or your own scores).
- :func:`l1_loss`, :func:`kendall_tau`: the distance and a cross-country rank check.
- :mod:`~jaxalign.survey.objectives` (:func:`make_objective`, ``"paper"`` / ``"anchored"`` /
  ``"relative"``): losses with or without the arbitrary constants.
- :mod:`~jaxalign.survey.presentations` (:func:`presentations`, option orders ``"one"`` /
  ``"both"`` / ``"cyclic"``): the (wording, option order) pairs an item is scored in.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported eagerly (none of these import jax at module level). ``vsm13`` must be bound here:
# it is also the name of a submodule, and a lazily resolved name would be shadowed by the
# submodule once that is imported.
from jaxalign.survey.dimensions import DIMENSIONS
from jaxalign.survey.instrument import Instrument, Item, anchor_constants
from jaxalign.survey.targets import (
    HOFSTEDE_CITATION,
    HOFSTEDE_RELEASE,
    Target,
    countries,
    custom_target,
    hofstede,
    resolve_target,
)
from jaxalign.survey.vsm13 import load_wording, save_wording, vsm13

# imported on first use (these modules import jax)
_LAZY: dict[str, str] = {
    "l1_loss": "jaxalign.survey.loss",
    "kendall_tau": "jaxalign.survey.loss",
    "make_objective": "jaxalign.survey.objectives",
    "Objective": "jaxalign.survey.objectives",
    "LOSSES": "jaxalign.survey.objectives",
    "presentations": "jaxalign.survey.presentations",
    "Presentation": "jaxalign.survey.presentations",
    "ORDERS": "jaxalign.survey.presentations",
}

__all__ = sorted(
    [
        "DIMENSIONS", "HOFSTEDE_CITATION", "HOFSTEDE_RELEASE", "Instrument", "Item", "Target",
        "anchor_constants", "countries", "custom_target", "hofstede", "load_wording",
        "resolve_target", "save_wording", "vsm13", *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxalign.survey' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
