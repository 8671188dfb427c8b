"""How the model writes each answer as the first thing in its turn (the tokens a scorer reads).

:func:`answer_spelling` renders the generation prompt once and spells every answer the way a
turn starts (byte-level BPE: the tokens the answer adds after the prompt; SentencePiece after
markup such as ``"[/INST]"``: the word marker ``"▁"``, then the answer's token). The shared leading
markers form :attr:`AnswerSpelling.lead`, which the scorer appends to every prompt; the token
after them is read. :func:`answer_token_ids` is that token for the digits ``"1".."n"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxalign.prompting.layout import render_conversation


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


@dataclasses.dataclass(frozen=True)
class AnswerSpelling:
    """How the model writes each answer as the first thing in its turn: ``lead`` then one token.

    Attributes:
        lead: token ids every answer starts with, written before the token that tells the
            answers apart: ``()`` for byte-level BPE (Llama 3, Qwen) and whenever the prompt
            ends in whitespace; a SentencePiece tokenizer with a word marker (Llama 2,
            Mistral) after a prompt that ends in markup (``"[/INST]"``) writes ``"▁"`` first
            where the answer has no ``"▁"``-word of its own (digits: ``"▁"`` then ``"3"``).
            The scorer appends ``lead`` to the prompt and reads the next token there.
        ids: ``(n,)`` int32, the token read for each answer (after ``lead``).
        lead_text: the text of ``lead`` after the prompt (``" "`` for ``"▁"``; ``""`` without a lead).
    """

    lead: tuple[int, ...]
    ids: np.ndarray  # (n,) int32
    lead_text: str = ""


def _is_word_marker(tokenizer: Any, token_id: int) -> bool:
    """True for a token that is only a word-start marker / space (SentencePiece's ``"▁"``)."""
    piece = tokenizer.convert_ids_to_tokens([int(token_id)])[0]
    return isinstance(piece, str) and piece != "" and set(piece) <= {"\u2581", " "}


def answer_spelling(
    tokenizer: Any, answers: Any, *, chat_template: str | None = None, first_token_ok: bool = False,
    own_when_merged: bool = False, reader: str = "jaxalign reads answers from single-token digits 1..5",
) -> AnswerSpelling:
    """The tokens the model writes first in its turn for each of ``answers`` (strings).

    The generation prompt is rendered (the chat template with one user message and an open
    assistant turn; ``chat_template`` overrides the tokenizer's; no template at all: an empty
    prompt). Each answer is then spelled the way a turn starts:

    - the prompt ends in whitespace (``"\\n\\n"`` of Llama 3, ``"\\n"`` of ChatML, the plain
      format's ``"Answer: "``) or is empty: the tokens the answer adds after the prompt; when it
      merges with the prompt's last token (byte-level BPE's ``" A"``) that is an error, or with
      ``own_when_merged`` the answer's own tokens, since the prompt's tokens are fixed;
    - otherwise (Mistral's and Llama 2's ``"[/INST]"``): the answer's own tokens, as the
      assistant's text is encoded as a segment of its own; SentencePiece then starts it with
      its word marker: ``"▁A"`` for a letter, ``"▁"`` and ``"3"`` for a digit (digits are split
      from the marker), which is how these models write a number after ``[/INST]``.

    Leading word-marker tokens that every answer shares form :attr:`AnswerSpelling.lead`; the
    first token after them must tell the answers apart, and must be the whole rest of each
    answer unless ``first_token_ok`` (then the first token is read). Because readouts normalise
    over the answers, reading after the lead is the two-step read ``P(lead) * P(answer | lead)``
    renormalised: ``P(lead)`` is common to every answer and cancels.

    Raises:
        ValueError: naming the answer that is not a single token there, that encodes as the
            unknown token, or the answers whose tokens clash.
    """
    answers = [str(a) for a in answers]
    if chat_template is not None or getattr(tokenizer, "chat_template", None):
        context = render_conversation(tokenizer, [{"role": "user", "content": "Hi"}], chat_template)
    else:
        context = ""
    turn_is_open = context == "" or context[-1].isspace()
    base = _encode(tokenizer, [context])[0]
    spellings = []
    for answer in answers:
        own = _encode(tokenizer, [answer])[0]
        full = _encode(tokenizer, [context + answer])[0]
        appended = full[len(base):] if full[: len(base)] == base and len(full) > len(base) else None
        if turn_is_open and appended is None and not own_when_merged:
            raise ValueError(
                f"answer {answer!r} is not a single token at the start of the assistant turn (it "
                f"merges with the prompt's last token; on its own it is {tokenizer.convert_ids_to_tokens(own)}); "
                f"{reader}")
        spelling = appended if turn_is_open and appended is not None else own
        if not spelling:
            raise ValueError(f"answer {answer!r} encodes to no token")
        spellings.append(spelling)
    lead: list[int] = []
    while (all(len(sp) > len(lead) + 1 for sp in spellings)
           and len({sp[len(lead)] for sp in spellings}) == 1
           and _is_word_marker(tokenizer, spellings[0][len(lead)])):
        lead.append(spellings[0][len(lead)])
    ids = []
    for answer, spelling in zip(answers, spellings):
        rest = spelling[len(lead):]
        if len(rest) != 1 and not first_token_ok:
            pieces = tokenizer.convert_ids_to_tokens(spelling)
            raise ValueError(
                f"answer {answer!r} is not a single token at the start of the assistant turn "
                f"(it is written {pieces} there, {len(rest)} token(s) after the shared lead "
                f"{tokenizer.convert_ids_to_tokens(lead)}); {reader}"
            )
        unk_id = getattr(tokenizer, "unk_token_id", None)
        if unk_id is not None and rest[0] == unk_id:
            raise ValueError(f"answer {answer!r} encodes as the unknown token {tokenizer.unk_token!r}")
        ids.append(rest[0])
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"answers {answers} start with the same token(s) {tokenizer.convert_ids_to_tokens(ids)} "
            "for this tokenizer; their logits cannot tell them apart"
        )
    lead_text = ""
    if lead:
        before, after = tokenizer.decode(base), tokenizer.decode(base + lead)
        lead_text = after[len(before):] if after.startswith(before) else ""
    return AnswerSpelling(lead=tuple(int(t) for t in lead), ids=np.asarray(ids, dtype=np.int32),
                          lead_text=lead_text)


def answer_token_ids(tokenizer: Any, n: int = 5, *, chat_template: str | None = None) -> np.ndarray:
    """``(n,)`` int32: token ids of the digits "1".."n" as the model emits them first in its turn.

    The ids of :func:`answer_spelling` for the digits: read after its ``lead`` (``"▁"`` for a
    SentencePiece model after ``"[/INST]"``, which :func:`render_items` appends to every
    prompt; nothing for byte-level BPE). Raises ``ValueError`` naming the digit that is not one
    token there.
    """
    if not 1 <= n <= 9:
        raise ValueError(f"n must be in 1..9 (single digits), got {n}")
    return answer_spelling(tokenizer, [str(k) for k in range(1, n + 1)], chat_template=chat_template).ids
