"""How likely is a fixed reply under the model, with and without a soft prompt?

A soft prompt tuned on survey answers may also change how the model writes. This module reads
that off one number per prompt: the mean log-probability per token of a fixed reply (a neutral
English text) given a user message, the soft prompt in its slot of the chat::

    prompts (N conversations) x soft_prompt (S: None = plain model, arrays, SoftPrompt, files)
      -> rows  [prefix][K soft vectors][suffix = ... assistant header]     (S*N, T, d), left-padded
      -> rows + reply tokens (R,)                                        (S*N, T + R, d)
      -> hidden states at the R positions before each reply token          (S*N, R, d)
      -> log softmax over the vocabulary, the reply token's entry           (S*N, R)
      -> mean over R                                                       (S, N)

The rows are those :func:`jaxalign.generate` decodes from (:func:`decoding.build_rows`), so
"the same prompt" means the same tokens in both. A change of this figure between the plain
model and a soft prompt is the change of the text's per-token log-likelihood: close to 0, the
prompt leaves the model's English alone; strongly negative, it pulls the model away from it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.generation import decoding


@functools.partial(jax.jit, static_argnums=(0,))
def _reply_log_probs(graphdef, params, embeds: jax.Array, mask: jax.Array, reply_ids: jax.Array) -> jax.Array:
    """``embeds (B, T + R, d)``, ``mask (B, T + R)``, ``reply_ids (R,)`` -> ``(B, R)`` float32:
    log p(reply token r | everything before it)."""
    model = nnx.merge(graphdef, params)
    reply = reply_ids.shape[0]
    hidden = model(embeds, mask)[:, -reply - 1:-1]                                 # (B, R, d)
    logits = jnp.einsum("brd,vd->brv", hidden, model.unembedding, preferred_element_type=jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)                                # (B, R, V)
    return jnp.take_along_axis(log_probs, reply_ids[None, :, None], axis=-1)[..., 0]


def reply_log_likelihood(lm: Any, prompts: Any, reply: str, soft_prompt: Any = None, *,
                         slot: str | None = None, system: str | None = None,
                         chat_template: str | None = None, chat_date: str | None = None) -> np.ndarray:
    """Mean log-probability per token of ``reply`` as the assistant's answer, ``(S, N)`` float64.

    Args:
      lm: the model with its tokenizer (:func:`jaxalign.load_model`).
      prompts: a user message, a conversation, or a list of either (``N``), as for
        :func:`jaxalign.generate`.
      reply: the assistant text scored after each rendered prompt (its tokens, no special token).
      soft_prompt: ``None`` (plain model), a ``(K, d)`` array, a :class:`decoding.SoftPrompt`, a
        ``soft_prompt.safetensors`` path, or a list of these (``S``); as for :func:`jaxalign.generate`.
      slot, system, chat_template, chat_date: as for :func:`jaxalign.generate`.

    Returns:
      ``out[s, n]``: the mean over the reply's ``R`` tokens of ``log p(token | chat, earlier
      reply tokens)`` under soft prompt ``s`` and prompt ``n`` (natural log).
    """
    if not isinstance(reply, str) or not reply.strip():
        raise ValueError("reply must be a non-empty string")
    lm, rows, n_soft, n_prompts = decoding.prompt_rows(lm, prompts, soft_prompt, slot=slot, system=system,
                                                       chat_template=chat_template, chat_date=chat_date)
    reply_ids = np.asarray(lm.tokenizer(reply, add_special_tokens=False)["input_ids"], np.int32)  # (R,)
    batch = rows.embeds.shape[0]
    reply_embeds = jnp.broadcast_to(lm.embed(reply_ids[None]), (batch, len(reply_ids), lm.config.hidden_size))
    embeds = jnp.concatenate([rows.embeds, reply_embeds.astype(rows.embeds.dtype)], axis=1)  # (B, T + R, d)
    mask = jnp.concatenate([rows.mask, jnp.ones((batch, len(reply_ids)), rows.mask.dtype)], axis=1)
    log_probs = np.asarray(_reply_log_probs(lm.graphdef, lm.params, embeds, mask, jnp.asarray(reply_ids)))
    return log_probs.astype(np.float64).mean(axis=1).reshape(n_soft, n_prompts)
