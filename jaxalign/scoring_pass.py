"""The shared logits pass: soft prompts and length-bucketed prompts -> answer-token logits.

Both the survey scorer (:mod:`jaxalign.scoring`) and CulturalBench
(:mod:`jaxalign.evaluate.culturalbench`) read answers the same way: every (member, prompt) pair is
the sequence ``[prefix][K soft vectors][suffix]`` split at the soft-prompt slot by
:mod:`jaxalign.prompting`, and the answer is the logits of a few answer tokens at the last real
position. :func:`answer_logits` computes them::

    prompts (P, K, d), buckets of prompts (Qb, Tp) / (Qb, Ts), answer ids (n,)
      -> logits (P, Q, n), float32, in the presented answer order

``mode="cached"`` computes shared tokens once via key/value caches (the prefix once, then each
member's K soft vectors, then every prompt's suffix against its member's cache; or, with an
item-first layout, each prompt's prefix once and every member's ``[soft][suffix]`` against it);
``mode="full"`` runs every sequence whole. ``members_per_pass`` bounds memory by running the
population in equal slices (``jax.lax.map``), and a mesh maps each data shard's members
independently (:func:`jaxalign.parallel.map_over_data_shards`). Everything here takes only what
the pass needs (weights, buckets, answer ids), no survey field, and must run inside ``jit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxalign import parallel
from jaxalign.model import llama


@dataclasses.dataclass(frozen=True)
class ItemBucket:
    """Prompts of similar length, trimmed to their own longest one (a pytree)."""

    item_index: jax.Array       # (Qb,) int32, positions of these prompts on the Q axis
    prefix_ids: jax.Array       # (Qb, Tp) int32, left-padded
    prefix_mask: jax.Array      # (Qb, Tp) int32
    suffix_ids: jax.Array       # (Qb, Ts) int32, right-padded
    suffix_mask: jax.Array      # (Qb, Ts) int32
    prefix_shared: bool         # every prompt has the same unpadded prefix (static)

    @classmethod
    def of(cls, item_index: Any, batch: Any) -> "ItemBucket":
        """The bucket of a :class:`jaxalign.prompting.PromptBatch` (a sub-batch of ``Qb`` prompts)
        whose prompts sit at ``item_index (Qb,)`` on the Q axis."""
        return cls(
            item_index=jnp.asarray(item_index, jnp.int32),
            prefix_ids=jnp.asarray(batch.prefix_ids, jnp.int32),
            prefix_mask=jnp.asarray(batch.prefix_mask, jnp.int32),
            suffix_ids=jnp.asarray(batch.suffix_ids, jnp.int32),
            suffix_mask=jnp.asarray(batch.suffix_mask, jnp.int32),
            prefix_shared=bool(batch.prefix_shared),
        )


jax.tree_util.register_dataclass(
    ItemBucket,
    data_fields=["item_index", "prefix_ids", "prefix_mask", "suffix_ids", "suffix_mask"],
    meta_fields=["prefix_shared"],
)


def build_sequences(
    embed_prefix: jax.Array,   # (Q, Tp, d)
    prefix_mask: jax.Array,    # (Q, Tp)
    prompts: jax.Array,        # (P, K, d)
    embed_suffix: jax.Array,   # (Q, Ts, d)
    suffix_mask: jax.Array,    # (Q, Ts)
) -> tuple[jax.Array, jax.Array]:
    """Lays out ``[prefix][soft][suffix]`` for every member and item.

    Returns ``embeds (P*Q, T, d)`` and ``mask (P*Q, T)`` with ``T = Tp + K + Ts``, member-major
    (row ``p * Q + q`` is member ``p`` on item ``q``).
    """
    n_pop, k, d = prompts.shape
    n_items, tp = prefix_mask.shape
    ts = suffix_mask.shape[1]
    dtype = embed_prefix.dtype
    embeds = jnp.concatenate(
        [
            jnp.broadcast_to(embed_prefix[None], (n_pop, n_items, tp, d)),
            jnp.broadcast_to(prompts.astype(dtype)[:, None], (n_pop, n_items, k, d)),
            jnp.broadcast_to(embed_suffix[None], (n_pop, n_items, ts, d)),
        ],
        axis=2,
    )  # (P, Q, T, d)
    mask = jnp.concatenate(
        [prefix_mask, jnp.ones((n_items, k), prefix_mask.dtype), suffix_mask], axis=1
    )  # (Q, T)
    mask = jnp.broadcast_to(mask[None], (n_pop, n_items, tp + k + ts))
    return embeds.reshape(n_pop * n_items, tp + k + ts, d), mask.reshape(n_pop * n_items, -1)


def answer_logits(
    graphdef: Any,
    params: Any,
    buckets: tuple[ItemBucket, ...],
    answer_ids: jax.Array,   # (n,)
    prompts: jax.Array,      # (P, K, d)
    *,
    mode: str,
    mesh: Any = None,
    members_per_pass: int | None = None,
    trim_last_layer: bool = True,
) -> jax.Array:
    """Answer logits ``(P, Q, n)`` float32 of every member on every prompt, in presented order.

    Args:
      graphdef, params: the frozen model (``lm.graphdef``, ``lm.params``); the weights are an
        argument, never a constant of the trace.
      buckets: the ``Q`` prompts in length buckets (:meth:`ItemBucket.of`); their ``item_index``
        together cover ``0..Q-1`` once each, and all agree on ``prefix_shared``.
      answer_ids: ``(n,)`` int32 ids of the answer tokens, read at each sequence's last real token.
      prompts: ``(P, K, d)`` soft prompts (``K = 0``: the plain prompt).
      mode: ``"cached"`` or ``"full"`` (resolved already: see :func:`jaxalign.scoring.resolve_mode`).
      mesh: members are mapped per data shard (:func:`jaxalign.parallel.map_over_data_shards`;
        a population that does not divide the data axis runs unsplit); ``None``: no mesh.
      members_per_pass: run this many members at a time (must divide ``P``); ``None``: all.
      trim_last_layer: cached mode computes in the last layer only what is read.
    """
    n_pop = prompts.shape[0]
    n_items = sum(b.item_index.shape[0] for b in buckets)
    if len({b.prefix_shared for b in buckets}) != 1:
        # one bucket's [prefix][soft] cache would be read for another bucket's items
        raise ValueError("item buckets disagree on whether the prefix is shared; build them from one "
                         "PromptBatch (bucket_items and chunk_items keep its prefix_shared)")
    per_pass = n_pop if members_per_pass is None else min(members_per_pass, n_pop)

    def logits_local(members: jax.Array) -> jax.Array:  # (m, K, d) -> (m, Q, n) presented order
        out = jnp.zeros((members.shape[0], n_items, answer_ids.shape[0]), jnp.float32)
        # shared prefix: every bucket reads the same [prefix][soft] caches, built once here
        shared = mode != "full" and buckets[0].prefix_shared
        member_cache = _member_cache(graphdef, params, buckets[0], members, trim_last_layer) if shared else None
        for bucket in buckets:
            if mode == "full":
                logits = _bucket_logits_full(graphdef, params, answer_ids, bucket, members)
            else:
                logits = _bucket_logits_cached(graphdef, params, answer_ids, bucket, members,
                                               trim_last_layer, member_cache)
            out = out.at[:, bucket.item_index].set(logits)
        return out

    def logits_of(members: jax.Array) -> jax.Array:  # one slice per data shard (see jaxalign.parallel)
        return parallel.map_over_data_shards(logits_local, members, mesh)

    if per_pass == n_pop:
        return logits_of(prompts)  # (P, Q, n)
    chunks = prompts.reshape(n_pop // per_pass, per_pass, *prompts.shape[1:])
    return jax.lax.map(logits_of, chunks).reshape(n_pop, n_items, -1)


def _bucket_logits_full(graphdef, params, answer_ids, bucket: ItemBucket, prompts) -> jax.Array:
    """Every ``[prefix][soft][suffix]`` sequence run whole: ``(P, Qb, n)``."""
    n_pop, n_items = prompts.shape[0], bucket.item_index.shape[0]
    embeds, mask = build_sequences(
        llama.embed_fn(graphdef, params, bucket.prefix_ids), bucket.prefix_mask, prompts,
        llama.embed_fn(graphdef, params, bucket.suffix_ids), bucket.suffix_mask,
    )  # (P*Qb, T, d), (P*Qb, T)
    logits = llama.selected_logits_fn(graphdef, params, embeds, mask, answer_ids)
    return logits.reshape(n_pop, n_items, -1)


def _member_cache(graphdef, params, bucket: ItemBucket, prompts, trim_last_layer: bool) -> llama.KVCache:
    """Shared-prefix layouts: the prefix's keys/values once (from ``bucket``'s first row), then
    each member's ``K`` soft vectors against them; ``(P, Tp + K)`` positions. Every bucket's items
    run against this one cache (the prefix is the same tokens, at the same length, in every bucket)."""
    n_pop, k, _ = prompts.shape
    cache_only = "none" if trim_last_layer else "all"
    prefix_embeds = llama.embed_fn(graphdef, params, bucket.prefix_ids[:1])    # (1, Tp, d)
    soft = prompts.astype(prefix_embeds.dtype)
    _, prefix_cache = llama.prefill_fn(graphdef, params, prefix_embeds, bucket.prefix_mask[:1],
                                       hidden=cache_only)                                # C = 1
    _, soft_cache = llama.extend_fn(graphdef, params, soft, jnp.ones((n_pop, k), jnp.int32),
                                    prefix_cache, hidden=cache_only)
    return llama.concat_caches(prefix_cache, soft_cache)                                 # (P, Tp+K)


def _bucket_logits_cached(graphdef, params, answer_ids, bucket: ItemBucket, prompts,
                          trim_last_layer: bool, member_cache: llama.KVCache | None) -> jax.Array:
    """Shared tokens computed once, via key/value caches: ``(P, Qb, n)``.

    Shared prefix (the default layout): prefix once -> each member's K soft vectors once
    (``member_cache``, from :func:`_member_cache`, built once for all buckets; ``None`` for the
    item-first layout) -> every item's text against its member's cache. Per-item prefix
    (item-first layout): each item's prefix once -> every member's ``[soft][cue]`` against its
    item's cache. With ``trim_last_layer`` the caches are built with ``hidden="none"`` and the
    read rows run with ``hidden="last"`` (see :meth:`jaxalign.model.llama.Llama.extend`).
    """
    n_pop, k, _ = prompts.shape
    n_items = bucket.item_index.shape[0]
    cache_only, read = ("none", "last") if trim_last_layer else ("all", "all")
    suffix_embeds = llama.embed_fn(graphdef, params, bucket.suffix_ids)   # (Qb, Ts, d)
    soft = prompts.astype(suffix_embeds.dtype)

    def read_logits(rows: jax.Array, rows_mask: jax.Array, cache: llama.KVCache) -> jax.Array:
        """``rows (B, T, d)`` after ``cache``: the answer logits at each row's last real token, (B, n)."""
        hidden, _ = llama.extend_fn(graphdef, params, rows, rows_mask, cache, hidden=read)
        if read == "last":                                                 # (B, d)
            return llama.token_logits(graphdef, params, hidden, answer_ids)
        return llama.select_logits(graphdef, params, hidden, rows_mask, answer_ids)

    if bucket.prefix_shared:
        ts = suffix_embeds.shape[1]
        rows = jnp.broadcast_to(suffix_embeds[:, None], (n_items, n_pop, ts, suffix_embeds.shape[-1]))
        rows_mask = jnp.broadcast_to(bucket.suffix_mask[:, None], (n_items, n_pop, ts))
        rows = rows.reshape(n_items * n_pop, ts, -1)          # row q*P + p: item q, member p
        rows_mask = rows_mask.reshape(n_items * n_pop, ts)
        logits = read_logits(rows, rows_mask, member_cache)
        return logits.reshape(n_items, n_pop, -1).transpose(1, 0, 2)
    prefix_embeds = llama.embed_fn(graphdef, params, bucket.prefix_ids)   # (Qb, Tp, d)
    _, item_cache = llama.prefill_fn(graphdef, params, prefix_embeds, bucket.prefix_mask,
                                     hidden=cache_only)                               # C = Qb
    ts = suffix_embeds.shape[1]
    rows = jnp.concatenate(
        [
            jnp.broadcast_to(soft[:, None], (n_pop, n_items, k, soft.shape[-1])),
            jnp.broadcast_to(suffix_embeds[None], (n_pop, n_items, ts, soft.shape[-1])),
        ],
        axis=2,
    ).reshape(n_pop * n_items, k + ts, -1)                    # row p*Qb + q: member p, item q
    rows_mask = jnp.concatenate(
        [jnp.ones((n_items, k), jnp.int32), bucket.suffix_mask], axis=1
    )
    rows_mask = jnp.broadcast_to(rows_mask[None], (n_pop, n_items, k + ts)).reshape(n_pop * n_items, -1)
    logits = read_logits(rows, rows_mask, item_cache)
    return logits.reshape(n_pop, n_items, -1)


_STATIC = ("mode", "mesh", "members_per_pass", "trim_last_layer")
#: :func:`answer_logits` compiled (``graphdef`` and the keywords static), for callers outside a jit.
answer_logits_jit = jax.jit(answer_logits, static_argnums=0, static_argnames=_STATIC)

