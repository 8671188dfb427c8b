"""Where the answer is read: the tokens a model writes first in its turn (issue 25, point 9).

A SentencePiece model (Llama 2, Mistral) writes a number after ``"[/INST]"`` as ``"▁"`` then the
digit (digits are split, no ``"▁3"`` piece exists), and a letter as the one piece ``"▁A"``.
jaxalign appends the shared ``"▁"`` to every prompt and reads the digit after it (the two-step
read ``P(▁) P(d | ▁)``, renormalised over the digits, where ``P(▁)`` cancels); letters are read
as ``"▁A"``..``"▁D"`` at the end of the prompt. Byte-level BPE (Llama 3, Qwen, the tiny
tokenizer) after a prompt ending in whitespace is unchanged: the bare digit, no lead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxalign.evaluate.culturalbench import load_culturalbench, render_judgements
from jaxalign.prompting import render_items, render_text
from jaxalign.prompting.answers import answer_spelling
from jaxalign.prompting.chat_formats import CHAT_FORMATS
from jaxalign.survey import vsm13

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BENCH_DATA = Path(__file__).resolve().parent / "data" / "culturalbench"


def _real(batch, q: int, which: str) -> list[int]:
    ids, mask = getattr(batch, f"{which}_ids")[q], getattr(batch, f"{which}_mask")[q]
    return [int(t) for t, m in zip(ids, mask) if m]


def _encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_sentencepiece_digits_are_read_after_the_word_marker(real_tokenizer):
    tok = real_tokenizer("mistral")
    pieces = tok.convert_ids_to_tokens(_encode(tok, "<s>[INST] Hi [/INST] 3"))
    assert pieces[-2:] == ["▁", "3"] and "▁3" not in tok.get_vocab()  # " 3" is two pieces
    batch = render_items(tok, vsm13())
    marker = tok.convert_tokens_to_ids("▁")
    assert batch.answer_ids.tolist() == tok.convert_tokens_to_ids(list("12345"))
    texts = render_text(tok, vsm13())
    for q in range(batch.n_items):
        suffix = _real(batch, q, "suffix")
        assert suffix[-1] == marker  # the answer is read after "▁"
        assert texts[q].endswith("[/INST] ")  # the text says so, and its tokens are the batch's
        assert _real(batch, q, "prefix") + suffix == _encode(tok, texts[q])
    spelling = answer_spelling(tok, list("12345"))
    assert spelling.lead == (marker,) and spelling.lead_text == " "


def test_byte_level_and_open_turns_have_no_lead(real_tokenizer):
    from jaxalign.model.tiny_tokenizer import tiny_tokenizer

    cases = [(tiny_tokenizer(), None), (real_tokenizer("llama3"), None), (real_tokenizer("qwen2.5"), None),
             (real_tokenizer("llama3", chat_template=False), CHAT_FORMATS["plain"].template)]
    for tok, template in cases:
        spelling = answer_spelling(tok, list("12345"), chat_template=template)
        assert spelling.lead == () and tok.convert_ids_to_tokens(spelling.ids.tolist()) == list("12345")
    # Llama 2 as a base model in the plain format: "Answer: " already ends with the "▁" piece, so
    # the digit is read right after it, with no second marker
    tok = real_tokenizer("llama2")
    plain = CHAT_FORMATS["plain"].template
    batch = render_items(tok, vsm13(), chat_template=plain)
    assert answer_spelling(tok, list("12345"), chat_template=plain).lead == ()
    assert tok.convert_ids_to_tokens(_real(batch, 0, "suffix")[-1:]) == ["▁"]
    assert batch.answer_ids.tolist() == tok.convert_tokens_to_ids(list("12345"))


def test_culturalbench_letters_as_sentencepiece_writes_them(real_tokenizer):
    tok = real_tokenizer("mistral")
    easy = render_judgements(tok, load_culturalbench(BENCH_DATA, set="easy"))
    hard = render_judgements(tok, load_culturalbench(BENCH_DATA, set="hard"))
    assert [tok.convert_ids_to_tokens(_encode(tok, f"[/INST] {a}"))[-1] for a in "ABCD"] == ["▁A", "▁B", "▁C", "▁D"]
    assert easy.answer_tokens == ("▁A", "▁B", "▁C", "▁D")  # one piece each, read at "[/INST]"
    assert tok.convert_ids_to_tokens(_real(easy, 0, "suffix")[-1:]) != ["▁"]
    # "True"/"False" are "▁", "T", ... here: the shared "▁" is appended, "T"/"F" read after it
    assert hard.answer_tokens == ("T", "F")
    for j in range(hard.n):
        assert tok.convert_ids_to_tokens(_real(hard, j, "suffix")[-1:]) == ["▁"]


def test_mixed_spellings_are_refused(real_tokenizer):
    tok = real_tokenizer("mistral")
    with pytest.raises(ValueError, match="'X' is not a single token at the start of the assistant turn"):
        answer_spelling(tok, ["A", "X"], reader="test")  # "▁A" but "▁", "X"


@pytest.fixture(scope="module")
def mistral_folder(tmp_path_factory):
    """A random 1-layer transformers Llama (weights std 0.2, so answers differ between positions)
    with the test SentencePiece tokenizer and the Mistral chat format."""
    from real_tokenizers import write_tokenizer

    folder = tmp_path_factory.mktemp("sp_llama")
    write_tokenizer(folder, "mistral")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_score_reads_the_digit_where_mistral_writes_it(mistral_folder):
    """jaxalign's answer probabilities equal PyTorch's softmax over the digits at the token after
    ``"[/INST]"`` and ``"▁"``: the text ``"... [/INST] 3"`` tokenised, the digit dropped."""
    import jaxalign
    from jaxalign.prompting import item_messages
    from jaxalign.scoring import make_scorer

    tok = transformers.AutoTokenizer.from_pretrained(mistral_folder)
    model = transformers.LlamaForCausalLM.from_pretrained(mistral_folder).eval()
    lm = jaxalign.load_model(mistral_folder, dtype="float32")
    k = 2
    prompt = np.random.default_rng(0).standard_normal((k, lm.config.hidden_size)).astype(np.float32) * 0.2
    probs = np.asarray(make_scorer(lm, vsm13(), k=k, slot="start")(prompt[None]).probs[0])  # (Q, 5)

    digits = tok.convert_tokens_to_ids(list("12345"))
    at_digit, at_inst = [], []
    for item in vsm13().items:
        text = tok.apply_chat_template(item_messages(item, marker=""), tokenize=False, add_generation_prompt=True)
        assert text.endswith("[/INST]")
        written = _encode(tok, text + " 3")  # how the model writes its answer
        assert tok.convert_ids_to_tokens(written[-2:]) == ["▁", "3"]
        for ids, out in ((written[:-1], at_digit), (_encode(tok, text), at_inst)):
            with torch.no_grad():
                x = torch.cat([torch.tensor(prompt), model.get_input_embeddings()(torch.tensor(ids))])[None]
                logits = model(inputs_embeds=x).logits[0, -1, digits]
            out.append(torch.softmax(logits.double(), -1).numpy())
    at_digit, at_inst = np.stack(at_digit), np.stack(at_inst)
    np.testing.assert_allclose(probs, at_digit, atol=1e-4, rtol=0)
    assert np.abs(at_inst - at_digit).max() > 1e-2  # the read at "[/INST]" is another answer
    assert np.ptp(at_digit, axis=0).max() > 1e-2  # items differ: not a vacuous match
