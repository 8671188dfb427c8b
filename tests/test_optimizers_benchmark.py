"""benchmarks/optimizers.py end to end on the tiny model (a tiny budget)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxalign


@pytest.mark.slow
def test_optimizers_study_end_to_end(tmp_path):
    from benchmarks import optimizers

    out = tmp_path / "study"
    report = optimizers.main([
        "--methods", "de-paper,gradient,hybrid", "--countries", "China,India", "--seeds", "2",
        "--population", "4", "--generations", "2", "-k", "2", "--subspace", "4",
        "--option-methods", "de-paper", "--out", str(out), "--no-progress"])
    saved = json.loads((out / "optimizers.json").read_text())
    assert saved["complete"] is True
    assert (out / "optimizers.png").stat().st_size > 0
    assert "held-out wording L1" in (out / "optimizers.md").read_text()
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
