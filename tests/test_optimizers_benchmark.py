"""benchmarks/optimizers.py end to end on the tiny model (a tiny budget)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import jaxalign

BENCH = str(Path(__file__).parent / "data" / "culturalbench")  # Easy: China 3 questions, "United States" 1; Hard: China 2, no U.S.A.


@pytest.mark.slow
def test_optimizers_study_end_to_end(tmp_path, capsys):
    from benchmarks import optimizers
    from jaxalign.evaluate.culturalbench import (
        evaluate_culturalbench,
        load_culturalbench,
    )

    out = tmp_path / "study"
    study = ["--methods", "de-paper,gradient,hybrid", "--countries", "China,U.S.A.", "--seeds", "2",
             "--population", "4", "--generations", "2", "-k", "2", "--subspace", "4",
             "--option-methods", "de-paper", "--out", str(out), "--no-progress"]
    report = optimizers.main(study + ["--culturalbench", BENCH, "--culturalbench-set", "easy"])
    saved = json.loads((out / "optimizers.json").read_text())
    assert saved["complete"] is True
    assert (out / "optimizers.png").stat().st_size > 0
    markdown = (out / "optimizers.md").read_text()
    assert "held-out wording L1" in markdown
    # both budgets, each table saying which: equal FLOPs (an Adam step at its compiled cost) and
    # equal wall time (each curve read at the fastest method's loop time)
    assert "**Equal FLOPs**" in markdown and "**Equal wall time**" in markdown
    for search in saved["searches"]:
        assert search["s_per_step"] > 0
        if search["method"] in ("gradient", "hybrid"):
            assert search["cost"]["source"] == "xla" and search["cost"]["forwards_per_step"] > 3.0
    timed = saved["equal_time"]
    assert timed["seconds"] > 0 and {r["method"] for r in timed["rows"]} == {"de-paper", "gradient", "hybrid"}
    assert min(r["steps"] for r in timed["rows"]) >= 1
    rows = {(r["method"], r["option"]): r for r in report["rows"]}
    # both orders on DE: one multi-target program for every seed (gradient runs one per seed)
    assert set(rows) == {("de-paper", "normal"), ("de-paper", "both-orders"), ("gradient", "normal"),
                         ("hybrid", "normal")}
    budget = 4 * 3
    for row in rows.values():
        assert row["n_seeds"] == 2 and row["evaluations"] <= budget
        for metric in ("tuned", "heldout", "reversed"):
            assert len(row[metric]["per_seed"]) == 2 and np.isfinite(row[metric]["mean"])
    assert len(saved["searches"]) == 4 * 2 * 2
    # the curves run over forward passes and never rise
    for search in saved["searches"]:
        assert np.all(np.diff(search["curve"]) <= 1e-6)
    # one search's figures against jaxalign.evaluate_robustness on its saved prompt
    search = next(s for s in saved["searches"] if s["method"] == "hybrid" and s["seed"] == 1)
    prompt = np.load(out / "prompts.npz")[f"hybrid|normal|{search['country']}|1"]
    lm = jaxalign.load_model("tiny-random", dtype="float32")
    robust = jaxalign.evaluate_robustness(lm, prompt, search["country"])
    by = {(r.condition, r.prompt): r.loss for r in robust.rows}
    for condition in ("tuned", "heldout", "reversed"):
        assert search[condition] == pytest.approx(by[(condition, "soft prompt")], rel=1e-4, abs=1e-4)
        assert saved["naive"][condition][search["country"]] == pytest.approx(
            by[(condition, "naive")], rel=1e-4, abs=1e-4)
    # the tuned figure is the result's own loss (same readout, same wording)
    assert search["tuned"] == pytest.approx(search["train_loss"], rel=1e-4, abs=1e-4)

    # CulturalBench: the benchmark's "United States" is the survey's U.S.A.; every search is
    # evaluated on its own country's questions, the row averages the countries
    easy = load_culturalbench(BENCH, set="easy")
    usa = next(s for s in saved["searches"] if s["method"] == "gradient" and s["country"] == "U.S.A.")
    prompt = np.load(out / "prompts.npz")[f"gradient|normal|U.S.A.|{usa['seed']}"]
    assert usa["culturalbench"] == evaluate_culturalbench(lm, easy.for_country("United States"),
                                                          soft_prompt=prompt).accuracy
    assert saved["naive"]["culturalbench"] == {
        "China": evaluate_culturalbench(lm, easy.for_country("China")).accuracy,
        "U.S.A.": evaluate_culturalbench(lm, easy.for_country("United States")).accuracy}
    bench_row = rows[("gradient", "normal")]["culturalbench"]
    grad = [s for s in saved["searches"] if s["method"] == "gradient"]
    assert bench_row["per_seed"] == pytest.approx(
        [np.mean([s["culturalbench"] for s in grad if s["seed"] == seed]) for seed in (0, 1)])
    assert saved["culturalbench"]["questions"] == {"China": 3, "U.S.A.": 1}
    assert "CulturalBench acc." in (out / "optimizers.md").read_text()

    # --append with nothing new to run and another set: every search is evaluated on it; a
    # country without questions is left out of the means, not counted as wrong
    capsys.readouterr()
    appended = optimizers.main(study + ["--append", "--culturalbench", BENCH, "--culturalbench-set", "hard"])
    assert "no question about U.S.A." in capsys.readouterr().err
    again = json.loads((out / "optimizers.json").read_text())
    assert [s["tuned"] for s in again["searches"]] == [s["tuned"] for s in saved["searches"]]
    hard = load_culturalbench(BENCH, set="hard").for_country("China")
    for search in again["searches"]:
        prompt = np.load(out / "prompts.npz")[optimizers.prompt_key(search)]
        expected = (None if search["country"] == "U.S.A." else
                    evaluate_culturalbench(lm, hard, soft_prompt=prompt).accuracy)
        assert search["culturalbench"] == expected
    assert again["naive"]["culturalbench"]["U.S.A."] is None
    for row in appended["rows"]:
        assert set(row["culturalbench"]["per_country"]) == {"China"}


def test_optimizers_study_checks_culturalbench_before_anything(tmp_path):
    from benchmarks import optimizers

    out = tmp_path / "study"
    with pytest.raises(ValueError, match="no CulturalBench-Hard question about Japan"):
        optimizers.main(["--countries", "Japan", "--culturalbench", BENCH, "--out", str(out), "--no-progress"])
    with pytest.raises(FileNotFoundError):
        optimizers.main(["--culturalbench", str(tmp_path / "missing.csv"), "--out", str(out), "--no-progress"])
    assert not out.exists()  # nothing written, no model loaded
