"""The last layer computes only what is read: ``hidden="last"``/``"none"`` equal the full computation.

``prefill``/``extend`` with ``hidden="last"`` return each row's last real hidden state and with
``"none"`` only the cache; both must give the same cache and (for ``"last"``) the same hidden
state as ``hidden="all"`` read at that position. At the scorer, ``trim_last_layer=True`` (the
default) must give the answer probabilities of ``trim_last_layer=False`` for both layouts, on a
config with Qwen2-style q/k/v/o biases and a Mistral-style sliding window (every extra code path at
once), and (slow) on the tiny model with its default buckets and with int8 weights. The cached
scorer against an independent reference is ``tests/test_scoring.py``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import pytest

import jax

import jaxalign
from jaxalign.model import LM, llama
from jaxalign.model.tiny import random_llama

TOL = 1e-6  # float32 answer probabilities, trimmed vs whole last layer (measured 3e-7 .. 4e-7)
TOL_INT8 = 1e-5  # int8 weights: the dequantising matmuls round differently in the trimmed branch (3e-6)
WINDOW = 4


@functools.partial(jax.jit, static_argnums=0)
def _all_three(graphdef, params, prefix, prefix_mask, new, new_mask):
    """Prefill of ``prefix`` then extend by ``new`` with each ``hidden`` option (one compile)."""
    out = {}
    for hidden in ("all", "last", "none"):
        out[f"prefill_{hidden}"] = llama.prefill_fn(graphdef, params, prefix, prefix_mask, hidden=hidden)
    cache = out["prefill_all"][1]
    for hidden in ("all", "last", "none"):
        out[f"extend_{hidden}"] = llama.extend_fn(graphdef, params, new, new_mask, cache, hidden=hidden)
    return out


@pytest.fixture(scope="module")
def variants(lm):
    """name -> LM: the tiny model; its shape with Qwen2-like biases and a Mistral-like window; int8."""
    config = dataclasses.replace(lm.config, qkv_bias=True, o_bias=True, sliding_window=WINDOW)
    model = random_llama(config, dtype="float32", seed=5, init_std=0.2, head_init_std=0.3)  # biases random too
    return {"tiny": lm,
            "bias_window": LM(name="tiny-bias-window", config=config, model=model, tokenizer=lm.tokenizer),
            "int8": jaxalign.load_model("tiny-random", dtype="float32", quantize="int8")}


@pytest.mark.parametrize("name", ["bias_window", "int8"])
def test_last_and_none_equal_all(variants, name):
    """Left-padded prefix of 2 rows, then 4 rows grouped over it (C = 2, G = 2), ragged masks."""
    model = variants[name]
    g, p = model.graphdef, model.params
    rng = np.random.default_rng(0)
    d = model.config.hidden_size
    prefix = jnp.asarray(0.3 * rng.standard_normal((2, 6, d)), jnp.float32)
    prefix_mask = jnp.asarray([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    new = jnp.asarray(0.3 * rng.standard_normal((4, 5, d)), jnp.float32)
    new_mask = jnp.asarray([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    out = jax.tree.map(np.asarray, _all_three(g, p, prefix, prefix_mask, new, new_mask))
    for step, last_index in (("prefill", [5, 5]), ("extend", [4, 2, 3, 0])):
        hidden_all, cache_all = out[f"{step}_all"]                                   # (B, T, d)
        last, cache_last = out[f"{step}_last"]                                       # (B, d)
        none, cache_none = out[f"{step}_none"]
        assert none is None and last.shape == (len(last_index), d)
        np.testing.assert_allclose(last, hidden_all[np.arange(len(last_index)), last_index], atol=1e-5)
        for cache in (cache_last, cache_none):
            np.testing.assert_allclose(cache.keys, cache_all.keys, atol=1e-5)
            np.testing.assert_allclose(cache.values, cache_all.values, atol=1e-5)
            np.testing.assert_array_equal(cache.mask, cache_all.mask)


def test_unknown_hidden_is_refused(lm):
    embeds = jnp.zeros((1, 3, lm.config.hidden_size), jnp.float32)
    with pytest.raises(ValueError, match="hidden must be one of all, last, none"):
        llama.prefill_fn(lm.graphdef, lm.params, embeds, jnp.ones((1, 3), jnp.int32), hidden="first")


def _trimmed_vs_whole(model: LM, slot: str, n_buckets: int | None, tol: float = TOL) -> None:
    """Max |probability difference| of the trimmed and the whole last layer, one layout."""
    vsm = jaxalign.vsm13()
    rng = np.random.default_rng(1)
    prompts = (0.2 * rng.standard_normal((2, 2, model.config.hidden_size))).astype(np.float32)
    whole = jaxalign.make_scorer(model, vsm, k=2, slot=slot, n_buckets=n_buckets, trim_last_layer=False)
    trimmed = jaxalign.make_scorer(model, vsm, k=2, slot=slot, n_buckets=n_buckets)
    assert trimmed.trim_last_layer and not whole.trim_last_layer
    before, after = np.asarray(whole(prompts).probs), np.asarray(trimmed(prompts).probs)
    assert before.shape == (2, 24, 5) and np.all(np.isfinite(before))
    assert np.abs(before - 0.2).max() > 0.01  # not uniform: the comparison can fail
    print(f"{model.name} {slot}: max |dp| {np.abs(after - before).max():.1e}")  # shown with -s
    np.testing.assert_allclose(after, before, rtol=0, atol=tol)


@pytest.mark.parametrize("slot", ["user_start", "user_end"])
def test_scorer_trimmed_equals_whole_with_biases_and_window(variants, slot):
    """Default layout (shared prefix) and item-first layout (per-item prefix caches)."""
    _trimmed_vs_whole(variants["bias_window"], slot, n_buckets=1)


@pytest.mark.slow
@pytest.mark.parametrize("name, slot", [("tiny", "user_start"), ("int8", "user_end")])
def test_scorer_trimmed_equals_whole_tiny_and_int8(variants, name, slot):
    """The tiny model with its default buckets; int8 weights in the item-first layout."""
    _trimmed_vs_whole(variants[name], slot, n_buckets=None, tol=TOL_INT8 if name == "int8" else TOL)
