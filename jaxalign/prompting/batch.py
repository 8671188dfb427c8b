"""Token batches of survey items with a soft-prompt slot: render, pad, bucket, answer tokens.

Each item's rendered prompt is split at the soft-prompt slot into a **prefix** (tokens before
the slot) and a **suffix** (tokens after it, ending with the open assistant turn). A scorer
builds, for every population member and item, the sequence::

    [prefix_ids (Tp)] [K soft-prompt vectors] [suffix_ids (Ts)]      mask: sequence_mask(K)

The prefix is LEFT-padded and the suffix RIGHT-padded, so the soft vectors sit at the same
positions ``Tp .. Tp+K-1`` in every sequence, and the answer is read at ``last_index(K)`` (the
last real suffix token, the end of the assistant header). Padding tokens are ``pad_id`` and are
masked out; ``position_ids(K)`` gives positions that skip the left padding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxalign.prompting.answers import answer_spelling
from jaxalign.prompting.layout import (
    START_SLOT,
    SOFT_PROMPT_SENTINEL,
    answer_order,
    as_items,
    check_slot,
    default_instruction,
    item_body,
    item_messages,
    render_conversation,
    render_with_slot,
    slot_messages,
)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=np.int32)  # own copy
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class PromptBatch:
    """``Q`` survey items as token ids split at the soft-prompt slot (numpy, read-only).

    Attributes:
        prefix_ids: ``(Q, Tp)`` int32, tokens before the slot, LEFT-padded with ``pad_id``.
        prefix_mask: ``(Q, Tp)`` int32, 1 for real tokens, 0 for padding.
        suffix_ids: ``(Q, Ts)`` int32, tokens after the slot, RIGHT-padded with ``pad_id``.
        suffix_mask: ``(Q, Ts)`` int32, 1 for real tokens, 0 for padding.
        answer_ids: ``(n,)`` int32, token ids of the presented digits "1".."n" (n = 5 for VSM).
        answer_order: ``(n,)`` int32, ``answer_order[j]`` = original code (1..n) of the option
            shown with digit ``j + 1``: ``[1..n]``, or ``[n..1]`` with reversed options.
        prefix_shared: True when every item's prefix is the same tokens (then ``prefix_mask``
            is all ones and the prefix can be computed once for all items).
        item_ids: the ``Q`` item ids, in the order of the ``Q`` axis.
        slot: ``"user_start"``, ``"system"``, ``"after_item"``, ``"user_end"`` or ``"start"``.
        system: the system text rendered (``""`` when ``slot="system"`` created an empty
            system message), or None when there was no system message.
        pad_id: the id used for padding.
        pad_to_multiple: ``Ts`` (and ``Tp`` when the prefix is not shared) are multiples of it.
    """

    prefix_ids: np.ndarray  # (Q, Tp)
    prefix_mask: np.ndarray  # (Q, Tp)
    suffix_ids: np.ndarray  # (Q, Ts)
    suffix_mask: np.ndarray  # (Q, Ts)
    answer_ids: np.ndarray  # (n,)
    answer_order: np.ndarray  # (n,)
    prefix_shared: bool
    item_ids: tuple[str, ...]
    slot: str
    system: str | None
    pad_id: int
    pad_to_multiple: int = 1

    def __post_init__(self) -> None:
        for name in ("prefix_ids", "prefix_mask", "suffix_ids", "suffix_mask", "answer_ids", "answer_order"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))
        q = len(self.item_ids)
        if self.prefix_ids.ndim != 2 or self.prefix_ids.shape[0] != q:
            raise ValueError(f"prefix_ids must be (Q={q}, Tp), got {self.prefix_ids.shape}")
        if self.suffix_ids.ndim != 2 or self.suffix_ids.shape[0] != q:
            raise ValueError(f"suffix_ids must be (Q={q}, Ts), got {self.suffix_ids.shape}")
        if self.prefix_mask.shape != self.prefix_ids.shape:
            raise ValueError("prefix_mask must have the shape of prefix_ids")
        if self.suffix_mask.shape != self.suffix_ids.shape:
            raise ValueError("suffix_mask must have the shape of suffix_ids")
        if self.answer_ids.shape != self.answer_order.shape or self.answer_ids.ndim != 1:
            raise ValueError("answer_ids and answer_order must both be (n,)")
        object.__setattr__(self, "item_ids", tuple(self.item_ids))

    # ------------------------------------------------------------------ sizes
    @property
    def n_items(self) -> int:
        """``Q``."""
        return self.prefix_ids.shape[0]

    @property
    def prefix_len(self) -> int:
        """``Tp``: padded prefix length."""
        return self.prefix_ids.shape[1]

    @property
    def suffix_len(self) -> int:
        """``Ts``: padded suffix length."""
        return self.suffix_ids.shape[1]

    @property
    def prefix_lengths(self) -> np.ndarray:
        """``(Q,)`` int32: real (unpadded) prefix length per item."""
        return self.prefix_mask.sum(axis=1, dtype=np.int32)

    @property
    def suffix_lengths(self) -> np.ndarray:
        """``(Q,)`` int32: real (unpadded) suffix length per item."""
        return self.suffix_mask.sum(axis=1, dtype=np.int32)

    @property
    def n_pad_tokens(self) -> int:
        """Padding tokens in the batch (prefix and suffix; the soft slot is never padded)."""
        return int(self.n_items * (self.prefix_len + self.suffix_len) - self.prefix_mask.sum() - self.suffix_mask.sum())

    def real_lengths(self, n_soft: int) -> np.ndarray:
        """``(Q,)`` int32: real tokens per sequence, ``prefix + n_soft + suffix``."""
        return self.prefix_lengths + np.int32(n_soft) + self.suffix_lengths

    def sequence_length(self, n_soft: int) -> int:
        """``T = Tp + n_soft + Ts``."""
        return self.prefix_len + int(n_soft) + self.suffix_len

    # ------------------------------------------------------------------ per-sequence arrays
    def sequence_mask(self, n_soft: int) -> np.ndarray:
        """``(Q, Tp + n_soft + Ts)`` int32: ``[prefix_mask][ones(n_soft)][suffix_mask]``."""
        ones = np.ones((self.n_items, int(n_soft)), dtype=np.int32)
        return np.concatenate([self.prefix_mask, ones, self.suffix_mask], axis=1)

    def position_ids(self, n_soft: int) -> np.ndarray:
        """``(Q, T)`` int32: position of each token counting real tokens only (0 at the first
        real token; padding gets 0), so left padding does not shift RoPE positions."""
        mask = self.sequence_mask(n_soft)
        return np.where(mask == 1, np.cumsum(mask, axis=1, dtype=np.int32) - 1, 0).astype(np.int32)

    def last_index(self, n_soft: int) -> np.ndarray:
        """``(Q,)`` int32: index (in ``T``) of each sequence's last real token, whose next-token
        logits give the answer: ``Tp + n_soft + suffix_lengths - 1``."""
        return (self.prefix_len + int(n_soft) + self.suffix_lengths - 1).astype(np.int32)

    def token_ids(self, n_soft: int, fill_id: int | None = None) -> np.ndarray:
        """``(Q, T)`` int32: ``[prefix_ids][fill_id x n_soft][suffix_ids]`` (``fill_id``
        defaults to ``pad_id``); the soft positions are placeholders to be replaced by vectors."""
        fill = self.pad_id if fill_id is None else int(fill_id)
        soft = np.full((self.n_items, int(n_soft)), fill, dtype=np.int32)
        return np.concatenate([self.prefix_ids, soft, self.suffix_ids], axis=1)

    # ------------------------------------------------------------------ answers
    @property
    def original_index(self) -> np.ndarray:
        """``(n,)`` int32: ``original_index[c - 1]`` = position (0-based presented digit) of
        original code ``c``; ``probs[..., original_index]`` reorders presented -> original."""
        return np.argsort(self.answer_order).astype(np.int32)

    def to_original_order(self, presented: Any) -> Any:
        """Reorder ``(..., n)`` per-presented-digit values (probabilities, logits) into original
        code order 1..n. Works on numpy and jax arrays (plain indexing)."""
        return presented[..., self.original_index]

    # ------------------------------------------------------------------ subsets
    def take(self, indices: Any) -> PromptBatch:
        """The sub-batch of items ``indices`` (in that order), with padding trimmed to the
        longest item kept (rounded up to ``pad_to_multiple``).

        ``prefix_shared`` is this batch's: a sub-batch of a per-item-prefix layout stays per-item
        even when the items kept happen to have equal prefixes (one item, say)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("take() needs at least one item index")
        if indices.min() < 0 or indices.max() >= self.n_items:
            raise ValueError(f"item indices must lie in [0, {self.n_items}), got {indices.tolist()}")
        tp = int(self.prefix_lengths[indices].max())
        ts = int(self.suffix_lengths[indices].max())
        prefix_ids = self.prefix_ids[indices, self.prefix_len - tp :]
        prefix_mask = self.prefix_mask[indices, self.prefix_len - tp :]
        # shared means "the batch's one prefix, computed once for all items": inherited, never
        # discovered in a subset (a one-item bucket of an item-first layout has one prefix too, but
        # it is that item's own, and a scorer must not read another bucket's cache for it)
        shared = self.prefix_shared
        if not shared:  # keep the batch's rounding; a shared prefix is never padded
            tp = min(_round_up(tp, self.pad_to_multiple), self.prefix_len)
            prefix_ids = self.prefix_ids[indices, self.prefix_len - tp :]
            prefix_mask = self.prefix_mask[indices, self.prefix_len - tp :]
        ts = min(_round_up(ts, self.pad_to_multiple), self.suffix_len)
        return dataclasses.replace(
            self,
            prefix_ids=prefix_ids,
            prefix_mask=prefix_mask,
            suffix_ids=self.suffix_ids[indices, :ts],
            suffix_mask=self.suffix_mask[indices, :ts],
            prefix_shared=shared,
            item_ids=tuple(self.item_ids[i] for i in indices),
        )


def _pad(rows: list[list[int]], length: int, pad_id: int, left: bool) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(rows), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), length), dtype=np.int32)
    for q, row in enumerate(rows):
        if not row:
            continue
        if left:
            ids[q, length - len(row) :] = row
            mask[q, length - len(row) :] = 1
        else:
            ids[q, : len(row)] = row
            mask[q, : len(row)] = 1
    return ids, mask


def _pad_token_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with; set tokenizer.pad_token")


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_split(tokenizer: Any, befores: list[str], afters: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of ``before + after`` for each pair, cut where ``after`` begins: (prefix rows, suffix rows).

    Each whole text is tokenized ONCE (``add_special_tokens=False``) and cut at the token
    boundary of the slot, so ``prefix + suffix`` is exactly the whole text's tokens: no token
    appears at the seam that the unsplit text would not have (a SentencePiece tokenizer encoding
    ``after`` on its own would start it with a word marker ``▁``). A token that spans the slot
    (a merge across it, e.g. SentencePiece's ``"▁Please"`` after ``"[INST] "``, whose ``▁`` is the
    space before the slot) goes to the suffix: the soft prompt then sits just before that token.
    Tokenizers without character offsets (slow, Python ones) encode the two sides separately.
    """
    fulls = [b + a for b, a in zip(befores, afters)]
    try:
        encoded = tokenizer(fulls, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        return _encode(tokenizer, befores), _encode(tokenizer, afters)
    prefixes, suffixes = [], []
    for ids, spans, before in zip(encoded["input_ids"], offsets, befores):
        cut = len(before)
        n_prefix = 0
        while n_prefix < len(ids) and spans[n_prefix][0] < cut and spans[n_prefix][1] <= cut:
            n_prefix += 1  # tokens wholly before the slot
        prefixes.append(list(ids[:n_prefix]))
        suffixes.append(list(ids[n_prefix:]))
    return prefixes, suffixes


def render_items(
    tokenizer: Any,
    instrument_or_items: Any,
    *,
    system: str | None = None,
    slot: str = "user_start",
    reverse_options: bool = False,
    pad_to_multiple: int = 1,
    instruction: str | None = None,
    chat_template: str | None = None,
    option_order: Sequence[int] | None = None,
) -> PromptBatch:
    """Render every item with the chat template and split its tokens at the soft-prompt slot.

    Args:
        tokenizer: a ``transformers`` tokenizer with a chat template (Llama 3 Instruct, or
            ``jaxalign.model.tiny_tokenizer.tiny_tokenizer()``).
        instrument_or_items: an ``Instrument`` or a sequence of items (``.id``, ``.text``,
            ``.options``), ``Q`` in all.
        system: optional system (persona) text, shared by every item.
        slot: where the soft prompt goes: ``"user_start"`` (default), ``"system"``,
            ``"after_item"``, ``"user_end"`` or ``"start"`` (before BOS; see
            :mod:`jaxalign.prompting.layout`).
        reverse_options: present the options last-to-first (numbered 1..n in the new order;
            ``answer_order`` maps them back).
        option_order: present the options in this order instead (the original codes 1..n in
            the order shown, e.g. a cyclic rotation ``(2, 3, 4, 5, 1)``); ``answer_order`` maps back.
        pad_to_multiple: round ``Ts`` (and ``Tp`` when the prefix differs between items) up to
            a multiple of this, to limit the number of distinct shapes a jit sees.
        instruction: the answer instruction line; default ``"Answer with one digit from 1 to 5."``
        chat_template: override (or supply, for a tokenizer without one) the chat template.

    Returns:
        A :class:`PromptBatch` (from :func:`render_prompts`, the answers being the digits
        ``"1".."n"``); decoding ``prefix_ids[q]`` (real tokens) followed by ``suffix_ids[q]``
        (real tokens) gives ``render_text(...)[q]``. Each suffix ends with the answer digits'
        :attr:`AnswerSpelling.lead` (for a SentencePiece model after ``"[/INST]"``, the ``"▁"`` it
        writes before a digit), so the digit is read where the model writes it: the answer
        probabilities are ``P(digit | prompt, "▁")`` over the five digits.
    """
    check_slot(slot)
    items = as_items(instrument_or_items)
    n_options = len(tuple(items[0].options))
    if instruction is None:
        instruction = default_instruction(n_options)
    return render_prompts(
        tokenizer, [item_body(item, reverse_options, option_order) for item in items], [instruction] * len(items),
        [str(k) for k in range(1, n_options + 1)], prompt_ids=[str(item.id) for item in items],
        system=system, slot=slot, pad_to_multiple=pad_to_multiple, chat_template=chat_template,
        order=answer_order(n_options, reverse_options, option_order),
    )


def render_prompts(
    tokenizer: Any,
    bodies: Sequence[str],
    instructions: Sequence[str],
    answers: Sequence[str],
    *,
    prompt_ids: Sequence[str],
    system: str | None = None,
    slot: str = "user_start",
    pad_to_multiple: int = 1,
    chat_template: str | None = None,
    order: np.ndarray | None = None,
    **spelling: Any,
) -> PromptBatch:
    """Renders ``Q`` prompts (a body and its answer instruction each) split at the soft-prompt slot.

    The one rendering path of every scored prompt (survey items: :func:`render_items`;
    CulturalBench judgements): each prompt is laid out by
    :func:`jaxalign.prompting.layout.slot_messages` (``body``, ``instruction``, the slot marker at
    ``slot``), rendered with the chat template, tokenized once and cut at the slot
    (:func:`encode_split`; a token spanning the slot goes to the suffix).

    Args:
        tokenizer, system, slot, chat_template: as for :func:`render_items`.
        bodies, instructions: ``Q`` strings each (the question text, the answer line).
        answers: the ``n`` answer strings; their ids are read at the last position, spelled by
            :func:`jaxalign.prompting.answers.answer_spelling` with ``**spelling`` (its keywords
            ``first_token_ok``, ``own_when_merged``, ``reader``); the spelling's lead is appended
            to every suffix.
        prompt_ids: ``Q`` ids, kept as ``item_ids`` and named in errors.
        pad_to_multiple: ``Ts`` (and ``Tp`` when prefixes differ) rounded up to a multiple of it.
        order: ``(n,)`` the batch's ``answer_order`` (default ``1..n``).

    Returns:
        A :class:`PromptBatch`: prefix ``(Q, Tp)`` left-padded, suffix ``(Q, Ts)`` right-padded,
        ``prefix_shared`` when every prefix is the same tokens (then it is never padded).
    """
    check_slot(slot)
    if not isinstance(pad_to_multiple, int) or pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be a positive int, got {pad_to_multiple!r}")
    if not len(bodies) == len(instructions) == len(prompt_ids) > 0:
        raise ValueError(f"need as many bodies, instructions and prompt ids (at least one), got "
                         f"{len(bodies)}, {len(instructions)}, {len(prompt_ids)}")
    prefixes, suffixes = [], []
    for prompt_id, body, instruction in zip(prompt_ids, bodies, instructions):
        if SOFT_PROMPT_SENTINEL in body or SOFT_PROMPT_SENTINEL in instruction:
            raise ValueError(f"item {prompt_id!r} contains the reserved string {SOFT_PROMPT_SENTINEL!r}")
        messages = slot_messages(body, instruction, system=system, slot=slot)
        try:
            text = render_with_slot(tokenizer, messages, slot, chat_template)
        except ValueError as error:
            raise ValueError(f"item {prompt_id!r}: {error}") from None
        before, after = text.split(SOFT_PROMPT_SENTINEL)
        prefixes.append(before)
        suffixes.append(after)

    pad_id = _pad_token_id(tokenizer)
    prefix_rows, suffix_rows = encode_split(tokenizer, prefixes, suffixes)
    if any(len(row) == 0 for row in suffix_rows):
        raise ValueError("empty suffix: the chat template wrote nothing after the soft-prompt slot")
    spelled = answer_spelling(tokenizer, list(answers), chat_template=chat_template, **spelling)
    suffix_rows = [row + list(spelled.lead) for row in suffix_rows]  # the model's first tokens ("▁")
    shared = all(row == prefix_rows[0] for row in prefix_rows)
    tp = max(len(row) for row in prefix_rows)
    if not shared:
        tp = _round_up(tp, pad_to_multiple)
    ts = _round_up(max(len(row) for row in suffix_rows), pad_to_multiple)
    prefix_ids, prefix_mask = _pad(prefix_rows, tp, pad_id, left=True)
    suffix_ids, suffix_mask = _pad(suffix_rows, ts, pad_id, left=False)
    if system is not None:
        system_used: str | None = str(system).strip()
    else:
        system_used = "" if slot == "system" else None
    return PromptBatch(
        prefix_ids=prefix_ids,
        prefix_mask=prefix_mask,
        suffix_ids=suffix_ids,
        suffix_mask=suffix_mask,
        answer_ids=spelled.ids,
        answer_order=answer_order(len(answers)) if order is None else order,
        prefix_shared=shared,
        item_ids=tuple(str(i) for i in prompt_ids),
        slot=slot,
        system=system_used,
        pad_id=pad_id,
        pad_to_multiple=pad_to_multiple,
    )


def _length_order(batch: PromptBatch) -> np.ndarray:
    """``(Q,)`` the items shortest first (stable): by suffix length when the prefix is shared, else
    by prefix + suffix length."""
    suffix_lengths = batch.suffix_lengths.astype(np.int64)
    key = suffix_lengths if batch.prefix_shared else batch.prefix_lengths.astype(np.int64) + suffix_lengths
    return np.argsort(key, kind="stable")


def chunk_items(batch: PromptBatch, size: int | None) -> list[tuple[np.ndarray, PromptBatch]]:
    """Cuts a batch into chunks of ``size`` items of similar length, all of ``size`` rows.

    Items are sorted by length (as :func:`bucket_items` sorts them) and cut into consecutive
    chunks of ``size`` (``None``: one chunk of all ``Q``); each chunk is trimmed with
    :meth:`PromptBatch.take` (lengths rounded up to ``pad_to_multiple``, so chunks share few
    distinct shapes), and the last one is filled up to ``size`` rows with copies of its first
    item, so every chunk has the same number of rows.

    Returns:
        ``[(item_indices, sub_batch), ...]``, shortest chunk first: ``item_indices (Qc,)`` int64
        are the chunk's real items (indices into ``batch``), the first ``Qc`` rows of
        ``sub_batch`` (``size`` rows, or ``Q`` with ``size=None``); rows after them are filler.
    """
    q = batch.n_items
    if size is None:
        size = q
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"chunk size must be a positive int or None, got {size!r}")
    size = min(int(size), q)
    order = _length_order(batch)
    chunks = []
    for start in range(0, q, size):
        indices = order[start:start + size]
        rows = np.concatenate([indices, np.full(size - len(indices), indices[0])])
        chunks.append((indices, batch.take(rows)))
    return chunks


def bucket_items(batch: PromptBatch, n_buckets: int) -> list[tuple[np.ndarray, PromptBatch]]:
    """Split a batch into ``min(n_buckets, Q)`` groups of items of similar length.

    Items are sorted by real suffix length (by prefix + suffix length when the prefix is not
    shared) and cut into contiguous groups chosen to minimise the total padded size
    (sum over groups of ``group size x (Tp + Ts)``); each group is trimmed with
    :meth:`PromptBatch.take`.

    Returns:
        ``[(item_indices, sub_batch), ...]``, shortest group first; ``item_indices`` is
        ``(Q_b,)`` int64 ascending, indexing the items of ``batch``, and ``sub_batch`` holds
        those items in that order. Every item appears in exactly one group, so per-item
        results go back with ``out[..., item_indices] = result``.
    """
    if not isinstance(n_buckets, (int, np.integer)) or isinstance(n_buckets, bool) or n_buckets < 1:
        raise ValueError(f"n_buckets must be a positive int, got {n_buckets!r}")
    q = batch.n_items
    n = min(int(n_buckets), q)
    prefix_lengths = batch.prefix_lengths.astype(np.int64)
    suffix_lengths = batch.suffix_lengths.astype(np.int64)
    order = _length_order(batch)
    m = batch.pad_to_multiple

    # cost[i, j]: padded size of the group order[i:j]
    cost = np.full((q + 1, q + 1), np.inf)
    for i in range(q):
        max_tp, max_ts = 0, 0
        for j in range(i + 1, q + 1):
            max_tp = max(max_tp, int(prefix_lengths[order[j - 1]]))
            max_ts = max(max_ts, int(suffix_lengths[order[j - 1]]))
            tp = batch.prefix_len if batch.prefix_shared else _round_up(max_tp, m)
            cost[i, j] = (j - i) * (tp + _round_up(max_ts, m))
    # best[b, j]: least cost of the first j sorted items in b groups
    best = np.full((n + 1, q + 1), np.inf)
    cut = np.zeros((n + 1, q + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for b in range(1, n + 1):
        for j in range(b, q + 1):
            totals = best[b - 1, b - 1 : j] + cost[b - 1 : j, j]
            k = int(np.argmin(totals))
            best[b, j] = totals[k]
            cut[b, j] = b - 1 + k
    bounds = [q]
    for b in range(n, 0, -1):
        bounds.append(int(cut[b, bounds[-1]]))
    bounds = bounds[::-1]  # 0 = bounds[0] < ... < bounds[n] = q
    groups = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        indices = np.sort(order[start:stop])
        groups.append((indices, batch.take(indices)))
    return groups


def render_text(
    tokenizer: Any,
    instrument_or_items: Any,
    *,
    system: str | None = None,
    slot: str = "user_start",
    reverse_options: bool = False,
    instruction: str | None = None,
    chat_template: str | None = None,
    marker: str = "",
) -> list[str]:
    """The full rendered prompt text of every item (for debugging and docs).

    ``marker`` is put where the soft prompt goes: ``""`` (default) gives exactly the text whose
    tokens :func:`render_items` returns (prefix then suffix), the answer's lead included (the
    space a SentencePiece model writes after ``"[/INST]"`` before a digit: see
    :func:`jaxalign.prompting.answers.answer_spelling`); something like ``"[soft x8]"`` shows the slot.
    """
    items = as_items(instrument_or_items)
    n_options = len(tuple(items[0].options))
    try:
        lead_text = answer_spelling(tokenizer, [str(k) for k in range(1, n_options + 1)],
                                    chat_template=chat_template).lead_text
    except ValueError:  # digits that are no single token: render_items says so; show the text
        lead_text = ""
    return [
        (marker if slot == START_SLOT else "")
        + render_conversation(
            tokenizer,
            item_messages(
                item,
                system=system,
                slot=slot,
                reverse_options=reverse_options,
                instruction=instruction,
                marker=marker,
            ),
            chat_template,
        )
        + lead_text
        for item in items
    ]
