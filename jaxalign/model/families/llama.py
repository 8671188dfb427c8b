"""The Llama family (Llama 2, 3, 3.1, 3.2): ``model_type`` ``llama``, GGUF ``llama``.

What is Llama's own: ``config.json``'s ``attention_bias`` puts biases on q, k, v and o (as
transformers' ``LlamaAttention`` does); a GGUF file has q/k/v biases when it holds
``blk.0.attn_q.bias`` and an o bias when it holds ``blk.0.attn_output.bias``; llama.cpp's
converter permuted its q/k rows. The tensor names (:data:`HF_NAMES`, :data:`GGUF_NAMES`) are
the Llama-style ones that Qwen2 and Mistral checkpoints use too. Presets: ``"tiny"``, the shape
of jaxalign's ``"tiny-random"`` test model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxalign.model.config import LlamaConfig, hf_decoder_config
from jaxalign.model.families.base import Family, TensorNames

# Hugging Face safetensors names (transformers' LlamaForCausalLM state dict).
HF_NAMES = TensorNames(
    globals={
        "embed_tokens": "model.embed_tokens.weight",
        "norm": "model.norm.weight",
        "lm_head": "lm_head.weight",
    },
    layer={
        "input_layernorm": "model.layers.{layer}.input_layernorm.weight",
        "q_proj": "model.layers.{layer}.self_attn.q_proj.weight",
        "k_proj": "model.layers.{layer}.self_attn.k_proj.weight",
        "v_proj": "model.layers.{layer}.self_attn.v_proj.weight",
        "o_proj": "model.layers.{layer}.self_attn.o_proj.weight",
        "post_attention_layernorm": "model.layers.{layer}.post_attention_layernorm.weight",
        "gate_proj": "model.layers.{layer}.mlp.gate_proj.weight",
        "up_proj": "model.layers.{layer}.mlp.up_proj.weight",
        "down_proj": "model.layers.{layer}.mlp.down_proj.weight",
        "q_bias": "model.layers.{layer}.self_attn.q_proj.bias",
        "k_bias": "model.layers.{layer}.self_attn.k_proj.bias",
        "v_bias": "model.layers.{layer}.self_attn.v_proj.bias",
        "o_bias": "model.layers.{layer}.self_attn.o_proj.bias",
    },
    ignored_suffixes=("rotary_emb.inv_freq",),  # some checkpoints carry RoPE's frequencies
)

# llama.cpp GGUF names (its converter's for ``llama`` and ``qwen2``); no ``output.weight``: tied head.
GGUF_NAMES = TensorNames(
    globals={
        "embed_tokens": "token_embd.weight",
        "norm": "output_norm.weight",
        "lm_head": "output.weight",
    },
    layer={
        "input_layernorm": "blk.{layer}.attn_norm.weight",
        "q_proj": "blk.{layer}.attn_q.weight",
        "k_proj": "blk.{layer}.attn_k.weight",
        "v_proj": "blk.{layer}.attn_v.weight",
        "o_proj": "blk.{layer}.attn_output.weight",
        "post_attention_layernorm": "blk.{layer}.ffn_norm.weight",
        "gate_proj": "blk.{layer}.ffn_gate.weight",
        "up_proj": "blk.{layer}.ffn_up.weight",
        "down_proj": "blk.{layer}.ffn_down.weight",
        "q_bias": "blk.{layer}.attn_q.bias",
        "k_bias": "blk.{layer}.attn_k.bias",
        "v_bias": "blk.{layer}.attn_v.bias",
        "o_bias": "blk.{layer}.attn_output.bias",
    },
)


def _hf_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """transformers' ``LlamaAttention``: ``attention_bias`` puts biases on q, k, v and o."""
    bias = bool(config.get("attention_bias", False))
    return {"qkv_bias": bias, "o_bias": bias}


def config_from_hf(config: Mapping[str, Any]) -> LlamaConfig:
    """A Llama ``config.json`` dict -> :class:`LlamaConfig` (see :func:`hf_decoder_config`)."""
    return hf_decoder_config(config, "llama", _hf_fields)


def config_from_gguf(fields: Mapping[str, Any], metadata: Mapping[str, Any],
                     tensor_names: frozenset[str]) -> LlamaConfig:
    """A ``llama`` GGUF file's config: biases where the file holds block 0's bias tensors."""
    return LlamaConfig(**fields, qkv_bias=GGUF_NAMES.name("q_bias", 0) in tensor_names,
                       o_bias=GGUF_NAMES.name("o_bias", 0) in tensor_names, model_type="llama")


def tiny_preset(vocab_size: int) -> LlamaConfig:
    """The ``"tiny-random"`` shape: 4 layers, d=64, 4 query heads / 2 KV heads (GQA), MLP 192, untied."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=500_000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    )


FAMILY = Family(
    name="llama",
    description="Llama 2, 3, 3.1, 3.2",
    model_types=("llama",),
    hf_architectures=("LlamaForCausalLM",),
    config_from_hf=config_from_hf,
    hf_names=HF_NAMES,
    gguf_architectures=("llama",),
    config_from_gguf=config_from_gguf,
    gguf_names=GGUF_NAMES,
    gguf_permuted_qk=True,
    gguf_description="Llama 2, 3, 3.1, 3.2 and Mistral (llama.cpp writes Mistral as 'llama')",
    presets={"tiny": tiny_preset},
)
