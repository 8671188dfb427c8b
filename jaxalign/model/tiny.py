"""The ``"tiny-random"`` preset: a small random Llama whose answers depend on the soft prompt.

Built offline from a fixed seed, with the tiny Llama-3-style tokenizer
(:func:`jaxalign.model.tiny_tokenizer.tiny_tokenizer`). Weights are drawn with std 0.2 rather
than Hugging Face's 0.02: at 0.02 a random model answers every survey item with a near-uniform
distribution whatever the soft prompt (so every prompt scores the same and optimisation tests are
vacuous). With std 0.2 (LM head 0.3) and 4 layers, the expected answer of an item moves across
32 random 4-vector soft prompts with a standard deviation of 0.29-0.82 averaged over six items
(seeds 0-11; 0.48 for the default seed 0), against under 0.05 at std 0.02 (measured; the check is
tests/test_tiny_model.py). With 2 layers the same figure was 0.21-0.74, less reliable.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.model.config import LlamaConfig
from jaxalign.model.families.base import get
from jaxalign.model.llama import LM, Llama, _canonical_dtype, layer_param_shapes
from jaxalign.model.quantize import Int8Weight, check_quantize, quantize_int8

TINY_NAME = "tiny-random"
TINY_FAMILY = "llama"     # the family whose "tiny" preset gives the shape
TINY_INIT_STD = 0.2       # embeddings and layer weights
TINY_HEAD_INIT_STD = 0.3  # LM head: sharper answer distributions, so prompts move answers more


def tiny_config(vocab_size: int) -> LlamaConfig:
    """The tiny preset's shape: 4 layers, d=64, 4 query heads / 2 KV heads (GQA), MLP 192, untied.

    The Llama family's ``"tiny"`` preset (:mod:`jaxalign.model.families.llama`).
    """
    return get(TINY_FAMILY).preset("tiny", vocab_size=vocab_size)


def random_llama(config: LlamaConfig, *, dtype: Any = jnp.float32, seed: int = 0,
                 init_std: float = TINY_INIT_STD, head_init_std: float | None = None,
                 mesh: Any = None, quantize: str | None = None) -> Llama:
    """A :class:`Llama` with weights ``N(0, init_std)`` (LM head ``N(0, head_init_std or init_std)``), norms 1.

    Weights are drawn with NumPy's generator in float32 (fast, and bit-identical on every platform
    and backend), then cast to ``dtype``. With a ``mesh`` (:func:`jaxalign.parallel.make_mesh`)
    each weight goes from host memory straight onto its shards (:func:`jaxalign.parallel.shard_params`).
    ``quantize="int8"``: the decoder's linear weights are drawn in float32, then made int8
    (:mod:`jaxalign.model.quantize`), each in turn.
    """
    dtype = _canonical_dtype(dtype)
    quantize = check_quantize(quantize)
    abstract = nnx.eval_shape(lambda: Llama(config, dtype=dtype, rngs=nnx.Rngs(0), quantize=quantize))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def draw(shape: tuple[int, ...], std: float) -> jax.Array:
        value = (std * rng.standard_normal(shape, dtype=np.float32)).astype(dtype)
        return value if mesh is not None else jnp.asarray(value)

    def draw_linear(shape: tuple[int, ...], std: float) -> Any:
        value = draw(shape, std)
        if quantize != "int8":
            return value
        q = quantize_int8(value)
        return q if mesh is None else Int8Weight(q=np.asarray(q.q), scale=np.asarray(q.scale))

    vocab, d = config.vocab_size, config.hidden_size
    weights: dict[str, Any] = {
        "embed_tokens": draw((vocab, d), init_std),
        "layers": {
            name: jnp.ones(shape, dtype) if name.endswith("layernorm") else draw_linear(shape, init_std)
            for name, shape in layer_param_shapes(config).items()
        },
        "norm": jnp.ones((d,), dtype),
    }
    if not config.tie_word_embeddings:
        weights["lm_head"] = draw((vocab, d), init_std if head_init_std is None else head_init_std)
    if mesh is not None:
        from jaxalign.parallel import check_model_divisible, shard_params

        check_model_divisible(config, mesh)
        weights = shard_params(weights, mesh)
    nnx.replace_by_pure_dict(state, weights)
    return nnx.merge(graphdef, state)


def tiny_model(dtype: Any = jnp.float32, seed: int = 0, mesh: Any = None,
               quantize: str | None = None) -> LM:
    """The ``"tiny-random"`` :class:`LM`, offline: random weights from ``seed`` (std 0.2, LM head 0.3).

    ``mesh``: place the weights sharded over its ``"model"`` axis (see :mod:`jaxalign.parallel`).
    ``quantize="int8"``: the same weights with the decoder's linear layers in int8.
    """
    from jaxalign.model.tiny_tokenizer import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = tiny_config(len(tokenizer))
    model = random_llama(config, dtype=dtype, seed=seed, init_std=TINY_INIT_STD,
                         head_init_std=TINY_HEAD_INIT_STD, mesh=mesh, quantize=quantize)
    return LM(name=TINY_NAME, config=config, model=model, tokenizer=tokenizer)
