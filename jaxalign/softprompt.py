"""Soft prompts: K virtual-token embeddings of width d, how they are parameterised, and their files.

A soft prompt is a (K, d) float32 array placed in the soft-prompt slot of every sequence. The
optimiser never sees it directly: it searches over a flat vector ``z`` of ``space.dim`` numbers
and :meth:`SoftPromptSpace.decode` turns ``z`` into a prompt. Two parameterisations:

* **full space**: ``dim = K * d`` and ``prompt = p0 + reshape(z, (K, d))``. ``z`` is in embedding
  units, so an initial population spread (``init_scale``) of about the embedding std is sensible.
* **random subspace** (Black-Box Tuning, Sun et al. 2022): ``dim = n`` (e.g. 32 or 500) and
  ``prompt = p0 + reshape(z @ A, (K, d))`` with a fixed random ``A`` of shape ``(n, K * d)``.
  Its entries are drawn i.i.d. from ``N(0, s**2)`` with ``s = embedding_std / sqrt(n)``: then for
  ``z`` with i.i.d. unit-variance entries, each prompt coordinate moves by
  ``sqrt(n * s**2) = embedding_std`` in standard deviation, i.e. a unit-scale ``z`` moves the prompt
  by about one embedding-matrix std per coordinate (BBT's ``sigma = sigma_hat / (sqrt(n) sigma_z)``
  with ``sigma_z = 1``). An ``init_scale`` of order 1 is then sensible.

Files are safetensors with one tensor ``soft_prompt`` (K, d) float32 and string metadata.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SOFT_PROMPT_TENSOR = "soft_prompt"


@dataclasses.dataclass(frozen=True)
class SoftPromptSpace:
    """Affine map from a search vector ``z`` (dim,) to a soft prompt (K, d).

    Attributes:
        p0: (K, d) float32, the prompt at ``z = 0``.
        basis: (n, K*d) float32 random projection, or ``None`` for the full space (dim = K*d).

    Registered as a jax pytree (both fields are children), so a space can be passed to jitted
    functions as an argument rather than baked in as a constant.
    """

    p0: jax.Array  # (K, d) float32
    basis: jax.Array | None  # (n, K*d) float32, or None for the full space

    @property
    def num_tokens(self) -> int:
        """K, the number of virtual tokens."""
        return int(self.p0.shape[0])

    @property
    def width(self) -> int:
        """d, the embedding width."""
        return int(self.p0.shape[1])

    @property
    def dim(self) -> int:
        """Length of the search vector ``z``: n for a subspace, K*d for the full space."""
        if self.basis is None:
            return self.num_tokens * self.width
        return int(self.basis.shape[0])

    def decode(self, z: jax.Array) -> jax.Array:
        """Map search vectors to soft prompts.

        Args:
            z: (..., dim) search vectors (any float dtype; computed in float32).

        Returns:
            (..., K, d) float32 soft prompts. The caller casts to the model dtype.
        """
        z = jnp.asarray(z, dtype=jnp.float32)
        if z.ndim < 1 or z.shape[-1] != self.dim:
            raise ValueError(
                f"decode expects z of shape (..., {self.dim}) for this space, got {tuple(z.shape)}"
            )
        # exact float32 (no TF32 / bf16 passes on accelerators), as the rest of the scoring asks
        delta = z if self.basis is None else jnp.matmul(z, self.basis, precision=jax.lax.Precision.HIGHEST)  # (..., K*d)
        k, d = self.p0.shape
        return self.p0 + delta.reshape(*z.shape[:-1], k, d)


jax.tree_util.register_dataclass(SoftPromptSpace, data_fields=["p0", "basis"], meta_fields=[])


def _as_prompt(p0: Any, name: str = "p0") -> jax.Array:
    p0 = jnp.asarray(p0, dtype=jnp.float32)
    if p0.ndim != 2 or p0.shape[0] < 1 or p0.shape[1] < 1:
        raise ValueError(f"{name} must have shape (K, d) with K, d >= 1, got {tuple(p0.shape)}")
    return p0


def full_space(p0: jax.Array) -> SoftPromptSpace:
    """The full parameterisation: ``z`` has K*d entries, ``prompt = p0 + reshape(z)``.

    Args:
        p0: (K, d) initial prompt (cast to float32).
    """
    return SoftPromptSpace(p0=_as_prompt(p0), basis=None)


def subspace(p0: jax.Array, n: int, key: jax.Array, embedding_std: float) -> SoftPromptSpace:
    """A random n-dimensional subspace around ``p0`` (Black-Box Tuning, Sun et al. 2022).

    ``A`` (n, K*d) has i.i.d. ``N(0, (embedding_std / sqrt(n))**2)`` entries, so a ``z`` with
    i.i.d. unit-variance entries moves every prompt coordinate by ``embedding_std`` in std.

    Args:
        p0: (K, d) initial prompt (cast to float32).
        n: subspace dimension, >= 1.
        key: PRNG key for ``A``.
        embedding_std: std of the model's embedding matrix (e.g. ``float(jnp.std(E))``), > 0.
    """
    p0 = _as_prompt(p0)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"subspace dimension n must be an integer >= 1, got {n!r}")
    embedding_std = float(embedding_std)
    if not np.isfinite(embedding_std) or embedding_std <= 0:
        raise ValueError(f"embedding_std must be a finite number > 0, got {embedding_std!r}")
    k, d = p0.shape
    scale = embedding_std / np.sqrt(n)
    basis = scale * jax.random.normal(key, (int(n), k * d), dtype=jnp.float32)
    return SoftPromptSpace(p0=p0, basis=basis)


def _check_embedding_matrix(embedding_matrix: Any) -> jax.Array:
    embedding_matrix = jnp.asarray(embedding_matrix)
    if embedding_matrix.ndim != 2 or embedding_matrix.shape[0] < 1:
        raise ValueError(
            f"embedding_matrix must have shape (V, d) with V >= 1, got {tuple(embedding_matrix.shape)}"
        )
    return embedding_matrix


def _check_num_tokens(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"K (number of virtual tokens) must be an integer >= 1, got {k!r}")
    return int(k)


def init_from_ids(embedding_matrix: jax.Array, token_ids: Any, k: int) -> jax.Array:
    """Initial prompt from the embeddings of a text's token ids (the caller tokenises).

    The ids are repeated cyclically if there are fewer than K and truncated to the first K if
    there are more (``[a, b, c]`` with K=5 gives ``[a, b, c, a, b]``).

    Args:
        embedding_matrix: (V, d) input embedding matrix of the model (any float dtype).
        token_ids: 1-D sequence of ints in [0, V), at least one.
        k: number of virtual tokens K.

    Returns:
        (K, d) float32.
    """
    embedding_matrix = _check_embedding_matrix(embedding_matrix)
    k = _check_num_tokens(k)
    ids = np.asarray(token_ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"token_ids must be a non-empty 1-D sequence of integers, got shape {ids.shape} "
            f"dtype {ids.dtype}"
        )
    vocab = embedding_matrix.shape[0]
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(
            f"token_ids must lie in [0, {vocab}) for an embedding matrix with {vocab} rows, "
            f"got range [{ids.min()}, {ids.max()}]"
        )
    ids = np.resize(ids, k)  # cyclic repeat / truncate
    return embedding_matrix[jnp.asarray(ids)].astype(jnp.float32)


def ordinary_token_ids(tokenizer: Any, n_rows: int) -> np.ndarray:
    """``(n,)`` int64, ascending: the ids of the ordinary text tokens, the rows worth drawing p0 from.

    An id is ordinary when it belongs to the tokenizer's own vocabulary (``get_vocab()``, so
    text can encode to it), is not an added token (``added_tokens_decoder``: special, control
    and reserved tokens such as Llama-3's 250 ``<|reserved_special_token_*|>``, and added
    non-special ones such as Qwen's ``<tool_call>``) nor in ``all_special_ids``, and lies below
    both ``len(tokenizer)`` and ``n_rows`` (embedding rows past the tokenizer's length are
    padding that no text reaches: Qwen2.5 has 293 of them). Such rows were never trained or
    were trained only in markup positions, so a prompt drawn from them starts off-distribution.

    Args:
        tokenizer: a transformers tokenizer (or anything with ``get_vocab``, ``__len__`` and,
            optionally, ``added_tokens_decoder`` / ``all_special_ids``).
        n_rows: V, the number of rows of the model's embedding matrix.

    Raises:
        ValueError: when no id is ordinary.
    """
    limit = min(int(len(tokenizer)), int(n_rows))
    excluded = set(getattr(tokenizer, "added_tokens_decoder", None) or {})
    excluded.update(getattr(tokenizer, "all_special_ids", None) or ())
    ids = np.asarray(sorted({int(i) for i in tokenizer.get_vocab().values()} - excluded), dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < limit)]
    if ids.size == 0:
        raise ValueError(f"the tokenizer has no ordinary (non-special, non-added) token below id {limit}")
    return ids


def init_random_vocab(
    embedding_matrix: jax.Array, k: int, key: jax.Array, allowed_ids: Any = None
) -> jax.Array:
    """Initial prompt from K random rows of the embedding matrix (distinct rows when K <= the rows allowed).

    The rows are the first K allowed ids in the order of ``jax.random.permutation(key, V)``,
    so a seed whose draw held no excluded row draws the same rows with and without
    ``allowed_ids``. When K exceeds the number of allowed rows, K rows are drawn with
    replacement (``jax.random.randint`` over the allowed ids).

    Args:
        embedding_matrix: (V, d) input embedding matrix (any float dtype).
        k: number of virtual tokens K.
        key: PRNG key.
        allowed_ids: 1-D ids in [0, V) to draw from (e.g. :func:`ordinary_token_ids`), or
            ``None`` for every row.

    Returns:
        (K, d) float32.
    """
    embedding_matrix = _check_embedding_matrix(embedding_matrix)
    k = _check_num_tokens(k)
    vocab = embedding_matrix.shape[0]
    if allowed_ids is None:
        allowed = np.arange(vocab, dtype=np.int64)
    else:
        allowed = np.asarray(allowed_ids)
        if allowed.ndim != 1 or allowed.size == 0 or not np.issubdtype(allowed.dtype, np.integer):
            raise ValueError(f"allowed_ids must be a non-empty 1-D sequence of integers, got shape "
                             f"{allowed.shape} dtype {allowed.dtype}")
        allowed = np.unique(allowed)
        if allowed[0] < 0 or allowed[-1] >= vocab:
            raise ValueError(f"allowed_ids must lie in [0, {vocab}), got range [{allowed[0]}, {allowed[-1]}]")
    if k > allowed.size:  # more tokens than rows: repeats
        ids = allowed[np.asarray(jax.random.randint(key, (k,), 0, allowed.size))]
    else:
        order = np.asarray(jax.random.permutation(key, vocab))  # (V,)
        ids = order[np.isin(order, allowed)][:k]
    return embedding_matrix[jnp.asarray(ids)].astype(jnp.float32)


def check_soft_prompt(prompt: Any, d_model: int | None = None) -> None:
    """Raise ``ValueError`` unless ``prompt`` has shape (K, d_model) with K >= 1 (any d when
    ``d_model`` is ``None``)."""
    shape = tuple(np.shape(prompt))
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"a soft prompt must have shape (K, d) with K >= 1, got {shape}")
    if d_model is not None and shape[1] != d_model:
        raise ValueError(
            f"soft prompt width d={shape[1]} does not match the model's hidden size {d_model}; "
            f"it was probably made for another model"
        )


def save_soft_prompt(path: str | os.PathLike, prompt: Any, metadata: Mapping[str, str]) -> None:
    """Write a soft prompt as safetensors, atomically.

    The file holds the tensor ``soft_prompt`` (K, d) float32 and string metadata: the caller's
    entries (e.g. ``model``, ``wording``, ``readout``) plus ``K``, ``d`` and ``jaxalign_version``
    (filled in if absent; a caller's ``K``/``d`` must match the prompt). The data go to a temporary
    file in the same folder, which is then renamed over ``path``; a failed write leaves no file.

    Args:
        path: destination, conventionally ``*.safetensors``.
        prompt: (K, d) array (cast to float32).
        metadata: str -> str.
    """
    from safetensors.numpy import save_file

    from jaxalign import __version__
    from jaxalign._io import atomic_path

    array = np.asarray(prompt, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"a soft prompt must have shape (K, d) with K, d >= 1, got {array.shape}")
    bad = {k: type(v).__name__ for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise ValueError(f"soft prompt metadata must map str to str; offending entries: {bad}")
    meta = {"K": str(array.shape[0]), "d": str(array.shape[1]), "jaxalign_version": __version__}
    for name in ("K", "d"):
        if name in metadata and metadata[name] != meta[name]:
            raise ValueError(f"metadata[{name!r}]={metadata[name]!r} but the prompt has {name}={meta[name]}")
    meta.update(metadata)

    with atomic_path(path) as tmp:
        save_file({SOFT_PROMPT_TENSOR: np.ascontiguousarray(array)}, tmp, metadata=meta)


def load_soft_prompt(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Read a soft prompt written by :func:`save_soft_prompt`.

    Returns:
        ``(prompt, metadata)``: prompt (K, d) float32 numpy array, metadata dict str -> str.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no soft prompt file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            if SOFT_PROMPT_TENSOR not in keys:
                raise ValueError(
                    f"{str(path)!r} has no tensor {SOFT_PROMPT_TENSOR!r} (tensors found: {keys}); "
                    f"is it a jaxalign soft prompt?"
                )
            prompt = f.get_tensor(SOFT_PROMPT_TENSOR)
            metadata = dict(f.metadata() or {})
    except ValueError:
        raise
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {err}") from err
    if prompt.ndim != 2:
        raise ValueError(
            f"tensor {SOFT_PROMPT_TENSOR!r} in {str(path)!r} must have rank 2 (K, d), got shape {prompt.shape}"
        )
    return prompt.astype(np.float32), metadata


# ------------------------------------------------------------------------------ provenance
PROVENANCE_KEYS = ("model_fingerprint", "hidden_size", "K", "slot", "chat_format", "chat_date",
                   "wording_fingerprint", "readout", "target", "jaxalign_version")


def prompt_provenance(
    prompt: Any,
    metadata: Mapping[str, str],
    *,
    lm: Any,
    instrument: Any = None,
    slot: str | None = None,
    allow_mismatch: bool = False,
    warn: Any = None,
) -> dict[str, Any]:
    """Checks a loaded soft prompt against the model, wording and slot it is about to be used with.

    A prompt whose width differs from ``lm``'s hidden size is always refused (``ValueError``). A
    prompt tuned on another model (content fingerprint), another wording (item texts and labels)
    or for another slot is used, with a clear warning through ``warn`` (default
    :func:`warnings.warn`), unless ``allow_mismatch`` says the user chose it (then only recorded).
    A file without provenance metadata (older jaxalign) gets a note instead.

    Args:
      prompt: (K, d) array; metadata: its safetensors metadata (:func:`load_soft_prompt`).
      lm: the model it will run on; instrument: the survey it will be scored on (``None``: not a
        survey use, e.g. CulturalBench); slot: the slot it will be placed in (``None``: the stored one).

    Returns:
      ``{"checked": [...], "mismatches": [...], "allow_mismatch": bool, "note": str | None}``
      (JSON-able; commands put it in their output as ``soft_prompt_provenance``).
    """
    import warnings

    from jaxalign.fingerprint import instrument_fingerprint, model_digest, model_fingerprint

    check_soft_prompt(prompt, lm.config.hidden_size)
    stored_width = metadata.get("hidden_size") or metadata.get("d")
    if stored_width is not None and stored_width != str(lm.config.hidden_size):
        made_for = metadata.get("model_path") or metadata.get("model")
        raise ValueError(f"the soft prompt's metadata says hidden size {stored_width}, the model has "
                         f"{lm.config.hidden_size}; it was made for another model"
                         + (f" ({made_for!r})" if made_for else ""))
    warn = warn or (lambda message: warnings.warn(message, UserWarning, stacklevel=3))
    record: dict[str, Any] = {"checked": [], "mismatches": [], "allow_mismatch": bool(allow_mismatch), "note": None}
    if "model_fingerprint" not in metadata:
        record["note"] = ("the soft prompt carries no provenance (written by an older jaxalign or by hand): "
                          "its model, wording and slot cannot be checked")
        warn(record["note"])
        return record
    record["checked"].append("model")
    if metadata["model_fingerprint"] != model_digest(model_fingerprint(lm)):
        record["mismatches"].append(
            f"model: tuned on {metadata.get('model', '?')!r} (fingerprint {metadata['model_fingerprint'][:12]}), "
            f"used with {lm.name!r} whose content differs (weights, config, tokenizer or chat template)")
    if instrument is not None and metadata.get("wording_fingerprint"):
        record["checked"].append("wording")
        if metadata["wording_fingerprint"] != instrument_fingerprint(instrument)["items"]:
            record["mismatches"].append(
                f"wording: tuned on {metadata.get('wording', '?')!r}, used with {instrument.wording!r} "
                "whose item texts or labels differ")
    if slot is not None and metadata.get("slot"):
        record["checked"].append("slot")
        if metadata["slot"] != slot:
            record["mismatches"].append(f"slot: tuned in {metadata['slot']!r}, used in {slot!r}")
    if record["mismatches"]:
        listed = "; ".join(record["mismatches"])
        if allow_mismatch:
            warn(f"using the soft prompt despite: {listed} (allowed by --allow-mismatch)")
        else:
            warn(f"the soft prompt does not match what it was tuned with: {listed}. Its scores may mean "
                 "little; pass --allow-mismatch (allow_mismatch=True) to record that this is your choice")
    return record
