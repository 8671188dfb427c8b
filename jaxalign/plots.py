"""Figures of a run, drawn from its ``results.json`` record.

Every function takes the run record (the dict :meth:`jaxalign.api.AlignResult.to_json` writes,
or the parsed ``results.json`` of a finished or interrupted run) and returns a
:class:`matplotlib.figure.Figure` built without :mod:`matplotlib.pyplot`, so the library never
switches the user's backend: in a notebook, display the figure (it is the cell's value, or
``display(fig)``); in a script, :func:`save_figure` writes it::

    results.json record
      -> dims_figure     six indices per method (target, baselines, aligned), model in the title
      -> loss_figure     best-so-far and population-mean loss per generation
      -> answers_figure  each item's answer distribution (Q items x 5 answers), plain vs aligned

:func:`save_run_figures` writes all three into a run folder (``jaxalign show RUN`` calls it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxalign._io import atomic_path

FIGURES: tuple[str, ...] = ("dims.png", "loss.png", "answers.png")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _values(dims: Mapping[str, Any], names: list[str]) -> np.ndarray:
    return np.array([np.nan if dims.get(n) is None else float(dims[n]) for n in names], np.float64)


def _dimension_names(run: Mapping[str, Any]) -> list[str]:
    return list(run["target"]["dims"])


def dims_figure(run: Mapping[str, Any]):
    """Bar chart of the indices: target, each baseline and the optimized prompt. ``(D,)`` bars each."""
    names = _dimension_names(run)
    series = [("target", _values(run["target"]["dims"], names))]
    losses = {}
    for method, record in run["methods"].items():
        label = "aligned" if method == "optimized" else method
        series.append((label, _values(record["dims"], names)))
        losses[label] = record.get("loss")
    width = 0.8 / len(series)
    fig = _figure(1.6 * len(names) + 2, 4.2)
    ax = fig.subplots()
    for i, (label, values) in enumerate(series):
        xs = np.arange(len(names)) + (i - (len(series) - 1) / 2) * width
        ok = ~np.isnan(values)
        ax.bar(xs[ok], values[ok], width, label=label)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("index (constants C as configured)")
    partial = " (partial run)" if run.get("partial") else ""
    loss_text = ", ".join(f"{k} {v:.1f}" for k, v in losses.items() if v is not None)
    ax.set_title(f"{run['target']['name']} on {run.get('model', '?')}{partial}\nL1: {loss_text}",
                 fontsize="medium")
    ax.legend(fontsize="small", ncols=min(len(series), 5))
    # fixed margins in inches instead of tight_layout (which draws the figure once more to measure
    # it): the labels here have bounded sizes (six short names, indices within +-1000, a two-line
    # title), and a run over every country draws this figure 65 times
    width_in, height_in = fig.get_size_inches()
    fig.subplots_adjust(left=0.9 / width_in, right=1 - 0.15 / width_in, bottom=0.4 / height_in,
                        top=1 - 0.55 / height_in)
    return fig


def loss_figure(run: Mapping[str, Any]):
    """Best-so-far and population-mean loss per generation (row 0: the initial population)."""
    history = run.get("history") or {}
    best = np.array([np.nan if v is None else v for v in history.get("best_loss", [])], np.float64)
    mean = np.array([np.nan if v is None else v for v in history.get("mean_loss", [])], np.float64)
    fig = _figure(6.4, 3.8)
    ax = fig.subplots()
    if mean.size:
        ax.plot(np.arange(mean.size), mean, label="population mean", color="tab:gray")
    if best.size:
        ax.plot(np.arange(best.size), best, label="best so far", color="tab:blue")
    for method, record in run["methods"].items():
        if method != "optimized" and record.get("loss") is not None:
            ax.axhline(record["loss"], linestyle=":", linewidth=1, label=method,
                       color=f"C{2 + list(run['methods']).index(method)}")
    ax.set_xlabel("generation")
    ax.set_ylabel("L1 loss (mean over available dimensions)")
    ax.set_title(f"{run['target']['name']}: loss per generation", fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def answers_figure(run: Mapping[str, Any], plain: str = "naive"):
    """Each item's answer distribution, ``plain`` (a baseline) vs the aligned prompt.

    Stacked bars per item, answer 1 at the bottom; left bar of each pair ``plain``, right bar
    aligned. Items are numbered 1..Q in the instrument's order.
    """
    aligned = np.asarray(run["answers"], np.float64)  # (Q, 5)
    pairs = [("aligned", aligned)]
    base = run["methods"].get(plain, {}).get("answers")
    if base is not None:
        pairs.insert(0, (plain, np.asarray(base, np.float64)))
    n_items = aligned.shape[0]
    fig = _figure(max(6.0, 0.42 * n_items + 2), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(pairs)
    colors = ["#2c7bb6", "#abd9e9", "#ffffbf", "#fdae61", "#d7191c"]
    for j, (label, probs) in enumerate(pairs):
        xs = np.arange(n_items) + (j - (len(pairs) - 1) / 2) * width
        bottom = np.zeros(n_items)
        for a in range(probs.shape[1]):
            ax.bar(xs, probs[:, a], width, bottom=bottom, color=colors[a % len(colors)],
                   edgecolor="black" if label == "aligned" else "none", linewidth=0.3,
                   label=f"answer {a + 1}" if j == 0 else None)
            bottom += probs[:, a]
    ax.set_xticks(np.arange(n_items), [str(i + 1) for i in range(n_items)], fontsize="small")
    ax.set_xlabel("item" + (f" (left: {plain}, right: aligned, outlined)" if len(pairs) > 1 else ""))
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(f"{run['target']['name']}: answer distribution per item", fontsize="medium")
    ax.legend(fontsize="x-small", ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Writes ``fig`` as PNG to ``path`` atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)


def save_run_figures(run: Mapping[str, Any], folder: str | os.PathLike) -> list[Path]:
    """Writes ``dims.png``, ``loss.png`` and ``answers.png`` for ``run`` into ``folder``."""
    folder = Path(folder)
    makers = {"dims.png": dims_figure, "loss.png": loss_figure, "answers.png": answers_figure}
    return [save_figure(makers[name](run), folder / name) for name in FIGURES]
