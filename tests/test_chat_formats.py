"""Real tokenizers built offline, and jaxalign's chat formats checked token for token.

Each expected sequence is built from the formats' published facts: the special-token ids stated
here, and the ordinary text between them encoded by quicktok (an independent encoder of the same
published BPE ranks), never by the tokenizer under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxalign.prompting.chat_formats import (
    CHAT_FORMATS,
    QWEN25_DEFAULT_SYSTEM,
    ChatTokenizer,
    chat_template_name,
    check_date,
    date_prelude,
    resolve_chat_template,
    template_reads_date,
    with_chat_format,
)

quicktok = pytest.importorskip("quicktok")
transformers = pytest.importorskip("transformers")

SYSTEM = "You are a person from Japan."
USER = "How important is leisure time?\n1. very\n2. not at all\nAnswer with one digit from 1 to 2."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
# Llama-3 ids (published tokenizer): specials, and the role names
BOT, SH, EH, EOT = 128000, 128006, 128007, 128009
LLAMA_SYSTEM, LLAMA_USER, LLAMA_ASSISTANT, LLAMA_NN = 9125, 882, 78191, 271
# Qwen2.5 ids
IM_START, IM_END = 151644, 151645

# texts pasted here from the formats' rules, not produced by the templates
LLAMA3_TEXT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a person from Japan.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHow important is leisure time?\n1. very\n2. not at all\n"
    "Answer with one digit from 1 to 2.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
)
LLAMA32_TEXT_NO_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: 01 Dec 2026\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
QWEN_TEXT_NO_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def llama3_tok(real_tokenizer):
    return real_tokenizer("llama3", chat_template=False)


@pytest.fixture(scope="module")
def qwen_tok(real_tokenizer):
    return real_tokenizer("qwen2.5", chat_template=False)


def _render(tok, name, messages, date=None, **kwargs):
    wrapped = ChatTokenizer(tok, resolve_chat_template(name)[1], name, date)
    return wrapped.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def _ids(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------------------ tokenizers
def test_llama3_tokenizer_matches_published_ids(llama3_tok):
    assert len(llama3_tok) == 128256
    assert llama3_tok.convert_tokens_to_ids("<|begin_of_text|>") == 128000
    assert llama3_tok.convert_tokens_to_ids("<|end_of_text|>") == 128001
    assert llama3_tok.convert_tokens_to_ids("<|eot_id|>") == 128009
    assert llama3_tok.convert_tokens_to_ids("<|reserved_special_token_250|>") == 128255
    assert _ids(llama3_tok, "\n\n") == [271]
    assert _ids(llama3_tok, "3") == [18]
    assert _ids(llama3_tok, " ") == [220]
    assert [_ids(llama3_tok, str(d)) for d in range(1, 6)] == [[16], [17], [18], [19], [20]]
    assert llama3_tok.convert_ids_to_tokens(_ids(llama3_tok, "12345")) == ["123", "45"]  # groups of <= 3 digits
    assert llama3_tok("Hi")["input_ids"][0] == 128000  # BOS added with add_special_tokens=True


def test_qwen25_tokenizer_matches_published_ids(qwen_tok):
    assert qwen_tok.convert_tokens_to_ids("<|endoftext|>") == 151643
    assert qwen_tok.convert_tokens_to_ids("<|im_start|>") == IM_START
    assert qwen_tok.convert_tokens_to_ids("<|im_end|>") == IM_END
    assert len(qwen_tok) == 151665  # 151,643 ranks + 22 added tokens (151643..151664)
    assert _ids(qwen_tok, "12345") == [16, 17, 18, 19, 20]  # Qwen2 splits digits one by one
    assert qwen_tok("Hi")["input_ids"] == _ids(qwen_tok, "Hi")  # no BOS


@pytest.mark.parametrize("name, encoding", [("llama3", "llama3"), ("qwen", "qwen3")])
def test_tokenizers_encode_like_quicktok(name, encoding, llama3_tok, qwen_tok):
    tok = llama3_tok if name == "llama3" else qwen_tok
    enc = quicktok.get_encoding(encoding)
    texts = [
        "Hello, world!  It's 2024.\n\nNext line\t tab",
        "naïve café 東京 über Ελληνικά — “quotes” 1234567 3.14159 x=1;y=22",
        "In choosing an ideal job, how important would it be to you to have sufficient time?\n1. of utmost importance",
        "   leading spaces and trailing   ",
        "e\u0301 (combining accent, NFC matters for Qwen)",
    ]
    for text in texts:
        assert _ids(tok, text) == list(enc.encode(text)), text


def test_sentencepiece_tokenizer_digits_carry_the_word_marker(sentencepiece_tokenizer_dir):
    spm = pytest.importorskip("sentencepiece")
    tok = transformers.AutoTokenizer.from_pretrained(sentencepiece_tokenizer_dir)
    sp = spm.SentencePieceProcessor(model_file=str(sentencepiece_tokenizer_dir / "tokenizer.model"))
    for text in ["Answer: 3", "hello world 12", "True or False"]:
        assert _ids(tok, text) == sp.encode(text), text
    pieces = tok.convert_ids_to_tokens(_ids(tok, "Answer: 3"))
    assert pieces[-2:] == ["▁", "3"]  # digits split, the space becomes its own ▁ piece
    assert tok("Hi")["input_ids"][0] == tok.bos_token_id == 1


# ------------------------------------------------------------------------------ formats
def test_llama3_format_token_for_token(llama3_tok):
    text = _render(llama3_tok, "llama3", MESSAGES)
    assert text == LLAMA3_TEXT
    enc = quicktok.get_encoding("llama3")
    expected = ([BOT, SH, LLAMA_SYSTEM, EH, LLAMA_NN] + enc.encode(SYSTEM) + [EOT, SH, LLAMA_USER, EH, LLAMA_NN]
                + enc.encode(USER) + [EOT, SH, LLAMA_ASSISTANT, EH, LLAMA_NN])
    assert _ids(llama3_tok, text) == expected
    # contents are trimmed, as in the published template
    padded = [{"role": "user", "content": "  Hi \n"}]
    assert _render(llama3_tok, "llama3", padded).endswith("\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llama31_format_writes_the_default_date(llama3_tok):
    text = _render(llama3_tok, "llama3.1", MESSAGES, date="2026-12-01")  # 3.1 does not read the clock
    expected_text = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\nYou are a person from Japan.<|eot_id|><|start_header_id|>user<|end_header_id|>"
        "\n\n" + USER + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert text == expected_text
    enc = quicktok.get_encoding("llama3")
    expected = ([BOT, SH, LLAMA_SYSTEM, EH]
                + enc.encode("\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + SYSTEM)
                + [EOT, SH, LLAMA_USER, EH, LLAMA_NN] + enc.encode(USER) + [EOT, SH, LLAMA_ASSISTANT, EH, LLAMA_NN])
    assert _ids(llama3_tok, text) == expected
    assert not template_reads_date(CHAT_FORMATS["llama3.1"].template)
    # date_string, when a caller passes it, is honoured (as the published template does)
    assert "Today Date: 02 Jan 2025\n" in _render(llama3_tok, "llama3.1", MESSAGES, date_string="02 Jan 2025")


def test_llama32_format_renders_the_bound_date(llama3_tok):
    text = _render(llama3_tok, "llama3.2", [{"role": "user", "content": "Hi"}], date="2026-12-01")
    assert text == LLAMA32_TEXT_NO_SYSTEM
    enc = quicktok.get_encoding("llama3")
    expected = ([BOT, SH, LLAMA_SYSTEM, EH]
                + enc.encode("\n\nCutting Knowledge Date: December 2023\nToday Date: 01 Dec 2026\n\n")
                + [EOT, SH, LLAMA_USER, EH, LLAMA_NN] + enc.encode("Hi") + [EOT, SH, LLAMA_ASSISTANT, EH, LLAMA_NN])
    assert _ids(llama3_tok, text) == expected
    assert template_reads_date(CHAT_FORMATS["llama3.2"].template)
    other = _render(llama3_tok, "llama3.2", [{"role": "user", "content": "Hi"}], date="2025-03-09")
    assert "Today Date: 09 Mar 2025\n" in other


def test_qwen25_format_token_for_token(qwen_tok):
    text = _render(qwen_tok, "qwen2.5", [{"role": "user", "content": "Hi"}])
    assert text == QWEN_TEXT_NO_SYSTEM
    enc = quicktok.get_encoding("qwen3")
    nl = enc.encode("\n")
    expected = ([IM_START] + enc.encode("system\n" + QWEN25_DEFAULT_SYSTEM) + [IM_END] + nl
                + [IM_START] + enc.encode("user\nHi") + [IM_END] + nl + [IM_START] + enc.encode("assistant\n"))
    assert _ids(qwen_tok, text) == expected
    assert expected[:3] == [IM_START, 8948, 198]  # "system", "\n"
    with_system = _render(qwen_tok, "qwen2.5", MESSAGES)
    assert with_system == (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{USER}<|im_end|>\n"
                           "<|im_start|>assistant\n")
    assert QWEN25_DEFAULT_SYSTEM not in with_system


def test_mistral_format(sentencepiece_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(sentencepiece_tokenizer_dir)
    text = _render(tok, "mistral", [{"role": "user", "content": "Hi"}])
    assert text == "<s>[INST] Hi [/INST]"
    two_turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "3"},
                 {"role": "user", "content": "And?"}]
    assert _render(tok, "mistral", two_turns) == "<s>[INST] Hi [/INST]3</s>[INST] And? [/INST]"
    assert _render(tok, "mistral", MESSAGES) == f"<s>[INST] {SYSTEM}\n\n{USER} [/INST]"
    ids = _ids(tok, text)
    assert ids[0] == 1 and ids.count(1) == 1  # one BOS, the special token itself
    with pytest.raises(Exception, match="alternate"):
        _render(tok, "mistral", [{"role": "assistant", "content": "x"}])


def test_plain_format_has_no_markup(llama3_tok):
    assert _render(llama3_tok, "plain", MESSAGES) == f"<|begin_of_text|>{SYSTEM}\n\n{USER}\nAnswer: "


# ------------------------------------------------------------------------------ helpers
def test_resolve_chat_template(tmp_path):
    assert resolve_chat_template("llama3")[1] == CHAT_FORMATS["llama3"].template
    path = tmp_path / "mine.jinja"
    path.write_text("{{ messages[0]['content'] }}")
    assert resolve_chat_template(path) == (str(path), "{{ messages[0]['content'] }}")
    with pytest.raises(ValueError, match="llama3.2"):
        resolve_chat_template("llama4")
    with pytest.raises(FileNotFoundError):
        resolve_chat_template(tmp_path / "missing.jinja")


def test_dates():
    from jinja2 import Environment

    def fixed(fmt):
        return Environment().from_string(date_prelude("2026-12-01") + "{{ strftime_now(f) }}").render(f=fmt)

    assert fixed("%d %b %Y") == "01 Dec 2026"
    assert fixed("%Y-%m-%d (%A) %-d/%-m %% %q") == "2026-12-01 (Tuesday) 1/12 % %q"
    for bad in ("01 Dec 2026", "2026-13-01", "2026-1-1"):
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            check_date(bad)


def test_with_chat_format_binds_template_and_date(llama3_tok):
    from types import SimpleNamespace
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class FakeLM:
        name: str
        tokenizer: object

    lm = FakeLM("m", llama3_tok)
    assert chat_template_name(llama3_tok) is None  # built without a template
    lm32 = with_chat_format(lm, "llama3.2", date="2026-12-01")
    assert lm32.tokenizer.chat_template_name == "llama3.2" and lm32.tokenizer.chat_date == "2026-12-01"
    assert lm.tokenizer is llama3_tok  # the original is untouched
    messages = [{"role": "user", "content": "Hi"}]
    text = lm32.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == LLAMA32_TEXT_NO_SYSTEM
    # a template that does not read the date binds none
    assert with_chat_format(lm, "llama3", date="2026-12-01").tokenizer.chat_date is None
    # re-binding keeps the template
    again = with_chat_format(lm32, date="2025-03-09")
    assert again.tokenizer.chat_template_name == "llama3.2" and again.tokenizer.tokenizer is llama3_tok
    with pytest.raises(ValueError, match="no tokenizer"):
        with_chat_format(SimpleNamespace(name="x", tokenizer=None), "llama3")
    with pytest.raises(AttributeError, match="read-only"):
        lm32.tokenizer.chat_template = "x"


def test_cli_refuses_an_unknown_chat_template_before_loading(capsys, tmp_path):
    from jaxalign.cli import main

    assert main(["score", "--model", str(tmp_path / "no-such-model"), "--chat-template", "llama4"]) == 2
    err = capsys.readouterr().err
    assert "unknown chat template 'llama4'" in err and "qwen2.5" in err  # not "no such model": checked first
    data = Path(__file__).parent / "data" / "culturalbench"
    assert main(["eval", "culturalbench", "--data", str(data), "--chat-template", str(tmp_path / "x.jinja")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["align", "--country", "Japan", "--out", str(tmp_path / "o"), "--chat-date", "1 Dec"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
