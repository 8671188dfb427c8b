"""Evaluation beyond the tuned survey items.

- CulturalBench (:mod:`jaxalign.evaluate.culturalbench`): :func:`load_culturalbench`,
  :func:`evaluate_culturalbench` -> :class:`BenchResult` (accuracy, 95% Wilson interval,
  per-country counts), :func:`wilson_interval`.
- Robustness (:mod:`jaxalign.evaluate.robustness`): :func:`evaluate_robustness` (tuned wording,
  reversed option order, held-out wording; soft prompt beside the plain model);
  :func:`align_both_orders` (tune on both orders at once; :func:`jaxalign.api.align_both_orders`).

Names are imported lazily, so ``import jaxalign.evaluate`` does not import jax.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BenchQuestion": "jaxalign.evaluate.culturalbench",
    "BenchResult": "jaxalign.evaluate.culturalbench",
    "BenchSet": "jaxalign.evaluate.culturalbench",
    "evaluate_culturalbench": "jaxalign.evaluate.culturalbench",
    "load_culturalbench": "jaxalign.evaluate.culturalbench",
    "wilson_interval": "jaxalign.evaluate.culturalbench",
    "ConditionScores": "jaxalign.evaluate.robustness",
    "RobustnessReport": "jaxalign.evaluate.robustness",
    "align_both_orders": "jaxalign.api",
    "evaluate_robustness": "jaxalign.evaluate.robustness",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxalign.evaluate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
