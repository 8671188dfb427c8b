"""Where did the activations stop being finite? A layer-by-layer debug pass (float16 overflow).

float16 (for GPUs without bfloat16, such as a T4) keeps 10 mantissa bits but has a largest
finite value of 65,504: a residual stream or MLP activation beyond it becomes ``inf``, and the next
RMSNorm turns that into ``nan``. The normal forward pass is one ``lax.scan`` over the layers, so it
cannot say where that happened. :func:`find_nonfinite_layer` runs the same computation one layer
at a time on one input and returns the first stage whose output is not finite::

    inputs_embeds (B, T, d)  -> "input"        (a soft prompt too large for the dtype)
    layer 0 .. L-1           -> "layer", index  (the usual float16 overflow)
    final RMSNorm            -> "final_norm"
    LM head (float32 logits) -> "logits"

Only real positions (attention mask 1) are checked; padding rows are finite garbage by design.
:class:`jaxalign.scoring.Scorer` calls it by itself when a score comes back non-finite and names
the layer in a ``RuntimeWarning``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.model import llama

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class NonFiniteReport:
    """The first stage whose output had an ``inf``/``nan`` at a real position.

    ``stage``: ``"input"``, ``"layer"``, ``"final_norm"`` or ``"logits"``; ``layer``: the 0-based
    decoder layer index (HF's ``model.layers.{layer}``) when ``stage == "layer"``; ``n_layers``;
    ``dtype``: the model dtype's name; ``max_abs_input``: the largest ``|activation|`` entering that
    stage (finite).
    """

    stage: str
    layer: int | None
    n_layers: int
    dtype: str
    max_abs_input: float

    @property
    def message(self) -> str:
        """One sentence naming where it happened and what to do."""
        where = {"input": "in the input embeddings (soft prompt or token embeddings)",
                 "final_norm": "in the final RMSNorm",
                 "logits": "in the LM head's logits"}.get(self.stage)
        if where is None:
            where = (f"in decoder layer {self.layer} (model.layers.{self.layer}, 0-based) of "
                     f"{self.n_layers}")
        limit = ""
        if self.dtype in ("float16", "bfloat16"):
            limit = f" ({self.dtype} max {float(jnp.finfo(self.dtype).max):.6g})"
        return (f"activations became non-finite (inf/nan) {where} in {self.dtype}: the largest "
                f"|activation| entering it was {self.max_abs_input:.4g}{limit}. Use bfloat16 or float32 "
                f"(--dtype), or keep soft prompts at the embedding's scale.")


def _max_abs(x: Array, real: Array) -> float:
    x = jnp.where(real[..., None], jnp.abs(x.astype(jnp.float32)), 0.0)
    return float(jnp.max(jnp.where(jnp.isfinite(x), x, 0.0)))


def _all_finite(x: Array, real: Array) -> bool:
    return bool(jnp.all(jnp.isfinite(x) | ~real[..., None]))


_layer_jit = jax.jit(llama.decoder_layer, static_argnums=0)
_norm_jit = jax.jit(llama.rms_norm, static_argnums=2)


def find_nonfinite_layer(lm: Any, input_ids: Any = None, *, inputs_embeds: Any = None,
                         attention_mask: Any = None) -> NonFiniteReport | None:
    """Runs ``lm`` one stage at a time and reports the first with a non-finite output (else ``None``).

    Args:
      lm: a :class:`~jaxalign.model.LM` (any dtype, float or int8 weights, sharded or not).
      input_ids: ``(B, T)`` token ids, or
      inputs_embeds: ``(B, T, d)`` embeddings (e.g. ``[prefix][soft prompt][item]`` of one sequence).
      attention_mask: ``(B, T)`` 1 real / 0 padding (default all ones).

    The computation is the model's own (same functions as the scanned pass), in the model dtype;
    it is slower than the normal pass (one dispatch per layer) and meant for one failing input.
    """
    embeds = lm._embeds(input_ids, inputs_embeds).astype(lm.dtype)                  # (B, T, d)
    mask = lm._mask(attention_mask, embeds)                                        # (B, T)
    model, config = lm.model, lm.config
    real = mask.astype(bool)
    length = embeds.shape[1]
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    cos, sin = llama.rotary_cos_sin(config, positions, lm.dtype)
    mask4 = llama.attention_mask_4d(real, length)
    name = np.dtype(lm.dtype).name
    n_layers = config.num_hidden_layers

    def report(stage: str, layer: int | None, before: Array) -> NonFiniteReport:
        return NonFiniteReport(stage, layer, n_layers, name, _max_abs(before, real))

    hidden = embeds
    if not _all_finite(hidden, real):
        return report("input", None, hidden)
    stacked = model.layers.stacked()
    for index in range(n_layers):
        weights = jax.tree.map(lambda w, i=index: w[i], stacked)
        out = _layer_jit(config, weights, hidden, cos, sin, mask4)
        if not _all_finite(out, real):
            return report("layer", index, hidden)
        hidden = out
    normed = _norm_jit(hidden, model.norm[...], config.rms_norm_eps)
    if not _all_finite(normed, real):
        return report("final_norm", None, hidden)
    logits = jnp.einsum("btd,vd->btv", normed, model.unembedding, preferred_element_type=jnp.float32)
    if not _all_finite(logits, real):
        return report("logits", None, normed)
    return None
