"""The offline "tiny-random" preset, and that its answers depend on the soft prompt."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxalign
from jaxalign.model.tiny import random_llama, tiny_config

ITEMS = [
    "have security of employment",
    "How often do you feel nervous or tense?",
    "Persistent efforts are the surest way to results.",
    "How proud are you to be a citizen of your country?",
    "get recognition for good performance",
    "thrift: not spending more than needed",
]
CUE = " Answer with a single digit from 1 to 5."
PROMPTS, K = 32, 4


@pytest.fixture(scope="module")
def tiny():
    return jaxalign.load_model("tiny-random", dtype="float32")


def test_tiny_preset_shape(tiny):
    config = tiny.config
    assert tiny.name == "tiny-random" and tiny.dtype == jnp.float32
    assert config.vocab_size == len(tiny.tokenizer) == 1024
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads) == (4, 64, 4, 2)
    assert tiny.embedding_matrix.shape == (1024, 64)
    assert tiny.tokenizer.chat_template  # Llama-3 style template for prompting


def test_tiny_is_deterministic_per_seed(tiny):
    ids = np.arange(12).reshape(2, 6)
    again = jaxalign.load_model("tiny-random", dtype="float32", seed=0)
    np.testing.assert_array_equal(np.asarray(again.logits(ids)), np.asarray(tiny.logits(ids)))
    other = jaxalign.load_model("tiny-random", dtype="float32", seed=1)
    assert not np.allclose(np.asarray(other.embedding_matrix), np.asarray(tiny.embedding_matrix))


def test_tiny_bfloat16(tiny):
    lm16 = jaxalign.load_model("tiny-random", dtype="bfloat16")
    assert lm16.dtype == jnp.bfloat16 and lm16.embedding_matrix.dtype == jnp.bfloat16
    ids = np.arange(12).reshape(2, 6)
    got, ref = lm16.logits(ids), np.asarray(tiny.logits(ids))
    assert got.dtype == jnp.float32
    diff, scale = np.abs(np.asarray(got) - ref), np.abs(ref).max()
    # bfloat16 keeps 8 mantissa bits; through 4 sharp random layers errors reach a few % of scale
    assert diff.mean() < 0.01 * scale and diff.max() < 0.1 * scale, (diff.mean(), diff.max(), scale)


def _expected_answers(lm, soft_prompts: np.ndarray) -> np.ndarray:
    """Expected answer (softmax over the digit tokens "1".."5") per prompt and item: (P, Q).

    Sequence: chat header tokens, K soft vectors, then the item + cue + assistant header;
    items have different lengths, so rows are right-padded (one batched call).
    """
    tok = lm.tokenizer
    digits = [tok.convert_tokens_to_ids(str(i)) for i in range(1, 6)]
    assert all(tok.encode(str(i), add_special_tokens=False) == [d] for i, d in zip(range(1, 6), digits))
    chat = tok.apply_chat_template([{"role": "user", "content": "@@"}], tokenize=False,
                                   add_generation_prompt=True)
    before, after = chat.split("@@")
    prefix = tok.encode(before, add_special_tokens=False)
    suffixes = [tok.encode(item + CUE + after, add_special_tokens=False) for item in ITEMS]
    longest = max(map(len, suffixes))
    n_prompts, n_items = soft_prompts.shape[0], len(ITEMS)
    length = len(prefix) + K + longest

    ids = np.zeros((n_items, length), np.int32)
    mask = np.zeros((n_items, length), np.int32)
    for q, suffix in enumerate(suffixes):
        ids[q, :len(prefix)] = prefix
        ids[q, len(prefix) + K:len(prefix) + K + len(suffix)] = suffix
        mask[q, :len(prefix) + K + len(suffix)] = 1
    text = np.asarray(lm.embed(ids))                                            # (Q, T, d)
    embeds = np.broadcast_to(text, (n_prompts,) + text.shape).copy()            # (P, Q, T, d)
    embeds[:, :, len(prefix):len(prefix) + K] = soft_prompts[:, None]
    flat = embeds.reshape(n_prompts * n_items, length, -1)
    logits = lm.selected_logits(digits, inputs_embeds=flat,
                                attention_mask=np.tile(mask, (n_prompts, 1)))  # (P*Q, 5)
    probs = jax.nn.softmax(logits, axis=-1)
    return np.asarray(probs @ jnp.arange(1.0, 6.0)).reshape(n_prompts, n_items)


def _random_soft_prompts(lm, seed=0) -> np.ndarray:
    table = np.asarray(lm.embedding_matrix, np.float32)
    scale = table.std()  # soft vectors scaled like the embedding rows
    return np.random.default_rng(seed).normal(0.0, scale, (PROMPTS, K, table.shape[1])).astype(np.float32)


def test_answers_depend_on_the_soft_prompt(tiny):
    answers = _expected_answers(tiny, _random_soft_prompts(tiny))      # (P, Q)
    per_item_std = answers.std(axis=0)
    means = answers.mean(axis=0)
    summary = f"per-item std {np.round(per_item_std, 2)}, means {np.round(means, 2)}"
    assert np.isfinite(answers).all() and ((answers >= 1) & (answers <= 5)).all()
    assert per_item_std.mean() > 0.3, summary
    assert (per_item_std > 0.25).sum() >= len(ITEMS) // 2, summary
    assert per_item_std.min() > 0.05, summary  # a degenerate model gives < 0.05 on every item (below)
    assert np.abs(means - 3.0).max() > 0.3, summary  # not all near the middle of the scale
    assert answers.max() - answers.min() > 2.0, summary


def test_standard_init_scale_would_be_degenerate(tiny):
    """Why the preset uses std 0.2: HF's 0.02 gives the same answer whatever the soft prompt."""
    flat = random_llama(tiny_config(len(tiny.tokenizer)), seed=0, init_std=0.02)
    lm = jaxalign.LM(name="std-0.02", config=flat.config, model=flat, tokenizer=tiny.tokenizer)
    answers = _expected_answers(lm, _random_soft_prompts(lm))
    assert answers.std(axis=0).max() < 0.05, np.round(answers.std(axis=0), 3)
