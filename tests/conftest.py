"""Shared fixtures: real tokenizers built offline once per test session (see tests/real_tokenizers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def llama3_tokenizer_dir():
    """Folder with Llama-3's 128,256-id tokenizer (no chat template), cached on disk."""
    pytest.importorskip("tiktoken")
    pytest.importorskip("quicktok")
    from real_tokenizers import llama3_tokenizer_folder

    return llama3_tokenizer_folder()


@pytest.fixture(scope="session")
def qwen25_tokenizer_dir():
    """Folder with Qwen2.5's tokenizer (151,643 ranks + added tokens), cached on disk."""
    pytest.importorskip("tiktoken")
    pytest.importorskip("quicktok")
    from real_tokenizers import qwen25_tokenizer_folder

    return qwen25_tokenizer_folder()


@pytest.fixture(scope="session")
def sentencepiece_tokenizer_dir():
    """Folder with a Llama-2-style SentencePiece tokenizer trained at test time (400 pieces)."""
    pytest.importorskip("sentencepiece")
    from real_tokenizers import sentencepiece_tokenizer_folder

    return sentencepiece_tokenizer_folder()
