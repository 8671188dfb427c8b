"""``jaxalign generate`` (plain, --compare, --json) and ``jaxalign chat`` on the tiny model.

The commands must print what :func:`jaxalign.generate` returns for the same conversation: chat is
run as a subprocess with a scripted conversation on stdin (streamed in chunks of 3 tokens) and its
transcript is compared with ``generate()`` of each turn's conversation so far.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxalign
from jaxalign.cli import main
from jaxalign.cli.generate import COMPARE_ITEMS, default_questions, two_columns
from jaxalign.softprompt import save_soft_prompt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prompt_file(lm, tmp_path_factory):
    std = float(np.asarray(lm.embedding_matrix).std())
    vectors = (std * np.random.default_rng(2).normal(size=(4, lm.config.hidden_size))).astype(np.float32)
    path = tmp_path_factory.mktemp("prompt") / "soft_prompt.safetensors"
    save_soft_prompt(path, vectors, {"model": "tiny-random", "slot": "user_start"})
    return path


@pytest.mark.slow
def test_compare_json_is_one_document_equal_to_generate(lm, prompt_file, capsys):
    code = main(["generate", "--soft-prompt", str(prompt_file), "--compare", "--json", "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 0
    document = json.loads(out)  # exactly one JSON document on stdout
    questions = default_questions()
    assert len(questions) == len(COMPARE_ITEMS)
    want = jaxalign.generate(lm, questions, [None, str(prompt_file)], max_new_tokens=8)
    assert [a["question"] for a in document["answers"]] == questions
    assert [a["plain"] for a in document["answers"]] == list(want.texts[0])
    assert [a["aligned"] for a in document["answers"]] == list(want.texts[1])
    assert document["slot"] == "user_start" and document["model"] == "tiny-random"

    assert main(["generate", "--soft-prompt", str(prompt_file), "--compare", "--max-new-tokens", "8",
                 "how are you?"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("Q: how are you?") and "plain" in table and "| aligned" in table


@pytest.mark.slow
def test_generate_prints_the_answers(lm, capsys):
    assert main(["generate", "--json", "--max-new-tokens", "6", "hello", "why?"]) == 0
    document = json.loads(capsys.readouterr().out)
    want = jaxalign.generate(lm, ["hello", "why?"], max_new_tokens=6)
    assert [a["answer"] for a in document["answers"]] == list(want.texts[0])
    assert document["soft_prompt"] is None


@pytest.mark.slow
def test_generate_honours_quantize_and_chat_template(capsys):
    """--quantize and --chat-template reach the model generate/chat load (they were once ignored)."""
    from jaxalign.prompting.chat_formats import with_chat_format

    assert main(["generate", "--json", "--quantize", "int8", "--chat-template", "plain",
                 "--max-new-tokens", "4", "hello"]) == 0
    captured = capsys.readouterr()
    assert "int8" in captured.err
    lm8 = with_chat_format(jaxalign.load_model("tiny-random", dtype="float32", quantize="int8"), "plain")
    want = jaxalign.generate(lm8, ["hello"], max_new_tokens=4)
    assert json.loads(captured.out)["answers"][0]["answer"] == want.texts[0][0]
    assert main(["chat", "--chat-template", "no-such-format"]) == 2
    assert "no-such-format" in capsys.readouterr().err


def test_two_columns_wraps_side_by_side():
    text = two_columns([{"question": "Q1?", "plain": "a " * 30, "aligned": "b\nc"}], width=43)
    lines = text.splitlines()
    assert lines[0] == "Q: Q1?" and lines[1].startswith("plain") and lines[1].endswith("| aligned")
    rows = lines[3:]
    assert all(r[20:22] == " |" for r in rows) and rows[0].endswith(" | b c")
    assert " ".join(r[:20] for r in rows).split() == ["a"] * 30


def test_bad_generate_input(capsys, tmp_path):
    assert main(["generate", "--compare"]) == 2
    assert "--compare needs --soft-prompt" in capsys.readouterr().err
    assert main(["generate"]) == 2
    assert "at least one PROMPT" in capsys.readouterr().err
    assert main(["generate", "--soft-prompt", str(tmp_path / "none.safetensors"), "hi"]) == 2
    assert "no soft prompt file" in capsys.readouterr().err


@pytest.mark.slow
def test_chat_transcript_equals_generate_of_the_conversation(lm, prompt_file):
    turns = ["Hello! Who are you?", "How important is free time to you?"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "jaxalign.cli", "chat", "--soft-prompt", str(prompt_file),
         "--max-new-tokens", "10", "--chunk", "3"],
        input="\n".join(turns) + "\n", capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    history, transcript = [], ""
    for turn in turns:
        history.append({"role": "user", "content": turn})
        reply = jaxalign.generate(lm, [history], str(prompt_file), max_new_tokens=10).texts[0][0]
        history.append({"role": "assistant", "content": reply})
        transcript += f"assistant> {reply}\n"
    assert done.stdout == transcript
    # the soft prompt is part of every turn (the plain model answers the first turn differently)
    plain = jaxalign.generate(lm, turns[0], max_new_tokens=10).texts[0][0]
    assert plain != history[1]["content"]
