"""Using an aligned soft prompt: generation and chat in JAX, side-by-side answers, PEFT export.

- :func:`generate`: a key/value-cache decoder, batched over prompts and soft prompts
  (:mod:`jaxalign.generation.decoding`).
- :func:`reply_log_likelihood`: the mean per-token log-likelihood of a fixed reply under each
  soft prompt (:mod:`jaxalign.generation.likelihood`).
- :func:`export_peft`: a soft prompt in the ``start`` slot as a PEFT prompt-tuning adapter
  (:mod:`jaxalign.generation.export`).
- The ``jaxalign generate``, ``chat`` and ``export`` commands (:mod:`jaxalign.cli.generate`).

Names are imported lazily, so ``import jaxalign.generation`` does not import jax.
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
    "reply_log_likelihood": "jaxalign.generation.likelihood",
}

__all__ = ["Generation", "SoftPrompt", "export_peft", "generate", "reply_log_likelihood", "stop_token_ids"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxalign.generation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
