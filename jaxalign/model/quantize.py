"""Weight-only int8 for the decoder's linear layers: per-output-channel symmetric scales.

A linear weight ``w (..., in, out)`` (float) is stored as ``Int8Weight(q, scale)``::

    scale = max_i |w[i, o]| / 127          (..., out)  float32, one per output channel
    q     = round(w / scale) clipped to +-127  (..., in, out)  int8

and a matmul never forms the float weight in memory: because the scale belongs to the output
channel, ``x @ (q * scale) == (x @ q) * scale``, so :func:`linear` computes

    x (B, T, in) @ q.astype(x.dtype)  -> float32 accumulation (B, T, out)
    * scale                           -> cast back to x.dtype

(int8 values are exact in bfloat16 and float16; XLA fuses the int8 -> compute-dtype convert into
the dot's operand and the scale into its epilogue). The result equals the float model built from
the dequantised weights ``q * scale`` up to float rounding (tests/test_quantize.py).

What is quantised: the seven linear weights of every decoder layer (q/k/v/o projections, gate/up/
down projections), over 90% of an 8B model's weights. What is not, and why:

* the **embedding** stays in the compute dtype: it is a gather (no matmul to fuse a scale into),
  and soft prompts live in its space (their initialisation and scale are drawn from the
  embedding's statistics), so it should not move;
* the **LM head** stays in the compute dtype: the scorer reads only the 5 rows of the answer
  tokens (quantising saves no compute there), while generation uses the full head, where its
  rounding would change every logit. Llama-3-8B's embedding + head are 2.1 GB in bfloat16;
  with the layers in int8 (7.0 GB) the whole model is 9.1 GB, inside a 15-16 GB device.
* norms are tiny and stay as they are.

Norm weights, activations, attention softmax and logits keep their usual dtypes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

QUANTIZE_MODES: tuple[str, ...] = ("int8",)
# The stacked decoder weights that are quantised (all linear weights, stored (L, in, out)).
QUANTIZED_LAYER_PARAMS: tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_INT8_MAX = 127.0


@dataclasses.dataclass(frozen=True)
class Int8Weight:
    """A linear weight in int8 with one float32 scale per output channel (a pytree).

    ``q``: ``(..., in, out)`` int8; ``scale``: ``(..., out)`` float32. The float weight it stands
    for is ``q * scale[..., None, :]`` (:func:`dequantize`). Leading axes (the stacked layer axis
    ``L``) are shared by both, so ``lax.scan`` slices one layer of each.
    """

    q: Array
    scale: Array

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the float weight it stands for, ``(..., in, out)``."""
        return tuple(self.q.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of ``q`` and ``scale`` together."""
        return int(self.q.size * self.q.dtype.itemsize + self.scale.size * self.scale.dtype.itemsize)


jax.tree_util.register_dataclass(Int8Weight, data_fields=["q", "scale"], meta_fields=[])


def check_quantize(quantize: str | None) -> str | None:
    """``None``/``"none"`` -> ``None``; ``"int8"`` -> ``"int8"``; anything else is a ValueError."""
    if quantize is None or (isinstance(quantize, str) and quantize.lower() == "none"):
        return None
    if isinstance(quantize, str) and quantize.lower() in QUANTIZE_MODES:
        return quantize.lower()
    raise ValueError(f"quantize must be None or one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")


def quantize_int8(weight: Array) -> Int8Weight:
    """Symmetric per-output-channel int8 of a float weight ``(..., in, out)`` (scales over ``in``).

    Computed in float32. A channel of zeros gets scale 1 (its ``q`` is 0).
    """
    w = jnp.asarray(weight).astype(jnp.float32)
    amax = jnp.max(jnp.abs(w), axis=-2)                                    # (..., out)
    scale = jnp.where(amax > 0, amax / _INT8_MAX, 1.0).astype(jnp.float32)
    q = jnp.clip(jnp.round(w / scale[..., None, :]), -_INT8_MAX, _INT8_MAX).astype(jnp.int8)
    return Int8Weight(q=q, scale=scale)


def dequantize(weight: Int8Weight | Array, dtype: Any = jnp.float32) -> Array:
    """The float weight ``q * scale`` ``(..., in, out)`` in ``dtype`` (a float array is just cast)."""
    if isinstance(weight, Int8Weight):
        return (weight.q.astype(jnp.float32) * weight.scale[..., None, :]).astype(dtype)
    return jnp.asarray(weight).astype(dtype)


def linear(x: Array, weight: Int8Weight | Array) -> Array:
    """``x (..., in) @ weight (in, out) -> (..., out)`` in ``x.dtype``, for a float or int8 weight.

    An :class:`Int8Weight` is never dequantised in memory: ``(x @ q) * scale`` with a float32
    accumulation (see the module docstring). A float weight is a plain ``x @ weight``.
    """
    if isinstance(weight, Int8Weight):
        y = jnp.matmul(x, weight.q.astype(x.dtype), preferred_element_type=jnp.float32)
        return (y * weight.scale).astype(x.dtype)
    return x @ weight
