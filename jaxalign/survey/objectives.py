"""Objectives: from the indices of every target's members to one loss per member.

The VSM 2013 manual says its constants C only shift the indices into a convenient range: only
differences between countries carry meaning. The paper's loss fixes C = 0 and compares the
indices with the published scores directly; with a model answering near the middle of the scale
every index sits near 0 while the targets run 20..90, so the loss is then ``mean(target) -
mean(dims)``: "raise every index", the same task for every country. The other objectives take
the constants out of the comparison::

    dims (C, P, D), targets (C, D), plain-model dims (D,)
      -> offsets (D,)            constants added to every member's indices (fixed for the run)
      -> L1(dims + offsets, target_c)  per member             (C, P)

- ``"paper"``: offsets 0 (the paper's C = 0; kept to reproduce it).
- ``"anchored"``: the plain model read as a respondent from a ``reference`` country: offsets
  ``t_ref - plain``, so the loss compares a prompt's shift of the indices from the plain model
  with ``target - t_ref``. The reference's own prompt has nothing to move.
- ``"relative"`` (several targets in one run): one constant per dimension shared by the run's
  countries, fitted as the L1-optimal shared constant, the median over countries of
  ``target - dims``. **Fitted once, on the plain model** (whose dims are the same for every
  country): offsets ``median_c(t_c) - plain``. So the reference is the median country, each
  country is asked to move the indices from the plain model by its own difference from that
  median, and moving every country alike earns nothing on average. Why fixed and not refitted
  on the current members each step: a refit would couple the C searches (one country's member
  would change another's loss) and make the fitness non-stationary for the evolution strategies
  (a member's recorded fitness would go stale as the others move); with the constants fixed the
  C searches stay independent and each sees a stationary fitness. The evaluation
  (:func:`fitted_constants`, ``jaxalign eval matrix``) refits the constant on the tuned prompts
  themselves, per presentation, so a prompt is judged on between-country differences alone.

Every objective's offsets are computed once, before the run, on the host; a step only adds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np


#: The loss kinds a run may use.
LOSSES: tuple[str, ...] = ("paper", "anchored", "relative")


@dataclasses.dataclass(frozen=True)
class Objective:
    """A loss over the indices of every target's members, with the constants it uses.

    Attributes:
      kind: one of :data:`LOSSES`.
      reference: the reference target's values ``(D,)`` for ``"anchored"`` (NaN where missing),
        ``None`` otherwise; ``reference_name`` its name.
    """

    kind: str
    reference: tuple[float, ...] | None = None
    reference_name: str | None = None

    def offsets(self, targets: np.ndarray, plain_dims: np.ndarray | None) -> np.ndarray:
        """The constants ``(D,)`` added to every member's indices, from the run's targets
        ``(C, D)`` (NaN where missing) and the plain model's indices ``(D,)`` (unused by
        ``"paper"``). Dimensions no target has get 0 (they are masked in the loss anyway)."""
        targets = np.atleast_2d(np.asarray(targets, np.float64))
        n_dims = targets.shape[1]
        if self.kind == "paper":
            return np.zeros((n_dims,), np.float32)
        if plain_dims is None:
            raise ValueError(f"the {self.kind!r} loss needs the plain model's indices")
        plain = np.asarray(plain_dims, np.float64).reshape(n_dims)
        if self.kind == "anchored":
            reference = np.asarray(self.reference, np.float64)
            needed = ~np.all(np.isnan(targets), axis=0)
            missing = needed & np.isnan(reference)
            if missing.any():
                raise ValueError(f"the reference {self.reference_name!r} lacks dimension(s) "
                                 f"{', '.join(str(i) for i in np.flatnonzero(missing))} that a target has")
            return np.where(np.isnan(reference), 0.0, reference - plain).astype(np.float32)
        return np.nan_to_num(fitted_constants(plain[None], targets), nan=0.0).astype(np.float32)

    def describe(self) -> str:
        """One line for results and reports."""
        if self.kind == "paper":
            return "paper: L1 to the published scores with the constants C = 0"
        if self.kind == "anchored":
            return (f"anchored: L1 after constants that read the plain model as a respondent from "
                    f"{self.reference_name}")
        return ("relative: L1 after one constant per dimension shared by the run's countries, the "
                "median over countries of target - plain-model index (fixed for the run)")


def make_objective(kind: str = "paper", reference: Any = None, *, n_targets: int = 1) -> Objective:
    """The objective named ``kind`` (:data:`LOSSES`).

    ``reference``: a :class:`~jaxalign.survey.Target` (or a country name, resolved) for
    ``"anchored"``; refused for the others. ``n_targets``: the run's number of targets;
    ``"relative"`` needs at least 2.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    if kind == "anchored":
        if reference is None:
            raise ValueError("the 'anchored' loss needs a reference country (--reference COUNTRY)")
        if isinstance(reference, str):
            from jaxalign.survey.targets import resolve_target

            reference = resolve_target(reference)
        return Objective(kind, tuple(float(v) for v in np.asarray(reference.values, np.float64)),
                         reference.name)
    if reference is not None:
        raise ValueError(f"a reference country is only used by the 'anchored' loss, not {kind!r}")
    if kind == "relative" and n_targets < 2:
        raise ValueError("the 'relative' loss compares countries: give at least two targets "
                         "(--country A,B,...); for one country use --loss anchored --reference COUNTRY")
    return Objective(kind)


def fitted_constants(dims: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The L1-optimal constant per dimension shared by several countries: the median over
    countries of ``target - dims`` (``dims`` ``(C, D)`` or ``(1, D)`` for one reading shared by
    all, ``targets`` ``(C, D)``, NaN where missing) -> ``(D,)`` (NaN where no country has the
    dimension)."""
    dims = np.asarray(dims, np.float64)
    targets = np.asarray(targets, np.float64)
    gaps = targets - dims                                                     # (C, D)
    out = np.full(gaps.shape[1], np.nan)
    for d in range(gaps.shape[1]):
        column = gaps[:, d][~np.isnan(gaps[:, d])]
        if column.size:
            out[d] = np.median(column)
    return out


def relative_matrix(dims: np.ndarray, targets: np.ndarray, constants: np.ndarray) -> np.ndarray:
    """``M[i, j]``: L1 between prompt ``i``'s indices plus ``constants`` and target ``j``
    (``dims (N, D)``, ``targets (M, D)``, ``constants (D,)``) -> ``(N, M)``, each a mean over the
    dimensions target ``j`` has."""
    dims = np.asarray(dims, np.float64) + np.nan_to_num(np.asarray(constants, np.float64))
    targets = np.asarray(targets, np.float64)
    diff = np.abs(dims[:, None, :] - targets[None, :, :])                     # (N, M, D)
    mask = ~np.isnan(targets)[None]
    return np.where(mask, diff, 0.0).sum(-1) / mask.sum(-1)


def between_country_correlation(dims: np.ndarray, targets: np.ndarray,
                                pairs: Sequence[tuple[int, int]] | None = None) -> float:
    """Pearson correlation between the prompts' between-country differences and the targets':
    over every pair ``i < j`` and every dimension both targets have, ``dims_i - dims_j`` against
    ``t_i - t_j`` (``dims``, ``targets`` ``(N, D)``). Free of any shared constant. NaN when the
    prompts' differences are all zero (the plain model: no differences at all)."""
    dims = np.asarray(dims, np.float64)
    targets = np.asarray(targets, np.float64)
    n = dims.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if pairs is None else pairs
    model, target = [], []
    for i, j in pairs:
        ok = ~np.isnan(targets[i]) & ~np.isnan(targets[j])
        model.extend(dims[i, ok] - dims[j, ok])
        target.extend(targets[i, ok] - targets[j, ok])
    model, target = np.asarray(model), np.asarray(target)
    if model.size < 2 or np.allclose(model, model[0]) or np.allclose(target, target[0]):
        return float("nan")
    return float(np.corrcoef(model, target)[0, 1])
