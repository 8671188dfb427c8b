"""Prompt layout: chat-template rendering split at the soft-prompt slot, padding, answers, buckets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from jaxalign.model.tiny_tokenizer import tiny_tokenizer
from jaxalign.prompting import (
    PLAIN_CHAT_TEMPLATE,
    ITEM_FIRST_SLOTS,
    SLOTS,
    SOFT_PROMPT_SENTINEL,
    PromptBatch,
    answer_token_ids,
    bucket_items,
    item_messages,
    render_items,
    render_text,
)
from jaxalign.survey import vsm13

# Llama-3.1-like: a system header is always written, with date lines before the system text.
LLAMA31_LIKE_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# drops system messages entirely
NO_SYSTEM_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{%- if message['role'] != 'system' %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

PERSONA = "You are an average person from Japan."


@dataclasses.dataclass(frozen=True)
class StandInItem:
    id: str
    text: str
    options: tuple[str, ...]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def items():
    return vsm13().items


@pytest.fixture(scope="module")
def batches(tok, items):
    return {slot: render_items(tok, items, slot=slot, system=PERSONA) for slot in SLOTS}


def _real(ids_row: np.ndarray, mask_row: np.ndarray) -> list[int]:
    return ids_row[mask_row == 1].tolist()


def _decode_rows(tok, batch: PromptBatch, q: int) -> tuple[str, str]:
    prefix = tok.decode(_real(batch.prefix_ids[q], batch.prefix_mask[q]))
    suffix = tok.decode(_real(batch.suffix_ids[q], batch.suffix_mask[q]))
    return prefix, suffix


@pytest.mark.parametrize("slot", SLOTS)
def test_tokens_decode_to_template_output_without_slot(tok, items, batches, slot):
    batch = batches[slot]
    texts = render_text(tok, items, slot=slot, system=PERSONA)
    for q, item in enumerate(items):
        messages = item_messages(item, slot=slot, system=PERSONA)
        with_sentinel = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if slot == "start":  # before the whole rendered sequence, BOS included
            assert SOFT_PROMPT_SENTINEL not in with_sentinel
            with_sentinel = SOFT_PROMPT_SENTINEL + with_sentinel
        assert with_sentinel.count(SOFT_PROMPT_SENTINEL) == 1
        prefix, suffix = _decode_rows(tok, batch, q)
        assert prefix + suffix == with_sentinel.replace(SOFT_PROMPT_SENTINEL, "") == texts[q]
        assert with_sentinel.split(SOFT_PROMPT_SENTINEL) == [prefix, suffix]
    assert batch.item_ids == tuple(item.id for item in items)


@pytest.mark.parametrize("slot", SLOTS)
def test_padding_and_masks(tok, batches, slot):
    batch = batches[slot]
    q, tp, ts = batch.n_items, batch.prefix_len, batch.suffix_len
    assert batch.prefix_ids.dtype == batch.suffix_ids.dtype == np.int32
    assert batch.prefix_ids.shape == batch.prefix_mask.shape == (q, tp)
    assert batch.suffix_ids.shape == batch.suffix_mask.shape == (q, ts)
    assert batch.pad_id == tok.pad_token_id
    for row in range(q):
        p_len, s_len = batch.prefix_lengths[row], batch.suffix_lengths[row]
        # prefix: left padding then real tokens; suffix: real tokens then right padding
        assert batch.prefix_mask[row].tolist() == [0] * (tp - p_len) + [1] * p_len
        assert batch.suffix_mask[row].tolist() == [1] * s_len + [0] * (ts - s_len)
        assert np.all(batch.prefix_ids[row, : tp - p_len] == tok.pad_token_id)
        assert np.all(batch.suffix_ids[row, s_len:] == tok.pad_token_id)
        assert tok.pad_token_id not in batch.prefix_ids[row, tp - p_len :]
    assert batch.prefix_lengths.max() == tp and batch.suffix_lengths.max() == ts
    assert batch.n_pad_tokens == (batch.prefix_mask == 0).sum() + (batch.suffix_mask == 0).sum()

    k = 3
    mask = batch.sequence_mask(k)
    assert mask.shape == (q, tp + k + ts) == (q, batch.sequence_length(k))
    assert np.array_equal(mask[:, :tp], batch.prefix_mask) and np.all(mask[:, tp : tp + k] == 1)
    assert np.array_equal(mask[:, tp + k :], batch.suffix_mask)
    assert np.array_equal(batch.real_lengths(k), mask.sum(axis=1))
    ids = batch.token_ids(k, fill_id=7)
    assert np.all(ids[:, tp : tp + k] == 7)
    last = batch.last_index(k)
    # the answer is read after the end of the assistant header ("\n\n")
    assert all(tok.decode([int(ids[row, last[row]])]) == "\n\n" for row in range(q))
    for row in range(q):  # the last real token, only padding after it
        assert mask[row, last[row]] == 1 and not mask[row, last[row] + 1 :].any()
    positions = batch.position_ids(k)
    assert np.array_equal(positions[np.arange(q), last], batch.real_lengths(k) - 1)
    first_real = tp - batch.prefix_lengths
    assert np.all(positions[np.arange(q), first_real] == 0)


def test_slot_positions(tok, items, batches):
    item = items[0]
    header_user = "<|start_header_id|>user<|end_header_id|>\n\n"
    system_turn = f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{PERSONA}"

    prefix, suffix = _decode_rows(tok, batches["user_start"], 0)
    assert prefix == f"{system_turn}<|eot_id|>{header_user}"
    assert suffix.startswith(item.text.strip() + "\n1. ")

    prefix, suffix = _decode_rows(tok, batches["system"], 0)
    assert prefix == system_turn
    assert suffix.startswith(f"<|eot_id|>{header_user}{item.text.strip()}")

    prefix, suffix = _decode_rows(tok, batches["after_item"], 0)
    assert prefix == f"{system_turn}<|eot_id|>{header_user}{item.text.strip()}\n" + "".join(
        f"{k}. {label}\n" for k, label in enumerate(item.options, start=1)
    )
    assert suffix.startswith("Answer with one digit from 1 to 5.<|eot_id|>")
    assert suffix.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")

    # user_end: the whole user message (instruction included) first, only the answer cue after
    prefix, suffix = _decode_rows(tok, batches["user_end"], 0)
    assert prefix == f"{system_turn}<|eot_id|>{header_user}{item.text.strip()}\n" + "".join(
        f"{k}. {label}\n" for k, label in enumerate(item.options, start=1)
    ) + "Answer with one digit from 1 to 5."
    assert suffix == "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"

    # slot="system" without a system text creates an empty system message
    batch = render_items(tok, items[:2], slot="system")
    assert batch.system == ""
    assert _decode_rows(tok, batch, 0)[0] == "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    # no system text, default slot: the prefix is BOS + user header only
    batch = render_items(tok, items[:2])
    assert batch.system is None and batch.slot == "user_start"
    assert _decode_rows(tok, batch, 1)[0] == f"<|begin_of_text|>{header_user}"


def test_prefix_shared(batches):
    for slot in ("user_start", "system"):
        batch = batches[slot]
        assert batch.prefix_shared
        assert np.all(batch.prefix_mask == 1)  # no padding
        assert np.all(batch.prefix_ids == batch.prefix_ids[:1])
    for slot in ("after_item", "user_end"):
        assert not batches[slot].prefix_shared
        # item first: the same text after the slot for every item, so suffixes are all equal
        assert np.all(batches[slot].suffix_ids == batches[slot].suffix_ids[:1])
    assert batches["user_end"].suffix_ids.shape[1] < batches["after_item"].suffix_ids.shape[1]


def test_answer_ids_are_the_digit_tokens(tok, batches):
    expected = tok.convert_tokens_to_ids(list("12345"))
    for batch in batches.values():
        assert batch.answer_ids.dtype == np.int32
        assert batch.answer_ids.tolist() == expected
        assert [tok.decode([i]) for i in batch.answer_ids] == list("12345")
        assert batch.answer_order.tolist() == [1, 2, 3, 4, 5]
    assert answer_token_ids(tok, 3).tolist() == expected[:3]


def test_reverse_options(tok, items):
    item = items[18]
    batch = render_items(tok, [item], reverse_options=True)
    text = render_text(tok, [item], reverse_options=True)[0]
    for k, label in enumerate(reversed(item.options), start=1):
        assert f"\n{k}. {label}\n" in text
    assert batch.answer_order.tolist() == [5, 4, 3, 2, 1]
    # presented digit j+1 stands for original code answer_order[j]
    presented = np.array([[0.5, 0.2, 0.1, 0.1, 0.1]])  # "1" shows the original option 5
    original = batch.to_original_order(presented)
    assert original.tolist() == [[0.1, 0.1, 0.1, 0.2, 0.5]]
    expected_answer = (presented * batch.answer_order).sum()
    assert np.isclose(expected_answer, (original * np.arange(1, 6)).sum())
    # the not-reversed batch maps identically
    plain = render_items(tok, [item])
    assert plain.to_original_order(presented).tolist() == presented.tolist()


def test_llama31_like_template(tok, items):
    for slot in SLOTS:
        batch = render_items(tok, items[:4], slot=slot, system=PERSONA, chat_template=LLAMA31_LIKE_TEMPLATE)
        texts = render_text(tok, items[:4], slot=slot, system=PERSONA, chat_template=LLAMA31_LIKE_TEMPLATE)
        for q in range(4):
            prefix, suffix = _decode_rows(tok, batch, q)
            assert prefix + suffix == texts[q]
            assert "Cutting Knowledge Date" in (suffix if slot == "start" else prefix)
        assert batch.prefix_shared == (slot not in ITEM_FIRST_SLOTS)
    batch = render_items(tok, items[:2], slot="system", chat_template=LLAMA31_LIKE_TEMPLATE)
    assert _decode_rows(tok, batch, 0)[0].endswith("Today Date: 26 Jul 2024\n\n")


def test_template_that_drops_the_slot_raises(tok, items):
    with pytest.raises(ValueError, match="0 times.*system message"):
        render_items(tok, items[:2], slot="system", chat_template=NO_SYSTEM_TEMPLATE)


def test_no_chat_template(tok, items):
    bare = tiny_tokenizer()
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        render_items(bare, items[:2])
    batch = render_items(bare, items[:2], system=PERSONA, chat_template=PLAIN_CHAT_TEMPLATE)
    prefix, suffix = _decode_rows(bare, batch, 0)
    assert prefix == f"<|begin_of_text|>{PERSONA}\n\n"
    assert suffix.endswith("Answer with one digit from 1 to 5.\nAnswer: ")
    assert batch.answer_ids.tolist() == tok.convert_tokens_to_ids(list("12345"))
    assert answer_token_ids(bare, 5).tolist() == batch.answer_ids.tolist()  # digits on their own


def test_multi_token_digit_raises(tok):
    # "\n\n3" becomes a token of its own: the digit 3 then merges with the end of the prompt
    merged = tiny_tokenizer()
    merged.add_tokens(["\n\n3"])
    with pytest.raises(ValueError, match="'3' is not a single token"):
        answer_token_ids(merged)
    assert answer_token_ids(merged, 2).tolist() == tok.convert_tokens_to_ids(["1", "2"])
    # a word-level tokenizer that does not know "4": it becomes the unknown token
    vocab = {"[UNK]": 0, "1": 1, "2": 2, "3": 3, "5": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[UNK]")
    with pytest.raises(ValueError, match="'4' encodes as the unknown token"):
        answer_token_ids(word_level)


def test_bad_input(tok, items):
    with pytest.raises(ValueError, match="slot must be one of"):
        render_items(tok, items, slot="middle")
    with pytest.raises(ValueError, match="no items"):
        render_items(tok, [])
    with pytest.raises(ValueError, match="reserved string"):
        render_items(tok, [StandInItem("x", f"a {SOFT_PROMPT_SENTINEL} b", ("1", "2", "3", "4", "5"))])
    with pytest.raises(ValueError, match="same number of options"):
        render_items(tok, [StandInItem("a", "A?", ("x",) * 5), StandInItem("b", "B?", ("y",) * 4)])
    with pytest.raises(ValueError, match="pad_to_multiple"):
        render_items(tok, items, pad_to_multiple=0)
    with pytest.raises(ValueError, match="Instrument"):
        render_items(tok, "not items")


def test_stand_in_items_and_token_counts(tok, items):
    # any objects with .id .text .options work; counts stay in the expected range
    stand_in = [StandInItem(item.id, item.text, tuple(item.options)) for item in items]
    batch = render_items(tok, stand_in)
    reference = render_items(tok, items)
    assert np.array_equal(batch.suffix_ids, reference.suffix_ids)
    totals = batch.prefix_lengths + batch.suffix_lengths
    assert batch.n_items == 24 and 40 <= totals.min() and totals.max() <= 130


def test_pad_to_multiple(tok, items):
    shared = render_items(tok, items, pad_to_multiple=8)
    assert shared.suffix_len % 8 == 0 and shared.suffix_len - 8 < shared.suffix_lengths.max()
    assert np.all(shared.prefix_mask == 1)  # the shared prefix is never padded
    item_first = render_items(tok, items, slot="after_item", pad_to_multiple=8)
    assert item_first.prefix_len % 8 == 0 and item_first.suffix_len % 8 == 0


@pytest.mark.parametrize("slot", ["user_start", "after_item"])
def test_bucketing(batches, slot):
    batch = batches[slot]
    one = bucket_items(batch, 1)
    assert len(one) == 1 and one[0][1].n_pad_tokens == batch.n_pad_tokens
    previous = batch.n_pad_tokens
    for n in (2, 3, 4):
        buckets = bucket_items(batch, n)
        assert len(buckets) == n
        covered = np.concatenate([indices for indices, _ in buckets])
        assert sorted(covered.tolist()) == list(range(batch.n_items))  # each item exactly once
        padding = sum(sub.n_pad_tokens for _, sub in buckets)
        assert padding < previous
        previous = padding
        for indices, sub in buckets:
            assert sub.item_ids == tuple(batch.item_ids[i] for i in indices)
            assert sub.prefix_shared == batch.prefix_shared
            for row, q in enumerate(indices):  # same real tokens, less padding
                assert _real(sub.prefix_ids[row], sub.prefix_mask[row]) == _real(batch.prefix_ids[q], batch.prefix_mask[q])
                assert _real(sub.suffix_ids[row], sub.suffix_mask[row]) == _real(batch.suffix_ids[q], batch.suffix_mask[q])
            assert sub.suffix_len == sub.suffix_lengths.max()
    assert len(bucket_items(batch, 100)) == batch.n_items  # at most one item per bucket
    with pytest.raises(ValueError, match="n_buckets"):
        bucket_items(batch, 0)


def test_start_slot_puts_the_soft_prompt_before_bos(tok, items):
    batch = render_items(tok, items[:3], slot="start", system=PERSONA)
    assert batch.prefix_ids.shape == (3, 0) and batch.prefix_shared
    assert batch.suffix_ids[0, 0] == tok.bos_token_id
    marked = render_text(tok, items[:1], slot="start", marker="[soft]")[0]
    assert marked.startswith("[soft]" + tok.bos_token)
