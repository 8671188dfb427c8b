"""Gradient and hybrid tuning as alignment methods, the DE presets, and benchmarks/optimizers.py."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest

import jaxalign
from jaxalign import api
from jaxalign.cli import ALIGN_DEFAULTS, ALIGN_PRESETS, build_parser, preset_settings
from jaxalign.optimizers.hybrid import hybrid_steps
from jaxalign.scoring import make_scorer
from jaxalign.survey import DIMENSIONS, custom_target

SMALL = dict(k=2, population=8, subspace=8, baselines=())


@pytest.fixture(scope="module")
def planted(lm):
    """A target some 4-token prompt reaches exactly (as in tests/test_align.py)."""
    embedding = np.asarray(lm.embedding_matrix)
    prompt = embedding[np.random.default_rng(123).integers(0, embedding.shape[0], 4)]
    dims = np.asarray(make_scorer(lm, jaxalign.vsm13(), k=4)(prompt[None]).dims[0])
    return custom_target(dict(zip(DIMENSIONS, dims.tolist())), name="planted")


# ---------------------------------------------------------------------------- presets (no compile)
def test_paper_preset_sets_exactly_the_paper_values():
    config = api.AlignConfig.from_preset("paper")
    assert (config.strategy, config.crossover_rate, config.differential_weight, config.dither,
            config.elitism, config.init_scale) == ("DifferentialEvolution", 0.9, 0.8, None, True, 1.0)
    # the paper's DE is evosax's: DE/best/1/bin, which EvolutionConfig keeps as its default
    assert config.evolution_config(1.0).elitism is True
    # everything else is AlignConfig's default
    rest = {f.name for f in dataclasses.fields(api.AlignConfig)} - set(api.PRESETS["paper"])
    for name in rest:
        assert getattr(config, name) == getattr(api.AlignConfig(), name), name
    assert api.AlignConfig.from_preset("paper", population=12).population == 12
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        api.AlignConfig.from_preset("fast")


def test_cli_preset_and_explicit_options():
    parser = build_parser()
    base = ["align", "--country", "China", "--out", "x"]
    assert set(ALIGN_PRESETS) == set(api.PRESETS)
    paper = preset_settings(parser.parse_args(base + ["--preset", "paper"]))
    assert paper == {**api.PRESETS["paper"], "population": ALIGN_DEFAULTS.population}
    # de-p8 also sets the population; an explicit --population wins
    p8 = preset_settings(parser.parse_args(base + ["--preset", "de-p8"]))
    assert p8 == api.PRESETS["de-p8"] and p8["population"] == 8 and p8["init_scale"] == 2.0
    assert preset_settings(parser.parse_args(base + ["--preset", "de-p8", "--population", "12"]))["population"] == 12
    assert preset_settings(parser.parse_args(base + ["--population", "12"]))["population"] == 12
    default = preset_settings(parser.parse_args(base))
    assert default == {k: getattr(api.AlignConfig(), k) for k in default}
    # an explicit option wins over the preset, the others keep the preset's values
    mixed = preset_settings(parser.parse_args(base + ["--preset", "paper", "--crossover-rate", "0.3",
                                                      "--dither", "0.4,0.9"]))
    assert mixed == {**paper, "crossover_rate": 0.3, "dither": (0.4, 0.9)}
    flipped = preset_settings(parser.parse_args(base + ["--preset", "paper", "--no-elitism"]))
    assert flipped == {**paper, "elitism": False}
    assert preset_settings(parser.parse_args(base + ["--elitism"]))["elitism"] is True
    with pytest.raises(ValueError, match="elitism must be True"):
        api.AlignConfig(elitism="off")
    args = parser.parse_args(base + ["--method", "hybrid", "--learning-rate", "0.05"])
    assert (args.method, args.learning_rate, args.hybrid_fraction) == ("hybrid", 0.05, 0.25)
    for name in ("method", "learning_rate", "hybrid_fraction"):
        assert getattr(ALIGN_DEFAULTS, name) == getattr(api.AlignConfig(), name), name


def test_default_initial_spread_is_recorded():
    """init_scale=None: INIT_SCALE (1.0; a spread of 2 was measured and not kept), also the
    other strategies' std_init; the number used is what results.json records and a resume compares."""
    assert api.AlignConfig().spread == api.INIT_SCALE == 1.0
    assert api.AlignConfig().to_dict()["init_scale"] == 1.0
    assert api.AlignConfig().dither == (0.5, 1.0)
    assert api.AlignConfig(strategy="SNES").evolution_config(1.0).init_scale == api.INIT_SCALE == 1.0
    assert api.AlignConfig(init_scale=2.0).evolution_config(1.0).init_scale == 2.0
    assert api.AlignConfig(subspace=None, init_scale=2.0).evolution_config(0.25).init_scale == 0.5
    assert api.AlignConfig.from_preset("paper").to_dict()["init_scale"] == 1.0
    # a recorded config rebuilds the same run
    assert api.AlignConfig(**{**api.AlignConfig(init_scale=2.0).to_dict(), "baselines": ()}).spread == 2.0
    align_parser = next(a for a in build_parser()._actions
                        if isinstance(a, argparse._SubParsersAction)).choices["align"]
    init_help = next(a.help for a in align_parser._actions if "--init-scale" in a.option_strings)
    assert f"default: {api.INIT_SCALE} for DifferentialEvolution" in init_help
    for bad in ("2", True, -1.0):
        with pytest.raises(ValueError, match="init_scale"):
            api.AlignConfig(init_scale=bad)


@pytest.mark.parametrize("bad, message", [
    (dict(method="adam"), "unknown method"),
    (dict(hybrid_fraction=0.0), "hybrid_fraction"),
    (dict(hybrid_fraction=1.5), "hybrid_fraction"),
    (dict(learning_rate=-1.0), "learning_rate"),
])
def test_bad_method_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        api.AlignConfig(**bad)


def test_hybrid_budget_never_exceeds_de():
    for population, generations, fraction in [(8, 6, 0.25), (16, 40, 0.25), (32, 50, 0.5), (4, 1, 1.0)]:
        for cost in (3.0, 3.07, 4.0):
            evolution, adam = hybrid_steps(population, generations, fraction, cost)
            assert evolution >= 1 and adam >= 1
            spent = population * evolution + cost * adam
            assert spent <= population * (generations + 1), (population, generations, fraction, cost)


# ---------------------------------------------------------------------------- planted target
@pytest.mark.slow
def test_de_p8_preset_recovers_a_planted_target(lm, planted):
    """The "de-p8" preset (8 members, spread 2) on DE's planted-target space (K=4, 16-d
    subspace) with half of DE's budget: 8 x 42 = 336 forward passes. Measured on this CPU
    (2026-12-02, benchmarks/planted_curves.py, results/planted_curves_2026-12-02.txt), the share
    of the starting loss kept after 40 generations under four target names' PRNG streams: 0.096
    (this test's), 0.214, 0.090, 0.113; DE's defaults with twice the budget kept 0.216-0.418. The
    search is chaotic in float rounding, so the demand is the one of DE's default test: below 50%
    (a search that does not work keeps about all of the start)."""
    config = api.AlignConfig.from_preset("de-p8", k=4, subspace=16, generations=41, seed=1,
                                         baselines=("naive",), chunk_size=42)
    assert (config.population, config.spread, config.dither) == (8, 2.0, None)
    result = jaxalign.align(lm, planted, config=config, progress=False)
    history = np.asarray(result.history["best_loss"])
    start = history[0]
    assert np.isfinite(start) and start > 5.0, start
    assert result.loss < 0.5 * start, (start, result.loss)
    assert result.loss < result.baselines["naive"].loss
    assert np.all(np.diff(history) <= 1e-6) and len(history) == 42
    assert result.evaluations == 8 * 42
    assert json.loads(json.dumps(result.config.to_dict()))["population"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradient", "hybrid"])
def test_gradient_and_hybrid_recover_a_planted_target(lm, planted, method):
    """DE's planted-target space (K=4, 16-d subspace, P=16) on a quarter of its budget (10
    generations = 176 forward passes): Adam reaches far below the start (measured on this CPU,
    2026-12-02: gradient 0.11x the start, hybrid 0.04x; with DE's whole budget 0.02x, 0.005x)."""
    result = jaxalign.align(lm, planted, k=4, subspace=16, population=16, generations=10, seed=1,
                            method=method, progress=False, baselines=("naive",))
    history = np.asarray(result.history["best_loss"])
    start = history[0]
    assert np.isfinite(start) and start > 5.0, start
    assert result.loss < 0.3 * start, (start, result.loss)
    assert result.loss < result.baselines["naive"].loss
    assert np.all(np.diff(history) <= 1e-6)
    assert result.method == method
    assert result.evaluations <= 16 * 11
    cost = result.cost["forwards_per_step"]
    evolution = 0 if method == "gradient" else hybrid_steps(16, 10, 0.25, cost)[0]
    assert len(history) == evolution + int((16 * (11 - evolution)) // cost)


# ---------------------------------------------------------------------------- resume + outputs
class _Killed(Exception):
    pass


@pytest.mark.slow
def test_hybrid_cli_outputs_and_resume_equal_uninterrupted(lm, tmp_path, monkeypatch):
    """``jaxalign align --method hybrid`` writes DE's files; a run killed in its Adam phase and
    resumed equals the uninterrupted run (the checkpoint holds both optimizers' states)."""
    from jaxalign.cli import main

    argv = ["align", "--country", "China", "--method", "hybrid", "--k", "2", "--population", "8",
            "--subspace", "8", "--generations", "6", "--chunk-size", "3", "--checkpoint-every", "3",
            "--seed", "3", "--baselines", "naive", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    for name in ("soft_prompt.safetensors", "dims.png", "checkpoints"):
        assert (tmp_path / "whole" / name).exists(), name
    cost = whole["cost"]["forwards_per_step"]
    assert whole["cost"]["source"] == "xla" and cost > 3.0
    evolution, adam = hybrid_steps(8, 6, 0.25, cost)
    assert whole["config"]["method"] == "hybrid" and whole["methods"]["optimized"]["method"] == "hybrid"
    assert len(whole["history"]["best_loss"]) == evolution + adam
    assert whole["evaluations"] == pytest.approx(8 * evolution + cost * adam)

    config = api.AlignConfig(method="hybrid", generations=6, chunk_size=3, checkpoint_every=3, seed=3,
                             **{**SMALL, "baselines": ("naive",)})
    real_update = api.RunProgress.update

    def update_then_die(self, done, best):
        real_update(self, done, best)
        if done >= 6:  # past the switch to Adam (step 2)
            raise _Killed

    monkeypatch.setattr(api.RunProgress, "update", update_then_die)
    with pytest.raises(_Killed):
        jaxalign.align(lm, "China", config=config, out=tmp_path / "cut", progress=True)
    monkeypatch.setattr(api.RunProgress, "update", real_update)
    resumed = jaxalign.align(lm, "China", config=config, out=tmp_path / "cut", resume=True, progress=False)
    assert resumed.resumed_from == 6
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert cut["history"] == whole["history"]
    assert cut["methods"] == whole["methods"]


def test_hybrid_resume_with_more_generations_is_refused_and_phases_are_recorded(lm, tmp_path):
    """The hybrid's switch to Adam is a share of the whole budget, so a resume with more
    generations would move it and mix the phases (DE, Adam, DE, ... was observed). The change is
    refused, in one line, before any weight is read (``check_resume``) and by the checkpoint's
    fingerprint (the API path); the result records the phase of every step."""
    from jaxalign.optimize.resume import check_resume

    config = api.AlignConfig(method="hybrid", generations=4, chunk_size=2, checkpoint_every=2, seed=3,
                             **{**SMALL, "baselines": ()})
    done = jaxalign.align(lm, "China", config=config, out=tmp_path / "run", progress=False)
    evolution = hybrid_steps(SMALL["population"], 4, 0.25, done.cost["forwards_per_step"])[0]
    phases = done.history["phase"]
    assert phases == ["evolution"] * evolution + ["adam"] * (len(phases) - evolution)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["history"]["phase"] == phases
    more = dataclasses.replace(config, generations=20)
    with pytest.raises(ValueError, match=r"generations: 4 -> 20") as error:
        check_resume(tmp_path / "run", more, [jaxalign.hofstede("China")], instrument=jaxalign.vsm13())
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"generations: 4 -> 20"):
        jaxalign.align(lm, "China", config=more, out=tmp_path / "run", resume=True, progress=False)
    # DE may still extend its generations on resume (its steps do not depend on the total)
    de = api.AlignConfig(generations=1, chunk_size=1, seed=3, **{**SMALL, "baselines": ()})
    jaxalign.align(lm, "China", config=de, out=tmp_path / "de", progress=False)
    assert check_resume(tmp_path / "de", dataclasses.replace(de, generations=3), [jaxalign.hofstede("China")],
                        instrument=jaxalign.vsm13()) == 1


@pytest.mark.slow
def test_gradient_resume_equals_uninterrupted(lm, tmp_path):
    """A gradient run stopped at a checkpoint and resumed to the end equals the whole run."""
    config = api.AlignConfig(method="gradient", generations=2, chunk_size=3, checkpoint_every=3,
                             seed=2, **SMALL)
    whole = jaxalign.align(lm, "India", config=config, progress=False)
    # first a shorter run in the folder (generations=1: 16 / 3.1 = 5 steps), then resumed to 7 steps
    short = dataclasses.replace(config, generations=1)
    jaxalign.align(lm, "India", config=short, out=tmp_path / "run", progress=False)
    resumed = jaxalign.align(lm, "India", config=config, out=tmp_path / "run", resume=True, progress=False)
    assert resumed.resumed_from == 4
    np.testing.assert_array_equal(resumed.soft_prompt, whole.soft_prompt)
    assert resumed.history["best_loss"] == whole.history["best_loss"]


def test_equal_settings_reuse_the_compiled_loop_with_the_numbers_of_a_fresh_one(lm):
    """A second run of equal settings but for its target and seed (both reach the loop as
    arguments) reuses the process's compiled loop (no new trace), and its result equals the one of
    a freshly traced and compiled loop. (The loop's key, :class:`~jaxalign.optimize.pipeline.Step`,
    is built alike for every method.)"""
    from jaxalign.optimize import pipeline

    config = api.AlignConfig(generations=2, seed=4, **SMALL)
    jaxalign.align(lm, "China", config=config, progress=False)
    loops = dict(pipeline._LOOPS)
    traced = [fn._cache_size() for fn in loops.values()]
    other = dataclasses.replace(config, seed=5)
    shared = jaxalign.align(lm, "Japan", config=other, progress=False)
    assert dict(pipeline._LOOPS) == loops and [fn._cache_size() for fn in loops.values()] == traced
    pipeline._LOOPS.clear()
    fresh = jaxalign.align(lm, "Japan", config=other, progress=False)
    np.testing.assert_array_equal(shared.soft_prompt, fresh.soft_prompt)
    assert shared.history == fresh.history and shared.loss == fresh.loss


# ---------------------------------------------------------------------------- extra wordings
def _wording_file(path, items, name):
    path.write_text(json.dumps({"name": name, "items": [
        {"id": item.id, "text": item.text, "options": list(item.options)} for item in items]}))
    return str(path)


def test_heldout_wording_is_refused_for_tuning(lm, tmp_path):
    from jaxalign.survey.paraphrase import HELDOUT_WORDING, heldout_vsm13

    with pytest.raises(ValueError, match="held-out wording"):
        jaxalign.align(lm, "China", extra_wordings=[HELDOUT_WORDING], progress=False, **SMALL)
    copy = _wording_file(tmp_path / "copy.json", heldout_vsm13().items, "my-wording")
    with pytest.raises(ValueError, match="repeats the project's held-out wording"):
        jaxalign.align(lm, "China", extra_wordings=[copy], progress=False, **SMALL)
    with pytest.raises(ValueError, match="list of wording files"):
        api.AlignConfig(extra_wordings=copy)


@pytest.mark.slow
def test_extra_wording_loss_is_the_loss_of_the_mean_over_presentations(lm, tmp_path):
    """Tuning on both orders of the built-in and a user wording: the fitness is the L1 of the dims
    averaged over the four presentations (separate scorers here)."""
    import jax
    import jax.numpy as jnp

    from jaxalign.optimize import pipeline
    from jaxalign.survey.vsm13 import load_wording

    base = jaxalign.vsm13()
    items = [dataclasses.replace(item, text="Please answer: " + item.text) for item in base.items]
    path = _wording_file(tmp_path / "mine.json", items, "mine")
    config = api.AlignConfig(both_orders=True, extra_wordings=(path,), **SMALL)
    target = jaxalign.resolve_target("China")
    problem = pipeline.setup(lm, [target], base, config)
    assert problem.presentations == ("normal", "reversed", "wording:user:mine", "wording:user:mine/reversed")
    z = np.random.default_rng(0).normal(size=(1, 3, problem.space.dim)).astype(np.float32)
    fitness = jax.jit(lambda z_, args: pipeline.fitness(problem.step(), z_, args))
    losses, _ = fitness(jnp.asarray(z), pipeline.run_args(problem))
    prompts = np.asarray(problem.space.decode(jnp.asarray(z[0])))  # (3, K, d)
    dims = []
    mine = load_wording(path, base)
    for inst, reverse in ((base, False), (base, True), (mine, False), (mine, True)):
        scorer = make_scorer(lm, inst, k=SMALL["k"], reverse_options=reverse, target=target)
        dims.append(np.asarray(scorer(prompts).dims))
    # the loss of the dims averaged over every presentation (item means averaged before the indices)
    expected = np.asarray(jaxalign.survey.l1_loss(np.mean(dims, axis=0), target.values))
    np.testing.assert_allclose(np.asarray(losses[0]), expected, rtol=1e-4, atol=1e-4)
