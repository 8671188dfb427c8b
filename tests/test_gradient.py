"""The Adam baseline: honest budget, same parameterisation as DE, and it lowers the relaxed loss."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxalign
from jaxalign.api import AlignConfig, initial_prompt
from jaxalign.api import gradient_align
from jaxalign.optimizers.adam import gradient_steps
from jaxalign.scoring import make_scorer
from jaxalign.softprompt import subspace

K, N_SUB, POP, GENS, SEED = 2, 8, 8, 5, 3

# the module's fixture runs gradient tuning (about 10-15 s on 2 idle cores): not in the fast tier
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def expected(lm):
    """The plain expected-readout scorer (no target: losses are computed here by hand)."""
    return make_scorer(lm, jaxalign.vsm13(), k=K, mode="full", n_buckets=1)


def l1(dims, target) -> float:
    return float(np.mean(np.abs(np.asarray(dims, np.float64) - np.asarray(target.values, np.float64))))


@pytest.fixture(scope="module")
def planted(lm, expected):
    """A reachable target: the expected-readout dims of a random 2-token prompt."""
    rows = np.asarray(lm.embedding_matrix)[np.random.default_rng(11).integers(0, 1000, K)]
    dims = expected(rows[None]).dims[0]
    return jaxalign.custom_target(dict(zip(jaxalign.DIMENSIONS, np.asarray(dims, float).tolist())))


@pytest.fixture(scope="module")
def config():
    return AlignConfig(k=K, subspace=N_SUB, population=POP, generations=GENS, seed=SEED,
                       readout="argmax", baselines=(), scoring_mode="full")


@pytest.fixture(scope="module")
def result(lm, planted, config):
    return gradient_align(lm, planted, config=config, learning_rate=0.1, scorer_options={"n_buckets": 1})


def test_budget_is_des_forward_passes_over_the_step_cost():
    assert gradient_steps(32, 50, 3.0) == 32 * 51 // 3 == 544
    assert gradient_steps(32, 50, 4.0) == 32 * 51 // 4 == 408
    assert gradient_steps(POP, GENS, 3.07) == 15  # 48 / 3.07 = 15.6


def test_budget_is_counted_honestly(result):
    """The steps follow the Adam step's cost measured from the compiled programs (result.cost)."""
    cost = result.cost["forwards_per_step"]
    assert result.cost["source"] == "xla" and cost > 3.0
    steps = gradient_steps(POP, GENS, cost)
    assert len(result.history["mean_loss"]) == len(result.history["best_loss"]) == steps
    assert result.evaluations == pytest.approx(cost * steps) and result.evaluations <= POP * (GENS + 1)


def test_same_parameterisation_as_de(lm, result):
    """The prompt is p0 + z A with DE's p0 (random vocabulary rows, seed) and basis (seed + 1)."""
    p0 = initial_prompt(lm, K, text=None, seed=SEED)
    std = float(np.asarray(lm.embedding_matrix).std())
    basis = np.asarray(subspace(p0, N_SUB, jax.random.key(SEED + 1), std).basis)  # (n, K*d)
    delta = (result.soft_prompt - p0).reshape(-1)
    z, *_ = np.linalg.lstsq(basis.T, delta, rcond=None)
    np.testing.assert_allclose(z @ basis, delta, atol=1e-4)
    assert np.abs(delta).max() > 1e-3  # it moved


def test_adam_lowers_the_expected_readout_loss(lm, planted, result, expected):
    start = l1(expected(initial_prompt(lm, K, text=None, seed=SEED)[None]).dims[0], planted)
    history = result.history
    assert history["mean_loss"][0] == pytest.approx(start, rel=1e-4)  # step 0 scores p0
    best = l1(expected(result.soft_prompt[None]).dims[0], planted)
    assert best == pytest.approx(min(history["best_loss"]), rel=1e-4)
    assert history["best_loss"] == sorted(history["best_loss"], reverse=True)
    assert best < 0.7 * start, (start, best)


def test_result_is_scored_with_the_configured_readout(lm, planted, result, expected):
    """config.readout is argmax: the result's dims come from the argmax of each item's answers."""
    probs = np.asarray(expected(result.soft_prompt[None]).probs[0])  # (24, 5)
    np.testing.assert_allclose(result.probs, probs, atol=1e-5)
    argmax_means = probs.argmax(axis=-1) + 1.0
    dims = np.asarray(jaxalign.vsm13().indices(argmax_means))
    np.testing.assert_allclose(result.dims, dims, rtol=1e-5)
    assert result.loss == pytest.approx(l1(dims, planted), rel=1e-5)
    assert result.soft_prompt.shape == (K, lm.config.hidden_size)


def test_bad_learning_rate(lm, planted, config):
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        gradient_align(lm, planted, config=config, learning_rate=-1.0)
