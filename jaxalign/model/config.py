"""The decoder configuration: a small frozen dataclass read from a Hugging Face ``config.json``.

One configuration (and one model, :class:`jaxalign.model.Llama`) covers every registered family
(:mod:`jaxalign.model.families`: Llama 2/3/3.1/3.2, Qwen2/Qwen2.5 with q/k/v biases, Mistral
with sliding-window attention, and any family registered later); they differ only in the fields
``qkv_bias``, ``o_bias`` and ``sliding_window``, which each family's module reads from its own
``config.json`` keys. :func:`hf_decoder_config` reads the keys they all share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Mapping

import numpy as np

_SUPPORTED_ROPE_TYPES = ("default", "llama3")


def __getattr__(name: str) -> Any:
    if name == "SUPPORTED_MODEL_TYPES":  # model_type -> (causal-LM class, models), from the registry
        from jaxalign.model.families.base import get, names

        return {model_type: (" or ".join(family.hf_architectures), family.description)
                for family in map(get, names()) for model_type in family.model_types}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-style decoder (hashable, so it can live in a static graph definition).

    Field names follow Hugging Face's ``LlamaConfig``; :meth:`from_hf` reads the ``config.json``
    of any registered family into it. RoPE scaling is flattened into
    ``rope_type`` plus the four ``llama3`` fields (unused when ``rope_type == "default"``).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10_000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int = 8192
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    qkv_bias: bool = False                # q/k/v projections carry biases (Qwen2; Llama attention_bias)
    o_bias: bool = False                  # the output projection carries a bias (Llama attention_bias)
    sliding_window: int | None = None     # each token sees itself and the window - 1 tokens before it
    model_type: str = "llama"             # the checkpoint's family: a name in jaxalign.model.families

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"LlamaConfig.{name} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.rope_type not in _SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"unsupported rope_type {self.rope_type!r}; supported: {', '.join(_SUPPORTED_ROPE_TYPES)}"
            )
        if self.rope_type == "llama3" and not self.rope_high_freq_factor > self.rope_low_freq_factor:
            raise ValueError("llama3 rope scaling needs high_freq_factor > low_freq_factor")
        if self.sliding_window is not None and (
                not isinstance(self.sliding_window, (int, np.integer)) or self.sliding_window < 1):
            raise ValueError(f"sliding_window must be a positive integer or None, got {self.sliding_window!r}")
        from jaxalign.model.families.base import names

        if self.model_type not in names():
            raise ValueError(_unsupported_message(self.model_type, []))

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> "LlamaConfig":
        """Read a Hugging Face ``config.json`` dict with the family that claims its ``model_type``.

        The family (:func:`family_for_config`) reads it, in its module under
        :mod:`jaxalign.model.families`: ``"llama"`` (Llama 2/3/3.1/3.2; ``attention_bias`` gives
        q/k/v/o biases), ``"qwen2"`` (Qwen2/Qwen2.5: q/k/v biases, no o bias;
        ``use_sliding_window: true`` is refused) and ``"mistral"`` (``sliding_window``, default
        4096 as in transformers, applied by the attention mask; ``null`` for none). The keys all
        share are read by :func:`hf_decoder_config`. Raises ``ValueError`` for an unclaimed
        ``model_type`` (listing the registered families' ones), a missing field or an unsupported
        RoPE type, naming what was wrong.
        """
        return family_for_config(config).config_from_hf(config)

    def rope_inverse_frequencies(self) -> np.ndarray:
        """Inverse frequencies of the rotary embedding, float32 numpy ``(head_dim // 2,)``.

        ``llama3`` scaling (Llama 3.1+) divides the low frequencies (wavelength above
        ``original_max / low_freq_factor``) by ``factor``, keeps the high ones (wavelength below
        ``original_max / high_freq_factor``) and interpolates smoothly in between.
        """
        exponents = np.arange(0, self.head_dim, 2, dtype=np.float32) / np.float32(self.head_dim)
        inv_freq = (1.0 / (np.float32(self.rope_theta) ** exponents)).astype(np.float32)
        if self.rope_type == "default":
            return inv_freq
        factor = self.rope_factor
        low, high = self.rope_low_freq_factor, self.rope_high_freq_factor
        old_context = float(self.rope_original_max_position_embeddings)
        wavelength = 2 * math.pi / inv_freq
        scaled = np.where(wavelength > old_context / low, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelength - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelength >= old_context / high) & (wavelength <= old_context / low)
        return np.where(is_medium, smoothed, scaled).astype(np.float32)

    @property
    def num_parameters(self) -> int:
        """Number of weights (embeddings, layers, final norm and untied LM head)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * hd * (2 * self.num_attention_heads + 2 * self.num_key_value_heads)
        attn += hd * (self.num_attention_heads + 2 * self.num_key_value_heads) if self.qkv_bias else 0
        attn += d if self.o_bias else 0
        per_layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.num_hidden_layers * per_layer + d + head


# -- families --------------------------------------------------------------------------------

def _unsupported_message(model_type: Any, architectures: Any) -> str:
    from jaxalign.model.families.base import names, supported_model_types

    return (f"unsupported model_type {model_type!r} (architectures {list(architectures)}); "
            f"supported model_type values (registered families {', '.join(names())}): "
            f"{supported_model_types()}")


def family_for_config(config: Mapping[str, Any]) -> Any:
    """The registered :class:`~jaxalign.model.families.Family` that reads this ``config.json`` dict.

    ``ValueError`` (listing the registered families' ``model_type`` values) when no family claims
    its ``model_type``, or when its ``architectures`` name no causal-LM class of that family. The
    loader calls this before any weight is read.
    """
    from jaxalign.model.families.base import family_for_model_type

    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    try:
        family = family_for_model_type(model_type)
    except ValueError:
        raise ValueError(_unsupported_message(model_type, architectures)) from None
    if architectures and not set(family.hf_architectures) & set(architectures):
        raise ValueError(f"unsupported architectures {list(architectures)} for model_type {model_type!r}; "
                         f"jaxalign loads {' or '.join(family.hf_architectures)} only (a causal language model)")
    return family


def check_model_type(config: Mapping[str, Any]) -> str:
    """The ``model_type`` of a ``config.json`` dict if a registered family claims it, else ``ValueError``.

    The message lists the supported types (see :func:`family_for_config`).
    """
    family_for_config(config)
    return config["model_type"]


def hf_decoder_config(config: Mapping[str, Any], family: str,
                      family_fields: Callable[[Mapping[str, Any]], dict[str, Any]]) -> LlamaConfig:
    """The :class:`LlamaConfig` of a Llama-style ``config.json`` dict, for family ``family``.

    Reads the keys every family shares: shape (``vocab_size``, ``hidden_size``,
    ``intermediate_size``, ``num_hidden_layers``, ``num_attention_heads``, optional
    ``num_key_value_heads`` and ``head_dim``), ``rms_norm_eps``, ``max_position_embeddings``,
    ``tie_word_embeddings`` and RoPE in both forms: Hub checkpoints' top-level ``rope_theta`` /
    ``rope_scaling`` (null, absent, ``{"rope_type": "default"}`` or ``{"rope_type": "llama3", ...}``;
    the legacy key ``type`` is read too) and transformers 5 ``save_pretrained`` output that nests
    them in ``rope_parameters``. ``family_fields(config)`` gives the family's own fields (biases,
    sliding window), or raises ``ValueError`` for what the family cannot run; it is called after
    ``hidden_act`` and ``mlp_bias`` are checked and before the shape is read.
    """
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported hidden_act {config['hidden_act']!r}; {family} uses 'silu'")
    if config.get("mlp_bias"):
        raise ValueError("unsupported mlp_bias=true; jaxalign's MLP has no biases")
    own_fields = family_fields(config)
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if k not in config]
    if missing:
        raise ValueError(f"config.json lacks required field(s): {', '.join(missing)}")

    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
    kv_heads = config.get("num_key_value_heads") or heads
    max_positions = int(config.get("max_position_embeddings", 8192))

    rope = dict(config.get("rope_scaling") or config.get("rope_parameters") or {})
    if any(isinstance(v, Mapping) for v in rope.values()):
        raise ValueError(f"per-layer-type rope parameters are not supported ({family})")
    rope_theta = float(rope.get("rope_theta", config.get("rope_theta", 10_000.0)))
    rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
    fields: dict[str, Any] = {}
    if rope_type == "llama3":
        needed = ("factor", "low_freq_factor", "high_freq_factor")
        absent = [k for k in needed if k not in rope]
        if absent:
            raise ValueError(f"llama3 rope scaling lacks {', '.join(absent)} (got {rope})")
        fields = dict(
            rope_factor=float(rope["factor"]),
            rope_low_freq_factor=float(rope["low_freq_factor"]),
            rope_high_freq_factor=float(rope["high_freq_factor"]),
            rope_original_max_position_embeddings=int(
                rope.get("original_max_position_embeddings", max_positions)),
        )
    elif rope_type != "default":
        raise ValueError(
            f"unsupported rope scaling type {rope_type!r}; supported: null/absent, 'default', 'llama3'"
        )
    return LlamaConfig(
        vocab_size=int(config["vocab_size"]),
        hidden_size=int(config["hidden_size"]),
        intermediate_size=int(config["intermediate_size"]),
        num_hidden_layers=int(config["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(kv_heads),
        head_dim=int(head_dim),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        rope_type=str(rope_type),
        max_position_embeddings=max_positions,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        model_type=family,
        **own_fields,
        **fields,
    )
