"""What an intervention is: how it is parameterised, where it enters the forward pass, its file.

An intervention is what jaxalign tunes while the model stays frozen. Each kind is described by an
:class:`InterventionKind` (the registry :data:`KINDS`), and every kind shares the same contract:

- **parameters**: a float32 array of a fixed shape per member of a population (soft prompt
  ``(K, d)``, steering vector ``(d,)`` or ``(n, d)``), searched through an affine space
  ``p0 + z @ A`` (:class:`jaxalign.softprompt.SoftPromptSpace`, the full space when ``A`` is None);
- **site**: where it enters the frozen forward pass (input embeddings at a slot of the chat;
  the residual stream after a decoder block);
- **scorer**: a pure function ``(params (P, ...), inputs) -> Scores`` whose arrays are all jit
  arguments (:mod:`jaxalign.scoring` for soft prompts, :mod:`jaxalign.scoring_steering` for
  steering vectors), so an optimizer calls either the same way;
- **file**: safetensors with one named tensor and string metadata holding its provenance
  (model fingerprint, target, configuration); a file without provenance is accepted with a note.

How a run tunes each kind (its search space, scorer, decoding and file) is its
:class:`jaxalign.tuning.Tuning`; a new kind adds its record here and its ``Tuning`` there.

:func:`kind_of_file` tells which kind a safetensors file holds, so a command given the wrong kind
of file says so instead of failing on a missing tensor.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from jaxalign.softprompt import SOFT_PROMPT_TENSOR

#: The tensor of a steering file: ``(d,)`` for one layer, ``(n, d)`` for ``n`` layers.
STEERING_TENSOR = "vector"


@dataclasses.dataclass(frozen=True)
class InterventionKind:
    """One kind of intervention (see the module docstring).

    Attributes:
      name: ``"soft_prompt"`` or ``"steering"``.
      tensor: the name of its tensor in its safetensors file.
      shape: the shape of one member's parameters, in words.
      site: where it enters the forward pass, in words.
      option: the command-line option that takes its file.
      file_name: the file a tuning run writes into its output folder.
      layered: it acts at a decoder block (``AlignConfig.layer``), not at the input.
    """

    name: str
    tensor: str
    shape: str
    site: str
    option: str
    file_name: str = ""
    layered: bool = False


KINDS: dict[str, InterventionKind] = {
    "soft_prompt": InterventionKind(
        name="soft_prompt", tensor=SOFT_PROMPT_TENSOR, shape="(K, d)",
        site="K input embeddings at the slot of the rendered chat (jaxalign.prompting)",
        option="--soft-prompt", file_name="soft_prompt.safetensors"),
    "steering": InterventionKind(
        name="steering", tensor=STEERING_TENSOR, shape="(d,) at one layer, or (n, d) at n layers",
        site="added to the residual stream after decoder block L (0-based), at every position",
        option="--steering", file_name="steering.safetensors", layered=True),
}


def kind_of_file(path: str | os.PathLike) -> InterventionKind | None:
    """The kind whose tensor the safetensors file ``path`` holds, or ``None`` (another file).

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: not a readable safetensors file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {err}") from err
    for kind in KINDS.values():
        if kind.tensor in keys:
            return kind
    return None
