"""Tuning a steering vector through the run loop (``align(..., intervention="steering")``).

One short DE run on the tiny model (P = 8, 3 generations, subspace 8, layer 1) is made once; the
tests read its files, re-score its vector by an independent path (the steering scorer, not the
run loop), interrupt and resume it, refuse a changed layer, repeat it through the CLI (the same
settings, so the compiled loop is reused and the numbers must agree) and tune towards a planted
target (the dims of a random vector).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import jaxalign
from jaxalign import api
from jaxalign.cli import main
from jaxalign.interventions.steering import load_steering, residual_std, steering_provenance
from jaxalign.progress import RunInterrupted, RunProgress
from jaxalign.scoring_steering import make_steering_scorer
from jaxalign.survey import custom_target

LAYER = 1
CONFIG = api.AlignConfig(intervention="steering", layer=LAYER, population=8, generations=3, subspace=8,
                         chunk_size=1, seed=3, baselines=("naive",))


@pytest.fixture(scope="module")
def run(lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("steer") / "run"
    return out, jaxalign.align(lm, "China", config=CONFIG, out=out, progress=False)


def test_config_refuses_what_a_kind_does_not_take():
    with pytest.raises(ValueError, match="a soft prompt takes none"):
        api.AlignConfig(layer=2)
    with pytest.raises(ValueError, match="unknown intervention"):
        api.AlignConfig(intervention="lora")
    with pytest.raises(ValueError, match="layer must be"):
        api.AlignConfig(intervention="steering", layer=-1)


@pytest.mark.slow
def test_the_file_holds_the_vector_and_rescoring_gives_the_run_loss(lm, run):
    out, result = run
    assert (out / "steering.safetensors").is_file() and not (out / "soft_prompt.safetensors").exists()
    steering = load_steering(out / "steering.safetensors")
    assert steering.layers == (LAYER,) and steering.has_provenance
    assert steering.metadata["target"] == "China" and float(steering.metadata["residual_std"]) > 0
    assert json.loads(steering.metadata["config"])["intervention"] == "steering"
    record = steering_provenance(steering, lm, instrument=jaxalign.vsm13(), warn=pytest.fail)
    assert record["mismatches"] == []
    np.testing.assert_array_equal(steering.vectors[0], result.steering)
    assert result.steering.shape == (lm.config.hidden_size,) and result.soft_prompt.shape[0] == 0
    # an independent path: the steering scorer on the file's vector, not the run loop
    scorer = make_steering_scorer(lm, jaxalign.vsm13(), layer=steering.layer, target=result.target)
    loss = float(scorer(steering.vectors[0]).loss[0])
    assert loss == pytest.approx(result.loss, rel=1e-4)
    assert result.history["best_loss"][-1] == pytest.approx(result.loss, rel=1e-4)
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["intervention"] == "steering" and saved["config"]["layer"] == LAYER
    assert saved["steering"]["layer"] == LAYER and saved["steering"]["file"] == "steering.safetensors"


@pytest.mark.slow
def test_best_loss_never_rises_and_beats_the_plain_model(lm, run):
    _, result = run
    best = np.asarray(result.history["best_loss"])
    assert len(best) == CONFIG.generations + 1 and np.all(np.diff(best) <= 0)
    plain = result.baselines["naive"].loss  # the plain model: the zero vector, DE's member 0 at step 0
    zero = make_steering_scorer(lm, jaxalign.vsm13(), layer=LAYER, target=result.target)
    assert float(zero(np.zeros(lm.config.hidden_size, np.float32)).loss[0]) == pytest.approx(plain, rel=1e-4)
    assert result.loss <= plain * (1 + 1e-4)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_uninterrupted_one(lm, run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = RunProgress.update

    def ctrl_c_after_one(self, done, best):
        real(self, done, best)
        if done >= 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunProgress, "update", ctrl_c_after_one)
    with pytest.raises(RunInterrupted) as stop:
        jaxalign.align(lm, "China", config=CONFIG, out=out, progress=False)
    assert stop.value.checkpoint == 1
    monkeypatch.setattr(RunProgress, "update", real)
    resumed = jaxalign.align(lm, "China", config=CONFIG, out=out, resume=True, progress=False)
    whole = run[1]
    assert resumed.resumed_from == 1
    np.testing.assert_array_equal(resumed.steering, whole.steering)
    assert resumed.history["best_loss"] == whole.history["best_loss"]
    assert resumed.history["mean_loss"] == whole.history["mean_loss"]
    assert resumed.loss == whole.loss


@pytest.mark.slow
def test_a_changed_layer_or_intervention_is_refused_on_resume(lm, run):
    out = run[0]
    with pytest.raises(ValueError, match=r"layer: 1 -> 2"):
        jaxalign.align(lm, "China", config=dataclasses.replace(CONFIG, layer=2), out=out, resume=True,
                       progress=False)
    soft = dataclasses.replace(CONFIG, intervention="soft_prompt", layer=None)
    with pytest.raises(ValueError, match=r"intervention: 'steering' -> 'soft_prompt'"):
        jaxalign.align(lm, "China", config=soft, out=out, resume=True, progress=False)


@pytest.mark.slow
def test_the_cli_writes_the_files_and_score_reads_them(run, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["align", "--country", "China", "--out", str(out), "--intervention", "steering", "--layer", str(LAYER),
            "--population", "8", "--generations", "3", "--subspace", "8", "--chunk-size", "1", "--seed", "3",
            "--baselines", "naive", "--no-progress"]
    assert main(argv) == 0
    assert {"steering.safetensors", "results.json", "dims.png"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "results.json").read_text())
    assert saved["methods"]["optimized"]["loss"] == pytest.approx(run[1].loss, rel=1e-6)  # the same run
    capsys.readouterr()
    assert main(["score", "--model", "tiny-random", "--steering", str(out / "steering.safetensors"), "--country", "China", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["loss"] == pytest.approx(saved["methods"]["optimized"]["loss"], rel=1e-4)
    assert scored["steering"]["layers"] == [LAYER]
    # a layer outside the model and -k are refused before any model work
    assert main(argv[:-1] + ["--layer", "4"]) == 2 and not (tmp_path / "never").exists()
    assert main(["align", "--country", "China", "--out", str(tmp_path / "never"), "--intervention", "steering",
                 "-k", "3"]) == 2
    assert "takes no -k" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_a_planted_target_is_approached(lm):
    """The dims of a random vector at the layer are the target: Adam gets clearly closer to it than
    the plain model (on the tiny model at this seed the loss falls to about a third)."""
    instrument = jaxalign.vsm13()
    scorer = make_steering_scorer(lm, instrument, layer=LAYER)
    std = residual_std(lm, scorer.batch, LAYER)
    planted = np.random.default_rng(0).standard_normal(lm.config.hidden_size).astype(np.float32) * std
    dims = np.asarray(scorer(planted).dims[0])
    target = custom_target(dict(zip(instrument.dimensions, map(float, dims))), name="planted")
    result = jaxalign.align(lm, target, config=dataclasses.replace(CONFIG, method="gradient"), progress=False)
    plain = result.baselines["naive"].loss
    assert plain > 10  # the planted vector moves the answers: a target worth approaching
    assert result.loss < 0.5 * plain
