"""Prompting: survey items rendered with a chat template around a soft-prompt slot.

- :func:`render_items` -> :class:`PromptBatch`: token ids split at the slot, prefix
  left-padded, suffix right-padded, with the answer-token ids and the option order.
- :func:`render_prompts`: the same for any prompts (a body and an instruction each, given
  answer strings): the one rendering path, which :func:`render_items` and CulturalBench use.
- :func:`bucket_items`: groups of items of similar length, to cut padding;
  :func:`chunk_items`: chunks of a fixed number of items of similar length, to bound memory.
- :func:`answer_token_ids`: the ids of the digits "1".."5" as the model would answer.
- :func:`render_text`: the rendered prompt text of each item (debugging, docs).
- :func:`item_messages`, :data:`SLOTS`, :data:`PLAIN_CHAT_TEMPLATE` (for base models).
- :data:`CHAT_FORMATS` (plain, llama3, llama3.1, llama3.2, qwen2.5, mistral) and
  :func:`with_chat_format`: a model in another chat format, with one fixed date for formats that
  write today's date (:mod:`jaxalign.prompting.chat_formats`).
"""

from jaxalign.prompting.chat_formats import CHAT_FORMATS, resolve_chat_template, with_chat_format
from jaxalign.prompting.answers import answer_token_ids
from jaxalign.prompting.batch import (
    PromptBatch,
    bucket_items,
    chunk_items,
    render_items,
    render_prompts,
    render_text,
)
from jaxalign.prompting.layout import (
    PLAIN_CHAT_TEMPLATE,
    ITEM_FIRST_SLOTS,
    SLOTS,
    SOFT_PROMPT_SENTINEL,
    answer_order,
    default_instruction,
    item_messages,
)

__all__ = [
    "CHAT_FORMATS",
    "resolve_chat_template",
    "with_chat_format",
    "PLAIN_CHAT_TEMPLATE",
    "ITEM_FIRST_SLOTS",
    "SLOTS",
    "SOFT_PROMPT_SENTINEL",
    "PromptBatch",
    "answer_order",
    "answer_token_ids",
    "bucket_items",
    "chunk_items",
    "default_instruction",
    "item_messages",
    "render_items",
    "render_prompts",
    "render_text",
]
