"""Baselines (naive, persona, ICL): their texts, and that they are scored like any prompt."""

from __future__ import annotations

import numpy as np
import pytest

import jaxalign
from jaxalign.baselines import BASELINES, icl_text, persona_text, run_baselines
from jaxalign.scoring import make_scorer


@pytest.fixture(scope="module")
def vsm():
    return jaxalign.vsm13()


@pytest.fixture(scope="module")
def saudi():
    return jaxalign.hofstede("Saudi Arabia")  # only LTO 36 and IVR 52 are published


@pytest.fixture(scope="module")
def results(lm, vsm, saudi):
    return run_baselines(lm, vsm, saudi)


# ----------------------------------------------------------------------------- texts
def test_persona_text_names_the_country(saudi):
    text = persona_text(saudi)
    assert text.count("Saudi Arabia") == 2 and text.startswith("You are a person from Saudi Arabia.")


def test_icl_text_describes_only_available_dimensions(saudi):
    text = icl_text(saudi)
    assert "Saudi Arabia" in text
    assert "Long-term orientation is low (LTO 36 on Hofstede's scale)" in text  # 36 < 40
    assert "Indulgence is moderate (IVR 52 on Hofstede's scale)" in text  # 40..60
    for missing in ("PDI", "IDV", "MAS", "UAI", "Power distance", "Individualism",
                    "Masculinity", "Uncertainty avoidance"):
        assert missing not in text, missing


def test_icl_text_levels_for_a_full_profile():
    text = icl_text(jaxalign.hofstede("China"))  # 80, 20, 66, 30, 87, 24
    for phrase in ("Power distance is high (PDI 80", "Individualism is low (IDV 20",
                   "Masculinity is high (MAS 66", "Uncertainty avoidance is low (UAI 30",
                   "Long-term orientation is high (LTO 87", "Indulgence is low (IVR 24"):
        assert phrase in text, phrase
    assert "China" in text and "moderate" not in text


# ----------------------------------------------------------------------------- scoring
@pytest.mark.slow
def test_run_baselines_returns_every_baseline(results, saudi, vsm):
    assert tuple(results) == BASELINES == ("naive", "persona", "icl")
    assert results["naive"].system is None
    assert results["persona"].system == persona_text(saudi)
    assert results["icl"].system == icl_text(saudi)
    for name, result in results.items():
        assert result.name == name
        assert result.dims.shape == (6,) and result.probs.shape == (vsm.n_items, 5)
        assert np.isfinite(result.loss) and np.all(np.isfinite(result.dims))
        np.testing.assert_allclose(result.probs.sum(-1), 1.0, atol=1e-5)
        # Saudi Arabia has LTO and IVR only: the loss is their mean absolute error
        expected = (abs(result.dims[4] - 36.0) + abs(result.dims[5] - 52.0)) / 2
        assert result.loss == pytest.approx(expected, abs=1e-3)
    # the system texts reach the model: answers differ from the naive ones
    for name in ("persona", "icl"):
        assert np.abs(results[name].probs - results["naive"].probs).max() > 1e-3, name


@pytest.mark.slow
def test_naive_equals_scoring_without_soft_prompt_or_system(results, lm, vsm, saudi):
    scorer = make_scorer(lm, vsm, k=0, target=saudi)
    assert scorer.batch.system is None
    scores = scorer(np.zeros((0, lm.config.hidden_size), np.float32))  # one prompt as (K, d)
    assert scores.dims.shape == (1, 6)
    naive = results["naive"]
    np.testing.assert_allclose(naive.probs, np.asarray(scores.probs[0]), atol=1e-6)
    np.testing.assert_allclose(naive.dims, np.asarray(scores.dims[0]), atol=1e-4)
    assert naive.loss == pytest.approx(float(scores.loss[0]), abs=1e-4)


def test_bad_baseline_arguments(lm, vsm, saudi):
    unknown = r"unknown baseline\(s\) \['oracle'\]; choose from naive, persona, icl"
    with pytest.raises(ValueError, match=unknown):
        run_baselines(lm, vsm, saudi, names=("naive", "oracle"))
    with pytest.raises(ValueError, match="unknown readout 'mode'"):
        run_baselines(lm, vsm, saudi, names=("naive",), readout="mode")


@pytest.mark.slow
def test_custom_target_has_no_persona_and_a_placeless_icl(lm, vsm):
    target = jaxalign.custom_target("PDI=80,IVR=20", name="my profile")
    text = icl_text(target)
    assert "my profile" not in text and "a country" in text and "PDI 80" in text
    results = run_baselines(lm, vsm, target, names="naive")  # a single name as a string
    assert tuple(results) == ("naive",)
    assert tuple(run_baselines(lm, vsm, target, names=("naive", "persona", "icl"))) == ("naive", "icl")


def test_baseline_system_names_each_baselines_text():
    from jaxalign.baselines import baseline_system

    china = jaxalign.resolve_target("China")
    assert baseline_system("naive", china) is None
    assert baseline_system("persona", china) == persona_text(china)
    assert baseline_system("icl", china) == icl_text(china)
    with pytest.raises(ValueError, match="unknown baseline 'roleplay'"):
        baseline_system("roleplay", china)
