"""A saved soft prompt made ready for a model: read, width checked, provenance checked, date bound.

Every command that takes ``--soft-prompt`` (``score``, ``generate``, ``chat``, ``export``,
``eval robustness``, ``eval culturalbench``) and :func:`jaxalign.score` / :func:`jaxalign.generate`
go through :func:`load_prompt`, which does the steps in this order::

    soft_prompt.safetensors ──► read (file errors first)        (K, d) float32 + metadata
      ──► width against the model's config (``model=``), before any weight is read
      ──► the model: ``lm``, or ``lm()`` when given a loader
      ──► provenance: width refused, other model / wording / slot warned
          (:func:`jaxalign.softprompt.prompt_provenance`)
      ──► the run's chat date bound (templates that read today's date, e.g. Llama-3.2's):
          ``chat_date=`` if given, else the one stored with the prompt, else the one bound to
          ``lm``, else today
      ──► LoadedPrompt: vectors, metadata, provenance, slot, system, readout, lm, chat_date

:func:`jaxalign.softprompt.load_soft_prompt` only reads the file; this module readies it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jaxalign.model import LM
    from jaxalign.survey import Instrument

DEFAULT_SLOT = "user_start"


@dataclasses.dataclass(frozen=True)
class LoadedPrompt:
    """A soft prompt ready for ``lm`` (what :func:`load_prompt` returns).

    Attributes:
      vectors: ``(K, d)`` float32, or ``None`` when no soft prompt was given (the plain model).
      metadata: the file's string metadata (``{}`` for an array or no prompt).
      provenance: :func:`~jaxalign.softprompt.prompt_provenance`'s record for a file (JSON-able,
        ``soft_prompt_provenance`` in the commands' output); ``None`` for an array, no prompt, or
        when no model was given.
      slot: the slot it goes in: the one asked for, else the stored one, else ``"user_start"``.
      system: the stored system text (``None`` if none).
      readout: the stored readout (``None`` if none).
      lm: the model with the run's chat date bound (``None`` when no model was given).
      chat_date: the date bound (``YYYY-MM-DD``; ``None`` when the template reads no date or no
        model was given).
      source: the file path (``None`` for an array or no prompt).
    """

    vectors: np.ndarray | None
    metadata: dict[str, str]
    provenance: dict[str, Any] | None
    slot: str
    system: str | None
    readout: str | None
    lm: Any
    chat_date: str | None
    source: str | None

    @property
    def stored_chat_date(self) -> str | None:
        """The date the prompt was tuned under (its metadata), ``None`` if none was recorded."""
        return self.metadata.get("chat_date") or None


def warn_at_caller(message: str) -> None:
    """:func:`warnings.warn` pointed at the first caller outside the jaxalign package (the user's
    ``jaxalign.score(...)`` line, however deep inside jaxalign the warning was raised)."""
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(0), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


TINY_RANDOM = "tiny-random"


def _looks_like_hub_id(name: str) -> bool:
    """``owner/name`` (or a bare name) as the Hugging Face Hub spells repositories; not a path."""
    import re

    return (re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) is not None
            and not name.lower().endswith((".gguf", ".safetensors")) and ".." not in name)


def recorded_model(metadata: Mapping[str, str]) -> str | None:
    """The model a saved prompt was tuned on, as :func:`jaxalign.load_model` takes it; ``None``
    when the prompt records none (an older or hand-written file).

    A local model (folder or GGUF file) is recorded as its absolute path (``model_path``) and
    as the name it was given (``model``): the first that exists is returned. A Hub id (or
    ``tiny-random``) is returned as recorded; its content is checked against the prompt's
    ``model_fingerprint`` once loaded (:func:`jaxalign.softprompt.prompt_provenance`).

    Raises:
      ValueError: the prompt was tuned on a local model that is no longer at its path (one line
        naming it).
    """
    from pathlib import Path

    path, name = metadata.get("model_path") or "", metadata.get("model") or ""
    for candidate in (path, name):
        if candidate and (candidate == TINY_RANDOM or Path(candidate).expanduser().exists()):
            return candidate
    if not name and not path:
        return None
    if path or not _looks_like_hub_id(name):
        raise ValueError(f"the soft prompt was tuned on {path or name!r}, which is not there any more; "
                         "pass --model with that model (or its copy)")
    return name


def check_prompt_width(vectors: np.ndarray, model: str | os.PathLike, recorded: str | None = None) -> None:
    """Refuses ``vectors (K, d)`` when ``model``'s config says another hidden size; reads no weight
    (:func:`jaxalign.model.loader.peek_hidden_size`). A model whose size cannot be read this way
    passes: the check against the loaded model follows. ``recorded``: the model the prompt says it
    was tuned on (named in the message)."""
    from jaxalign.model.loader import peek_hidden_size

    hidden = peek_hidden_size(model)
    width = int(np.shape(vectors)[1])
    if hidden is not None and width != hidden:
        made_for = (f"it was tuned on {recorded!r} (leave out --model to use that one)"
                    if recorded and recorded != str(model) else "it was made for another model")
        raise ValueError(
            f"soft prompt width d={width} does not match the hidden size {hidden} of model {str(model)!r}; "
            f"{made_for}; refused before loading the weights")


def load_prompt(
    soft_prompt: str | os.PathLike | np.ndarray | None,
    lm: "LM | Callable[[], LM] | None" = None,
    *,
    model: str | os.PathLike | None = None,
    instrument: "Instrument | None" = None,
    slot: str | None = None,
    allow_mismatch: bool = False,
    warn: Callable[[str], None] | None = None,
    chat_date: str | None = None,
) -> LoadedPrompt:
    """Reads a soft prompt and readies it for a model: width, provenance and chat date.

    Args:
      soft_prompt: a ``soft_prompt.safetensors`` path from :func:`jaxalign.align`, a ``(K, d)``
        array, or ``None`` (the plain model: only the date is bound).
      lm: the model, or a zero-argument function that loads it (called after the file is read
        and its width checked, so a bad file or width fails before any weight is read), or
        ``None`` (read and width-check only, e.g. ``jaxalign export``).
      model: the name or folder ``lm()`` loads from; its hidden size is read from its config
        and a prompt of another width is refused before ``lm()`` is called.
      instrument: the survey the prompt will be scored on (its wording is checked); ``None``
        when it is not a survey use (generation, CulturalBench).
      slot: the slot it will be placed in (default: the stored one, else ``"user_start"``).
      allow_mismatch: a prompt tuned on another model, wording or slot is used as the caller's
        choice (recorded) instead of with a warning; another width is always refused.
      warn: where warnings go (default :func:`warn_at_caller`; the commands print on stderr).
      chat_date: the date to render (``YYYY-MM-DD``), overriding the stored one.

    Returns:
      a :class:`LoadedPrompt`.

    Raises:
      FileNotFoundError / ValueError: no file, not a soft prompt, not ``(K, d)``, another width.
    """
    from jaxalign.softprompt import check_soft_prompt, load_soft_prompt, prompt_provenance

    metadata: dict[str, str] = {}
    source = None
    if soft_prompt is None:
        vectors = None
    elif isinstance(soft_prompt, (str, os.PathLike)):
        vectors, metadata = load_soft_prompt(soft_prompt)
        source = os.fspath(soft_prompt)
    else:
        vectors = np.asarray(soft_prompt, np.float32)
        check_soft_prompt(vectors)  # (K, d): the width is checked against the model below
    if vectors is not None and model is not None and not hasattr(lm, "config"):
        check_prompt_width(vectors, model, metadata.get("model_path") or metadata.get("model"))
    slot = slot or metadata.get("slot") or DEFAULT_SLOT
    loaded = LoadedPrompt(vectors=vectors, metadata=metadata, provenance=None, slot=slot,
                          system=metadata.get("system") or None, readout=metadata.get("readout") or None,
                          lm=None, chat_date=None, source=source)
    if lm is None:
        return loaded
    if not hasattr(lm, "config"):
        lm = lm()
    provenance = None
    if vectors is not None:
        check_soft_prompt(vectors, lm.config.hidden_size)
        if source is not None:
            provenance = prompt_provenance(vectors, metadata, lm=lm, instrument=instrument, slot=slot,
                                           allow_mismatch=allow_mismatch, warn=warn or warn_at_caller)
    from jaxalign.prompting.chat_formats import bind_run_date

    lm, date = bind_run_date(lm, chat_date or loaded.stored_chat_date)
    return dataclasses.replace(loaded, provenance=provenance, lm=lm, chat_date=date)
