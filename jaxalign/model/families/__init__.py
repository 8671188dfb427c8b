"""Model families: one module each (config presets, ``config.json`` / GGUF metadata reading, tensor
names) behind one small record (:class:`Family`), found by name or by what a checkpoint says.

    Family(name, model_types, config_from_hf, hf_names, gguf_..., presets)    base.py
    TensorNames(globals, layer, transposed, ignored_suffixes)                 base.py
    register(family) / unregister(name) / get(name) / names()                 the registry
    family_for_model_type(t) / family_for_gguf_architecture(a)                 what a checkpoint says

Built in, in this order: ``"llama"`` (:mod:`~jaxalign.model.families.llama`), ``"qwen2"``
(:mod:`~jaxalign.model.families.qwen2`) and ``"mistral"``
(:mod:`~jaxalign.model.families.mistral`). All run on the shared decoder
(:mod:`jaxalign.model.llama`); a family whose blocks compute something else needs that block in
the shared model too. ``tests/test_model_family_registry.py`` registers a family of its own.
"""

from jaxalign.model.families.base import (
    LAYER,
    Family,
    TensorNames,
    family_for_gguf_architecture,
    family_for_model_type,
    get,
    names,
    register,
    unregister,
)
from jaxalign.model.families import llama, mistral, qwen2

for _built_in in (llama.FAMILY, qwen2.FAMILY, mistral.FAMILY):
    register(_built_in, replace=True)

__all__ = ["LAYER", "Family", "TensorNames", "family_for_gguf_architecture", "family_for_model_type", "get",
           "names", "register", "unregister"]
