"""Content fingerprints: what a run was made of, as small JSON-able dicts of hex digests.

A run is identified by *content*, not by names: the same model path with edited weights, a
wording file edited under the same name, other constants or another target must not pass for the
run that was checkpointed. Every function here returns a flat-ish dict of ``str -> str | int``
(SHA-256 hex digests, sizes) that :func:`jaxalign.optimize.checkpoint.flat_differences` can
compare key by key, so a refused resume names exactly what changed.

```
 model folder ──► model_fingerprint ─► {"config", "tokenizer", "chat_template", "weights", "dtype"}
   config.json, tokenizer files            exact SHA-256 of each small file
   *.safetensors                           per-file size + header + sampled tensor bytes
 model.gguf ─────► model_fingerprint ─► weights: size + exact header (metadata, tensor infos)
                                           + sampled tensor bytes + ggml types (quantisation)
 in-memory model (tiny-random) ─────────► {"config", "tokenizer", "chat_template", "weights"}
                                           weights: sampled elements of every parameter
 Instrument ─► instrument_fingerprint ─► {"items", "formulas", "constants", "dimensions"}
 Target ─────► target_fingerprint ─────► {"values"}                (exact, NaN = missing)
 PromptBatch ► prompt_fingerprint ─────► {"token_ids"}             (prefix/suffix ids, masks, answers)
 SoftPromptSpace ► space_fingerprint ──► {"p0", "basis", "shape"}  (exact bytes)
```

Costs and limits.

* **Weights on disk** (:func:`weights_fingerprint`): every ``*.safetensors`` file's size and the
  SHA-256 of its JSON header (names, dtypes, shapes, offsets: exact), plus, per tensor, a fixed
  sample of its bytes read through the header's offsets: the first and last
  :data:`EDGE_BYTES` bytes and :data:`SAMPLE_CHUNKS` chunks of :data:`CHUNK_BYTES` bytes at evenly
  spaced fixed positions. That is at most ~1.5 KiB per tensor (about 0.5 MiB for the 291
  tensors of Llama-3-8B), so an 8B checkpoint is fingerprinted in well under a second on a local
  disk. It **cannot see** a change confined to unsampled bytes of a tensor whose size, dtype and
  shape are unchanged (e.g. one fine-tuned row in the middle of a matrix, or a single flipped
  weight). Re-saving, re-quantising, fine-tuning all layers or swapping checkpoints changes
  sampled bytes in practice. ``full=True`` hashes every byte instead (minutes for 8B).
* **In-memory weights** (:func:`params_fingerprint`, for a model without a folder such as
  ``tiny-random``): the dtype, shape and :data:`PARAM_SAMPLES` fixed, evenly spaced elements of
  every parameter; the same blind spot for unsampled elements.
* Everything else (config, tokenizer files, chat template, items, formulas, constants, target,
  token ids, p0 and the subspace basis) is hashed exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

EDGE_BYTES = 256       # bytes read at the start and at the end of every tensor
SAMPLE_CHUNKS = 8      # chunks read at evenly spaced interior positions
CHUNK_BYTES = 128      # bytes per interior chunk
PARAM_SAMPLES = 64     # elements sampled from every in-memory parameter

# Small files whose exact content matters to a run (hashed whole when present).
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def sha256_hex(*parts: bytes | str) -> str:
    """SHA-256 hex digest of the parts, each length-prefixed (so ``("ab", "c") != ("a", "bc")``)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


def json_digest(value: Any) -> str:
    """SHA-256 of a JSON-able value in canonical form (sorted keys, no whitespace)."""
    return sha256_hex(json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True))


def array_digest(array: Any) -> str:
    """Exact SHA-256 of an array's dtype, shape and bytes (C order)."""
    array = np.ascontiguousarray(np.asarray(array))
    return sha256_hex(array.dtype.str, json.dumps(list(array.shape)), array.tobytes())


# ------------------------------------------------------------------------------ weights on disk
def _read_at(handle: Any, offset: int, size: int) -> bytes:
    """Read ``size`` bytes at ``offset`` (every weight byte the fingerprint reads goes through here)."""
    handle.seek(offset)
    return handle.read(size)


def sample_ranges(nbytes: int) -> list[tuple[int, int]]:
    """The fixed ``(offset, size)`` byte ranges sampled from a tensor of ``nbytes`` bytes.

    The whole tensor when it is small (at most the sample budget); otherwise its first and last
    :data:`EDGE_BYTES` bytes and :data:`SAMPLE_CHUNKS` chunks of :data:`CHUNK_BYTES` bytes at
    evenly spaced positions in between. Depends on ``nbytes`` only.
    """
    budget = 2 * EDGE_BYTES + SAMPLE_CHUNKS * CHUNK_BYTES
    if nbytes <= budget:
        return [(0, nbytes)]
    ranges = [(0, EDGE_BYTES)]
    inner = nbytes - 2 * EDGE_BYTES - CHUNK_BYTES
    for i in range(1, SAMPLE_CHUNKS + 1):
        ranges.append((EDGE_BYTES + (inner * i) // (SAMPLE_CHUNKS + 1), CHUNK_BYTES))
    ranges.append((nbytes - EDGE_BYTES, EDGE_BYTES))
    return ranges


def _safetensors_files(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        with open(index) as handle:
            return sorted(set(json.load(handle).get("weight_map", {}).values()))
    return sorted(p.name for p in folder.glob("*.safetensors"))


def weights_fingerprint(folder: str | os.PathLike, *, full: bool = False) -> dict[str, Any]:
    """Fingerprint of a checkpoint's ``*.safetensors`` weights (see the module docstring).

    Args:
      folder: the checkpoint folder (with ``model.safetensors.index.json`` or ``*.safetensors``).
      full: hash every byte of every file instead of a sample (exact, slow for big models).

    Returns:
      ``{"files": {name: size in bytes}, "sample": sha256 hex, "sampled": "sample" | "full"}``.
    """
    folder = Path(folder)
    files = _safetensors_files(folder)
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {str(folder)!r}")
    digest = hashlib.sha256()
    sizes: dict[str, int] = {}
    for name in files:
        path = folder / name
        size = path.stat().st_size
        sizes[name] = size
        digest.update(name.encode() + b"\0" + struct.pack("<Q", size))
        with open(path, "rb") as handle:
            if full:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
                continue
            prefix = _read_at(handle, 0, 8)
            if len(prefix) != 8:
                raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise ValueError(f"{path} is not a safetensors file (header length {header_len} > file size)")
            header_bytes = _read_at(handle, 8, header_len)
            digest.update(header_bytes)
            try:
                header = json.loads(header_bytes)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{path} has a corrupt safetensors header: {error}") from error
            data_start = 8 + header_len
            for tensor in sorted(k for k in header if k != "__metadata__"):
                begin, end = (int(o) for o in header[tensor]["data_offsets"])
                for offset, count in sample_ranges(end - begin):
                    digest.update(_read_at(handle, data_start + begin + offset, count))
    return {"files": sizes, "sample": digest.hexdigest(), "sampled": "full" if full else "sample"}


def gguf_weights_fingerprint(file: str | os.PathLike, *, full: bool = False) -> dict[str, Any]:
    """Fingerprint of a GGUF file (:mod:`jaxalign.model.gguf`), as :func:`weights_fingerprint` is of safetensors.

    The header (metadata: config, tokenizer, chat template; tensor names, types, shapes and
    offsets) is hashed exactly, each tensor's bytes are sampled with :func:`sample_ranges`
    (``full=True``: every byte of the file). The same blind spot as for safetensors.

    Returns:
      ``{"files": {name: size}, "format": "gguf", "tensor_types": {ggml type: count}, "sample":
      sha256 hex, "sampled": "sample" | "full"}``: the file and its quantisation types are recorded.
    """
    from jaxalign.model.gguf import read_gguf

    path = Path(file)
    header = read_gguf(path)
    digest = hashlib.sha256()
    digest.update(path.name.encode() + b"\0" + struct.pack("<Q", header.size))
    with open(path, "rb") as handle:
        if full:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        else:
            digest.update(_read_at(handle, 0, header.data_start))
            for entry in sorted(header.tensors.values(), key=lambda e: e.offset):
                for offset, count in sample_ranges(entry.nbytes):
                    digest.update(_read_at(handle, entry.offset + offset, count))
    return {"files": {path.name: header.size}, "format": "gguf", "tensor_types": dict(header.tensor_types),
            "sample": digest.hexdigest(), "sampled": "full" if full else "sample"}


def _file_digests(folder: Path, names: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in names:
        path = folder / name
        if path.is_file():
            out[name] = sha256_hex(path.read_bytes())
    return out


# ------------------------------------------------------------------------------ in-memory parts
def params_fingerprint(params: Any) -> str:
    """Digest of a pytree of weights: every leaf's path, dtype, shape and fixed sampled elements.

    :data:`PARAM_SAMPLES` evenly spaced elements of each flattened leaf (all of a small leaf) are
    gathered on the device, so only a few numbers per parameter reach the host.
    """
    import jax
    import jax.numpy as jnp

    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        size = math.prod(leaf.shape)
        idx = np.unique(np.linspace(0, max(size - 1, 0), num=min(PARAM_SAMPLES, size)).astype(np.int64))
        sample = np.asarray(jnp.ravel(leaf)[idx]) if size else np.zeros((0,), leaf.dtype)
        digest.update(sha256_hex(jax.tree_util.keystr(path), np.dtype(leaf.dtype).str,
                                 json.dumps(list(leaf.shape)), sample.tobytes()).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, str]:
    """Digests of a tokenizer object: its vocabulary and special tokens, and its chat template."""
    if tokenizer is None:
        return {"tokenizer": "none", "chat_template": "none"}
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    template = getattr(tokenizer, "chat_template", None)
    return {
        "tokenizer": json_digest({"class": type(tokenizer).__name__, "vocab": vocab, "special": special}),
        "chat_template": json_digest(template),
    }


def model_fingerprint(lm: Any, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """Fingerprint of a loaded model: config, tokenizer, chat template, weights and dtype.

    Args:
      lm: a :class:`jaxalign.model.LM`.
      folder: the checkpoint folder it was loaded from; default ``lm.source`` (set by
        :func:`jaxalign.load_model`). Without a folder (``tiny-random``, a model built in memory) the weights
        are fingerprinted from memory (:func:`params_fingerprint`).

    Returns:
      ``{"config", "tokenizer", "chat_template", "dtype", "weights"}`` (and ``"quantize"`` for int8
      weights): the config digest is
      of the parsed config (plus ``config.json`` / ``generation_config.json`` when on disk), the
      tokenizer and template digests are of the tokenizer object in use (and its files when on
      disk), ``weights`` is :func:`weights_fingerprint` (on disk) or a params digest (in memory).
    """
    import dataclasses

    if folder is None:
        folder = getattr(lm, "source", None)
    config = lm.config
    config_value = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config)
    out: dict[str, Any] = {
        "config": json_digest(config_value),
        "dtype": str(np.dtype(lm.dtype)),
        **tokenizer_fingerprint(lm.tokenizer),
    }
    if getattr(lm, "quantize", None):  # int8 weights score differently from the files' floats
        out["quantize"] = lm.quantize
    if folder is None:
        out["weights"] = {"params": params_fingerprint(lm.params), "sampled": "memory"}
        return out
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() == ".gguf":  # one GGUF file: header + sampled tensors
        out["weights"] = gguf_weights_fingerprint(folder)
        return out
    out["config_files"] = _file_digests(folder, CONFIG_FILES)
    out["tokenizer_files"] = _file_digests(folder, TOKENIZER_FILES)
    out["chat_template_files"] = _file_digests(folder, CHAT_TEMPLATE_FILES)
    out["weights"] = weights_fingerprint(folder)
    return out


def model_digest(fingerprint: Mapping[str, Any]) -> str:
    """One digest for a whole model fingerprint (for soft-prompt metadata)."""
    return json_digest(dict(fingerprint))


def instrument_fingerprint(instrument: Any) -> dict[str, str]:
    """Exact digests of an :class:`~jaxalign.survey.Instrument`: item texts and labels, formulas, constants."""
    items = [[item.id, item.text, list(item.options)] for item in instrument.items]
    return {
        "items": json_digest(items),
        "formulas": array_digest(np.asarray(instrument.weights, np.float64)),
        "constants": array_digest(np.asarray(instrument.constants, np.float64)),
        "dimensions": json_digest(list(instrument.dimensions)),
    }


def target_fingerprint(target: Any) -> dict[str, str]:
    """Exact digest of a target's values (``(D,)``, NaN = missing) and dimension names."""
    values = np.asarray(getattr(target, "values", target), np.float64)
    dims = list(getattr(target, "dimensions", ()))
    return {"values": sha256_hex(array_digest(values), json.dumps(dims))}


def prompt_fingerprint(batch: Any) -> dict[str, str]:
    """Exact digest of the rendered prompts of a :class:`~jaxalign.prompting.PromptBatch`.

    Covers every token id and mask before and after the slot, the answer token ids and their
    order, the item ids and the slot: whatever the tokenizer, template or wording did, two runs
    feed the model the same tokens iff these digests match.
    """
    parts = [array_digest(getattr(batch, name)) for name in
             ("prefix_ids", "prefix_mask", "suffix_ids", "suffix_mask", "answer_ids", "answer_order")]
    return {"token_ids": sha256_hex(*parts, json.dumps(list(batch.item_ids)), str(batch.slot))}


def space_fingerprint(space: Any) -> dict[str, Any]:
    """Exact digests of a :class:`~jaxalign.softprompt.SoftPromptSpace`: p0 and the basis A."""
    p0 = np.asarray(space.p0, np.float32)
    basis = None if space.basis is None else np.asarray(space.basis, np.float32)
    return {
        "shape": [int(s) for s in p0.shape] + ([] if basis is None else [int(basis.shape[0])]),
        "p0": array_digest(p0),
        "basis": "full space" if basis is None else array_digest(basis),
    }


def targets_fingerprint(targets: Any) -> list[dict[str, Any]]:
    """The ``targets`` entry of a checkpoint's fingerprint: each target's name and values (NaN
    written as null), as ``Problem.fingerprint`` writes it and a resume compares it."""
    def num(v: float) -> float | None:
        return None if np.isnan(v) else float(v)

    return [{"name": t.name, "dims": [num(v) for v in np.asarray(t.values, np.float64)]} for t in targets]
