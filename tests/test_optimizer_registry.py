"""The optimizer extension point: a new optimizer is one object passed to
``jaxalign.optimizers.register``, and the library's run loop, budget, CLI and resume reach it.

The test double is a stateful random search (a new module's worth of code, nothing borrowed from
the built-in optimizers): each step proposes P members around the best-so-far prompt, member 0 the
best itself, and counts its proposals in its state, so a resume that lost the state would differ.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxalign
from jaxalign import api, optimizers
from jaxalign.cli import build_parser, main
from jaxalign.optimizers.base import Optimizer, Update, step_keys
from jaxalign.scoring import make_scorer

SMALL = dict(k=2, population=6, subspace=8, baselines=())
NAME = "toy-random-search"


def _init(step, args):
    c = args.z0.shape[0]
    return jnp.zeros((c,), jnp.int32)  # proposals made so far, per target


def _update(step, state, args, fitness):
    p, n = step.config.population, step.space_dim
    key = step_keys(args, state.step, 1)[:, 0]  # (C, 2)
    # the spread shrinks with the proposals made so far: a resume must restore the state to agree
    spread = 0.5 * step.embedding_std / jnp.sqrt(1.0 + state.opt.astype(jnp.float32))  # (C,)
    noise = jax.vmap(lambda k: jax.random.normal(k, (p, n)))(key)  # (C, P, n)
    noise = noise.at[:, 0].set(0.0)
    population = state.best_z[:, None] + spread[:, None, None] * noise  # (C, P, n)
    losses, aux = fitness(population)
    return Update(state.opt + p - 1, population, losses, aux)


def _phases(config, forwards_per_step):
    return config.generations + 1, 0  # DE's budget: P x (G + 1) forward passes


TOY = Optimizer(name=NAME, init=_init, update=_update, phases=_phases, summary="test double")


@pytest.fixture
def registered():
    optimizers.register(TOY)
    try:
        yield TOY
    finally:
        optimizers.unregister(NAME)


def test_unknown_until_registered_and_the_cli_follows_the_registry(registered, capsys):
    optimizers.unregister(NAME)
    with pytest.raises(ValueError, match=rf"unknown method '{NAME}'; choose one of de, gradient, hybrid"):
        api.AlignConfig(method=NAME)
    # the command refuses it before any model work (parsing imports no registry: evosax would
    # start the XLA backend before a multi-process run could initialise jax.distributed)
    assert main(["align", "--model", "tiny-random", "--out", "x", "--country", "China", "--method", NAME]) == 2
    assert f"unknown method '{NAME}'" in capsys.readouterr().err
    optimizers.register(TOY)
    assert optimizers.names()[-1] == NAME and optimizers.get(NAME) is TOY
    assert build_parser().parse_args(["align", "--out", "x", "--country", "China", "--method", NAME]).method == NAME
    with pytest.raises(ValueError, match="already registered"):
        optimizers.register(TOY)
    with pytest.raises(TypeError, match="takes an Optimizer"):
        optimizers.register(NAME)


def test_every_built_in_optimizer_is_described_in_the_cli_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["align", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("de", "gradient", "hybrid"):
        assert name in optimizers.names()
    assert set(optimizers.names()) == {"de", "gradient", "hybrid"}, "a new built-in needs its --method help"
    for name in optimizers.names():
        assert f"{name}:" in text, name


@pytest.mark.slow
def test_a_registered_optimizer_runs_through_align_and_resumes(lm, registered, tmp_path):
    config = api.AlignConfig(method=NAME, generations=4, chunk_size=2, checkpoint_every=2, seed=3, **SMALL)
    whole = jaxalign.align(lm, "China", config=config, progress=False)
    # the budget is the optimizer's phases: P x (G + 1) forward passes in G + 1 steps
    assert whole.evaluations == 6 * 5
    assert len(whole.history["best_loss"]) == 5
    best = np.asarray(whole.history["best_loss"])
    assert np.all(np.diff(best) <= 0) and best[-1] < best[0]  # the search found something
    # the returned prompt scores as reported, by a scorer built independently of the run
    dims = make_scorer(lm, jaxalign.vsm13(), k=2)(np.asarray(whole.soft_prompt)[None]).dims[0]
    l1 = np.mean(np.abs(np.asarray(dims) - jaxalign.resolve_target("China").values))  # C = 0
    np.testing.assert_allclose(l1, whole.loss, rtol=1e-4, atol=1e-3)

    # stopped after step 2 (a shorter run in the folder), then resumed to the end: the same run
    jaxalign.align(lm, "China", config=dataclasses.replace(config, generations=2),
                   out=tmp_path / "run", progress=False)
    resumed = jaxalign.align(lm, "China", config=config, out=tmp_path / "run", resume=True, progress=False)
    assert resumed.resumed_from == 2  # the short run's last generation
    np.testing.assert_array_equal(resumed.soft_prompt, whole.soft_prompt)
    assert resumed.history["best_loss"] == whole.history["best_loss"]


# ---------------------------------------------------------------------------- a toy objective
@pytest.mark.slow
def test_a_registered_objective_kind_reaches_align_and_the_cli(lm, tmp_path, capsys):
    """A new loss kind is one ``ObjectiveKind`` registered by name: here the midrange of the
    countries (``(max_c t + min_c t) / 2 - plain``) as the shared constant, checked by hand
    against the plain model's dims scored apart from the run."""
    from jaxalign.survey import objectives

    def midrange(targets, plain, reference):
        return (np.nanmax(targets, axis=0) + np.nanmin(targets, axis=0)) / 2 - plain

    kind = objectives.ObjectiveKind("toy-midrange", midrange, "toy: the countries' midrange", min_targets=2,
                                    reference_label="the midrange of the run's countries")
    with pytest.raises(ValueError, match="unknown loss 'toy-midrange'"):
        api.AlignConfig(loss="toy-midrange")
    objectives.register_objective(kind)
    try:
        assert build_parser().parse_args(["align", "--out", "x", "--country", "China",
                                          "--loss", "toy-midrange"]).loss == "toy-midrange"
        with pytest.raises(ValueError, match="at least two targets"):
            objectives.make_objective("toy-midrange", n_targets=1)
        config = api.AlignConfig(loss="toy-midrange", generations=1, seed=0, **SMALL)
        results = jaxalign.align(lm, ["China", "Japan"], config=config, progress=False)
        plain = np.asarray(make_scorer(lm, jaxalign.vsm13(), k=0)(np.zeros((1, 0, lm.config.hidden_size))).dims[0])
        targets = np.stack([jaxalign.resolve_target(c).values for c in ("China", "Japan")])
        want = (targets.max(0) + targets.min(0)) / 2 - plain
        for r, t in zip(results, targets):
            record = r.to_json()["objective"]
            assert record["loss"] == "toy-midrange" and record["reference"] == "the midrange of the run's countries"
            np.testing.assert_allclose(record["constants"], want, rtol=1e-5, atol=1e-3)
            # the reported loss is the L1 after those constants
            assert r.loss == pytest.approx(float(np.mean(np.abs(r.dims + want - t))), rel=1e-4, abs=1e-3)
    finally:
        objectives.unregister_objective("toy-midrange")
