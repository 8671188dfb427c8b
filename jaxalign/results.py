"""What an alignment run returns: :class:`AlignResult` (one target) and :class:`AlignResults`
(several), with their JSON, soft-prompt files and figures (:func:`plot_dims`, :func:`plot_targets`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxalign._io import json_number, write_text_atomic
from jaxalign.baselines import BaselineResult
from jaxalign import tuning
from jaxalign.config import AlignConfig
from jaxalign.survey import Target


@dataclasses.dataclass(frozen=True)
class AlignResult:
    """The outcome of :func:`align`.

    Attributes:
      target: the target profile.
      soft_prompt: ``(K, d)`` float32, the best prompt found (``(0, d)``, no soft prompt, when
        another intervention was tuned: ``config.intervention``).
      steering: ``(d,)`` float32, the best steering vector of a steering run (added after block
        ``config.layer``); ``None`` otherwise.
      file_metadata: the provenance the tuned intervention's file records beyond what
        :meth:`prompt_metadata` gives (a steering file's :func:`~jaxalign.interventions.steering.
        steering_metadata`); ``None`` for a soft prompt.
      dims: ``(D,)`` the aligned model's indices; ``loss``: its L1 loss (mean over available dims).
      probs: ``(Q, 5)`` the aligned model's answer distribution per item.
      baselines: name -> :class:`~jaxalign.baselines.BaselineResult` (same scorer and readout).
      history: per generation (row 0 = the initial population): ``best_loss``, ``mean_loss``,
        ``best_dims`` (best-so-far), as lists.
      model, wording, dimensions: what produced the numbers.
      config: the :class:`AlignConfig`.
      wall_s, compile_s: seconds for the whole run and for compiling the optimizer loop.
      s_per_generation: steady seconds per optimizer step (one population scored and updated),
        measured over the run's device chunks (compile, set-up, baselines and checkpoints
        excluded); NaN where not measured.
      evaluations: forward passes of one prompt the optimizer spent (an Adam step counted at its
        measured cost, ``cost``).
      cost: for ``"gradient"``/``"hybrid"``, an Adam step's cost read from the compiled programs
        (:class:`jaxalign.optimize.pipeline.RunCost` as a dict); ``None`` otherwise.
      objective: the run's loss (kind, constants, reference), the presentations scored, the
        prompt's dims in each, and the position / content parts of its shift from the plain model
        (when the normal and reversed orders were both scored).
      method: how the prompt was found: ``"de"`` (evosax strategy ``config.strategy``),
        ``"gradient"`` (:func:`jaxalign.api.gradient_align`), ``"de-both-orders"``.
    """

    target: Target
    soft_prompt: np.ndarray
    dims: np.ndarray
    loss: float
    probs: np.ndarray
    baselines: dict[str, BaselineResult]
    history: dict[str, list]
    model: str
    wording: str
    dimensions: tuple[str, ...]
    config: AlignConfig
    wall_s: float
    compile_s: float
    evaluations: int | float
    resumed_from: int | None = None
    method: str = "de"
    s_per_generation: float = float("nan")
    partial: bool = False
    fingerprints: dict[str, Any] | None = None
    chat_template: str | None = None
    cost: dict[str, Any] | None = None  # gradient/hybrid: an Adam step's measured cost (RunCost.to_dict)
    objective: dict[str, Any] | None = None  # the loss kind, its constants, presentations, shifts
    steering: np.ndarray | None = None  # a steering run's vector (d,)
    file_metadata: dict[str, str] | None = None  # the tuned file's provenance (steering)

    def to_json(self) -> dict[str, Any]:
        """Everything ``results.json`` holds (NaN written as null)."""

        def dims_dict(values) -> dict[str, float | None]:
            return {n: json_number(v) for n, v in zip(self.dimensions, np.asarray(values, np.float64))}

        methods = {
            name: {"loss": json_number(b.loss), "dims": dims_dict(b.dims), "system": b.system,
                   "answers": np.asarray(b.probs, np.float64).round(6).tolist()}
            for name, b in self.baselines.items()
        }
        methods["optimized"] = {"loss": json_number(self.loss), "dims": dims_dict(self.dims),
                                 "method": self.method}
        return {
            "jaxalign_version": _version(),
            "model": self.model,
            "wording": self.wording,
            "chat_template": self.chat_template,
            "chat_date": self.config.chat_date,
            "target": {
                "name": self.target.name,
                "code": self.target.code,
                "dims": dims_dict(self.target.values),
                "source": self.target.source,
            },
            "loss": "mean absolute difference over the target's available dimensions"
                    + ("" if not self.objective else f" ({self.objective.get('description')})"),
            **({"objective": self.objective} if self.objective else {}),
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            **tuning.get(self.config.intervention).describe(self),
            "methods": methods,
            "answers": np.asarray(self.probs, np.float64).round(6).tolist(),
            "history": {
                "best_loss": [json_number(v) for v in self.history["best_loss"]],
                "mean_loss": [json_number(v) for v in self.history["mean_loss"]],
                **({"phase": list(self.history["phase"])} if "phase" in self.history else {}),
            },
            "evaluations": self.evaluations,
            **({"cost": self.cost} if self.cost is not None else {}),
            "resumed_from": self.resumed_from,
            "wall_s": round(self.wall_s, 3),
            "compile_s": round(self.compile_s, 3),
            "s_per_generation": json_number(round(self.s_per_generation, 5)),
            "fingerprints": self.fingerprints,
            **({"partial": True, "generations_done": len(self.history["best_loss"]) - 1}
               if self.partial else {}),
        }

    def save(self, out: str | os.PathLike) -> Path:
        """Writes ``results.json``, the tuned intervention's file (``soft_prompt.safetensors``, or
        ``steering.safetensors`` for a steering run: :mod:`jaxalign.tuning`) and ``dims.png`` into ``out``.

        Each file is written to a temporary name and renamed, so a reader never sees half a file.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tuning.get(self.config.intervention).save(self, out)
        plot_dims(self, out / "dims.png")
        write_text_atomic(out / "results.json", json.dumps(self.to_json(), indent=2) + "\n")
        return out

    def prompt_metadata(self) -> dict[str, str]:
        """The metadata stored with the soft prompt (what ``jaxalign score`` needs to reuse it)."""
        meta = {
            "model": self.model,
            "wording": self.wording,
            "readout": self.config.readout,
            "slot": self.config.slot,
            "system": self.config.system or "",
            "chat_template": self.chat_template or "",
            "chat_date": self.config.chat_date or "",
            "target": self.target.name,
            "loss": f"{self.loss:.6g}",
            "hidden_size": str(self.soft_prompt.shape[1]),
        }
        local = Path(self.model).expanduser()
        if self.model != "tiny-random" and local.exists():  # a folder or GGUF file: its absolute path too
            meta["model_path"] = str(local.resolve())
        if self.fingerprints:
            from jaxalign.fingerprint import model_digest

            model = self.fingerprints["model"]
            meta.update(
                model_fingerprint=model_digest(model),
                chat_format=model.get("chat_template", ""),
                wording_fingerprint=self.fingerprints["instrument"]["items"],
                target_fingerprint=self.fingerprints["target"]["values"],
            )
        return meta


def _version() -> str:
    from jaxalign import __version__

    return __version__


@dataclasses.dataclass(frozen=True)
class AlignResults:
    """The outcome of :func:`align` for a list of targets: one :class:`AlignResult` per target.

    Index it by position or target name (``results["China"]``); iterate over it.
    """

    results: tuple[AlignResult, ...]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, key: int | str) -> AlignResult:
        if isinstance(key, str):
            for result in self.results:
                if key in (result.target.name, result.target.code):
                    return result
            raise KeyError(f"no target {key!r}; targets: {', '.join(r.target.name for r in self.results)}")
        return self.results[key]

    def summary(self) -> list[dict[str, Any]]:
        """One row per target: name, available dimensions, loss per method (NaN as None)."""
        rows = []
        for r in self.results:
            losses = {name: json_number(b.loss) for name, b in r.baselines.items()}
            losses["aligned"] = json_number(r.loss)
            rows.append({"target": r.target.name, "code": r.target.code,
                         "dims_available": list(r.target.available), "loss": losses})
        return rows

    def to_json(self) -> dict[str, Any]:
        first = self.results[0]
        rows = self.summary()
        methods = list(rows[0]["loss"])
        means = {m: json_number(np.nanmean([np.nan if row["loss"].get(m) is None else row["loss"][m]
                                     for row in rows])) for m in methods}
        return {
            "jaxalign_version": _version(), "model": first.model, "wording": first.wording,
            "method": first.method, "config": first.config.to_dict(), "n_targets": len(rows),
            "loss": "mean absolute difference over each target's available dimensions",
            "targets": rows, "mean_loss": means,
            "folders": {r.target.name: target_folder(r.target) for r in self.results},
            "wall_s": round(max(r.wall_s for r in self.results), 3),
            "compile_s": round(first.compile_s, 3),
            "s_per_generation": json_number(round(first.s_per_generation, 5)),
        }

    def table(self) -> str:
        """A Markdown table: one row per target, L1 per method, and the mean row."""
        summary = self.to_json()
        methods = list(summary["mean_loss"])
        lines = ["| target | dims | " + " | ".join(methods) + " |",
                 "|---|---|" + "---:|" * len(methods)]
        cell = lambda v: "-" if v is None else f"{v:.2f}"
        for row in summary["targets"]:
            lines.append(f"| {row['target']} | {len(row['dims_available'])} | "
                         + " | ".join(cell(row["loss"].get(m)) for m in methods) + " |")
        lines.append("| **mean** | | " + " | ".join(cell(summary["mean_loss"][m]) for m in methods) + " |")
        return "\n".join(lines)

    def save(self, out: str | os.PathLike) -> Path:
        """Writes each target's files into ``out/<target>/`` and ``summary.md``, ``summary.json``,
        ``summary.png`` (model vs target per dimension, every target) into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for result in self.results:
            result.save(out / target_folder(result.target))
        first = self.results[0]
        header = (f"# jaxalign: {len(self)} targets\n\nmodel {first.model}; wording {first.wording}; "
                  f"method {first.method}; readout {first.config.readout}; population "
                  f"{first.config.population}; generations {first.config.generations}; seed "
                  f"{first.config.seed}\n\nL1 = mean absolute difference over each target's available "
                  "dimensions.\n\n")
        write_text_atomic(out / "summary.md", header + self.table() + "\n")
        plot_targets(self.results, out / "summary.png")
        write_text_atomic(out / "summary.json", json.dumps(self.to_json(), indent=2) + "\n")
        return out


def plot_dims(result: AlignResult, path: str | os.PathLike) -> None:
    """Bar chart of the six dimensions (target, each baseline, the aligned prompt) saved to ``path``.

    Drawn without pyplot (:func:`jaxalign.plots.dims_figure`), so the user's matplotlib backend
    is never switched.
    """
    from jaxalign.plots import dims_figure, save_figure

    save_figure(dims_figure(result.to_json()), path)


def plot_targets(results: Sequence[AlignResult], path: str | os.PathLike) -> None:
    """Model vs target score per dimension, one point per target: the aligned prompt and each
    baseline (the diagonal is a perfect match; targets missing a dimension are left out there).

    Drawn without pyplot, so the user's matplotlib backend is never switched."""
    from matplotlib.figure import Figure

    from jaxalign.plots import save_figure

    dimensions = results[0].dimensions
    names = ["aligned"] + list(results[0].baselines)
    n_cols = min(3, len(dimensions))
    n_rows = -(-len(dimensions) // n_cols)
    fig = Figure(figsize=(4 * n_cols, 3.6 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    markers = {"aligned": "o", "naive": "x", "persona": "^", "icl": "s"}
    for j, dim in enumerate(dimensions):
        ax = axes[j // n_cols][j % n_cols]
        target = np.array([float(r.target.values[j]) for r in results])
        ok = ~np.isnan(target)
        for name in names:
            model = np.array([float(r.dims[j]) if name == "aligned" else
                              float(r.baselines[name].dims[j]) if name in r.baselines else np.nan
                              for r in results])
            ax.scatter(target[ok], model[ok], s=18, marker=markers.get(name, "o"), label=name,
                       alpha=0.8)
        if ok.any():
            low, high = float(np.nanmin(target)), float(np.nanmax(target))
            ax.plot([low, high], [low, high], color="black", linewidth=0.6)
        if ok.sum() <= 8:
            for r, x in zip([r for r, k in zip(results, ok) if k], target[ok]):
                ax.annotate(r.target.code or r.target.name, (x, float(r.dims[j])), fontsize=6)
        ax.set_title(dim)
        ax.set_xlabel("target")
        ax.set_ylabel("model")
    for j in range(len(dimensions), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].axis("off")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{results[0].model}: model vs target, {len(results)} targets")
    fig.tight_layout()
    save_figure(fig, path)


def target_folder(target: Target) -> str:
    """The sub-folder name of a target in a several-target run (its name, filesystem-safe)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", target.name).strip("._-")
    return name or (target.code or "target")
