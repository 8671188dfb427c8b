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


_quantize_int8_jit = jax.jit(quantize_int8)


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


def quantize_lm(lm: Any, quantize: str = "int8") -> Any:
    """An :class:`~jaxalign.model.LM` whose decoder linear weights are int8 (for a model in memory).

    ``load_model(..., quantize="int8")`` quantises while loading (one tensor at a time); this is for
    a model already built (the benchmark presets, a model from :func:`random_llama`). Each stacked
    weight is quantised in turn. The input model is left as it is; the result shares its other
    weights. The model's sharding, if any, is kept (scales shard with their output channels).
    """
    from flax import nnx

    from jaxalign.model.llama import LM, Llama

    if check_quantize(quantize) is None:
        return lm
    if getattr(lm.model, "quantize", None) is not None:
        raise ValueError(f"model {lm.name!r} is already quantised ({lm.model.quantize})")
    abstract = nnx.eval_shape(lambda: Llama(lm.config, dtype=lm.dtype, rngs=nnx.Rngs(0), quantize=quantize))
    graphdef, state = nnx.split(abstract)
    pure = nnx.to_pure_dict(lm.params)
    layers = dict(pure["layers"])
    for name in QUANTIZED_LAYER_PARAMS:
        layers[name] = _quantize_placed(layers[name])
    pure["layers"] = layers
    nnx.replace_by_pure_dict(state, pure)
    return LM(name=lm.name, config=lm.config, model=nnx.merge(graphdef, state), tokenizer=lm.tokenizer)


def _quantize_placed(weight: Array) -> Int8Weight:
    """:func:`quantize_int8` keeping a sharded weight's layout (scale drops the ``in`` axis)."""
    sharding = getattr(weight, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = tuple(sharding.spec) + (None,) * (weight.ndim - len(sharding.spec))
        scale_spec = jax.sharding.PartitionSpec(*spec[:-2], spec[-1])
        out = (sharding, jax.sharding.NamedSharding(sharding.mesh, scale_spec))
        q, scale = jax.jit(lambda w: dataclasses.astuple(quantize_int8(w)), out_shardings=out)(weight)
        return Int8Weight(q=q, scale=scale)
    return _quantize_int8_jit(weight)


def dequantize_lm(lm: Any) -> Any:
    """The float :class:`~jaxalign.model.LM` whose linear weights are ``q * scale`` in the model dtype.

    The reference an int8 model equals up to float rounding (the parity test); a float model is
    returned as it is.
    """
    from flax import nnx

    from jaxalign.model.llama import LM, Llama

    if getattr(lm.model, "quantize", None) is None:
        return lm
    abstract = nnx.eval_shape(lambda: Llama(lm.config, dtype=lm.dtype, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    pure = nnx.to_pure_dict(lm.params)
    pure["layers"] = {name: dequantize(value, lm.dtype) if isinstance(value, Int8Weight) else value
                      for name, value in pure["layers"].items()}
    nnx.replace_by_pure_dict(state, pure)
    return LM(name=lm.name, config=lm.config, model=nnx.merge(graphdef, state), tokenizer=lm.tokenizer)
