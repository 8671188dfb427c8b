"""Run folders and resuming: is ``out`` fit for a run (:func:`check_out_dir`), and may a saved
run continue under this configuration (:func:`check_resume`, :func:`resume_differences`)?
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxalign import optimizers
from jaxalign.config import AlignConfig
from jaxalign.fingerprint import targets_fingerprint
from jaxalign.survey import Instrument, Target


CHECKPOINT_FOLDER = "checkpoints"


def check_out_dir(out: str | os.PathLike, *, resume: bool, cli: bool = False) -> Path:
    """Checks that ``out`` can hold a run: a folder (or one that can be made), writable, and not
    holding another run unless resuming. Creates nothing: :func:`run_pipeline` makes the folder
    when the run starts and removes what it made there if the run fails before its first
    checkpoint, so a run refused or failed early leaves no empty folder behind.

    ``cli``: word the messages for the command line (``--resume``) instead of the API
    (``resume=True``).
    """
    out = Path(out)
    where = f"--out {str(out)!r}" if cli else f"out {str(out)!r}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{where} exists and is not a folder")
    existing = out
    while not existing.exists() and existing != existing.parent:  # the nearest folder that exists
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{str(existing)!r} is not a folder")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".jaxalign-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"cannot write to {where}: {error.strerror or error}") from None
    holds_run = any((out / name).exists() for name in ("results.json", "summary.json", CHECKPOINT_FOLDER))
    if holds_run and not resume:
        raise ValueError(
            f"{str(out)!r} already holds a run; pass --resume to continue it, or choose another --out"
            if cli else
            f"{str(out)!r} already holds a run; pass resume=True to continue it, or choose another out folder")
    return out


#: Config fields a checkpoint does not record (:meth:`jaxalign.optimize.pipeline.Problem.fingerprint`
#: leaves them out): they may change on resume (``generations`` only upwards, and never for a
#: method whose steps depend on the total: an optimizer's ``fixed_total``).
RESUMABLE_CHANGES: tuple[str, ...] = ("generations", "chunk_size", "checkpoint_every", "baselines")

#: Config fields a checkpoint records only when they differ from these values (what a run
#: recorded before they existed), so checkpoints of soft-prompt runs keep their fingerprint; a
#: resume compares them on either side (:func:`check_resume`).
RECORDED_UNLESS_DEFAULT: dict[str, Any] = {"intervention": "soft_prompt", "layer": None}

def recorded_fields(config: AlignConfig) -> dict[str, Any]:
    """The config fields a checkpoint records and a resume must match: all but
    :data:`RESUMABLE_CHANGES`, with ``generations`` kept for an optimizer whose steps depend on
    the run's total (its ``fixed_total``: the hybrid's switch from its evolution phase to Adam
    is a share of the whole budget, so more generations would move the switch and mix the
    phases of a resumed run; the change is refused before any weight is read)."""
    free = set(RESUMABLE_CHANGES)
    if optimizers.get(config.method).fixed_total:
        free.discard("generations")
    return {key: value for key, value in config.to_dict().items() if key not in free
            and not (key in RECORDED_UNLESS_DEFAULT and value == RECORDED_UNLESS_DEFAULT[key])}


# the order in which a refused resume lists what changed: the settings a person chose first,
# content digests (the "content" entry) after them
_SETTINGS_ORDER: tuple[str, ...] = (
    "model", "dtype", "wording", "targets", *(f.name for f in dataclasses.fields(AlignConfig)), "n")


def latest_record(out_dir: Path) -> tuple[int, dict[str, Any]] | None:
    """``(generation, record)`` of the newest checkpoint under ``out_dir``; ``None`` if none (reads
    no array, creates nothing)."""
    from jaxalign.optimize.checkpoint import RunCheckpointer

    folder = Path(out_dir) / CHECKPOINT_FOLDER
    if not folder.is_dir():
        return None
    checkpointer = RunCheckpointer(str(folder.resolve()))
    try:
        latest = checkpointer.latest_step()
        return None if latest is None else (latest, checkpointer.read_record(latest))
    finally:
        checkpointer.close()


def with_later_defaults(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's fingerprint with every :class:`AlignConfig` field that ``current`` records
    and it lacks set to the field's default: a setting added to the library after the checkpoint
    was written reads as the behaviour the run had (every new setting defaults to the earlier
    behaviour)."""
    from jaxalign.optimize.checkpoint import normalise_json

    out = dict(saved)
    for field in dataclasses.fields(AlignConfig):
        if field.name in current and field.name not in out and field.default is not dataclasses.MISSING:
            out[field.name] = normalise_json({"v": field.default})["v"]
    return out


def resume_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       dimensions: Sequence[str]) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's, for a person to read:
    ``["population: 8 -> 16", ...]`` (checkpoint -> now), the settings first (model, dtype,
    wording, targets, then :class:`AlignConfig`'s fields), content digests last. Targets of the
    same names are compared per dimension (``"targets.Japan.PDI: 54.0 -> 55.0"``); a setting the
    checkpoint predates reads as its default (:func:`with_later_defaults`)"""
    from jaxalign.optimize.checkpoint import changed_fields

    saved, current = with_later_defaults(saved, current), dict(current)
    order = list(_SETTINGS_ORDER)
    old, new = saved.get("targets"), current.get("targets")
    if isinstance(old, list) and isinstance(new, list):
        old_names, new_names = [t.get("name") for t in old], [t.get("name") for t in new]
        if old_names != new_names:
            saved["targets"], current["targets"] = ", ".join(map(str, old_names)), ", ".join(map(str, new_names))
        else:
            del saved["targets"], current["targets"]
            for name, a, b in zip(new_names, old, new):
                key = f"targets.{name}"
                saved[key] = dict(zip(dimensions, a.get("dims", [])))
                current[key] = dict(zip(dimensions, b.get("dims", [])))
                order.insert(order.index("targets") + 1, key)
    return changed_fields(saved, current, order=order)


def resume_refusal(directory: str | os.PathLike, differences: Sequence[str], *, cli: bool = False) -> str:
    """The one-line message refusing a resume: the changed settings first, then content."""
    settings = [d for d in differences if not d.startswith("content")]
    content = [d for d in differences if d.startswith("content")]
    parts = []
    if settings:
        parts.append(f"the settings differ from the checkpoint's (checkpoint -> now): {'; '.join(settings)}")
    if content:
        parts.append(f"what the run is made of differs (checkpoint -> now): {'; '.join(content)}")
    elsewhere = "another --out" if cli else "another out folder"
    return (f"refusing to resume from {str(directory)!r}: {'; and '.join(parts)}. Resume with the "
            f"checkpoint's settings, or start the new run in {elsewhere}")


def check_resume(
    out: str | os.PathLike,
    config: AlignConfig,
    targets: Sequence[Target],
    *,
    instrument: Instrument,
    model: str | None = None,
    dtype: str | None = None,
    cli: bool = False,
) -> int | None:
    """Refuses, before any model is loaded or anything compiled, to resume the run checkpointed in
    ``out`` with settings a person changed (``population: 8 -> 16``).

    Compares what the checkpoint recorded of ``config`` (all fields but
    :data:`RESUMABLE_CHANGES`; ``chat_date`` only when set, a resume inherits the run's; the
    intervention and its layer, :data:`RECORDED_UNLESS_DEFAULT`, on either side), the
    targets, the wording's name, and ``model`` / ``dtype`` when given (the name passed to
    :func:`jaxalign.load_model` and its dtype name). The content (weights, rendered tokens,
    search space) is compared after the model is loaded. ``cli``: word the messages for the
    command line. Returns the checkpoint's generation, or ``None`` when ``out`` holds none.
    """
    latest = latest_record(Path(out))
    if latest is None:
        return None
    step, record = latest
    saved = record.get("fingerprint", {})
    fields = recorded_fields(config)
    if config.chat_date is None:
        del fields["chat_date"]
    current: dict[str, Any] = {"wording": instrument.wording, "targets": targets_fingerprint(targets), **fields}
    if model is not None:
        current["model"] = str(model)
    if dtype is not None:
        current["dtype"] = str(dtype)
    from jaxalign.optimize.checkpoint import normalise_json

    current = normalise_json(current)
    compared = {k: saved[k] for k in current if k in saved}
    for key, default in RECORDED_UNLESS_DEFAULT.items():  # left out at its default, on either side
        if key in saved or key in current:
            compared[key], current[key] = saved.get(key, default), current.get(key, default)
    differences = resume_differences(compared, current, instrument.dimensions)
    if differences:
        raise ValueError(resume_refusal(Path(out) / CHECKPOINT_FOLDER, differences, cli=cli))
    if optimizers.get(config.method).unit == "gen" and step > config.generations:
        asked = f"--generations {config.generations}" if cli else f"generations={config.generations}"
        raise ValueError(f"the checkpoint in {str(Path(out) / CHECKPOINT_FOLDER)!r} is at generation {step}, "
                         f"beyond {asked}; ask for at least {step} generations")
    return step
