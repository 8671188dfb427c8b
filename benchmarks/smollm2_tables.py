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
# point 2: one option changed from the study's setup (China, seed 0, user_end; DE defaults and Adam)
GENERALISATION = {"both orders (`--options both-orders`)": "smollm2_gen_both_orders",
                  "two more tuning wordings (`--extra-wording` x2)": "smollm2_gen_extra_wordings",
                  "start from the persona text (`--init-text persona`)": "smollm2_gen_init_persona",
                  "start from the in-context text (`--init-text icl`)": "smollm2_gen_init_icl",
                  "K = 1": "smollm2_gen_k1", "K = 5": "smollm2_gen_k5", "K = 20": "smollm2_gen_k20",
                  "subspace 16": "smollm2_gen_subspace16", "subspace 256": "smollm2_gen_subspace256"}
# point 3: DE settings at the same budget (China, seeds 0-1, user_end)
SWEEP = {"P = 16, 5 generations": "smollm2_sweep_p16", "P = 4, 23 generations": "smollm2_sweep_p4",
         "initial spread 0.5 (`init_scale`)": "smollm2_sweep_spread0.5",
         "initial spread 2 (`init_scale`)": "smollm2_sweep_spread2", "CR = 0.5": "smollm2_sweep_cr0.5"}
# the chosen DE setting on data it was not chosen on, and DE defaults on China seed 2
REPORT = {"chosen_others": "smollm2_de_chosen_others", "chosen_china2": "smollm2_de_chosen_china_seed2",
          "default_china2": "smollm2_de_default_china_seed2"}
METRICS = ("tuned", "heldout", "reversed", "tau", "anchored")
NAMES = {"tuned": "tuned L1", "heldout": "held-out L1", "reversed": "reversed L1", "tau": "Kendall tau",
         "anchored": "anchored L1"}
ORDER = ("de-paper", "de", "SNES", "gradient", "hybrid", "CMA_ES", "Sep_CMA_ES", "de-p8")
LABELS = {"de-paper": "DE (paper)", "de": "DE (defaults)", "gradient": "Adam", "hybrid": "hybrid (SNES, then Adam)"}


def load(name: str) -> dict | None:
    path = RESULTS / FOLDERS.get(name, name) / "optimizers.json"
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


def searches(study: dict, method: str, country: str = "China") -> list[dict]:
    return sorted((s for s in study["searches"] if s["method"] == method and s["country"] == country),
                  key=lambda s: s["seed"])


def table_generalisation(base: dict) -> tuple[list[str], str]:
    """Point 2: each option against the study's own setup, China seed 0; and the verdict: the
    lowest held-out L1 among the searches whose reversed-order L1 is no worse than the plain model's."""
    plain = {k: base["naive"][k]["China"] for k in METRICS}
    lines = [f"| setting | method | {' | '.join(NAMES[m] for m in METRICS)} | reversed <= plain |",
             "|---|---|" + "---:|" * len(METRICS) + "---|"]
    rows = [("the study's setup (K = 10, subspace 64, one wording, normal order)", base)]
    rows += [(label, load(folder)) for label, folder in GENERALISATION.items()]
    every, missing = [], []  # every: (held-out L1, setting, method, reversed no worse than plain)
    for label, study in rows:
        if study is None:
            missing.append(label)
            continue
        for m in ("de", "gradient"):
            mine = [s for s in searches(study, m) if s["seed"] == 0]
            if not mine:
                continue
            one = mine[0]
            ok = one["reversed"] <= plain["reversed"]
            every.append((one["heldout"], label, m, ok))
            lines.append(f"| {label} | {LABELS.get(m, m)} | " + " | ".join(f"{one[k]:.2f}" for k in METRICS)
                         + f" | {'yes' if ok else 'no'} |")
    lines.append("| naive (plain model) | - | " + " | ".join(f"{plain[k]:.2f}" for k in METRICS) + " | - |")
    if missing:
        lines += ["", "Not run yet: " + "; ".join(missing) + "."]
    qualifying = [e for e in every if e[3]]
    if qualifying:
        held, label, m, _ = min(qualifying)
        verdict = (f"Lowest held-out L1 with the reversed order no worse than the plain model: {label}, "
                   f"{LABELS.get(m, m)} ({held:.2f}; plain model {plain['heldout']:.2f}).")
    else:
        verdict = ("No setting qualifies: every tuned prompt's reversed-order L1 is above the plain model's "
                   f"{plain['reversed']:.2f}, so no `robust` preset is named.")
        if every:
            held, label, m, _ = min(every)
            verdict += (f" The lowest held-out L1 of all is {held:.2f} ({label}, {LABELS.get(m, m)}), against "
                        f"the plain model's {plain['heldout']:.2f}.")
    return lines, verdict


def table_sweep(study_folders: list[dict]) -> tuple[list[str], str | None]:
    """Point 3: DE settings at the study's budget on China seeds 0-1; the choice: the lowest mean
    tuned L1 (the search's own goal; held-out and reversed shown, not used)."""
    lines = ["| DE setting | seeds | tuned L1 | held-out L1 | reversed L1 | anchored L1 |", "|---|---|---:|---:|---:|---:|"]
    defaults = [s for study in study_folders for s in searches(study, "de") if s["seed"] in (0, 1)]
    rows = [("defaults (P = 8, 11 generations, spread 1, CR 0.9, F 0.5-1)", defaults)]
    for label, folder in SWEEP.items():
        study = load(folder)
        if study is not None:
            rows.append((label, [s for s in searches(study, "de") if s["seed"] in (0, 1)]))
    best = None
    for label, mine in rows:
        if not mine:
            continue
        mean = float(np.mean([s["tuned"] for s in mine]))
        if best is None or mean < best[0]:
            best = (mean, label)
        lines.append(f"| {label} | {','.join(str(s['seed']) for s in mine)} | "
                     + " | ".join(cell([s[k] for s in mine]) for k in ("tuned", "heldout", "reversed", "anchored")) + " |")
    return lines, None if best is None else best[1]


def table_report(chosen: str, defaults: dict) -> list[str] | None:
    """The chosen DE setting against DE defaults on U.S.A., India, Saudi Arabia (seed 0) and China
    (seed 2): data the sweep did not see."""
    others, china2, default2 = (load(REPORT[k]) for k in ("chosen_others", "chosen_china2", "default_china2"))
    if others is None or china2 is None or default2 is None:
        return None
    lines = ["| country, seed | chosen DE: tuned / held-out / reversed L1 | DE defaults: tuned / held-out / reversed L1 | plain model |",
             "|---|---|---|---|"]
    pairs = [(c, 0, others, defaults) for c in ("U.S.A.", "India", "Saudi Arabia")] + [("China", 2, china2, default2)]
    gains = []
    for country, seed, mine, ref in pairs:
        a = [s for s in searches(mine, "de", country) if s["seed"] == seed]
        b = [s for s in searches(ref, "de", country) if s["seed"] == seed]
        if not a or not b:
            continue
        plain = " / ".join(f"{ref['naive'][k][country]:.2f}" for k in ("tuned", "heldout", "reversed"))
        lines.append(f"| {country}, {seed} | " + " / ".join(f"{a[0][k]:.2f}" for k in ("tuned", "heldout", "reversed"))
                     + " | " + " / ".join(f"{b[0][k]:.2f}" for k in ("tuned", "heldout", "reversed")) + f" | {plain} |")
        gains.append(b[0]["tuned"] - a[0]["tuned"])
    lines += ["", f"Tuned L1, DE defaults minus chosen DE, per row: {', '.join(f'{g:+.2f}' for g in gains)} "
              f"(mean {np.mean(gains):+.2f}; positive: the chosen setting is closer). Chosen setting: "
              f"{chosen} (config {others['setup'].get('overrides')})."]
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
    lines, verdict = table_generalisation(first)
    out += ["## Generalisation: one tuning option at a time (China, seed 0, user_end)", "",
            "Each row changes one option from the study's setup (DE defaults and Adam, the same 96 forward "
            "passes); 'reversed <= plain' marks a prompt whose reversed-order L1 is no worse than the plain "
            "model's.", ""] + lines + ["", verdict, ""]
    lines, chosen = table_sweep(parts)
    out += ["## DE settings at the same budget (China, seeds 0-1, user_end)", "",
            "Mean ± sample std over seeds 0 and 1; DE defaults from the study folders. The setting kept is "
            "the lowest mean tuned L1 (the search's own objective)" + (f": **{chosen}**." if chosen else "."), ""]
    out += lines + [""]
    report = table_report(chosen, first) if chosen else None
    out += ["## The chosen DE setting on other countries and a new seed", ""]
    out += (["Countries and seeds the sweep did not see (slot user_end, the study's budget).", ""] + report
            if report else ["Not run yet (`bash benchmarks/smollm2_study.sh PY report`)."]) + [""]
    text = "\n".join(out)
    (RESULTS / "smollm2_study_tables.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
