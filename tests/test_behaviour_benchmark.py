"""benchmarks/behaviour.py on the tiny model: its answers and figures are those of the library's
generate / reply_log_likelihood for the study's prompts in their slots; bad specs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxalign
from benchmarks import behaviour
from jaxalign.generation.decoding import SoftPrompt


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(3)
    lm = jaxalign.load_model("tiny-random", dtype="float32")
    vectors = (0.05 * rng.normal(size=(3, lm.config.hidden_size))).astype(np.float32)
    np.savez(folder / "prompts.npz", **{"de|normal|China|0": vectors})
    (folder / "optimizers.json").write_text(json.dumps({"setup": {"slot": "user_end"}}))
    return lm, folder, vectors


def test_behaviour_report_matches_the_library(study, tmp_path):
    lm, folder, vectors = study
    questions = tmp_path / "q.txt"
    questions.write_text("What makes a job good?\n\nWho decides in a family?\n")
    report = behaviour.main(["--model", "tiny-random", "--prompt", f"DE={folder}:de|normal|China|0",
                             "--questions", str(questions), "--max-new-tokens", "5", "--out", str(tmp_path / "out")])
    soft = [None, SoftPrompt(vectors, slot="user_end")]
    qs = ["What makes a job good?", "Who decides in a family?"]
    want = jaxalign.generate(lm, qs, soft, max_new_tokens=5)
    assert report["answers"] == {"plain model": list(want.texts[0]), "DE": list(want.texts[1])}
    neutral = behaviour.NEUTRAL.read_text().strip()
    ll = jaxalign.reply_log_likelihood(lm, behaviour.NEUTRAL_REQUEST, neutral, soft)[:, 0]
    assert report["log_likelihood"]["DE"] == pytest.approx(ll[1], abs=1e-6)
    assert report["log_likelihood_change"]["DE"] == pytest.approx(ll[1] - ll[0], abs=1e-6)
    assert report["prompts"][0]["slot"] == "user_end" and report["prompts"][0]["k"] == 3
    saved = json.loads((tmp_path / "out" / "behaviour.json").read_text())
    assert saved["answers"] == report["answers"]
    assert "\\|" in (tmp_path / "out" / "behaviour.md").read_text()  # the key's bars escaped in the table


@pytest.mark.parametrize("spec, message", [
    ("DE", "expected LABEL=FOLDER:KEY"),
    ("DE={folder}:missing", "no key 'missing'"),
    ("DE=/nonexistent:de|normal|China|0", "holds no study"),
])
def test_behaviour_refuses_bad_prompt_specs(study, tmp_path, spec, message):
    _, folder, _ = study
    with pytest.raises(SystemExit, match=message):
        behaviour.main(["--model", "tiny-random", "--prompt", spec.format(folder=folder), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()  # refused before anything is written
