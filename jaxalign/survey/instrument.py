"""A Likert survey instrument whose indices are linear in the item means.

An :class:`Instrument` holds its items (text and five answer labels each), the names of its
dimensions, a weight matrix ``(D, Q)`` and one constant per dimension, so that

    indices = item_means @ weights.T + constants          # (..., Q) -> (..., D)

Answer ``k`` to an item is coded ``k`` (1 is the item's first label), so an item mean lies in
``[1, 5]``. VSM 2013 is one such instrument (:func:`jaxalign.survey.vsm13`); users can build
others with :meth:`Instrument.from_formulas`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from jaxalign.survey.dimensions import canonical_dimension

if TYPE_CHECKING:
    import jax

# jax is imported inside the functions that compute, so that ``import jaxalign.survey`` (and the
# ``jaxalign countries`` command) does not pay for importing jax.

N_OPTIONS = 5

# what ``constants=`` accepts: None (the instrument's own), {dimension: value} (others kept),
# or an array (D,) (may be a traced jax array inside ``indices``)
Constants = Union[None, Mapping[str, float], Sequence[float], np.ndarray, "jax.Array"]


@dataclasses.dataclass(frozen=True)
class Item:
    """One survey item: an id, the question as shown to a respondent, and its answer labels.

    Attributes:
        id: the item's identifier, e.g. ``"7"``; unique within an instrument.
        text: the full, self-contained question (a model sees one item at a time).
        options: the five answer labels; answering ``options[k - 1]`` is coded ``k``.
    """

    id: str
    text: str
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ValueError(f"item id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"item {self.id!r}: text must be a non-empty string")
        if isinstance(self.options, str) or not isinstance(self.options, Sequence):
            raise ValueError(
                f"item {self.id!r}: options must be a sequence of {N_OPTIONS} labels, "
                f"got {type(self.options).__name__}"
            )
        options = tuple(self.options)
        if len(options) != N_OPTIONS:
            raise ValueError(
                f"item {self.id!r}: expected {N_OPTIONS} option labels, got {len(options)}"
            )
        for k, label in enumerate(options, start=1):
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"item {self.id!r}: option {k} must be a non-empty string")
        object.__setattr__(self, "options", options)


def _frozen_array(values: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.array(values, dtype=np.float64)  # a copy: later edits of the input change nothing
    if array.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be finite, got {array}")
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Instrument:
    """A survey of Likert items with linear indices (compared by identity).

    Attributes:
        name: the instrument, e.g. ``"VSM 2013"``.
        wording: which wording of the items this is, e.g. ``"jaxalign-v1"`` (the package's own)
            or ``"user:official.json"``; results should carry it.
        items: the ``Q`` items, in the order of the ``Q`` axis of every item-means array.
        dimensions: the ``D`` index names, in the order of the ``D`` axis of every index array.
        weights: ``(D, Q)`` float64, read-only; ``weights[d, q]`` multiplies the mean of item q.
        constants: ``(D,)`` float64, read-only; the default constant added to each index.
    """

    name: str
    wording: str
    items: tuple[Item, ...]
    dimensions: tuple[str, ...]
    weights: np.ndarray  # (D, Q)
    constants: np.ndarray  # (D,)

    def __post_init__(self) -> None:
        items = tuple(self.items)
        if not items:
            raise ValueError(f"instrument {self.name!r} has no items")
        for item in items:
            if not isinstance(item, Item):
                raise ValueError(f"items must be Item instances, got {type(item).__name__}")
        _check_unique([item.id for item in items], "item id")
        dimensions = tuple(self.dimensions)
        if not dimensions:
            raise ValueError(f"instrument {self.name!r} has no dimensions")
        for dim in dimensions:
            if not isinstance(dim, str) or not dim.strip():
                raise ValueError(f"dimension names must be non-empty strings, got {dim!r}")
        _check_unique([d.upper() for d in dimensions], "dimension (case-insensitive)")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "dimensions", dimensions)
        shape = (len(dimensions), len(items))
        object.__setattr__(self, "weights", _frozen_array(self.weights, shape, "weights"))
        object.__setattr__(
            self, "constants", _frozen_array(self.constants, shape[:1], "constants")
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_formulas(
        cls,
        name: str,
        wording: str,
        items: Sequence[Item],
        formulas: Mapping[str, Mapping[str, float]],
        constants: Constants = None,
    ) -> Instrument:
        """Build an instrument from one linear formula per dimension.

        Args:
            name: the instrument's name.
            wording: which wording ``items`` are (see :attr:`wording`).
            items: the ``Q`` items, in order.
            formulas: ``{dimension: {item_id: weight, ...}, ...}``; dimensions keep this
                mapping's order and items absent from a formula weigh 0. For example VSM 2013's
                ``{"PDI": {"7": 35, "2": -35, "20": 25, "23": -25}, ...}``.
            constants: None (all 0), ``{dimension: value}`` (others 0) or a sequence ``(D,)``.

        Raises:
            ValueError: a formula names an unknown item, is empty, or has a non-finite weight;
                or ``items``/``constants`` are invalid.
        """
        items = tuple(items)
        column = {item.id: q for q, item in enumerate(items)}
        if len(column) != len(items):
            _check_unique([item.id for item in items], "item id")
        if not formulas:
            raise ValueError("formulas is empty: give at least one dimension")
        dimensions = tuple(formulas)
        weights = np.zeros((len(dimensions), len(items)))
        for d, dim in enumerate(dimensions):
            terms = formulas[dim]
            if not terms:
                raise ValueError(f"formula for {dim!r} has no terms")
            for item_id, weight in terms.items():
                if str(item_id) not in column:
                    raise ValueError(
                        f"formula for {dim!r} names unknown item {item_id!r}; "
                        f"item ids are {', '.join(column)}"
                    )
                weights[d, column[str(item_id)]] = float(weight)
        zeros = cls(name, wording, items, dimensions, weights, np.zeros(len(dimensions)))
        return zeros.with_constants(constants) if constants is not None else zeros

    def with_constants(self, constants: Constants) -> Instrument:
        """A copy with other default constants: ``{dimension: value}`` (others kept) or ``(D,)``."""
        values = np.asarray(self._resolve_constants(constants), dtype=np.float64)
        return dataclasses.replace(self, constants=values)

    def with_items(self, items: Sequence[Item], wording: str) -> Instrument:
        """A copy with another wording of the same items.

        ``items`` must have exactly this instrument's ids (any order); they are put in this
        instrument's item order, so the weights keep their meaning.
        """
        items = tuple(items)
        by_id: dict[str, Item] = {}
        for item in items:
            if item.id in by_id:
                raise ValueError(f"duplicate item id {item.id!r}")
            by_id[item.id] = item
        _check_same_ids(self.item_ids, list(by_id))
        return dataclasses.replace(
            self, items=tuple(by_id[i] for i in self.item_ids), wording=wording
        )

    # ------------------------------------------------------------------ shape facts
    @property
    def n_items(self) -> int:
        """``Q``, the number of items."""
        return len(self.items)

    @property
    def n_dimensions(self) -> int:
        """``D``, the number of indices."""
        return len(self.dimensions)

    @property
    def n_options(self) -> int:
        """Answer options per item (5)."""
        return N_OPTIONS

    @property
    def item_ids(self) -> tuple[str, ...]:
        """The item ids in the order of the ``Q`` axis."""
        return tuple(item.id for item in self.items)

    def formula(self, dimension: str) -> str:
        """The formula of one index as text, e.g. ``'PDI = 35*m7 - 35*m2 + ... + C'``."""
        d = self.dimensions.index(canonical_dimension(dimension, self.dimensions))
        terms = [(w, self.item_ids[q]) for q, w in enumerate(self.weights[d]) if w != 0]
        body = " ".join(
            f"{'-' if w < 0 else ('' if i == 0 else '+')}{'' if i == 0 else ' '}{abs(w):g}*m{q}"
            for i, (w, q) in enumerate(terms)
        )
        return f"{self.dimensions[d]} = {body} + C ({self.constants[d]:g})"

    # ------------------------------------------------------------------ scoring
    def indices(self, item_means: Any, constants: Constants = None) -> jax.Array:
        """Map item means to the instrument's indices.

        Pure jnp: works under ``jit``, ``vmap`` and ``grad`` and batches over leading axes.

        Args:
            item_means: ``(..., Q)`` mean answer per item, coded 1..5, items in
                :attr:`item_ids` order. Integer input is cast to float32.
            constants: None (the instrument's), ``{dimension: number}`` (others from the
                instrument; concrete numbers), or an array ``(D,)`` (may be traced, e.g. to
                differentiate with respect to the constants).

        Returns:
            ``(..., D)`` indices, in :attr:`dimensions` order, float dtype of ``item_means``.
        """
        import jax.numpy as jnp

        means = jnp.asarray(item_means)
        if means.ndim == 0 or means.shape[-1] != self.n_items:
            raise ValueError(
                f"item_means must have shape (..., {self.n_items}) (one mean per item of "
                f"{self.name}), got shape {tuple(means.shape)}"
            )
        if not jnp.issubdtype(means.dtype, jnp.floating):
            means = means.astype(jnp.float32)
        weights = jnp.asarray(self.weights, dtype=means.dtype)  # (D, Q)
        offsets = jnp.asarray(self._resolve_constants(constants), dtype=means.dtype)  # (D,)
        # elementwise product and sum instead of a matmul: exact float32 on every backend
        # (accelerator matmuls may use reduced precision by default)
        return jnp.sum(means[..., None, :] * weights, axis=-1) + offsets

    def _resolve_constants(self, constants: Constants) -> Any:
        """Constants as an array ``(D,)``: numpy when concrete, jax when traced."""
        if constants is None:
            return self.constants
        if isinstance(constants, Mapping):
            values = np.array(self.constants)
            for key, value in constants.items():
                d = self.dimensions.index(canonical_dimension(key, self.dimensions))
                try:
                    values[d] = float(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"constant for {key!r} must be a number, got {value!r}"
                    ) from None
            return values
        import jax

        values = constants if isinstance(constants, jax.Array) else np.asarray(constants)
        if values.shape != (self.n_dimensions,):
            raise ValueError(
                f"constants must be a mapping {{dimension: value}} or an array of shape "
                f"({self.n_dimensions},) for {self.dimensions}, got shape {tuple(values.shape)}"
            )
        return values

    def __repr__(self) -> str:
        return (
            f"Instrument(name={self.name!r}, wording={self.wording!r}, "
            f"n_items={self.n_items}, dimensions={self.dimensions}, "
            f"constants={self.constants.tolist()})"
        )


def anchor_constants(
    instrument: Instrument,
    reference_item_means: Any,
    target: Any,
) -> np.ndarray:
    """Constants that put a reference sample exactly on a target's scores.

    For every dimension the target has (a non-NaN value), returns
    ``C_d = target_d - (index_d of the reference sample with C = 0)``, so that
    ``instrument.indices(reference_item_means, constants=C)`` equals the target there.
    Dimensions the target lacks (NaN or absent) keep ``instrument.constants``; a Target's
    dimensions that the instrument lacks are ignored (a mapping naming one is an error).

    This is the VSM 2013 manual's "anchoring": e.g. let the model answer as a reference country,
    anchor to that country's published scores, then score every other country on that scale.

    Args:
        instrument: the instrument.
        reference_item_means: ``(Q,)`` concrete item means of the reference sample.
        target: a :class:`~jaxalign.survey.targets.Target` or a mapping ``{dimension: score}``.

    Returns:
        ``(D,)`` float64 constants, in ``instrument.dimensions`` order.

    Raises:
        ValueError: wrong shape, non-finite means, or no dimension shared with the target.
    """
    means = np.asarray(reference_item_means, dtype=np.float64)
    if means.shape != (instrument.n_items,):
        raise ValueError(
            f"reference_item_means must have shape ({instrument.n_items},), got {means.shape}"
        )
    if not np.all(np.isfinite(means)):
        raise ValueError("reference_item_means must be finite")
    if isinstance(target, Mapping):  # a typo in a user's mapping is an error, not ignored
        scores = {
            canonical_dimension(key, instrument.dimensions): float(value)
            for key, value in target.items()
        }
    elif hasattr(target, "values") and hasattr(target, "dimensions"):
        scores = {d: float(v) for d, v in zip(target.dimensions, np.asarray(target.values))}
    else:
        raise ValueError(
            "target must be a Target or a mapping {dimension: score}, "
            f"got {type(target).__name__}"
        )
    raw = instrument.weights @ means  # (D,) indices with C = 0
    constants = np.array(instrument.constants)
    anchored = 0
    by_upper = {d.upper(): i for i, d in enumerate(instrument.dimensions)}
    for key, score in scores.items():
        d = by_upper.get(key.strip().upper())
        if d is None or np.isnan(score):
            continue
        constants[d] = score - raw[d]
        anchored += 1
    if anchored == 0:
        raise ValueError(
            f"target shares no available dimension with {instrument.name} "
            f"({', '.join(instrument.dimensions)}); nothing to anchor"
        )
    return constants


def _check_unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)


def _check_same_ids(expected: Sequence[str], given: Sequence[str]) -> None:
    missing = [i for i in expected if i not in set(given)]
    unknown = [i for i in given if i not in set(expected)]
    problems = []
    if missing:
        problems.append(f"missing item(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown item id(s) {', '.join(unknown)}")
    if problems:
        raise ValueError(
            "; ".join(problems) + f" (expected ids: {', '.join(expected)})"
        )
