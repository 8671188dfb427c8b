"""reply_log_likelihood against transformers' PyTorch Llama with the same weights.

The reference scores the reply's tokens after the rendered chat by hand (soft vectors spliced
into the embeddings where the slot marker was), so the row layout, the left padding of a batch
and the reply's position all have to agree with an independent computation.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxalign.generation import decoding
from jaxalign.generation.likelihood import reply_log_likelihood

torch = pytest.importorskip("torch")

MARK = "\u00a7\u00a7SOFT\u00a7\u00a7"
REPLY = "The river runs past the old mill and into the valley, where the town keeps its market."
QUESTIONS = ["Please describe a quiet place.", "Tell me something."]


@pytest.fixture(scope="module")
def twin(lm):
    from benchmarks.common import torch_model_from_lm

    return torch_model_from_lm(lm)


def reference(lm, twin, question, vectors, slot):
    """Mean log p(reply token | everything before) from transformers, one unpadded row."""
    tok = lm.tokenizer
    messages = [{"role": "user", "content": question}]
    if vectors is not None and slot == "user_start":
        messages[0]["content"] = MARK + messages[0]["content"]
    if vectors is not None and slot == "system":
        messages.insert(0, {"role": "system", "content": MARK})
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before, after = text.split(MARK) if vectors is not None else ("", text)
    ids = lambda s: torch.tensor(tok(s, add_special_tokens=False)["input_ids"], dtype=torch.long)  # noqa: E731
    reply = ids(REPLY)
    table = twin.get_input_embeddings()
    with torch.no_grad():
        parts = [table(ids(before))] if before else []
        if vectors is not None:
            parts.append(torch.from_numpy(vectors))
        parts += [table(ids(after)), table(reply)]
        logits = twin(inputs_embeds=torch.cat(parts)[None]).logits[0].double()
        log_probs = torch.log_softmax(logits[-len(reply) - 1:-1], dim=-1)
    return float(log_probs[torch.arange(len(reply)), reply].mean())


def test_reply_log_likelihood_equals_transformers(lm, twin):
    std = float(np.asarray(lm.embedding_matrix).std())
    rng = np.random.default_rng(0)
    vectors = (3 * std * rng.normal(size=(4, lm.config.hidden_size))).astype(np.float32)
    prompts = [None, decoding.SoftPrompt(vectors, slot="user_start"), decoding.SoftPrompt(vectors, slot="system")]
    got = reply_log_likelihood(lm, QUESTIONS, REPLY, prompts)                      # (3, 2)
    assert got.shape == (3, 2)
    want = np.asarray([[reference(lm, twin, q, None if p is None else p.vectors, None if p is None else p.slot)
                        for q in QUESTIONS] for p in prompts])
    np.testing.assert_allclose(got, want, atol=1e-4)
    # the soft prompt changes the figure (the test could not pass with the prompt ignored)
    assert abs(got[1, 0] - got[0, 0]) > 1e-3
    # one prompt alone: the same numbers as its row of the batch
    alone = reply_log_likelihood(lm, QUESTIONS[0], REPLY, prompts[1])
    np.testing.assert_allclose(alone, got[1:2, :1], atol=1e-5)


def test_reply_log_likelihood_bad_input(lm):
    with pytest.raises(ValueError, match="reply must be a non-empty string"):
        reply_log_likelihood(lm, QUESTIONS, "  ")
    with pytest.raises(ValueError, match="soft_prompt=\\[\\]"):
        reply_log_likelihood(lm, QUESTIONS, REPLY, [])
    with pytest.raises(ValueError, match="prompts must be"):
        reply_log_likelihood(lm, [], REPLY)
