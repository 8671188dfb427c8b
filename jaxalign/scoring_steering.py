"""The batched steering scorer: steering vectors -> answer distributions -> dimensions -> losses.

The steering counterpart of :mod:`jaxalign.scoring`: one jit-compiled pass scores a population of
steering vectors at block ``L`` on every survey item, reading the answers exactly as the soft-prompt
scorer does (the items rendered by :mod:`jaxalign.prompting` with no soft vector, ``k = 0``; the
same answer ids, option order, readouts, instrument indices and L1 loss: the scorer is built on
the plain ``k = 0`` :class:`~jaxalign.scoring.Scorer` and ends in
:func:`~jaxalign.scoring.scores_from_logits`)::

    vectors (P, d)          (or (P, n, d) at n layers)
      -> items [prefix][item text + answer cue], length buckets         (Q, T)
      -> blocks 0..L once per item, shared by every member               (Q, T, d)
      -> + v_p at every position; blocks L+1.. per member                (P*Q, T, d)
         (a shared prefix once per member; the last block at the read position only)
      -> logits of the 5 answer tokens at the last real position         (P, Q, 5)
      -> softmax, codes, readout, indices, loss                           Scores

A member costs ``(n_layers - L - 1) / n_layers`` of a full pass (plus the shared part, once). The
pure function :meth:`SteeringScorer.score_fn` ``(vectors, inputs) -> Scores`` takes every array as a
jit argument (the :class:`~jaxalign.scoring.ScorerInputs` of the plain scorer), so an optimizer can
call it like the soft-prompt scorer's. :meth:`SteeringScorer.reference` runs every (member, item)
sequence whole through every block with the add at ``L`` (the plain path, for tests). A zero vector
gives the plain model's scores (the ``k = 0`` scorer) up to float rounding.

The ``"sample"`` readout draws each member's respondents from a key folded from its own vector
(:func:`jaxalign.scoring.member_keys`), as the soft-prompt scorer does. Where every item starts
with the same tokens (the system turn and user header of the default ``user_start`` split), those
run once per member after block ``L`` and each item's rest attends to their keys/values; an
item-first split (``user_end``) runs every (member, item) row whole. Not yet: meshes (the
population is not sharded).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.interventions.steering import (
    check_layers,
    hidden_after_block,
    steered_hidden,
    steered_last_hidden,
)
from jaxalign.model import LM, llama
from jaxalign.scoring import (
    Scorer,
    ScorerInputs,
    Scores,
    ScoringProgram,
    check_members_per_pass,
    make_scorer,
    scores_from_logits,
)
from jaxalign.scoring_pass import ItemBucket
from jaxalign.survey import Instrument, Target


@dataclasses.dataclass(frozen=True, eq=False)
class SteeringProgram:
    """What a steering pass's program depends on besides its arrays (hashable): the plain scorer's
    :class:`~jaxalign.scoring.ScoringProgram` (model structure, readout, instrument) and the layers."""

    program: ScoringProgram
    layers: tuple[int, ...]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SteeringProgram) and (self.program, self.layers) == (other.program, other.layers)

    def __hash__(self) -> int:
        return hash((self.program, self.layers))


def _sequences(graphdef: Any, params: Any, bucket: ItemBucket) -> tuple[jax.Array, jax.Array]:
    """A bucket's items as whole sequences ``[prefix][suffix]``: embeds ``(Qb, T, d)``, mask ``(Qb, T)``."""
    ids = jnp.concatenate([bucket.prefix_ids, bucket.suffix_ids], axis=1)
    mask = jnp.concatenate([bucket.prefix_mask, bucket.suffix_mask], axis=1)
    return llama.embed_fn(graphdef, params, ids), mask


def steering_logits(graphdef: Any, params: Any, buckets: tuple[ItemBucket, ...], answer_ids: jax.Array,
                    vectors: jax.Array, layers: tuple[int, ...], members_per_pass: int | None = None) -> jax.Array:
    """Answer logits ``(P, Q, n)`` float32 (presented order) of every member on every item, fast path.

    ``vectors``: ``(P, d)`` (one layer) or ``(P, n, d)``; ``layers`` static and sorted. Blocks
    ``0..layers[0]`` run once per bucket for all members (:func:`hidden_after_block`), the rest per
    member (:func:`steered_last_hidden`), ``members_per_pass`` members at a time (must divide P).
    """
    n_pop = vectors.shape[0]
    n_items = sum(b.item_index.shape[0] for b in buckets)
    shared = []
    for bucket in buckets:  # once for the whole population
        embeds, mask = _sequences(graphdef, params, bucket)
        shared.append((hidden_after_block(graphdef, params, embeds, mask, layers[0]), mask))

    def logits_of(members: jax.Array) -> jax.Array:                     # (m, ...) -> (m, Q, n)
        out = jnp.zeros((members.shape[0], n_items, answer_ids.shape[0]), jnp.float32)
        for bucket, (hidden, mask) in zip(buckets, shared):
            prefix_len = bucket.prefix_ids.shape[1] if bucket.prefix_shared else 0  # run once per member
            last = steered_last_hidden(graphdef, params, hidden, mask, members, layers, prefix_len)  # (m, Qb, d)
            logits = llama.token_logits(graphdef, params, last.reshape(-1, last.shape[-1]), answer_ids)
            out = out.at[:, bucket.item_index].set(logits.reshape(members.shape[0], -1, answer_ids.shape[0]))
        return out

    per_pass = n_pop if members_per_pass is None else min(members_per_pass, n_pop)
    if per_pass == n_pop:
        return logits_of(vectors)
    chunks = vectors.reshape(n_pop // per_pass, per_pass, *vectors.shape[1:])
    return jax.lax.map(logits_of, chunks).reshape(n_pop, n_items, -1)


def reference_logits(graphdef: Any, params: Any, buckets: tuple[ItemBucket, ...], answer_ids: jax.Array,
                     vectors: jax.Array, layers: tuple[int, ...]) -> jax.Array:
    """The plain path: every (member, item) sequence whole through every block, the add at each layer
    (:func:`steered_hidden`); answer logits ``(P, Q, n)`` float32 (presented order)."""
    n_pop = vectors.shape[0]
    n_items = sum(b.item_index.shape[0] for b in buckets)
    out = jnp.zeros((n_pop, n_items, answer_ids.shape[0]), jnp.float32)
    for bucket in buckets:
        embeds, mask = _sequences(graphdef, params, bucket)                  # (Qb, T, d), (Qb, T)
        n_seq = mask.shape[0]
        rows = jnp.repeat(vectors, n_seq, axis=0)                            # row p*Qb + q: member p
        hidden = steered_hidden(graphdef, params, jnp.tile(embeds, (n_pop, 1, 1)), jnp.tile(mask, (n_pop, 1)),
                                rows, layers)                                # (P*Qb, T, d)
        logits = llama.select_logits(graphdef, params, hidden, jnp.tile(mask, (n_pop, 1)), answer_ids)
        out = out.at[:, bucket.item_index].set(logits.reshape(n_pop, n_seq, -1))
    return out


def _score(program: SteeringProgram, vectors: jax.Array, inputs: ScorerInputs, *, reference: bool = False) -> Scores:
    plain = program.program
    if reference:
        logits = reference_logits(plain.graphdef, inputs.params, inputs.buckets, inputs.answer_ids, vectors,
                                  program.layers)
    else:
        logits = steering_logits(plain.graphdef, inputs.params, inputs.buckets, inputs.answer_ids, vectors,
                                 program.layers, plain.members_per_pass)
    return scores_from_logits(logits, inputs, vectors, readout=plain.readout, n_respondents=plain.n_respondents,
                              instrument=plain.instrument)


_score_jit = jax.jit(_score, static_argnums=0, static_argnames="reference")


def score_steering_members(program: SteeringProgram, vectors: jax.Array, inputs: ScorerInputs) -> Scores:
    """The pure fast-path pass a run loop traces: ``vectors (P, d)`` (or ``(P, n, d)``) ->
    :class:`Scores`, the steering counterpart of :func:`jaxalign.scoring.score_members`."""
    return _score(program, vectors, inputs)


@dataclasses.dataclass(frozen=True, eq=False)
class SteeringScorer:
    """Scores populations of steering vectors at ``layers`` for one model, instrument and layout.

    Build it with :func:`make_steering_scorer`. ``scorer(vectors)`` returns :class:`~jaxalign.scoring.Scores`;
    the pure function :meth:`score_fn` is what an optimizer calls inside its own jit; ``plain`` is
    the ``k = 0`` soft-prompt scorer whose rendered items and inputs it reuses (the plain model).
    """

    plain: Scorer
    layers: tuple[int, ...]
    members_per_pass: int | None = None

    @property
    def lm(self) -> LM:
        return self.plain.lm

    @property
    def inputs(self) -> ScorerInputs:
        return self.plain.inputs

    @property
    def layer(self) -> int:
        """The first (for one layer: the only) block the vectors are added after."""
        return self.layers[0]

    @property
    def vector_shape(self) -> tuple[int, ...]:
        """One member's shape: ``(d,)``, or ``(n, d)`` at several layers."""
        d = self.lm.config.hidden_size
        return (d,) if len(self.layers) == 1 else (len(self.layers), d)

    @property
    def batch(self) -> Any:
        """The rendered items (the plain scorer's :class:`~jaxalign.prompting.PromptBatch`)."""
        return self.plain.batch

    def program(self, members_per_pass: Any = "own") -> SteeringProgram:
        """The hashable program of a pass, with this scorer's ``members_per_pass`` (``"own"``) or
        the one given (an int dividing P, or ``None``)."""
        per_pass = self.members_per_pass if members_per_pass == "own" else members_per_pass
        return SteeringProgram(program=self.plain.program(per_pass), layers=self.layers)

    def with_inputs(self, inputs: ScorerInputs) -> "SteeringScorer":
        """A copy that scores with ``inputs`` (e.g. another ``"sample"`` key); same program."""
        return dataclasses.replace(self, plain=dataclasses.replace(self.plain, inputs=inputs))

    def score_fn(self, vectors: jax.Array, inputs: ScorerInputs) -> Scores:
        """Pure scoring function: ``vectors (P, d)`` (or ``(P, n, d)``) and the inputs -> :class:`Scores`
        (``probs (P, Q, 5)``, ``item_means (P, Q)``, ``dims (P, D)``, ``loss (P,)``)."""
        return _score(self.program(), vectors, inputs)

    def _checked(self, vectors: Any) -> jax.Array:
        vectors = jnp.asarray(vectors, jnp.float32)
        if vectors.ndim == len(self.vector_shape):
            vectors = vectors[None]
        if tuple(vectors.shape[1:]) != self.vector_shape:
            raise ValueError(f"expected steering vectors of shape (P, {', '.join(map(str, self.vector_shape))}) "
                             f"for {len(self.layers)} layer(s) of a model of hidden size "
                             f"{self.lm.config.hidden_size}, got {tuple(vectors.shape)}")
        check_members_per_pass(self.members_per_pass, vectors.shape[0])
        return vectors

    def __call__(self, vectors: Any) -> Scores:
        """Scores ``vectors (P, d)`` (or one ``(d,)``, returned with P = 1), the fast path."""
        return _score_jit(self.program(), self._checked(vectors), self.inputs)

    def reference(self, vectors: Any) -> Scores:
        """The same scores by the plain path (every sequence whole, the add at the layer)."""
        return _score_jit(self.program(), self._checked(vectors), self.inputs, reference=True)

    def with_target(self, target: Target | np.ndarray | None) -> "SteeringScorer":
        """A copy that computes losses against ``target`` (the compiled pass is reused)."""
        return dataclasses.replace(self, plain=self.plain.with_target(target))


def make_steering_scorer(
    lm: LM,
    instrument: Instrument,
    *,
    layer: int | tuple[int, ...],
    target: Target | np.ndarray | None = None,
    system: str | None = None,
    slot: str = "user_start",
    reverse_options: bool = False,
    readout: str = "expected",
    n_respondents: int = 100,
    seed: int = 0,
    members_per_pass: int | None = None,
    n_buckets: int | None = None,
    constants: np.ndarray | dict[str, float] | None = None,
    option_order: tuple[int, ...] | None = None,
) -> SteeringScorer:
    """Renders the items for ``lm`` (no soft vector) and returns a :class:`SteeringScorer`.

    Args:
      layer: the 0-based block the vector is added after (``0 <= layer < n_layers``), or a tuple
        of distinct blocks for ``(n, d)`` vectors.
      slot: only where the chat is split for rendering; with no soft vector the text is the plain
        prompt (the same split as the ``k = 0`` scorer, so a zero vector scores as it does).
      members_per_pass: score this many members per pass (must divide P); ``None``: all at once.
      The other arguments are :func:`jaxalign.scoring.make_scorer`'s.
    """
    layers = check_layers(layer, lm.config.num_hidden_layers)
    if members_per_pass is not None and (not isinstance(members_per_pass, (int, np.integer))
                                         or isinstance(members_per_pass, bool) or members_per_pass < 1):
        raise ValueError(f"members_per_pass must be an int >= 1 or None, got {members_per_pass!r}")
    plain = make_scorer(lm, instrument, k=0, target=target, system=system, slot=slot,
                        reverse_options=reverse_options, readout=readout, n_respondents=n_respondents,
                        seed=seed, n_buckets=n_buckets, constants=constants, option_order=option_order)
    return SteeringScorer(plain=plain, layers=layers, members_per_pass=members_per_pass)
