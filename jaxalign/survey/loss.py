"""Distances between a model's six indices and a target, and rank agreement across countries.

Both functions are pure jnp: they batch, and work under ``jit``/``vmap`` (and ``grad`` for
:func:`l1_loss`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def l1_loss(dims: Any, target_values: Any) -> jnp.ndarray:
    """Mean absolute difference between indices and a target over the target's dimensions.

    A **mean**, not a sum, over the dimensions the target has (its non-NaN entries), so losses
    against targets with different numbers of dimensions are comparable per dimension: a loss
    of 10 means "10 points off on an average available dimension". Missing target dimensions
    are left out entirely (never read as 0), whatever the model's value there.

    A NaN or inf anywhere in a row of ``dims`` gives a NaN or inf loss for that row (it is not
    hidden, even on a dimension the target lacks); optimizers should map it to +inf.

    Args:
        dims: ``(..., D)`` indices, e.g. ``(P, 6)`` for a population.
        target_values: ``(D,)`` target scores with NaN where missing, or a
            :class:`~jaxalign.survey.targets.Target`.

    Returns:
        ``(...)`` losses, float dtype of ``dims``.

    Raises:
        ValueError: trailing sizes differ, or a concrete target has no non-NaN entry.
    """
    if hasattr(target_values, "values") and hasattr(target_values, "mask"):
        target_values = target_values.values  # a Target
    dims = jnp.asarray(dims)
    if not jnp.issubdtype(dims.dtype, jnp.floating):
        dims = dims.astype(jnp.float32)
    target = jnp.asarray(target_values, dtype=dims.dtype)
    if dims.ndim == 0 or target.ndim == 0 or dims.shape[-1] != target.shape[-1]:
        raise ValueError(
            f"dims (..., D) and target_values (D,) must share D, got shapes "
            f"{tuple(dims.shape)} and {tuple(target.shape)}"
        )
    try:
        concrete = np.asarray(target_values, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        concrete = None  # traced target: cannot check here
    if concrete is not None and np.all(np.isnan(concrete), axis=-1).any():
        raise ValueError("target has no available dimension (every value is NaN)")

    available = ~jnp.isnan(target)  # (D,)
    safe_target = jnp.where(available, target, 0.0)
    error = jnp.where(available, jnp.abs(dims - safe_target), 0.0)  # (..., D)
    count = jnp.sum(available, axis=-1).astype(dims.dtype)
    loss = jnp.sum(error, axis=-1) / count
    # non-finite model values on a dimension the target lacks must still surface
    hidden_bad = jnp.any(~available & ~jnp.isfinite(dims), axis=-1)
    return jnp.where(hidden_bad, jnp.nan, loss)


def kendall_tau(x: Any, y: Any) -> jnp.ndarray:
    """Kendall's tau-b between two rankings, e.g. model vs published scores across countries.

    Ties are handled as in tau-b (``(C - D) / sqrt((n0 - n1)(n0 - n2))``, the same as
    ``scipy.stats.kendalltau``'s default); pairs where ``x`` or ``y`` is NaN are dropped.
    O(n^2) memory, which is fine for the ~100 countries of the Hofstede data.

    Args:
        x: ``(n,)`` values.
        y: ``(n,)`` values.

    Returns:
        A scalar in [-1, 1]; NaN when fewer than two valid pairs remain or one side is constant.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"x and y must be 1-D of the same length, got shapes {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x = x.astype(dtype)
    y = y.astype(dtype)
    valid = ~(jnp.isnan(x) | jnp.isnan(y))  # (n,)
    n = x.shape[0]
    upper = jnp.triu(jnp.ones((n, n), dtype=bool), k=1)  # each pair once
    pair = upper & valid[:, None] & valid[None, :]  # (n, n)
    sign_x = jnp.where(pair, jnp.sign(x[:, None] - x[None, :]), 0.0)
    sign_y = jnp.where(pair, jnp.sign(y[:, None] - y[None, :]), 0.0)
    concordance = jnp.sum(sign_x * sign_y)  # C - D
    untied_x = jnp.sum(jnp.abs(sign_x))  # n0 - n1
    untied_y = jnp.sum(jnp.abs(sign_y))  # n0 - n2
    denominator = jnp.sqrt(untied_x * untied_y)
    defined = denominator > 0
    return jnp.where(defined, concordance / jnp.where(defined, denominator, 1.0), jnp.nan)
