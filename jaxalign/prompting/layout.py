"""How one survey item becomes a chat conversation with a soft-prompt slot, rendered as text.

Every item is shown to the model as one user message::

    {question}
    1. {label of the first presented option}
    ...
    5. {label of the last presented option}
    Answer with one digit from 1 to 5.

and rendered with the tokenizer's own chat template (``add_generation_prompt=True``), so the
text ends where the model's answer begins. Where the model writes a word marker before the
digit (a SentencePiece model after ``"[/INST]"`` writes ``"▁"`` then ``"3"``), that marker is
appended too and the digit is read after it (:func:`jaxalign.prompting.answers.answer_spelling`). The soft prompt's ``K`` vectors are not text: the
slot where they go is marked by :data:`SOFT_PROMPT_SENTINEL` while rendering, and the rendered
string is split there (see :func:`jaxalign.prompting.render_items`). Slot positions:

- ``"user_start"`` (default): first thing in the user message, before the question. Everything
  before the slot (BOS, optional system turn, user header) is the same for every item.
- ``"system"``: end of the system message (an empty system message is created when
  ``system`` is None). Also a shared prefix.
- ``"after_item"``: between the options and the answer instruction, so the question and its
  options come before the soft prompt ("item first"); the prefix then differs per item.
- ``"user_end"``: last thing in the user message, after the answer instruction, so only the
  assistant turn's start (the answer cue) follows the soft prompt: the item-first layout
  ``[prefix][item text, options, instruction][K soft vectors][answer cue]`` with the least
  per-member work (the fastest layout when the item text is computed once per item).
- ``"start"``: before the whole sequence, BOS included: ``[K soft vectors][BOS, turns...]``.
  This is where PEFT prompt tuning puts its virtual tokens, so a prompt tuned here exports as a
  PEFT adapter (``jaxalign export --format peft``). The prefix is empty (shared by every item).

With ``reverse_options=True`` the labels are listed last-to-first and numbered 1..5 in that
new order, so the digit shown next to a label changes: presented digit ``j + 1`` stands for the
original code ``answer_order(5, True)[j] == 5 - j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

SLOTS: tuple[str, ...] = ("user_start", "system", "after_item", "user_end", "start")

# The slot before the whole rendered sequence (BOS included): where PEFT prompt tuning puts its
# virtual tokens, so only prompts tuned there export as a PEFT adapter.
START_SLOT = "start"

# Slots after the item text: the prefix differs per item, the soft prompt comes after it.
ITEM_FIRST_SLOTS: tuple[str, ...] = ("after_item", "user_end")

# Marks the soft-prompt slot in the rendered text; never appears in the model's input.
SOFT_PROMPT_SENTINEL = "<<jaxalign:soft-prompt-slot>>"

# A plain template for tokenizers without one (base models): "{bos}{system}\n\n{user}\nAnswer: ".
# The digit a model writes after "Answer: " is its answer (Llama-3 tokenizers split " 1" into
# " " and "1", so the trailing space keeps the digit a token of its own).
PLAIN_CHAT_TEMPLATE = (
    "{{- bos_token if bos_token else '' }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- message['content'] | trim + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' %}{{- message['content'] | trim + '\\n' }}"
    "{%- else %}{{- 'Answer: ' + message['content'] | trim + '\\n\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'Answer: ' }}{%- endif %}"
)


class ItemLike(Protocol):
    """What rendering needs of an item (``jaxalign.survey.Item`` has it)."""

    id: str
    text: str
    options: Sequence[str]


def default_instruction(n_options: int = 5) -> str:
    """The line after the options that asks for the answer, e.g. ``"Answer with one digit from 1 to 5."``"""
    return f"Answer with one digit from 1 to {n_options}."


def as_items(instrument_or_items: Any) -> tuple[ItemLike, ...]:
    """The items of an ``Instrument`` (anything with ``.items``) or of a sequence of items.

    Checks that there is at least one item, that each has ``.id``, ``.text`` and
    ``.options``, that all have the same number of options (2..9: one digit each), and that
    no text contains :data:`SOFT_PROMPT_SENTINEL`.
    """
    items = getattr(instrument_or_items, "items", instrument_or_items)
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValueError(
            "expected an Instrument (with .items) or a sequence of items with .id, .text and "
            f".options, got {type(instrument_or_items).__name__}"
        )
    items = tuple(items)
    if not items:
        raise ValueError("no items to render")
    n_options = None
    for item in items:
        for field in ("id", "text", "options"):
            if not hasattr(item, field):
                raise ValueError(f"item {item!r} has no .{field}; items need .id, .text, .options")
        options = tuple(item.options)
        if n_options is None:
            n_options = len(options)
        if len(options) != n_options:
            raise ValueError(
                f"item {item.id!r} has {len(options)} options, the first item has {n_options}; "
                "all items must have the same number of options"
            )
        for text in (item.text, *options):
            if SOFT_PROMPT_SENTINEL in str(text):
                raise ValueError(f"item {item.id!r} contains the reserved string {SOFT_PROMPT_SENTINEL!r}")
    if not 2 <= n_options <= 9:
        raise ValueError(f"items need 2..9 options (one answer digit each), got {n_options}")
    return items


def answer_order(n_options: int = 5, reverse_options: bool = False,
                 option_order: Sequence[int] | None = None) -> np.ndarray:
    """``(n,)`` int32: ``order[j]`` is the original code (1..n) of the option shown with digit ``j + 1``.

    ``option_order`` gives that order directly (a permutation of ``1..n``, e.g. ``(3, 4, 5, 1, 2)``
    for a cyclic rotation); otherwise it is ``1..n``, reversed with ``reverse_options``.
    """
    if option_order is not None:
        order = np.asarray(tuple(option_order), np.int32)
        if reverse_options:
            raise ValueError("give either reverse_options or option_order, not both")
        if sorted(order.tolist()) != list(range(1, n_options + 1)):
            raise ValueError(f"option_order {tuple(order.tolist())} is not a permutation of 1..{n_options}")
        return order
    order = np.arange(1, n_options + 1, dtype=np.int32)
    return order[::-1].copy() if reverse_options else order


def check_slot(slot: str) -> str:
    """Return ``slot`` if it is one of :data:`SLOTS`, else raise ``ValueError``."""
    if slot not in SLOTS:
        raise ValueError(f"slot must be one of {SLOTS}, got {slot!r}")
    return slot


def item_messages(
    item: ItemLike,
    *,
    system: str | None = None,
    slot: str = "user_start",
    reverse_options: bool = False,
    instruction: str | None = None,
    marker: str = SOFT_PROMPT_SENTINEL,
) -> list[dict[str, str]]:
    """The chat messages for one item, with ``marker`` where the soft prompt goes.

    Returns ``[{"role": "system", ...}]`` (when ``system`` is given, or ``slot == "system"``)
    followed by one ``{"role": "user", ...}`` message; see the module docstring for the layout.
    ``system`` is stripped of surrounding whitespace (chat templates trim it anyway).
    """
    check_slot(slot)
    if instruction is None:
        instruction = default_instruction(len(tuple(item.options)))
    return slot_messages(item_body(item, reverse_options), instruction, system=system, slot=slot,
                         marker=marker)


def item_body(item: ItemLike, reverse_options: bool = False, option_order: Sequence[int] | None = None) -> str:
    """``"{question}\n1. {label}\n...\nn. {label}\n"``: the item's text and its numbered options
    (last-to-first with ``reverse_options``; in ``option_order``, the original codes 1..n in the
    order shown, when given), before the answer instruction."""
    options = [str(label).strip() for label in item.options]
    if reverse_options or option_order is not None:
        order = answer_order(len(options), reverse_options, option_order)
        options = [options[code - 1] for code in order]
    option_lines = "\n".join(f"{k}. {label}" for k, label in enumerate(options, start=1))
    return f"{str(item.text).strip()}\n{option_lines}\n"


def slot_messages(
    body: str, instruction: str, *, system: str | None, slot: str, marker: str = SOFT_PROMPT_SENTINEL
) -> list[dict[str, str]]:
    """Chat messages for a question ``body`` and its answer ``instruction``, ``marker`` at ``slot``.

    ``"user_start"``: the user turn is ``marker + body + instruction``; ``"after_item"``:
    ``body + marker + instruction``; ``"user_end"``: ``body + instruction + marker``; ``"system"``: the marker ends the system turn (an empty one
    is made when ``system`` is None); ``"start"``: no marker in any message (it goes before the
    rendered text: see :func:`render_with_slot`). Any other prompt (e.g. a benchmark question) uses the same
    layout as the survey items through this function.
    """
    check_slot(slot)
    if slot == "user_start":
        user = f"{marker}{body}{instruction}"
    elif slot == "after_item":
        user = f"{body}{marker}{instruction}"
    elif slot == "user_end":
        user = f"{body}{instruction}{marker}"
    else:  # "system" and "start"
        user = f"{body}{instruction}"
    messages = []
    if system is not None or slot == "system":
        system_text = "" if system is None else str(system).strip()
        if SOFT_PROMPT_SENTINEL in system_text:
            raise ValueError(f"system text contains the reserved string {SOFT_PROMPT_SENTINEL!r}")
        if slot == "system":
            system_text = f"{system_text}{marker}"
        messages.append({"role": "system", "content": system_text})
    messages.append({"role": "user", "content": user})
    return messages


def render_conversation(
    tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None = None
) -> str:
    """``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``.

    ``chat_template`` overrides the tokenizer's own. Raises ``ValueError`` when there is no
    template at all (a base model's tokenizer): pass ``chat_template=PLAIN_CHAT_TEMPLATE``
    or your own.
    """
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template (a base model?); choose a chat format: "
            "--chat-template plain (no chat markup) or a format name or Jinja file on the command "
            "line, jaxalign.prompting.with_chat_format(lm, 'plain') in Python"
        )
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=chat_template
    )
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def render_with_slot(
    tokenizer: Any,
    messages: list[dict[str, str]],
    slot: str,
    chat_template: str | None = None,
    marker: str = SOFT_PROMPT_SENTINEL,
) -> str:
    """The rendered conversation with ``marker`` exactly once, where the soft prompt goes.

    ``messages`` carry the marker in their slot (:func:`slot_messages`), except for the
    ``"start"`` slot, whose marker is put before the rendered text (BOS included). Raises
    ``ValueError`` when the template did not render the marker exactly once.
    """
    check_slot(slot)
    text = render_conversation(tokenizer, messages, chat_template)
    if slot == START_SLOT:
        text = marker + text
    count = text.count(marker)
    if count != 1:
        role = "system" if slot == "system" else "user"
        raise ValueError(
            f"the chat template rendered the soft-prompt slot {count} times (expected once); it "
            f"does not render the {role} message content verbatim. Try another slot than "
            f"{slot!r} or another chat_template."
        )
    return text
