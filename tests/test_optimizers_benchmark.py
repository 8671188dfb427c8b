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


@pytest.mark.slow
def test_optimizers_study_slot_seeds_written_prompts_and_readings(tmp_path):
    """--slot reaches the searches and their scorers, --first-seed reruns one replicate exactly,
    --baselines scores the written prompts, and the Kendall tau / anchored readings match
    scipy and :func:`jaxalign.anchor_constants`."""
    from scipy.stats import kendalltau

    from benchmarks import optimizers

    small = ["--methods", "de-paper,gradient", "--countries", "China,U.S.A.", "--options", "normal",
             "--population", "4", "--generations", "2", "-k", "2", "--subspace", "4",
             "--slot", "user_end", "--no-progress", "--no-figure"]
    both = optimizers.main(small + ["--seeds", "2", "--baselines", "persona,icl", "--out", str(tmp_path / "a")])
    optimizers.main(small[2:] + ["--methods", "de-paper", "--seeds", "1", "--first-seed", "1",
                                 "--out", str(tmp_path / "b")])
    saved = json.loads((tmp_path / "a" / "optimizers.json").read_text())
    alone = json.loads((tmp_path / "b" / "optimizers.json").read_text())
    assert saved["setup"]["slot"] == "user_end" and alone["setup"]["first_seed"] == 1
    assert all(c["slot"] == "user_end" for c in saved["setup"]["configs"].values())
    # replicate 1 run alone is replicate 1 of the two-seed study (DE draws the stream of its
    # target "<country> #1"; Adam would use space seed + 1)
    one = {optimizers.prompt_key(s): s for s in saved["searches"] if s["seed"] == 1 and s["method"] == "de-paper"}
    assert {optimizers.prompt_key(s) for s in alone["searches"]} == set(one)
    a_prompts, b_prompts = np.load(tmp_path / "a" / "prompts.npz"), np.load(tmp_path / "b" / "prompts.npz")
    for search in alone["searches"]:
        key = optimizers.prompt_key(search)
        np.testing.assert_allclose(b_prompts[key], a_prompts[key], atol=1e-6)
        assert search["tuned"] == pytest.approx(one[key]["tuned"], abs=1e-4)

    lm = jaxalign.load_model("tiny-random", dtype="float32")
    instrument = jaxalign.vsm13()
    usa = jaxalign.resolve_target("U.S.A.")
    search = next(s for s in saved["searches"] if s["method"] == "gradient" and s["country"] == "China")
    prompt = a_prompts[optimizers.prompt_key(search)]
    # the scorers use the study's slot: the same figures as evaluate_robustness at user_end
    robust = jaxalign.evaluate_robustness(lm, prompt, "China", slot="user_end")
    by = {(r.condition, r.prompt): r for r in robust.rows}
    for condition in ("tuned", "heldout", "reversed"):
        assert search[condition] == pytest.approx(by[(condition, "soft prompt")].loss, abs=1e-4)
    # the written prompts: jaxalign.run_baselines' Persona and ICL losses on the tuned wording
    for name in ("persona", "icl"):
        for country in ("China", "U.S.A."):
            expected = jaxalign.run_baselines(lm, instrument, jaxalign.resolve_target(country), names=(name,))
            assert saved["naive"]["written"][name]["tuned"][country] == pytest.approx(
                float(expected[name].loss), abs=1e-4)
        assert set(saved["naive"]["written"][name]) >= {"tuned", "heldout", "reversed", "tau", "anchored"}
    # Kendall tau against scipy; anchored L1 from anchor_constants on the plain model's item means
    china = jaxalign.resolve_target("China")
    assert search["tau"] == pytest.approx(kendalltau(search["dims"]["tuned"], china.values)[0], abs=1e-6)
    from jaxalign.scoring import make_scorer

    empty = np.zeros((1, 0, lm.config.hidden_size), np.float32)
    plain = make_scorer(lm, instrument, k=0, seed=0)(empty)
    soft = make_scorer(lm, instrument, k=2, seed=0, slot="user_end")(prompt[None])
    constants = jaxalign.anchor_constants(instrument, np.asarray(plain.item_means[0]), usa)
    anchored = instrument.indices(np.asarray(soft.item_means[0], np.float64), constants=constants)
    assert search["anchored"] == pytest.approx(float(np.mean(np.abs(anchored - china.values))), abs=1e-3)
    assert saved["naive"]["anchored"]["U.S.A."] == pytest.approx(0.0, abs=1e-4)
    rows = {r["method"]: r for r in both["rows"]}
    assert {"tau", "anchored"} <= set(rows["gradient"])
    markdown = (tmp_path / "a" / "optimizers.md").read_text()
    assert "Kendall tau" in markdown and "persona (written prompt)" in markdown and "user_end" in markdown
    # another slot is another setup: --append refuses it
    with pytest.raises(ValueError, match="slot"):
        optimizers.main(small[2:-4] + ["--methods", "de-paper", "--slot", "user_start", "--seeds", "1",
                                       "--first-seed", "1", "--append", "--out", str(tmp_path / "b"),
                                       "--no-progress"])


def test_optimizers_set_overrides_are_checked():
    from benchmarks import optimizers

    assert optimizers.parse_overrides(["init_scale=0.5"]) == {"init_scale": 0.5}
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        optimizers.parse_overrides(["init_scale"])
    with pytest.raises(ValueError, match="not an AlignConfig field"):
        optimizers.parse_overrides(["spread=2"])
    with pytest.raises(ValueError, match="the study sets this field"):
        optimizers.parse_overrides(["population=32"])


@pytest.mark.slow
def test_optimizers_tuning_flags_reach_the_configs(tmp_path):
    """--set, --init-text and --extra-wording reach every search's config, are recorded in the
    setup and the report, and --append refuses a study with other tuning flags."""
    from benchmarks import optimizers

    wording = str(Path(optimizers.__file__).parent / "wordings" / "tune_a.json")
    small = ["--methods", "de", "--countries", "China,U.S.A.", "--options", "normal", "--population", "4",
             "--generations", "1", "-k", "2", "--subspace", "4", "--slot", "user_end", "--no-progress",
             "--no-figure", "--seeds", "1"]
    out = tmp_path / "tuned"
    optimizers.main(small + ["--set", "init_scale=0.5", "--init-text", "persona", "--extra-wording", wording,
                             "--out", str(out)])
    saved = json.loads((out / "optimizers.json").read_text())
    assert saved["setup"]["overrides"] == {"init_scale": 0.5}
    assert saved["setup"]["init_text"] == "persona" and saved["setup"]["extra_wordings"] == [wording]
    config = saved["setup"]["configs"]["de/normal"]
    assert config["init_scale"] == 0.5 and config["extra_wordings"] == [wording]
    assert {s["country"] for s in saved["searches"]} == {"China", "U.S.A."}
    markdown = (out / "optimizers.md").read_text()
    assert "persona text" in markdown and "init_scale = 0.5" in markdown and "tune_a.json" in markdown
    with pytest.raises(ValueError, match="overrides"):
        optimizers.main(small + ["--set", "init_scale=2", "--init-text", "persona", "--extra-wording", wording,
                                 "--append", "--out", str(out)])
    with pytest.raises(ValueError, match="init_text"):
        optimizers.main(small + ["--set", "init_scale=0.5", "--extra-wording", wording, "--append",
                                 "--out", str(out)])
