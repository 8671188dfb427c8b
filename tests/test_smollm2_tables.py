"""benchmarks/smollm2_tables.py: the real-model study's tables are the means of the searches in
the committed folders (a folder not there is said to be missing, not invented)."""

from __future__ import annotations

import json

import numpy as np

METRICS = ("tuned", "heldout", "reversed", "tau", "anchored")


def _study(tmp_path, folder, countries, seeds, methods, slot, rng):
    searches = []
    for m in methods:
        for seed in seeds:
            for c in countries:
                searches.append({"method": m, "option": "normal", "seed": seed, "country": c, "evaluations": 96.0,
                                 "s_per_step": 8.0, "cost": {"forwards_per_step": 5.0},
                                 **{k: float(rng.uniform(0, 60)) for k in METRICS}})
    naive = {k: {c: float(rng.uniform(0, 60)) for c in countries} for k in METRICS}
    naive["written"] = {"icl": {k: {c: float(rng.uniform(0, 60)) for c in countries} for k in METRICS}}
    study = {"setup": {"countries": countries, "slot": slot, "k": 10, "subspace": 64, "population": 8,
                       "generations": 11, "budget": 96},
             "commands": [{"date": "2026-12-02T00:00:00", "command": "x"}], "searches": searches, "naive": naive}
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "optimizers.json").write_text(json.dumps(study))
    return study


def test_tables_are_the_means_of_the_searches(tmp_path, monkeypatch):
    from benchmarks import smollm2_tables as tables

    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    rng = np.random.default_rng(0)
    four = ["U.S.A.", "China", "India", "Saudi Arabia"]
    a = _study(tmp_path, tables.FOLDERS["all"], four, [0], ["de-paper", "gradient"], "user_end", rng)
    b = _study(tmp_path, tables.FOLDERS["seed1"], ["China"], [1], ["de-paper"], "user_end", rng)
    text = tables.main()
    assert (tmp_path / "smollm2_study_tables.md").read_text() == text
    rows: dict[str, str] = {}  # the first table's rows (the four countries)
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    de = [s for s in a["searches"] if s["method"] == "de-paper"]
    assert rows["DE (paper)"].split(" | ")[1] == f"{np.mean([s['tuned'] for s in de]):.2f}"
    assert f"{np.mean([a['naive']['anchored'][c] for c in four]):.2f}" in rows["naive (plain model)"]
    # China over seeds 0 and 1: mean ± sample std of the two searches
    china = [next(s for s in a["searches"] if s["method"] == "de-paper" and s["country"] == "China"),
             b["searches"][0]]
    line = next(x for x in text.splitlines() if x.startswith("| DE (paper) | 0,1 |"))
    tuned = [s["tuned"] for s in china]
    assert line.split(" | ")[2] == f"{np.mean(tuned):.2f} ± {np.std(tuned, ddof=1):.2f}"
    assert "user_start not run yet." in text  # the missing folder is said to be missing
