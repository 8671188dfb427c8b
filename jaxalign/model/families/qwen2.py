"""The Qwen2 family (Qwen2, Qwen2.5): ``model_type`` ``qwen2``, GGUF ``qwen2``.

What is Qwen2's own: biases on q, k and v, none on o, whatever ``config.json`` says (as
transformers' ``Qwen2Attention``); full attention only (``use_sliding_window: true`` or a
``sliding_attention`` layer type is refused: every published checkpoint has it off); GGUF files
keep Hugging Face's q/k row order (llama.cpp runs them with the "neox" RoPE). Tensor names are
Llama's (:data:`jaxalign.model.families.llama.HF_NAMES`, ``GGUF_NAMES``); the embedding is often
tied (``tie_word_embeddings``, read as for every family).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxalign.model.config import LlamaConfig, hf_decoder_config
from jaxalign.model.families.base import Family
from jaxalign.model.families.llama import GGUF_NAMES, HF_NAMES


def _hf_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """q/k/v biases always, o without; sliding-window attention refused."""
    layer_types = config.get("layer_types") or []
    if config.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
        raise ValueError(
            "unsupported Qwen2 sliding-window attention (use_sliding_window=true or sliding_attention "
            "layer_types); jaxalign runs Qwen2 with full attention only, as every published Qwen2/Qwen2.5 "
            "checkpoint does (use_sliding_window: false)")
    return {"qkv_bias": True, "o_bias": False}


def config_from_hf(config: Mapping[str, Any]) -> LlamaConfig:
    """A Qwen2 ``config.json`` dict -> :class:`LlamaConfig` (see :func:`hf_decoder_config`)."""
    return hf_decoder_config(config, "qwen2", _hf_fields)


def config_from_gguf(fields: Mapping[str, Any], metadata: Mapping[str, Any],
                     tensor_names: frozenset[str]) -> LlamaConfig:
    """A ``qwen2`` GGUF file's config: q/k/v biases, no o bias."""
    return LlamaConfig(**fields, qkv_bias=True, o_bias=False, model_type="qwen2")


FAMILY = Family(
    name="qwen2",
    description="Qwen2, Qwen2.5",
    model_types=("qwen2",),
    hf_architectures=("Qwen2ForCausalLM",),
    config_from_hf=config_from_hf,
    hf_names=HF_NAMES,
    gguf_architectures=("qwen2",),
    config_from_gguf=config_from_gguf,
    gguf_names=GGUF_NAMES,
    gguf_permuted_qk=False,
)
