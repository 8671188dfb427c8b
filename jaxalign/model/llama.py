"""A Llama decoder in ``flax.nnx`` whose layer stack is one ``jax.lax.scan`` (compiled once).

Numerics follow Hugging Face transformers' ``LlamaForCausalLM``: RMSNorm statistics in float32,
rotary embeddings in the rotate-half layout (q/k weights of HF checkpoints are already in the
split-halves order), grouped-query attention, SwiGLU MLP, optional tied embeddings. Parameters and
activations use the model dtype (float32, bfloat16 or float16); attention softmax runs in float32 and
the logits are returned as float32. With ``quantize="int8"`` the decoder's linear weights are int8
with per-output-channel scales, applied by :func:`jaxalign.model.quantize.linear`.

The same module runs Qwen2/Qwen2.5 and Mistral (``Qwen2ForCausalLM``, ``MistralForCausalLM``): the
config's ``qkv_bias`` / ``o_bias`` add stacked ``(L, ...)`` biases to the attention projections
(:func:`attention_projections`, :func:`attention_output`, used by every attention path), and
``sliding_window`` narrows the attention mask (:func:`window_mask`) in the full pass and the cached one.

The cached entry points (``prefill``, ``extend`` and their pure ``*_fn`` wrappers) take ``hidden=``,
which hidden states the caller reads (:data:`HIDDEN_STATES`): ``"all"`` (default) ``(B, T, d)``;
``"last"`` the last real position of each row, ``(B, d)``; ``"none"`` (only the keys/values are
wanted). With ``"last"`` or ``"none"`` the last layer computes keys/values for every position (the
cache needs them) but its queries, attention, output projection and MLP only at the last real
position (``"last"``) or not at all (``"none"``). XLA cannot drop unread work inside the layer scan,
so the last layer is a ``lax.cond`` branch of that scan; a separate call after a scan of ``L - 1``
layers would copy the last layer's weights out of the stack (one more layer of temporaries).

Two ways in:

* ``LM`` (what :func:`jaxalign.load_model` returns): jitted convenience methods
  ``lm.logits``, ``lm.selected_logits``, ``lm.embed``.
* Pure functions ``forward_hidden``, ``logits_fn``, ``selected_logits_fn``, ``embed_fn`` taking
  ``(graphdef, params, ...)`` with ``graphdef, params = nnx.split(model)`` (also ``lm.graphdef``,
  ``lm.params``), for use inside an outer ``jax.jit`` with the weights as a traced argument (never
  closed over, so they are not baked into the compiled program as constants).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.model.config import LlamaConfig
from jaxalign.model.quantize import Int8Weight, check_quantize, linear, quantize_int8

Array = jax.Array

# What ``prefill``/``extend`` return as hidden states (see the module docstring).
HIDDEN_STATES: tuple[str, ...] = ("all", "last", "none")

# Names of the stacked per-layer parameters, shape (L, ...), in HF's order.
LAYER_PARAM_NAMES = (
    "input_layernorm",           # (L, d)
    "q_proj",                    # (L, d, N*hd)
    "k_proj",                    # (L, d, K*hd)
    "v_proj",                    # (L, d, K*hd)
    "o_proj",                    # (L, N*hd, d)
    "post_attention_layernorm",  # (L, d)
    "gate_proj",                 # (L, d, F)
    "up_proj",                   # (L, d, F)
    "down_proj",                 # (L, F, d)
)


# Optional stacked biases (present when the config asks for them: ``qkv_bias``, ``o_bias``).
LAYER_BIAS_NAMES = (
    "q_bias",                    # (L, N*hd)
    "k_bias",                    # (L, K*hd)
    "v_bias",                    # (L, K*hd)
    "o_bias",                    # (L, d)
)


def layer_param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Shape of each stacked layer parameter, ``(L, in, out)`` for linear weights, ``(L, d)`` for norms.

    The biases of :data:`LAYER_BIAS_NAMES` are included only when the config has them.
    """
    L, d, f = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    q_dim = config.num_attention_heads * config.head_dim
    kv_dim = config.num_key_value_heads * config.head_dim
    shapes = {
        "input_layernorm": (L, d),
        "q_proj": (L, d, q_dim),
        "k_proj": (L, d, kv_dim),
        "v_proj": (L, d, kv_dim),
        "o_proj": (L, q_dim, d),
        "post_attention_layernorm": (L, d),
        "gate_proj": (L, d, f),
        "up_proj": (L, d, f),
        "down_proj": (L, f, d),
    }
    if config.qkv_bias:
        shapes |= {"q_bias": (L, q_dim), "k_bias": (L, kv_dim), "v_bias": (L, kv_dim)}
    if config.o_bias:
        shapes["o_bias"] = (L, d)
    return shapes


def _canonical_dtype(dtype: Any) -> np.dtype:
    """``jnp.float32``/``jnp.bfloat16``/``jnp.float16`` or their names -> numpy dtype; else a ValueError."""
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        raise ValueError(f"dtype must be float32, bfloat16 or float16 (jnp dtype or its name), got {dtype!r}")
    return resolved


class DecoderLayers(nnx.Module):
    """All decoder layers' weights, each stacked along a leading layer axis ``(L, ...)``.

    Linear weights are stored ``(in, out)`` (HF stores ``(out, in)``; the loader transposes), as
    :class:`~jaxalign.model.quantize.Int8Weight` with ``quantize="int8"``. Biases
    (:data:`LAYER_BIAS_NAMES`, zeros at init, never quantised) exist only when the config has them.
    """

    def __init__(self, config: LlamaConfig, *, dtype: Any, rngs: nnx.Rngs, init_std: float,
                 quantize: str | None = None):
        for name, shape in layer_param_shapes(config).items():
            if name.endswith("layernorm"):
                value = jnp.ones(shape, dtype)
            elif name in LAYER_BIAS_NAMES:
                value = jnp.zeros(shape, dtype)
            else:
                value = (init_std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
                value = quantize_int8(value) if quantize == "int8" else value
            setattr(self, name, nnx.Param(value))

    def stacked(self) -> dict[str, Array]:
        """The stacked weights (and biases, if any) as a plain dict (the ``xs`` of the layer scan)."""
        names = LAYER_PARAM_NAMES + tuple(n for n in LAYER_BIAS_NAMES if hasattr(self, n))
        return {name: _param_value(getattr(self, name)) for name in names}


def _param_value(param: nnx.Param) -> Array | Int8Weight:
    """The array (or :class:`Int8Weight`) held by an ``nnx.Param``."""
    return param.get_value() if hasattr(param, "get_value") else param.value


class Llama(nnx.Module):
    """Llama decoder with LM head. Inputs are embeddings, so soft prompts need no special path.

    Attributes (all ``nnx.Param``): ``embed_tokens`` (V, d); ``layers`` (:class:`DecoderLayers`);
    ``norm`` (d,); ``lm_head`` (V, d) stored like the embedding (HF's ``lm_head.weight`` layout),
    or ``None`` with tied embeddings.
    """

    def __init__(self, config: LlamaConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs,
                 init_std: float = 0.02, head_init_std: float | None = None,
                 quantize: str | None = None):
        """Random weights ``N(0, init_std)`` (LM head ``N(0, head_init_std or init_std)``), norms 1.

        ``quantize="int8"``: decoder linear weights as :class:`Int8Weight` (see
        :mod:`jaxalign.model.quantize`; embedding, LM head and norms stay in ``dtype``).
        """
        self.config = config
        self.dtype = _canonical_dtype(dtype)
        self.quantize = check_quantize(quantize)
        vocab, d = config.vocab_size, config.hidden_size

        def normal(shape: tuple[int, ...], std: float) -> nnx.Param:
            return nnx.Param((std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(self.dtype))

        self.embed_tokens = normal((vocab, d), init_std)
        self.layers = DecoderLayers(config, dtype=self.dtype, rngs=rngs, init_std=init_std,
                                    quantize=self.quantize)
        self.norm = nnx.Param(jnp.ones((d,), self.dtype))
        head_std = init_std if head_init_std is None else head_init_std
        self.lm_head = None if config.tie_word_embeddings else normal((vocab, d), head_std)

    # -- pieces -------------------------------------------------------------------------------

    @property
    def unembedding(self) -> Array:
        """LM-head rows ``(V, d)``: logits = hidden @ unembedding.T (the embedding if tied)."""
        return (self.embed_tokens if self.lm_head is None else self.lm_head)[...]

    def embed(self, input_ids: Array) -> Array:
        """Token embeddings ``(B, T) int -> (B, T, d)`` in the model dtype."""
        return jnp.take(self.embed_tokens[...], input_ids, axis=0)

    def __call__(self, inputs_embeds: Array, attention_mask: Array | None = None) -> Array:
        """Final-norm hidden states ``(B, T, d)`` (model dtype) for ``inputs_embeds (B, T, d)``.

        ``attention_mask (B, T)``: 1 for real tokens, 0 for padding, anywhere in the row. Position
        ids are ``cumsum(mask) - 1`` clipped at 0 (``arange`` for right padding). Padding queries
        produce finite garbage; read only real positions.
        """
        config = self.config
        batch, length, _ = inputs_embeds.shape
        if attention_mask is None:
            attention_mask = jnp.ones((batch, length), jnp.int32)
        key_is_real = attention_mask.astype(bool)                                   # (B, T)
        positions = jnp.maximum(jnp.cumsum(key_is_real.astype(jnp.int32), axis=1) - 1, 0)  # (B, T)
        cos, sin = rotary_cos_sin(config, positions, self.dtype)                   # (B, T, hd)
        mask = attention_mask_4d(key_is_real, length)                             # (B, 1, T, T)
        if config.sliding_window is not None:
            mask &= window_mask(positions, positions, config.sliding_window)[:, None]

        def layer(hidden: Array, weights: dict[str, Array]) -> tuple[Array, None]:
            return decoder_layer(config, weights, hidden, cos, sin, mask), None

        # remat: a backward pass (gradient tuning) keeps only each layer's input, not its internals
        hidden, _ = jax.lax.scan(jax.checkpoint(layer, prevent_cse=False), inputs_embeds.astype(self.dtype),
                                 self.layers.stacked())
        return rms_norm(hidden, self.norm[...], config.rms_norm_eps)

    def prefill(self, inputs_embeds: Array, attention_mask: Array,
                hidden: str = "all", steer: Array | None = None) -> tuple[Array | None, KVCache]:
        """Like ``__call__``, and also returns every layer's keys and values as a :class:`KVCache`.

        ``inputs_embeds (B, T, d)``, ``attention_mask (B, T)`` -> hidden states (``(B, T, d)``;
        see ``hidden`` in :meth:`extend`) and a cache with keys/values ``(L, B, T, K, hd)`` (keys
        after RoPE) and the mask ``(B, T)``.
        """
        empty = empty_cache(self.config, inputs_embeds.shape[0], self.dtype)
        return self.extend(inputs_embeds, attention_mask, empty, hidden=hidden, steer=steer)

    def extend(self, inputs_embeds: Array, attention_mask: Array, cache: KVCache,
               hidden: str = "all", steer: Array | None = None) -> tuple[Array | None, KVCache]:
        """Runs new tokens that attend to a cache of earlier tokens shared by groups of rows.

        The ``B = G * C`` new rows are read as ``(G, C)``: row ``g * C + c`` continues cache row
        ``c`` (a cache of batch ``C``; ``C = B`` is the ordinary per-row cache, ``C = 1`` one prefix
        shared by every row). The shared keys/values are never copied ``G`` times.

        Args:
          inputs_embeds: ``(B, T, d)`` the new tokens.
          attention_mask: ``(B, T)`` 1 real / 0 pad for the new tokens. Positions continue after
            each cache row's real tokens.
          cache: keys/values ``(L, C, S, K, hd)`` and mask ``(C, S)`` with ``B % C == 0``.
          hidden: which final-norm hidden states to compute: ``"all"`` (default) ``(B, T, d)``;
            ``"last"`` only each row's last real position, ``(B, d)``; ``"none"`` none (``None``
            is returned; the cache alone is wanted). ``"last"``/``"none"`` skip the last layer's
            unread work (see the module docstring); the cache is the same in all three.

          steer: ``(L, B, d)`` or ``None``: ``steer[l, b]`` is added to block ``l``'s output at every
            position of row ``b`` (steering vectors; zeros leave a row as it is, bit for bit).

        Returns:
          the hidden states asked for, and the cache of the new tokens alone
          (``(L, B, T, K, hd)``, mask ``(B, T)``), which :func:`concat_caches` can append.
        """
        if hidden not in HIDDEN_STATES:
            raise ValueError(f"hidden must be one of {', '.join(HIDDEN_STATES)}, got {hidden!r}")
        config = self.config
        batch, length, _ = inputs_embeds.shape
        cache_batch = cache.mask.shape[0]
        if batch % cache_batch:
            raise ValueError(f"{batch} rows cannot be grouped over a cache of {cache_batch} rows")
        groups = batch // cache_batch
        key_is_real = attention_mask.astype(bool)                                   # (B, T)
        offset = jnp.tile(jnp.sum(cache.mask.astype(jnp.int32), axis=1), groups)    # (B,)
        positions = offset[:, None] + jnp.maximum(jnp.cumsum(key_is_real.astype(jnp.int32), axis=1) - 1, 0)
        cos, sin = rotary_cos_sin(config, positions, self.dtype)                   # (B, T, hd)
        mask_new = attention_mask_4d(key_is_real, length)[:, 0]                    # (B, T, T)
        cached_real = cache.mask.astype(bool)                                       # (C, S)
        if config.sliding_window is not None:  # per query: (C, S) -> (G, C, T, S)
            window = config.sliding_window
            mask_new &= window_mask(positions, positions, window)
            past_positions = jnp.maximum(jnp.cumsum(cache.mask.astype(jnp.int32), axis=1) - 1, 0)
            query_positions = positions.reshape(groups, cache_batch, length)
            cached_real = cached_real[None, :, None, :] & window_mask(
                query_positions, past_positions[None], window)

        def layer(hidden: Array, xs: tuple[dict[str, Array], Array, Array]):
            weights, past_keys, past_values = xs
            hidden, keys, values = cached_decoder_layer(
                config, weights, hidden, cos, sin, mask_new, past_keys, past_values, cached_real, groups)
            return hidden, (keys, values)

        states = inputs_embeds.astype(self.dtype)                                   # (B, T, d)
        last = config.num_hidden_layers - 1
        rows = jnp.arange(batch)                                                    # (B,)
        query_index = last_real_index(attention_mask) if hidden == "last" else None  # (B,)

        def last_layer(states: Array, weights: dict[str, Array], past_keys: Array, past_values: Array):
            """The last layer computing only what is read; the carry keeps its shape (B, T, d)."""
            if hidden == "none":  # keys/values only; the carry passes through, unread
                return states, layer_keys_values(config, weights, states, cos, sin)
            out, keys, values = cached_decoder_layer(                               # out (B, 1, d)
                config, weights, states, cos, sin, mask_new, past_keys, past_values, cached_real,
                groups, query_index=query_index)
            return states.at[rows, query_index].set(out[:, 0]), (keys, values)

        def any_layer(states: Array, xs: tuple[Array, dict[str, Array], Array, Array]):
            index, weights, past_keys, past_values = xs
            if hidden == "all":
                return layer(states, (weights, past_keys, past_values))
            # the last layer is a branch of the same scan: its weights are sliced from the stack
            # like every other layer's (a separate call would copy them out of it)
            return jax.lax.cond(index == last, last_layer,
                                lambda h, w, k, v: layer(h, (w, k, v)), states, weights, past_keys, past_values)

        def steered_layer(states: Array, xs: tuple) -> tuple[Array, tuple[Array, Array]]:
            out, keys_values = any_layer(states, xs[:4])
            return out + xs[4][:, None, :].astype(out.dtype), keys_values

        states, (keys, values) = jax.lax.scan(  # remat as in __call__
            jax.checkpoint(any_layer if steer is None else steered_layer, prevent_cse=False), states,
            (jnp.arange(config.num_hidden_layers), self.layers.stacked(), cache.keys, cache.values)
            + (() if steer is None else (steer,)))
        new_cache = KVCache(keys=keys, values=values, mask=attention_mask.astype(jnp.int32))
        if hidden == "none":
            return None, new_cache
        if hidden == "last":
            states = states[rows, query_index]                                       # (B, d)
        return rms_norm(states, self.norm[...], config.rms_norm_eps), new_cache


# -- building blocks (pure functions) ---------------------------------------------------------

def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """RMSNorm with float32 statistics, cast back to ``x.dtype`` before the weight (as HF does)."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return weight * normed.astype(x.dtype)


def rotary_cos_sin(config: LlamaConfig, positions: Array, dtype: Any) -> tuple[Array, Array]:
    """Rotary tables for integer ``positions (B, T)`` -> ``cos, sin`` each ``(B, T, head_dim)``.

    Angles are computed in float32 and cast to ``dtype``; the two halves repeat (rotate-half layout).
    """
    inv_freq = jnp.asarray(config.rope_inverse_frequencies())                 # (hd/2,)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq              # (B, T, hd/2)
    angles = jnp.concatenate([angles, angles], axis=-1)                      # (B, T, hd)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate ``x (B, T, heads, hd)`` by ``cos, sin (B, T, hd)``: ``x*cos + rotate_half(x)*sin``."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def attention_mask_4d(key_is_real: Array, query_length: int) -> Array:
    """Boolean attention mask ``(B, 1, Tq, Tk)``: causal AND key is real.

    Each query may always see its own key, so rows of padding queries are never fully masked
    (no NaN on any backend). Queries are the last ``query_length`` of the ``Tk`` keys, which
    leaves room for a key/value prefix cache (keys = cached prefix + current tokens).
    """
    key_length = key_is_real.shape[1]
    query_index = jnp.arange(query_length)[:, None] + (key_length - query_length)   # (Tq, 1)
    key_index = jnp.arange(key_length)[None, :]                                     # (1, Tk)
    causal = key_index <= query_index                                               # (Tq, Tk)
    own = key_index == query_index
    return causal[None, None] & (key_is_real[:, None, None, :] | own[None, None])


def window_mask(query_positions: Array, key_positions: Array, window: int) -> Array:
    """Sliding-window visibility ``(..., Tq, Tk)``: the key is one of the ``window`` latest positions.

    ``query_positions (..., Tq)``, ``key_positions (..., Tk)`` are token positions (real tokens
    counted, padding not), so a query sees keys with ``q - window < k`` (AND the causal mask).
    """
    return key_positions[..., None, :] > query_positions[..., :, None] - window


def projection(config: LlamaConfig, weights: dict[str, Array], x: Array, name: str) -> Array:
    """One of the ``"q"``, ``"k"``, ``"v"`` projections of normed ``x (B, T, d)`` (+ its bias, if
    any), split into heads: ``(B, T, N, hd)`` for queries, ``(B, T, K, hd)`` for keys/values."""
    out = linear(x, weights[f"{name}_proj"])
    if config.qkv_bias:
        out = out + weights[f"{name}_bias"]
    heads = config.num_attention_heads if name == "q" else config.num_key_value_heads
    return out.reshape(*x.shape[:2], heads, config.head_dim)


def attention_projections(config: LlamaConfig, weights: dict[str, Array],
                          x: Array) -> tuple[Array, Array, Array]:
    """Queries ``(B, T, N, hd)``, keys and values ``(B, T, K, hd)`` of normed ``x (B, T, d)``, before RoPE.

    Adds the q/k/v biases when the config has them (Qwen2; Llama with ``attention_bias``).
    """
    return projection(config, weights, x, "q"), projection(config, weights, x, "k"), projection(config, weights, x, "v")


def attention_output(config: LlamaConfig, weights: dict[str, Array], attended: Array) -> Array:
    """The output projection of attended values ``(B, T, N*hd) -> (B, T, d)`` (+ its bias, if any)."""
    out = linear(attended, weights["o_proj"])
    return out + weights["o_bias"] if config.o_bias else out


def decoder_layer(config: LlamaConfig, weights: dict[str, Array], hidden: Array,
                  cos: Array, sin: Array, mask: Array) -> Array:
    """One pre-norm decoder layer on ``hidden (B, T, d)`` with this layer's (unstacked) ``weights``."""
    batch, length, _ = hidden.shape
    heads, head_dim = config.num_attention_heads, config.head_dim

    x = rms_norm(hidden, weights["input_layernorm"], config.rms_norm_eps)
    query, key, value = attention_projections(config, weights, x)
    query = apply_rotary(query, cos, sin)
    key = apply_rotary(key, cos, sin)
    attended = _dot_product_attention(query, key, value, mask)                 # (B, T, N, hd)
    hidden = hidden + attention_output(config, weights, attended.reshape(batch, length, heads * head_dim))

    x = rms_norm(hidden, weights["post_attention_layernorm"], config.rms_norm_eps)
    gated = jax.nn.silu(linear(x, weights["gate_proj"])) * linear(x, weights["up_proj"])
    return hidden + linear(gated, weights["down_proj"])


def _dot_product_attention(query: Array, key: Array, value: Array, mask: Array) -> Array:
    """``jax.nn.dot_product_attention``; float16 on a CPU runs it in float32 (XLA's CPU dot has no
    float16-in/float32-out algorithm, and a CPU computes float16 in float32 anyway)."""
    if query.dtype == jnp.float16 and jax.default_backend() == "cpu":
        f32 = jnp.float32
        out = jax.nn.dot_product_attention(query.astype(f32), key.astype(f32), value.astype(f32), mask=mask)
        return out.astype(query.dtype)
    return jax.nn.dot_product_attention(query, key, value, mask=mask)


@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of earlier tokens, per layer (a pytree).

    ``keys``, ``values``: ``(L, C, S, K, hd)`` in the model dtype (keys already rotated);
    ``mask``: ``(C, S)`` int32, 1 for real tokens. Positions of tokens run after it continue
    from ``mask.sum(1)``.
    """

    keys: Array
    values: Array
    mask: Array


jax.tree_util.register_dataclass(KVCache, data_fields=["keys", "values", "mask"], meta_fields=[])


def empty_cache(config: LlamaConfig, batch: int, dtype: Any) -> KVCache:
    """A cache of ``batch`` rows holding no token (``S = 0``)."""
    shape = (config.num_hidden_layers, batch, 0, config.num_key_value_heads, config.head_dim)
    return KVCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                   mask=jnp.zeros((batch, 0), jnp.int32))


def concat_caches(first: KVCache, second: KVCache) -> KVCache:
    """Appends ``second`` (batch ``B``) after ``first`` (batch ``B`` or 1, broadcast) along time."""
    batch = second.mask.shape[0]
    if first.mask.shape[0] not in (1, batch):
        raise ValueError(f"cannot append a cache of {batch} rows to one of {first.mask.shape[0]} rows")

    def widen(x: Array, axis: int) -> Array:
        shape = list(x.shape)
        shape[axis] = batch
        return jnp.broadcast_to(x, shape)

    return KVCache(
        keys=jnp.concatenate([widen(first.keys, 1), second.keys], axis=2),
        values=jnp.concatenate([widen(first.values, 1), second.values], axis=2),
        mask=jnp.concatenate([widen(first.mask, 0), second.mask], axis=1),
    )


def layer_keys_values(config: LlamaConfig, weights: dict[str, Array], hidden: Array,
                      cos: Array, sin: Array) -> tuple[Array, Array]:
    """A layer's keys (after RoPE) and values ``(B, T, K, hd)`` for its input ``hidden (B, T, d)``."""
    return normed_keys_values(config, weights, rms_norm(hidden, weights["input_layernorm"], config.rms_norm_eps),
                              cos, sin)


def normed_keys_values(config: LlamaConfig, weights: dict[str, Array], x: Array,
                       cos: Array, sin: Array) -> tuple[Array, Array]:
    """Keys (after RoPE) and values ``(B, T, K, hd)`` of an already normalised layer input ``x (B, T, d)``."""
    return apply_rotary(projection(config, weights, x, "k"), cos, sin), projection(config, weights, x, "v")


def cached_decoder_layer(config: LlamaConfig, weights: dict[str, Array], hidden: Array,
                         cos: Array, sin: Array, mask_new: Array, past_keys: Array,
                         past_values: Array, past_real: Array, groups: int,
                         query_index: Array | None = None) -> tuple[Array, Array, Array]:
    """One decoder layer whose new tokens also attend to cached keys/values shared over groups.

    ``hidden (B, T, d)`` with ``B = G * C``; ``mask_new (B, T, T)``; ``past_keys/values
    (C, S, K, hd)``; ``past_real (C, S)``, or ``(G, C, T, S)`` when what each query may see of the
    cache differs (a sliding window). Returns the new hidden states ``(B, T, d)`` and the new
    tokens' keys and values ``(B, T, K, hd)``.

    ``query_index (B,)``: only that position of each row queries, attends and runs the MLP (keys
    and values are still computed for all ``T``); the hidden states returned are ``(B, 1, d)``.
    """
    batch = hidden.shape[0]
    heads, head_dim = config.num_attention_heads, config.head_dim
    cache_batch = past_keys.shape[0]

    x = rms_norm(hidden, weights["input_layernorm"], config.rms_norm_eps)              # (B, T, d)
    key, value = normed_keys_values(config, weights, x, cos, sin)                      # (B, T, K, hd)
    if query_index is not None:  # one query per row: hidden, cos, sin and masks at that position
        rows = jnp.arange(batch)
        hidden = hidden[rows, query_index][:, None]                                    # (B, 1, d)
        x = x[rows, query_index][:, None]
        cos, sin = cos[rows, query_index][:, None], sin[rows, query_index][:, None]    # (B, 1, hd)
        mask_new = mask_new[rows, query_index][:, None]                                # (B, 1, T)
        if past_real.ndim == 4:                                                        # (G, C, T, S) -> (G, C, 1, S)
            past_real = jnp.take_along_axis(past_real, query_index.reshape(groups, cache_batch, 1, 1), axis=2)
    queries = hidden.shape[1]                                                          # Tq: T, or 1
    query = apply_rotary(projection(config, weights, x, "q"), cos, sin)               # (B, Tq, N, hd)

    # Every query sees the shared cache (the same rows for each of the G groups) and then the new
    # tokens; one jax.nn.dot_product_attention call over both, so the backend's attention applies.
    past_length = past_keys.shape[1]

    def per_row(cached: Array) -> Array:                                               # (C, S, K, hd) -> (B, S, K, hd)
        return jnp.broadcast_to(cached[None], (groups,) + cached.shape).reshape((batch,) + cached.shape[1:])

    keys = jnp.concatenate([per_row(past_keys), key], axis=1)                         # (B, S + T, K, hd)
    values = jnp.concatenate([per_row(past_values), value], axis=1)
    past_visible = past_real[None, :, None, :] if past_real.ndim == 2 else past_real   # (G|1, C, Tq|1, S)
    past_visible = jnp.broadcast_to(past_visible.astype(bool), (groups, cache_batch, queries, past_length))
    visible = jnp.concatenate([past_visible.reshape(batch, queries, past_length),
                               mask_new.astype(bool)], axis=-1)                        # (B, Tq, S + T)
    attended = _dot_product_attention(query, keys, values, visible[:, None])          # (B, Tq, N, hd)
    hidden = hidden + attention_output(config, weights, attended.reshape(batch, queries, heads * head_dim))

    x = rms_norm(hidden, weights["post_attention_layernorm"], config.rms_norm_eps)
    gated = jax.nn.silu(linear(x, weights["gate_proj"])) * linear(x, weights["up_proj"])
    return hidden + linear(gated, weights["down_proj"]), key, value


def last_real_index(attention_mask: Array) -> Array:
    """Index of the last position with mask 1 in each row: ``(B, T) -> (B,)`` int32 (0 if none)."""
    length = attention_mask.shape[1]
    if length == 0:  # no token at all (e.g. K = 0 soft tokens)
        return jnp.zeros(attention_mask.shape[:1], jnp.int32)
    index = jnp.where(attention_mask.astype(bool), jnp.arange(length, dtype=jnp.int32), -1)
    return jnp.maximum(index.max(axis=1), 0)


# -- pure functions over (graphdef, params) ---------------------------------------------------

def forward_hidden(graphdef: nnx.GraphDef, params: nnx.State, inputs_embeds: Array,
                   attention_mask: Array | None = None) -> Array:
    """Final-norm hidden states ``(B, T, d)`` in the model dtype.

    ``inputs_embeds (B, T, d)``; ``attention_mask (B, T)`` 1 real / 0 pad (default all ones).
    """
    return nnx.merge(graphdef, params)(inputs_embeds, attention_mask)


def logits_fn(graphdef: nnx.GraphDef, params: nnx.State, inputs_embeds: Array,
              attention_mask: Array | None = None) -> Array:
    """Full-vocabulary logits ``(B, T, V)`` float32."""
    model = nnx.merge(graphdef, params)
    hidden = model(inputs_embeds, attention_mask)
    return jnp.einsum("btd,vd->btv", hidden, model.unembedding, preferred_element_type=jnp.float32)


def selected_logits_fn(graphdef: nnx.GraphDef, params: nnx.State, inputs_embeds: Array,
                       attention_mask: Array | None, token_ids: Array) -> Array:
    """Logits of ``token_ids`` at the last real position of each row, float32.

    ``token_ids (n,)`` (same ids for every row) -> ``(B, n)``, or ``(B, n)`` per row -> ``(B, n)``.
    Only the ``n`` LM-head rows are gathered; full-vocabulary logits are never formed.
    """
    model = nnx.merge(graphdef, params)
    batch, length, _ = inputs_embeds.shape
    if attention_mask is None:
        attention_mask = jnp.ones((batch, length), jnp.int32)
    hidden = model(inputs_embeds, attention_mask)                                  # (B, T, d)
    last = hidden[jnp.arange(batch), last_real_index(attention_mask)]              # (B, d)
    token_ids = jnp.asarray(token_ids)
    rows = jnp.take(model.unembedding, token_ids, axis=0)                         # (n, d) | (B, n, d)
    spec = "bd,nd->bn" if token_ids.ndim == 1 else "bd,bnd->bn"
    return jnp.einsum(spec, last, rows, preferred_element_type=jnp.float32)


def prefill_fn(graphdef: nnx.GraphDef, params: nnx.State, inputs_embeds: Array,
               attention_mask: Array, hidden: str = "all") -> tuple[Array | None, KVCache]:
    """Hidden states (``(B, T, d)``, ``(B, d)`` or ``None`` per ``hidden``; see :meth:`Llama.extend`)
    and the :class:`KVCache` of these tokens."""
    return nnx.merge(graphdef, params).prefill(inputs_embeds, attention_mask, hidden=hidden)


def extend_fn(graphdef: nnx.GraphDef, params: nnx.State, inputs_embeds: Array,
              attention_mask: Array, cache: KVCache, hidden: str = "all") -> tuple[Array | None, KVCache]:
    """New tokens ``(G*C, T, d)`` after a cache of ``C`` rows; see :meth:`Llama.extend`."""
    return nnx.merge(graphdef, params).extend(inputs_embeds, attention_mask, cache, hidden=hidden)


def token_logits(graphdef: nnx.GraphDef, params: nnx.State, last: Array, token_ids: Array) -> Array:
    """Logits ``(B, n)`` float32 of ``token_ids (n,)`` from final-norm hidden states ``last (B, d)``."""
    rows = jnp.take(nnx.merge(graphdef, params).unembedding, jnp.asarray(token_ids), axis=0)  # (n, d)
    return jnp.einsum("bd,nd->bn", last, rows, preferred_element_type=jnp.float32)


def select_logits(graphdef: nnx.GraphDef, params: nnx.State, hidden: Array,
                  attention_mask: Array, token_ids: Array) -> Array:
    """Logits ``(B, n)`` float32 of ``token_ids (n,)`` from ``hidden (B, T, d)`` at the last real position."""
    last = hidden[jnp.arange(hidden.shape[0]), last_real_index(attention_mask)]   # (B, d)
    return token_logits(graphdef, params, last, token_ids)


def embed_fn(graphdef: nnx.GraphDef, params: nnx.State, input_ids: Array) -> Array:
    """Token embeddings ``(B, T) -> (B, T, d)`` in the model dtype."""
    return nnx.merge(graphdef, params).embed(input_ids)


_logits_jit = jax.jit(logits_fn)
_selected_logits_jit = jax.jit(selected_logits_fn)
_embed_jit = jax.jit(embed_fn)


# -- the public handle --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class LM:
    """A loaded, frozen language model: weights, config, tokenizer and jitted entry points.

    Attributes: ``name`` (path, hub id or ``"tiny-random"``), ``config`` (:class:`LlamaConfig`),
    ``dtype`` (numpy dtype of params/activations), ``model`` (:class:`Llama` nnx module),
    ``tokenizer`` (a transformers tokenizer, or ``None`` if the checkpoint has none),
    ``graphdef`` and ``params`` (``nnx.split(model)``, for the pure functions), ``source``
    (the local checkpoint folder it was loaded from, or ``None`` for a model built in memory;
    :func:`jaxalign.fingerprint.model_fingerprint` reads the weights' identity from it).
    """

    name: str
    config: LlamaConfig
    model: Llama
    tokenizer: Any = None
    source: str | None = None
    graphdef: nnx.GraphDef = dataclasses.field(init=False, repr=False)
    params: nnx.State = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        graphdef, params = nnx.split(self.model)
        object.__setattr__(self, "graphdef", graphdef)
        object.__setattr__(self, "params", params)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the weights and activations (float32, bfloat16 or float16)."""
        return self.model.dtype

    @property
    def quantize(self) -> str | None:
        """``"int8"`` when the decoder's linear weights are int8, else ``None``."""
        return getattr(self.model, "quantize", None)

    @property
    def embedding_matrix(self) -> Array:
        """Input embedding table ``(V, d)`` in the model dtype."""
        return self.model.embed_tokens[...]

    def _embeds(self, input_ids: Any, inputs_embeds: Any) -> Array:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, T) or inputs_embeds (B, T, d)")
        if inputs_embeds is None:
            input_ids = jnp.asarray(input_ids)
            if input_ids.ndim != 2:
                raise ValueError(f"input_ids must be (B, T), got shape {input_ids.shape}")
            return self.embed(input_ids)
        inputs_embeds = jnp.asarray(inputs_embeds)
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be (B, T, {self.config.hidden_size}), got shape {inputs_embeds.shape}")
        return inputs_embeds

    def _mask(self, attention_mask: Any, embeds: Array) -> Array:
        if attention_mask is None:
            return jnp.ones(embeds.shape[:2], jnp.int32)
        attention_mask = jnp.asarray(attention_mask)
        if attention_mask.shape != embeds.shape[:2]:
            raise ValueError(f"attention_mask must be (B, T) = {embeds.shape[:2]}, got {attention_mask.shape}")
        return attention_mask.astype(jnp.int32)

    def embed(self, input_ids: Any) -> Array:
        """Token embeddings ``(B, T) -> (B, T, d)`` in the model dtype."""
        return _embed_jit(self.graphdef, self.params, jnp.asarray(input_ids))

    def logits(self, input_ids: Any = None, *, inputs_embeds: Any = None,
               attention_mask: Any = None) -> Array:
        """Full-vocabulary logits ``(B, T, V)`` float32 for ``input_ids (B, T)`` or ``inputs_embeds (B, T, d)``."""
        embeds = self._embeds(input_ids, inputs_embeds)
        return _logits_jit(self.graphdef, self.params, embeds, self._mask(attention_mask, embeds))

    def selected_logits(self, token_ids: Any, *, input_ids: Any = None, inputs_embeds: Any = None,
                        attention_mask: Any = None) -> Array:
        """Logits ``(B, n)`` float32 of ``token_ids (n,)`` at each row's last real position.

        Never forms full-vocabulary logits (only the ``n`` LM-head rows are used).
        """
        embeds = self._embeds(input_ids, inputs_embeds)
        token_ids = jnp.asarray(token_ids, jnp.int32)
        return _selected_logits_jit(self.graphdef, self.params, embeds,
                                    self._mask(attention_mask, embeds), token_ids)
