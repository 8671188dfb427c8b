"""What a model family is (:class:`Family`), how its checkpoints name tensors (:class:`TensorNames`),
and the registry of families by name.

A family is everything that differs between checkpoints the shared decoder
(:mod:`jaxalign.model.llama`) runs: which Hugging Face ``model_type`` / GGUF
``general.architecture`` values it claims, how a ``config.json`` dict or GGUF metadata becomes a
:class:`~jaxalign.model.LlamaConfig`, and where each of the model's parameters sits in a
checkpoint. The loaders (:mod:`~jaxalign.model.loader`, :mod:`~jaxalign.model.gguf`,
:mod:`~jaxalign.model.tiny`) find the family here and know no family by name.

The model's parameters (the keys of a :class:`TensorNames` mapping):

* top level: ``embed_tokens`` ``(V, d)``, ``norm`` ``(d,)``, ``lm_head`` ``(V, d)`` (absent when
  the embedding is tied);
* per block, stacked over the ``L`` blocks: ``input_layernorm``, ``q_proj``, ``k_proj``,
  ``v_proj``, ``o_proj``, ``post_attention_layernorm``, ``gate_proj``, ``up_proj``, ``down_proj``
  and the optional biases ``q_bias``, ``k_bias``, ``v_bias``, ``o_bias``
  (:data:`jaxalign.model.llama.LAYER_PARAM_NAMES`, :data:`~jaxalign.model.llama.LAYER_BIAS_NAMES`).

This module imports nothing else of jaxalign, so every other model module may import it.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any

LAYER = "{layer}"  # the block index's place in a per-block tensor name

# Linear weights, which PyTorch checkpoints (and GGUF, read back in HF order) store (out, in).
LINEAR_WEIGHTS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class TensorNames:
    """Where each model parameter sits in one checkpoint format.

    Attributes:
      globals: top-level parameter (``embed_tokens``, ``norm``, ``lm_head``) -> tensor name.
      layer: per-block parameter -> tensor name with :data:`LAYER` (``"{layer}"``) where the block
        index goes, e.g. ``"model.layers.{layer}.self_attn.q_proj.weight"``. Biases are expected
        only when the config has them.
      transposed: the parameters stored ``(out, in)`` (the model holds ``(in, out)``).
      ignored_suffixes: tensors a checkpoint may carry that the model recomputes (skipped).
    """

    globals: Mapping[str, str]
    layer: Mapping[str, str]
    transposed: frozenset[str] = frozenset(LINEAR_WEIGHTS)
    ignored_suffixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "globals", types.MappingProxyType(dict(self.globals)))
        object.__setattr__(self, "layer", types.MappingProxyType(dict(self.layer)))
        object.__setattr__(self, "transposed", frozenset(self.transposed))
        bad = [name for name in self.layer.values() if name.count(LAYER) != 1]
        if bad:
            raise ValueError(f"per-block tensor names need exactly one {LAYER!r}: {bad}")

    def name(self, param: str, layer: int | None = None) -> str:
        """The tensor name of ``param`` (of block ``layer`` for a per-block parameter)."""
        if layer is None:
            return self.globals[param]
        return self.layer[param].replace(LAYER, str(layer))

    def lookup(self, name: str) -> tuple[str, int | None] | None:
        """``(parameter, block index or None)`` that tensor ``name`` holds; ``None`` if it maps to none."""
        for param, global_name in self.globals.items():
            if name == global_name:
                return param, None
        for param, template in self.layer.items():
            prefix, _, suffix = template.partition(LAYER)
            if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
                index = name[len(prefix):len(name) - len(suffix)]
                if index.isdigit():
                    return param, int(index)
        return None


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family: the checkpoints it claims, how their configs read, how their tensors are named.

    Attributes:
      name: the registry name; also ``LlamaConfig.model_type`` of every config it builds.
      description: the models it covers, for messages (e.g. ``"Qwen2, Qwen2.5"``).
      model_types: the ``config.json`` ``model_type`` values it claims.
      hf_architectures: the causal-LM classes its ``config.json`` ``architectures`` may name
        (another class, e.g. a sequence classifier, is refused).
      config_from_hf: ``config.json`` dict -> ``LlamaConfig`` (``ValueError`` naming what it cannot
        run).
      hf_names: tensor names of its safetensors checkpoints.
      gguf_architectures: the GGUF ``general.architecture`` values it claims (none: no GGUF).
      config_from_gguf: ``(fields, metadata, tensor_names) -> LlamaConfig`` for a GGUF file: ``fields``
        are the ``LlamaConfig`` fields every family reads the same way (shape, RoPE, norm epsilon,
        tied embedding) from the metadata, ``metadata`` the file's key-value pairs, ``tensor_names``
        the GGUF names of its tensors; the family adds what is its own (biases, ...).
      gguf_names: tensor names of its GGUF files.
      gguf_permuted_qk: llama.cpp's converter permuted the q/k rows of its GGUF files (rotate
        adjacent pairs instead of halves); the reader undoes it.
      gguf_description: the models its GGUF files cover, when not ``description`` (e.g. llama.cpp
        writes Mistral as ``llama``).
      presets: named config builders (keyword arguments such as ``vocab_size``), e.g. ``"tiny"``.
    """

    name: str
    description: str
    model_types: tuple[str, ...]
    hf_architectures: tuple[str, ...]
    config_from_hf: Callable[[Mapping[str, Any]], Any]
    hf_names: TensorNames
    gguf_architectures: tuple[str, ...] = ()
    config_from_gguf: Callable[[Mapping[str, Any], Mapping[str, Any], frozenset[str]], Any] | None = None
    gguf_names: TensorNames | None = None
    gguf_permuted_qk: bool = False
    gguf_description: str = ""
    presets: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_types", tuple(self.model_types))
        object.__setattr__(self, "hf_architectures", tuple(self.hf_architectures))
        object.__setattr__(self, "gguf_architectures", tuple(self.gguf_architectures))
        object.__setattr__(self, "presets", types.MappingProxyType(dict(self.presets)))
        if self.gguf_architectures and (self.config_from_gguf is None or self.gguf_names is None):
            raise ValueError(f"family {self.name!r} claims GGUF architectures {self.gguf_architectures} "
                             f"but has no config_from_gguf or gguf_names")

    def preset(self, name: str, **kwargs: Any) -> Any:
        """The config of preset ``name`` (``ValueError`` naming the family's presets otherwise)."""
        if name not in self.presets:
            raise ValueError(f"family {self.name!r} has no preset {name!r}; "
                             f"its presets: {', '.join(self.presets) or 'none'}")
        return self.presets[name](**kwargs)


_REGISTRY: dict[str, Family] = {}


def register(family: Family, *, replace: bool = False) -> Family:
    """Adds ``family`` under its name.

    ``ValueError`` if the name is taken, or if one of its ``model_types`` / ``gguf_architectures``
    is claimed by another family (unless ``replace``: then it takes the name's place).
    """
    if not isinstance(family, Family):
        raise TypeError(f"register takes a Family, got {type(family).__name__}")
    if family.name in _REGISTRY and not replace:
        raise ValueError(f"a model family named {family.name!r} is already registered")
    for other in _REGISTRY.values():
        if other.name == family.name:
            continue
        taken = set(other.model_types) & set(family.model_types)
        taken_gguf = set(other.gguf_architectures) & set(family.gguf_architectures)
        if taken or taken_gguf:
            raise ValueError(f"family {family.name!r} claims {sorted(taken | taken_gguf)}, "
                             f"already claimed by family {other.name!r}")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    """Removes the family ``name`` (``KeyError`` if there is none)."""
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    """The registered families' names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Family:
    """The family registered as ``name``; ``ValueError`` naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model family {name!r}; registered families: "
                         f"{', '.join(_REGISTRY)}") from None


def supported_model_types() -> str:
    """The claimed ``model_type`` values, one ``'type' (Class: models)`` each, comma-separated."""
    return ", ".join(f"{model_type!r} ({' or '.join(family.hf_architectures)}: {family.description})"
                     for family in _REGISTRY.values() for model_type in family.model_types)


def supported_gguf_architectures() -> str:
    """The claimed GGUF architectures, one ``'arch' (models)`` each, comma-separated."""
    return ", ".join(f"{arch!r} ({family.gguf_description or family.description})"
                     for family in _REGISTRY.values() for arch in family.gguf_architectures)


def family_for_model_type(model_type: Any) -> Family:
    """The family claiming ``config.json``'s ``model_type``; ``ValueError`` listing the registered ones."""
    for family in _REGISTRY.values():
        if model_type in family.model_types:
            return family
    raise ValueError(f"unsupported model_type {model_type!r}; supported model_type values "
                     f"(registered families {', '.join(_REGISTRY)}): {supported_model_types()}")


def family_for_gguf_architecture(architecture: Any) -> Family:
    """The family claiming GGUF ``general.architecture``; ``ValueError`` listing the claimed ones."""
    for family in _REGISTRY.values():
        if architecture in family.gguf_architectures:
            return family
    raise ValueError(f"unsupported GGUF architecture {architecture!r}; supported general.architecture "
                     f"values: {supported_gguf_architectures()}")
