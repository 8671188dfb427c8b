"""benchmarks/smollm2_reread.py on the committed SmolLM2 study files: a few invariants."""

from __future__ import annotations

import json
import math

import numpy as np


def test_reread_on_committed_files(tmp_path):
    from benchmarks import smollm2_reread as reread

    r = reread.main(["--out", str(tmp_path)])
    assert (tmp_path / "smollm2_reread.md").read_text().startswith("# SmolLM2-135M-Instruct study")
    assert json.loads((tmp_path / "smollm2_reread.json").read_text())["n_searches"] == r["n_searches"]

    # Kendall tau between two random orderings of 6 items: 720 permutations, mean 0, the closed-form
    # sd sqrt(2(2n+5) / (9n(n-1))); without ties tau = k/15 with k odd, so adjacent values are 2/15 apart
    null = r["tau_null"]
    assert null["n_permutations"] == 720 and sum(null["counts"]) == 720
    assert abs(null["mean"]) < 1e-12
    assert math.isclose(null["sd"], math.sqrt(2 * 17 / (9 * 6 * 5)), rel_tol=1e-12)
    assert null["values_x15"] == list(range(-15, 16, 2))
    assert math.isclose(null["step"], 2 / 15)

    # the all-3 respondent: every index is a difference of item means, so its dims are 0 and its L1 is the
    # target's mean; China by hand: (80 + 20 + 66 + 30 + 87 + 24) / 6
    scale = r["scale_only"]
    assert np.allclose(scale["all3_dims"], 0.0)
    assert math.isclose(scale["respondent"]["China"]["all3_l1"], 307 / 6, rel_tol=1e-12)
    assert math.isclose(scale["respondent"]["Saudi Arabia"]["all3_l1"], (36 + 52) / 2, rel_tol=1e-12)
    # below the target everywhere, the L1 is mean(target) - mean(dims) for every such search
    assert 0 < scale["n_all_below"] == scale["n_identity"] <= scale["n"] == r["n_searches"]

    # the recorded L1s are those of the recorded dims; step 0 is never below the end of a search
    assert r["checks"]["tuned_l1_from_dims"] < 1e-3 and r["checks"]["curve_monotone"]
    g = r["gain_at_start"]
    assert all(row["step0"] >= row["tuned"] - 1e-3 for row in g["rows"])
    assert 0 < g["all"]["share"] < 1
