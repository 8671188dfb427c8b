"""The alignment run end to end on the tiny model: planted target, resume, CLI, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import jaxalign
from jaxalign import api
from jaxalign.cli import ALIGN_DEFAULTS, main
from jaxalign.scoring import make_scorer
from jaxalign.softprompt import load_soft_prompt
from jaxalign.survey import DIMENSIONS, custom_target

# small but real: every run scores all 24 items
SMALL = dict(k=2, population=8, subspace=8, baselines=())


@pytest.fixture(scope="module")
def instrument():
    return jaxalign.vsm13()


# ---------------------------------------------------------------------------- planted target
@pytest.fixture(scope="module")
def planted(lm, instrument):
    """A target that some soft prompt reaches exactly: the dims of a random 4-token prompt."""
    embedding = np.asarray(lm.embedding_matrix)
    rng = np.random.default_rng(123)
    prompt = embedding[rng.integers(0, embedding.shape[0], 4)]
    dims = np.asarray(make_scorer(lm, instrument, k=4)(prompt[None]).dims[0])
    return custom_target(dict(zip(DIMENSIONS, dims.tolist())), name="planted")


@pytest.mark.slow
def test_de_recovers_a_planted_target(lm, planted):
    """DE from another start cuts the loss to a fraction of the starting loss.

    Measured on the tiny model (P=16, 40 generations, 16-d subspace, K=4, seed 1), with the
    defaults (DE/best/1/bin, CR 0.9, F dithered in 0.5-1.0, spread 1): on 2026-12-01 the best
    initial L1 of 29.58 fell to 2.98 (0.10 of it); under the PRNG streams of two other target
    names 0.19 and 0.10. A spread of 2 (fixed F 0.8) kept 0.33, 0.33 and 0.19 here and was not
    kept as default. The search is chaotic in float rounding: on 2026-12-02 (after the attention
    change) it kept 0.22 with XLA's default CPU compile and 0.32 with XLA's cheaper one
    (--xla_backend_optimization_level=0), whose dims differ in the fifth digit. The test demands below 50%: a
    search that does not work keeps about all of the start.
    """
    result = jaxalign.align(
        lm, planted, k=4, subspace=16, population=16, generations=40, seed=1,
        progress=False, baselines=("naive",),
    )
    start = result.history["best_loss"][0]
    assert np.isfinite(start) and start > 5.0, start
    assert result.loss < 0.5 * start, (start, result.loss)
    assert result.loss < result.baselines["naive"].loss
    # best-so-far never rises, and the result is the scored best prompt
    history = np.asarray(result.history["best_loss"])
    assert np.all(np.diff(history) <= 1e-6)
    assert result.loss == pytest.approx(history[-1], rel=1e-4, abs=1e-3)
    assert len(history) == 41
    assert result.soft_prompt.shape == (4, lm.config.hidden_size)


# ---------------------------------------------------------------------------- resume
class _Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted(lm, tmp_path, monkeypatch):
    """The default DE (F dithered: a fresh draw each generation, so the resumed PRNG stream is
    tested). The "de-p8" preset runs the same loop, checkpoint and resume code with other
    constants; its values are checked in tests/test_optimizers.py."""
    config = api.AlignConfig.from_preset("default", generations=6, chunk_size=2, checkpoint_every=2, seed=3,
                                         **SMALL)
    assert config.population == 8 and config.spread == 1.0 and config.dither is not None
    whole = jaxalign.align(lm, "China", config=config, out=tmp_path / "whole", progress=False)

    real_update = api.RunProgress.update

    def update_then_die(self, done, best):
        real_update(self, done, best)
        if done >= 4:
            raise _Killed  # as if the process were killed after the checkpoint at generation 4

    monkeypatch.setattr(api.RunProgress, "update", update_then_die)
    with pytest.raises(_Killed):
        jaxalign.align(lm, "China", config=config, out=tmp_path / "cut", progress=True)
    assert not (tmp_path / "cut" / "results.json").exists()
    monkeypatch.setattr(api.RunProgress, "update", real_update)

    # without --resume the folder is refused (it holds a run)
    with pytest.raises(ValueError, match="already holds a run"):
        jaxalign.align(lm, "China", config=config, out=tmp_path / "cut", progress=False)
    # a different configuration is refused
    with pytest.raises(ValueError, match="differ|mismatch|k"):
        jaxalign.align(lm, "China", config=dataclasses.replace(config, k=3),
                       out=tmp_path / "cut", resume=True, progress=False)

    resumed = jaxalign.align(lm, "China", config=config, out=tmp_path / "cut", resume=True,
                             progress=False)
    assert resumed.resumed_from == 4
    np.testing.assert_array_equal(resumed.soft_prompt, whole.soft_prompt)
    assert resumed.loss == whole.loss
    assert resumed.history["best_loss"] == whole.history["best_loss"]
    saved_whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    saved_cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert saved_cut["methods"] == saved_whole["methods"]


# ---------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "china"
    code = main([
        "align", "--model", "tiny-random", "--country", "China", "--generations", "3",
        "--population", "8", "--k", "2", "--subspace", "8", "--out", str(out), "--no-progress",
    ])
    assert code == 0
    return out


@pytest.mark.slow
def test_align_cli_writes_results(cli_run):
    results = json.loads((cli_run / "results.json").read_text())
    assert results["model"] == "tiny-random"
    assert results["wording"] == "jaxalign-v1"
    assert results["target"]["name"] == "China"
    assert results["target"]["dims"]["PDI"] == 80
    assert set(results["methods"]) == {"naive", "persona", "icl", "optimized"}
    for method in results["methods"].values():
        assert set(method["dims"]) == set(DIMENSIONS)
        assert method["loss"] > 0
    assert len(results["history"]["best_loss"]) == 4
    assert results["config"]["population"] == 8 and results["seed"] == 0
    assert results["wall_s"] > 0 and results["compile_s"] > 0
    assert 0 < results["s_per_generation"] < results["wall_s"]
    assert (cli_run / "dims.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prompt, meta = load_soft_prompt(cli_run / "soft_prompt.safetensors")
    assert prompt.shape == (2, 64)
    assert meta["model"] == "tiny-random" and meta["wording"] == "jaxalign-v1"
    assert meta["readout"] == "expected" and meta["K"] == "2"


@pytest.mark.slow
def test_score_cli_reproduces_the_aligned_dims(cli_run, capsys):
    capsys.readouterr()
    code = main(["score", "--soft-prompt", str(cli_run / "soft_prompt.safetensors"),
                 "--country", "China", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    results = json.loads((cli_run / "results.json").read_text())
    for name in DIMENSIONS:
        assert printed["dims"][name] == pytest.approx(results["methods"]["optimized"]["dims"][name], abs=1e-3)
    assert printed["loss"] == pytest.approx(results["methods"]["optimized"]["loss"], abs=1e-4)
    answers = np.asarray(printed["answers"])
    assert answers.shape == (24, 5)
    np.testing.assert_allclose(answers.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_score_cli_plain_model_table(capsys):
    assert main(["score", "--persona", "You are a person from Japan."]) == 0
    out = capsys.readouterr().out
    assert "PDI" in out and "item" in out and len(out.splitlines()) > 24


def test_cli_defaults_match_align_config():
    config = api.AlignConfig()
    for name, value in vars(ALIGN_DEFAULTS).items():
        assert getattr(config, name) == value, name


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--country", "Atlantis"], "Atlantis"),
        (["--target", "PDI=abc"], "PDI"),
        (["--country", "China", "--strategy", "NoSuchES"], "NoSuchES"),
        (["--country", "China", "--k", "0"], "k"),
        (["--country", "China", "--k", "100000"], "k"),
        (["--country", "China", "--population", "2"], "population"),
        (["--country", "China", "--readout", "median"], "readout"),
        (["--country", "China", "--model", "./missing-folder"], "missing-folder"),
    ],
)
def test_align_cli_bad_input(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    code = main(["align", "--out", str(out), "--generations", "2", "--no-progress", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    # nothing a later --resume could trust
    assert not (out / "checkpoints").exists() and not (out / "results.json").exists()


def test_align_cli_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["align", "--country", "China", "--out", str(blocker / "run"), "--no-progress"])
    assert code == 2
    assert "cannot write" in capsys.readouterr().err


def test_score_cli_soft_prompt_of_another_width(tmp_path, capsys):
    jaxalign.save_soft_prompt(tmp_path / "wide.safetensors", np.zeros((3, 128), np.float32), {})
    code = main(["score", "--soft-prompt", str(tmp_path / "wide.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    assert "128" in err and "64" in err


def test_score_cli_missing_soft_prompt(tmp_path, capsys):
    assert main(["score", "--soft-prompt", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_align_api_rejects_a_target_without_dims(lm):
    with pytest.raises(ValueError):
        jaxalign.align(lm, {}, progress=False)
    with pytest.raises(ValueError, match="resume"):
        jaxalign.align(lm, "China", resume=True, progress=False, **SMALL)
