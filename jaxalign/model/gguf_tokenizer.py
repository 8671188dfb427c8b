"""A GGUF file's tokenizer and chat template, built from its metadata without PyTorch.

One job: turn the ``tokenizer.*`` metadata of a ``.gguf`` file into a transformers tokenizer
(``PreTrainedTokenizerFast``, which needs no torch) that encodes, decodes and renders chat
templates as transformers' own GGUF reader does (that reader imports torch)::

    GGUFReader ──► read_tokenizer_metadata ──► GGUFTokenizerData: model, pre, tokens, merges,
                                               token types, special ids, flags, chat template
               ──► tokenizer_from_metadata ──► build_byte_level_tokenizer ──► tokenizers BPE + ByteLevel pre-tokenizer and
                                                  decoder, control tokens as special added tokens,
                                                  wrapped as PreTrainedTokenizerFast

Only byte-level BPE vocabularies (``tokenizer.ggml.model`` ``gpt2``: SmolLM2, Qwen2/2.5, Llama 3)
are built here. The text is split before BPE by the pattern its ``tokenizer.ggml.pre`` names
(:data:`BYTE_LEVEL_SPLITS`: GPT-2's own pattern for ``default``/``gpt2``/``smollm``, Llama 3's or
Qwen2's for those families), the choice transformers' GGUF reader makes. Other tokenizer models
(``llama`` SentencePiece, ...) or pre-tokenizers are handed to transformers' reader when torch is
installed, and refused in one line otherwise (:func:`tokenizer_from_metadata`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

# llama.cpp's token types (tokenizer.ggml.token_type).
CONTROL = 3
USER_DEFINED = 4

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> the regex the text is split by before BPE (None: the ByteLevel
# pre-tokenizer's own GPT-2 pattern). A pre-tokenizer not listed is not built here.
BYTE_LEVEL_SPLITS: dict[str, str | None] = {
    "default": None, "gpt2": None, "smollm": None,
    "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT, "falcon3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
}


@dataclasses.dataclass(frozen=True)
class GGUFTokenizerData:
    """The tokenizer metadata of a GGUF file (``tokenizer.ggml.*`` and ``tokenizer.chat_template``).

    ``model`` is ``tokenizer.ggml.model`` (``"gpt2"`` for byte-level BPE), ``pre`` the
    pre-tokenizer's name (``None`` when absent), ``tokens`` / ``token_types`` / ``merges`` the
    vocabulary arrays in id order, the ``*_id`` fields the special ids (``None`` when absent).
    """

    file: Path
    model: str | None
    pre: str | None
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool | None
    add_eos: bool | None
    chat_template: str | None


def read_tokenizer_metadata(reader: Any, file: Path) -> GGUFTokenizerData | None:
    """The tokenizer metadata from an open ``gguf.GGUFReader`` of ``file`` (``None``: the file has no
    ``tokenizer.ggml.tokens``). :func:`jaxalign.model.gguf.read_gguf` calls it while it parses the
    header, so the file is parsed once."""
    fields = reader.fields

    def value(key: str) -> Any:
        field = fields.get(key)
        return None if field is None else field.contents()

    tokens = value("tokenizer.ggml.tokens")
    if tokens is None:
        return None
    return GGUFTokenizerData(
        file=file, model=value("tokenizer.ggml.model"), pre=value("tokenizer.ggml.pre"), tokens=tuple(tokens),
        token_types=tuple(int(t) for t in value("tokenizer.ggml.token_type") or ()),
        merges=tuple(value("tokenizer.ggml.merges") or ()),
        bos_id=_int(value("tokenizer.ggml.bos_token_id")), eos_id=_int(value("tokenizer.ggml.eos_token_id")),
        unk_id=_int(value("tokenizer.ggml.unknown_token_id")), pad_id=_int(value("tokenizer.ggml.padding_token_id")),
        add_bos=_bool(value("tokenizer.ggml.add_bos_token")), add_eos=_bool(value("tokenizer.ggml.add_eos_token")),
        chat_template=value("tokenizer.chat_template"))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each of the 256 bytes -> one printable character.

    Bytes that are printable Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for
    themselves; the other 68 take the code points 256, 257, ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in out:
            out[byte] = chr(256 + extra)
            extra += 1
    return out


def build_byte_level_tokenizer(data: GGUFTokenizerData) -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` for a byte-level BPE GGUF vocabulary (no torch).

    The vocabulary is the file's tokens in id order (a token written outside the byte alphabet is
    respelled through it, from its UTF-8 bytes), the merges the file's; the text is split by the
    pattern of ``data.pre`` (:data:`BYTE_LEVEL_SPLITS`) and decoded by the ByteLevel decoder.
    Control tokens (token type 3) written in the byte alphabet become special added tokens of the
    backend (not named special tokens: ``all_special_tokens`` lists bos, eos, unk and pad, as
    transformers' reading does), user-defined ones (type 4) plain added tokens, so neither is cut
    into pieces; bos, eos, unk
    and pad come from the file's ids, BOS/EOS are added on encoding when the file's
    ``add_bos_token`` / ``add_eos_token`` say so, and the chat template is the file's.

    Raises:
      ValueError: ``data.model`` is not ``gpt2`` or ``data.pre`` is not in :data:`BYTE_LEVEL_SPLITS`.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    pre = data.pre or "default"
    if data.model != "gpt2" or pre not in BYTE_LEVEL_SPLITS:
        raise ValueError(f"{data.file.name}: tokenizer {data.model!r} with pre-tokenizer {pre!r} is not a "
                         f"byte-level BPE jaxalign builds (gpt2 with {', '.join(sorted(BYTE_LEVEL_SPLITS))})")
    spelling = byte_alphabet()
    alphabet = set(spelling.values())
    vocab = {(token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))): index
             for index, token in enumerate(data.tokens)}
    merges = [tuple(merge.split(" ")) for merge in data.merges]
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    split = BYTE_LEVEL_SPLITS[pre]
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    kinds = list(zip(data.tokens, data.token_types))
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, kind in kinds
                                if kind == CONTROL and set(t) <= alphabet])
    backend.add_tokens([AddedToken(t, normalized=False, special=False) for t, kind in kinds
                        if kind == USER_DEFINED and t in vocab])

    def token(index: int | None) -> str | None:
        return data.tokens[index] if index is not None and 0 <= index < len(data.tokens) else None

    options: dict[str, Any] = dict(bos_token=token(data.bos_id), eos_token=token(data.eos_id),
                                   unk_token=token(data.unk_id), pad_token=token(data.pad_id))
    if data.add_bos is not None:
        options["add_bos_token"] = data.add_bos
    if data.add_eos is not None:
        options["add_eos_token"] = data.add_eos
    if data.chat_template is not None:
        options["chat_template"] = data.chat_template
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **options)
    return tokenizer


def torch_available() -> bool:
    """Whether PyTorch can be imported (transformers' GGUF reader needs it)."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None  # None: imports of it are blocked
    return importlib.util.find_spec("torch") is not None


def tokenizer_from_metadata(data: GGUFTokenizerData | None, file: Path) -> Any:
    """The tokenizer and chat template of GGUF ``file`` as a transformers tokenizer.

    Byte-level BPE files (``tokenizer.ggml.model`` ``gpt2`` with a pre-tokenizer in
    :data:`BYTE_LEVEL_SPLITS`) are built from ``data`` without torch
    (:func:`build_byte_level_tokenizer`); any other tokenizer is read by transformers' GGUF reader
    when torch is installed.

    Raises:
      ValueError: no tokenizer in the file, or another tokenizer model and no torch (one line
        saying what to install).
    """
    if data is None:
        raise ValueError(f"{file.name}: GGUF metadata has no tokenizer (no tokenizer.ggml.tokens)")
    if data.model == "gpt2" and (data.pre or "default") in BYTE_LEVEL_SPLITS:
        return build_byte_level_tokenizer(data)
    if not torch_available():
        raise ValueError(f"{file.name}: its tokenizer (tokenizer.ggml.model {data.model!r}, pre {data.pre!r}) "
                         f"needs transformers' GGUF reader, which needs PyTorch (pip install torch); without "
                         f"it jaxalign builds byte-level BPE ('gpt2') tokenizers only")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
