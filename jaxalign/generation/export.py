"""Export a soft prompt as a PEFT prompt-tuning adapter (``peft.PeftModel.from_pretrained``).

PEFT's prompt tuning (``task_type="CAUSAL_LM"``) prepends its ``num_virtual_tokens`` embeddings
to the embeddings of the whole input, before BOS, and extends the attention mask with ones; the
virtual tokens take positions ``0..K-1`` and the text follows. That is exactly jaxalign's
``start`` slot, so a prompt tuned there (``jaxalign align --slot start``) is written as::

    DIR/adapter_config.json          peft_type PROMPT_TUNING, task_type CAUSAL_LM,
                                     num_virtual_tokens K, token_dim d, base_model_name_or_path
    DIR/adapter_model.safetensors    prompt_embeddings (K, d) float32

A prompt tuned in any other slot sits inside the chat (after the system text or the user header),
which a prompt-tuning adapter cannot express: exporting it is refused. Such prompts are used from
PyTorch by splicing the vectors into ``inputs_embeds`` (docs/using-the-prompt.md, "Using the soft prompt in
PyTorch"). The file of ``jaxalign align`` holds the materialised prompt (``p0 + A z`` for a
subspace search), which is what is exported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxalign.prompting.layout import START_SLOT

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_TENSOR = "prompt_embeddings"


def peft_config(num_virtual_tokens: int, token_dim: int, base_model: str | None) -> dict[str, Any]:
    """The ``adapter_config.json`` of a CAUSAL_LM prompt-tuning adapter (fields PEFT reads)."""
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": int(num_virtual_tokens),
        "token_dim": int(token_dim),
        "num_transformer_submodules": 1,
        "num_attention_heads": None,   # PEFT fills these from the base model's config
        "num_layers": None,
        "base_model_name_or_path": base_model,
        "revision": None,
        "inference_mode": True,
        "prompt_tuning_init": "RANDOM",  # how PEFT would initialise; the weights file overrides it
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "modules_to_save": None,
    }


#: the key of adapter_config.json that says how to load a base model recorded as a local path
NOTE_KEY = "jaxalign_note"


def peft_base_model(metadata: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``(base_model_name_or_path, note)`` for a saved prompt's recorded model (its metadata).

    A Hub id is written as recorded (no note): ``peft`` loads it. A local folder or GGUF file is
    written as its absolute path, with a note saying how to load it (a GGUF file through
    transformers' ``gguf_file=``) and that another machine needs the Hub id (``base_model=``).
    ``tiny-random`` (jaxalign's in-memory test model) is written as is, with a note; a prompt that
    records no model gives ``(None, note)``.
    """
    path, name = metadata.get("model_path") or "", metadata.get("model") or ""
    if name == "tiny-random" and not path:
        return name, ("'tiny-random' is jaxalign's randomly initialised test model, which peft cannot "
                      "load by name; pass the base model's Hub id or path (--base-model)")
    if not path and name and Path(name).expanduser().exists():
        path = str(Path(name).expanduser().resolve())
    if path:
        elsewhere = "; on another machine write the model's Hub id instead (--base-model)"
        if path.lower().endswith(".gguf"):
            file = Path(path)
            return path, (f"the base model is a local GGUF file: load it with transformers."
                          f"AutoModelForCausalLM.from_pretrained({str(file.parent)!r}, gguf_file={file.name!r}) "
                          f"(needs torch and gguf) and pass it to peft.PeftModel.from_pretrained(model, "
                          f"adapter_folder){elsewhere}")
        return path, f"the base model is a local folder, which peft loads from this path{elsewhere}"
    if name:
        return name, None
    return None, "the soft prompt records no model; pass the base model's Hub id or path (--base-model)"


def export_peft(soft_prompt: Any, out: str | os.PathLike, *, base_model: str | None = None,
                slot: str | None = None, note: Callable[[str], None] | None = None) -> Path:
    """Writes ``soft_prompt`` into the folder ``out`` as a PEFT prompt-tuning adapter.

    Args:
      soft_prompt: a ``soft_prompt.safetensors`` path from ``jaxalign align`` (its stored slot and
        model are used) or a ``(K, d)`` array (then ``slot`` must say ``"start"``).
      out: the adapter folder (created; existing adapter files are overwritten).
      base_model: the base model's Hub id or path recorded in the adapter (default: the soft
        prompt's recorded model, :func:`peft_base_model`: a Hub id as is, a local folder or GGUF
        file as its absolute path with a note in ``adapter_config.json`` under :data:`NOTE_KEY`).
      slot: the slot the prompt was tuned in, overriding the file's.
      note: where that note also goes (default: a ``UserWarning`` at the caller).

    Raises:
      ValueError: the prompt was tuned in another slot than ``start`` (explained), is not
        ``(K, d)``, or its width differs from the base model's hidden size (when the base
        model's config can be read without its weights: ``tiny-random``, a folder, a Hub id).
    """
    from safetensors.numpy import save_file

    from jaxalign._io import atomic_path
    from jaxalign.saved_prompt import check_prompt_width, load_prompt, warn_at_caller

    vectors = np.asarray(soft_prompt, np.float32) if not isinstance(soft_prompt, (str, os.PathLike)) else None
    if vectors is not None and (vectors.ndim != 2 or min(vectors.shape) < 1):
        raise ValueError(f"a soft prompt must have shape (K, d), got {vectors.shape}")
    loaded = load_prompt(soft_prompt, slot=slot)  # no model: read, and the slot it was tuned in
    vectors, metadata, slot = loaded.vectors, loaded.metadata, loaded.slot
    if slot != START_SLOT:
        raise ValueError(
            f"this soft prompt was tuned in the {slot!r} slot, inside the chat; a PEFT prompt-tuning "
            "adapter can only put its virtual tokens before the whole input (BOS included), which is "
            f"jaxalign's {START_SLOT!r} slot, so it would not mean the same thing there. Tune one with "
            f"'jaxalign align --slot {START_SLOT}' to export it, or use this one from PyTorch by "
            "splicing its vectors into inputs_embeds at its slot (docs/using-the-prompt.md: 'Using the soft prompt in "
            "PyTorch')."
        )
    base, base_note = (base_model, None) if base_model else peft_base_model(metadata)
    if base is not None:
        check_prompt_width(vectors, base, None if base_model is None else metadata.get("model"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / PEFT_WEIGHTS) as tmp:
        save_file({PEFT_TENSOR: np.ascontiguousarray(vectors, np.float32)}, tmp,
                  metadata={"format": "pt"})
    config = peft_config(vectors.shape[0], vectors.shape[1], base)
    if base_note is not None:
        config[NOTE_KEY] = base_note  # peft ignores an unknown key (with a warning naming it)
        (note or warn_at_caller)(base_note)
    with atomic_path(out / PEFT_CONFIG) as tmp:
        Path(tmp).write_text(json.dumps(config, indent=2) + "\n")
    return out
