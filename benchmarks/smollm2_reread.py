"""A re-reading of the committed SmolLM2-135M-Instruct study: what its numbers support.

No model is run: every figure is read from the ``optimizers.json`` of the committed
``benchmarks/results/smollm2_*`` folders (written by ``benchmarks/optimizers.py``), the country
targets (``jaxalign.hofstede``) and the VSM 2013 index weights (``jaxalign.vsm13()``). numpy only.

What the fields hold (``benchmarks/optimizers.py``, ``jaxalign/optimize/pipeline.py``):

    curve      ``history["best_loss"]``: the best-so-far training loss after each step; row 0 is
               step 0, the initial population. For an evolution strategy step 0 scores P members:
               member 0 is the start point p0 itself (random vocabulary rows, or the written text
               with ``--init-text``), the other P - 1 are p0 + init_scale * noise.
    dims       per condition (``tuned``, ``reversed``, ``heldout``) the six dims (C = 0) of the
               search's best prompt; ``reversed`` at the top level is only an L1, the reversed-order
               dims are ``dims["reversed"]``.
    naive      the plain model's (no soft prompt) L1, tau, anchored L1 per country and its dims per
               condition (``naive["dims"]["tuned" | "reversed" | "heldout"]``).
    anchored   the tuned-wording L1 after the constants are set so that the plain model scores
               exactly as U.S.A. (``optimizers.readings``).

Items (each a function below; ``main`` runs them all):

    1  gain_at_start      how much of the evolution strategies' tuned-L1 gain is in step 0
    2  same_move          the change of each dim from the plain model, per method and country
    3  scale_only         C = 0 L1 when every dim is below target; the all-3 respondent
    4  position_content   normal vs reversed order shifts: position and content parts
    5  anchored_counts    searched prompts closer than the plain model once anchored
    6  tau_null           Kendall tau between two random orderings of 6 items (720 permutations)

Writes ``benchmarks/results/smollm2_reread.md`` and ``.json`` (or ``--out DIR``)::

    PYTHONPATH=. python benchmarks/smollm2_reread.py
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DIMS = ("PDI", "IDV", "MAS", "UAI", "LTO", "IVR")
ES = ("de-paper", "de", "SNES")  # the evolution strategies (hybrid starts with SNES, then Adam)
ORDER = ("de-paper", "de", "SNES", "gradient", "hybrid")
FOUR = "smollm2_study_user_end"  # the four-country folder
COUNTRIES = ("U.S.A.", "China", "India", "Saudi Arabia")
TOL = 1e-3  # float32 losses read back as JSON floats


def targets() -> dict[str, np.ndarray]:
    import jaxalign

    return {c: np.asarray(jaxalign.hofstede(c).values, np.float64) for c in COUNTRIES}


def load(results: Path = RESULTS) -> tuple[list[dict[str, Any]], list[str]]:
    """Every search of every ``smollm2_*`` folder with dims, as flat records (folder, naive and
    setup attached); and the folders left out (with why)."""
    searches, skipped = [], []
    for path in sorted(results.glob("smollm2_*/optimizers.json")):
        study = json.loads(path.read_text())
        folder = path.parent.name
        if "dims" not in study["naive"] or any("dims" not in s for s in study["searches"]):
            skipped.append(f"{folder} (no dims recorded: an early pilot)")
            continue
        setup = study["setup"]
        for s in study["searches"]:
            searches.append({**s, "folder": folder, "naive": study["naive"],
                             "init_text": setup.get("init_text"), "population": setup["population"],
                             "space_seed": setup.get("space_seed", 0),
                             "overrides": setup.get("overrides") or {}})
    return searches, skipped


def l1(dims: np.ndarray, target: np.ndarray) -> float:
    have = ~np.isnan(target)
    return float(np.mean(np.abs(np.asarray(dims)[have] - target[have])))


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- 1
def trains_on_tuned(s: dict[str, Any]) -> bool:
    """Whether the search's curve is on the tuned-L1 scale (normal order, the one wording): its
    curve ends at the recorded tuned L1. Not so for both-orders or extra wordings, whose curve is
    the training objective over several presentations."""
    return s["option"] == "normal" and abs(s["curve"][-1] - s["tuned"]) <= TOL


def start_point(searches: list[dict[str, Any]], s: dict[str, Any]) -> float | None:
    """The tuned L1 of the start point p0 of an evolution-strategy search, where the folder holds
    it: Adam's seed-0 search runs with config seed space_seed + 0, so its step 0 (one prompt,
    ``curve[0]``) is p0 of the space every evolution strategy of the folder searches (random
    starts only; same country, slot, K and subspace)."""
    if s["init_text"] is not None or s["space_seed"] != 0:
        return None
    for g in searches:
        if (g["folder"], g["country"], g["method"], g["seed"]) == (s["folder"], s["country"], "gradient", 0) \
                and trains_on_tuned(g):
            return g["curve"][0]
    return None


def gain_at_start(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Per evolution-strategy search: gain = plain L1 - tuned L1, start = plain L1 - curve[0] (the
    best of step 0's P members). Only searches whose training objective is the tuned L1 (normal
    order, the one wording: train_loss == tuned), so that curve[0] is on the same scale."""
    rows, left_out = [], []
    for s in searches:
        if s["method"] not in ES:
            continue
        if not trains_on_tuned(s):
            left_out.append(f"{s['folder']}/{s['method']}/{s['option']}")
            continue
        plain = s["naive"]["tuned"][s["country"]]
        rows.append({"folder": s["folder"], "method": s["method"], "country": s["country"], "seed": s["seed"],
                     "init_text": s["init_text"], "population": s["population"], "plain": plain,
                     "step0": s["curve"][0], "tuned": s["tuned"], "p0": start_point(searches, s),
                     "gain": plain - s["tuned"], "gain_step0": plain - s["curve"][0],
                     "steps": len(s["curve"])})

    def summary(mine):
        gain = float(np.mean([r["gain"] for r in mine]))
        start = float(np.mean([r["gain_step0"] for r in mine]))
        return {"n": len(mine), "mean_gain": gain, "mean_gain_step0": start, "share": start / gain,
                "after_step0": gain - start,
                "n_step0_over_half": sum(r["gain_step0"] > 0.5 * r["gain"] for r in mine),
                "n_no_gain_after_step0": sum(r["tuned"] >= r["step0"] - TOL for r in mine)}

    random_start = [r for r in rows if r["init_text"] is None]
    known = [r for r in random_start if r["p0"] is not None]
    p0 = {"n": len(known), "mean_gain": float(np.mean([r["gain"] for r in known])),
          "mean_gain_p0": float(np.mean([r["plain"] - r["p0"] for r in known])),
          "n_step0_is_p0": sum(abs(r["step0"] - r["p0"]) <= TOL for r in known),
          "folders": sorted({r["folder"] for r in known}),
          "p0_l1": {f"{r['folder']}|{r['country']}": r["p0"] for r in known}}
    p0["share"] = p0["mean_gain_p0"] / p0["mean_gain"]
    return {"all": summary(rows), "random_start": summary(random_start), "start_point": p0,
            "populations": sorted({r["population"] for r in rows}),
            "per_method": {m: summary([r for r in random_start if r["method"] == m]) for m in ES},
            "four_country": summary([r for r in rows if r["folder"] == FOUR]),
            "left_out": left_out, "rows": rows}


# ----------------------------------------------------------------------------- 2
def same_move(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Change of each dim from the plain model (tuned dims - plain dims), per evolution-strategy
    search. The four-country folder (one search per method and country, same setup): per method
    each country's change and the dims where all four moved the same way. Over every folder: per
    method and country the mean change (the searches differ in setup)."""
    def delta(s):
        return np.asarray(s["dims"]["tuned"]) - np.asarray(s["naive"]["dims"]["tuned"])

    four: dict[str, Any] = {}
    for m in ES:
        per = {s["country"]: delta(s) for s in searches if s["folder"] == FOUR and s["method"] == m}
        signs = np.sign(np.stack([per[c] for c in COUNTRIES if c in per]))
        same = [bool(np.all(signs[:, j] == signs[0, j])) for j in range(len(DIMS))]
        four[m] = {"per_country": {c: per[c].tolist() for c in COUNTRIES if c in per},
                   "same_direction": dict(zip(DIMS, same)), "n_same": int(sum(same)),
                   "direction": {d: int(signs[0, j]) if same[j] else 0 for j, d in enumerate(DIMS)}}
    pooled: dict[str, Any] = {}
    for m in ES:
        pooled[m] = {}
        for c in COUNTRIES:
            mine = [delta(s) for s in searches if s["method"] == m and s["country"] == c]
            if mine:
                pooled[m][c] = {"n": len(mine), "mean": np.mean(mine, axis=0).tolist()}
    every = np.stack([delta(s) for s in searches if s["method"] in ES])
    return {"four_country": four, "all_folders": pooled,
            "all_es": {"n": len(every), "n_positive": dict(zip(DIMS, (every > 0).sum(axis=0).tolist())),
                       "mean": every.mean(axis=0).tolist(),
                       "n_mean_dims_up": int(np.sum(every.mean(axis=1) > 0))}}


# ----------------------------------------------------------------------------- 3
def all_three_dims() -> np.ndarray:
    """The dims (C = 0) of a respondent answering 3 to every item (item means all 3)."""
    import jaxalign

    return np.asarray(jaxalign.vsm13().indices(np.full(24, 3.0, np.float32)), np.float64)


def scale_only(searches: list[dict[str, Any]], target: dict[str, np.ndarray]) -> dict[str, Any]:
    """Searches (every method) whose tuned dims are all below the target on every dim the target
    has; for them L1 = mean(target) - mean(dims) over those dims, whatever the country. And the
    all-3 respondent's L1 per country against the plain model's."""
    below, identity, worst = 0, 0, 0.0
    by_country = {c: [0, 0] for c in COUNTRIES}
    for s in searches:
        t = target[s["country"]]
        have = ~np.isnan(t)
        d = np.asarray(s["dims"]["tuned"])[have]
        by_country[s["country"]][1] += 1
        if np.all(d < t[have]):
            below += 1
            by_country[s["country"]][0] += 1
            gap = abs(s["tuned"] - (t[have].mean() - d.mean()))
            worst = max(worst, gap)
            identity += gap <= TOL
    three = all_three_dims()
    plain_dims = np.asarray(searches[0]["naive"]["dims"]["tuned"])
    naive = searches[0]["naive"]["tuned"]
    respondent = {}
    for c in COUNTRIES:
        t = target[c]
        have = ~np.isnan(t)
        respondent[c] = {"all3_l1": l1(three, t), "mean_target": float(t[have].mean()),
                         "plain_l1": naive.get(c, l1(plain_dims, t)),
                         "plain_all_below": bool(np.all(plain_dims[have] < t[have]))}
        respondent[c]["plain_share"] = respondent[c]["plain_l1"] / respondent[c]["all3_l1"]
    return {"n": len(searches), "n_all_below": below, "n_identity": int(identity), "max_gap": worst,
            "by_country": {c: {"all_below": v[0], "n": v[1]} for c, v in by_country.items()},
            "all3_dims": three.tolist(), "respondent": respondent}


# ----------------------------------------------------------------------------- 4
def position_content(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Per search (every method): shift from the plain model in the normal order (dims["tuned"])
    and the reversed order (dims["reversed"]); position part (normal - reversed) / 2, content part
    (normal + reversed) / 2: mean |.| per dim over prompts; correlation of the two shifts over the
    six dims per prompt."""
    def parts(group):
        n = np.stack([np.asarray(s["dims"]["tuned"]) - s["naive"]["dims"]["tuned"] for s in group])
        r = np.stack([np.asarray(s["dims"]["reversed"]) - s["naive"]["dims"]["reversed"] for s in group])
        position, content = (n - r) / 2, (n + r) / 2
        corr = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(n, r)])
        return {"n": len(group),
                "position": dict(zip(DIMS, np.abs(position).mean(axis=0).tolist())),
                "content": dict(zip(DIMS, np.abs(content).mean(axis=0).tolist())),
                "position_mean": float(np.abs(position).mean()), "content_mean": float(np.abs(content).mean()),
                "median_corr": float(np.median(corr)), "n_corr_negative": int(np.sum(corr < 0))}

    plain_n = np.asarray(searches[0]["naive"]["dims"]["tuned"])
    plain_r = np.asarray(searches[0]["naive"]["dims"]["reversed"])
    return {"all": parts(searches), "es": parts([s for s in searches if s["method"] in ES]),
            "adam": parts([s for s in searches if s["method"] in ("gradient", "hybrid")]),
            "plain_position": dict(zip(DIMS, ((plain_n - plain_r) / 2).tolist())),
            "plain_content": dict(zip(DIMS, ((plain_n + plain_r) / 2).tolist()))}


# ----------------------------------------------------------------------------- 5
def anchored_counts(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Searched prompts (every method) with an anchored L1 below the plain model's, per country and
    method; the four-country mean per method in the four-country folder."""
    per_country = {}
    for c in COUNTRIES:
        mine = [s for s in searches if s["country"] == c]
        plain = mine[0]["naive"]["anchored"][c]
        per_country[c] = {"plain": plain, "n": len(mine), "closer": sum(s["anchored"] < plain for s in mine),
                          "per_method": {m: [sum(s["anchored"] < plain for s in mine if s["method"] == m),
                                             sum(s["method"] == m for s in mine)]
                                         for m in ORDER if any(s["method"] == m for s in mine)},
                          "best": min(s["anchored"] for s in mine)}
    four = [s for s in searches if s["folder"] == FOUR]
    naive = four[0]["naive"]["anchored"]
    plain_mean = float(np.mean([naive[c] for c in COUNTRIES]))
    means = {m: float(np.mean([s["anchored"] for s in four if s["method"] == m])) for m in ORDER}
    return {"per_country": per_country, "four_country_plain": plain_mean, "four_country_methods": means,
            "four_country_closer": sum(v < plain_mean for v in means.values()),
            "n": len(searches), "closer": sum(v["closer"] for v in per_country.values())}


# ----------------------------------------------------------------------------- 6
def tau_null(n: int = 6) -> dict[str, Any]:
    """Kendall's tau between the identity and every permutation of n items (no ties): the exact
    null of two independent random orderings."""
    pairs = list(itertools.combinations(range(n), 2))
    taus = []
    for perm in itertools.permutations(range(n)):
        s = sum(np.sign(perm[j] - perm[i]) for i, j in pairs)
        taus.append(s / len(pairs))
    taus = np.array(taus)
    values, counts = np.unique(np.round(taus * len(pairs)).astype(int), return_counts=True)
    return {"n_items": n, "n_permutations": len(taus), "n_pairs": len(pairs), "mean": float(taus.mean()),
            "sd": float(taus.std()), "values_x15": values.tolist(), "counts": counts.tolist(),
            "step": float(np.min(np.diff(values)) / len(pairs)),
            "p_tau_ge": {f"{v}/{len(pairs)}": float(np.mean(taus >= v / len(pairs) - 1e-12)) for v in values}}


def tau_readings(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Recorded taus of the searches on the six-dimension countries against the plain model's."""
    mine = [s for s in searches if s["country"] != "Saudi Arabia"]
    diffs = np.array([s["tau"] - s["naive"]["tau"][s["country"]] for s in mine])
    return {"n": len(mine), "n_above_plain": int(np.sum(diffs > 1e-6)), "n_below_plain": int(np.sum(diffs < -1e-6)),
            "mean_change": float(diffs.mean()), "sd_change": float(diffs.std(ddof=1)),
            "per_method": {m: _mean(d for s, d in zip(mine, diffs) if s["method"] == m) for m in ORDER}}


# ----------------------------------------------------------------------------- report
def checks(searches: list[dict[str, Any]], target: dict[str, np.ndarray]) -> dict[str, float]:
    """The recorded L1s recomputed from the recorded dims (tuned and reversed), and the curve's end
    against the training loss: the largest differences."""
    return {"tuned_l1_from_dims": max(abs(l1(s["dims"]["tuned"], target[s["country"]]) - s["tuned"]) for s in searches),
            "reversed_l1_from_dims": max(abs(l1(s["dims"]["reversed"], target[s["country"]]) - s["reversed"])
                                         for s in searches),
            "curve_end_vs_tuned": max(abs(s["curve"][-1] - s["tuned"]) for s in searches if trains_on_tuned(s)),
            "n_curve_on_tuned": sum(trains_on_tuned(s) for s in searches),
            "curve_monotone": all(np.all(np.diff(s["curve"]) <= 1e-6) for s in searches)}


def _f(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def markdown(r: dict[str, Any]) -> str:
    g, m2, sc, pc, an, tn, tr = (r[k] for k in ("gain_at_start", "same_move", "scale_only", "position_content",
                                                "anchored", "tau_null", "tau_readings"))
    L = ["# SmolLM2-135M-Instruct study, re-read from its committed files", "",
         f"Date {r['date']}; command `{r['command']}`. No model run: every figure is read from the "
         "`optimizers.json` of the committed `benchmarks/results/smollm2_*` folders "
         f"({len(r['folders'])} folders, {r['n_searches']} searches; left out: {'; '.join(r['skipped']) or 'none'}).",
         "", f"Checks: the recorded tuned and reversed L1 recomputed from the recorded dims differ by at most "
         f"{r['checks']['tuned_l1_from_dims']:.1e} and {r['checks']['reversed_l1_from_dims']:.1e}; every "
         f"`curve` is non-increasing ({r['checks']['curve_monotone']}): it is the best-so-far training loss per "
         "step, row 0 the initial population (for DE/SNES: the start point p0 itself and P - 1 perturbations of it, "
         "`jaxalign/optimize/pipeline.py`); for the "
         f"{r['checks']['n_curve_on_tuned']} of {r['n_searches']} searches trained on the tuned wording in the normal "
         f"order it ends at the tuned L1 (within {r['checks']['curve_end_vs_tuned']:.1e}).", ""]
    a, p0 = g["all"], g["start_point"]
    L += ["## 1. Gain already in the initial population (evolution strategies)", "",
          "Gain = plain model's tuned L1 - search's tuned L1; at step 0 = plain L1 - `curve[0]` (best of "
          f"the P members of step 0; P = {', '.join(map(str, g['populations']))} in these folders, 8 in all but two "
          "sweep folders). Searches whose training objective is not the tuned L1 are left out "
          f"({', '.join(g['left_out'])}).", "",
          "| searches | n | mean gain | mean gain at step 0 | share at step 0 | after step 0 | step 0 > half the gain | no gain after step 0 |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, s in [("all ES searches", g["all"]), ("random start (no --init-text)", g["random_start"])] + \
            [(f"  {m}, random start", v) for m, v in g["per_method"].items()] + [("four-country folder", g["four_country"])]:
        L.append(f"| {label} | {s['n']} | {_f(s['mean_gain'])} | {_f(s['mean_gain_step0'])} | "
                 f"{100 * s['share']:.0f}% | {_f(s['after_step0'])} | {s['n_step0_over_half']} of {s['n']} | "
                 f"{s['n_no_gain_after_step0']} of {s['n']} |")
    L += ["", f"**Line**: over {a['n']} evolution-strategy searches the tuned L1 falls by {_f(a['mean_gain'])} "
          f"points on average, {_f(a['mean_gain_step0'])} of which ({100 * a['share']:.0f}%) is already in the best of "
          f"the initial population (step 0, before any update); the generations after it add {_f(a['after_step0'])}.", "",
          f"The start point p0 alone (a random soft prompt, before any search): where the folder's Adam seed-0 search "
          f"gives its L1 ({', '.join(p0['folders'])}), {p0['n']} evolution-strategy searches gain {_f(p0['mean_gain'])} "
          f"on average, {_f(p0['mean_gain_p0'])} ({100 * p0['share']:.0f}%) of it by p0 itself; in "
          f"{p0['n_step0_is_p0']} of {p0['n']} the best member of step 0 is p0.", ""]
    L += ["## 2. The same move for every country?", "",
          "Change of each dim from the plain model (tuned dims - plain dims, C = 0), four-country folder, seed 0, "
          "one search per cell; 'same way' = the sign of the change is the same in all four countries.", "",
          "| method | country | " + " | ".join(DIMS) + " |", "|---|---|" + "---:|" * len(DIMS)]
    for m, v in m2["four_country"].items():
        for c, d in v["per_country"].items():
            L.append(f"| {m} | {c} | " + " | ".join(f"{x:+.1f}" for x in d) + " |")
        L.append(f"| {m} | same way? | " + " | ".join(
            ({1: "all up", -1: "all down"}[v["direction"][d]] if v["same_direction"][d] else "mixed") for d in DIMS) + " |")
    L += ["", "Dims moved the same way in all four countries: " + "; ".join(
        f"{m} {v['n_same']} of 6" for m, v in m2["four_country"].items()) + ".", "",
          "Every folder (the searches differ in setup), mean change per method and country (n searches):", "",
          "| method | country | n | " + " | ".join(DIMS) + " |", "|---|---|---:|" + "---:|" * len(DIMS)]
    for m, v in m2["all_folders"].items():
        for c, d in v.items():
            L.append(f"| {m} | {c} | {d['n']} | " + " | ".join(f"{x:+.1f}" for x in d["mean"]) + " |")
    e = m2["all_es"]
    L += ["", f"All {e['n']} evolution-strategy searches: change > 0 in " + ", ".join(
        f"{d} {e['n_positive'][d]}" for d in DIMS) + f" of {e['n']}; the mean of the six dims rose in "
          f"{e['n_mean_dims_up']} of {e['n']}.", ""]
    L += ["## 3. The C = 0 loss is country-agnostic", "",
          f"Searches (every method, every folder) whose tuned dims are all below the target on every dim the "
          f"target has: **{sc['n_all_below']} of {sc['n']}** (" + ", ".join(
              f"{c} {v['all_below']} of {v['n']}" for c, v in sc["by_country"].items()) + f"). For "
          f"{sc['n_identity']} of them the recorded L1 equals mean(target) - mean(dims) (largest gap "
          f"{sc['max_gap']:.1e}): the loss then only asks for larger dims, the same for every country.", "",
          f"A respondent answering 3 to every item has dims {sc['all3_dims']} (each index is a difference of "
          "item means), so its L1 is the mean of the target:", "",
          "| country | all-3 respondent L1 | plain model L1 | plain / all-3 | plain dims all below target |",
          "|---|---:|---:|---:|---|"]
    for c, v in sc["respondent"].items():
        L.append(f"| {c} | {_f(v['all3_l1'])} | {_f(v['plain_l1'])} | {100 * v['plain_share']:.1f}% | "
                 f"{'yes' if v['plain_all_below'] else 'no'} |")
    L.append("")
    L += ["## 4. Position vs content", "",
          "`reversed` holds an L1 only; the reversed-order dims are `dims.reversed`, the plain model's "
          "`naive.dims.reversed`. Shift from the plain model in each order; position part (normal - reversed) / 2, "
          "content part (normal + reversed) / 2; mean |part| per dim over prompts; correlation of the normal and "
          "reversed shifts over the six dims, per prompt.", "",
          "| prompts | n | part | " + " | ".join(DIMS) + " | mean | median corr | corr < 0 |",
          "|---|---:|---|" + "---:|" * (len(DIMS) + 3)]
    for label, v in (("all searches", pc["all"]), ("evolution strategies", pc["es"]), ("Adam, hybrid", pc["adam"])):
        for part in ("position", "content"):
            L.append(f"| {label} | {v['n']} | {part} | " + " | ".join(_f(v[part][d], 1) for d in DIMS)
                     + f" | {_f(v[part + '_mean'], 1)} | " + (f"{v['median_corr']:+.2f} | {v['n_corr_negative']} of {v['n']} |"
                                                               if part == "position" else "| |"))
    L += ["", "The plain model itself, (normal - reversed) / 2: " + ", ".join(
        f"{d} {x:+.1f}" for d, x in pc["plain_position"].items()) + "; (normal + reversed) / 2: " + ", ".join(
        f"{d} {x:+.1f}" for d, x in pc["plain_content"].items()) + ".", ""]
    L += ["## 5. Anchored L1 per country", "",
          "Constants anchored on the plain model read as U.S.A. (so the plain model's U.S.A. anchored L1 is 0 "
          "and no prompt can be below it). Searched prompts (every method, every folder) below the plain model:", "",
          "| country | plain anchored L1 | closer / searches | per method | lowest searched |", "|---|---:|---:|---|---:|"]
    for c, v in an["per_country"].items():
        L.append(f"| {c} | {_f(v['plain'])} | {v['closer']} of {v['n']} | " + ", ".join(
            f"{m} {k} of {n}" for m, (k, n) in v["per_method"].items()) + f" | {_f(v['best'])} |")
    L += ["", f"Four-country mean (`{FOUR}`): plain model {_f(an['four_country_plain'])}; " + ", ".join(
        f"{m} {_f(x)}" for m, x in an["four_country_methods"].items()) + f": {an['four_country_closer']} of "
          f"{len(an['four_country_methods'])} methods below the plain model.", ""]
    L += ["## 6. Kendall tau at n = 6", "",
          f"Exact null of tau between two independent random orderings of 6 items ({tn['n_permutations']} "
          f"permutations, {tn['n_pairs']} pairs): mean {tn['mean']:.3f}, **sd {tn['sd']:.3f}**. Without ties tau "
          f"takes only the values k/15 with k odd (-15, -13, ..., 13, 15): the smallest possible step between two "
          f"taus is **{tn['step'] * 15:.0f}/15 = {tn['step']:.3f}** (one pair swapped), not 1/15.", "",
          "| tau | " + " | ".join(f"{v}/15" for v in tn["values_x15"]) + " |",
          "|---|" + "---:|" * len(tn["values_x15"]),
          "| permutations | " + " | ".join(str(c) for c in tn["counts"]) + " |",
          "| P(tau >= value) | " + " | ".join(f"{p:.3f}" for p in tn["p_tau_ge"].values()) + " |", "",
          f"Recorded taus on the six-dimension countries (Saudi Arabia has two dims, one pair: tau is +-1): "
          f"{tr['n']} searches, {tr['n_above_plain']} above the plain model's tau, {tr['n_below_plain']} below; "
          f"mean change {tr['mean_change']:+.3f} (sd {tr['sd_change']:.3f} over searches), against a null sd of "
          f"{tn['sd']:.3f} and a step of {tn['step']:.3f}. Per method mean change: " + ", ".join(
              f"{m} {x:+.3f}" for m, x in tr["per_method"].items() if x is not None) + ".", ""]
    L += ["## Reading", ""] + [" ".join(r["reading"])] + [""]
    return "\n".join(L)


def reading(r: dict[str, Any]) -> list[str]:
    """At most eight plain sentences: what the numbers above support and what they do not."""
    g, m2, sc, pc, an, tn, tr = (r[k] for k in ("gain_at_start", "same_move", "scale_only", "position_content",
                                                "anchored", "tau_null", "tau_readings"))
    a, p0, e = g["all"], g["start_point"], m2["all_es"]
    china = an["per_country"]["China"]
    china_es = sum(n for m, (_, n) in china["per_method"].items() if m in ES)
    china_es_closer = sum(k for m, (k, _) in china["per_method"].items() if m in ES)
    up = [d for d in DIMS if e["n_positive"][d] == e["n"]]
    shares = [v["plain_share"] for c, v in sc["respondent"].items() if c != "Saudi Arabia"]
    changes = [x for x in tr["per_method"].values() if x is not None]
    return [
        f"Of the evolution strategies' mean tuned-L1 gain ({_f(a['mean_gain'])} points, {a['n']} searches), "
        f"{100 * a['share']:.0f}% is already in the best member of step 0, before any update, and "
        f"{100 * p0['share']:.0f}% (the {p0['n']} searches where it can be read) comes from the random start point "
        "p0 alone, so at 96 forward passes these runs show little of DE or SNES as searches.",
        f"All {e['n']} evolution-strategy prompts raised {', '.join(up)} and the mean of the six dims "
        f"({e['n_mean_dims_up']} of {e['n']}) whatever the country, so the tuned prompts share one move, not a "
        "country-specific one.",
        f"{sc['n_all_below']} of {sc['n']} searched prompts, and the plain model for every country, sit below the "
        "target on every dim, where the C = 0 L1 is exactly mean(target) - mean(dims): it rewards raising any dim "
        "by the same amount for every country, so a lower L1 there is not evidence of a country's profile.",
        f"The plain model's L1 is {100 * min(shares):.1f}-{100 * max(shares):.1f}% of that of a respondent who "
        "answers 3 to every item (U.S.A., China, India): most of the C = 0 L1 is the targets' own size.",
        f"Read in both option orders the prompts' shifts are mostly position, not content (mean |part| "
        f"{_f(pc['all']['position_mean'], 1)} against {_f(pc['all']['content_mean'], 1)}; the normal- and "
        f"reversed-order shifts correlate negatively for {pc['all']['n_corr_negative']} of {pc['all']['n']} prompts, "
        f"median {pc['all']['median_corr']:+.2f}).",
        f"Once anchored, {china['closer']} of {china['n']} China prompts are closer than the plain model, all of "
        f"them Adam or hybrid ({china_es_closer} of {china_es} evolution-strategy prompts), none for India or "
        f"Saudi Arabia (U.S.A. is 0 by construction) and {an['four_country_closer']} of "
        f"{len(an['four_country_methods'])} methods on the four-country mean: 'every searched prompt is further' "
        "holds for the means and the evolution strategies, not for every China prompt.",
        f"Kendall tau over six dims moves in steps of {tn['step'] * 15:.0f}/15 = {tn['step']:.3f} with a null sd of {tn['sd']:.3f}, and "
        f"the methods' mean tau changes from the plain model ({min(changes):+.3f} to {max(changes):+.3f}) are "
        "within about two steps and under one null sd, so they cannot rank the methods.",
        "All of this is one 135M model at 3% of the paper's budget, mostly China and seed 0: it says nothing "
        "about larger budgets, other models or other seeds.",
    ]


def main(argv: list[str] | None = None, results: Path = RESULTS) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="folder of smollm2_reread.md/.json (default: benchmarks/results)")
    parser.add_argument("--no-write", action="store_true", help="compute and print only")
    args = parser.parse_args([] if argv is None else argv)
    searches, skipped = load(results)
    target = targets()
    r: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "PYTHONPATH=. python benchmarks/smollm2_reread.py" + ("".join(f" {a}" for a in argv) if argv else ""),
        "folders": sorted({s["folder"] for s in searches}), "skipped": skipped, "n_searches": len(searches),
        "targets": {c: [None if np.isnan(x) else float(x) for x in t] for c, t in target.items()},
        "checks": checks(searches, target),
        "gain_at_start": gain_at_start(searches), "same_move": same_move(searches),
        "scale_only": scale_only(searches, target), "position_content": position_content(searches),
        "anchored": anchored_counts(searches), "tau_null": tau_null(6), "tau_readings": tau_readings(searches),
    }
    r["reading"] = reading(r)
    text = markdown(r)
    if not args.no_write:
        out = Path(args.out) if args.out else results
        out.mkdir(parents=True, exist_ok=True)
        (out / "smollm2_reread.md").write_text(text)
        (out / "smollm2_reread.json").write_text(json.dumps(r, indent=1) + "\n")
    print(text)
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
