"""The Mistral family: ``model_type`` ``mistral`` (safetensors; its GGUF files say ``llama``).

What is Mistral's own: no biases; a sliding attention window, ``config.json``'s
``sliding_window`` (transformers' ``MistralConfig`` default, :data:`DEFAULT_WINDOW`, when the key
is absent; ``null`` for none), applied by the attention mask. Tensor names are Llama's
(:data:`jaxalign.model.families.llama.HF_NAMES`). llama.cpp writes Mistral GGUF files as
``llama``, so the Llama family reads those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxalign.model.config import LlamaConfig, hf_decoder_config
from jaxalign.model.families.base import Family
from jaxalign.model.families.llama import HF_NAMES

DEFAULT_WINDOW = 4096  # transformers' MistralConfig default, when config.json gives none


def _hf_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """No biases; a sliding window unless ``config.json`` says ``null``."""
    window = config.get("sliding_window", DEFAULT_WINDOW)
    return {"sliding_window": None if window is None else int(window)}


def config_from_hf(config: Mapping[str, Any]) -> LlamaConfig:
    """A Mistral ``config.json`` dict -> :class:`LlamaConfig` (see :func:`hf_decoder_config`)."""
    return hf_decoder_config(config, "mistral", _hf_fields)


FAMILY = Family(
    name="mistral",
    description="Mistral",
    model_types=("mistral",),
    hf_architectures=("MistralForCausalLM",),
    config_from_hf=config_from_hf,
    hf_names=HF_NAMES,
)
