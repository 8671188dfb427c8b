"""Issue 25, points 2-4: the hybrid's Adam phase stops on NaN, budgets counted from the compiled
programs' FLOPs (never overspent), and ``gradient_align`` keeps a configured learning rate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import jaxalign
from jaxalign import api
from jaxalign.optimize import NonFiniteFitnessError, pipeline
from jaxalign.optimize.budget import FALLBACK_FORWARDS_PER_STEP, RunCost, budget, evolution_steps, spent
from jaxalign.optimizers.adam import gradient_steps
from jaxalign.optimizers.hybrid import hybrid_steps

SMALL = dict(k=2, population=4, subspace=4, baselines=())


# ---------------------------------------------------------------------------- learning rate (no compile)
def test_gradient_align_keeps_the_configured_learning_rate(monkeypatch):
    """``gradient_align(config=AlignConfig(learning_rate=0.02))`` trains with 0.02 (it used to
    overwrite it with its keyword default 0.1); an explicit keyword still wins."""
    from jaxalign.api import gradient_align
    DEFAULT_LEARNING_RATE = api.AlignConfig().learning_rate

    seen = []
    monkeypatch.setattr(api, "run_pipeline", lambda lm, targets, *, config, **_: seen.append(config) or [None])
    gradient_align(object(), "China", config=api.AlignConfig(learning_rate=0.02))
    gradient_align(object(), "China", config=api.AlignConfig(learning_rate=0.02), learning_rate=0.5)
    gradient_align(object(), "China")
    gradient_align(object(), "China", learning_rate=0.3)  # as an override of the default config
    assert [(c.method, c.learning_rate) for c in seen] == [
        ("gradient", 0.02), ("gradient", 0.5), ("gradient", DEFAULT_LEARNING_RATE), ("gradient", 0.3)]


# ---------------------------------------------------------------------------- budgets (no compile)
COSTS = [FALLBACK_FORWARDS_PER_STEP, 3.0, 4.26, 7.5, 16.0, 40.0]
SETTINGS = [(4, 1), (8, 1), (8, 6), (16, 40), (32, 50), (5, 3), (4, 2)]


@pytest.mark.parametrize("method, strategy", [("de", "DifferentialEvolution"), ("de", "SNES"),
                                              ("de", "CMA_ES"), ("de", "Sep_CMA_ES")])
def test_evolution_budget_is_exactly_population_times_steps(method, strategy):
    """DE, SNES and the CMA strategies score P members in each of generations + 1 steps (step 0,
    the initial population, included: it is scored and its best member kept)."""
    for population, generations in SETTINGS:
        config = api.AlignConfig(method=method, strategy=strategy, population=population,
                                 generations=generations)
        assert evolution_steps(config) == generations + 1
        assert spent(config, 4.0) == budget(config) == population * (generations + 1)


def test_gradient_budget_never_overspends():
    for population, generations in SETTINGS:
        for cost in COSTS:
            total = population * (generations + 1)
            if cost > total:  # not one step fits
                with pytest.raises(ValueError, match="gradient.*budget.*no Adam step"):
                    gradient_steps(population, generations, cost)
                continue
            steps = gradient_steps(population, generations, cost)
            assert steps * cost <= total, (population, generations, cost)
            assert (steps + 1) * cost > total  # and wastes less than one step
    config = api.AlignConfig(method="gradient", population=8, generations=6)
    assert spent(config, 4.5) == gradient_steps(8, 6, 4.5) * 4.5 == 12 * 4.5


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_hybrid_budget_never_overspends(fraction):
    """Fraction 1 and one generation used to give the evolution phase the whole budget and Adam
    one step more: now the evolution phase leaves room for at least one Adam step."""
    for population, generations in SETTINGS:
        for cost in COSTS:
            total = population * (generations + 1)
            if cost > total - population:  # not even one evolution step and one Adam step fit
                with pytest.raises(ValueError, match="hybrid.*budget"):
                    hybrid_steps(population, generations, fraction, cost)
                continue
            evolution, adam = hybrid_steps(population, generations, fraction, cost)
            assert evolution >= 1 and adam >= 1
            assert population * evolution + cost * adam <= total, (population, generations, fraction, cost)
            assert population * evolution + cost * (adam + 1) > total  # Adam gets what is left
            config = api.AlignConfig(method="hybrid", population=population, generations=generations,
                                     hybrid_fraction=fraction)
            assert spent(config, cost) == population * evolution + cost * adam <= budget(config)


def test_run_cost_falls_back_when_xla_gives_no_flops():
    cost = RunCost.from_flops(adam_step_flops=None, forward_flops=None, members=4)
    assert cost.forwards_per_step == FALLBACK_FORWARDS_PER_STEP and cost.source == "fallback"
    assert RunCost.from_flops(adam_step_flops=8.0e9, forward_flops=8.0e9, members=4).forwards_per_step == 4.0
    assert RunCost.from_flops(adam_step_flops=-1.0, forward_flops=2.0, members=1).source == "fallback"


# ---------------------------------------------------------------------------- the compiled cost
@pytest.mark.slow
def test_forwards_per_adam_step_is_read_from_the_compiled_programs(lm):
    """The Adam step's cost in forward passes comes from XLA's cost analysis of the compiled step
    and of one scoring pass of P members: the rematerialised layer scan (jax.checkpoint) makes it
    more than 3 (a forward, then a backward that recomputes the forward); a hybrid run records it."""
    config = api.AlignConfig(method="gradient", **SMALL)
    problem = pipeline.setup(lm, [jaxalign.resolve_target("China")], jaxalign.vsm13(), config)
    cost = pipeline.measure_cost(problem)
    assert cost.source == "xla"
    assert cost.forward_flops > 0 and cost.adam_step_flops > 0
    assert cost.forwards_per_step == pytest.approx(cost.adam_step_flops / (cost.forward_flops / cost.members))
    assert 3.0 < cost.forwards_per_step < 8.0, cost
    assert problem.total_steps == gradient_steps(4, config.generations, cost.forwards_per_step)
    # the same measurement reaches the result (results.json records it)
    result = jaxalign.align(lm, "China", config=dataclasses.replace(config, generations=1), progress=False)
    assert result.cost["forwards_per_step"] == pytest.approx(cost.forwards_per_step, rel=1e-6)
    assert result.evaluations == pytest.approx(len(result.history["best_loss"]) * cost.forwards_per_step)
    assert result.evaluations <= 4 * 2
    assert result.to_json()["cost"]["source"] == "xla"


# ---------------------------------------------------------------------------- NaN in the Adam phase
@pytest.mark.slow
def test_hybrid_stops_when_its_adam_phase_turns_nan(lm, monkeypatch):
    """An Adam update that turns NaN (here: Adam's updates scaled by NaN) makes every later Adam
    loss NaN. With one member per target in that phase, the run must stop with
    NonFiniteFitnessError after NONFINITE_PATIENCE steps (it used to count failures against the P
    members of the evolution phase and ran on, stalled by optax.zero_nans). (A huge learning rate
    does not do it: the RMS norms turn an overflowing prompt into zeros, not NaN.)"""
    import optax

    config = api.AlignConfig(method="hybrid", generations=8, hybrid_fraction=0.25, chunk_size=20, **SMALL)
    sane = jaxalign.align(lm, "China", config=config, progress=False)
    assert np.all(np.isfinite(sane.history["mean_loss"]))
    evolution, adam_steps = hybrid_steps(4, 8, 0.25, sane.cost["forwards_per_step"])
    assert evolution == 2 and adam_steps > 4  # the Adam phase outlasts the patience (3)

    from jaxalign.optimizers import adam

    real = adam.transform
    monkeypatch.setattr(adam, "transform", lambda step: optax.chain(real(step), optax.scale(float("nan"))))
    monkeypatch.setattr(pipeline, "_LOOPS", {})  # trace the loop again with the broken optimizer
    # step 2, the first Adam step, scores the evolution's best prompt (finite); its update is NaN,
    # so steps 3.. fail: one chunk of the whole run, so all of them are counted
    last = evolution + adam_steps - 1
    with pytest.raises(NonFiniteFitnessError,
                       match=rf"NaN or inf in {last - 2} step\(s\) in a row \(generations 2\.\.{last}\)"):
        jaxalign.align(lm, "China", config=config, progress=False)
