"""Generation with soft prompts against transformers' ``generate`` on the same weights.

The reference builds every row itself: the chat messages with the test's own slot marker,
rendered by the tokenizer's template, split, tokenized, the soft vectors spliced between the two
pieces as ``inputs_embeds`` of the PyTorch twin (``benchmarks.common.torch_model_from_lm``), one
unpadded row at a time, greedy, stopping at the same tokens. jaxalign decodes all rows in one
left-padded batch with its key/value cache.
"""

from __future__ import annotations

import numpy as np
import pytest

import jaxalign
from jaxalign.generation import decoding

torch = pytest.importorskip("torch")

MARK = "\u00a7\u00a7SOFT\u00a7\u00a7"
M = 12
QUESTIONS = [
    "How important is free time to you?",
    [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi, how can I help?"},
     {"role": "user", "content": "What do you think of your boss?"}],
]


@pytest.fixture(scope="module")
def twin(lm):
    from benchmarks.common import torch_model_from_lm

    return torch_model_from_lm(lm)


@pytest.fixture(scope="module")
def soft(lm):
    std = float(np.asarray(lm.embedding_matrix).std())
    rng = np.random.default_rng(1)
    return [(std * rng.normal(size=(k, lm.config.hidden_size))).astype(np.float32) for k in (3, 5)]


def reference_row(lm, twin, question, vectors, slot, stop_ids, max_new):
    """transformers greedy generate of one row, soft vectors spliced in by hand."""
    tok = lm.tokenizer
    messages = [{"role": "user", "content": question}] if isinstance(question, str) else [dict(m) for m in question]
    if vectors is not None and slot == "user_start":
        messages[0]["content"] = MARK + messages[0]["content"]
    if vectors is not None and slot == "system":
        messages.insert(0, {"role": "system", "content": MARK})
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if vectors is not None and slot == "start":
        text = MARK + text
    before, after = text.split(MARK) if vectors is not None else ("", text)
    ids = lambda s: torch.tensor(tok(s, add_special_tokens=False)["input_ids"], dtype=torch.long)  # noqa: E731
    table = twin.get_input_embeddings()
    with torch.no_grad():
        parts = [table(ids(before))] if before else []
        if vectors is not None:
            parts.append(torch.from_numpy(vectors))
        parts.append(table(ids(after)))
        embeds = torch.cat(parts)[None]
        out = twin.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                            max_new_tokens=max_new, do_sample=False, eos_token_id=[int(i) for i in stop_ids],
                            pad_token_id=tok.pad_token_id)
    return out[0].tolist()


@pytest.fixture(scope="module")
def prompts(soft):
    """The plain model and soft prompts in three slots: with QUESTIONS, a batch of 8 rows."""
    return [None, decoding.SoftPrompt(soft[0], slot="user_start"),
            decoding.SoftPrompt(soft[1], slot="system"), decoding.SoftPrompt(soft[0], slot="start")]


@pytest.mark.slow
def test_greedy_equals_transformers_generate(lm, twin, prompts):
    free = jaxalign.generate(lm, QUESTIONS, prompts, max_new_tokens=M)
    assert free.tokens.shape == (4, 2, M) and not free.stopped.any()
    # stop at a token some rows emit midway, so per-row stopping is exercised
    stop = int(free.tokens[1, 0, 4])
    stop_ids = [int(lm.tokenizer.eos_token_id), stop]
    got = jaxalign.generate(lm, QUESTIONS, prompts, max_new_tokens=M, stop_ids=stop_ids)
    assert got.stopped[1, 0] and got.lengths[1, 0] <= 5
    assert (got.lengths == M).any()  # and others run to the end
    for s, prompt in enumerate(prompts):
        for n, question in enumerate(QUESTIONS):
            vectors = None if prompt is None else prompt.vectors
            slot = None if prompt is None else prompt.slot
            want = reference_row(lm, twin, question, vectors, slot, stop_ids, M)
            length = int(got.lengths[s, n])
            assert got.tokens[s, n, :length].tolist() == want, (s, n)
            assert np.all(got.tokens[s, n, length:] == lm.tokenizer.pad_token_id)
            if got.stopped[s, n]:
                assert want[-1] in stop_ids
            assert got.texts[s][n] == lm.tokenizer.decode(
                [t for t in want if t not in stop_ids], skip_special_tokens=True)
    # the soft prompt changes the answer (the test is not vacuous)
    assert free.texts[0] != free.texts[1]


@pytest.mark.slow
def test_soft_prompt_file_brings_its_slot_and_system(lm, soft, tmp_path):
    from jaxalign.softprompt import save_soft_prompt

    path = tmp_path / "p.safetensors"
    save_soft_prompt(path, soft[1], {"slot": "system", "system": "You are from Japan."})
    with_system = [{"role": "system", "content": "You are from Japan."}, {"role": "user", "content": QUESTIONS[0]}]
    got = jaxalign.generate(lm, [QUESTIONS[0], with_system],
                            [str(path), decoding.SoftPrompt(soft[1], slot="system"), None, None],
                            max_new_tokens=M)
    # row (file, plain question) == row (same vectors in the system slot, system text by hand)
    assert got.tokens[0, 0].tolist() == got.tokens[1, 1].tolist()
    assert got.prompt_lengths[0, 0] == got.prompt_lengths[1, 1]
    assert got.tokens[0, 0].tolist() != got.tokens[2, 0].tolist()


@pytest.mark.slow
def test_one_compile_per_length_bucket_and_chunks_equal_one_go(lm, prompts):
    jaxalign.generate(lm, QUESTIONS, prompts, max_new_tokens=M)
    compiled = decoding.compiled_programs()
    # other prompts of the same bucket, other sampling settings and stops: nothing new to compile
    others = ["what is work?", [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."},
                                {"role": "user", "content": "Why do you think your work matters?"}]]
    again = jaxalign.generate(lm, others, prompts, max_new_tokens=M, temperature=0.7, top_p=0.9, seed=4,
                              stop_ids=[5, 6, 7])
    assert decoding.compiled_programs() == compiled
    # streaming in chunks of 3 steps: same programs, same tokens as in one go
    decoder, _, _ = decoding.prepare(lm, others, prompts, max_new_tokens=M, temperature=0.7,
                                     top_p=0.9, seed=4, stop_ids=[5, 6, 7])
    state = decoder.start()
    while int(state.step) < M and not bool(np.all(np.asarray(state.done))):
        state = decoder.advance(state, 3)
    tokens, _, _ = decoder.emitted(state)
    assert tokens.reshape(again.tokens.shape).tolist() == again.tokens.tolist()
    assert decoding.compiled_programs() == compiled
    # a prompt one bucket longer compiles once more (prefill and step loop)
    long = "word " * (2 * decoding.LENGTH_BUCKET)
    jaxalign.generate(lm, [long, "why?"], prompts, max_new_tokens=M)
    assert decoding.compiled_programs() == compiled + 2


@pytest.mark.slow
def test_sampling_is_seeded(lm, prompts):
    kwargs = dict(max_new_tokens=M, temperature=1.0, top_p=0.95)
    first = jaxalign.generate(lm, QUESTIONS, prompts, seed=7, **kwargs)
    second = jaxalign.generate(lm, QUESTIONS, prompts, seed=7, **kwargs)
    other = jaxalign.generate(lm, QUESTIONS, prompts, seed=8, **kwargs)
    assert first.tokens.tolist() == second.tokens.tolist()
    assert first.tokens.tolist() != other.tokens.tolist()
    greedy = jaxalign.generate(lm, QUESTIONS, prompts, max_new_tokens=M)
    assert first.tokens.tolist() != greedy.tokens.tolist()
    # a nucleus of one token is greedy decoding, whatever the temperature and seed
    narrow = jaxalign.generate(lm, QUESTIONS, prompts, max_new_tokens=M, temperature=2.0,
                               top_p=1e-6, seed=3)
    assert narrow.tokens.tolist() == greedy.tokens.tolist()


def test_choose_tokens_keeps_the_nucleus():
    import jax
    import jax.numpy as jnp

    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]], jnp.float32))
    draws = [int(decoding.choose_tokens(logits, jax.random.key(i), jnp.float32(1.0), jnp.float32(0.7))[0])
             for i in range(200)]
    assert set(draws) == {0, 1}  # 0.5 < 0.7 so token 1 is needed; 0.5 + 0.3 >= 0.7 so 2 and 3 never
    assert 0.5 < draws.count(0) / 200 < 0.75  # renormalised: 0.5 / 0.8 = 0.625


def test_bad_arguments(lm, soft):
    with pytest.raises(ValueError, match="temperature"):
        jaxalign.generate(lm, "hi", temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        jaxalign.generate(lm, "hi", top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        jaxalign.generate(lm, "hi", max_new_tokens=0)
    with pytest.raises(ValueError, match="end with a user message"):
        jaxalign.generate(lm, [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]])
    with pytest.raises(ValueError, match="hidden size"):
        jaxalign.generate(lm, "hi", np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="slot"):
        jaxalign.generate(lm, "hi", soft[0], slot="nowhere")
