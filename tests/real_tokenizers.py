"""Real tokenizers for the tests, built offline (test-only helper, not part of jaxalign).

- Llama-3 and Qwen2.5 byte-level BPE folders (``tokenizer.json`` + ``tokenizer_config.json`` +
  ``special_tokens_map.json``) equal, for encoding, to the published ones. The BPE ranks come
  from the ``quicktok-v1`` package's data files (``quicktok/data/llama3.vocab|special``,
  ``qwen3.vocab|special``: the exact published ranks) and are turned into a fast tokenizer by
  transformers' ``TikTokenConverter`` (which needs ``tiktoken``). Pre-tokenizers: Llama-3 uses the
  converter's default pattern (digits in groups of up to three); Qwen2 the same pattern with
  ``\\p{N}`` (one digit per piece) and an NFC normaliser. Llama-3's post-processor adds
  ``<|begin_of_text|>``; Qwen's adds nothing.
- A SentencePiece BPE model trained at test time (small vocabulary, byte fallback, digits split)
  for the Llama-2 / Mistral path, where a digit after a space carries ``▁``.

The conversion of 128k/151k ranks takes about a minute, so folders are cached on disk under
``~/.cache/jaxalign-tests/tokenizers/<name>-<key>`` (``JAXALIGN_TEST_CACHE`` overrides the root),
keyed by the quicktok, transformers and tokenizers versions and this file's build recipe
version. A folder is written under a temporary name and renamed, so a half-written cache is never
read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

RECIPE_VERSION = "1"

LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen2.5's added tokens end at <|file_sep|> (151664); Qwen3 adds <tool_response>.. </think>.
QWEN25_LAST_SPECIAL = 151664
# Qwen2.5 marks these added tokens as not special (they are written in tool calls).
QWEN25_NOT_SPECIAL = ("<tool_call>", "</tool_call>")


def _quicktok_data() -> Path:
    import quicktok

    return Path(quicktok.__file__).parent / "data"


def read_quicktok_ranks(name: str) -> dict[bytes, int]:
    """``{token bytes: rank}`` from ``quicktok/data/<name>.vocab`` (u32 count, then per token:
    u16 length, bytes, u32 rank; little-endian)."""
    data = (_quicktok_data() / f"{name}.vocab").read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset, ranks = 4, {}
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        token = data[offset + 2: offset + 2 + length]
        (rank,) = struct.unpack_from("<I", data, offset + 2 + length)
        ranks[token] = rank
        offset += 6 + length
    if offset != len(data) or sorted(ranks.values()) != list(range(count)):
        raise ValueError(f"quicktok {name}.vocab is not a dense rank table")
    return ranks


def read_quicktok_specials(name: str) -> dict[str, int]:
    """``{special token: id}`` from ``quicktok/data/<name>.special`` (u32 count, then per token:
    u32 id, u16 length, UTF-8 bytes)."""
    data = (_quicktok_data() / f"{name}.special").read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset, specials = 4, {}
    for _ in range(count):
        token_id, length = struct.unpack_from("<IH", data, offset)
        specials[data[offset + 6: offset + 6 + length].decode("utf-8")] = token_id
        offset += 6 + length
    if offset != len(data):
        raise ValueError(f"quicktok {name}.special has trailing bytes")
    return specials


def cache_root() -> Path:
    return Path(os.environ.get("JAXALIGN_TEST_CACHE", Path.home() / ".cache" / "jaxalign-tests"))


def _cache_key(*parts: str) -> str:
    import quicktok
    import tokenizers
    import transformers

    text = "|".join([RECIPE_VERSION, quicktok.__version__, transformers.__version__,
                     tokenizers.__version__, *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached_folder(name: str, build, *key_parts: str) -> Path:
    """``build(tmp_folder)`` once per cache key; returns the finished folder."""
    folder = cache_root() / "tokenizers" / f"{name}-{_cache_key(name, *key_parts)}"
    if (folder / "tokenizer_config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}-"))
    try:
        build(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first
            if not (folder / "tokenizer_config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert_tiktoken(ranks: dict[bytes, int], pattern: str, workdir: Path):
    """transformers' TikTokenConverter over ``ranks`` (written as a .tiktoken file)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    bpe_file = workdir / "ranks.tiktoken"
    with open(bpe_file, "w") as f:
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")
    backend = TikTokenConverter(vocab_file=str(bpe_file), pattern=pattern).converted()
    bpe_file.unlink()
    return backend


def _save(backend, folder: Path, specials: dict[str, int], *, bos: str | None, eos: str, pad: str | None,
          not_special: tuple[str, ...] = (), extra_config: dict | None = None) -> None:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    backend.add_tokens([AddedToken(t, normalized=False, special=t not in not_special)
                        for t, _ in sorted(specials.items(), key=lambda kv: kv[1])])
    for token, token_id in specials.items():
        if backend.token_to_id(token) != token_id:
            raise ValueError(f"special token {token!r} got id {backend.token_to_id(token)}, expected {token_id}")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad)
    tok.save_pretrained(str(folder))
    if extra_config:
        path = folder / "tokenizer_config.json"
        config = json.loads(path.read_text())
        config.update(extra_config)
        path.write_text(json.dumps(config, indent=2) + "\n")


def llama3_tokenizer_folder() -> Path:
    """A folder with Llama-3's tokenizer (128,000 ranks + 256 specials = 128,256 ids), no chat template.

    ``<|begin_of_text|>`` is BOS (added by the post-processor when ``add_special_tokens=True``),
    ``<|eot_id|>`` is EOS (as in the Instruct checkpoints), no pad token.
    """

    def build(folder: Path) -> None:
        from tokenizers import processors

        specials = read_quicktok_specials("llama3")
        backend = _convert_tiktoken(read_quicktok_ranks("llama3"), LLAMA3_PATTERN, folder)
        backend.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                special_tokens=[("<|begin_of_text|>", 128000)]),
        ])
        _save(backend, folder, specials, bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None)

    return _cached_folder("llama3", build, LLAMA3_PATTERN)


def qwen25_tokenizer_folder() -> Path:
    """A folder with Qwen2.5's tokenizer (151,643 ranks + added tokens 151643..151664), no chat template.

    No BOS; EOS ``<|im_end|>`` and pad ``<|endoftext|>`` as in the Instruct checkpoints; NFC
    normaliser; digits one per token.
    """

    def build(folder: Path) -> None:
        from tokenizers import normalizers

        specials = {t: i for t, i in read_quicktok_specials("qwen3").items() if i <= QWEN25_LAST_SPECIAL}
        backend = _convert_tiktoken(read_quicktok_ranks("qwen3"), QWEN2_PATTERN, folder)
        backend.normalizer = normalizers.NFC()
        _save(backend, folder, specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
              not_special=QWEN25_NOT_SPECIAL)

    return _cached_folder("qwen25", build, QWEN2_PATTERN)


SENTENCEPIECE_CORPUS = (
    "Please think of an ideal job, disregarding your present job, if you have one. "
    "In choosing an ideal job, how important would it be to you to have sufficient time for your "
    "personal or home life? Answer with one digit from 1 to 5. of utmost importance, very important, "
    "of moderate importance, of little importance, of very little or no importance. "
    "Question: Proposed answer: True False A. B. C. D. Answer with the letter of the correct option. "
    "How often do you feel nervous or tense? always, usually, sometimes, seldom, never. "
    "One can be a good manager without having a precise answer to every question. "
    "People from China, Japan, Germany and Brazil eat rice, bread and beans at 12 or 7 o'clock. "
    "Count 0 1 2 3 4 5 6 7 8 9 10 and 2024. "
    # so that "▁A".."▁D" are all single pieces, as in the Llama-2 and Mistral vocabularies (without
    # this line "D" after a space is "▁" + "D" at 400 pieces)
    "Denmark and Dubai: D. D. D. "
)


def sentencepiece_tokenizer_folder(vocab_size: int = 400) -> Path:
    """A Llama-2-style SentencePiece tokenizer trained at test time: BPE, byte fallback, digits
    split, ``add_dummy_prefix`` (so a digit after a space, or alone at the start of a text, is
    ``▁`` then the digit: no ``▁1`` piece exists, as in Llama 2 and Mistral), ``<s>``=1 /
    ``</s>``=2 / ``<unk>``=0. The letters ``▁A``..``▁D`` are single pieces (as in the real
    vocabularies); ``True``/``False`` are not (``▁``, ``T``, ``r``, ...).

    Saved as ``tokenizer.model`` + ``tokenizer.json`` (transformers' LlamaTokenizer conversion).
    """

    def build(folder: Path) -> None:
        import io

        import sentencepiece as spm
        from transformers import AutoTokenizer

        lines = [s.strip() + "." for s in SENTENCEPIECE_CORPUS.split(".") if s.strip()] * 20
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, split_digits=True, character_coverage=1.0, unk_id=0, bos_id=1,
            eos_id=2, pad_id=-1, add_dummy_prefix=True, normalization_rule_name="identity",
            num_threads=1, minloglevel=2,
        )
        (folder / "tokenizer.model").write_bytes(model.getvalue())
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True,
            "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        }))
        tok = AutoTokenizer.from_pretrained(str(folder))  # converts tokenizer.model
        tok.save_pretrained(str(folder))  # adds tokenizer.json

    return _cached_folder(f"sentencepiece{vocab_size}", build, SENTENCEPIECE_CORPUS)


# family -> (tokenizer folder builder, chat format name shipped as chat_template)
FAMILY_TOKENIZERS = {
    "llama3": (llama3_tokenizer_folder, "llama3"),
    "llama3.1": (llama3_tokenizer_folder, "llama3.1"),
    "llama3.2": (llama3_tokenizer_folder, "llama3.2"),
    "qwen2.5": (qwen25_tokenizer_folder, "qwen2.5"),
    "mistral": (sentencepiece_tokenizer_folder, "mistral"),
    "llama2": (sentencepiece_tokenizer_folder, None),
}


def write_tokenizer(folder: str | os.PathLike, family: str, *, chat_template: bool = True) -> Path:
    """Copy the family's tokenizer files into a checkpoint ``folder``; with ``chat_template``
    (default) its Instruct chat format (jaxalign's :data:`CHAT_FORMATS` entry) is written as
    ``chat_template`` in ``tokenizer_config.json``, as Instruct checkpoints ship it. Llama-3.1/3.2
    also get the Instruct EOS ``<|eot_id|>``; a base model (``chat_template=False``) keeps none."""
    from jaxalign.prompting.chat_formats import CHAT_FORMATS

    build, format_name = FAMILY_TOKENIZERS[family]
    source, folder = build(), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            shutil.copy(path, folder / path.name)
    if chat_template and format_name is not None:
        path = folder / "tokenizer_config.json"
        config = json.loads(path.read_text())
        config["chat_template"] = CHAT_FORMATS[format_name].template
        path.write_text(json.dumps(config, indent=2) + "\n")
    return folder
