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
A kind is an :class:`ObjectiveKind` (its ``offsets`` function and what it reads) in a registry by
name (:func:`register_objective`); a new kind is one module that registers one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class ObjectiveKind:
    """One kind of objective: how its constants come from the run's targets and the plain model.

    Attributes:
      name: the registry name (``AlignConfig.loss``, ``--loss``).
      offsets: ``(targets (C, D), plain (D,) or None, reference (D,) or None) -> (D,)``, the
        constants added to every member's indices (NaN-free; 0 where no target has the dimension).
      description: one line for results; ``{reference}`` is replaced by the reference's name.
      uses_plain: the constants read the plain model's indices (scored before the run).
      takes_reference: it needs a reference country (``AlignConfig.reference``) and only it takes one.
      min_targets: the fewest targets a run of this kind may have.
      reference_label: what results record as the reference when it takes no country (e.g. the
        run's median country), or ``None``.
    """

    name: str
    offsets: Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray]
    description: str
    uses_plain: bool = True
    takes_reference: bool = False
    min_targets: int = 1
    reference_label: str | None = None


_KINDS: dict[str, ObjectiveKind] = {}


def register_objective(kind: ObjectiveKind, *, replace: bool = False) -> ObjectiveKind:
    """Adds an objective kind under its name (ValueError if taken, unless ``replace``); then
    ``AlignConfig(loss=name)`` and ``jaxalign align --loss name`` reach it."""
    if not isinstance(kind, ObjectiveKind):
        raise TypeError(f"register_objective takes an ObjectiveKind, got {type(kind).__name__}")
    if kind.name in _KINDS and not replace:
        raise ValueError(f"an objective named {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_objective(name: str) -> None:
    """Removes the objective kind ``name`` (KeyError if there is none)."""
    del _KINDS[name]


def objective_names() -> tuple[str, ...]:
    """The registered objective kinds, in registration order."""
    return tuple(_KINDS)


def objective_kind(name: str) -> ObjectiveKind:
    """The kind registered as ``name``; ValueError naming the registered ones otherwise."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(_KINDS)}") from None


@dataclasses.dataclass(frozen=True)
class Objective:
    """A run's objective: its kind's name and the reference country it was given.

    Attributes:
      kind: a registered kind's name (:func:`objective_names`).
      reference: the reference target's values ``(D,)`` for a kind that takes one (NaN where
        missing), ``None`` otherwise; ``reference_name`` its name.
    """

    kind: str
    reference: tuple[float, ...] | None = None
    reference_name: str | None = None

    @property
    def uses_plain(self) -> bool:
        """Its constants read the plain model's indices."""
        return objective_kind(self.kind).uses_plain

    @property
    def reference_label(self) -> str | None:
        """The reference as results record it: the country's name, or the kind's label."""
        return self.reference_name if self.reference is not None else objective_kind(self.kind).reference_label

    def offsets(self, targets: np.ndarray, plain_dims: np.ndarray | None) -> np.ndarray:
        """The constants ``(D,)`` added to every member's indices, from the run's targets
        ``(C, D)`` (NaN where missing) and the plain model's indices ``(D,)`` (unused by a kind
        that does not read them). Dimensions no target has get 0 (masked in the loss anyway)."""
        kind = objective_kind(self.kind)
        targets = np.atleast_2d(np.asarray(targets, np.float64))
        n_dims = targets.shape[1]
        plain = None
        if kind.uses_plain:
            if plain_dims is None:
                raise ValueError(f"the {self.kind!r} loss needs the plain model's indices")
            plain = np.asarray(plain_dims, np.float64).reshape(n_dims)
        reference = None if self.reference is None else np.asarray(self.reference, np.float64)
        if reference is not None:
            missing = ~np.all(np.isnan(targets), axis=0) & np.isnan(reference)
            if missing.any():
                raise ValueError(f"the reference {self.reference_name!r} lacks dimension(s) "
                                 f"{', '.join(str(i) for i in np.flatnonzero(missing))} that a target has")
        out = np.asarray(kind.offsets(targets, plain, reference), np.float64).reshape(n_dims)
        return np.nan_to_num(out, nan=0.0).astype(np.float32)

    def describe(self) -> str:
        """One line for results and reports."""
        return objective_kind(self.kind).description.format(reference=self.reference_name)


def make_objective(kind: str = "paper", reference: Any = None, *, n_targets: int = 1) -> Objective:
    """The objective of the registered kind ``kind`` (:func:`objective_names`).

    ``reference``: a :class:`~jaxalign.survey.Target` (or a country name, resolved) for a kind
    that takes one (``"anchored"``); refused for the others. ``n_targets``: the run's number of
    targets, at least the kind's ``min_targets`` (``"relative"``: 2).
    """
    spec = objective_kind(kind)
    if spec.takes_reference:
        if reference is None:
            raise ValueError(f"the {kind!r} loss needs a reference country (--reference COUNTRY)")
        if isinstance(reference, str):
            from jaxalign.survey.targets import resolve_target

            reference = resolve_target(reference)
        return Objective(kind, tuple(float(v) for v in np.asarray(reference.values, np.float64)),
                         reference.name)
    if reference is not None:
        raise ValueError(f"a reference country is only used by the 'anchored' loss, not {kind!r}")
    if n_targets < spec.min_targets:
        count = {2: "two", 3: "three"}.get(spec.min_targets, str(spec.min_targets))
        raise ValueError(f"the {kind!r} loss compares countries: give at least {count} targets "
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


# ---------------------------------------------------------------------------- the built-in kinds
def _paper(targets: np.ndarray, plain: np.ndarray | None, reference: np.ndarray | None) -> np.ndarray:
    return np.zeros(targets.shape[1])


def _anchored(targets: np.ndarray, plain: np.ndarray | None, reference: np.ndarray | None) -> np.ndarray:
    return np.where(np.isnan(reference), 0.0, reference - plain)


def _relative(targets: np.ndarray, plain: np.ndarray | None, reference: np.ndarray | None) -> np.ndarray:
    return fitted_constants(plain[None], targets)


for _kind in (
    ObjectiveKind("paper", _paper, "paper: L1 to the published scores with the constants C = 0", uses_plain=False),
    ObjectiveKind("anchored", _anchored, "anchored: L1 after constants that read the plain model as a "
                  "respondent from {reference}", takes_reference=True),
    ObjectiveKind("relative", _relative, "relative: L1 after one constant per dimension shared by the run's "
                  "countries, the median over countries of target - plain-model index (fixed for the run)",
                  min_targets=2, reference_label="the run's median country"),
):
    register_objective(_kind, replace=True)

#: The built-in loss kinds (every registered one: :func:`objective_names`).
LOSSES: tuple[str, ...] = objective_names()
