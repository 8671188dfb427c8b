"""The tiny offline Llama-3-style tokenizer: byte-level round trip, digits, specials, template."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from transformers import AutoTokenizer

from jaxalign.model import tiny_tokenizer as tiny_module
from jaxalign.model.tiny_tokenizer import TINY_VOCAB_SIZE, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _random_unicode(rng: np.random.Generator, length: int) -> str:
    # mix of ASCII, Latin-1, CJK, emoji, whitespace and control characters (no surrogates)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x0, 0x1F)]
    chars = []
    for _ in range(length):
        lo, hi = ranges[rng.integers(len(ranges))]
        chars.append(chr(int(rng.integers(lo, hi + 1))))
    return "".join(chars)


def test_vocab_and_special_tokens(tok):
    assert len(tok) == TINY_VOCAB_SIZE == 1024
    assert tok.bos_token == "<|begin_of_text|>" and tok.bos_token_id == 1016
    assert tok.eos_token == "<|eot_id|>" and tok.eos_token_id == 1023
    assert tok.pad_token == "<|finetune_right_pad_id|>" and tok.pad_token_id == 1020
    assert tok.unk_token is None
    for name in ("<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"):
        (token_id,) = tok.encode(name, add_special_tokens=False)
        assert token_id >= 1016  # the specials come after the 1016 BPE tokens
    # encode() with special tokens adds BOS once, like Llama 3
    assert tok.encode("Hello")[0] == tok.bos_token_id
    assert tok.encode("Hello")[1:] == tok.encode("Hello", add_special_tokens=False)


def test_round_trip_arbitrary_unicode(tok):
    texts = [
        "",
        "Hello, world!",
        "héllo wörld: naïve résumé, Zoë, Ærøskøbing",
        "日本語のテキスト 中文 한국어 العربية हिन्दी",
        "emoji 🤖🎌🇨🇳 and ZWJ 👩‍👩‍👧",
        "tabs\tand\r\nnewlines\n\n\n  spaces   ",
        "<|not_special|> <|eot_id|>",  # a real special token inside text also survives
    ]
    rng = np.random.default_rng(0)
    texts += [_random_unicode(rng, int(rng.integers(1, 60))) for _ in range(50)]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert all(0 <= i < len(tok) for i in ids)
        assert tok.decode(ids) == text


def test_digits_are_single_tokens_in_every_context(tok):
    for digit in "0123456789":
        (digit_id,) = tok.encode(digit, add_special_tokens=False)
        for context in ("\n\n", " ", "Answer: ", "assistant<|end_header_id|>\n\n", "(", "x"):
            base = tok.encode(context, add_special_tokens=False)
            full = tok.encode(context + digit, add_special_tokens=False)
            assert full == base + [digit_id], (context, digit)
    # numbers split into single digits
    assert tok.convert_ids_to_tokens(tok.encode("12345", add_special_tokens=False)) == list("12345")


def test_chat_template_layout(tok):
    messages = [
        {"role": "system", "content": "  You are from Japan. "},
        {"role": "user", "content": "How proud are you?"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nYou are from Japan.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow proud are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert text == expected
    no_prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert no_prompt == expected[: -len("<|start_header_id|>assistant<|end_header_id|>\n\n")]
    # tokenized: one BOS only, special tokens are single ids, the turn ends on "\n\n"
    encoded = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = list(encoded["input_ids"]) if not isinstance(encoded, list) else encoded
    assert ids == tok.encode(expected, add_special_tokens=False)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert ids.count(tok.eos_token_id) == 2
    assert tok.convert_ids_to_tokens(ids[-4:]) == [
        "<|start_header_id|>", "assistant", "<|end_header_id|>", "ĊĊ"
    ]


def test_deterministic_and_fast():
    tiny_module._trained_backend.cache_clear()
    start = time.perf_counter()
    first = tiny_tokenizer()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"building the tiny tokenizer took {elapsed:.2f} s"
    first_json = first.backend_tokenizer.to_str()
    tiny_module._trained_backend.cache_clear()
    assert tiny_tokenizer().backend_tokenizer.to_str() == first_json
    # a fresh process with another hash seed trains the same tokenizer
    code = (
        "import hashlib; from jaxalign.model.tiny_tokenizer import tiny_tokenizer; "
        "print(hashlib.sha256(tiny_tokenizer().backend_tokenizer.to_str().encode()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == hashlib.sha256(first_json.encode()).hexdigest()


def test_fresh_instances_are_independent():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    a.padding_side = "left"
    assert b.padding_side == "right"


def test_save_and_reload(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Wie geht's? 3 < 4 ✓"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.chat_template == tok.chat_template
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == (
        tok.bos_token, tok.eos_token, tok.pad_token
    )
    messages = [{"role": "user", "content": "Hi"}]
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )
