"""Steering vectors: a vector added to the residual stream after decoder block ``L``, at every position.

A steering vector is the second frozen-model intervention beside the soft prompt. For one layer
it is ``v (d,)``, added to the output of block ``L`` (0-based; ``0 <= L < n_layers``) at every
position of the sequence: prompt tokens, padding (never read) and, in generation, every generated
token. ``n`` layers take ``(n, d)`` with one distinct layer per row (the file format holds it; the
forward functions here add each row after its block)::

    embeds (B, T, d) -> blocks 0..L -> h (B, T, d) -> h + v -> blocks L+1..n_layers-1 -> final norm

transformers' equivalent is a forward hook on ``model.model.layers[L]`` that adds ``v`` to the
block's output; llama.cpp's is a control vector (:mod:`jaxalign.generation.control_vector`).

What this module holds:

- the forward pass with the add (pure functions over ``(graphdef, params)``, for use inside an
  outer ``jit``): :func:`steered_hidden` runs every row whole (the plain reference path);
  :func:`hidden_after_block` and :func:`steered_last_hidden` split it at the first steered layer
  so that blocks ``0..L`` run once per sequence and only the rest runs once per member (what
  :mod:`jaxalign.scoring_steering` does);
- the search space (:func:`steering_space`, :func:`residual_std`): like a soft prompt's, the full
  ``d`` coordinates or a random subspace, scaled to the std of the hidden state after block ``L``
  on the survey's rendered items (a vector in those units moves the residual stream by about its
  own spread);
- the file (:func:`save_steering`, :func:`load_steering`): safetensors with one tensor ``vector``
  (``(d,)`` or ``(n, d)``) and string metadata ``layer`` (or ``layers``, comma-separated), plus
  provenance (:func:`steering_metadata`: model name and fingerprint, architecture, target,
  configuration); :func:`steering_provenance` checks it against the model it is used with. A plain
  file with only ``vector`` and ``layer`` (made elsewhere) is accepted with a one-line note.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.interventions.base import STEERING_TENSOR
from jaxalign.model import llama

Array = jax.Array

# -- the forward pass with the add --------------------------------------------------------------


def _rope_and_mask(config: Any, attention_mask: Array, dtype: Any) -> tuple[Array, Array, Array]:
    """``cos, sin (B, T, hd)`` and the boolean mask ``(B, 1, T, T)`` of a full pass, as
    :meth:`jaxalign.model.llama.Llama.__call__` builds them (positions count real tokens only)."""
    key_is_real = attention_mask.astype(bool)                                        # (B, T)
    positions = jnp.maximum(jnp.cumsum(key_is_real.astype(jnp.int32), axis=1) - 1, 0)
    cos, sin = llama.rotary_cos_sin(config, positions, dtype)
    mask = llama.attention_mask_4d(key_is_real, attention_mask.shape[1])
    if config.sliding_window is not None:
        mask &= llama.window_mask(positions, positions, config.sliding_window)[:, None]
    return cos, sin, mask


def _run_blocks(config: Any, stacked: dict[str, Any], hidden: Array, cos: Array, sin: Array, mask: Array,
                start: int, stop: int) -> Array:
    """Blocks ``start..stop-1`` (static bounds) on ``hidden (B, T, d)``. Each block's weights are
    indexed out of the stack in the loop (no slice of the stack is copied)."""
    if stop <= start:
        return hidden

    def body(index: Array, states: Array) -> Array:
        weights = jax.tree.map(lambda w: w[index], stacked)
        return llama.decoder_layer(config, weights, states, cos, sin, mask)

    return jax.lax.fori_loop(start, stop, body, hidden)


def check_layers(layers: int | Sequence[int], n_layers: int) -> tuple[int, ...]:
    """``layers`` as a sorted tuple of distinct ints in ``[0, n_layers)``; else a ``ValueError``."""
    values = (layers,) if isinstance(layers, (int, np.integer)) else tuple(layers)
    if not values:
        raise ValueError("a steering vector needs at least one layer")
    for layer in values:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise ValueError(f"steering layers must be ints, got {layer!r}")
        if not 0 <= int(layer) < n_layers:
            raise ValueError(f"steering layer {int(layer)} is out of range: the model has {n_layers} "
                             f"decoder blocks, so a layer is 0..{n_layers - 1} (0-based; the vector is "
                             "added after that block)")
    if len(set(int(v) for v in values)) != len(values):
        raise ValueError(f"steering layers must be distinct, got {list(values)}")
    return tuple(sorted(int(v) for v in values))


def _as_rows(vectors: Array, n_layers: int) -> Array:
    """``(B, d)`` (one layer) or ``(B, n, d)`` -> ``(B, n, d)``."""
    return vectors[:, None, :] if vectors.ndim == 2 and n_layers == 1 else vectors


def steered_hidden(graphdef: Any, params: Any, inputs_embeds: Array, attention_mask: Array,
                   vectors: Array, layers: tuple[int, ...]) -> Array:
    """The plain reference path: every row through every block, ``vectors`` added after ``layers``.

    Args:
      inputs_embeds: ``(B, T, d)``; attention_mask: ``(B, T)`` 1 real / 0 pad.
      vectors: ``(B, d)`` (one layer) or ``(B, n, d)``, one row's vector(s) per sequence.
      layers: the ``n`` sorted distinct 0-based blocks (:func:`check_layers`), static.

    Returns:
      final-norm hidden states ``(B, T, d)`` in the model dtype (what ``forward_hidden`` returns).
    """
    model = _merge(graphdef, params)
    config = model.config
    stacked = model.layers.stacked()
    cos, sin, mask = _rope_and_mask(config, attention_mask, model.dtype)
    rows = _as_rows(vectors, len(layers)).astype(model.dtype)                        # (B, n, d)
    states, start = inputs_embeds.astype(model.dtype), 0
    for j, layer in enumerate(layers):
        states = _run_blocks(config, stacked, states, cos, sin, mask, start, layer + 1)
        states = states + rows[:, j, None, :]
        start = layer + 1
    states = _run_blocks(config, stacked, states, cos, sin, mask, start, config.num_hidden_layers)
    return llama.rms_norm(states, model.norm[...], config.rms_norm_eps)


def _merge(graphdef: Any, params: Any) -> Any:
    """The :class:`jaxalign.model.Llama` module of ``(graphdef, params)``."""
    from flax import nnx

    return nnx.merge(graphdef, params)


def hidden_after_block(graphdef: Any, params: Any, inputs_embeds: Array, attention_mask: Array,
                       layer: int) -> Array:
    """The residual stream after block ``layer`` (0-based, static), before any add: ``(B, T, d)``.

    The shared half of the fast path: it does not depend on the vector, so a scorer runs it once
    per sequence for the whole population.
    """
    model = _merge(graphdef, params)
    cos, sin, mask = _rope_and_mask(model.config, attention_mask, model.dtype)
    return _run_blocks(model.config, model.layers.stacked(), inputs_embeds.astype(model.dtype),
                       cos, sin, mask, 0, layer + 1)


def steered_last_hidden(graphdef: Any, params: Any, shared: Array, attention_mask: Array,
                        vectors: Array, layers: tuple[int, ...], prefix_len: int = 0) -> Array:
    """The per-member half of the fast path: final-norm hidden states at each row's last real token.

    Args:
      shared: ``(Q, T, d)`` :func:`hidden_after_block` at ``layers[0]`` for ``Q`` sequences.
      attention_mask: ``(Q, T)``.
      vectors: ``(P, d)`` (one layer) or ``(P, n, d)``: member ``p``'s vector(s).
      layers: sorted distinct blocks (static), ``layers[0]`` the block ``shared`` was taken after.
      prefix_len: ``Tp`` (static) when the first ``Tp`` positions of every sequence are the same
        real tokens (a shared prefix: system turn, user header); they then run once per member
        (their keys/values read by every item's row) instead of once per member and sequence.
        0: every row runs whole. Ignored with a sliding window.

    Returns:
      ``(P, Q, d)``: member ``p`` on sequence ``q``. Only blocks ``layers[0]+1..`` run per member
      (``P * Q`` rows), and the last block computes its query, attention and MLP at the read
      position only (its keys/values still cover every position).
    """
    model = _merge(graphdef, params)
    config = model.config
    if 0 < prefix_len < shared.shape[1] and config.sliding_window is None:
        return _steered_after_prefix(model, shared, attention_mask, vectors, layers, prefix_len)
    n_blocks = config.num_hidden_layers
    stacked = model.layers.stacked()
    n_pop = vectors.shape[0]
    n_seq, length, width = shared.shape
    rows = _as_rows(vectors, len(layers)).astype(model.dtype)                        # (P, n, d)
    mask_rows = jnp.tile(attention_mask, (n_pop, 1))                                 # (P*Q, T), row p*Q + q
    cos, sin, mask = _rope_and_mask(config, mask_rows, model.dtype)
    states = (shared[None] + rows[:, 0, None, None, :]).reshape(n_pop * n_seq, length, width)
    query_index = llama.last_real_index(mask_rows)                                   # (P*Q,)
    batch = jnp.arange(n_pop * n_seq)
    for j, layer in enumerate(layers):
        if j > 0:
            states = states + jnp.repeat(rows[:, j], n_seq, axis=0)[:, None, :]
        stop = layers[j + 1] + 1 if j + 1 < len(layers) else n_blocks - 1            # last block: below
        states = _run_blocks(config, stacked, states, cos, sin, mask, layer + 1, stop)
    if layers[-1] < n_blocks - 1:  # the last block, trimmed to the read position
        weights = jax.tree.map(lambda w: w[n_blocks - 1], stacked)
        heads_kv, head_dim = config.num_key_value_heads, config.head_dim
        empty = jnp.zeros((n_pop * n_seq, 0, heads_kv, head_dim), model.dtype)
        out, _, _ = llama.cached_decoder_layer(
            config, weights, states, cos, sin, mask[:, 0], empty, empty,
            jnp.zeros((n_pop * n_seq, 0), bool), 1, query_index=query_index)        # (P*Q, 1, d)
        last = out[:, 0]
    else:
        last = states[batch, query_index]
    last = llama.rms_norm(last, model.norm[...], config.rms_norm_eps)                # (P*Q, d)
    return last.reshape(n_pop, n_seq, width)


def _steered_after_prefix(model: Any, shared: Array, attention_mask: Array, vectors: Array,
                          layers: tuple[int, ...], prefix_len: int) -> Array:
    """:func:`steered_last_hidden` for sequences sharing their first ``prefix_len`` tokens: per block,
    each member's prefix (``P`` rows) runs once and every item's rest (rows ``q * P + p``) attends to
    that member's prefix keys/values (:func:`jaxalign.model.llama.cached_decoder_layer`)."""
    config, dtype = model.config, model.dtype
    n_blocks = config.num_hidden_layers
    stacked = model.layers.stacked()
    n_pop, n_seq = vectors.shape[0], shared.shape[0]
    rows = _as_rows(vectors, len(layers)).astype(dtype)                              # (P, n, d)
    prefix_mask = jnp.ones((n_pop, prefix_len), jnp.int32)
    prefix_cos, prefix_sin, prefix_attend = _rope_and_mask(config, prefix_mask, dtype)
    rest_mask = jnp.repeat(attention_mask[:, prefix_len:], n_pop, axis=0)            # (Q*P, Ts), row q*P + p
    positions = prefix_len + jnp.maximum(jnp.cumsum(rest_mask, axis=1) - 1, 0)
    rest_cos, rest_sin = llama.rotary_cos_sin(config, positions, dtype)
    rest_attend = llama.attention_mask_4d(rest_mask.astype(bool), rest_mask.shape[1])[:, 0]
    past_real = prefix_mask.astype(bool)                                             # (P, Tp)
    empty = jnp.zeros((n_pop, 0, config.num_key_value_heads, config.head_dim), dtype)
    no_past = jnp.zeros((n_pop, 0), bool)
    prefix = shared[0, :prefix_len][None] + rows[:, 0, None, :]                      # (P, Tp, d)
    rest = (shared[:, None, prefix_len:] + rows[None, :, 0, None, :]).reshape(n_seq * n_pop, -1, shared.shape[-1])
    query_index = llama.last_real_index(rest_mask)                                   # (Q*P,)

    def block(carry: tuple[Array, Array], index: Array) -> tuple[tuple[Array, Array], None]:
        prefix, rest = carry
        weights = jax.tree.map(lambda w: w[index], stacked)
        prefix, keys, values = llama.cached_decoder_layer(config, weights, prefix, prefix_cos, prefix_sin,
                                                          prefix_attend[:, 0], empty, empty, no_past, 1)
        rest, _, _ = llama.cached_decoder_layer(config, weights, rest, rest_cos, rest_sin, rest_attend,
                                                keys, values, past_real, n_seq)
        return (prefix, rest), None

    for j, layer in enumerate(layers):
        if j > 0:
            prefix = prefix + rows[:, j, None, :]
            rest = rest + jnp.tile(rows[:, j], (n_seq, 1))[:, None, :]
        stop = layers[j + 1] + 1 if j + 1 < len(layers) else n_blocks - 1            # last block: below
        if stop > layer + 1:
            (prefix, rest), _ = jax.lax.scan(block, (prefix, rest), jnp.arange(layer + 1, stop))
    if layers[-1] < n_blocks - 1:  # the last block: the prefix's keys/values, the rest at the read position
        weights = jax.tree.map(lambda w: w[n_blocks - 1], stacked)
        keys, values = llama.layer_keys_values(config, weights, prefix, prefix_cos, prefix_sin)
        out, _, _ = llama.cached_decoder_layer(config, weights, rest, rest_cos, rest_sin, rest_attend, keys,
                                               values, past_real, n_seq, query_index=query_index)
        last = out[:, 0]                                                             # (Q*P, d)
    else:
        last = rest[jnp.arange(rest.shape[0]), query_index]
    last = llama.rms_norm(last, model.norm[...], config.rms_norm_eps)
    return last.reshape(n_seq, n_pop, -1).transpose(1, 0, 2)                         # (P, Q, d)


# -- the search space ------------------------------------------------------------------------------


def residual_std(lm: Any, batch: Any, layer: int) -> float:
    """The std of the residual stream after block ``layer`` over the real tokens of ``batch``.

    ``batch``: a :class:`jaxalign.prompting.PromptBatch` (the survey's rendered items; with no
    soft slot, each item is its prefix then its suffix). The std is taken over every real position
    and coordinate of every item, so a steering coordinate of this size is about one typical
    coordinate of the stream it is added to.
    """
    check_layers(layer, lm.config.num_hidden_layers)
    ids = np.concatenate([batch.prefix_ids, batch.suffix_ids], axis=1)              # (Q, T)
    mask = np.concatenate([batch.prefix_mask, batch.suffix_mask], axis=1)
    hidden = _hidden_after_jit(lm.graphdef, lm.params, lm.embed(ids), jnp.asarray(mask), int(layer))
    real = np.asarray(hidden, np.float32)[mask.astype(bool)]                         # (real tokens, d)
    return float(real.std())


_hidden_after_jit = jax.jit(hidden_after_block, static_argnums=(0, 4))


def steering_space(width: int, *, residual_scale: float, n_layers: int = 1, subspace: int | None = None,
                   key: Array | None = None) -> Any:
    """The search space of a steering vector, around the zero vector (the plain model).

    Args:
      width: ``d``; n_layers: ``n`` (the decoded vectors are ``(..., n, d)``).
      residual_scale: :func:`residual_std` at the layer (times an ``init_scale`` if wanted): a
        unit-variance ``z`` moves each coordinate by about this much, in either parameterisation.
      subspace: ``None`` for the full space (``z`` has ``n * d`` entries in the residual stream's
        own units: :func:`initial_z` spreads them by ``residual_scale``), else the dimension of a
        random subspace whose basis is scaled by ``residual_scale``.
      key: PRNG key for the subspace's basis.

    Returns:
      a :class:`jaxalign.softprompt.SoftPromptSpace` with ``p0 = 0`` of shape ``(n, d)``:
      ``decode(z)`` gives ``(..., n, d)`` vectors (``[..., 0, :]`` for one layer).
    """
    from jaxalign.softprompt import SoftPromptSpace
    from jaxalign.softprompt import subspace as random_subspace

    scale = float(residual_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"residual_scale must be a finite number > 0, got {residual_scale!r}")
    p0 = jnp.zeros((int(n_layers), int(width)), jnp.float32)
    if subspace is None:
        return SoftPromptSpace(p0=p0, basis=None)
    if key is None:
        raise ValueError("a random subspace needs a PRNG key")
    return random_subspace(p0, subspace, key, scale)


def initial_z(key: Array, population: int, space: Any, *, residual_scale: float,
              init_scale: float = 1.0) -> Array:
    """An initial population ``(P, space.dim)`` whose decoded vectors have coordinates of std about
    ``init_scale * residual_scale`` in either parameterisation (``--init-scale``)."""
    z = jax.random.normal(key, (int(population), space.dim), jnp.float32) * float(init_scale)
    return z * float(residual_scale) if space.basis is None else z


# -- the file ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SteeringVector:
    """A steering vector read from a file (what :func:`load_steering` returns).

    Attributes:
      vectors: ``(n, d)`` float32, one row per layer (``n = 1`` for a ``(d,)`` file).
      layers: the ``n`` 0-based blocks, ascending (rows sorted with them).
      metadata: the file's string metadata.
      source: the file path, or ``None``.
    """

    vectors: np.ndarray
    layers: tuple[int, ...]
    metadata: dict[str, str]
    source: str | None = None

    @property
    def width(self) -> int:
        """``d``."""
        return int(self.vectors.shape[1])

    @property
    def layer(self) -> int:
        """The one layer of a single-layer vector (a ``ValueError`` for several)."""
        if len(self.layers) != 1:
            raise ValueError(f"this steering vector acts at {len(self.layers)} layers {list(self.layers)}")
        return self.layers[0]

    @property
    def has_provenance(self) -> bool:
        """The file records the model it was made for (written by :func:`save_steering` with
        :func:`steering_metadata`)."""
        return "model_fingerprint" in self.metadata


def _layers_text(layers: tuple[int, ...]) -> dict[str, str]:
    return {"layer": str(layers[0])} if len(layers) == 1 else {"layers": ",".join(map(str, layers))}


def save_steering(path: str | os.PathLike, vectors: Any, layers: int | Sequence[int],
                  metadata: Mapping[str, str] | None = None) -> Path:
    """Writes a steering vector as safetensors, atomically.

    Args:
      path: destination (conventionally ``*.safetensors``).
      vectors: ``(d,)`` for one layer or ``(n, d)`` for ``n`` layers (cast to float32).
      layers: one int, or ``n`` distinct ints (0-based blocks; their range is checked against a
        model when the file is used).
      metadata: str -> str, e.g. :func:`steering_metadata`; ``layer``/``layers``, ``d``,
        ``intervention`` and ``jaxalign_version`` are filled in.
    """
    from safetensors.numpy import save_file

    from jaxalign import __version__
    from jaxalign._io import atomic_path

    array = np.asarray(vectors, np.float32)
    layer_list = (layers,) if isinstance(layers, (int, np.integer)) else tuple(layers)
    rows = array[None] if array.ndim == 1 else array
    if array.ndim not in (1, 2) or rows.shape[0] != len(layer_list) or rows.shape[1] < 1:
        raise ValueError(f"a steering vector is (d,) for one layer or (n, d) for n layers; got shape "
                         f"{array.shape} for {len(layer_list)} layer(s)")
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in layer_list) \
            or len(set(int(v) for v in layer_list)) != len(layer_list):
        raise ValueError(f"steering layers must be distinct ints >= 0 (0-based blocks), got {list(layer_list)}")
    ordered = tuple(sorted(int(v) for v in layer_list))
    metadata = dict(metadata or {})
    bad = {k: type(v).__name__ for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise ValueError(f"steering metadata must map str to str; offending entries: {bad}")
    metadata.pop("layer", None)
    metadata.pop("layers", None)
    meta = {"intervention": "steering", "d": str(rows.shape[1]), "jaxalign_version": __version__}
    meta.update(metadata)
    meta.update(_layers_text(ordered) if array.ndim == 2 else {"layer": str(ordered[0])})
    order = np.argsort(np.asarray(layer_list))
    tensor = array if array.ndim == 1 else rows[order]
    with atomic_path(path) as tmp:
        save_file({STEERING_TENSOR: np.ascontiguousarray(tensor)}, tmp, metadata=meta)
    return Path(path)


def load_steering(path: str | os.PathLike) -> SteeringVector:
    """Reads a steering file: the tensor ``vector`` and the metadata ``layer`` (or ``layers``).

    Raises:
      FileNotFoundError: no file. ValueError: not safetensors, no tensor ``vector`` (a soft prompt
      file is named as such), no or unreadable ``layer``/``layers``, a shape that does not fit them.
    """
    from safetensors import safe_open

    from jaxalign.interventions.base import KINDS, kind_of_file

    path = Path(path)
    kind = kind_of_file(path)
    if kind is None or kind.name != "steering":
        found = f"a {kind.name.replace('_', ' ')} file (pass it with {kind.option})" if kind else "no tensor"
        raise ValueError(f"{str(path)!r} has no tensor {STEERING_TENSOR!r}: it is {found}; a steering file "
                         f"holds {STEERING_TENSOR!r} {KINDS['steering'].shape} and metadata 'layer'")
    with safe_open(str(path), framework="numpy") as f:
        array = np.asarray(f.get_tensor(STEERING_TENSOR), np.float32)
        metadata = dict(f.metadata() or {})
    text = metadata.get("layers") or metadata.get("layer")
    if text is None:
        raise ValueError(f"{str(path)!r} has no metadata 'layer' (or 'layers'): the block (0-based) the "
                         "vector is added after is not recorded")
    try:
        layers = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{str(path)!r}: metadata layer(s) {text!r} are not integers") from None
    rows = array[None] if array.ndim == 1 else array
    if array.ndim not in (1, 2) or rows.shape[0] != len(layers):
        raise ValueError(f"{str(path)!r}: tensor {STEERING_TENSOR!r} has shape {array.shape}, which does not "
                         f"fit {len(layers)} layer(s) {list(layers)} ((d,) for one, (n, d) for n)")
    if min(layers) < 0 or len(set(layers)) != len(layers):
        raise ValueError(f"{str(path)!r}: layers {list(layers)} must be distinct and >= 0")
    order = np.argsort(np.asarray(layers))
    return SteeringVector(vectors=rows[order], layers=tuple(layers[i] for i in order), metadata=metadata,
                          source=str(path))


def check_steering(steering: SteeringVector, config: Any) -> None:
    """Refuses a vector of another width or a layer outside the model (``ValueError``)."""
    if steering.width != config.hidden_size:
        raise ValueError(f"steering vector width d={steering.width} does not match the model's hidden size "
                         f"{config.hidden_size}; it was made for another model")
    check_layers(steering.layers, config.num_hidden_layers)


def steering_metadata(lm: Any, *, instrument: Any = None, target: Any = None,
                      config: Mapping[str, Any] | None = None, residual_scale: float | None = None) -> dict[str, str]:
    """The provenance a steering file records (str -> str): the model's name, content fingerprint,
    architecture (``model_type``, the llama.cpp control vector's ``model_hint``), width and depth;
    the wording and target it was tuned for; the configuration (JSON) and the residual std used."""
    from jaxalign.fingerprint import instrument_fingerprint, model_digest, model_fingerprint

    meta = {
        "model": str(lm.name),
        "model_fingerprint": model_digest(model_fingerprint(lm)),
        "model_type": str(lm.config.model_type),
        "hidden_size": str(lm.config.hidden_size),
        "num_hidden_layers": str(lm.config.num_hidden_layers),
    }
    if instrument is not None:
        meta |= {"wording": str(instrument.wording),
                 "wording_fingerprint": instrument_fingerprint(instrument)["items"]}
    if target is not None:
        meta["target"] = str(getattr(target, "name", target))
    if config is not None:
        meta["config"] = json.dumps(dict(config), sort_keys=True, default=str)
    if residual_scale is not None:
        meta["residual_std"] = repr(float(residual_scale))
    return meta


NO_PROVENANCE_NOTE = ("the steering vector carries no provenance (a plain file with 'vector' and 'layer'): "
                      "the model it was made for cannot be checked")


def steering_provenance(steering: SteeringVector, lm: Any, *, instrument: Any = None,
                        allow_mismatch: bool = False,
                        warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Checks a loaded steering vector against the model (and wording) it is about to be used with.

    Width and layer range are always enforced (:func:`check_steering`). Another model (content
    fingerprint) or wording is warned through ``warn`` unless ``allow_mismatch`` (then recorded).
    A file without provenance gets :data:`NO_PROVENANCE_NOTE`, once, through ``warn``.

    Returns:
      ``{"checked": [...], "mismatches": [...], "allow_mismatch": bool, "note": str | None}``.
    """
    import warnings

    from jaxalign.fingerprint import instrument_fingerprint, model_digest, model_fingerprint

    check_steering(steering, lm.config)
    warn = warn or (lambda message: warnings.warn(message, UserWarning, stacklevel=3))
    record: dict[str, Any] = {"checked": [], "mismatches": [], "allow_mismatch": bool(allow_mismatch), "note": None}
    meta = steering.metadata
    if not steering.has_provenance:
        record["note"] = NO_PROVENANCE_NOTE
        warn(NO_PROVENANCE_NOTE)
        return record
    record["checked"].append("model")
    if meta["model_fingerprint"] != model_digest(model_fingerprint(lm)):
        record["mismatches"].append(
            f"model: made for {meta.get('model', '?')!r} (fingerprint {meta['model_fingerprint'][:12]}), "
            f"used with {lm.name!r} whose content differs")
    if instrument is not None and meta.get("wording_fingerprint"):
        record["checked"].append("wording")
        if meta["wording_fingerprint"] != instrument_fingerprint(instrument)["items"]:
            record["mismatches"].append(f"wording: tuned on {meta.get('wording', '?')!r}, "
                                        f"used with {instrument.wording!r}")
    if record["mismatches"]:
        listed = "; ".join(record["mismatches"])
        warn(f"using the steering vector despite: {listed} (allowed by --allow-mismatch)" if allow_mismatch else
             f"the steering vector does not match what it was made with: {listed}; pass --allow-mismatch "
             "(allow_mismatch=True) to record that this is your choice")
    return record
