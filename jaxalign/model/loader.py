"""Load a Hugging Face checkpoint (safetensors) into the JAX :class:`Llama`, without PyTorch.

Families: whichever :mod:`jaxalign.model.families` has registered (built in: Llama 2/3/3.1/3.2,
Qwen2/Qwen2.5 and Mistral, ``model_type`` ``llama``, ``qwen2``, ``mistral``). The family that
claims ``config.json``'s ``model_type`` reads the config (:meth:`LlamaConfig.from_hf`) and names
the tensors (its ``hf_names``); this module knows no family by name. A ``.gguf`` file (or a folder
holding one and no safetensors) is read by :mod:`jaxalign.model.gguf` into the same config and
streamed through the same buffers, one dequantised tensor at a time. ``config.json`` is read and
checked first, so an unsupported ``model_type`` is refused before any weight is read (for a Hub
id: before any weight is downloaded).

Memory: the loader never holds two copies of the model in host memory. The ``safetensors``
library (``safe_open``, numpy framework) lists each file's tensors from its header, then the
tensors are streamed one at a time: the file is opened, ONE tensor read into a numpy array, the
file closed again (its mapped pages leave this process), and the tensor copied to the device and
written (cast to the target dtype, linear weights transposed from HF's ``(out, in)`` to
``(in, out)``) into a preallocated stacked ``(L, ...)`` device buffer by a jitted update that
donates the buffer (in place). Peak host memory beyond the finished model is therefore a few
copies of one tensor (on a CPU backend, where device memory is host memory) - for Llama-3-8B in
bfloat16 about 16 GB plus ~1-2 GB for the largest tensor (the embedding). bfloat16 tensors come
through numpy as ``ml_dtypes.bfloat16``: safetensors asks numpy for the dtype name ``"bfloat16"``,
which numpy knows once ``ml_dtypes`` (a jax dependency) is imported, as this module does.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes  # registers numpy's "bfloat16" dtype name, which safetensors' numpy reader uses
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open

from jaxalign.model.config import LlamaConfig
from jaxalign.model.families.base import TensorNames, get
from jaxalign.model.llama import LM, Llama, _canonical_dtype, layer_param_shapes
from jaxalign.model.quantize import QUANTIZED_LAYER_PARAMS, Int8Weight, check_quantize, quantize_int8

TINY_RANDOM = "tiny-random"

_SAFETENSORS_DTYPES = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F64": np.dtype(np.float64),
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_HUB_PATTERNS = [
    "config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "chat_template.jinja", "chat_template.json",
]
@dataclass(frozen=True)
class _TensorEntry:
    """One tensor of a safetensors file, as its header describes it."""

    file: Path
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    order: int   # rank of the tensor's data offset in its file (sequential reads)


@dataclass(frozen=True)
class _Target:
    """Where one checkpoint tensor goes: our parameter path, layer index (None if not stacked), its
    shape in the checkpoint, whether it is stored ``(out, in)``."""

    param: tuple[str, ...]
    layer: int | None
    hf_shape: tuple[int, ...]
    transpose: bool


def peek_hidden_size(model: str | os.PathLike) -> int | None:
    """The hidden size ``d`` of the model :func:`load_model` would load from ``model``, read
    without touching a weight: ``"tiny-random"``'s preset shape, a checkpoint folder's
    ``config.json``, a GGUF file's metadata, or a Hub id's ``config.json`` (from the local Hugging
    Face cache, else downloaded alone, as :func:`load_model` does first).

    Returns ``None`` when it cannot be told this way (no such folder, no or unreadable
    ``config.json``, no ``hidden_size`` in it, a download that fails): the caller then checks
    against the loaded model instead. Never raises.
    """
    name = str(model)
    if name == TINY_RANDOM:
        from jaxalign.model.tiny import tiny_config

        return tiny_config(1).hidden_size
    try:  # a GGUF file (or a folder holding one): its metadata, no tensor read
        from jaxalign.model.gguf import find_gguf, gguf_hidden_size

        gguf_file = find_gguf(name)
        if gguf_file is not None:
            return gguf_hidden_size(gguf_file)
    except Exception:  # unreadable, several GGUF files: load_model says why
        return None
    path = Path(name).expanduser()
    config_file: Path | None = None
    if path.is_dir():
        config_file = path / "config.json"
    elif not path.exists() and name.count("/") == 1 and not name.startswith(("/", ".", "~")):
        try:  # a Hub id: the cached config.json, else that one small file
            from huggingface_hub import hf_hub_download, try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            config_file = Path(cached if isinstance(cached, str) else hf_hub_download(name, "config.json"))
        except Exception:  # offline, no such repo, gated: load_model says why
            return None
    if config_file is None or not config_file.is_file():
        return None
    try:
        value = json.loads(config_file.read_text()).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def auto_dtype(model: str | os.PathLike, mesh: Any = None) -> str:
    """What ``dtype="auto"`` (the CLI's ``--dtype auto``) means for ``model`` on this backend.

    ``"float32"`` on a CPU backend (XLA:CPU has no fast bfloat16 matrix multiply, so float32 is
    both faster and more exact there; see benchmarks/RESULTS.md) and for ``tiny-random`` (a test
    model); ``"bfloat16"`` on GPUs and TPUs. With a mesh, its devices' platform decides.
    """
    if str(model) == TINY_RANDOM:
        return "float32"
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    return "float32" if platform == "cpu" else "bfloat16"


def load_model(path_or_hub_id: str | os.PathLike, dtype: Any = jnp.bfloat16, *,
               revision: str | None = None, seed: int = 0, tokenizer: Any = None,
               mesh: Any = None, quantize: str | None = None) -> LM:
    """Load a checkpoint of a registered family (Llama, Qwen2/Qwen2.5, Mistral, ...) as a frozen :class:`LM`.

    Args:
      path_or_hub_id: a local folder with ``config.json`` and ``*.safetensors`` (single or sharded
        with ``model.safetensors.index.json``); a Hugging Face Hub id ``"owner/name"`` (downloaded
        with ``huggingface_hub.snapshot_download``, config/tokenizer/safetensors files only); or
        ``"tiny-random"``, the offline random test model (:mod:`jaxalign.model.tiny`); or a GGUF
        file (GGUF ``llama`` / ``qwen2``; also a folder holding one ``.gguf`` and no safetensors):
        config, tokenizer and chat template from its metadata, tensors dequantised
        (:mod:`jaxalign.model.gguf`); ``lm.source`` is then the file.
      dtype: ``jnp.bfloat16`` (default) / ``jnp.float32`` or the names ``"bfloat16"`` / ``"float32"``,
        or ``"auto"`` (:func:`auto_dtype`: float32 on a CPU backend, bfloat16 on GPUs and TPUs);
        parameters and activations use it, logits are float32.
      revision: Hub revision (branch, tag or commit) for a Hub id.
      seed: random seed of the ``"tiny-random"`` weights (ignored otherwise).
      tokenizer: optional tokenizer object, or a folder / Hub id to load one from with
        ``AutoTokenizer``; default: the checkpoint's own (``None``, with a warning, if it has none).
      mesh: a :class:`jax.sharding.Mesh` from :func:`jaxalign.parallel.make_mesh`: each weight is
        placed straight onto its shards over the ``"model"`` axis as it is read (a model larger
        than one device loads; none is ever whole on one device). A model whose heads, KV heads,
        MLP size or vocabulary does not divide by the model axis is refused (ValueError).
      quantize: ``None`` (default) or ``"int8"``: the decoder's linear weights are stored in int8
        with one scale per output channel, quantised as each tensor is read (the host-memory bound
        above holds); embedding, LM head and norms stay in ``dtype``, which is also the compute
        dtype. See :mod:`jaxalign.model.quantize`.

    Raises:
      ValueError: bad dtype, unsupported ``model_type`` or GGUF architecture (the message lists
        the supported ones; raised before any weight is read), unreadable (truncated) GGUF file, unsupported architecture or config,
        wrong/missing/unexpected tensor, unsupported tensor dtype, unreadable safetensors file
        (messages name the file and tensor).
      FileNotFoundError: no such folder, no ``config.json``, no safetensors weights.
    """
    if isinstance(dtype, str) and dtype == "auto":
        dtype = auto_dtype(path_or_hub_id, mesh)
    dtype = _canonical_dtype(dtype)
    quantize = check_quantize(quantize)
    if str(path_or_hub_id) == TINY_RANDOM:
        from jaxalign.model.tiny import tiny_model

        return tiny_model(dtype=dtype, seed=seed, mesh=mesh, quantize=quantize)

    from jaxalign.model.gguf import find_gguf

    gguf_file = find_gguf(path_or_hub_id)
    if gguf_file is not None:
        return _load_gguf(path_or_hub_id, gguf_file, dtype, tokenizer=tokenizer, mesh=mesh,
                          quantize=quantize, revision=revision)
    # config.json alone first: an unsupported model is refused before any weight is read or downloaded
    folder = _resolve_folder(path_or_hub_id, revision, patterns=["config.json"])
    config = LlamaConfig.from_hf(_read_config_json(folder))
    if not Path(path_or_hub_id).expanduser().is_dir():  # a Hub id: now the weights and tokenizer
        folder = _resolve_folder(path_or_hub_id, revision)
    tensors = _index_safetensors(folder)
    targets = _expected_tensors(config)
    _check_tensors(tensors, targets, get(config.model_type).hf_names)
    if mesh is not None:
        from jaxalign.parallel import check_model_divisible

        check_model_divisible(config, mesh)
    model = _build_model(config, dtype, tensors, targets, mesh, quantize)

    if tokenizer is None:
        tokenizer = _load_tokenizer(folder)
    elif isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), revision=revision)
    return LM(name=str(path_or_hub_id), config=config, model=model, tokenizer=tokenizer,
              source=str(folder.resolve()))


def _load_gguf(name: str | os.PathLike, file: Path, dtype: np.dtype, *, tokenizer: Any, mesh: Any,
               quantize: str | None, revision: str | None) -> LM:
    """``load_model`` for a GGUF file (:mod:`jaxalign.model.gguf`): header, checks, streamed tensors.

    The header is parsed and checked (architecture, tensor names and shapes, mesh) before any
    tensor is read; the tensors then stream through :func:`_build_model` one at a time, as
    safetensors weights do. ``lm.source`` is the file, which the fingerprint reads.
    """
    from jaxalign.model.gguf import gguf_tokenizer, read_gguf, read_gguf_tensor

    header = read_gguf(file)
    config = header.config
    targets = _expected_tensors(config)
    _check_tensors(header.tensors, targets, get(config.model_type).hf_names)
    if mesh is not None:
        from jaxalign.parallel import check_model_divisible

        check_model_divisible(config, mesh)
    model = _build_model(config, dtype, header.tensors, targets, mesh, quantize, read=read_gguf_tensor)
    if tokenizer is None:
        tokenizer = gguf_tokenizer(header.path)
    elif isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), revision=revision)
    return LM(name=str(name), config=config, model=model, tokenizer=tokenizer, source=str(header.path))


# -- locating files ---------------------------------------------------------------------------

def _resolve_folder(path_or_hub_id: str | os.PathLike, revision: str | None,
                    patterns: list[str] = _HUB_PATTERNS) -> Path:
    """The local folder, or the Hub snapshot folder holding the files that match ``patterns``."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{str(path)!r} is a file; pass the checkpoint folder that holds config.json")
    text = str(path_or_hub_id)
    if "/" not in text or text.startswith(("/", ".", "~")) or text.count("/") != 1:
        raise FileNotFoundError(
            f"{text!r} is not an existing folder, not a Hub id 'owner/name', and not {TINY_RANDOM!r}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=patterns))
    except Exception as error:  # network, auth, missing repo: one clear message
        raise FileNotFoundError(
            f"{text!r} is not an existing folder, and downloading it as a Hugging Face Hub id failed: "
            f"{type(error).__name__}: {error}") from error


def _read_config_json(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in checkpoint folder {str(folder)!r}")
    with open(config_path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from error


def _load_tokenizer(folder: Path) -> Any:
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        warnings.warn(
            f"checkpoint folder {str(folder)!r} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
            "lm.tokenizer is None (pass tokenizer=... to load_model to attach one)", stacklevel=3)
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


# -- safetensors headers ----------------------------------------------------------------------

def _unreadable(file: Path, error: Exception) -> ValueError:
    return ValueError(f"{file} is not a readable safetensors file (truncated or corrupt?): {error}")


def _read_header(file: Path) -> dict[str, _TensorEntry]:
    """List one safetensors file's tensors (names, dtypes, shapes) with ``safe_open``; no data is read."""
    try:
        with safe_open(str(file), framework="np") as handle:
            names = getattr(handle, "offset_keys", handle.keys)()  # data order where available
            described = {name: handle.get_slice(name) for name in names}
            infos = {name: (part.get_dtype(), tuple(int(n) for n in part.get_shape()))
                     for name, part in described.items()}
    except SafetensorError as error:
        raise _unreadable(file, error) from error
    entries = {}
    for order, (name, (dtype_code, shape)) in enumerate(infos.items()):
        dtype = _SAFETENSORS_DTYPES.get(dtype_code)
        if dtype is None:
            raise ValueError(
                f"tensor {name!r} in {file.name} has unsupported dtype {dtype_code}; "
                f"supported: {', '.join(_SAFETENSORS_DTYPES)} (quantised checkpoints are not supported)")
        entries[name] = _TensorEntry(file, name, dtype, shape, order)
    return entries


def _index_safetensors(folder: Path) -> dict[str, _TensorEntry]:
    """All tensors of the checkpoint: from ``model.safetensors.index.json`` if present, else every ``*.safetensors``."""
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        with open(index_path) as handle:
            weight_map = json.load(handle).get("weight_map", {})
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{index_path.name} names shard(s) missing from {str(folder)!r}: {missing}")
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf", ".h5"))
        ggufs = [name for name in others if name.endswith(".gguf")]
        hint = (f" (found {ggufs}: pass one .gguf file itself as the model)" if ggufs else
                f" (found {others}: safetensors and GGUF weights are supported)" if others else "")
        raise FileNotFoundError(f"no *.safetensors weights in checkpoint folder {str(folder)!r}{hint}")
    tensors: dict[str, _TensorEntry] = {}
    for name in files:
        for key, entry in _read_header(folder / name).items():
            if key in tensors:
                raise ValueError(f"tensor {key!r} appears in both {tensors[key].file.name} and {name}")
            tensors[key] = entry
    return tensors


def _expected_tensors(config: LlamaConfig) -> dict[str, _Target]:
    """Checkpoint tensor name -> where it goes, for every tensor the checkpoint must hold.

    Names are the HF names of ``config``'s family (its ``hf_names``; a GGUF header is keyed by
    them too). ``ValueError`` if the family names no tensor for a parameter the config needs.
    """
    names = get(config.model_type).hf_names
    vocab, d = config.vocab_size, config.hidden_size
    shapes = layer_param_shapes(config)
    unnamed = [p for p in ("embed_tokens", "norm", *(() if config.tie_word_embeddings else ("lm_head",)))
               if p not in names.globals] + [p for p in shapes if p not in names.layer]
    if unnamed:
        raise ValueError(f"model family {config.model_type!r} names no checkpoint tensor for {unnamed}")
    targets = {
        names.name("embed_tokens"): _Target(("embed_tokens",), None, (vocab, d), False),
        names.name("norm"): _Target(("norm",), None, (d,), False),
    }
    if not config.tie_word_embeddings:
        targets[names.name("lm_head")] = _Target(("lm_head",), None, (vocab, d), False)
    layer_params = [p for p in names.layer if p in shapes]  # the family's order (sequential reads)
    for layer in range(config.num_hidden_layers):
        for param in layer_params:
            transpose = param in names.transposed
            shape = shapes[param][1:]
            hf_shape = shape[::-1] if transpose else shape
            targets[names.name(param, layer)] = _Target(("layers", param), layer, hf_shape, transpose)
    return targets


def _check_tensors(tensors: dict[str, _TensorEntry], targets: dict[str, _Target], names: TensorNames) -> None:
    missing = [name for name in targets if name not in tensors]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} tensor(s) the config needs, e.g. "
                         f"{missing[:5]}")
    head = names.globals.get("lm_head")
    tied_head = head not in targets
    unexpected = [name for name in tensors if name not in targets
                  and not name.endswith(names.ignored_suffixes)
                  and not (tied_head and name == head)]
    if unexpected:
        raise ValueError(f"checkpoint has {len(unexpected)} unexpected tensor(s) for a model with "
                         f"this config (wrong architecture or num_hidden_layers?), e.g. {unexpected[:5]} "
                         f"in {tensors[unexpected[0]].file.name}")
    for name, target in targets.items():
        entry = tensors[name]
        if entry.shape != target.hf_shape:
            raise ValueError(f"tensor {name!r} in {entry.file.name} has shape {entry.shape}, "
                             f"but the model's config (config.json or GGUF metadata) implies {target.hf_shape}")


# -- streaming the weights ---------------------------------------------------------------------

def _write_layer(buffer: jax.Array, layer: jax.Array, tensor: jax.Array, transpose: bool) -> jax.Array:
    """``buffer[layer] = cast(tensor.T if transpose else tensor)``; the buffer is donated (in place)."""
    value = tensor.T if transpose else tensor
    return jax.lax.dynamic_update_index_in_dim(buffer, value.astype(buffer.dtype), layer, 0)


_write_layer_jit = jax.jit(_write_layer, static_argnums=3, donate_argnums=0)


def _write_layer_int8(q_buffer: jax.Array, scale_buffer: jax.Array, layer: jax.Array, tensor: jax.Array,
                      transpose: bool) -> tuple[jax.Array, jax.Array]:
    """``buffers[layer] = int8 of (tensor.T if transpose else tensor)``; both buffers donated."""
    weight = quantize_int8(tensor.T if transpose else tensor)   # (in, out) int8, (out,) float32
    return (jax.lax.dynamic_update_index_in_dim(q_buffer, weight.q, layer, 0),
            jax.lax.dynamic_update_index_in_dim(scale_buffer, weight.scale, layer, 0))


def _int8_buffers(shape: tuple[int, ...], name: str, mesh: Any) -> Int8Weight:
    """Zero int8 weight ``(L, in, out)`` and float32 scales ``(L, out)``, sharded on ``mesh`` if any."""
    scale_shape = (*shape[:-2], shape[-1])
    if mesh is None:
        return Int8Weight(q=jnp.zeros(shape, jnp.int8), scale=jnp.zeros(scale_shape, jnp.float32))
    from jaxalign import parallel

    return Int8Weight(
        q=parallel.sharded_zeros(shape, jnp.int8, parallel.param_sharding(name, len(shape), mesh)),
        scale=parallel.sharded_zeros(scale_shape, jnp.float32,
                                     parallel.scale_sharding(name, len(scale_shape), mesh)))


def _cast_to(tensor: jax.Array, dtype: np.dtype) -> jax.Array:
    return tensor.astype(dtype)


_cast_jit = jax.jit(_cast_to, static_argnums=1)


def _read_tensor(entry: _TensorEntry) -> np.ndarray:
    """Read one tensor into a host numpy array.

    The file is opened for this tensor alone: ``safe_open`` memory-maps the whole file, and the
    pages a read touches stay in this process's resident memory while the file is open, so
    keeping one file open across its tensors would bring the whole file into memory alongside
    the model.
    """
    try:
        with safe_open(str(entry.file), framework="np") as handle:
            array = handle.get_tensor(entry.name)
    except SafetensorError as error:
        raise _unreadable(entry.file, error) from error
    if array.dtype != entry.dtype or array.shape != entry.shape:
        raise ValueError(f"tensor {entry.name!r} in {entry.file.name} read as {array.dtype} {array.shape}, "
                         f"its header says {entry.dtype} {entry.shape}")
    return array


def _build_model(config: LlamaConfig, dtype: np.dtype, tensors: dict[str, Any],
                 targets: dict[str, _Target], mesh: Any = None, quantize: str | None = None,
                 read: Any = None) -> Llama:
    """The model, its tensors streamed one at a time by ``read(entry)`` (default: safetensors)."""
    read = read or _read_tensor
    abstract = nnx.eval_shape(lambda: Llama(config, dtype=dtype, rngs=nnx.Rngs(0), quantize=quantize))
    graphdef, abstract_state = nnx.split(abstract)

    int8_params = QUANTIZED_LAYER_PARAMS if quantize == "int8" else ()
    float_shapes = {name: shape for name, shape in layer_param_shapes(config).items() if name not in int8_params}
    if mesh is None:
        stacked = {name: jnp.zeros(shape, dtype) for name, shape in float_shapes.items()}
        write_layer = _write_layer_jit
    else:  # every buffer and tensor placed straight onto its shards (jaxalign.parallel)
        from jaxalign import parallel

        stacked = {name: parallel.sharded_zeros(shape, dtype, parallel.param_sharding(name, len(shape), mesh))
                   for name, shape in float_shapes.items()}
        write_layer = jax.jit(_write_layer, static_argnums=3, donate_argnums=0)
    for name in int8_params:  # int8 buffers (L, in, out) and their scales (L, out)
        stacked[name] = _int8_buffers(layer_param_shapes(config)[name], name, mesh)
    write_int8 = jax.jit(_write_layer_int8, static_argnums=4, donate_argnums=(0, 1))
    pure: dict[str, Any] = {"layers": stacked}
    by_file: dict[Path, list[str]] = {}
    for name in targets:
        by_file.setdefault(tensors[name].file, []).append(name)
    for names in by_file.values():
        names.sort(key=lambda n: tensors[n].order)  # sequential reads
        for name in names:
            target = targets[name]
            mapped = read(tensors[name])
            if mesh is None:
                placement = None
            elif target.layer is None:
                placement = parallel.param_sharding(target.param[0], len(target.hf_shape), mesh)
            else:
                placement = parallel.layer_slice_sharding(target.param[1], mesh, transposed=target.transpose)
            raw = jax.block_until_ready(jax.device_put(mapped, placement))  # the transient device copy
            del mapped  # the host copy goes
            if target.layer is None:
                pure[target.param[0]] = raw if raw.dtype == dtype else _cast_jit(raw, dtype)
            else:
                param = target.param[1]
                if param in int8_params:
                    stacked[param] = Int8Weight(*write_int8(stacked[param].q, stacked[param].scale,
                                                            jnp.int32(target.layer), raw, target.transpose))
                else:
                    stacked[param] = write_layer(stacked[param], jnp.int32(target.layer), raw,
                                                 target.transpose)
            del raw
    nnx.replace_by_pure_dict(abstract_state, pure)  # in place
    return nnx.merge(graphdef, abstract_state)
