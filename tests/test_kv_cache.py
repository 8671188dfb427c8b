"""Key/value caches: prefill + extend equal one whole forward pass, also when the cache is shared."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.model import llama


def _vectors(rng, *shape):
    return jnp.asarray(rng.normal(size=shape) * 0.3, jnp.float32)


def test_prefill_equals_forward(lm):
    rng = np.random.default_rng(0)
    embeds = _vectors(rng, 2, 7, 64)
    mask = jnp.asarray([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]])
    hidden, cache = llama.prefill_fn(lm.graphdef, lm.params, embeds, mask)
    whole = llama.forward_hidden(lm.graphdef, lm.params, embeds, mask)
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(hidden)[real], np.asarray(whole)[real], atol=1e-5)
    config = lm.config
    assert cache.keys.shape == (config.num_hidden_layers, 2, 7, config.num_key_value_heads, config.head_dim)


@pytest.mark.slow
def test_shared_then_per_row_caches_equal_whole_sequences(lm):
    """A left-padded prefix shared by 3 rows, then 3 continuations, then 6 rows grouped over
    those 3 caches (row g*3 + c continues cache row c): each equals the whole sequence."""
    g, p = lm.graphdef, lm.params
    rng = np.random.default_rng(1)
    prefix, prefix_mask = _vectors(rng, 1, 6, 64), jnp.asarray([[0, 1, 1, 1, 1, 1]])
    middle = _vectors(rng, 3, 5, 64)
    middle_mask = jnp.asarray([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    _, prefix_cache = llama.prefill_fn(g, p, prefix, prefix_mask)
    hidden, middle_cache = llama.extend_fn(g, p, middle, middle_mask, prefix_cache)

    whole = jnp.concatenate([jnp.broadcast_to(prefix, (3, 6, 64)), middle], axis=1)
    whole_mask = jnp.concatenate([jnp.broadcast_to(prefix_mask, (3, 6)), middle_mask], axis=1)
    reference = llama.forward_hidden(g, p, whole, whole_mask)[:, 6:]
    real = np.asarray(middle_mask, bool)
    np.testing.assert_allclose(np.asarray(hidden)[real], np.asarray(reference)[real], atol=1e-5)

    last = _vectors(rng, 6, 4, 64)
    last_mask = jnp.ones((6, 4), jnp.int32).at[1, 3].set(0)
    hidden, _ = llama.extend_fn(g, p, last, last_mask, llama.concat_caches(prefix_cache, middle_cache))
    rows = np.arange(6) % 3
    reference = llama.forward_hidden(
        g, p, jnp.concatenate([whole[rows], last], axis=1),
        jnp.concatenate([whole_mask[rows], last_mask], axis=1))[:, 11:]
    real = np.asarray(last_mask, bool)
    np.testing.assert_allclose(np.asarray(hidden)[real], np.asarray(reference)[real], atol=1e-5)
    # the answer logits read from the cached pass equal the plain selected-id path
    ids = jnp.asarray([10, 20, 30])
    cached = llama.select_logits(g, p, hidden, last_mask, ids)
    plain = llama.selected_logits_fn(g, p, jnp.concatenate([whole[rows], last], axis=1),
                                     jnp.concatenate([whole_mask[rows], last_mask], axis=1), ids)
    np.testing.assert_allclose(np.asarray(cached), np.asarray(plain), atol=1e-4)


def test_rows_must_group_over_the_cache(lm):
    rng = np.random.default_rng(2)
    _, cache = llama.prefill_fn(lm.graphdef, lm.params, _vectors(rng, 2, 3, 64), jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="cannot be grouped"):
        llama.extend_fn(lm.graphdef, lm.params, _vectors(rng, 3, 2, 64), jnp.ones((3, 2), jnp.int32), cache)
