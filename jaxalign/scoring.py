"""The batched population scorer: soft prompts -> answer distributions -> dimensions -> losses.

One call scores a whole population of soft prompts on every survey item as **one** jit-compiled
batched forward pass over all ``P x Q`` sequences (split into equal chunks only when a memory
budget asks for it; the chunk size changes nothing but peak memory)::

    prompts (P, K, d)
      -> sequences [prefix][K soft vectors][item text + answer cue]      (P*Q, T, d)
      -> frozen model, last real position, logits of the 5 answer tokens (P, Q, 5)
         (the shared logits pass, jaxalign.scoring_pass.answer_logits, which CulturalBench
         also scores through)
      -> softmax, back to answer-code order                               (P, Q, 5)
      -> readout per item (expected / argmax / sample)                    (P, Q)
      -> instrument indices                                               (P, D)
      -> L1 loss to the target, missing dimensions masked                 (P,)

How the pass avoids work (``mode="cached"``; the default ``"auto"`` picks it or ``"full"`` per
layout from measured rules, :func:`resolve_mode`): the tokens before the soft-prompt
slot are the same for every sequence of a layout that shares them, so their keys/values are
computed once (``prefix``), then once per member for its ``K`` soft vectors, and every item's text
runs against that member's cache; with the item-first layout (``slot="after_item"``) each item's
text is computed once for all members and only ``K`` + the answer cue run per sequence. Items are
bucketed by length (``n_buckets``) so short items do not pay for the longest one's padding.
``mode="full"`` runs every ``[prefix][soft][item]`` sequence whole (the plain way; kept as a
reference and for benchmarks). Both give the same numbers up to float rounding.

Only what is read is computed: the cached path asks the model for no hidden states where only
keys/values are used (prefix, soft vectors, item prefixes: ``hidden="none"``) and for the last real
position alone where the answer logits are read (``hidden="last"``), so the last layer skips its
unread queries, attention and MLP (see :mod:`jaxalign.model.llama`; ``trim_last_layer=False``
turns this off, for benchmarks).

Readouts (``readout=``):

- ``"expected"`` (default): the probability-weighted mean answer. The VSM manual's item score
  ``m_k`` is a mean over respondents; the softmax over the five answer tokens is the model's
  distribution of respondents, so the expected answer is that mean for an infinite sample. It is
  deterministic and smooth in the prompt, which gives the optimizer a signal everywhere.
- ``"argmax"``: the most likely answer, one deterministic respondent. Piecewise constant in the
  prompt, so an optimizer sees plateaus.
- ``"sample"``: ``n_respondents`` answers drawn per item from the distribution (seeded), their
  mean. A member's respondents come from the seed and the member's own values
  (:func:`member_keys`), not its position: the same seed and prompt give the same respondents in
  any population, so fitness values are comparable within a run and a target scored beside others
  equals its single run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import parallel
from jaxalign.model import LM
from jaxalign.prompting import PromptBatch, bucket_items, render_items
from jaxalign.scoring_pass import ItemBucket, answer_logits, build_sequences
from jaxalign.survey import Instrument, Target, l1_loss

Readout = Literal["expected", "argmax", "sample"]
READOUTS: tuple[str, ...] = ("expected", "argmax", "sample")
MODES: tuple[str, ...] = ("auto", "cached", "full")
#: What ``mode="auto"`` picks for shared-prefix layouts (see :func:`resolve_mode`).
SHARED_PREFIX_MODE = "cached"


def resolve_mode(mode: str, prefix_shared: bool) -> str:
    """``"auto"`` -> ``"cached"`` or ``"full"``, from measured rules; other modes are returned as is.

    ``prefix_shared``: the layout puts the soft vectors after text shared by every item (the
    default ``user_start``, ``system``); False for the item-first layouts (``after_item``,
    ``user_end``). The rules, from ``benchmarks/throughput.py`` (see benchmarks/RESULTS.md,
    "Which scoring mode"):

    - item-first layouts -> ``"cached"``: each item's text is computed once for all members
      instead of once per member.
    - shared-prefix layouts -> ``"cached"`` as well: only the shared prefix and the K soft tokens
      are saved per item, but the cached pass also runs the last layer at the read position only.
      No backend measured has ``"full"`` faster (the figures: RESULTS.md), so no rule picks it yet.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "cached" if not prefix_shared else SHARED_PREFIX_MODE


def check_members_per_pass(members_per_pass: int | str | None, population: int) -> None:
    """Raises a clear error unless ``members_per_pass`` divides the population size (or is ``"auto"``)."""
    if members_per_pass == "auto":
        return
    if members_per_pass is not None and population % min(members_per_pass, population):
        raise ValueError(
            f"members_per_pass {members_per_pass} must divide the population size {population}"
        )


@dataclasses.dataclass(frozen=True)
class Scores:
    """What one scoring pass returns, for a population of ``P`` prompts and ``Q`` items.

    Attributes:
      probs: ``(P, Q, 5)`` float32, the answer distribution per item, in answer-code order
        (index 0 is answer 1), whatever order the options were presented in.
      item_means: ``(P, Q)`` float32, the readout of each item (1..5).
      dims: ``(P, D)`` float32, the instrument's indices.
      loss: ``(P,)`` float32 L1 loss to the target (NaN when no target was given).
    """

    probs: jax.Array
    item_means: jax.Array
    dims: jax.Array
    loss: jax.Array


@dataclasses.dataclass(frozen=True)
class ScorerInputs:
    """The arrays a scoring pass takes as jit arguments (a pytree).

    Model weights travel as an argument, never as constants closed over by the traced function,
    so XLA does not bake gigabytes of weights into the program.
    """

    params: Any                 # the model's nnx.State
    buckets: tuple              # of ItemBucket, items grouped by length
    answer_ids: jax.Array       # (5,) int32, token ids of the digits as presented
    answer_order: jax.Array     # (5,) int32, presented position -> answer code - 1
    target_values: jax.Array    # (D,) float32, NaN where missing
    constants: jax.Array        # (D,) float32
    sample_key: jax.Array       # PRNG key for the "sample" readout


jax.tree_util.register_dataclass(
    ScorerInputs,
    data_fields=[f.name for f in dataclasses.fields(ScorerInputs)],
    meta_fields=[],
)


@dataclasses.dataclass(frozen=True)
class Scorer:
    """Scores populations of soft prompts of ``k`` vectors for one model, instrument and layout.

    Build it with :func:`make_scorer`. ``scorer(prompts)`` returns :class:`Scores`; the pure
    function :meth:`score_fn` is what an optimizer calls inside its own jit.
    """

    lm: LM
    instrument: Instrument
    batch: PromptBatch
    k: int
    readout: str
    n_respondents: int
    members_per_pass: int | str | None
    mode: str
    inputs: ScorerInputs
    mesh: Any = None            # jax.sharding.Mesh: population over "data", weights over "model"
    trim_last_layer: bool = True  # cached mode: the last layer computes only what is read

    @property
    def n_items(self) -> int:
        return self.batch.suffix_ids.shape[0]

    @property
    def seq_len(self) -> int:
        """Tokens of the longest sequence, unbucketed padding included: ``Tp + K + Ts``."""
        return self.batch.prefix_ids.shape[1] + self.k + self.batch.suffix_ids.shape[1]

    def score_fn(self, prompts: jax.Array, inputs: ScorerInputs) -> Scores:
        """Pure scoring function: ``prompts (P, K, d)`` and :class:`ScorerInputs` -> :class:`Scores`.

        With a mesh, a population that does not divide by the data axis is padded with copies of
        member 0 and the padding's results are dropped (see :mod:`jaxalign.parallel`).
        """
        members_per_pass = self.members_per_pass
        if members_per_pass == "auto":  # decided once per population size, at trace time
            members_per_pass = self.auto_members_per_pass(prompts.shape[0])
        return score_members(self.program(members_per_pass), prompts, inputs)

    def program(self, members_per_pass: int | None) -> ScoringProgram:
        """This scorer's :class:`ScoringProgram` with ``members_per_pass`` resolved."""
        return ScoringProgram(graphdef=self.lm.graphdef, readout=self.readout, n_respondents=self.n_respondents,
                              members_per_pass=members_per_pass, mode=self.mode, instrument=self.instrument,
                              mesh=self.mesh, trim_last_layer=self.trim_last_layer)

    def auto_members_per_pass(self, population: int) -> int:
        """What ``members_per_pass="auto"`` picks for ``population`` members (cached per size).

        See :func:`jaxalign.memory.auto_members_per_pass`: the largest slice whose compiled pass
        fits the device's free memory with a 10% margin; the whole population on a backend that
        reports no memory figures (CPU).
        """
        from jaxalign import memory

        cache = self.__dict__.setdefault("_auto_members", {})
        if population not in cache:
            cache[population] = memory.auto_members_per_pass(self, population)
        return cache[population]

    def __call__(self, prompts: jax.Array | np.ndarray) -> Scores:
        """Scores ``prompts (P, K, d)`` (or ``(K, d)`` for one prompt, returned with P = 1)."""
        prompts = jnp.asarray(prompts, jnp.float32)
        if prompts.ndim == 2:
            prompts = prompts[None]
        if prompts.ndim != 3 or prompts.shape[1] != self.k:
            raise ValueError(
                f"expected prompts of shape (P, {self.k}, d), got {tuple(prompts.shape)}"
            )
        d = self.lm.config.hidden_size
        if prompts.shape[2] != d:
            raise ValueError(
                f"soft prompt width {prompts.shape[2]} does not match the model's hidden size {d}"
            )
        check_members_per_pass(self.members_per_pass, prompts.shape[0])
        if self.mesh is not None:
            prompts = parallel.replicate(np.asarray(prompts), self.mesh)
        scores = _jitted_score(self)(prompts, self.inputs)
        _warn_if_not_finite(self, prompts, scores)
        return scores

    def with_inputs(self, inputs: ScorerInputs) -> "Scorer":
        """A copy that scores with ``inputs`` (e.g. another ``"sample"`` key); same program."""
        return dataclasses.replace(self, inputs=inputs)

    def with_target(self, target: Target | np.ndarray | None) -> "Scorer":
        """A copy that computes losses against ``target`` (a :class:`Target` or ``(D,)`` values)."""
        values = _target_values(target, self.instrument)
        copy = dataclasses.replace(
            self, inputs=dataclasses.replace(self.inputs, target_values=jnp.asarray(values))
        )
        # the target is a jit argument, not part of the configuration: reuse the compiled function
        if "_jit" in self.__dict__:
            object.__setattr__(copy, "_jit", self.__dict__["_jit"])
        return copy


def make_scorer(
    lm: LM,
    instrument: Instrument,
    *,
    k: int,
    target: Target | np.ndarray | None = None,
    system: str | None = None,
    slot: str = "user_start",
    reverse_options: bool = False,
    readout: Readout = "expected",
    n_respondents: int = 100,
    seed: int = 0,
    members_per_pass: int | str | None = None,
    mode: str = "auto",
    n_buckets: int | None = None,
    constants: np.ndarray | dict[str, float] | None = None,
    mesh: Any = None,
    trim_last_layer: bool = True,
    option_order: tuple[int, ...] | None = None,
) -> Scorer:
    """Renders the instrument's items for ``lm`` and returns a :class:`Scorer` for ``k`` soft vectors.

    Args:
      lm: the frozen model with its tokenizer.
      instrument: the survey (e.g. ``jaxalign.vsm13()``).
      k: number of soft-prompt vectors (0 scores the plain prompt, as the baselines do).
      target: losses are computed against it; ``None`` gives NaN losses.
      system: optional system text (persona, in-context description) in the shared prefix.
      slot: where the soft vectors go (see :func:`jaxalign.prompting.render_items`).
      reverse_options: present the options 5..1 (answers are mapped back to codes).
      option_order: present the options in this order instead (original codes in the order
        shown, a permutation of 1..5; see :mod:`jaxalign.survey.presentations`).
      readout: ``"expected"`` (default), ``"argmax"`` or ``"sample"``; see the module docstring.
      n_respondents: respondents per item for the ``"sample"`` readout.
      seed: seed of the ``"sample"`` readout's respondents.
      members_per_pass: score this many population members (each with all ``Q`` items) per
        forward pass, to bound memory; must divide ``P``. ``None`` scores the whole population
        in one pass. ``"auto"``: the largest slice that fits the device's free memory with a 10%
        margin, decided by compiling the pass ahead of time (:mod:`jaxalign.memory`; the whole
        population on a CPU, which reports no free memory). The result does not depend on it
        beyond float rounding.
      mode: ``"auto"`` (default: the faster of the two for this layout, see
        :func:`resolve_mode`; the scorer's ``mode`` holds the choice), ``"cached"`` (shared tokens
        computed once, see the module docstring) or ``"full"`` (every sequence run whole).
      n_buckets: item length buckets (``None``: 4 when the prefix is shared, else 2; 1 turns
        bucketing off).
      constants: the instrument's constants C override (mapping or ``(D,)``).
      mesh: a :class:`jax.sharding.Mesh` from :func:`jaxalign.parallel.make_mesh`: members are
        sharded over its ``"data"`` axis (a population that does not divide is padded, the
        padding's results dropped), weights over ``"model"`` (already sharded by
        ``load_model(..., mesh=mesh)``, else sharded here). ``None``: default device placement.
      trim_last_layer: in cached mode the last layer computes only what is read (keys/values
        where only the cache is used, the last real position where answers are read); ``False``
        runs it whole (same numbers up to float rounding; for benchmarks).
    """
    if k < 0:
        raise ValueError(f"k (soft-prompt length) must be >= 0, got {k}")
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
    if readout == "sample" and n_respondents < 1:
        raise ValueError(f"n_respondents must be >= 1, got {n_respondents}")
    if members_per_pass is not None and members_per_pass != "auto" and (
            not isinstance(members_per_pass, (int, np.integer)) or members_per_pass < 1):
        raise ValueError(f"members_per_pass must be >= 1, None or 'auto', got {members_per_pass!r}")
    if n_buckets is not None and n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1 or None, got {n_buckets}")
    if mesh is not None:
        parallel.check_model_divisible(lm.config, mesh)
        if members_per_pass not in (None, "auto") and members_per_pass % parallel.data_size(mesh):
            raise ValueError(f"members_per_pass {members_per_pass} must be a multiple of the mesh's "
                             f"data axis size {parallel.data_size(mesh)}")
    batch = render_items(lm.tokenizer, instrument, system=system, slot=slot,
                         reverse_options=reverse_options, option_order=option_order)
    mode = resolve_mode(mode, bool(batch.prefix_shared))
    if n_buckets is None:
        n_buckets = 4 if batch.prefix_shared else 2
    buckets = tuple(ItemBucket.of(index, sub) for index, sub in bucket_items(batch, n_buckets))
    inputs = ScorerInputs(
        params=lm.params,
        buckets=buckets,
        answer_ids=jnp.asarray(batch.answer_ids, jnp.int32),
        answer_order=jnp.asarray(np.asarray(batch.answer_order) - 1, jnp.int32),
        target_values=jnp.asarray(_target_values(target, instrument)),
        constants=jnp.asarray(_constants(instrument, constants)),
        sample_key=jax.random.key(seed),
    )
    if mesh is not None:
        inputs = parallel.place_scorer_inputs(inputs, mesh)
    return Scorer(
        lm=lm,
        instrument=instrument,
        batch=batch,
        k=k,
        readout=readout,
        n_respondents=n_respondents,
        members_per_pass=members_per_pass,
        mode=mode,
        inputs=inputs,
        mesh=mesh,
        trim_last_layer=bool(trim_last_layer),
    )


def _warn_if_not_finite(scorer: Scorer, prompts: jax.Array, scores: "Scores") -> None:
    """A ``RuntimeWarning`` naming the layer where activations overflowed, if any answer is not finite.

    Reruns the first failing (member, item) sequence whole, one layer at a time
    (:func:`jaxalign.model.numerics.find_nonfinite_layer`); costs nothing when all is finite.
    """
    bad = ~np.all(np.isfinite(np.asarray(scores.probs)), axis=-1)              # (P, Q)
    if not bad.any():
        return
    import warnings

    from jaxalign.model.numerics import find_nonfinite_layer

    member, item = (int(i) for i in np.argwhere(bad)[0])
    lm, batch = scorer.lm, scorer.batch
    embeds, mask = build_sequences(
        lm.embed(np.asarray(batch.prefix_ids[item:item + 1])), jnp.asarray(batch.prefix_mask[item:item + 1]),
        jnp.asarray(np.asarray(prompts)[member:member + 1]),
        lm.embed(np.asarray(batch.suffix_ids[item:item + 1])), jnp.asarray(batch.suffix_mask[item:item + 1]),
    )  # (1, T, d), (1, T)
    report = find_nonfinite_layer(lm, inputs_embeds=embeds, attention_mask=mask)
    where = (report.message if report is not None else
             "the plain (uncached) pass of that sequence is finite, so the cached pass's rounding "
             "overflowed; try mode='full' or a wider dtype")
    warnings.warn(
        f"{int(bad.sum())} of {bad.size} (member, item) answer distributions are not finite "
        f"(first: member {member}, item {scorer.instrument.item_ids[item]}); {where}",
        RuntimeWarning, stacklevel=3)


def _target_values(target: Target | np.ndarray | None, instrument: Instrument) -> np.ndarray:
    n_dims = len(instrument.dimensions)
    if target is None:
        return np.full((n_dims,), np.nan, np.float32)
    values = np.asarray(getattr(target, "values", target), np.float32)
    if values.shape != (n_dims,):
        raise ValueError(f"target has shape {values.shape}, the instrument has {n_dims} dimensions")
    return values


def _constants(instrument: Instrument, constants: Any) -> np.ndarray:
    if constants is None:
        return np.asarray(instrument.constants, np.float32)
    return np.asarray(instrument.with_constants(constants).constants, np.float32)


def readout_means(
    probs: jax.Array, readout: str, *, key: jax.Array | None = None, n_respondents: int = 100
) -> jax.Array:
    """Item scores ``(..., Q)`` from answer distributions ``probs (..., Q, 5)`` (codes 1..5)."""
    codes = jnp.arange(1, probs.shape[-1] + 1, dtype=jnp.float32)
    if readout == "expected":
        return jnp.sum(probs * codes, axis=-1)
    if readout == "argmax":
        return jnp.argmax(probs, axis=-1).astype(jnp.float32) + 1.0
    if readout == "sample":
        if key is None:
            raise ValueError("the 'sample' readout needs a PRNG key")
        logp = jnp.log(jnp.clip(probs, 1e-30, None))
        draws = jax.random.categorical(key, logp, axis=-1, shape=(n_respondents, *probs.shape[:-1]))
        return jnp.mean(draws.astype(jnp.float32), axis=0) + 1.0
    raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")


def member_keys(key: jax.Array, prompts: jax.Array) -> jax.Array:
    """One PRNG key per member, from ``key`` and the member's own values: ``prompts (P, K, d)`` -> ``(P,)``.

    The ``"sample"`` readout draws a member's respondents with its key, so a prompt gets the same
    respondents wherever it sits in a population (and in whichever population: C targets scored
    together, padding to a mesh, a resumed run), and two different prompts get independent ones.
    The key folds in a 32-bit hash of the prompt's float32 bit patterns, each mixed with its
    position (a murmur3-style finaliser), so equal prompts, and only those in practice, share keys.
    """
    n_pop = prompts.shape[0]
    bits = jax.lax.bitcast_convert_type(prompts.astype(jnp.float32), jnp.uint32).reshape(n_pop, -1)  # (P, K*d)
    position = jnp.arange(bits.shape[1], dtype=jnp.uint32)
    x = bits ^ (position * jnp.uint32(0x9E3779B9))
    x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    x = x ^ (x >> 16)
    digest = jnp.sum(x, axis=1, dtype=jnp.uint32)                              # (P,), wraps mod 2**32
    return jax.vmap(lambda d: jax.random.fold_in(key, d))(digest)


def _score(
    graphdef: Any,
    inputs: ScorerInputs,
    prompts: jax.Array,  # (P, K, d)
    *,
    readout: str,
    n_respondents: int,
    members_per_pass: int | None,
    mode: str,
    instrument: Instrument,
    mesh: Any = None,
    trim_last_layer: bool = True,
) -> Scores:
    logits = answer_logits(graphdef, inputs.params, inputs.buckets, inputs.answer_ids, prompts, mode=mode,
                           mesh=mesh, members_per_pass=members_per_pass,
                           trim_last_layer=trim_last_layer)  # (P, Q, 5)
    return scores_from_logits(logits, inputs, prompts, readout=readout, n_respondents=n_respondents,
                              instrument=instrument)


def scores_from_logits(logits: jax.Array, inputs: ScorerInputs, members: jax.Array, *, readout: str,
                       n_respondents: int, instrument: Instrument) -> Scores:
    """Answer logits ``(P, Q, 5)`` in presented order -> :class:`Scores` (softmax, answer codes,
    readout, indices, loss). ``members (P, ...)``: each member's parameters, whose values seed its
    respondents for the ``"sample"`` readout (:func:`member_keys`). Every intervention's scorer
    ends here (the steering scorer too: :mod:`jaxalign.scoring_steering`)."""
    probs_presented = jax.nn.softmax(logits, axis=-1)
    # presented position j shows answer code answer_order[j] + 1: scatter back to code order
    probs = jnp.zeros_like(probs_presented).at[..., inputs.answer_order].set(probs_presented)
    if readout == "sample":  # each member's respondents from its own key: position-independent
        keys = member_keys(inputs.sample_key, members)                          # (P,) keys
        item_means = jax.vmap(lambda p, key: readout_means(p, readout, key=key, n_respondents=n_respondents))(
            probs, keys)                                                        # (P, Q)
    else:
        item_means = readout_means(probs, readout, n_respondents=n_respondents)
    dims = instrument.indices(item_means, inputs.constants)  # (P, D)
    loss = l1_loss(dims, inputs.target_values)  # (P,)
    return Scores(probs=probs, item_means=item_means, dims=dims, loss=loss)


jax.tree_util.register_dataclass(
    Scores, data_fields=["probs", "item_means", "dims", "loss"], meta_fields=[]
)


@dataclasses.dataclass(frozen=True, eq=False)
class ScoringProgram:
    """What a scoring pass's program depends on besides its array arguments (hashable).

    Scorers with equal programs share one jitted function in this process, whose cache then keys
    on the arguments' shapes: scoring the same layout again (a second ``align`` call, a resumed
    run, the baselines of another run) reuses the compiled pass instead of tracing and lowering it
    anew. Equality covers every value the trace reads: the model's structure (``graphdef``; the
    weights are an argument), the readout settings, the scoring mode, the mesh and the
    instrument's index formula (its weights and constants, which are baked into the program).
    """

    graphdef: Any
    readout: str
    n_respondents: int
    members_per_pass: int | None
    mode: str
    instrument: Instrument
    mesh: Any = None
    trim_last_layer: bool = True

    def _key(self) -> tuple:
        # built once: jit hashes its static argument on every call (a hot path for scoring loops)
        key = self.__dict__.get("_cached_key")
        if key is None:
            weights = np.asarray(self.instrument.weights, np.float64)
            constants = np.asarray(self.instrument.constants, np.float64)
            key = (self.graphdef, self.readout, self.n_respondents, self.members_per_pass, self.mode,
                   self.mesh, self.trim_last_layer, tuple(self.instrument.dimensions), self.instrument.n_items,
                   weights.shape, weights.tobytes(), constants.tobytes())
            object.__setattr__(self, "_cached_key", key)
        return key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScoringProgram) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def score_members(program: ScoringProgram, prompts: jax.Array, inputs: ScorerInputs) -> Scores:
    """``prompts (P, K, d)`` -> :class:`Scores` (padding to the mesh's data axis and back)."""
    n_pop = prompts.shape[0]
    if program.mesh is not None:
        prompts = parallel.constrain_population(parallel.pad_population(prompts, program.mesh), program.mesh)
    scores = _score(
        program.graphdef,
        inputs,
        prompts,
        readout=program.readout,
        n_respondents=program.n_respondents,
        members_per_pass=program.members_per_pass,
        mode=program.mode,
        instrument=program.instrument,
        mesh=program.mesh,
        trim_last_layer=program.trim_last_layer,
    )
    if prompts.shape[0] != n_pop:
        scores = jax.tree.map(lambda x: x[:n_pop], scores)
    return scores


_score_program_jit = jax.jit(score_members, static_argnums=0)


def _jitted_score(scorer: Scorer):
    """The compiled scoring function of ``scorer``: shared by every scorer of an equal
    :class:`ScoringProgram`; ``members_per_pass="auto"`` (decided from this scorer's own memory
    estimate at trace time) gets a function of its own, cached on the scorer object."""
    if scorer.members_per_pass != "auto":
        program = scorer.program(scorer.members_per_pass)
        return lambda prompts, inputs: _score_program_jit(program, prompts, inputs)
    cached = scorer.__dict__.get("_jit")
    if cached is None:
        cached = jax.jit(scorer.score_fn)
        object.__setattr__(scorer, "_jit", cached)
    return cached
