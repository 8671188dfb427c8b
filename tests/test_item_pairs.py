"""Item-pair halves of VSM 2013 (tune on one pair per index, test on the other): the halves' indices
against the manual's formulas written out by hand, a run tuned on one half, its resume refusal,
and `eval matrix --item-pairs`."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxalign
from jaxalign import api
from jaxalign.cli import main
from jaxalign.optimize.resume import resume_differences
from jaxalign.scoring import make_scorer
from jaxalign.survey.item_pairs import half_weights, item_pair_half

SMALL = dict(k=2, population=4, subspace=4, baselines=(), chunk_size=5)

# The manual's formulas, pair by pair: (dimension, (+item, -item, coefficient) x 2)
MANUAL = {
    "PDI": ((7, 2, 35), (20, 23, 25)),
    "IDV": ((4, 1, 35), (9, 6, 35)),
    "MAS": ((5, 3, 35), (8, 10, 35)),
    "UAI": ((18, 15, 40), (21, 24, 25)),
    "LTO": ((13, 14, 40), (19, 22, 25)),
    "IVR": ((12, 11, 35), (17, 16, 40)),
}


def by_hand(m: np.ndarray, half: int) -> np.ndarray:
    """Indices (C = 0) from one pair, scaled by the sum of the row's two coefficients."""
    out = []
    for pairs in MANUAL.values():
        plus, minus, _ = pairs[half]
        total = pairs[0][2] + pairs[1][2]
        out.append(total * (m[plus - 1] - m[minus - 1]))
    return np.array(out)


def test_halves_follow_the_manual_and_average_to_the_full_index():
    instrument = jaxalign.vsm13()
    m = np.random.default_rng(0).uniform(1, 5, 24)  # item means, items 1..24
    a = item_pair_half(instrument, "a").indices(m[None])[0]
    b = item_pair_half(instrument, "b").indices(m[None])[0]
    np.testing.assert_allclose(a, by_hand(m, 0), rtol=1e-6)  # indices() computes in float32
    np.testing.assert_allclose(b, by_hand(m, 1), rtol=1e-6)  # indices() computes in float32
    # PDI by hand once more, spelled out: 60 (m07 - m02) and 60 (m20 - m23)
    assert a[0] == pytest.approx(60 * (m[6] - m[1])) and b[0] == pytest.approx(60 * (m[19] - m[22]))
    # the full index is the coefficient-weighted mean of the halves
    share = np.array([pairs[0][2] / (pairs[0][2] + pairs[1][2]) for pairs in MANUAL.values()])
    np.testing.assert_allclose(share * a + (1 - share) * b, instrument.indices(m[None])[0], rtol=1e-6)  # indices() computes in float32
    # constants, items and wording are kept
    with_c = jaxalign.vsm13(constants={"PDI": 10.0})
    assert item_pair_half(with_c, "a").indices(m[None])[0][0] == pytest.approx(60 * (m[6] - m[1]) + 10)
    assert item_pair_half(instrument, "a").items == instrument.items
    assert item_pair_half(instrument, None) is instrument


def test_bad_halves_and_other_formulas_are_refused():
    with pytest.raises(ValueError, match="one of a, b"):
        half_weights(jaxalign.vsm13(), "c")
    custom = jaxalign.survey.Instrument.from_formulas(
        "mine", "mine", jaxalign.vsm13().items, {"X": {"1": 10, "2": -10}})
    with pytest.raises(ValueError, match="VSM 2013's formulas"):
        item_pair_half(custom, "a")
    with pytest.raises(ValueError, match="item_pairs must be None or one of a, b"):
        api.AlignConfig(item_pairs="both")


def test_a_setting_the_checkpoint_predates_reads_as_its_default():
    saved = {"population": 8, "loss": "paper"}  # written before item_pairs existed
    assert resume_differences(saved, {"population": 8, "loss": "paper", "item_pairs": None}, ()) == []
    assert resume_differences(saved, {"population": 8, "loss": "paper", "item_pairs": "a"}, ()) == [
        "item_pairs: None -> 'a'"]


@pytest.mark.slow
def test_a_run_tuned_on_one_half_and_its_resume(lm, tmp_path):
    config = api.AlignConfig(generations=2, seed=1, item_pairs="a", **SMALL)
    result = jaxalign.align(lm, "China", config=config, out=tmp_path / "run", progress=False)
    half = item_pair_half(jaxalign.vsm13(), "a")
    # the returned prompt re-scored by a scorer of the half, built apart from the run
    scores = make_scorer(lm, half, k=2)(np.asarray(result.soft_prompt)[None])
    np.testing.assert_allclose(np.asarray(scores.dims[0]), result.dims, rtol=1e-5, atol=1e-4)
    target = jaxalign.resolve_target("China").values
    assert result.loss == pytest.approx(float(np.mean(np.abs(result.dims - target))), rel=1e-5)
    # ... and its dims are the half's, not the full instrument's
    full = make_scorer(lm, jaxalign.vsm13(), k=2)(np.asarray(result.soft_prompt)[None]).dims[0]
    assert not np.allclose(np.asarray(full), result.dims, atol=1e-2)
    recorded = json.loads((tmp_path / "run" / "results.json").read_text())
    assert recorded["config"]["item_pairs"] == "a"
    with pytest.raises(ValueError, match=r"item_pairs: 'a' -> 'b'"):
        jaxalign.align(lm, "China", config=api.AlignConfig(generations=3, seed=1, item_pairs="b", **SMALL),
                       out=tmp_path / "run", resume=True, progress=False)


@pytest.mark.slow
def test_eval_matrix_reads_the_other_half(lm, tmp_path, capsys):
    """Two countries tuned on half a; the matrix on half b equals one built by hand from the
    item means it saved and the manual's second pairs."""
    from jaxalign.evaluate.matrix import matrix_statistics

    run = tmp_path / "run"
    config = api.AlignConfig(generations=1, seed=2, item_pairs="a", loss="relative", **SMALL)
    jaxalign.align(lm, ["China", "Japan"], config=config, out=run, progress=False)
    assert main(["eval", "matrix", str(run), "--model", "tiny-random", "--dtype", "float32", "--baselines", "none",
                 "--orders", "one", "--bootstrap", "0", "--item-pairs", "b", "--json", "--out",
                 str(tmp_path / "m")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["item_pairs"] == "b" and report["arms"][0]["arm"].endswith("pairs=a")
    saved = np.load(tmp_path / "m" / "matrix_items.npz")
    means = saved["item_means"].astype(np.float64)  # (E, S, Q)
    dims = np.stack([np.mean([by_hand(means[e, s], 1) for s in range(means.shape[1])], axis=0)
                     for e in range(means.shape[0])])  # (E, D): mean over the test presentations
    targets = np.stack([jaxalign.resolve_target(c).values for c in saved["country"]])
    want = matrix_statistics(dims, targets)
    assert report["arms"][0]["averaged"]["own_l1"] == pytest.approx(want["own_l1"], rel=1e-5)
