"""Generation with a steering vector against transformers' greedy ``generate`` with a forward hook.

The hook on ``model.model.layers[L]`` adds the vector at every position of every forward call
(the prompt's prefill and each generated token), which is what jaxalign's decoder does with its
key/value cache. Plain and steered rows decode in one batch (the plain rows get zeros added, which
changes no bit).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxalign
from jaxalign.generation import decoding
from jaxalign.interventions import steering

torch = pytest.importorskip("torch")

M = 12
QUESTIONS = ["How important is free time to you?", "What do you think of your boss?"]


@pytest.fixture(scope="module")
def twin(lm):
    from benchmarks.common import torch_model_from_lm

    return torch_model_from_lm(lm)


@pytest.fixture(scope="module")
def vector(lm):
    return (np.random.default_rng(5).standard_normal(lm.config.hidden_size) * 8).astype(np.float32)


def hooked_generate(lm, twin, question: str, layer: int | None, vector, stop_ids) -> list[int]:
    from test_steering import add_after

    tok = lm.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], dtype=torch.long)
    handle = None if layer is None else add_after(twin.model.layers[layer], vector)
    try:
        with torch.no_grad():
            out = twin.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=M, do_sample=False,
                                eos_token_id=[int(i) for i in stop_ids], pad_token_id=tok.pad_token_id)
    finally:
        if handle is not None:
            handle.remove()
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("layer", [1, 3])
def test_greedy_steered_equals_transformers_hook(lm, twin, vector, layer, tmp_path):
    path = steering.save_steering(tmp_path / "v.safetensors", vector, layer)
    with pytest.warns(UserWarning, match="no provenance"):
        got = jaxalign.generate(lm, QUESTIONS, [None, str(path)], max_new_tokens=M)
    stop_ids = decoding.stop_token_ids(lm.tokenizer)
    for s, active in enumerate((None, layer)):
        for n, question in enumerate(QUESTIONS):
            want = hooked_generate(lm, twin, question, active, vector, stop_ids)
            length = int(got.lengths[s, n])
            assert got.tokens[s, n, :length].tolist() == want, (s, n, layer)
    assert got.texts[0] != got.texts[1]  # the vector changes the answers


def test_cli_generate_compare_with_steering(lm, vector, tmp_path, capsys):
    from jaxalign import cli

    path = steering.save_steering(tmp_path / "v.safetensors", vector, 2, steering.steering_metadata(lm))
    code = cli.main(["generate", "--model", "tiny-random", "--dtype", "float32", "--steering", str(path),
                     "--compare", "--max-new-tokens", "8", "--json", QUESTIONS[0]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["steering_layers"] == [2] and out["slot"] is None
    want = jaxalign.generate(lm, [QUESTIONS[0]], [None, steering.load_steering(path)], max_new_tokens=8)
    assert [out["answers"][0]["plain"], out["answers"][0]["aligned"]] == [want.texts[0][0], want.texts[1][0]]
    code = cli.main(["generate", "--model", "tiny-random", "--steering", str(path), "--soft-prompt", str(path), "hi"])
    assert code == 2 and "not supported yet" in capsys.readouterr().err
