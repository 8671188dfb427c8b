"""Export a steering vector as a llama.cpp control vector (GGUF), for ``llama-cli --control-vector``.

A llama.cpp control vector is a GGUF file with ``general.architecture = "controlvector"``,
``controlvector.model_hint`` (the model's architecture, e.g. ``llama``), ``controlvector.layer_count``
(the number of direction tensors, as llama.cpp's own ``cvector-generator`` writes it) and F32
tensors ``direction.N`` of the model's width.

**Layer numbering** (read in llama.cpp's source, ggml-org/llama.cpp):

- ``common/common.cpp``, ``common_control_vector_load_one``: a tensor ``direction.N`` must have
  ``N >= 1`` (``N = 0`` is refused: "invalid (zero) direction tensor layer index"), and its values
  are stored at ``data[n_embd * (N - 1)]`` ("layer 1 at [0]"); missing layers stay zero.
- ``src/llama-adapter.cpp``, ``llama_adapter_cvec::apply``: ``tensors[il]`` (for ``il = 1..n_layer-1``;
  "there's never a tensor for layer 0") takes ``data[n_embd * (il - 1)]``, so ``tensors[il]`` is
  ``direction.il``; ``apply_to(ctx, cur, il)`` adds ``tensors[il]`` to ``cur``.
- ``src/models/llama.cpp``: in the loop ``for (int il = 0; il < n_layer; ++il)``, after the block's
  attention and feed-forward residual adds, ``cur = build_cvec(cur, il)`` (``build_cvec`` in
  ``src/llama-graph.cpp`` calls ``cvec->apply_to(ctx0, cur, il)``): the output of block ``il``
  (0-based) gets ``direction.il``.

So jaxalign's 0-based block ``L`` (the vector added after block ``L``, what a transformers hook on
``model.model.layers[L]`` does) is llama.cpp's ``direction.L``, not ``L + 1``; block 0's output cannot
be steered by a llama.cpp control vector, so a vector at ``L = 0`` is refused.

Use it with ``llama-cli -m MODEL.gguf --control-vector OUT.gguf`` (strength 1, what jaxalign scored;
``--control-vector-scaled OUT.gguf S`` multiplies it by ``S``; ``--control-vector-layer-range A B``
must include ``L`` if given).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

ARCHITECTURE = "controlvector"


def direction_name(layer: int) -> str:
    """llama.cpp's tensor name for a vector added after jaxalign's 0-based block ``layer``."""
    if layer < 1:
        raise ValueError(
            f"a vector added after block {layer} cannot be a llama.cpp control vector: llama.cpp adds "
            "direction.N after block N (0-based) and never steers block 0's output (direction.0 is refused "
            "by its loader); use a layer >= 1")
    return f"direction.{int(layer)}"


def export_control_vector(steering: Any, out: str | os.PathLike, *, model_hint: str | None = None,
                          n_layers: int | None = None) -> Path:
    """Writes a steering vector as a llama.cpp control-vector GGUF file.

    Args:
      steering: a steering file path or a :class:`~jaxalign.interventions.steering.SteeringVector`.
      out: the ``.gguf`` file to write (its folder is created).
      model_hint: ``controlvector.model_hint`` (default: the file's ``model_type``, recorded by
        :func:`~jaxalign.interventions.steering.steering_metadata`; required for a plain file).
      n_layers: the model's number of blocks, to check the layers (default: the file's
        ``num_hidden_layers``, if recorded).

    Raises:
      ValueError: a layer 0 (not expressible, see the module docstring), a layer beyond the model,
        no model hint.
    """
    import gguf

    from jaxalign._io import atomic_path
    from jaxalign.interventions.steering import SteeringVector, check_layers, load_steering

    if not isinstance(steering, SteeringVector):
        steering = load_steering(steering)
    hint = model_hint or steering.metadata.get("model_type")
    if not hint:
        raise ValueError("no model hint: the steering file does not record its model's architecture "
                         "(model_type); pass model_hint (--model-hint), e.g. 'llama'")
    depth = n_layers or (int(steering.metadata["num_hidden_layers"]) if "num_hidden_layers" in steering.metadata
                         else None)
    if depth is not None:
        check_layers(steering.layers, depth)
    names = [direction_name(layer) for layer in steering.layers]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
        writer.add_string(f"{ARCHITECTURE}.model_hint", str(hint))
        writer.add_int32(f"{ARCHITECTURE}.layer_count", len(names))
        for name, row in zip(names, steering.vectors):
            writer.add_tensor(name, np.ascontiguousarray(row, np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def read_control_vector(path: str | os.PathLike) -> dict[str, Any]:
    """What a control-vector GGUF holds, read back with ``gguf.GGUFReader``:
    ``{"architecture", "model_hint", "layer_count", "directions": {N: (d,) float32}}``."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(name: str) -> Any:
        item = reader.fields.get(name)
        return None if item is None else item.contents()

    directions = {int(t.name.split(".", 1)[1]): np.asarray(t.data, np.float32).reshape(-1)
                  for t in reader.tensors if t.name.startswith("direction.")}
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    return {"architecture": field("general.architecture"), "model_hint": field(f"{ARCHITECTURE}.model_hint"),
            "layer_count": field(f"{ARCHITECTURE}.layer_count"), "directions": directions, "types": types}
