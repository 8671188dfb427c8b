"""Soft-prompt files carry their provenance; loading one on another model/wording/slot warns, on
another width refuses; old files without provenance still load."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import jaxalign
from jaxalign.cli import main
from jaxalign.fingerprint import instrument_fingerprint, model_digest, model_fingerprint
from jaxalign.softprompt import load_soft_prompt, prompt_provenance, save_soft_prompt
from jaxalign.survey import save_wording


@pytest.fixture(scope="module")
def tuned(lm, tmp_path_factory):
    """A prompt file with the provenance align writes for the tiny model and the built-in wording."""
    path = tmp_path_factory.mktemp("prompts") / "p.safetensors"
    meta = {"model": lm.name, "model_fingerprint": model_digest(model_fingerprint(lm)), "hidden_size": "64",
            "wording": "jaxalign-v1", "wording_fingerprint": instrument_fingerprint(jaxalign.vsm13())["items"],
            "slot": "user_start", "readout": "expected"}
    save_soft_prompt(path, np.random.default_rng(0).normal(0, 0.2, (2, 64)).astype(np.float32), meta)
    return path


def _check(path, lm, **kwargs):
    prompt, meta = load_soft_prompt(path)
    messages = []
    record = prompt_provenance(prompt, meta, lm=lm, warn=messages.append, **kwargs)
    return record, messages


def test_matching_use_is_silent(tuned, lm):
    record, messages = _check(tuned, lm, instrument=jaxalign.vsm13(), slot="user_start")
    assert record["checked"] == ["model", "wording", "slot"] and record["mismatches"] == [] and messages == []


def test_other_model_wording_and_slot_warn(tuned, lm, tmp_path):
    other = jaxalign.load_model("tiny-random", dtype="float32", seed=1)
    record, messages = _check(tuned, other)
    assert len(record["mismatches"]) == 1 and record["mismatches"][0].startswith("model:")
    assert len(messages) == 1 and "--allow-mismatch" in messages[0]

    data = json.loads(save_wording(jaxalign.vsm13(), tmp_path / "w.json").read_text())
    data["items"][0]["options"][0] += "!"
    (tmp_path / "w.json").write_text(json.dumps(data))
    record, _ = _check(tuned, lm, instrument=jaxalign.vsm13(wording=tmp_path / "w.json"), slot="system")
    assert [m.split(":")[0] for m in record["mismatches"]] == ["wording", "slot"]

    record, messages = _check(tuned, lm, slot="system", allow_mismatch=True)
    assert record["allow_mismatch"] is True and "allowed by --allow-mismatch" in messages[0]


def test_other_width_is_always_refused(tuned):
    prompt, meta = load_soft_prompt(tuned)

    class Narrow:  # the width check runs before anything else reads the model
        config = type("Config", (), {"hidden_size": 32})()
        name = "narrow"

    for allow in (False, True):
        with pytest.raises(ValueError, match="32"):
            prompt_provenance(prompt, meta, lm=Narrow(), allow_mismatch=allow, warn=lambda m: None)


@pytest.mark.slow
def test_old_file_without_provenance_loads_with_a_note(lm, tmp_path):
    path = tmp_path / "old.safetensors"
    save_soft_prompt(path, np.zeros((2, 64), np.float32), {"model": "tiny-random"})
    record, messages = _check(path, lm, instrument=jaxalign.vsm13(), slot="user_start")
    assert record["checked"] == [] and "no provenance" in record["note"] and messages == [record["note"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = jaxalign.score(lm, soft_prompt=path)
    assert scores.dims.shape == (1, 6) and any("no provenance" in str(w.message) for w in caught)


@pytest.mark.slow
def test_score_cli_warns_on_stderr_and_records(tuned, capsys):
    capsys.readouterr()
    assert main(["score", "--json", "--soft-prompt", str(tuned), "--model", "tiny-random"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["soft_prompt_provenance"]["mismatches"] == [] and "warning" not in err
    # the same file scored on a wording edited behind the user's back
    wording = save_wording(jaxalign.vsm13(), str(tuned) + ".wording.json")
    data = json.loads(wording.read_text())
    data["items"][2]["text"] += " Really."
    wording.write_text(json.dumps(data))
    for extra, allowed in (([], False), (["--allow-mismatch"], True)):
        assert main(["score", "--json", "--soft-prompt", str(tuned), "--wording", str(wording), *extra]) == 0
        out, err = capsys.readouterr()
        provenance = json.loads(out)["soft_prompt_provenance"]
        assert provenance["allow_mismatch"] is allowed and provenance["mismatches"][0].startswith("wording:")
        assert err.count("jaxalign: warning:") == 1
