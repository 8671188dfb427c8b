"""Real-shaped tiny checkpoints for tests: ``config.json`` as the Hub ships it + ``model.safetensors``.

A plain module (not a conftest fixture). pytest puts ``tests/`` on ``sys.path`` (the folder has
no ``__init__.py``), so any test file can import it::

    from checkpoints import write_hub_checkpoint, load_reference
    folder = write_hub_checkpoint(tmp_path / "qwen", "qwen2.5", vocab_size=512)
    lm = jaxalign.load_model(folder, dtype="float32")
    reference = load_reference(folder)            # transformers' PyTorch model, float32

Each family's ``config.json`` has the fields and values of the published checkpoint it is named
after (Llama-2-7b-hf, Meta-Llama-3-8B-Instruct, Llama-3.1-8B-Instruct, Llama-3.2-1B-Instruct,
Qwen2.5-0.5B-Instruct, Mistral-7B-Instruct-v0.3: top-level ``rope_theta`` / ``rope_scaling``,
``torch_dtype``, ``architectures``, real vocabulary size, tie flag, RMSNorm eps, RoPE scaling,
sliding-window fields), with only the width and depth made tiny (d=64, 2 layers, 4 query heads,
head_dim 16, MLP 128). The weights come from transformers' ``XxxForCausalLM(config)`` and
``save_pretrained``; they are re-drawn so the model's outputs are not near-uniform: matrices
``N(0, weight_std)``, biases ``N(0, 0.5)``, RMSNorm weights uniform in [0.5, 1.5].

Needs torch and transformers (test dependencies). No file is downloaded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FAMILIES = ("llama2", "llama3", "llama3.1", "llama3.2", "qwen2.5", "mistral")

# The published checkpoints' vocabulary sizes (embedding rows; Qwen2.5's include padding rows).
REAL_VOCAB_SIZES = {"llama2": 32000, "llama3": 128256, "llama3.1": 128256, "llama3.2": 128256,
                    "qwen2.5": 151936, "mistral": 32768}

# Tiny width/depth shared by every family (overridable).
_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}

_LLAMA3_COMMON = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "hidden_act": "silu", "initializer_range": 0.02, "model_type": "llama",
    "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "use_cache": True, "vocab_size": 128256,
}
_LLAMA31_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192, "rope_type": "llama3"}

# config.json of each family as the Hub ships it (tiny shape filled in from _TINY).
_HUB_CONFIGS: dict[str, dict[str, Any]] = {
    "llama2": {  # meta-llama/Llama-2-7b-hf: no rope_theta key (10000), MHA, float16
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 4096,
        "model_type": "llama", "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000,
    },
    "llama3": {  # meta-llama/Meta-Llama-3-8B-Instruct: rope_scaling null, GQA
        **_LLAMA3_COMMON, "eos_token_id": 128009, "max_position_embeddings": 8192,
        "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0.dev0",
    },
    "llama3.1": {  # meta-llama/Llama-3.1-8B-Instruct: llama3 RoPE scaling
        **_LLAMA3_COMMON, "eos_token_id": [128001, 128008, 128009], "max_position_embeddings": 131072,
        "mlp_bias": False, "rope_scaling": dict(_LLAMA31_ROPE), "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.42.3",
    },
    "llama3.2": {  # meta-llama/Llama-3.2-1B-Instruct: tied embeddings, explicit head_dim, factor 32
        **_LLAMA3_COMMON, "eos_token_id": [128001, 128008, 128009], "head_dim": None,
        "max_position_embeddings": 131072, "mlp_bias": False,
        "rope_scaling": {**_LLAMA31_ROPE, "factor": 32.0}, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
    },
    "qwen2.5": {  # Qwen/Qwen2.5-0.5B-Instruct: q/k/v biases, tied, theta 1e6, eps 1e-6, no sliding window
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "initializer_range": 0.02,
        "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False,
        "vocab_size": 151936,
    },
    "mistral": {  # mistralai/Mistral-7B-Instruct-v0.3: GQA, theta 1e6, sliding_window null
        "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "initializer_range": 0.02,
        "max_position_embeddings": 32768, "model_type": "mistral", "num_key_value_heads": 2,
        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.42.0.dev0",
        "use_cache": True, "vocab_size": 32768,
    },
}


def hub_config(family: str, **overrides: Any) -> dict[str, Any]:
    """The ``config.json`` dict of ``family`` in the Hub's form, tiny shape, ``overrides`` applied.

    ``overrides`` are config.json keys (e.g. ``vocab_size=512``, ``sliding_window=5``,
    ``num_key_value_heads=1``); a ``head_dim`` the family ships is recomputed from the final
    ``hidden_size / num_attention_heads`` unless given.
    """
    if family not in _HUB_CONFIGS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    config = {**copy.deepcopy(_HUB_CONFIGS[family]), **_TINY, **overrides}
    if "head_dim" in config and "head_dim" not in overrides:
        config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    return dict(sorted(config.items()))


def write_hub_checkpoint(folder: str | Path, family: str, *, vocab_size: int | None = None,
                         tie_word_embeddings: bool | None = None, dtype: str = "float32",
                         seed: int = 0, weight_std: float = 0.15, **overrides: Any) -> Path:
    """Write a real-shaped tiny checkpoint of ``family`` into ``folder`` and return the folder.

    Args:
      folder: created if absent; receives ``config.json`` (the Hub's form, see :func:`hub_config`),
        ``model.safetensors`` and ``generation_config.json`` (transformers' ``save_pretrained``).
        Tokenizer files are not written.
      family: one of ``"llama2"``, ``"llama3"``, ``"llama3.1"``, ``"llama3.2"``, ``"qwen2.5"``,
        ``"mistral"``.
      vocab_size: embedding rows; default the real size (:data:`REAL_VOCAB_SIZES`), e.g. 128256
        for Llama-3, 151936 for Qwen2.5. Pass a small one when the tokenizer does not matter.
      tie_word_embeddings: default the family's (True for Llama-3.2 and Qwen2.5).
      dtype: ``"float32"`` (default) or ``"bfloat16"`` / ``"float16"``: the dtype the weights are
        stored in, also written as ``torch_dtype``.
      seed: torch seed of the random weights.
      weight_std: std of every weight matrix (embeddings, projections, LM head).
      overrides: any other config.json key (``sliding_window=5``, ``rope_theta=...``, ...).
    """
    import torch
    import transformers

    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    if tie_word_embeddings is not None:
        overrides["tie_word_embeddings"] = tie_word_embeddings
    config = hub_config(family, torch_dtype=dtype, **overrides)

    torch.manual_seed(seed)
    hf_fields = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    hf_config = transformers.AutoConfig.for_model(config["model_type"], **hf_fields)
    model_class = getattr(transformers, config["architectures"][0])
    model = model_class(hf_config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * weight_std)
            elif name.endswith(".bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
            else:  # RMSNorm weights
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
    model = model.to(getattr(torch, dtype))

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")  # the Hub's form
    return folder


def load_reference(folder: str | Path, dtype: str = "float32") -> Any:
    """transformers' PyTorch model of a checkpoint folder (reads the Hub-form config.json), in eval mode."""
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=getattr(torch, dtype)).eval()
