"""One loader for saved soft prompts (:func:`jaxalign.saved_prompt.load_prompt`): the width is
checked against the model's config before any weight is read, and the date a prompt was tuned
under is the date its generations and scores render (Llama-3.2's template writes today's date)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest

import jaxalign
from jaxalign.cli import main
from jaxalign.fingerprint import model_digest, model_fingerprint
from jaxalign.generation.decoding import SoftPrompt, prepare
from jaxalign.model.loader import peek_hidden_size
from jaxalign.prompting.chat_formats import with_chat_format
from jaxalign.prompting.layout import SOFT_PROMPT_SENTINEL
from jaxalign.saved_prompt import load_prompt
from jaxalign.softprompt import save_soft_prompt

BENCH_DATA = Path(__file__).resolve().parent / "data" / "culturalbench"
TUNED_DATE = "2025-03-04"          # the date the prompt was tuned under
TUNED_DATE_TEXT = "04 Mar 2025"    # as Llama-3.2's template writes it ('%d %b %Y')


@pytest.fixture(scope="module")
def lm32(lm):
    """The tiny model in Llama-3.2's chat format (a template that reads today's date)."""
    return with_chat_format(lm, "llama3.2")


@pytest.fixture(scope="module")
def dated(lm32, tmp_path_factory):
    """A prompt tuned on ``lm32`` under :data:`TUNED_DATE`, with the provenance align writes."""
    vectors = np.random.default_rng(0).normal(0, 0.2, (3, lm32.config.hidden_size)).astype(np.float32)
    path = tmp_path_factory.mktemp("dated") / "soft_prompt.safetensors"
    save_soft_prompt(path, vectors, {"model": lm32.name, "model_fingerprint": model_digest(model_fingerprint(lm32)),
                                     "hidden_size": str(lm32.config.hidden_size), "slot": "user_start",
                                     "chat_date": TUNED_DATE})
    return path


def _today_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%d %b %Y")


# -- the width, from the config, before the weights ------------------------------------------------

def test_peek_hidden_size_reads_the_config_only(lm, tmp_path, monkeypatch):
    assert peek_hidden_size("tiny-random") == lm.config.hidden_size == 64
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 48}))
    assert peek_hidden_size(tmp_path / "ckpt") == 48 and peek_hidden_size(str(tmp_path / "ckpt")) == 48
    (tmp_path / "empty").mkdir()
    assert peek_hidden_size(tmp_path / "empty") is None                 # no config.json
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    assert peek_hidden_size(tmp_path / "bad") is None                   # unreadable: said by load_model
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"hidden_size": "64"}))
    assert peek_hidden_size(tmp_path / "odd") is None
    assert peek_hidden_size(tmp_path / "no" / "such" / "folder") is None
    # a Hub id: its cached config.json, no download when it is cached
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: str(tmp_path / "ckpt" / name) if repo == "owner/model" else None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    assert peek_hidden_size("owner/model") == 48
    assert peek_hidden_size("owner/other") is None                      # not cached, download fails


@pytest.fixture(scope="module")
def corrupt_checkpoint(tmp_path_factory):
    """A Llama-3.2-shaped checkpoint folder (d=64) whose weights file cannot be read."""
    pytest.importorskip("torch")
    from checkpoints import write_hub_checkpoint

    folder = write_hub_checkpoint(tmp_path_factory.mktemp("ckpt"), "llama3.2", vocab_size=256)
    (folder / "model.safetensors").write_bytes(b"\x00 not a safetensors file")
    return folder


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    path = tmp_path_factory.mktemp("narrow") / "p32.safetensors"
    save_soft_prompt(path, np.zeros((2, 32), np.float32), {"model": "elsewhere", "hidden_size": "32"})
    return path


COMMANDS = {
    "score": ["score"],
    "generate": ["generate", "hello"],
    "chat": ["chat"],
    "eval robustness": ["eval", "robustness", "--country", "Japan"],
    "eval culturalbench": ["eval", "culturalbench", "--data", str(BENCH_DATA)],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_wrong_width_is_refused_before_any_weight_is_read(command, corrupt_checkpoint, narrow, capsys):
    """The weights file is corrupt, yet the error is the width one: it was never opened."""
    code = main([*COMMANDS[command], "--model", str(corrupt_checkpoint), "--soft-prompt", str(narrow)])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("jaxalign: error:")]
    assert len(lines) == 1 and "soft prompt width d=32 does not match the hidden size 64" in lines[0]
    assert "before loading the weights" in lines[0]
    assert "loading weights" not in err and "safetensors" not in lines[0].replace("p32.safetensors", "")


def test_a_matching_width_reaches_the_weights(corrupt_checkpoint, tmp_path, capsys):
    """The control: with the right width the same command goes on to the (corrupt) weights."""
    path = tmp_path / "p64.safetensors"
    save_soft_prompt(path, np.zeros((2, 64), np.float32), {"model": "elsewhere"})
    assert main(["score", "--model", str(corrupt_checkpoint), "--soft-prompt", str(path)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_export_refuses_a_prompt_of_another_width_than_its_base_model(corrupt_checkpoint, tmp_path, capsys):
    path = tmp_path / "start.safetensors"
    save_soft_prompt(path, np.zeros((2, 32), np.float32), {"model": "tiny-random", "slot": "start"})
    assert main(["export", "--format", "peft", "--soft-prompt", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "hidden size 64 of model 'tiny-random'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


# -- one loader: vectors, metadata, provenance, slot, and the run's date ------------------------------

def test_load_prompt_returns_what_every_command_needs(lm32, dated):
    loaded = load_prompt(dated, lm32, warn=pytest.fail)  # a matching use warns nothing
    assert loaded.vectors.shape == (3, 64) and loaded.vectors.dtype == np.float32
    assert loaded.metadata["model"] == lm32.name and loaded.slot == "user_start"
    assert loaded.provenance["checked"] == ["model", "slot"] and loaded.provenance["mismatches"] == []
    assert loaded.chat_date == TUNED_DATE == loaded.lm.tokenizer.chat_date
    assert load_prompt(dated, lm32, chat_date="2024-01-02").chat_date == "2024-01-02"  # asked for
    # no model: read only (export); no prompt: the date alone (today unless one is bound)
    alone = load_prompt(dated)
    assert alone.lm is None and alone.provenance is None and alone.stored_chat_date == TUNED_DATE
    plain = load_prompt(None, lm32)
    assert plain.vectors is None and plain.chat_date == datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    # a loader is called only after the file was read and its width checked
    calls = []
    with pytest.raises(ValueError, match="width d=32"):
        load_prompt(np.zeros((1, 32), np.float32), lambda: calls.append(1), model="tiny-random")
    assert calls == []


def test_generation_renders_the_date_the_prompt_was_tuned_under(lm32, dated):
    """issue 25.5: the rendered generation prompt carries the run's date, not today's."""
    assert TUNED_DATE_TEXT != _today_text()
    decoder, n_soft, _ = prepare(lm32, "How important is free time to you?", [None, str(dated)],
                                 max_new_tokens=2)
    assert n_soft == 2 and len(decoder.rows.texts) == 2
    for text in decoder.rows.texts:  # the plain row too: a comparison differs by the prompt alone
        assert f"Today Date: {TUNED_DATE_TEXT}" in text and _today_text() not in text
    assert SOFT_PROMPT_SENTINEL in decoder.rows.texts[1] and SOFT_PROMPT_SENTINEL not in decoder.rows.texts[0]
    # an explicit date wins; prompts tuned under different dates need one
    decoder, _, _ = prepare(lm32, "hi", str(dated), max_new_tokens=2, chat_date="2024-01-02")
    assert "Today Date: 02 Jan 2024" in decoder.rows.texts[0]
    vectors = load_prompt(dated).vectors
    other = SoftPrompt(vectors=vectors, chat_date="2024-01-02")
    with pytest.raises(ValueError, match="different chat dates"):
        prepare(lm32, "hi", [str(dated), other], max_new_tokens=2)


@pytest.mark.slow
def test_generate_cli_uses_the_prompts_date(lm32, dated, capsys):
    code = main(["generate", "--chat-template", "llama3.2", "--soft-prompt", str(dated), "--json",
                 "--max-new-tokens", "4", "hello"])
    captured = capsys.readouterr()
    assert code == 0 and "warning" not in captured.err
    document = json.loads(captured.out)
    assert document["chat_date"] == TUNED_DATE
    want = jaxalign.generate(with_chat_format(lm32, date=TUNED_DATE), ["hello"],
                             SoftPrompt(vectors=load_prompt(dated).vectors), max_new_tokens=4)
    assert document["answers"][0]["answer"] == want.texts[0][0]
