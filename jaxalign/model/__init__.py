"""The model room: a shared Flax NNX decoder, the model families it runs, its loaders and the tiny preset.

Public surface: :func:`load_model` -> :class:`LM`; :class:`LlamaConfig`; the nnx module
:class:`Llama`; pure functions over ``(graphdef, params)`` for use under an outer ``jax.jit``:
:func:`forward_hidden`, :func:`logits_fn`, :func:`selected_logits_fn`, :func:`embed_fn`,
and :func:`last_real_index`. Families (Llama, Qwen2/Qwen2.5, Mistral, and any registered later)
are one module each in :mod:`jaxalign.model.families`, found by name or by a checkpoint's
``model_type`` / GGUF ``general.architecture``.
"""

from jaxalign.model.config import LlamaConfig
from jaxalign.model.llama import (
    LM,
    KVCache,
    Llama,
    concat_caches,
    extend_fn,
    prefill_fn,
    select_logits,
    token_logits,
    embed_fn,
    forward_hidden,
    last_real_index,
    logits_fn,
    selected_logits_fn,
)
from jaxalign.model.loader import load_model

__all__ = [
    "KVCache",
    "concat_caches",
    "extend_fn",
    "prefill_fn",
    "select_logits",
    "token_logits",
    "LM",
    "Llama",
    "LlamaConfig",
    "embed_fn",
    "forward_hidden",
    "last_real_index",
    "load_model",
    "logits_fn",
    "selected_logits_fn",
]
