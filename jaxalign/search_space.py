"""The soft-prompt search space of a run: ``p0`` (from text or random vocabulary rows) and a
random subspace around it (:func:`search_space`), kept in the run folder so a resume never redraws
it (:func:`saved_search_space`)::

    p0 (K, d)  +  z (D,) @ A (D, K*d) * scale    -> soft prompt (K, d)
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.config import AlignConfig
from jaxalign.model import LM
from jaxalign.parallel import is_main_process
from jaxalign.softprompt import (
    SoftPromptSpace,
    full_space,
    init_from_ids,
    init_random_vocab,
    ordinary_token_ids,
    subspace,
)


SPACE_FILE = "search_space.safetensors"  # p0 and the subspace basis, so a resume never redraws them


def initial_prompt(lm: LM, k: int, *, text: str | None, seed: int) -> np.ndarray:
    """``(k, d)`` starting prompt: the embeddings of ``text``'s tokens, or ``k`` random rows.

    Without ``text`` the rows are drawn (seed ``seed``) from the tokenizer's ordinary tokens
    (:func:`~jaxalign.softprompt.ordinary_token_ids`: no special, reserved, added or padding
    row), or from every row of a model without a tokenizer.
    """
    if text is None:
        n_rows = int(lm.embedding_matrix.shape[0])
        allowed = None if lm.tokenizer is None else ordinary_token_ids(lm.tokenizer, n_rows)
        return np.asarray(init_random_vocab(lm.embedding_matrix, k, jax.random.key(seed), allowed_ids=allowed))
    if lm.tokenizer is None:
        raise ValueError("init_text needs the model's tokenizer, and this model has none")
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError("init_text is empty after tokenisation")
    return np.asarray(init_from_ids(lm.embedding_matrix, np.asarray(ids), k))


def search_space(lm: LM, config: AlignConfig) -> tuple[SoftPromptSpace, float]:
    """The soft-prompt search space for ``config`` and the embedding std it is scaled by.

    ``p0`` from ``config.init_text`` or ``config.k`` random vocabulary rows (``config.seed``); a
    random subspace of ``config.subspace`` dimensions (basis from ``config.seed + 1``), or the
    full space when it is ``None``. Every method (DE, gradient, both orders) searches this space.
    """
    embedding_std = float(jnp.std(lm.embedding_matrix.astype(jnp.float32)))
    p0 = initial_prompt(lm, config.k, text=config.init_text, seed=config.seed)
    if config.subspace is None:
        return full_space(p0), embedding_std
    return subspace(p0, config.subspace, jax.random.key(config.seed + 1), embedding_std), embedding_std


def saved_search_space(path: Path, space: SoftPromptSpace, *, resume: bool) -> SoftPromptSpace:
    """The run's search space, kept in ``path`` (``p0`` and the basis ``A``, exact float32).

    A fresh run writes ``space`` there (process 0, atomically) before its first checkpoint; a
    resume reads it back instead of redrawing ``A`` from the seed, so the DE state continues in
    the space it was made in even where another JAX release would draw other random bits. The
    checkpoint's record holds the space's exact digest, so an edited or swapped file is refused.
    """
    from safetensors.numpy import load_file, save_file

    from jaxalign._io import atomic_path

    if resume and path.is_file():
        try:
            saved = load_file(str(path))
        except Exception as error:
            raise ValueError(f"{str(path)!r} is not a readable search-space file: {error}") from None
        if "p0" not in saved:
            raise ValueError(f"{str(path)!r} holds no p0 tensor; was it written by jaxalign?")
        basis = saved.get("basis")
        same_shapes = saved["p0"].shape == tuple(space.p0.shape) and (
            (basis is None and space.basis is None)
            or (basis is not None and space.basis is not None and basis.shape == tuple(space.basis.shape)))
        if not same_shapes:  # another k/subspace: the configuration check names the difference
            return space
        return SoftPromptSpace(p0=jnp.asarray(saved["p0"]),
                               basis=None if basis is None else jnp.asarray(basis))
    if is_main_process():
        tensors = {"p0": np.ascontiguousarray(np.asarray(space.p0, np.float32))}
        if space.basis is not None:
            tensors["basis"] = np.ascontiguousarray(np.asarray(space.basis, np.float32))
        with atomic_path(path) as tmp:
            save_file(tensors, tmp)
    return space
