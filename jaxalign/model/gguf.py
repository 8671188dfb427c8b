"""Read a GGUF file (llama.cpp, Ollama, LM Studio) into jaxalign's config, weights and tokenizer.

One job: turn a ``.gguf`` file into what :func:`jaxalign.model.load_model` builds a model from::

    model.gguf ──► read_gguf ──► GGUFFile: architecture, LlamaConfig, metadata,
      header (metadata,             tensors: HF name -> GGUFTensor (file offset, byte size,
      tensor infos)                 ggml type, HF shape), tensor type counts
                 ──► read_gguf_tensor(entry) ──► one float32 numpy tensor (HF layout (out, in))
                 ──► gguf_tokenizer(path) ──► transformers tokenizer with the file's chat template
                                              (built from the metadata: jaxalign.model.gguf_tokenizer)

The header is parsed with the ``gguf`` package's ``GGUFReader`` (ggml's own Python reader) and
the reader is dropped straight away: it memory-maps the whole file, so keeping it would bring
every page a read touches into this process. Each tensor is then read alone (``seek`` + ``read``
of its bytes) and dequantised with ``gguf.quants.dequantize`` into float32 (F32, F16, BF16,
Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, the K-quants and whatever else that function handles); the loader
casts it to the compute dtype or int8. Host memory beyond the model is a few copies of one tensor.

Layout facts this module undoes:

* GGUF lists a tensor's dimensions innermost first (``blk.0.ffn_gate.weight`` is ``[576 1536]``
  for HF's ``(1536, 576)``): the HF shape is the reversed GGUF shape.
* llama.cpp's converter permutes the rows of the q and k projections of ``llama`` models (its
  RoPE rotates adjacent pairs, HF's rotates the two halves of each head): within each head, HF
  row ``i * (hd / 2) + j`` (``i`` in 0..1) is stored at row ``2 * j + i``. :func:`unpermute_rows`
  puts them back for a family whose ``gguf_permuted_qk`` says so. ``qwen2`` files keep HF's
  layout (llama.cpp runs them with the "neox" RoPE).
* No ``output.weight``: the LM head is tied to the embedding.

Families: the registered family (:mod:`jaxalign.model.families`) that claims the file's
``general.architecture`` gives the tensor names (its ``gguf_names``, mapped to its ``hf_names``)
and its own config fields (its ``config_from_gguf``, after this module reads the ones every family
shares); :data:`SUPPORTED_GGUF_ARCHITECTURES` lists the claimed architectures. Any other is refused
from the metadata before a tensor is read.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxalign.model.config import LlamaConfig
from jaxalign.model.families.base import Family, family_for_gguf_architecture
from jaxalign.model.gguf_tokenizer import GGUFTokenizerData, read_tokenizer_metadata, tokenizer_from_metadata

# Metadata arrays that are large and only the tokenizer reads (kept out of GGUFFile.metadata).
_TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                     "tokenizer.ggml.scores")
_ROPE_FREQS = "rope_freqs.weight"   # Llama 3.1+: per-frequency RoPE divisors instead of metadata
# transformers' defaults for Llama 3.1/3.2 "llama3" RoPE scaling (every published file uses them).
_LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def __getattr__(name: str) -> Any:
    if name == "SUPPORTED_GGUF_ARCHITECTURES":  # general.architecture -> the models it covers (registry)
        from jaxalign.model.families.base import get, names

        return {arch: family.gguf_description or family.description
                for family in map(get, names()) for arch in family.gguf_architectures}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file: where its bytes are and what they become.

    ``name`` is the HF name it maps to (its GGUF name when it maps to none), ``shape`` the HF
    shape (the GGUF dimensions reversed), ``dtype`` what :func:`read_gguf_tensor` returns
    (float32), ``order`` its rank in the file (sequential reads), ``unpermute_heads`` the head
    count whose llama.cpp row permutation is undone (``None``: none applied).
    """

    file: Path
    name: str
    gguf_name: str
    ggml_type: int
    type_name: str
    offset: int       # absolute byte offset of the data in the file
    nbytes: int
    shape: tuple[int, ...]
    order: int
    unpermute_heads: int | None = None
    dtype: np.dtype = np.dtype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class GGUFFile:
    """A parsed GGUF header: architecture, config, metadata and the tensors by HF name.

    ``metadata`` holds every key-value pair except the tokenizer's vocabulary arrays
    (:data:`_TOKENIZER_ARRAYS`); ``tensor_types`` counts the tensors per ggml type
    (e.g. ``{"Q4_1": 210, "Q8_0": 1, "F32": 61}``); ``data_start`` is where tensor data begins
    (everything before it is metadata and tensor infos); ``tokenizer`` the tokenizer metadata
    (vocabulary arrays included; ``None`` when the file has none).
    """

    path: Path
    architecture: str
    config: LlamaConfig
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    tensor_types: dict[str, int]
    data_start: int
    size: int
    tokenizer: GGUFTokenizerData | None = None


def find_gguf(path: str | os.PathLike) -> Path | None:
    """The GGUF file ``path`` names: a ``.gguf`` file, or a folder holding exactly one ``.gguf`` and no safetensors.

    ``None`` when ``path`` is neither (a safetensors folder, a Hub id, ...). A folder holding
    several ``.gguf`` files and no safetensors is a ``ValueError`` naming them (pass one).
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        raise ValueError(f"folder {str(path)!r} holds {len(found)} GGUF files "
                         f"({', '.join(p.name for p in found)}); pass the one to load")
    return found[0] if found else None


def _unreadable(path: Path, reason: str | None = None) -> ValueError:
    return ValueError(f"{path} is not a readable GGUF file (truncated or corrupt?)" + (f": {reason}" if reason else ""))


def _metadata(reader: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in _TOKENIZER_ARRAYS:
            out[key + ".length"] = len(field.data)
            continue
        value = field.contents()
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


@functools.lru_cache(maxsize=8)
def _read_header(path: str, size: int, mtime_ns: int) -> GGUFFile:
    import gguf

    file = Path(path)
    try:
        reader = gguf.GGUFReader(path, "r")
        metadata = _metadata(reader)
        tokenizer = read_tokenizer_metadata(reader, file)
        infos = [(t.name, int(t.tensor_type), t.tensor_type.name, int(t.data_offset), int(t.n_bytes),
                  tuple(int(n) for n in t.shape)) for t in reader.tensors]
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, EOFError) as error:
        raise _unreadable(file) from None  # the reader's own message (a numpy reshape, ...) says nothing more
    finally:
        reader = None  # drop the memory map
    architecture = metadata.get("general.architecture")
    try:
        family = family_for_gguf_architecture(architecture)
    except ValueError as error:
        raise ValueError(f"{file.name}: {error}") from None
    if not infos:
        raise _unreadable(file, "it lists no tensors")
    end = max(offset + nbytes for _, _, _, offset, nbytes, _ in infos)
    if end > size:
        raise _unreadable(file, f"its tensors end at byte {end:,} but the file has {size:,} bytes")
    _check_types(file, infos)
    names = {name for name, *_ in infos}
    config = _config(file, architecture, family, metadata, names,
                     rope_freqs=_rope_freqs(file, infos) if _ROPE_FREQS in names else None)
    permuted = {"q_proj": config.num_attention_heads, "q_bias": config.num_attention_heads,
                "k_proj": config.num_key_value_heads, "k_bias": config.num_key_value_heads}
    tensors: dict[str, GGUFTensor] = {}
    types: dict[str, int] = {}
    for order, (name, ggml_type, type_name, offset, nbytes, gguf_shape) in enumerate(infos):
        types[type_name] = types.get(type_name, 0) + 1
        if name == _ROPE_FREQS:
            continue  # read into the config above
        found = family.gguf_names.lookup(name)
        hf_name = name if found is None else family.hf_names.name(*found)  # unmapped: reported as unexpected
        heads = permuted.get(found[0]) if found is not None and family.gguf_permuted_qk else None
        tensors[hf_name] = GGUFTensor(file, hf_name, name, ggml_type, type_name, offset, nbytes,
                                      gguf_shape[::-1], order, heads)
    return GGUFFile(file, architecture, config, metadata, tensors, dict(sorted(types.items())),
                    min(offset for _, _, _, offset, _, _ in infos), size, tokenizer)


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parse a GGUF file's header (metadata, tensor infos); no tensor data is read.

    Cached per (path, size, modification time), so the loader, the fingerprint and the
    hidden-size peek parse a file once.

    Raises:
      ValueError: not a readable GGUF file (truncated or corrupt: one line naming the file), an
        architecture no registered family claims (the claimed ones listed), a tensor type the
        ``gguf`` package cannot dequantise, or metadata jaxalign's model cannot run.
      FileNotFoundError: no such file.
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no GGUF file at {str(path)!r}")
    stat = file.stat()
    return _read_header(str(file), stat.st_size, stat.st_mtime_ns)


def gguf_hidden_size(path: str | os.PathLike) -> int:
    """The model width (``{arch}.embedding_length``) of a GGUF file, from its header alone."""
    return read_gguf(path).config.hidden_size


def _check_types(file: Path, infos: list[tuple]) -> None:
    """Refuse (before any tensor is read) a ggml type that ``gguf.quants.dequantize`` cannot handle."""
    import gguf
    from gguf.quants import dequantize

    for type_name, ggml_type in sorted({(info[2], info[1]) for info in infos}):
        qtype = gguf.GGMLQuantizationType(ggml_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        try:
            dequantize(np.zeros((1, type_size), np.uint8), qtype)
        except NotImplementedError:
            example = next(info[0] for info in infos if info[1] == ggml_type)
            raise ValueError(f"{file.name}: tensor {example!r} has ggml type {type_name}, which the gguf "
                             f"package cannot dequantise") from None


def _rope_freqs(file: Path, infos: list[tuple]) -> np.ndarray:
    info = next(i for i in infos if i[0] == _ROPE_FREQS)
    entry = GGUFTensor(file, _ROPE_FREQS, _ROPE_FREQS, info[1], info[2], info[3], info[4], info[5][::-1], 0)
    return read_gguf_tensor(entry)


def _config(file: Path, arch: str, family: Family, meta: dict[str, Any], names: set[str],
            rope_freqs: np.ndarray | None) -> LlamaConfig:
    """A :class:`LlamaConfig` from the ``{arch}.*`` metadata (and ``rope_freqs.weight`` for Llama 3.1+).

    The fields every family reads the same way are read here; ``family.config_from_gguf`` adds
    its own (biases, ...) and builds the config.
    """
    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        return default if value is None else value

    required = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")
    missing = [f"{arch}.{k}" for k in required if get(k) is None]
    if missing:
        raise ValueError(f"{file.name}: GGUF metadata lacks {', '.join(missing)}")
    if int(get("expert_count", 0) or 0) > 0:
        raise ValueError(f"{file.name}: a mixture-of-experts model ({arch}.expert_count = "
                         f"{get('expert_count')}); jaxalign loads dense decoders only")
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", hidden // heads))
    if int(get("attention.value_length", head_dim)) != head_dim:
        raise ValueError(f"{file.name}: key and value head sizes differ "
                         f"({head_dim} vs {get('attention.value_length')}); unsupported")
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise ValueError(f"{file.name}: partial rotary embedding ({arch}.rope.dimension_count = "
                         f"{get('rope.dimension_count')}, head size {head_dim}); unsupported")
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise ValueError(f"{file.name}: unsupported RoPE scaling {scaling!r} ({arch}.rope.scaling.type)")
    vocab = get("vocab_size") or meta.get("tokenizer.ggml.tokens.length")
    if vocab is None:
        raise ValueError(f"{file.name}: GGUF metadata gives no vocabulary size")
    max_positions = int(get("context_length", 8192))
    fields: dict[str, Any] = {}
    theta = float(get("rope.freq_base", 10_000.0))
    if rope_freqs is not None:
        fields.update(_llama3_rope(file, rope_freqs, head_dim, theta))
    fields.update(
        vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")), num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv", heads)), head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)), rope_theta=theta,
        max_position_embeddings=max_positions,
        tie_word_embeddings=family.gguf_names.name("lm_head") not in names)
    return family.config_from_gguf(fields, meta, frozenset(names))


def _llama3_rope(file: Path, divisors: np.ndarray, head_dim: int, theta: float) -> dict[str, Any]:
    """The ``llama3`` RoPE scaling whose per-frequency divisors ``rope_freqs.weight`` holds.

    llama.cpp stores Llama 3.1+'s scaling as the divisor of each inverse frequency; the published
    models all use factor = the largest divisor with transformers' defaults for the rest
    (:data:`_LLAMA3_ROPE`). Those parameters are checked to reproduce every divisor; other
    divisors are refused.
    """
    fields = dict(rope_type="llama3", rope_factor=float(np.max(divisors)),
                  rope_low_freq_factor=_LLAMA3_ROPE["low_freq_factor"],
                  rope_high_freq_factor=_LLAMA3_ROPE["high_freq_factor"],
                  rope_original_max_position_embeddings=_LLAMA3_ROPE["original_max_position_embeddings"])
    probe = LlamaConfig(vocab_size=1, hidden_size=head_dim, intermediate_size=1, num_hidden_layers=1,
                        num_attention_heads=1, num_key_value_heads=1, head_dim=head_dim, rope_theta=theta,
                        **fields)
    base = dataclasses.replace(probe, rope_type="default").rope_inverse_frequencies()
    implied = base / probe.rope_inverse_frequencies()   # (head_dim // 2,)
    if divisors.shape != implied.shape or not np.allclose(divisors, implied, rtol=1e-3):
        raise ValueError(f"{file.name}: {_ROPE_FREQS} holds RoPE divisors that no llama3 scaling with "
                         f"low/high frequency factors 1/4 and original context 8192 reproduces; unsupported")
    return fields


def unpermute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: ``(heads * hd, ...)`` GGUF rows -> HF rows (same shape).

    Within each head llama.cpp stores HF row ``i * (hd // 2) + j`` at row ``2 * j + i``.
    """
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def read_gguf_tensor(entry: GGUFTensor) -> np.ndarray:
    """Read one tensor's bytes from its file and dequantise them: float32 numpy in HF shape.

    The file is opened for this tensor alone (no memory map outlives the call); the llama.cpp
    q/k permutation is undone where ``entry.unpermute_heads`` says one was applied.
    """
    import gguf
    from gguf.quants import dequantize

    qtype = gguf.GGMLQuantizationType(entry.ggml_type)
    with open(entry.file, "rb") as handle:
        handle.seek(entry.offset)
        raw = handle.read(entry.nbytes)
    if len(raw) != entry.nbytes:
        raise _unreadable(entry.file, f"tensor {entry.gguf_name!r} is cut short "
                                      f"({len(raw):,} of {entry.nbytes:,} bytes)")
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    row = entry.shape[-1] if entry.shape else 1      # GGUF's innermost dimension
    data = np.frombuffer(raw, np.uint8).reshape(-1, row // block * type_size)
    values = dequantize(data, qtype).reshape(entry.shape).astype(np.float32, copy=False)  # HF shape
    if entry.unpermute_heads is not None:
        values = unpermute_rows(values, entry.unpermute_heads)
    return values


def gguf_tokenizer(path: str | os.PathLike) -> Any:
    """The file's tokenizer and chat template as a transformers tokenizer, from its metadata.

    Byte-level BPE (``tokenizer.ggml.model`` ``gpt2``) is built without PyTorch; other tokenizer
    models need transformers' GGUF reader (and torch): see
    :func:`jaxalign.model.gguf_tokenizer.tokenizer_from_metadata`.
    """
    header = read_gguf(path)
    return tokenizer_from_metadata(header.tokenizer, header.path)
