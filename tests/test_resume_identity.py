"""A resume is refused when what the run is made of changed, and names what changed.

One short run is checkpointed; each test then asks to resume it after one kind of change (weights
behind the same model name, a wording file edited under the same name, other constants, another
target, an edited search-space file). Refusals happen before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxalign
from jaxalign import api
from jaxalign.survey import custom_target, resolve_target, save_wording

CONFIG = api.AlignConfig(k=2, population=4, subspace=4, generations=2, chunk_size=1, seed=5, baselines=())


@pytest.fixture(scope="module")
def wording(tmp_path_factory):
    return save_wording(jaxalign.vsm13(), tmp_path_factory.mktemp("wording") / "mine.json", name="mine")


@pytest.fixture(scope="module")
def run(lm, wording, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = jaxalign.align(lm, "Japan", instrument=jaxalign.vsm13(wording=wording), config=CONFIG,
                            out=out, progress=False)
    return out, result


def _copy(run, tmp_path):
    shutil.copytree(run[0], tmp_path / "run")
    return tmp_path / "run"


def _resume(lm, out, instrument, target="Japan", **changes):
    config = dataclasses.replace(CONFIG, **{"generations": 3, **changes})
    return jaxalign.align(lm, target, instrument=instrument, config=config, out=out, resume=True,
                          progress=False)


@pytest.mark.slow
def test_results_record_the_fingerprints(run, lm, wording):
    out, result = run
    saved = json.loads((out / "results.json").read_text())["fingerprints"]
    assert set(saved) == {"model", "instrument", "target", "prompts", "space"}
    assert saved == json.loads(json.dumps(result.fingerprints))
    assert saved["model"]["weights"]["sampled"] == "memory"
    space = load_file(str(out / api.SPACE_FILE))
    assert space["p0"].shape == (2, 64) and space["basis"].shape == (4, 128)
    # the prompt file carries the same provenance, and checks clean against the run's own model
    prompt, meta = jaxalign.load_soft_prompt(out / "soft_prompt.safetensors")
    assert meta["wording_fingerprint"] == saved["instrument"]["items"] and meta["hidden_size"] == "64"
    assert meta["K"] == "2" and meta["slot"] == "user_start" and meta["chat_date"] == ""
    assert meta["chat_format"] == saved["model"]["chat_template"] and meta["jaxalign_version"]
    record = jaxalign.prompt_provenance(prompt, meta, lm=lm, instrument=jaxalign.vsm13(wording=wording),
                                        slot="user_start", warn=pytest.fail)
    assert record["mismatches"] == [] and record["checked"] == ["model", "wording", "slot"]


@pytest.mark.slow
def test_unchanged_resume_continues(lm, wording, run, tmp_path):
    out = _copy(run, tmp_path)
    resumed = _resume(lm, out, jaxalign.vsm13(wording=wording))
    assert resumed.resumed_from == 2 and len(resumed.history["best_loss"]) == 4


@pytest.mark.slow
def test_other_weights_behind_the_same_name(wording, run, tmp_path):
    other = jaxalign.load_model("tiny-random", dtype="float32", seed=1)
    assert other.name == "tiny-random"
    with pytest.raises(ValueError, match=r"content\.model\.weights") as error:
        _resume(other, _copy(run, tmp_path), jaxalign.vsm13(wording=wording))
    assert "(model:" not in str(error.value) and "; model:" not in str(error.value)  # same name


@pytest.mark.slow
def test_wording_edited_under_the_same_name(lm, wording, run, tmp_path):
    edited = tmp_path / "mine.json"
    data = json.loads(wording.read_text())
    data["items"][0]["text"] += " Think of your ideal job."
    edited.write_text(json.dumps(data))
    instrument = jaxalign.vsm13(wording=edited)
    assert instrument.wording == "user:mine"
    with pytest.raises(ValueError, match=r"content\.instrument\.items") as error:
        _resume(lm, _copy(run, tmp_path), instrument)
    message = str(error.value)
    assert "content.prompts.normal.token_ids" in message  # the rendered tokens differ too
    assert "; wording:" not in message and "(wording:" not in message  # the name alone is the same


@pytest.mark.slow
def test_other_constants(lm, wording, run, tmp_path):
    base = jaxalign.vsm13(wording=wording)
    instrument = dataclasses.replace(base, constants=base.constants + 1.0)
    with pytest.raises(ValueError, match=r"content\.instrument\.constants"):
        _resume(lm, _copy(run, tmp_path), instrument)


@pytest.mark.slow
def test_other_target(lm, wording, run, tmp_path):
    japan = resolve_target("Japan")
    values = dict(zip(japan.dimensions, japan.values.tolist()))
    values["PDI"] += 1
    # refused by the settings check, before the content (content.targets) is fingerprinted
    with pytest.raises(ValueError, match=r"targets\.Japan\.PDI: 54\.0 -> 55\.0\. Resume"):
        _resume(lm, _copy(run, tmp_path), jaxalign.vsm13(wording=wording),
                target=custom_target(values, name="Japan"))


@pytest.mark.slow
def test_edited_search_space(lm, wording, run, tmp_path):
    out = _copy(run, tmp_path)
    tensors = load_file(str(out / api.SPACE_FILE))
    tensors["basis"][0, 0] += 1e-3
    save_file(tensors, str(out / api.SPACE_FILE))
    with pytest.raises(ValueError, match=r"content\.space\.basis"):
        _resume(lm, out, jaxalign.vsm13(wording=wording))


@pytest.mark.slow
def test_resume_reads_the_saved_space_not_the_seed(lm, wording, run, tmp_path, monkeypatch):
    """Were the basis redrawn differently (another JAX release), the saved one is still used."""
    out = _copy(run, tmp_path)
    real = api.search_space

    def redrawn(lm_, config):
        space, std = real(lm_, config)
        return dataclasses.replace(space, basis=space.basis * 1.5), std

    from jaxalign import search_space  # what the soft-prompt kind (jaxalign.tuning) draws with

    monkeypatch.setattr(search_space, "search_space", redrawn)
    whole = _resume(lm, out, jaxalign.vsm13(wording=wording), generations=2)  # nothing left to run
    assert whole.resumed_from == 2
    np.testing.assert_array_equal(whole.soft_prompt, run[1].soft_prompt)
    # without the saved file, the redrawn space is refused by its digest
    (out / api.SPACE_FILE).unlink()
    with pytest.raises(ValueError, match=r"content\.space\.basis"):
        _resume(lm, out, jaxalign.vsm13(wording=wording))


@pytest.mark.slow
def test_disk_full_keeps_the_last_good_checkpoint(lm, wording, run, tmp_path, monkeypatch):
    """The checkpoint of generation 3 cannot be written (record fails after the arrays): the error
    names generation 2 as the last good one, which a later resume reads."""
    import errno

    import orbax.checkpoint as ocp

    out = _copy(run, tmp_path)
    real = ocp.JsonCheckpointHandler._save_fn

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
    with pytest.raises(OSError, match="generation 3.*No space left.*last good checkpoint is generation 2"):
        _resume(lm, out, jaxalign.vsm13(wording=wording))
    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", real)
    resumed = _resume(lm, out, jaxalign.vsm13(wording=wording))
    assert resumed.resumed_from == 2 and len(resumed.history["best_loss"]) == 4


@pytest.mark.slow
def test_nan_weights_stop_the_run_with_a_clear_error(tmp_path):
    from jaxalign.model import LM
    from jaxalign.optimize import NonFiniteFitnessError

    lm = jaxalign.load_model("tiny-random", dtype="float32")
    lm.model.norm.value = np.full(lm.model.norm.value.shape, np.nan, np.float32)
    broken = LM(name=lm.name, config=lm.config, model=lm.model, tokenizer=lm.tokenizer)
    with pytest.raises(NonFiniteFitnessError, match="NaN or inf.*dtype.*broken"):
        jaxalign.align(broken, "Japan", config=CONFIG, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "results.json").exists()


# ---------------------------------------------------------------------------- changed settings, early
def _cli_resume(out, wording, *changes):
    """``jaxalign align --resume`` with the fixture run's settings, then ``changes``."""
    from jaxalign.cli import main

    return main(["align", "--country", "Japan", "--wording", str(wording), "--k", "2", "--population", "4",
                 "--subspace", "4", "--seed", "5", "--chunk-size", "1", "--baselines", "none",
                 "--generations", "3", "--no-progress", "--out", str(out), "--resume", *changes])


class _Loaded(Exception):
    pass


@pytest.mark.slow
def test_cli_refuses_changed_settings_before_loading_the_model(wording, run, tmp_path, monkeypatch, capsys):
    """README: a resume with other settings is refused before anything is compiled; the command
    does not even load the model, and the message names what changed, not digests."""
    from jaxalign.cli import common

    def load(*args, **kwargs):
        raise _Loaded

    monkeypatch.setattr(common, "_load", load)
    out = _copy(run, tmp_path)
    capsys.readouterr()
    assert _cli_resume(out, wording, "--population", "8", "--readout", "argmax") == 2
    err = capsys.readouterr().err
    assert "(checkpoint -> now): population: 4 -> 8; readout: 'expected' -> 'argmax'. Resume" in err, err
    assert "content" not in err and "another --out" in err and "resume=True" not in err
    assert _cli_resume(out, wording, "--generations", "1") == 2  # the checkpoint is at generation 2
    assert "beyond --generations 1" in capsys.readouterr().err
    with pytest.raises(_Loaded):  # the same settings pass the early check and go on to the load
        _cli_resume(out, wording)


@pytest.mark.slow
def test_api_refuses_changed_settings_before_the_set_up(lm, wording, run, tmp_path, monkeypatch):
    from jaxalign.optimize import pipeline

    def no_setup(*args, **kwargs):
        raise AssertionError("the run was set up (rendered) before the settings were compared")

    monkeypatch.setattr(pipeline, "setup", no_setup)
    with pytest.raises(ValueError, match=r"\(checkpoint -> now\): k: 2 -> 3; seed: 5 -> 6\. Resume") as error:
        _resume(lm, _copy(run, tmp_path), jaxalign.vsm13(wording=wording), k=3, seed=6)
    assert "content" not in str(error.value)
    with pytest.raises(ValueError, match=r"targets: 'Japan' -> 'China'"):
        _resume(lm, _copy(run, tmp_path / "b"), jaxalign.vsm13(wording=wording), target="China")


def test_resume_differences_lead_with_the_settings():
    """Settings in the order a person reads them (model, dtype, wording, targets, AlignConfig's
    fields), content digests last; targets of the same name compared per dimension."""
    digest_a, digest_b = "a" * 64, "b" * 64
    saved = {"content": {"space": {"basis": digest_a}}, "population": 8, "k": 2, "model": "m",
             "targets": [{"name": "Japan", "dims": [54.0, 46.0]}], "n": 4}
    now = {"content": {"space": {"basis": digest_b}}, "population": 16, "k": 2, "model": "m",
           "targets": [{"name": "Japan", "dims": [55.0, 46.0]}], "n": 8}
    assert api.resume_differences(saved, now, ("PDI", "IDV")) == [
        "targets.Japan.PDI: 54.0 -> 55.0", "population: 8 -> 16", "n: 4 -> 8",
        "content.space.basis: 'aaaaaaaaaaaa...' -> 'bbbbbbbbbbbb...'"]
    message = api.resume_refusal("ckpt", api.resume_differences(saved, now, ("PDI", "IDV")))
    assert message.index("population: 8 -> 16") < message.index("content.space.basis")
