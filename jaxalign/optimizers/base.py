"""What an optimizer is: a small frozen record of functions, and the registry by name.

An optimizer tunes C search vectors at once (one per target; every leaf of its state has the
leading axis C) in the run loop of :mod:`jaxalign.optimize.pipeline`::

    init(step, args)                   -> opt state                a template that step 0 replaces
    update(step, state, args, fitness) -> Update(opt, population (C, M, n), losses (C, M), aux)
    phases(config, forwards_per_step)  -> (search steps, gradient steps)   within the budget

``step`` is the run's :class:`~jaxalign.optimize.problem.Step` (static: ``evolution`` settings,
``space_dim``, ``config``, ``embedding_std``, ``switch``), ``state`` its
:class:`~jaxalign.optimize.problem.RunState` (``step`` the number of the step being run, ``opt``,
``best_z (C, n)``), ``args`` its :class:`~jaxalign.optimize.problem.RunArgs` (``keys (C, 2)``,
``z0 (C, n)``), and ``fitness`` scores members: ``z (C, M, n) -> (losses (C, M), aux)``, every aux
leaf ``(C, M, ...)``; it is differentiable on the ``"expected"`` readout. The loop keeps the
best-so-far member of each target from the returned population, so an optimizer only proposes
and learns. Randomness comes from ``args.keys`` folded with ``state.step``: a step's draws depend
only on the target and the step number, so a resumed run equals the uninterrupted one.

A new optimizer is one module that builds an :class:`Optimizer` and passes it to
:func:`register`; ``AlignConfig(method=name)`` and ``jaxalign align --method name`` then reach it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Fitness = Callable[[jax.Array], tuple[jax.Array, Any]]  # z (C, M, n) -> losses (C, M), aux (C, M, ...)


class Update(NamedTuple):
    """One step's outcome: the new optimizer state and the members it scored."""

    opt: Any              # the optimizer state, leaves (C, ...)
    population: jax.Array  # (C, M, n) the members scored this step
    losses: jax.Array     # (C, M) their losses as the fitness returned them (NaN/inf kept)
    aux: Any              # their aux (dims), leaves (C, M, ...)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """One optimizer (see the module docstring for the three functions' contracts).

    Attributes:
      name: the registry name (``AlignConfig.method``).
      init, update, phases: the functions.
      gradient: it differentiates the fitness: it trains on the ``"expected"`` readout, and an
        Adam step's cost in forward passes is measured before the run (its ``phases`` read it).
      fixed_total: what a step does depends on the run's total steps (a phase switch at a share
        of the budget), so a resume may not change ``generations``.
      unit: the progress bar's unit (``"gen"`` or ``"step"``).
      summary: one line for help texts.
    """

    name: str
    init: Callable[[Any, Any], Any]
    update: Callable[[Any, Any, Any, Fitness], Update]
    phases: Callable[[Any, float], tuple[int, int]]
    gradient: bool = False
    fixed_total: bool = False
    unit: str = "gen"
    summary: str = ""


_REGISTRY: dict[str, Optimizer] = {}


def register(optimizer: Optimizer, *, replace: bool = False) -> Optimizer:
    """Adds ``optimizer`` under its name (ValueError if the name is taken, unless ``replace``)."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"register takes an Optimizer, got {type(optimizer).__name__}")
    if optimizer.name in _REGISTRY and not replace:
        raise ValueError(f"an optimizer named {optimizer.name!r} is already registered")
    _REGISTRY[optimizer.name] = optimizer
    return optimizer


def unregister(name: str) -> None:
    """Removes the optimizer ``name`` (KeyError if there is none)."""
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    """The registered optimizers' names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Optimizer:
    """The optimizer registered as ``name``; ValueError naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def step_keys(args: Any, step: jax.Array, n: int) -> jax.Array:
    """``n`` keys per target for step ``step``: ``(C, n, 2)`` from each target's key folded with it."""
    return jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, step), n))(args.keys)


def strong(tree: Any) -> Any:
    """Device copy of a pytree with fixed (non-weak) dtypes, so chunk inputs keep one signature."""
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), tree)


def same_types(new: Any, old: Any) -> Any:
    """Cast ``new`` leaf-wise to ``old``'s dtypes (drops weak types so the carry is stable)."""
    return jax.tree.map(lambda a, b: jax.lax.convert_element_type(a, b.dtype), new, old)
