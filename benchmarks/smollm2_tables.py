"""The real-model study's tables (issue 28), read from the committed study folders.

``benchmarks/smollm2_study.sh`` writes three folders under ``benchmarks/results/`` with
``benchmarks/optimizers.py``; this script joins them into the tables RESULTS.md and the README
carry, so every figure there is read from a committed file::

    all four   smollm2_study_user_end              U.S.A., China, India, Saudi Arabia; seed 0; user_end
    seeds      + smollm2_study_user_end_china_seed1  China, seed 1: China over seeds 0-1
    layouts    smollm2_study_user_start_china      China, seed 0, user_start: against user_end

Columns: L1 on the tuned wording, the held-out wording and the reversed option order; Kendall tau
of the six tuned dimensions with the target's; the L1 with constants anchored on the plain model's
answers read as U.S.A. (``optimizers.readings``). A folder not there yet (a piece not run) is left
out and said so. Writes ``benchmarks/results/smollm2_study_tables.md`` and prints it.

    python benchmarks/smollm2_tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
FOLDERS = {"all": "smollm2_study_user_end", "seed1": "smollm2_study_user_end_china_seed1",
           "user_start": "smollm2_study_user_start_china"}
METRICS = ("tuned", "heldout", "reversed", "tau", "anchored")
NAMES = {"tuned": "tuned L1", "heldout": "held-out L1", "reversed": "reversed L1", "tau": "Kendall tau",
         "anchored": "anchored L1"}
ORDER = ("de-paper", "de", "SNES", "gradient", "hybrid", "CMA_ES", "Sep_CMA_ES", "de-p8")
LABELS = {"de-paper": "DE (paper)", "de": "DE (defaults)", "gradient": "Adam", "hybrid": "hybrid (SNES, then Adam)"}


def load(name: str) -> dict | None:
    path = RESULTS / FOLDERS[name] / "optimizers.json"
    return json.loads(path.read_text()) if path.is_file() else None


def methods(study: dict) -> list[str]:
    found = {s["method"] for s in study["searches"]}
    return [m for m in ORDER if m in found]


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def fixed_rows(study: dict, countries: list[str], *, before: str = "", after: str = "") -> list[str]:
    """The plain model and the written prompts (no search): their mean over ``countries``, with
    the cells ``before`` and ``after`` the metrics."""
    naive = study["naive"]
    rows = [("naive (plain model)", naive)] + [(f"{n} (written prompt)", f) for n, f in naive.get("written", {}).items()]
    return [f"| {label} | {before}" + " | ".join(f"{np.mean([figures[m][c] for c in countries]):.2f}" for m in METRICS)
            + f" |{after}" for label, figures in rows]


def table_all(study: dict) -> list[str]:
    countries = study["setup"]["countries"]
    lines = [f"| method | {' | '.join(NAMES[m] for m in METRICS)} | forward passes | Adam step |",
             "|---|" + "---:|" * (len(METRICS) + 2)]
    for m in methods(study):
        mine = [s for s in study["searches"] if s["method"] == m]
        cost = mine[0].get("cost") or {}
        step = f"{cost['forwards_per_step']:.2f}" if m in ("gradient", "hybrid") and cost else "-"
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(f"{np.mean([s[k] for s in mine]):.2f}" for k in METRICS)
                     + f" | {mine[0]['evaluations']:.0f} | {step} |")
    return lines + fixed_rows(study, countries, after=" 0 | - |")


def table_china_seeds(studies: list[dict]) -> list[str]:
    lines = [f"| method | seeds | {' | '.join(NAMES[m] for m in METRICS)} |", "|---|---|" + "---:|" * len(METRICS)]
    searches = [s for study in studies for s in study["searches"] if s["country"] == "China"]
    for m in [m for m in ORDER if any(s["method"] == m for s in searches)]:
        mine = sorted((s for s in searches if s["method"] == m), key=lambda s: s["seed"])
        lines.append(f"| {LABELS.get(m, m)} | {','.join(str(s['seed']) for s in mine)} | "
                     + " | ".join(cell([s[k] for s in mine]) for k in METRICS) + " |")
    return lines + fixed_rows(studies[0], ["China"], before="- | ")


def table_layouts(user_end: dict, user_start: dict) -> list[str]:
    lines = ["| method | user_start: tuned / held-out / reversed L1 | user_end: tuned / held-out / reversed L1 |",
             "|---|---|---|"]

    def fig(study, m):
        s = [s for s in study["searches"] if s["method"] == m and s["country"] == "China" and s["seed"] == 0]
        return " / ".join(f"{s[0][k]:.2f}" for k in ("tuned", "heldout", "reversed")) if s else "not run"

    for m in [m for m in ORDER if m in methods(user_start) or m in methods(user_end)]:
        lines.append(f"| {LABELS.get(m, m)} | {fig(user_start, m)} | {fig(user_end, m)} |")
    lines.append("| naive (plain model) | " + " | ".join(
        " / ".join(f"{study['naive'][k]['China']:.2f}" for k in ("tuned", "heldout", "reversed"))
        for study in (user_start, user_end)) + " |")
    step = [s["s_per_step"] / s_members for study, s_members in ((user_start, 8), (user_end, 32))
            for s in study["searches"][:1]]
    lines += ["", f"Loop seconds per step and member (first method of each folder): user_start "
              f"{step[0]:.2f} s, user_end {step[1]:.2f} s (same CPU, not the same moment: see the "
              "folders' load averages)."]
    return lines


def main() -> str:
    studies = {name: load(name) for name in FOLDERS}
    out = ["# SmolLM2-135M-Instruct: the real-model study's tables", "",
           "Read from `benchmarks/results/` by `python benchmarks/smollm2_tables.py`; the commands are in "
           "each folder's `optimizers.json` (`commands`).", ""]
    first = studies["all"]
    if first is None:
        return "\n".join(out + ["No study folder yet: run `bash benchmarks/smollm2_study.sh`.", ""])
    setup = first["setup"]
    out += [f"## Four countries, seed 0, slot {setup['slot']} (`{FOLDERS['all']}`)", "",
            f"Mean over {', '.join(setup['countries'])}; K = {setup['k']}, subspace {setup['subspace']}, "
            f"P = {setup['population']}, {setup['generations']} generations = {setup['budget']} forward passes "
            f"of one prompt per search (Adam: its steps at their compiled cost). Dates "
            f"{first['commands'][0]['date'][:10]} ({len(first['commands'])} pieces).", ""]
    out += table_all(first) + [""]
    parts = [first] + ([studies["seed1"]] if studies["seed1"] else [])
    out += ["## China over seeds (slot user_end)", "",
            "Mean ± sample std over the seeds listed; seed 0 from the four-country folder"
            + (f", seed 1 from `{FOLDERS['seed1']}`." if studies["seed1"] else " (seed 1 not run yet)."), ""]
    out += table_china_seeds(parts) + [""]
    if studies["user_start"]:
        out += ["## China, seed 0: the two layouts", "",
                f"`{FOLDERS['user_start']}` (the soft prompt before the item: user_start) against the "
                "four-country folder's China searches (after the item: user_end).", ""]
        out += table_layouts(first, studies["user_start"]) + [""]
    else:
        out += ["## China, seed 0: the two layouts", "", "user_start not run yet.", ""]
    text = "\n".join(out)
    (RESULTS / "smollm2_study_tables.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
