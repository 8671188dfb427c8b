"""Using an aligned soft prompt: generation and chat in JAX, side-by-side answers, PEFT export.

- :func:`generate`: a key/value-cache decoder, batched over prompts and soft prompts
  (:mod:`jaxalign.generation.decoding`).
- :func:`export_peft`: a soft prompt in the ``start`` slot as a PEFT prompt-tuning adapter
  (:mod:`jaxalign.generation.export`).
- The ``jaxalign generate``, ``chat`` and ``export`` commands (:mod:`jaxalign.generation.cli`).
"""

from jaxalign.generation.decoding import Generation, SoftPrompt, generate, stop_token_ids

__all__ = ["Generation", "SoftPrompt", "generate", "stop_token_ids"]
