"""What a run tells the user while it goes: progress on stderr (:class:`RunProgress`), metrics
for TensorBoard / Weights & Biases (:class:`RunLog`), and what a Ctrl-C (or a SIGTERM, see
:func:`sigterm_as_interrupt`) kept (:class:`RunInterrupted`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np



class RunProgress:
    """What a run tells the user while it goes, on stderr (process 0 only).

    ``mode``: ``"bar"`` a tqdm bar over generations with the best loss; ``"lines"`` one plain
    line per device chunk (for logs and non-terminals); ``"auto"`` a bar on a terminal, lines
    otherwise; ``"off"`` nothing. :meth:`phase` prints a line for each phase before the loop
    (rendering prompts, compiling, resuming) in every mode but ``"off"``.
    """

    def __init__(self, total: int, *, enabled: bool | str = True, unit: str = "gen",
                 log: "RunLog | None" = None):
        import sys

        mode = {True: "auto", False: "off"}.get(enabled, enabled)
        if mode not in ("auto", "bar", "lines", "off"):
            raise ValueError(f"progress must be True, False, 'bar', 'lines' or 'off', not {enabled!r}")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.total, self.unit, self._bar = mode, total, unit, None
        self._what = "adam steps" if unit == "step" else "generations"
        self._start = 0
        self.log = log
        self.last_phase: str | None = None  # the latest phase() text (said by an interrupt)

    def record(self, first_generation: int, chunk: Mapping[str, np.ndarray]) -> None:
        """A chunk of history rows, for the run's logger (TensorBoard / wandb), if any."""
        if self.log is not None:
            self.log.record(first_generation, chunk)

    def __bool__(self) -> bool:
        return self.mode != "off"

    def phase(self, text: str) -> None:
        """One line about a phase of the run (before the loop starts, or a notice)."""
        self.last_phase = text
        if self.mode != "off":
            import sys

            print(text, file=sys.stderr, flush=True)

    def start(self, done: int) -> None:
        """The loop starts with ``done`` generations already run (a resumed run)."""
        self._start = done
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=done, desc=self._what, unit=self.unit)

    def update(self, generations_done: int, best_loss: float) -> None:
        if self.mode == "bar":
            if self._bar is None:
                self.start(self._start)
            self._bar.n = generations_done
            self._bar.set_postfix(best_loss=f"{best_loss:.3f}")
            self._bar.refresh()
        elif self.mode == "lines":
            self.phase(f"{self._what[:-1]} {generations_done}/{self.total}: best loss {best_loss:.4f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.log is not None:
            self.log.close()
            self.log = None


LOGGERS: tuple[str, ...] = ("tensorboard", "wandb")


_LOGGER_PACKAGES = {"tensorboard": ("tensorboardX", "pip install 'jaxalign[log]'"),
                    "wandb": ("wandb", "pip install wandb (then wandb login)")}


def check_logger(kind: str) -> None:
    """Raises ``ValueError`` unless ``kind`` is a :data:`LOGGERS` name whose package is installed
    (checked without importing it, so a run can refuse before it loads the model)."""
    import importlib.util

    if kind not in LOGGERS:
        raise ValueError(f"log must be one of {', '.join(LOGGERS)}, not {kind!r}")
    package, install = _LOGGER_PACKAGES[kind]
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"logging to {kind} needs the {package} package: {install}")


class RunLog:
    """Streams each generation's losses and dims to TensorBoard or Weights & Biases while a run goes.

    ``kind="tensorboard"`` writes event files into ``folder`` (needs ``tensorboardX``:
    ``pip install "jaxalign[log]"``); ``kind="wandb"`` logs to a wandb run (needs ``wandb``
    installed and logged in). Per generation ``g`` and target ``t``: ``t/best_loss``,
    ``t/mean_loss`` and ``t/dims/<DIM>`` (the best-so-far prompt's indices).
    """

    def __init__(self, kind: str, folder: str | os.PathLike, *, targets: Sequence[str],
                 dimensions: Sequence[str], config: Mapping[str, Any]):
        self.kind, self.targets, self.dimensions = kind, list(targets), list(dimensions)
        check_logger(kind)
        if kind == "tensorboard":
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=str(folder))
        else:
            import wandb

            self._writer = wandb.init(project="jaxalign", dir=str(folder), config=dict(config),
                                      name=", ".join(self.targets)[:128])

    def record(self, first_generation: int, chunk: Mapping[str, np.ndarray]) -> None:
        """Logs a chunk of history rows (leading axis: generations from ``first_generation``)."""
        best, mean, dims = chunk["best_loss"], chunk["mean_loss"], chunk["best_dims"]  # (S, C), (S, C, D)
        for i in range(best.shape[0]):
            g = first_generation + i
            scalars = {}
            for c, name in enumerate(self.targets):
                scalars[f"{name}/best_loss"] = float(best[i, c])
                scalars[f"{name}/mean_loss"] = float(mean[i, c])
                for d, dim in enumerate(self.dimensions):
                    scalars[f"{name}/dims/{dim}"] = float(dims[i, c, d])
            if self.kind == "tensorboard":
                for tag, value in scalars.items():
                    self._writer.add_scalar(tag, value, g)
            else:
                self._writer.log(scalars, step=g)
        if self.kind == "tensorboard":
            self._writer.flush()

    def close(self) -> None:
        if self.kind == "tensorboard":
            self._writer.close()
        else:
            self._writer.finish()


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`align`: what was kept and how to continue.

    Raised for a Ctrl-C at any point of the run once ``out`` is checked: during the loop, or
    before it (rendering, baselines, compiling: ``generation`` is then -1 and ``phase`` says
    what was under way); :meth:`explain` says how to continue or start again.

    Attributes:
      generation: generations completed when the run stopped (of ``total``); -1 before the loop.
      checkpoint: the generation of the newest checkpoint kept on disk (``None``: none yet).
      checkpoint_dir: where the checkpoints are (``None`` without ``out=``).
      partial: the folder holding the partial results (best prompt so far, ``results.json``
        marked ``"partial": true``), or ``None`` when none were written.
      phase: the last phase the run announced (``"compiling the optimizer loop..."``), set for
        an interrupt before the loop; else ``None``.
    """

    def __init__(self, generation: int, total: int, checkpoint: int | None,
                 checkpoint_dir: str | None, partial: str | None = None, state: Any = None,
                 history: Any = None):
        super().__init__(f"interrupted after generation {generation} of {total}")
        self.generation, self.total, self.checkpoint = generation, total, checkpoint
        self.checkpoint_dir, self.partial = checkpoint_dir, partial
        self.state, self.history = state, history
        self.phase: str | None = None  # what the run was doing, for an interrupt before the loop

    def explain(self, resume_command: str | None = None) -> str:
        """Several lines for the user: what is kept and how to continue (the ``resume_command``
        given, else the ``align(...)`` call with ``resume=True``)."""
        if self.generation < 0:  # before the loop: rendering, baselines, compiling
            during = f" (while {self.phase.rstrip('.')})" if self.phase else ""
            lines = [f"interrupted before the first generation{during}." if self.checkpoint is None else
                     f"interrupted before the run went on from generation {self.checkpoint}{during}."]
        else:
            lines = [f"interrupted after generation {self.generation} of {self.total}."]
        if self.checkpoint is not None:
            lines.append(f"kept: the checkpoint of generation {self.checkpoint} in {self.checkpoint_dir}")
        else:
            lines.append("no checkpoint had been written yet: the run starts again from the beginning")
        if self.partial is not None:
            lines.append(f"partial results (best prompt so far, marked partial) in {self.partial}")
        if self.checkpoint is not None or self.checkpoint_dir is not None:
            lines.append("continue with:" if self.checkpoint is not None else "start it again with:")
            lines.append(f"  {resume_command}" if resume_command else
                         "  the same align(...) call with resume=True")
        return "\n".join(lines)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_as_interrupt() -> Callable[[], None]:
    """Makes SIGTERM stop the run as Ctrl-C does; returns the function that puts the old handler back.

    Preemptible TPU VMs, spot instances and batch schedulers stop a job with SIGTERM, whose
    default action ends the process at once. While this handler is installed, SIGTERM raises
    ``KeyboardInterrupt`` in the main thread, so the run keeps its checkpoint, writes its partial
    results and says how to continue (:class:`RunInterrupted`). Nothing is installed outside the
    main thread or when SIGTERM already has a handler other than the default one (the caller's
    own stays in charge).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, _raise_interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
