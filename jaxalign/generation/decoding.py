"""Text generation with the frozen model and soft prompts in their slot: a key/value-cache decoder.

One call decodes a batch of rows, each row one conversation with one soft prompt (or none), so
the plain and the aligned model answer side by side in one batch::

    conversations (N) x soft prompts (S, each (K_s, d) or None)
      -> rendered chat split at the soft-prompt slot [prefix][K_s soft vectors][suffix]
      -> embeddings, LEFT-padded to a length bucket T                      (B = S*N, T, d)
      -> prefill once: keys/values into a fixed-size cache                 (L, B, T + M, Kv, hd)
      -> one token per step in a compiled lax.while_loop (M steps at most)  (B,) per step
      -> tokens until each row's end-of-turn token                         (S, N, M)

``M = max_new_tokens``. The prompt length is padded up to a bucket (a multiple of
:data:`LENGTH_BUCKET`), so the compiled prefill and step loop are reused for every prompt of a
bucket and for every new token (the loop's shapes never change); a new bucket, batch size or
``M`` compiles once more. Decoding can also advance in chunks of steps (:func:`start` then
:func:`advance`), which is how ``jaxalign chat`` streams tokens; chunked and unchunked decoding
give the same tokens (sampling keys are ``fold_in(key(seed), step)``).

Greedy decoding (``temperature=0``) equals transformers' ``generate`` on the same weights with the
soft prompt spliced in through ``inputs_embeds`` (tests/test_generate.py). Sampling divides the
logits by ``temperature``, keeps the smallest set of most likely tokens whose probability reaches
``top_p`` (nucleus), and draws with a key from ``seed``: the same seed gives the same tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.model import LM, llama
from jaxalign.prompting.batch import encode_split
from jaxalign.prompting.layout import (
    SOFT_PROMPT_SENTINEL,
    START_SLOT,
    check_slot,
    render_conversation,
    render_with_slot,
)

Array = jax.Array

LENGTH_BUCKET = 32  # prompt lengths are padded up to a multiple of this (one compile per bucket)
MAX_STOP_IDS = 8    # stop ids travel padded to this many (-1), so another stop set compiles nothing

# End-of-turn / end-of-text tokens of the chat formats jaxalign knows; those in the vocabulary stop.
END_OF_TURN_TOKENS: tuple[str, ...] = (
    "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eom_id|>", "</s>",
)

Conversation = list[dict[str, str]]


# -- inputs ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SoftPrompt:
    """A soft prompt ``vectors (K, d)`` float32, the slot it goes in, its own system text, and
    the chat date it was tuned under (``YYYY-MM-DD``; ``None`` if none was recorded)."""

    vectors: np.ndarray
    slot: str = "user_start"
    system: str | None = None
    name: str = "soft prompt"
    chat_date: str | None = None

    @classmethod
    def from_loaded(cls, loaded: Any, name: str | None = None) -> "SoftPrompt":
        """The :class:`SoftPrompt` of a :class:`jaxalign.saved_prompt.LoadedPrompt`."""
        return cls(vectors=loaded.vectors, slot=loaded.slot, system=loaded.system,
                   name=name or loaded.source or "soft prompt", chat_date=loaded.stored_chat_date)


def _is_steering_file(path: Any) -> bool:
    from jaxalign.interventions.base import kind_of_file

    kind = kind_of_file(path) if os.path.isfile(path) else None
    return kind is not None and kind.name == "steering"


def as_soft_prompt(value: Any, lm: LM, slot: str | None = None) -> Any:
    """``None`` (plain model), a ``(K, d)`` array, a :class:`SoftPrompt` or a ``.safetensors`` path;
    or a steering vector (a :class:`~jaxalign.interventions.steering.SteeringVector` or its file),
    returned as it is once its width and layers fit ``lm``.

    A file is read by :func:`jaxalign.saved_prompt.load_prompt` (its provenance checked against
    ``lm``, warnings through :func:`warnings.warn`); its stored ``slot``, ``system`` and
    ``chat_date`` are used (``slot`` overrides the slot).
    """
    from jaxalign.interventions.steering import (
        SteeringVector,
        check_steering,
        load_steering,
        steering_provenance,
    )
    from jaxalign.saved_prompt import load_prompt
    from jaxalign.softprompt import check_soft_prompt

    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and _is_steering_file(value):
        value = load_steering(value)
        steering_provenance(value, lm)  # another model warned, a plain file noted (warnings.warn)
    if isinstance(value, SteeringVector):  # rendered as the plain chat; added after its blocks
        check_steering(value, lm.config)
        return value
    if isinstance(value, SoftPrompt):
        prompt = value
    elif isinstance(value, (str, os.PathLike)):
        prompt = SoftPrompt.from_loaded(load_prompt(value, lm, slot=slot), name=os.fspath(value))
    else:
        prompt = SoftPrompt(vectors=np.asarray(value, np.float32))
    check_soft_prompt(prompt.vectors, lm.config.hidden_size)
    if slot is not None:
        prompt = dataclasses.replace(prompt, slot=slot)
    check_slot(prompt.slot)
    return dataclasses.replace(prompt, vectors=np.asarray(prompt.vectors, np.float32))


def as_conversation(prompt: str | Sequence[dict[str, str]]) -> Conversation:
    """A user message (str) or a list of ``{"role", "content"}`` messages ending with a user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = [dict(m) for m in prompt]
    if not messages or any(set(m) != {"role", "content"} for m in messages):
        raise ValueError("a conversation is a non-empty list of {'role': ..., 'content': ...} messages")
    if messages[-1]["role"] != "user":
        raise ValueError(f"a conversation to answer must end with a user message, not {messages[-1]['role']!r}")
    if not any(m["role"] == "user" for m in messages):
        raise ValueError("a conversation needs a user message")
    for m in messages:
        if SOFT_PROMPT_SENTINEL in m["content"]:
            raise ValueError(f"a message contains the reserved string {SOFT_PROMPT_SENTINEL!r}")
    return messages


def slotted_messages(conversation: Conversation, slot: str, system: str | None) -> Conversation:
    """The conversation with the soft-prompt marker in its slot.

    ``user_start``: start of the first user message; ``user_end``/``after_item``: end of the first
    user message (a free question has no answer instruction to put it before); ``system``: end
    of the system message (made empty when there is none); ``start``: no marker (it goes before
    the rendered text). ``system`` is used when the conversation has no system message.
    """
    check_slot(slot)
    messages = [dict(m) for m in conversation]
    has_system = messages[0]["role"] == "system"
    if not has_system and (system is not None or slot == "system"):
        messages.insert(0, {"role": "system", "content": "" if system is None else str(system).strip()})
        has_system = True
    if slot == "system":
        messages[0]["content"] = messages[0]["content"] + SOFT_PROMPT_SENTINEL
    elif slot != START_SLOT:
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        content = messages[first_user]["content"].strip()
        messages[first_user]["content"] = (
            SOFT_PROMPT_SENTINEL + content if slot == "user_start" else content + SOFT_PROMPT_SENTINEL)
    return messages


def stop_token_ids(tokenizer: Any) -> np.ndarray:
    """``(n,)`` int32: the end-of-turn tokens of the tokenizer's chat format (and its eos)."""
    ids = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    for value in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if value is not None:
            ids.add(int(value))
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            ids.add(int(vocab[token]))
    if not ids:
        raise ValueError("the tokenizer has no eos or end-of-turn token; pass stop_ids=[...]")
    return np.asarray(sorted(ids), np.int32)


@dataclasses.dataclass(frozen=True)
class Rows:
    """The batch to decode: ``embeds (B, T, d)`` left-padded, ``mask (B, T)`` int32, row lengths,
    and ``texts`` (B,): each row's rendered chat, the soft vectors' place marked by
    :data:`~jaxalign.prompting.layout.SOFT_PROMPT_SENTINEL` (what the model reads, for inspection)."""

    embeds: Array
    mask: Array
    lengths: np.ndarray  # (B,) real tokens of each row
    texts: tuple[str, ...] = ()
    steer: Array | None = None  # (L, B, d): added after each block at every position (steering rows)


def build_rows(lm: LM, conversations: Sequence[Conversation], soft_prompts: Sequence[SoftPrompt | None],
               *, system: str | None = None, chat_template: str | None = None,
               bucket: int = LENGTH_BUCKET) -> Rows:
    """Rows ``s * N + n`` (soft prompt ``s``, conversation ``n``), embedded and left-padded.

    Each row is ``[prefix tokens][K_s soft vectors][suffix tokens]``, split at the slot marker of
    the rendered chat; a row without soft prompt is the rendered chat alone. ``T`` is the longest
    row rounded up to a multiple of ``bucket``.
    """
    tokenizer = lm.tokenizer
    if tokenizer is None:
        raise ValueError(f"model {lm.name!r} has no tokenizer; generation needs one")
    encode = lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    pieces = []  # (prefix ids, soft vectors or None, suffix ids)
    texts = []   # (B,) the rendered chat of each row
    for prompt in soft_prompts:
        for conversation in conversations:
            if prompt is None or not isinstance(prompt, SoftPrompt):  # plain chat (steering rows too)
                messages = conversation
                if system is not None and conversation[0]["role"] != "system":
                    messages = [{"role": "system", "content": str(system).strip()}, *conversation]
                texts.append(render_conversation(tokenizer, messages, chat_template))
                pieces.append(([], None, encode(texts[-1])))
                continue
            own_system = system if system is not None else prompt.system
            messages = slotted_messages(conversation, prompt.slot, own_system)
            text = render_with_slot(tokenizer, messages, prompt.slot, chat_template)
            texts.append(text)
            before, after = text.split(SOFT_PROMPT_SENTINEL)
            # one encoding of the whole text cut at the slot, as the scorer does (SentencePiece
            # would start a separately encoded suffix with a word marker the text does not have)
            (prefix,), (suffix,) = encode_split(tokenizer, [before], [after])
            pieces.append((prefix, prompt.vectors, suffix))
    lengths = np.asarray([len(a) + (0 if v is None else len(v)) + len(b) for a, v, b in pieces], np.int32)
    length = -(-int(lengths.max()) // bucket) * bucket
    d = lm.config.hidden_size
    pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
    ids = np.full((len(pieces), length), pad_id, np.int32)          # soft and padding slots: pad_id
    soft = np.zeros((len(pieces), length, d), np.float32)            # the soft vectors in their slots
    is_soft = np.zeros((len(pieces), length), bool)
    mask = np.zeros((len(pieces), length), np.int32)
    for row, (before, vectors, after) in enumerate(pieces):
        start = length - int(lengths[row])                            # left padding
        k = 0 if vectors is None else len(vectors)
        ids[row, start:start + len(before)] = before
        if k:
            soft[row, start + len(before):start + len(before) + k] = vectors
            is_soft[row, start + len(before):start + len(before) + k] = True
        ids[row, start + len(before) + k:] = after
        mask[row, start:] = 1
    embeds = jnp.where(jnp.asarray(is_soft)[..., None], jnp.asarray(soft, lm.dtype), lm.embed(ids))
    return Rows(embeds=embeds, mask=jnp.asarray(mask), lengths=lengths, texts=tuple(texts),
                steer=steer_table(lm, soft_prompts, len(conversations)))


def steer_table(lm: LM, interventions: Sequence[Any], n_conversations: int) -> Array | None:
    """``(L, B, d)``: each steering row's vectors at their blocks, zeros elsewhere (rows
    ``s * N + n``); ``None`` when no row is steered (the decoder then adds nothing)."""
    steered = [(s, p) for s, p in enumerate(interventions) if hasattr(p, "layers")]
    if not steered:
        return None
    config = lm.config
    table = np.zeros((config.num_hidden_layers, len(interventions) * n_conversations, config.hidden_size),
                     np.float32)
    for s, steering in steered:
        for layer, row in zip(steering.layers, steering.vectors):
            table[layer, s * n_conversations:(s + 1) * n_conversations] = row
    return jnp.asarray(table, lm.dtype)


# -- the compiled decoder -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DecodeState:
    """Where decoding stands (a pytree): after ``step`` tokens of at most ``M`` per row.

    ``token (B,)``: the next token to emit (already chosen); ``done (B,)``: the row has emitted a
    stop token; ``out (B, M)``: emitted tokens (``pad_id`` after a row's stop); ``cache``: keys and
    values ``(L, B, T + M, Kv, hd)`` with mask ``(B, T + M)``.
    """

    step: Array
    token: Array
    done: Array
    out: Array
    cache: llama.KVCache
    key: Array
    temperature: Array
    top_p: Array


jax.tree_util.register_dataclass(
    DecodeState, data_fields=[f.name for f in dataclasses.fields(DecodeState)], meta_fields=[])


def choose_tokens(logits: Array, key: Array, temperature: Array, top_p: Array) -> Array:
    """Next tokens ``(B,)`` from ``logits (B, V)`` float32: argmax when ``temperature == 0``, else
    a draw from the nucleus (the most likely tokens whose probability first reaches ``top_p``)
    of ``softmax(logits / temperature)``."""
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits / jnp.maximum(temperature, 1e-6)
    order = jnp.argsort(-scaled, axis=-1)                                          # (B, V)
    sorted_logits = jnp.take_along_axis(scaled, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs                                   # mass of better tokens
    keep = before < top_p                                                         # the first always kept
    sorted_logits = jnp.where(keep, sorted_logits, -jnp.inf)
    drawn = jax.random.categorical(key, sorted_logits, axis=-1)                   # (B,) index into order
    sampled = jnp.take_along_axis(order, drawn[:, None], axis=-1)[:, 0].astype(jnp.int32)
    return jnp.where(temperature > 0, sampled, greedy)


def _next_logits(model, hidden_last: Array) -> Array:
    return jnp.einsum("bd,vd->bv", hidden_last, model.unembedding, preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _start(graphdef, params, embeds: Array, mask: Array, seed_key: Array, sampling: Array,
           max_new_tokens: int, steer: Array | None = None) -> DecodeState:
    """Prefill ``embeds (B, T, d)`` once and choose the first token."""
    model = nnx.merge(graphdef, params)
    batch = embeds.shape[0]
    # the prompt's cache, and the hidden state of its last real token only (left padding: T-1)
    last, cache = model.prefill(embeds, mask, hidden="last", steer=steer)          # (B, d)
    widen = ((0, 0), (0, 0), (0, max_new_tokens), (0, 0), (0, 0))
    cache = llama.KVCache(keys=jnp.pad(cache.keys, widen), values=jnp.pad(cache.values, widen),
                          mask=jnp.pad(cache.mask, ((0, 0), (0, max_new_tokens))))
    temperature, top_p = sampling[0], sampling[1]
    first = choose_tokens(_next_logits(model, last), jax.random.fold_in(seed_key, 0), temperature, top_p)
    return DecodeState(step=jnp.int32(0), token=first, done=jnp.zeros((batch,), bool),
                       out=jnp.zeros((batch, max_new_tokens), jnp.int32), cache=cache, key=seed_key,
                       temperature=temperature, top_p=top_p)


@functools.partial(jax.jit, static_argnums=(0,))
def _advance(graphdef, params, state: DecodeState, until: Array, stop_ids: Array, pad_id: Array,
             steer: Array | None = None) -> DecodeState:
    """Emit tokens until ``step == until`` (traced: any chunk size, one compile) or all rows stop."""
    model = nnx.merge(graphdef, params)
    batch, max_new = state.out.shape
    prompt_length = state.cache.mask.shape[1] - max_new

    def keep_going(s: DecodeState) -> Array:
        return (s.step < jnp.minimum(until, max_new)) & ~jnp.all(s.done)

    def one_step(s: DecodeState) -> DecodeState:
        out = s.out.at[:, s.step].set(jnp.where(s.done, pad_id, s.token))
        done = s.done | jnp.isin(s.token, stop_ids)
        embeds = model.embed(s.token[:, None])                                     # (B, 1, d)
        hidden, new = model.extend(embeds, jnp.ones((batch, 1), jnp.int32), s.cache, steer=steer)
        where = prompt_length + s.step
        cache = llama.KVCache(
            keys=jax.lax.dynamic_update_slice_in_dim(s.cache.keys, new.keys, where, axis=2),
            values=jax.lax.dynamic_update_slice_in_dim(s.cache.values, new.values, where, axis=2),
            mask=jax.lax.dynamic_update_slice_in_dim(s.cache.mask, new.mask, where, axis=1),
        )
        key = jax.random.fold_in(s.key, s.step + 1)
        token = choose_tokens(_next_logits(model, hidden[:, 0]), key, s.temperature, s.top_p)
        return dataclasses.replace(s, step=s.step + 1, token=token, done=done, out=out, cache=cache)

    return jax.lax.while_loop(keep_going, one_step, state)


def compiled_programs() -> int:
    """How many programs the decoder has compiled so far (prefill + step loop); for tests."""
    return _start._cache_size() + _advance._cache_size()


# -- the public functions -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Generation:
    """What :func:`generate` returns for ``S`` soft prompts (or the plain model) and ``N`` prompts.

    Attributes:
      texts: ``texts[s][n]``, the decoded answer (stop token and special tokens left out).
      tokens: ``(S, N, M)`` int32, the emitted tokens, ``pad_id`` after a row's stop token
        (the stop token itself is kept).
      lengths: ``(S, N)`` int32, tokens emitted per row, the stop token included.
      stopped: ``(S, N)`` bool, the row ended with a stop token (else it hit ``max_new_tokens``).
      prompt_lengths: ``(S, N)`` int32, real prompt tokens (soft vectors included).
    """

    texts: tuple[tuple[str, ...], ...]
    tokens: np.ndarray
    lengths: np.ndarray
    stopped: np.ndarray
    prompt_lengths: np.ndarray


@dataclasses.dataclass(frozen=True)
class Decoder:
    """A prepared batch: :meth:`start`, then :meth:`advance` in chunks (streaming) or all at once."""

    lm: LM
    rows: Rows
    max_new_tokens: int
    stop_ids: np.ndarray
    pad_id: int
    sampling: tuple[float, float]
    seed: int

    def start(self) -> DecodeState:
        """Prefill and choose the first token (no token emitted yet)."""
        return _start(self.lm.graphdef, self.lm.params, self.rows.embeds, self.rows.mask,
                      jax.random.key(self.seed), jnp.asarray(self.sampling, jnp.float32),
                      self.max_new_tokens, self.rows.steer)

    def advance(self, state: DecodeState, steps: int | None = None) -> DecodeState:
        """Emit up to ``steps`` more tokens per row (all remaining ones when None)."""
        until = self.max_new_tokens if steps is None else int(state.step) + int(steps)
        stops = np.full((MAX_STOP_IDS,), -1, np.int32)
        stops[: self.stop_ids.size] = self.stop_ids
        return _advance(self.lm.graphdef, self.lm.params, state, jnp.int32(until),
                        jnp.asarray(stops), jnp.int32(self.pad_id), self.rows.steer)

    def emitted(self, state: DecodeState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``tokens (B, M)``, ``lengths (B,)`` emitted so far (stop included), ``stopped (B,)``."""
        out = np.asarray(state.out)
        step = int(state.step)
        stop = np.isin(out, self.stop_ids) & (np.arange(out.shape[1]) < step)
        stopped = stop.any(axis=1)
        lengths = np.where(stopped, stop.argmax(axis=1) + 1, step).astype(np.int32)
        return out, lengths, stopped

    def text(self, tokens: np.ndarray, length: int) -> str:
        """The decoded text of one row's first ``length`` tokens, stop and special tokens left out."""
        ids = [int(t) for t in tokens[:length] if int(t) not in set(self.stop_ids.tolist())]
        return self.lm.tokenizer.decode(ids, skip_special_tokens=True)


def check_decoding(max_new_tokens: Any, temperature: Any, top_p: Any) -> None:
    """Refuses decoding settings no model can use (``ValueError``, one line): ``max_new_tokens``
    an integer >= 1, ``temperature`` finite and >= 0, ``top_p`` in (0, 1]. The commands call it
    before the weights load."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


def prepare(lm: LM, prompts: Any, soft_prompt: Any = None, *, max_new_tokens: int = 64,
            temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, slot: str | None = None,
            system: str | None = None, stop_ids: Sequence[int] | None = None,
            chat_template: str | None = None, chat_date: str | None = None) -> tuple[Decoder, int, int]:
    """Checks the arguments of :func:`generate` and lays out its batch; returns ``(decoder, S, N)``.

    ``decoder.lm`` is ``lm`` with the batch's chat date bound (:func:`batch_chat_date`)."""
    check_decoding(max_new_tokens, temperature, top_p)
    lm, rows, n_soft, n_prompts = prompt_rows(lm, prompts, soft_prompt, slot=slot, system=system,
                                              chat_template=chat_template, chat_date=chat_date)
    stops = stop_token_ids(lm.tokenizer) if stop_ids is None else np.asarray(list(stop_ids), np.int32)
    if stops.ndim != 1 or not 1 <= stops.size <= MAX_STOP_IDS:
        raise ValueError(f"stop_ids must be a list of 1..{MAX_STOP_IDS} token ids, got {stop_ids!r}")
    pad = getattr(lm.tokenizer, "pad_token_id", None)
    pad = int(stops[0]) if pad is None else int(pad)
    decoder = Decoder(lm=lm, rows=rows, max_new_tokens=int(max_new_tokens), stop_ids=stops, pad_id=pad,
                      sampling=(float(temperature), float(top_p)), seed=int(seed))
    return decoder, n_soft, n_prompts


def prompt_rows(lm: LM, prompts: Any, soft_prompt: Any = None, *, slot: str | None = None,
                system: str | None = None, chat_template: str | None = None,
                chat_date: str | None = None) -> tuple[LM, Rows, int, int]:
    """``prompts`` (``N``) x ``soft_prompt`` (``S``) as :func:`generate` takes them, checked and laid
    out: ``(lm with the batch's chat date bound, rows (S*N), S, N)`` (:func:`build_rows`)."""
    if isinstance(prompts, (str, dict)) or (isinstance(prompts, Sequence) and prompts
                                            and isinstance(prompts[0], dict)):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a string, a conversation, or a non-empty list of them")
    conversations = [as_conversation(p) for p in prompts]
    many = isinstance(soft_prompt, (list, tuple))
    soft = [as_soft_prompt(p, lm, slot) for p in (soft_prompt if many else [soft_prompt])]
    if not soft:
        raise ValueError("soft_prompt=[] gives nothing to run; pass None for the plain model")
    lm = batch_chat_date(lm, soft, chat_date)
    rows = build_rows(lm, conversations, soft, system=system, chat_template=chat_template)
    return lm, rows, len(soft), len(conversations)


def batch_chat_date(lm: LM, soft_prompts: Sequence[SoftPrompt | None], chat_date: str | None = None) -> LM:
    """``lm`` with ONE chat date bound for a whole batch (plain rows too, so a comparison differs
    by the soft prompt alone), when its template reads today's date: ``chat_date`` if given, else
    the date the soft prompts were tuned under (they must agree), else the one bound to ``lm``,
    else today (:func:`jaxalign.prompting.chat_formats.bind_run_date`)."""
    from jaxalign.prompting.chat_formats import bind_run_date, reads_date

    if chat_date is None and lm.tokenizer is not None and reads_date(lm.tokenizer):
        dates = sorted({p.chat_date for p in soft_prompts if isinstance(p, SoftPrompt) and p.chat_date})
        if len(dates) > 1:
            raise ValueError(f"the soft prompts were tuned under different chat dates ({', '.join(dates)}); "
                             "pass chat_date='YYYY-MM-DD' to render them all under one")
        chat_date = dates[0] if dates else None
    return bind_run_date(lm, chat_date)[0]


def generate(lm: LM, prompts: Any, soft_prompt: Any = None, *, max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, slot: str | None = None,
             system: str | None = None, stop_ids: Sequence[int] | None = None,
             chat_template: str | None = None, chat_date: str | None = None) -> Generation:
    """Answers ``prompts`` with the frozen model and soft prompt(s) in their slot of the chat.

    Args:
      lm: the model with its tokenizer (:func:`jaxalign.load_model`).
      prompts: a user message (str), a conversation (list of ``{"role", "content"}`` ending with a
        user turn), or a list of either (``N`` in all).
      soft_prompt: ``None`` (the plain model), a ``(K, d)`` array, a ``soft_prompt.safetensors``
        path (its stored slot, system text and chat date are used, its provenance checked: see
        :func:`jaxalign.saved_prompt.load_prompt`), or a list of these (``S`` in all, e.g.
        ``[None, "soft_prompt.safetensors"]`` for the plain and the aligned model side by side):
        all ``S * N`` rows are decoded in one batch. A steering vector (a
        :class:`~jaxalign.interventions.steering.SteeringVector` or its ``.safetensors`` file) is
        an entry too: its rows are the plain chat with the vector added after its block at every
        position, prompt and generated tokens (llama.cpp's control vector, a transformers hook).
      max_new_tokens: ``M``, tokens per row at most (stop token included).
      temperature: 0 (default) decodes greedily; > 0 samples from ``softmax(logits / temperature)``.
      top_p: nucleus sampling: the smallest set of most likely tokens reaching this probability.
      seed: the sampling key; the same seed gives the same tokens.
      slot: overrides the soft prompts' slot (``"user_start"`` for an array).
      system: system text for every row (else a soft-prompt file's own system text, if any).
      stop_ids: tokens that end a row (default: the chat format's end-of-turn tokens and eos).
      chat_template: overrides the tokenizer's chat template.
      chat_date: the date a chat template that reads today's date renders (``YYYY-MM-DD``, for
        every row); default: the one the soft-prompt files were tuned under, else the one bound
        to ``lm``, else today.

    Returns:
      a :class:`Generation` with ``texts[s][n]`` and the tokens ``(S, N, M)``.
    """
    decoder, n_soft, n_prompts = prepare(
        lm, prompts, soft_prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
        seed=seed, slot=slot, system=system, stop_ids=stop_ids, chat_template=chat_template,
        chat_date=chat_date)
    state = decoder.advance(decoder.start())
    tokens, lengths, stopped = decoder.emitted(state)
    texts = [decoder.text(tokens[row], int(lengths[row])) for row in range(tokens.shape[0])]
    shape = (n_soft, n_prompts)
    return Generation(
        texts=tuple(tuple(texts[s * n_prompts:(s + 1) * n_prompts]) for s in range(n_soft)),
        tokens=tokens.reshape(*shape, -1), lengths=lengths.reshape(shape),
        stopped=stopped.reshape(shape), prompt_lengths=decoder.rows.lengths.reshape(shape),
    )
