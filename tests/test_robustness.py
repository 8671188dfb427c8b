"""Robustness: the held-out wording, the reversed option order, and tuning on both orders."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxalign
from jaxalign.evaluate.robustness import CONDITIONS, evaluate_robustness
from jaxalign.survey.paraphrase import HELDOUT_WORDING, heldout_items, heldout_vsm13

K = 2
TARGET = {"PDI": 80.0, "IDV": 20.0, "MAS": 66.0, "UAI": 30.0, "LTO": 87.0, "IVR": 24.0}


@pytest.fixture(scope="module")
def prompt(lm):
    std = float(np.asarray(lm.embedding_matrix).std())
    return (std * np.random.default_rng(5).normal(size=(K, lm.config.hidden_size))).astype(np.float32)


@pytest.fixture(scope="module")
def report(lm, prompt):
    return evaluate_robustness(lm, prompt, TARGET, mode="full", n_buckets=1)


# ----------------------------------------------------------------------------- held-out wording
def test_heldout_wording_is_a_different_text_of_the_same_items():
    builtin = jaxalign.vsm13(constants={"PDI": 50.0})
    heldout = heldout_vsm13(base=builtin)
    assert heldout.wording == HELDOUT_WORDING == "jaxalign-heldout-v1"
    assert heldout.n_items == 24 and heldout.item_ids == tuple(str(k) for k in range(1, 25))
    np.testing.assert_array_equal(heldout.weights, builtin.weights)      # same formulas
    np.testing.assert_array_equal(heldout.constants, builtin.constants)  # constants kept
    for old, new in zip(builtin.items, heldout.items):
        assert old.id == new.id and len(new.options) == 5
        assert new.text != old.text, f"item {new.id} repeats the built-in text"
    texts = [item.text for item in heldout.items]
    assert len(set(texts)) == 24
    by_id = {item.id: item for item in heldout_items()}
    # directions: 1 is the first label; item 20 still runs never .. always
    assert by_id["20"].options[0] == "not at all" and by_id["20"].options[-1] == "all the time"
    assert by_id["15"].options[0] == "all the time" and by_id["15"].options[-1] == "not at all"
    assert by_id["16"].options[0] == "all the time"
    assert by_id["17"].options[0].startswith("yes") and by_id["17"].options[-1].startswith("no")
    for k in range(1, 15):
        assert by_id[str(k)].options[0] == "of the utmost importance"
        assert "little or no importance" in by_id[str(k)].options[-1]
    for k in range(21, 25):
        assert by_id[str(k)].options[0] == "I completely agree"
        assert by_id[str(k)].options[-1] == "I completely disagree"
    assert by_id["18"].options[0] == "excellent" and by_id["19"].options[-1] == "not proud at all"
    assert heldout_vsm13(constants={"IDV": 7.0}).constants[1] == 7.0


# ----------------------------------------------------------------------------- evaluation
def test_report_has_every_condition_and_prompt(report):
    assert [(r.condition, r.prompt) for r in report.rows] == [
        (c, p) for c in CONDITIONS for p in ("naive", "soft prompt")
    ]
    assert all(r.n_items == 24 and r.dims.shape == (6,) for r in report.rows)
    assert report.row("heldout").wording == "jaxalign-heldout-v1"
    assert report.row("reversed", "naive").wording == report.row("tuned").wording == "jaxalign-v1"
    for r in report.rows:  # loss = mean |dims - target| over the six dimensions
        assert r.loss == pytest.approx(np.mean(np.abs(r.dims - np.array(list(TARGET.values())))), rel=1e-5)
    # the conditions are really different presentations
    assert not np.allclose(report.row("tuned").item_means, report.row("reversed").item_means)
    assert not np.allclose(report.row("tuned").item_means, report.row("heldout").item_means)
    table = report.table()
    assert "reversed order, soft prompt" in table and "held-out wording, naive" in table
    assert json.loads(json.dumps(report.to_json()))["rows"][0]["condition"] == "tuned"


def test_reversed_order_is_mapped_back_to_answer_codes(lm, report):
    """Independent check on the plain model: render the reversed item, read digits 1..5 from the
    full logits, and map presented digit j to code 6 - j by hand."""
    tok = lm.tokenizer
    vsm = jaxalign.vsm13()
    context = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    n_context = len(tok(context, add_special_tokens=False)["input_ids"])
    digits = [tok(context + str(j), add_special_tokens=False)["input_ids"][n_context] for j in range(1, 6)]
    naive = report.row("reversed", "naive")
    for q in (0, 14, 19):  # items 1, 15 and 20 (item 20 runs never .. always)
        item = vsm.items[q]
        labels = list(item.options)[::-1]
        body = item.text + "\n" + "\n".join(f"{j}. {label}" for j, label in enumerate(labels, 1))
        text = tok.apply_chat_template(
            [{"role": "user", "content": body + "\nAnswer with one digit from 1 to 5."}],
            tokenize=False, add_generation_prompt=True)
        ids = np.asarray(tok(text, add_special_tokens=False)["input_ids"])[None]
        logits = np.asarray(lm.logits(ids))[0, -1, digits]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        expected_code = float(np.sum(p * (6 - np.arange(1, 6))))  # digit j shows code 6 - j
        assert naive.item_means[q] == pytest.approx(expected_code, abs=2e-4)


@pytest.fixture(scope="module")
def order_scorers(lm):
    from jaxalign.scoring import make_scorer

    common = dict(k=K, target=np.array(list(TARGET.values()), np.float32), mode="full", n_buckets=1)
    return (make_scorer(lm, jaxalign.vsm13(), **common),
            make_scorer(lm, jaxalign.vsm13(), reverse_options=True, **common))


def test_align_both_orders_tunes_the_averaged_loss(lm, order_scorers):
    from jaxalign.api import AlignConfig
    from jaxalign.api import align_both_orders

    config = AlignConfig(k=K, subspace=4, population=4, generations=2, seed=1, baselines=(),
                         scoring_mode="full")
    result = align_both_orders(lm, TARGET, config=config, scorer_options={"n_buckets": 1})
    from jaxalign.survey import l1_loss

    normal, reversed_ = order_scorers
    dims = 0.5 * (np.asarray(normal(result.soft_prompt[None]).dims[0])
                  + np.asarray(reversed_(result.soft_prompt[None]).dims[0]))  # item means averaged first
    averaged = float(l1_loss(dims, np.array(list(TARGET.values()), np.float32)))
    assert result.evaluations == 4 * 3
    # tuned and reported on the L1 of the order-averaged dims (not the mean of two L1s, which
    # lets position shifts drift in opposite directions)
    np.testing.assert_allclose(result.dims, dims, rtol=1e-4, atol=1e-4)
    assert result.loss == pytest.approx(averaged, rel=1e-4)
    assert result.history["best_loss"][-1] == pytest.approx(averaged, rel=1e-4)
    assert result.history["best_loss"] == sorted(result.history["best_loss"], reverse=True)


def test_cli_robustness_refuses_a_missing_prompt_file(capsys, tmp_path):
    from jaxalign.cli import main

    assert main(["eval", "robustness", "--soft-prompt", str(tmp_path / "absent.safetensors"),
                 "--country", "China"]) == 2
    assert "no soft prompt file" in capsys.readouterr().err
