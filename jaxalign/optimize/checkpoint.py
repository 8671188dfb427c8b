"""Checkpoints of an evolution run with orbax: arrays and a JSON record in one atomic step.

Each checkpoint is one orbax step (step number = generations done) holding two items:

* ``arrays``: the leaves of a pytree (strategy state, best-so-far, history...) as a flat dict
  ``{"leaf_00000": np.ndarray, ...}``, written with ``StandardSave``;
* ``record``: JSON with the fingerprint of the run, the generation, and for every leaf its key path,
  shape and dtype.

Orbax writes a step into a temporary folder and renames it when complete, so a run killed mid-save
leaves the previous steps intact and an unfinished step is never listed; because the record lives
in the same step as the arrays, a fingerprint is never trusted without its arrays or vice versa.

Orbax never sees evosax's ``flax.struct`` State classes: the pytree is flattened here and rebuilt
on restore from the treedef of a live template (a freshly initialised state of the same strategy),
so no custom type handler is needed and restored leaves are bit-identical numpy copies.
Zero-size leaves (which orbax refuses to write) are recorded by shape and dtype only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT_VERSION = 1


def _leaf_name(index: int) -> str:
    return f"leaf_{index:05d}"


def _paths_and_leaves(tree: Any) -> tuple[list[str], list[np.ndarray], Any]:
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [jax.tree_util.keystr(path) for path, _ in with_paths]
    leaves = [np.asarray(leaf) for _, leaf in with_paths]
    return paths, leaves, treedef


def _short(value: Any) -> str:
    """``repr`` of a value, with 64-hex-digit digests cut to their first 12 digits."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return repr(value[:12] + "...")
    return repr(value)


def flat_differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Describe every key where two nested JSON-like dicts differ, e.g. ``"config.seed: 0 != 1"``.

    Content digests (64 hex digits) are shown by their first 12 digits.
    """
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if key not in saved:
            out.append(f"{name}: absent in checkpoint, {_short(current[key])} now")
        elif key not in current:
            out.append(f"{name}: {_short(saved[key])} in checkpoint, absent now")
        elif isinstance(saved[key], Mapping) and isinstance(current[key], Mapping):
            out.extend(flat_differences(saved[key], current[key], prefix=f"{name}."))
        elif saved[key] != current[key]:
            out.append(f"{name}: {_short(saved[key])} in checkpoint != {_short(current[key])} now")
    return out


_ABSENT = object()


def changed_fields(saved: Mapping[str, Any], current: Mapping[str, Any], *,
                   order: Sequence[str] = (), prefix: str = "") -> list[str]:
    """Every key where two nested JSON-like dicts differ, as ``"population: 8 -> 16"``
    (checkpoint -> now), for a person to read.

    Top-level keys come in ``order`` first, then the others sorted, so the settings a person
    chose can lead and content digests (64 hex digits, shown by their first 12) follow. A key on
    one side only reads ``"content: absent in checkpoint, {...} now"`` (or ``"... in checkpoint,
    absent now"``).
    """
    rank = {key: i for i, key in enumerate(order)}
    keys = sorted(set(saved) | set(current), key=lambda k: (rank.get(k, len(rank)), k))
    out = []
    for key in keys:
        name = f"{prefix}{key}"
        old, new = saved.get(key, _ABSENT), current.get(key, _ABSENT)
        if old is _ABSENT:
            out.append(f"{name}: absent in checkpoint, {_short(new)} now")
        elif new is _ABSENT:
            out.append(f"{name}: {_short(old)} in checkpoint, absent now")
        elif isinstance(old, Mapping) and isinstance(new, Mapping):
            out.extend(changed_fields(old, new, prefix=f"{name}."))
        elif old != new:
            out.append(f"{name}: {_short(old)} -> {_short(new)}")
    return out


def normalise_json(value: Any, what: str = "fingerprint") -> Any:
    """Round-trip through JSON (tuples become lists); clear error if not JSON-serialisable."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except TypeError as err:
        raise ValueError(f"{what} must be JSON-serialisable (str, int, float, bool, None, lists, dicts): {err}") from err


class RunCheckpointer:
    """Saves and restores the pytree of one run in ``directory`` (keeps the latest ``max_to_keep``).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> RunCheckpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._manager.close()

    def latest_step(self) -> int | None:
        """The newest complete step (generations done), or None if there is none."""
        return self._manager.latest_step()

    def save(self, step: int, tree: Any, record: Mapping[str, Any]) -> None:
        """Write ``tree`` (a pytree of arrays) and ``record`` (JSON-able dict) as step ``step``.

        A write that fails (disk full, folder removed or read-only) raises ``OSError`` saying
        which earlier checkpoint is still good: it is never touched by a failed write.
        """
        try:
            self._save(step, tree, record)
        except OSError as error:
            good = self.latest_step()
            raise OSError(
                error.errno,
                f"could not write the checkpoint of generation {step} into {self.directory!r} "
                f"({error.strerror or error}); "
                + (f"the last good checkpoint is generation {good}: free space or fix the folder, then resume"
                   if good is not None and good != step else "no earlier checkpoint is kept"),
            ) from error

    def check_resumable(self, step: int, fingerprint: Mapping[str, Any], generations: int) -> dict[str, Any]:
        """The record of ``step`` after checking a run with ``fingerprint`` may resume from it.

        Raises ``ValueError`` listing every field of the fingerprint that differs, or when the
        checkpoint lies beyond ``generations``.
        """
        record = self.read_record(step)
        differences = flat_differences(record.get("fingerprint", {}), fingerprint)
        if differences:
            raise ValueError(
                f"refusing to resume from {self.directory!r}: the checkpoint was made by a different "
                f"configuration or content ({'; '.join(differences)})")
        if step > generations:
            raise ValueError(
                f"the checkpoint in {self.directory!r} is at generation {step}, beyond "
                f"generations={generations}; ask for at least {step} generations")
        return record

    def _save(self, step: int, tree: Any, record: Mapping[str, Any]) -> None:
        paths, leaves, _ = _paths_and_leaves(tree)
        arrays = {_leaf_name(i): leaf for i, leaf in enumerate(leaves) if leaf.size > 0}
        full_record = dict(normalise_json(dict(record), "checkpoint record"))
        full_record["format_version"] = FORMAT_VERSION
        full_record["leaves"] = [
            {"path": p, "shape": list(leaf.shape), "dtype": leaf.dtype.str} for p, leaf in zip(paths, leaves)
        ]
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(arrays), record=ocp.args.JsonSave(full_record)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def read_record(self, step: int) -> dict[str, Any]:
        """The JSON record of ``step`` (cheap: no arrays are read)."""
        restored = self._manager.restore(
            int(step), args=ocp.args.Composite(record=ocp.args.JsonRestore())
        )
        return dict(restored["record"])

    def restore(self, step: int, template: Any, free_leading_axis: tuple[str, ...] = ()) -> Any:
        """Read step ``step`` into the structure of ``template``.

        Key paths and dtypes must match the template; shapes must match too, except the leading
        axis of leaves whose key path starts with one of ``free_leading_axis`` (e.g. histories whose
        length depends on the generation). Raises ``ValueError`` naming the first mismatch.
        """
        record = self.read_record(step)
        if record.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint {self.directory}/{step} has format version {record.get('format_version')}, "
                f"this jaxalign reads version {FORMAT_VERSION}"
            )
        t_paths, t_leaves, treedef = _paths_and_leaves(template)
        saved = record["leaves"]
        if [s["path"] for s in saved] != t_paths:
            raise ValueError(
                f"checkpoint {self.directory}/{step} holds a different structure: saved leaves "
                f"{[s['path'] for s in saved]}, expected {t_paths} (did the fitness function's aux change?)"
            )
        for spec, t_leaf in zip(saved, t_leaves):
            shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
            free = spec["path"].startswith(free_leading_axis)
            expected = t_leaf.shape[1:] if free else t_leaf.shape
            if dtype != t_leaf.dtype or (shape[1:] if free else shape) != expected:
                raise ValueError(
                    f"checkpoint leaf {spec['path']} has {dtype}{list(shape)}, expected "
                    f"{t_leaf.dtype}{list(t_leaf.shape)}"
                )
        restored = self._manager.restore(
            int(step), args=ocp.args.Composite(arrays=ocp.args.StandardRestore())
        )["arrays"]
        leaves = []
        for i, spec in enumerate(saved):
            shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
            leaf = restored.get(_leaf_name(i)) if restored else None
            leaves.append(np.zeros(shape, dtype) if leaf is None else np.asarray(leaf, dtype=dtype))
        return jax.tree_util.tree_unflatten(treedef, leaves)
