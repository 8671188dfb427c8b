"""Int8 conversion of a whole model already in memory (:func:`quantize_lm`, :func:`dequantize_lm`).

``load_model(..., quantize="int8")`` quantises while loading, one tensor at a time; these two
convert an :class:`~jaxalign.model.LM` built in memory (the benchmark presets, a model from
:func:`~jaxalign.model.random_llama`) with the same arithmetic (:mod:`jaxalign.model.quantize`,
which knows nothing of the model), and back to float for the parity tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx

from jaxalign.model.llama import LM, Llama
from jaxalign.model.quantize import (
    QUANTIZED_LAYER_PARAMS,
    Int8Weight,
    check_quantize,
    dequantize,
    quantize_int8,
)

Array = jax.Array

_quantize_int8_jit = jax.jit(quantize_int8)


def quantize_lm(lm: Any, quantize: str = "int8") -> Any:
    """An :class:`~jaxalign.model.LM` whose decoder linear weights are int8 (for a model in memory).

    ``load_model(..., quantize="int8")`` quantises while loading (one tensor at a time); this is for
    a model already built (the benchmark presets, a model from :func:`random_llama`). Each stacked
    weight is quantised in turn. The input model is left as it is; the result shares its other
    weights. The model's sharding, if any, is kept (scales shard with their output channels).
    """
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
    if getattr(lm.model, "quantize", None) is None:
        return lm
    abstract = nnx.eval_shape(lambda: Llama(lm.config, dtype=lm.dtype, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    pure = nnx.to_pure_dict(lm.params)
    pure["layers"] = {name: dequantize(value, lm.dtype) if isinstance(value, Int8Weight) else value
                      for name, value in pure["layers"].items()}
    nnx.replace_by_pure_dict(state, pure)
    return LM(name=lm.name, config=lm.config, model=nnx.merge(graphdef, state), tokenizer=lm.tokenizer)
