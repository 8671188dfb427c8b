"""Losses free of the arbitrary constants, presentation-averaged readouts and the prompt x target
matrix, checked against independent recomputations (hand-computed cases and separate passes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxalign
from jaxalign import api
from jaxalign.evaluate.matrix import (
    Entry,
    arm_scores,
    arm_statistics,
    matrix_statistics,
    score_entries,
    test_presentations as heldout_presentations,
)
from jaxalign.survey import hofstede, vsm13
from jaxalign.survey.objectives import (
    between_country_correlation,
    fitted_constants,
    make_objective,
    relative_matrix,
)
from jaxalign.survey.presentations import option_orders, position_content_split, presentations

NAN = float("nan")


# ----------------------------------------------------------------------------- pure functions
def test_option_orders_put_every_code_at_every_position_once():
    assert option_orders("one") == (("normal", (1, 2, 3, 4, 5)),)
    assert option_orders("both")[1] == ("reversed", (5, 4, 3, 2, 1))
    cyclic = np.array([order for _, order in option_orders("cyclic")])         # (5 orders, 5 positions)
    assert cyclic.shape == (5, 5) and cyclic[1].tolist() == [2, 3, 4, 5, 1]
    for position in range(5):  # a Latin square: a pure position effect cancels in the mean
        assert sorted(cyclic[:, position].tolist()) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="unknown option orders 'all'"):
        option_orders("all")


def test_presentations_are_wordings_times_orders():
    from jaxalign.survey.paraphrase import heldout_wording

    other = heldout_wording("jaxalign-heldout-v2")
    shown = presentations(vsm13(), "both", [other])
    assert [p.name for p in shown] == ["normal", "reversed", "wording:jaxalign-heldout-v2",
                                       "wording:jaxalign-heldout-v2/reversed"]
    assert shown[1].reversed and not shown[0].reversed and shown[3].instrument is other


def test_fitted_constants_are_the_median_gap_hand_computed():
    dims = np.array([[10.0, 0.0], [20.0, 5.0], [40.0, 7.0]])
    targets = np.array([[50.0, 1.0], [30.0, NAN], [90.0, 9.0]])
    # gaps: dim 0: 40, 10, 50 -> median 40; dim 1: 1 and 2 (country 1 lacks it) -> median 1.5
    np.testing.assert_allclose(fitted_constants(dims, targets), [40.0, 1.5])
    matrix = relative_matrix(dims, targets, np.array([40.0, 1.5]))
    # prompt 0 + constants = (50, 1.5): to target 0 (|0| + |0.5|) / 2 = 0.25; to target 1 only dim 0: 20
    assert matrix[0, 0] == pytest.approx(0.25) and matrix[0, 1] == pytest.approx(20.0)


def test_a_constant_added_to_every_country_leaves_the_relative_loss_unchanged():
    rng = np.random.default_rng(0)
    dims = rng.normal(30, 10, (5, 6))
    targets = rng.uniform(20, 90, (5, 6))
    targets[2, 4] = NAN
    base = matrix_statistics(dims, targets)
    shift = rng.normal(0, 20, (6,))
    moved = matrix_statistics(dims + shift, targets)
    np.testing.assert_allclose(moved["matrix"], base["matrix"], atol=1e-9)
    np.testing.assert_allclose(moved["constants"], base["constants"] - shift, atol=1e-9)
    assert moved["diagonal"] == base["diagonal"] and moved["correlation"] == pytest.approx(base["correlation"])
    # the objective used in training: moving the plain model by a constant moves its offsets back
    objective = make_objective("relative", n_targets=5)
    plain = rng.normal(0, 5, (6,))
    np.testing.assert_allclose(objective.offsets(targets, plain + shift), objective.offsets(targets, plain) - shift,
                               atol=1e-4)


def test_perfect_prompts_dominate_the_diagonal_and_the_plain_model_has_no_differences():
    targets = np.array([hofstede(c).values for c in ("U.S.A.", "China", "India", "Japan")], np.float64)
    stats = matrix_statistics(targets - 37.0, targets)  # the targets' own differences, any constant
    assert stats["diagonal"] == 4 and stats["own_l1"] == pytest.approx(0.0, abs=1e-9)
    assert stats["correlation"] == pytest.approx(1.0)
    plain = matrix_statistics(np.zeros_like(targets), targets)
    assert np.isnan(plain["correlation"])  # no between-country differences at all
    assert between_country_correlation(-(targets - targets.mean(0)), targets) == pytest.approx(-1.0)


def test_objectives_offsets_hand_computed_and_refusals():
    targets = np.array([[40.0, 91.0], [80.0, 20.0], [77.0, NAN]])
    plain = np.array([10.0, 30.0])
    np.testing.assert_allclose(make_objective("paper").offsets(targets, plain), [0.0, 0.0])
    # relative: median over countries of target - plain: dim 0 median(30, 70, 67) = 67; dim 1 median(61, -10) = 25.5
    np.testing.assert_allclose(make_objective("relative", n_targets=3).offsets(targets, plain), [67.0, 25.5])
    anchored = make_objective("anchored", "Japan")
    japan = hofstede("Japan").values
    np.testing.assert_allclose(anchored.offsets(np.atleast_2d(japan), np.zeros(6)), japan, rtol=1e-6)
    with pytest.raises(ValueError, match="at least two targets"):
        make_objective("relative", n_targets=1)
    with pytest.raises(ValueError, match="needs a reference country"):
        make_objective("anchored")
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        make_objective("l2")
    with pytest.raises(ValueError, match="lacks dimension"):  # Saudi Arabia has 2 of 6
        make_objective("anchored", "Saudi Arabia").offsets(np.atleast_2d(japan), np.zeros(6))
    with pytest.raises(ValueError, match="unknown orders"):
        api.AlignConfig(orders="all")
    with pytest.raises(ValueError, match="needs a reference"):
        api.AlignConfig(loss="anchored")
    assert api.AlignConfig(both_orders=True).orders == "both"
    assert api.AlignConfig(orders="both").both_orders


def test_position_and_content_parts():
    split = position_content_split(np.array([4.0, 1.0]), np.array([-4.0, 1.0]))
    np.testing.assert_allclose(split["position"], [4.0, 0.0])
    np.testing.assert_allclose(split["content"], [0.0, 1.0])


# ----------------------------------------------------------------------------- on the tiny model
# lm: the session's tiny model (tests/conftest.py)
def test_order_averaged_scores_equal_the_hand_mapped_mean_of_separate_passes(lm):
    """``score(orders='cyclic')`` equals the mean of five separate passes, each with its options
    rotated, whose answer distributions are mapped back to the answer codes here by hand."""
    rng = np.random.default_rng(1)
    prompt = rng.normal(0, 0.3, (2, lm.config.hidden_size)).astype(np.float32)
    averaged = jaxalign.score(lm, soft_prompt=prompt, slot="user_end", orders="cyclic", target="China")
    from jaxalign.scoring import make_scorer

    probs = []
    for _, order in option_orders("cyclic"):
        scorer = make_scorer(lm, vsm13(), k=2, slot="user_end", option_order=order)
        presented = _presented_probs(lm, scorer, prompt)                        # (Q, 5) by position
        by_code = np.zeros_like(presented)
        for position, code in enumerate(order):
            by_code[:, code - 1] = presented[:, position]
        probs.append(by_code)
    expected_probs = np.mean(probs, axis=0)
    np.testing.assert_allclose(np.asarray(averaged.probs[0]), expected_probs, atol=2e-6)
    means = (expected_probs * np.arange(1, 6)).sum(-1)
    np.testing.assert_allclose(np.asarray(averaged.item_means[0]), means, atol=1e-5)
    dims = np.asarray(vsm13().indices(means))
    np.testing.assert_allclose(np.asarray(averaged.dims[0]), dims, atol=1e-3)
    l1 = np.nanmean(np.abs(dims - hofstede("China").values))
    assert float(averaged.loss[0]) == pytest.approx(l1, abs=1e-3)


def _presented_probs(lm, scorer, prompt: np.ndarray) -> np.ndarray:
    """The answer distribution over the digits as shown (position order), from a plain full pass
    of each rendered ``[prefix][soft][suffix]`` sequence (no cache, no map back to codes)."""
    import jax

    from jaxalign.scoring_pass import build_sequences

    batch = scorer.batch
    embeds, mask = build_sequences(lm.embed(np.asarray(batch.prefix_ids)), np.asarray(batch.prefix_mask),
                                   prompt[None], lm.embed(np.asarray(batch.suffix_ids)), np.asarray(batch.suffix_mask))
    logits = lm.selected_logits(np.asarray(batch.answer_ids), inputs_embeds=embeds, attention_mask=mask)  # (Q, 5)
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def test_a_rotated_order_lists_the_options_of_those_codes():
    from jaxalign.prompting.layout import item_body

    item = vsm13().items[0]
    body = item_body(item, option_order=(2, 3, 4, 5, 1))
    lines = body.strip().split("\n")[-5:]
    assert lines == [f"{k}. {item.options[code - 1]}" for k, code in enumerate((2, 3, 4, 5, 1), start=1)]
    with pytest.raises(ValueError, match="not a permutation"):
        item_body(item, option_order=(1, 1, 2, 3, 4))


def test_relative_both_orders_run_records_its_objective_and_baselines_use_it(lm, tmp_path):
    config = api.AlignConfig(k=2, population=4, subspace=4, generations=1, chunk_size=1, seed=5,
                             baselines=("naive",), orders="both", loss="relative", slot="user_end")
    results = jaxalign.align(lm, ["China", "U.S.A."], config=config, progress=False, out=tmp_path / "run")
    china, usa = results
    record = china.objective
    assert record["loss"] == "relative" and record["presentations"] == ["normal", "reversed"]
    plain = record["plain_dims_by_presentation"]
    mean_plain = (np.array(plain["normal"]) + np.array(plain["reversed"])) / 2
    targets = np.stack([hofstede("China").values, hofstede("U.S.A.").values])
    np.testing.assert_allclose(record["constants"], np.median(targets - mean_plain, axis=0), rtol=1e-5, atol=1e-3)
    # the result's dims are the mean over the two orders, its loss the objective's on them
    by = record["dims_by_presentation"]
    np.testing.assert_allclose(china.dims, (np.array(by["normal"]) + np.array(by["reversed"])) / 2, atol=1e-4)
    assert china.loss == pytest.approx(np.mean(np.abs(china.dims + record["constants"] - targets[0])), abs=1e-3)
    # the plain model's loss under the relative objective: its dims + constants against the target
    naive = china.baselines["naive"]
    np.testing.assert_allclose(naive.dims, mean_plain, rtol=1e-5, atol=1e-3)  # float32, two scorer builds
    assert naive.loss == pytest.approx(np.mean(np.abs(mean_plain + record["constants"] - targets[0])), abs=1e-3)
    assert set(record["shift"]) == {"position", "content"}
    saved = json.loads((tmp_path / "run" / "China" / "results.json").read_text())
    assert saved["objective"]["loss"] == "relative" and saved["config"]["orders"] == "both"


@pytest.mark.slow
def test_matrix_equals_one_built_from_separate_score_calls(lm):
    rng = np.random.default_rng(2)
    countries = [hofstede(c) for c in ("China", "U.S.A.", "Japan")]
    prompts = rng.normal(0, 0.3, (3, 2, lm.config.hidden_size)).astype(np.float32)
    entries = [Entry(arm="tuned", target=t, seed=0, soft_prompt=p, slot="user_end")
               for t, p in zip(countries, prompts)]
    shown = heldout_presentations(vsm13(), "both")[:2]  # held-out v1, both orders (kept short)
    item_means = score_entries(lm, entries, shown)                              # (E, S, Q)
    for e, prompt in enumerate(prompts):
        for s, p in enumerate(shown):
            one = jaxalign.score(lm, soft_prompt=prompt, slot="user_end", instrument=p.instrument,
                                 option_order=p.option_order)
            np.testing.assert_allclose(item_means[e, s], np.asarray(one.item_means[0]), atol=1e-5)
    stats = arm_statistics(arm_scores(entries, item_means)[0], vsm13(), n_bootstrap=20)
    targets = np.stack([t.values for t in countries])
    dims = np.asarray(vsm13().indices(item_means))                              # (E, S, D)
    expected = [matrix_statistics(dims[:, s], targets) for s in range(len(shown))]
    assert stats["own_l1"] == pytest.approx(np.mean([x["own_l1"] for x in expected]))
    assert stats["correlation"] == pytest.approx(np.mean([x["correlation"] for x in expected]))
    averaged = matrix_statistics(dims.mean(axis=1), targets)
    assert stats["averaged"]["own_l1"] == pytest.approx(averaged["own_l1"])
    low, high = stats["bootstrap"]["correlation"]
    assert low <= high and stats["bootstrap"]["draws"] == 20


# ----------------------------------------------------------------------------- the command line
def test_cli_refuses_a_relative_loss_for_one_country_before_loading(capsys, tmp_path, monkeypatch):
    from jaxalign.cli import main, common

    monkeypatch.setattr(common, "_load", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["align", "--country", "China", "--loss", "relative", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "at least two targets" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["align", "--country", "China", "--loss", "anchored", "--out", str(tmp_path / "r")]) == 2
    assert "reference" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_eval_matrix_on_a_relative_run(tmp_path, capsys):
    from jaxalign.cli import main

    run = tmp_path / "run"
    assert main(["align", "--country", "China,U.S.A.,Japan", "--loss", "relative", "--orders", "both",
                 "--k", "2", "--subspace", "4", "--population", "4", "--generations", "1", "--slot", "user_end",
                 "--baselines", "naive", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", "matrix", str(run), "--baselines", "naive", "--orders", "one", "--bootstrap", "5",
                 "--out", str(tmp_path / "m")]) == 0
    captured = capsys.readouterr()
    assert "model tiny-random (recorded by the runs)" in captured.err
    report = json.loads((tmp_path / "m" / "matrix.json").read_text())
    arms = {a["arm"]: a for a in report["arms"]}
    assert set(arms) == {"DE loss=relative orders=both", "plain"}
    assert report["presentations"] == ["jaxalign-heldout-v1/normal", "jaxalign-heldout-v2/normal",
                                       "jaxalign-heldout-v3/normal"]
    tuned = arms["DE loss=relative orders=both"]
    assert np.asarray(tuned["matrix"]).shape == (3, 3) and 0 <= tuned["diagonal"] <= 3
    assert tuned["bootstrap"]["draws"] == 5
    assert np.isnan(arms["plain"]["correlation"])  # the plain model has no between-country differences
    assert "| DE loss=relative orders=both | 1 |" in captured.out


def test_sample_readout_result_is_rescored_with_fresh_respondents(lm):
    """With the ``sample`` readout the elite keeps lucky draws, so the returned prompt is also
    scored with respondents the run never drew: other draws (not the run's figure), close to the
    expected readout (the limit of many respondents)."""
    config = api.AlignConfig(k=2, population=4, subspace=4, generations=1, chunk_size=1, seed=5, baselines=(),
                             readout="sample", n_respondents=3000)
    result = jaxalign.align(lm, "China", config=config, progress=False)
    fresh = result.objective["fresh_draws"]
    assert not np.array_equal(np.asarray(fresh["dims"], np.float32), result.dims)
    expected = jaxalign.score(lm, soft_prompt=result.soft_prompt, readout="expected").dims[0]
    np.testing.assert_allclose(fresh["dims"], np.asarray(expected), atol=6.0)
    assert fresh["loss"] == pytest.approx(np.mean(np.abs(np.asarray(fresh["dims"]) - hofstede("China").values)),
                                          abs=1e-3)


def test_the_chat_date_is_process_zeros_on_every_process(monkeypatch):
    """Each host of a several-process run reads its own clock; the date every process renders is
    the one process 0 decided (the encoding round-trips through the broadcast)."""
    import jax
    from jax.experimental import multihost_utils

    from jaxalign import parallel

    assert parallel.shared_text("2026-12-06") == "2026-12-06"  # one process: unchanged
    sent = {}

    def broadcast(codes):  # process 0 sent "2026-12-06"; this process read "2026-12-07"
        if "zero" not in sent:
            sent["zero"] = np.asarray(codes).copy()
        return sent["zero"]

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", broadcast)
    assert parallel.shared_text("2026-12-06") == "2026-12-06"
    assert parallel.shared_text("2026-12-07") == "2026-12-06"
    sent.clear()
    assert parallel.shared_text(None) is None
