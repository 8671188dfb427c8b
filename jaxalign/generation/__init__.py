"""Using an aligned soft prompt: generation and chat in JAX, side-by-side answers, PEFT export.

- :func:`generate`: a key/value-cache decoder, batched over prompts and soft prompts
  (:mod:`jaxalign.generation.decoding`).
- :func:`export_peft`: a soft prompt in the ``start`` slot as a PEFT prompt-tuning adapter
  (:mod:`jaxalign.generation.export`).
- The ``jaxalign generate``, ``chat`` and ``export`` commands (:mod:`jaxalign.generation.cli`).

Names are imported lazily, so the command-line parser can import :mod:`jaxalign.generation.cli`
without importing jax.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Generation": "jaxalign.generation.decoding",
    "SoftPrompt": "jaxalign.generation.decoding",
    "generate": "jaxalign.generation.decoding",
    "stop_token_ids": "jaxalign.generation.decoding",
    "export_peft": "jaxalign.generation.export",
}

__all__ = ["Generation", "SoftPrompt", "export_peft", "generate", "stop_token_ids"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxalign.generation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
