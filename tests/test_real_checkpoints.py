"""Real-shaped tiny checkpoints, end to end: real vocabularies and tokenizers, published chat formats.

Each checkpoint folder is in the Hub's form (``config.json`` as the Hub ships it, see
``tests/checkpoints.py``; safetensors; the family's real tokenizer built offline, see
``tests/real_tokenizers.py``, with its Instruct chat format as ``chat_template``), with the real
vocabulary size and a tiny width (d=64, 2 layers). Through each one:

- ``jaxalign.score`` equals a transformers reference built with ``apply_chat_template`` and the
  PyTorch model, the soft prompt spliced in through ``inputs_embeds`` (answer probabilities
  within 1e-4, float32);
- the tokens before and after the soft-prompt slot are exactly the whole rendered text's tokens
  (for SentencePiece a token spanning the slot goes after it: tested);
- CulturalBench Easy/Hard answer tokens are the ones the real tokenizer gives;
- a short ``align`` runs, and ``eval culturalbench`` / ``eval robustness`` run on its prompt.

Llama-3.2's format writes today's date: every run here binds ONE date, recorded and reused.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tiktoken")
pytest.importorskip("quicktok")
pytest.importorskip("sentencepiece")

import jaxalign  # noqa: E402
from checkpoints import load_reference, write_hub_checkpoint  # noqa: E402
from real_tokenizers import write_tokenizer  # noqa: E402

from jaxalign.evaluate.culturalbench import evaluate_culturalbench, load_culturalbench, render_judgements  # noqa: E402
from jaxalign.prompting import SLOTS, item_messages, render_items  # noqa: E402
from jaxalign.prompting.chat_formats import CHAT_FORMATS, ChatTokenizer, with_chat_format  # noqa: E402
from jaxalign.scoring import make_scorer  # noqa: E402
from jaxalign.survey import vsm13  # noqa: E402

FAMILIES = ("llama3", "llama3.1", "llama3.2", "qwen2.5", "mistral")
CHAT_DATE = "2026-12-01"  # the one date of these tests' Llama-3.2 runs
CHAT_DATE_TEXT = "01 Dec 2026"
MARK = "<<slot>>"
REPO = Path(__file__).resolve().parents[1]
BENCH_DATA = REPO / "tests" / "data" / "culturalbench"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """family -> checkpoint folder, written on first use."""
    cache: dict[str, Path] = {}

    def get(family: str, *, chat_template: bool = True) -> Path:
        key = family if chat_template else f"{family}-base"
        if key not in cache:
            folder = tmp_path_factory.mktemp(key.replace(".", "_"))
            write_hub_checkpoint(folder, family)
            write_tokenizer(folder, family, chat_template=chat_template)
            cache[key] = folder
        return cache[key]

    return get


@pytest.fixture(scope="module")
def tokenizers(real_tokenizer):
    """family -> the family's transformers tokenizer with its chat template (no weights written)."""
    return real_tokenizer


@pytest.fixture(scope="module")
def models(folders):
    """family -> jaxalign LM (float32), loaded on first use. Every family here is supported: a
    loader failure fails the test (it used to skip Qwen2 and Mistral before the loader read them)."""
    cache: dict[str, object] = {}

    def get(family: str, *, chat_template: bool = True):
        key = (family, chat_template)
        if key not in cache:
            cache[key] = jaxalign.load_model(folders(family, chat_template=chat_template), dtype="float32")
        return cache[key]

    return get


def _template_kwargs(family: str) -> dict:
    # Llama-3.2's template reads `date_string` before the clock: the reference's one fixed date
    return {"date_string": CHAT_DATE_TEXT} if family == "llama3.2" else {}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def reference_probs(folder: Path, family: str, prompt: np.ndarray, slot: str, chat_template: str | None = None):
    """(Q, 5) answer probabilities from transformers: apply_chat_template, PyTorch, inputs_embeds.

    The soft vectors go where the whole text's tokens stop agreeing with the tokens of the text
    before the slot (the slot's token boundary); the answer ids are the vocabulary's digit tokens.
    """
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = load_reference(folder)
    digits = tok.convert_tokens_to_ids([str(d) for d in range(1, 6)])
    assert tok.unk_token_id not in digits
    embed = model.get_input_embeddings()
    soft = torch.tensor(prompt, dtype=torch.float32)
    out = []
    for item in vsm13().items:
        messages = item_messages(item, slot=slot, marker=MARK)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                       chat_template=chat_template, **_template_kwargs(family))
        before, after = text.split(MARK)
        whole = tok(before + after + _ANSWER_LEAD.get(family, ""), add_special_tokens=False)["input_ids"]
        cut = _common_prefix(tok(before, add_special_tokens=False)["input_ids"], whole)
        with torch.no_grad():
            ids = torch.tensor(whole)
            x = torch.cat([embed(ids[:cut]), soft, embed(ids[cut:])])[None]
            logits = model(inputs_embeds=x).logits[0, -1, digits]
        out.append(torch.softmax(logits.double(), -1).numpy())
    return np.stack(out)


# What a family writes after the generation prompt before the digit: Mistral writes " 3" ("▁" then
# "3", SentencePiece splits digits), so its digit is read after the "▁" (issue 25, point 9).
_ANSWER_LEAD = {"mistral": " "}


def _soft_prompt(lm, k: int = 3, seed: int = 0) -> np.ndarray:
    std = float(np.std(np.asarray(lm.embedding_matrix, np.float32)))
    return (np.random.default_rng(seed).standard_normal((k, lm.config.hidden_size)) * std).astype(np.float32)


# ------------------------------------------------------------------------------ score vs transformers
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_score_matches_transformers(family, folders, models):
    lm = models(family)
    assert lm.config.vocab_size == {"qwen2.5": 151936, "mistral": 32768}.get(family, 128256)
    prompt = _soft_prompt(lm)
    slot = "system" if family == "llama3.1" else "user_start"
    scores = jaxalign.score(lm, soft_prompt=prompt, slot=slot, chat_date=CHAT_DATE)
    reference = reference_probs(folders(family), family, prompt, slot)
    np.testing.assert_allclose(np.asarray(scores.probs[0]), reference, atol=1e-4, rtol=0)
    assert np.ptp(reference, axis=0).max() > 1e-3  # the items' answers differ: not a vacuous match


# ------------------------------------------------------------------------------ slot seam
@pytest.mark.parametrize("family", FAMILIES)
def test_slot_split_is_the_whole_texts_tokens(family, tokenizers):
    tok = tokenizers(family)
    bound = ChatTokenizer(tok, tok.chat_template, "model", CHAT_DATE)  # the test date, as a run binds it
    instrument = vsm13()
    for slot in SLOTS:
        batch = render_items(bound, instrument, slot=slot, system=None if slot == "system" else "Be brief.")
        for q, item in enumerate(instrument.items):
            messages = item_messages(item, slot=slot, marker=MARK, system=None if slot == "system" else "Be brief.")
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                           **_template_kwargs(family))
            if slot == "start":  # before the whole rendered text, BOS included (PEFT's place)
                text = MARK + text
            before, after = text.split(MARK)
            prefix = [int(t) for t, m in zip(batch.prefix_ids[q], batch.prefix_mask[q]) if m]
            suffix = [int(t) for t, m in zip(batch.suffix_ids[q], batch.suffix_mask[q]) if m]
            assert prefix + suffix == tok(before + after + _ANSWER_LEAD.get(family, ""),
                                          add_special_tokens=False)["input_ids"]
            alone = tok(before, add_special_tokens=False)["input_ids"]
            if family != "mistral":  # byte-level BPE: no token of these texts spans the slot
                assert prefix == alone, (slot, q)
            elif prefix != alone:  # SentencePiece: see test_sentencepiece_token_across_the_slot
                assert prefix == alone[:-1] and tok.convert_ids_to_tokens(suffix[:1])[0].startswith("▁")


def test_sentencepiece_token_across_the_slot(tokenizers):
    """Documented difference: SentencePiece writes the space before the slot into the next word's
    token ("[INST] " + "Answer" -> "▁An", "swer"); that token goes after the soft prompt, so the
    prefix is one "▁" shorter than "[INST] " tokenised alone, and the whole text's tokens are kept."""
    from jaxalign.prompting.batch import encode_split

    tok = tokenizers("mistral")
    before, after = "<s>[INST] ", "Answer with one digit from 1 to 5. [/INST]"
    (prefix,), (suffix,) = encode_split(tok, [before], [after])
    alone = tok(before, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(alone)[-1] == "▁" and prefix == alone[:-1]
    assert tok.convert_ids_to_tokens(suffix)[0] == "▁An"  # one token spans the slot
    assert prefix + suffix == tok(before + after, add_special_tokens=False)["input_ids"]
    separately = alone + tok(after, add_special_tokens=False)["input_ids"]
    assert len(separately) == len(prefix + suffix) + 1  # apart, the two sides would add a lone "▁"


def test_generation_cuts_the_whole_texts_tokens_at_the_slot(models):
    """Generation places the soft prompt as scoring does: one encoding of the whole chat, cut at
    the slot. With SentencePiece ("[INST] " + "Answer") a separate encoding of each side would add
    a lone "▁" token before the user's first word."""
    from jaxalign.generation.decoding import SoftPrompt, build_rows, slotted_messages
    from jaxalign.prompting.batch import encode_split
    from jaxalign.prompting.layout import SOFT_PROMPT_SENTINEL, render_with_slot

    lm = models("mistral")
    tok = lm.tokenizer
    vectors = _soft_prompt(lm, k=2)
    conversation = [{"role": "user", "content": "Answer with one digit from 1 to 5."}]
    rows = build_rows(lm, [conversation], [SoftPrompt(vectors=vectors)], bucket=1)
    text = render_with_slot(tok, slotted_messages(conversation, "user_start", None), "user_start", None)
    before, after = text.split(SOFT_PROMPT_SENTINEL)
    whole = tok(before + after, add_special_tokens=False)["input_ids"]
    (prefix,), (suffix,) = encode_split(tok, [before], [after])
    assert prefix + suffix == whole and tok.convert_ids_to_tokens(suffix)[0] == "▁An"
    apart = tok(before, add_special_tokens=False)["input_ids"] + tok(after, add_special_tokens=False)["input_ids"]
    assert len(apart) == len(whole) + 1  # encoded apart, the seam would hold a lone "▁"
    assert int(rows.lengths[0]) == len(whole) + 2
    embeds = np.asarray(rows.embeds[0])
    table = np.asarray(lm.embedding_matrix)
    want = np.concatenate([table[prefix], vectors, table[suffix]])
    np.testing.assert_allclose(embeds[-len(want):], want, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ CulturalBench tokens
EXPECTED_BENCH_TOKENS = {
    # family: (A-D ids, True/False ids) of the published vocabularies
    "llama3": ([32, 33, 34, 35], [2575, 4139]),
    "llama3.1": ([32, 33, 34, 35], [2575, 4139]),
    "llama3.2": ([32, 33, 34, 35], [2575, 4139]),
    "qwen2.5": ([32, 33, 34, 35], [2514, 4049]),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_culturalbench_answer_tokens(family, tokenizers):
    tok = tokenizers(family)
    easy = render_judgements(tok, load_culturalbench(BENCH_DATA, set="easy"))
    hard = render_judgements(tok, load_culturalbench(BENCH_DATA, set="hard"))
    # SentencePiece writes a letter after "[/INST]" as one "▁"-word (issue 25, point 9)
    assert easy.answer_tokens == (("▁A", "▁B", "▁C", "▁D") if family == "mistral" else ("A", "B", "C", "D"))
    if family in EXPECTED_BENCH_TOKENS:
        letters, true_false = EXPECTED_BENCH_TOKENS[family]
        assert easy.answer_ids.tolist() == letters
        assert hard.answer_ids.tolist() == true_false and hard.answer_tokens == ("True", "False")
    else:  # SentencePiece: "True"/"False" are "▁", "T", ...; "▁" ends the prompt, "T"/"F" are read
        assert [tok.convert_ids_to_tokens(tok(w, add_special_tokens=False)["input_ids"]) for w in ("True", "False")] \
            != [["▁True"], ["▁False"]]
        assert hard.answer_tokens == ("T", "F")


def test_plain_template_answer_tokens_come_from_the_same_template(tokenizers):
    """A base model in the plain format: "Answer: " ends with a space, and byte-level BPE would
    write " A" as one token; the prompt's tokens are fixed, so the answer is "A" itself."""
    tok = tokenizers("llama3", chat_template=False)
    assert not tok.chat_template
    plain = CHAT_FORMATS["plain"].template
    easy = render_judgements(tok, load_culturalbench(BENCH_DATA, set="easy"), chat_template=plain)
    hard = render_judgements(tok, load_culturalbench(BENCH_DATA, set="hard"), chat_template=plain)
    assert easy.answer_ids.tolist() == [32, 33, 34, 35] and hard.answer_ids.tolist() == [2575, 4139]
    last = [int(t) for t, m in zip(easy.suffix_ids[0], easy.suffix_mask[0]) if m][-1]
    assert tok.convert_ids_to_tokens([last]) == ["Ġ"]  # the prompt ends with the space token 220
    batch = render_items(tok, vsm13(), chat_template=plain)
    assert batch.answer_ids.tolist() == [16, 17, 18, 19, 20]
    with pytest.raises(ValueError, match="chat template"):
        render_items(tok, vsm13())  # a base model needs a format


# ------------------------------------------------------------------------------ align + eval
# One family end to end here: the align and eval code is the same for every family, and what
# differs is checked per family above (scores against transformers, the slot seam, CulturalBench's
# answer tokens). Mistral: the SentencePiece tokenizer, whose answers are read after a "▁". The
# Llama-3.2 checkpoint runs align, score and both evals through the CLI below; Llama-3.2 (the date)
# and a base Llama-3 (plain template) run align further down. Until 2026-12-08 this ran for four
# families (issue 36 point 6).
@pytest.mark.slow
def test_align_and_eval_run(models, tmp_path):
    lm = models("mistral")
    result = jaxalign.align(lm, "Japan", generations=2, population=4, k=2, subspace=4, chunk_size=2,
                            baselines=("naive",), progress=False)
    assert np.isfinite(result.loss) and len(result.history["best_loss"]) == 3
    assert result.config.chat_date is None
    assert result.chat_template == "model"
    bench = evaluate_culturalbench(lm, load_culturalbench(BENCH_DATA, set="easy"), soft_prompt=result.soft_prompt)
    assert bench.n_questions == 6 and bench.answer_tokens == ("▁A", "▁B", "▁C", "▁D")  # issue 25, point 9
    # eval robustness runs through the CLI on the Llama-3.2 checkpoint (test below: byte-level
    # BPE); here, one tokenizer-specific part of it on SentencePiece: the reversed-options scorer
    reversed_ = make_scorer(lm, vsm13(), k=2, reverse_options=True)(result.soft_prompt[None])
    assert np.all(np.isfinite(np.asarray(reversed_.dims)))


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: runs the ``jaxalign`` command in this process (what the console script
    calls), returning its exit code and what it printed: the same command line a user types,
    without a fresh interpreter re-importing jax and transformers for each call."""
    from jaxalign.cli import main

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()  # drop anything printed before
        code = main(list(args))
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run


@pytest.mark.slow
def test_cli_llama32_run_records_one_date_reused_by_score_and_eval(folders, tmp_path, cli):
    folder, out = folders("llama3.2"), tmp_path / "run"
    run = cli("align", "--model", str(folder), "--dtype", "float32", "--country", "Japan", "--out", str(out),
              "--generations", "2", "--population", "4", "-k", "2", "--subspace", "4", "--chunk-size", "2",
              "--baselines", "naive", "--no-progress", "--chat-date", CHAT_DATE)
    assert run.returncode == 0, run.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["chat_date"] == CHAT_DATE and results["config"]["chat_date"] == CHAT_DATE
    assert results["chat_template"] == "model"
    prompt = out / "soft_prompt.safetensors"
    score = cli("score", "--model", str(folder), "--dtype", "float32", "--soft-prompt", str(prompt), "--json")
    assert score.returncode == 0, score.stderr
    scored = json.loads(score.stdout)
    assert scored["chat_date"] == CHAT_DATE  # from the prompt's metadata, not today's clock
    np.testing.assert_allclose(np.asarray(scored["answers"]), np.asarray(results["answers"]), atol=2e-6)
    bench = cli("eval", "culturalbench", "--model", str(folder), "--dtype", "float32", "--soft-prompt",
                str(prompt), "--data", str(BENCH_DATA), "--set", "both", "--json")
    assert bench.returncode == 0, bench.stderr
    sets = json.loads(bench.stdout)["sets"]
    assert sets["hard"]["soft prompt"]["answer_tokens"] == ["True", "False"]
    robust = cli("eval", "robustness", "--model", str(folder), "--dtype", "float32", "--soft-prompt",
                 str(prompt), "--country", "Japan", "--json")
    assert robust.returncode == 0, robust.stderr
    json.loads(robust.stdout)


@pytest.mark.slow
def test_resume_reuses_the_runs_date(models, tmp_path, monkeypatch):
    import jaxalign.prompting.chat_formats as chat_formats

    lm = models("llama3.2")
    common = dict(population=4, k=2, subspace=4, chunk_size=1, baselines=(), progress=False, out=tmp_path)
    monkeypatch.setattr(chat_formats, "today", lambda: "2026-01-05")
    first = jaxalign.align(lm, "Japan", generations=1, **common)
    assert first.config.chat_date == "2026-01-05"
    monkeypatch.setattr(chat_formats, "today", lambda: "2026-02-07")  # another day
    resumed = jaxalign.align(lm, "Japan", generations=2, resume=True, **common)
    assert resumed.resumed_from is not None and resumed.config.chat_date == "2026-01-05"
    assert json.loads((tmp_path / "results.json").read_text())["chat_date"] == "2026-01-05"
    # the saved prompt is scored with its own date, whatever today is
    again = jaxalign.score(lm, soft_prompt=tmp_path / "soft_prompt.safetensors")
    np.testing.assert_allclose(np.asarray(again.probs[0]), resumed.probs, atol=2e-6)
    today = jaxalign.score(lm, soft_prompt=resumed.soft_prompt, slot="user_start")  # today: 2026-02-07
    assert np.abs(np.asarray(today.probs[0]) - resumed.probs).max() > 1e-6  # the date is in the tokens


# ------------------------------------------------------------------------------ base model
@pytest.mark.slow
def test_base_model_with_plain_template(folders, models, tmp_path, cli):
    folder = folders("llama3", chat_template=False)
    lm = models("llama3", chat_template=False)
    refused = cli("score", "--model", str(folder), "--dtype", "float32", "--json")
    assert refused.returncode == 2 and "--chat-template plain" in refused.stderr
    scored = cli("score", "--model", str(folder), "--dtype", "float32", "--chat-template", "plain", "--json")
    assert scored.returncode == 0, scored.stderr
    payload = json.loads(scored.stdout)
    assert payload["chat_template"] == "plain"
    reference = reference_probs(folder, "llama3", np.zeros((0, 64), np.float32), "user_start",
                                chat_template=CHAT_FORMATS["plain"].template)
    np.testing.assert_allclose(np.asarray(payload["answers"]), reference, atol=1e-4)
    bench = cli("eval", "culturalbench", "--model", str(folder), "--dtype", "float32", "--chat-template", "plain",
                "--data", str(BENCH_DATA), "--set", "both", "--json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["sets"]["easy"]["naive"]["answer_tokens"] == ["A", "B", "C", "D"]
    plain_lm = with_chat_format(lm, "plain")
    result = jaxalign.align(plain_lm, "Japan", generations=1, population=4, k=2, subspace=4, chunk_size=1,
                            progress=False, out=tmp_path / "run")
    assert set(result.baselines) == {"naive", "persona", "icl"} and result.chat_template == "plain"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["chat_template"] == "plain"
