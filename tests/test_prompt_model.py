"""A saved soft prompt brings its model: ``score``, ``generate``, ``chat``, ``eval`` and ``export``
take the model recorded in its provenance when ``--model`` is not given (one line on stderr);
a width mismatch names the recorded model; the PEFT export writes a base model ``peft`` can load.

The recorded model is a real file: a tiny GGUF (written as llama.cpp's converter would, see
``test_gguf``) that ``jaxalign align`` tunes a prompt on; its content is then checked against
the prompt's fingerprint (no mismatch listed).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_gguf import _hf_model, write_gguf  # noqa: E402

from jaxalign.cli import main  # noqa: E402
from jaxalign.saved_prompt import recorded_model  # noqa: E402
from jaxalign.softprompt import load_soft_prompt, save_soft_prompt  # noqa: E402

ALIGN = ["align", "--country", "China", "--population", "4", "--k", "2", "--subspace", "4",
         "--generations", "1", "--baselines", "none", "--no-progress"]
NOTE = "(the one the soft prompt was tuned on; --model chooses another)"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """(GGUF file, soft_prompt.safetensors tuned on it by `jaxalign align`, in the start slot)."""
    folder = tmp_path_factory.mktemp("model")
    file = write_gguf(folder / "tiny-llama.gguf", _hf_model("llama"), "llama")
    out = tmp_path_factory.mktemp("run") / "run"
    assert main([*ALIGN, "--model", str(file), "--slot", "start", "--out", str(out)]) == 0
    return file, out / "soft_prompt.safetensors"


def _stderr_lines(capsys) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    return captured.out, captured.err.splitlines()


@pytest.mark.slow
def test_the_prompt_records_its_model_and_score_takes_it(tuned, capsys):
    file, prompt = tuned
    _, metadata = load_soft_prompt(prompt)
    assert metadata["model_path"] == str(file.resolve()) and recorded_model(metadata) == str(file.resolve())
    capsys.readouterr()
    assert main(["score", "--soft-prompt", str(prompt), "--json"]) == 0
    out, err = _stderr_lines(capsys)
    notes = [line for line in err if line.startswith("model: ")]
    assert notes == [f"model: {file.resolve()} {NOTE}"]
    result = json.loads(out)
    assert result["model"] == str(file.resolve())
    provenance = result["soft_prompt_provenance"]
    assert "model" in provenance["checked"] and provenance["mismatches"] == []   # the fingerprint matches


@pytest.mark.slow
def test_generate_chat_and_eval_take_it_too(tuned, capsys, monkeypatch):
    file, prompt = tuned
    expected = f"model: {file.resolve()} {NOTE}"
    runs = {
        "generate": ["generate", "--soft-prompt", str(prompt), "--max-new-tokens", "2", "--json", "Hi"],
        "eval robustness": ["eval", "robustness", "--soft-prompt", str(prompt), "--country", "China", "--json"],
        "eval culturalbench": ["eval", "culturalbench", "--soft-prompt", str(prompt), "--json", "--country",
                               "China", "--data", str(Path(__file__).parent / "data" / "culturalbench")],
    }
    for name, argv in runs.items():
        capsys.readouterr()
        assert main(argv) == 0, (name, capsys.readouterr().err)
        out, err = _stderr_lines(capsys)
        assert [line for line in err if line.startswith("model: ")] == [expected], name
        assert json.loads(out)["model"] == str(file.resolve()), name
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\n"))
    capsys.readouterr()
    assert main(["chat", "--soft-prompt", str(prompt), "--max-new-tokens", "2"]) == 0
    _, err = _stderr_lines(capsys)
    assert [line for line in err if line.startswith("model: ")] == [expected]


def test_given_model_wins_and_a_width_mismatch_names_the_recorded_model(tmp_path, capsys):
    prompt = tmp_path / "wide.safetensors"
    save_soft_prompt(prompt, np.ones((2, 576), np.float32),
                     {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "slot": "user_start"})
    for argv in (["score", "--model", "tiny-random", "--soft-prompt", str(prompt)],
                 ["generate", "--model", "tiny-random", "--soft-prompt", str(prompt), "Hi"],
                 ["eval", "robustness", "--model", "tiny-random", "--soft-prompt", str(prompt), "--country", "China"]):
        capsys.readouterr()
        assert main(argv) == 2
        _, err = _stderr_lines(capsys)
        assert len(err) == 1 and "refused before loading the weights" in err[0], err
        assert "does not match the hidden size 64 of model 'tiny-random'" in err[0]
        assert "it was tuned on 'HuggingFaceTB/SmolLM2-135M-Instruct' (leave out --model to use that one)" in err[0]
        assert not any(line.startswith("model: ") for line in err)   # --model given: no note


def test_a_local_model_no_longer_there_is_named_in_one_line(tmp_path, capsys):
    prompt = tmp_path / "gone.safetensors"
    gone = str(tmp_path / "moved" / "model.gguf")
    save_soft_prompt(prompt, np.ones((2, 64), np.float32), {"model": "model.gguf", "model_path": gone})
    assert main(["score", "--soft-prompt", str(prompt)]) == 2
    _, err = _stderr_lines(capsys)
    assert err == [f"jaxalign: error: the soft prompt was tuned on {gone!r}, which is not there any more; "
                   "pass --model with that model (or its copy)"]


def test_recorded_model_forms(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert recorded_model({}) is None
    assert recorded_model({"model": "tiny-random"}) == "tiny-random"
    assert recorded_model({"model": "Qwen/Qwen2.5-0.5B-Instruct"}) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert recorded_model({"model": "ckpt", "model_path": str(folder)}) == str(folder)
    with pytest.raises(ValueError, match="not there any more"):
        recorded_model({"model": "./ckpt-old"})
    with pytest.raises(ValueError, match="not there any more"):
        recorded_model({"model": "m.gguf"})


@pytest.mark.slow
def test_export_writes_the_recorded_gguf_path_with_a_note(tuned, tmp_path, capsys):
    file, prompt = tuned
    capsys.readouterr()
    assert main(["export", "--format", "peft", "--soft-prompt", str(prompt), "--out", str(tmp_path / "a")]) == 0
    _, err = _stderr_lines(capsys)
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(file.resolve())
    assert "gguf_file='tiny-llama.gguf'" in config["jaxalign_note"]
    assert err == [f"note: {config['jaxalign_note']}",
                   f"base model: {file.resolve()} (the one the soft prompt was tuned on; --base-model chooses another)"]
    capsys.readouterr()
    assert main(["export", "--format", "peft", "--soft-prompt", str(prompt), "--out", str(tmp_path / "b"),
                 "--base-model", "someone/model"]) == 0
    config = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "someone/model" and "jaxalign_note" not in config
    assert capsys.readouterr().err == ""
    # the note's recipe: transformers reads the GGUF base, peft puts the adapter on it
    peft = pytest.importorskip("peft")
    base = transformers.AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name,
                                                             dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "a"))
    np.testing.assert_array_equal(model.get_prompt_embedding_to_save("default").numpy(), load_soft_prompt(prompt)[0])


@pytest.mark.slow
def test_export_of_a_prompt_tuned_on_a_local_folder_is_loaded_by_peft_alone(tmp_path, capsys):
    """AutoPeftModelForCausalLM reads base_model_name_or_path and loads the base from it."""
    peft = pytest.importorskip("peft")
    folder = tmp_path / "ckpt"
    _hf_model("llama").save_pretrained(folder)
    vectors = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    prompt = tmp_path / "soft_prompt.safetensors"
    save_soft_prompt(prompt, vectors, {"model": "ckpt", "model_path": str(folder.resolve()), "slot": "start"})
    capsys.readouterr()
    assert main(["export", "--format", "peft", "--soft-prompt", str(prompt), "--out", str(tmp_path / "a")]) == 0
    _, err = _stderr_lines(capsys)
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(folder.resolve())
    assert "local folder" in config["jaxalign_note"] and err[0] == f"note: {config['jaxalign_note']}"
    model = peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "a"))
    np.testing.assert_array_equal(model.get_prompt_embedding_to_save("default").numpy(), vectors)


@pytest.mark.slow
def test_another_file_at_the_recorded_path_is_caught_by_the_fingerprint(tuned, tmp_path, capsys):
    """The recorded model is checked against the prompt's fingerprint once loaded: a different file
    where the prompt says its model is gets the provenance warning, not silence."""
    file, prompt = tuned
    other = write_gguf(tmp_path / "tiny-llama.gguf", _hf_model("llama", seed=1), "llama")
    vectors, metadata = load_soft_prompt(prompt)
    moved = tmp_path / "soft_prompt.safetensors"
    save_soft_prompt(moved, vectors, {**metadata, "model_path": str(other.resolve())})
    capsys.readouterr()
    assert main(["score", "--soft-prompt", str(moved), "--json"]) == 0
    out, err = _stderr_lines(capsys)
    assert f"model: {other.resolve()} {NOTE}" in err
    warnings = [line for line in err if line.startswith("jaxalign: warning: the soft prompt does not match")]
    assert len(warnings) == 1 and "whose content differs" in warnings[0]
    assert json.loads(out)["soft_prompt_provenance"]["mismatches"][0].startswith("model: tuned on")
