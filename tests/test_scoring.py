"""The batched population scorer against an independent one-prompt, one-item reference.

The reference below builds every sequence itself: the chat messages are written out by hand
(the layout documented in :mod:`jaxalign.prompting.layout`), rendered with the tokenizer's chat
template, split at a marker of the test's own, tokenized without padding, the soft vectors
spliced in as embeddings, and run through ``lm.logits`` (full vocabulary, no mask, batch of
one). The six VSM 2013 indices are then computed from the manual's formulas written out here.
So batching, padding, chunking, the answer-token lookup and the option-order mapping of the
scorer are all checked against code that shares none of them.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxalign
from jaxalign.scoring import _score_program_jit, make_scorer, readout_means

P, K = 3, 2
TARGET = {"PDI": 80.0, "IDV": 20.0, "MAS": 66.0, "UAI": 30.0, "LTO": 87.0, "IVR": 24.0}
MARK = "\u00a7\u00a7SOFT\u00a7\u00a7"  # the test's own slot marker
INSTRUCTION = "Answer with one digit from 1 to 5."


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vsm():
    return jaxalign.vsm13()


@pytest.fixture(scope="module")
def prompts(lm):
    """(P, K, d) soft prompts scaled like the embedding matrix."""
    std = float(np.asarray(lm.embedding_matrix).std())
    return (std * np.random.default_rng(0).normal(size=(P, K, lm.config.hidden_size))).astype(np.float32)


@pytest.fixture(scope="module")
def scorer(lm, vsm):
    return make_scorer(lm, vsm, k=K, target=np.array(list(TARGET.values()), np.float32))


@pytest.fixture(scope="module")
def scores(scorer, prompts):
    return scorer(prompts)


# ----------------------------------------------------------------------------- the reference
def vsm_indices_by_hand(m: np.ndarray) -> np.ndarray:
    """The VSM 2013 manual's index formulas, C = 0; ``m (..., 24)`` item means, item k at k-1."""
    m = {k: m[..., k - 1] for k in range(1, 25)}
    pdi = 35 * (m[7] - m[2]) + 25 * (m[20] - m[23])
    idv = 35 * (m[4] - m[1]) + 35 * (m[9] - m[6])
    mas = 35 * (m[5] - m[3]) + 35 * (m[8] - m[10])
    uai = 40 * (m[18] - m[15]) + 25 * (m[21] - m[24])
    lto = 40 * (m[13] - m[14]) + 25 * (m[19] - m[22])
    ivr = 35 * (m[12] - m[11]) + 40 * (m[17] - m[16])
    return np.stack([pdi, idv, mas, uai, lto, ivr], axis=-1)


def reference_pieces(tok, item, slot: str, reverse: bool) -> tuple[list[int], list[int], list[int]]:
    """Token ids before and after the soft slot for one item, and the code shown by each digit."""
    labels = [str(label).strip() for label in item.options]
    codes = list(range(1, 6))
    if reverse:
        labels, codes = labels[::-1], codes[::-1]
    options = "\n".join(f"{j}. {label}" for j, label in enumerate(labels, start=1))
    body = f"{str(item.text).strip()}\n{options}\n"
    user = {"user_start": f"{MARK}{body}{INSTRUCTION}", "after_item": f"{body}{MARK}{INSTRUCTION}",
            "user_end": f"{body}{INSTRUCTION}{MARK}", "start": f"{body}{INSTRUCTION}"}[slot]
    text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                   add_generation_prompt=True)
    if slot == "start":  # PEFT's place: before everything, BOS included
        text = MARK + text
    before, after = text.split(MARK)
    encode = lambda s: list(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    return encode(before), encode(after), codes


def reference_scores(lm, instrument, prompts: np.ndarray, slot="user_start", reverse=False):
    """probs (P, Q, 5) in code order, expected answers (P, Q) and dims (P, 6), one sequence at a time."""
    tok = lm.tokenizer
    digits = []
    for j in range(1, 6):
        ids = tok(str(j), add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"digit {j} is not one token: {ids}"
        digits.append(ids[0])
    n_prompts, items = prompts.shape[0], instrument.items
    probs = np.zeros((n_prompts, len(items), 5))
    for q, item in enumerate(items):
        before, after, codes = reference_pieces(tok, item, slot, reverse)
        embed_before = np.asarray(lm.embed(np.asarray([before], np.int32)))[0]
        embed_after = np.asarray(lm.embed(np.asarray([after], np.int32)))[0]
        for p in range(n_prompts):
            sequence = np.concatenate([embed_before, prompts[p], embed_after])[None]  # (1, T, d)
            last = np.asarray(lm.logits(inputs_embeds=sequence))[0, -1].astype(np.float64)  # (V,)
            presented = last[digits]
            presented = np.exp(presented - presented.max())
            presented /= presented.sum()
            for j, code in enumerate(codes):  # digit j+1 shows the option with code `code`
                probs[p, q, code - 1] = presented[j]
    means = probs @ np.arange(1, 6)
    return probs, means, vsm_indices_by_hand(means)


@pytest.fixture(scope="module")
def reference(lm, vsm, prompts):
    return reference_scores(lm, vsm, prompts)


# ----------------------------------------------------------------------------- 1. batched == reference
def test_tokens_match_the_batch(lm, vsm, scorer):
    """The scorer's batch, unpadded, holds exactly the reference's tokens (else the next test
    would fail for a layout reason rather than a scoring one)."""
    batch = scorer.batch
    for q, item in enumerate(vsm.items):
        before, after, _ = reference_pieces(lm.tokenizer, item, "user_start", False)
        assert batch.prefix_ids[q][batch.prefix_mask[q] == 1].tolist() == before
        assert batch.suffix_ids[q][batch.suffix_mask[q] == 1].tolist() == after


def test_batched_scores_equal_one_at_a_time_reference(scores, reference):
    ref_probs, ref_means, ref_dims = reference
    assert scores.probs.shape == (P, 24, 5) and scores.item_means.shape == (P, 24)
    assert scores.dims.shape == (P, 6) and scores.loss.shape == (P,)
    np.testing.assert_allclose(np.asarray(scores.probs), ref_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores.probs).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores.item_means), ref_means, atol=5e-5)
    np.testing.assert_allclose(np.asarray(scores.dims), ref_dims, atol=1e-3)
    target = np.array(list(TARGET.values()))
    np.testing.assert_allclose(np.asarray(scores.loss), np.abs(ref_dims - target).mean(-1), atol=1e-3)
    # not a vacuous comparison: the prompts give different answers
    assert np.ptp(ref_dims, axis=0).max() > 5.0


# ----------------------------------------------------------------------------- 2. chunking
@pytest.mark.parametrize(
    "options",
    [dict(members_per_pass=1), dict(mode="full"), dict(mode="full", n_buckets=1), dict(n_buckets=1),
     dict(n_buckets=24)],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_chunking_caching_and_bucketing_change_nothing(lm, vsm, prompts, scores, options):
    """One member per pass (3 passes), whole sequences instead of key/value caches, no or
    maximal length bucketing: all give the default scorer's numbers."""
    other = make_scorer(lm, vsm, k=K, target=np.array(list(TARGET.values()), np.float32), **options)
    got = other(prompts)
    # equal up to float32 rounding (XLA may order sums differently for another batch shape)
    for name, atol in (("probs", 1e-5), ("item_means", 5e-5), ("dims", 1e-3), ("loss", 1e-3)):
        np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(scores, name)),
                                   atol=atol, err_msg=name)


def test_members_per_pass_must_divide_the_population(lm, vsm, prompts):
    with pytest.raises(ValueError, match=r"members_per_pass 2 must divide the population size 3"):
        make_scorer(lm, vsm, k=K, members_per_pass=2)(prompts)
    with pytest.raises(ValueError, match="members_per_pass must be >= 1"):
        make_scorer(lm, vsm, k=K, members_per_pass=0)
    with pytest.raises(ValueError, match="unknown mode"):
        make_scorer(lm, vsm, k=K, mode="fast")


# ----------------------------------------------------------------------------- 3. readouts
def test_argmax_readout_and_constants(lm, vsm, prompts, scores):
    got = make_scorer(lm, vsm, k=K, readout="argmax", constants={"PDI": 100.0, "IVR": -7.0})(prompts)
    expected = np.argmax(np.asarray(scores.probs), axis=-1) + 1
    np.testing.assert_array_equal(np.asarray(got.item_means), expected)
    shift = np.array([100.0, 0, 0, 0, 0, -7.0])
    np.testing.assert_allclose(np.asarray(got.dims), vsm_indices_by_hand(expected) + shift, atol=1e-3)
    assert np.all(np.isnan(np.asarray(got.loss)))  # no target -> NaN losses


def test_sample_readout_is_seeded_and_near_the_expected_answer(lm, vsm, prompts, scores):
    sampler = make_scorer(lm, vsm, k=K, readout="sample", n_respondents=4000, seed=3)
    first, again = sampler(prompts), sampler(prompts)
    np.testing.assert_array_equal(np.asarray(first.item_means), np.asarray(again.item_means))
    means = np.asarray(first.item_means)
    assert means.min() >= 1.0 and means.max() <= 5.0
    # a mean of 4000 draws: standard error <= 2 / sqrt(4000) ~ 0.032
    np.testing.assert_allclose(means, np.asarray(scores.item_means), atol=0.15)
    # respondents are means of whole answers: multiples of 1 / 4000
    np.testing.assert_allclose(means * 4000, np.round(means * 4000), atol=1e-2)


def test_sample_readout_depends_on_the_member_not_its_position(lm, vsm, prompts):
    """A member's respondents follow it through the population: permuted, duplicated or alone,
    a prompt gets the same sampled item means (a target scored beside others equals its single run)."""
    sampler = make_scorer(lm, vsm, k=K, readout="sample", n_respondents=50, seed=1)
    base = np.asarray(sampler(prompts).item_means)                              # (P, Q)
    order = np.array([2, 0, 1])
    np.testing.assert_array_equal(np.asarray(sampler(prompts[order]).item_means), base[order])
    np.testing.assert_array_equal(np.asarray(sampler(prompts[1]).item_means)[0], base[1])
    twice = np.asarray(sampler(np.stack([prompts[0], prompts[0], prompts[2]])).item_means)
    np.testing.assert_array_equal(twice[0], twice[1])
    # different members (and seeds) still draw different respondents: 50 draws are noisy
    expected = np.asarray(make_scorer(lm, vsm, k=K)(prompts).item_means)
    assert np.abs((base - expected)[0] - (base - expected)[2]).max() > 0.05
    other_seed = np.asarray(make_scorer(lm, vsm, k=K, readout="sample", n_respondents=50, seed=2)(prompts).item_means)
    assert np.abs(other_seed - base).max() > 0.05


def test_readout_function():
    probs = np.array([[0.0, 0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0, 0.5]], np.float32)  # (Q, 5)
    sample = lambda seed: np.asarray(  # noqa: E731
        readout_means(probs, "sample", key=jax.random.key(seed), n_respondents=2000))
    got = sample(0)
    assert got[0] == 3.0 and abs(got[1] - 3.0) < 0.2  # +-2 per draw: standard error 0.045
    np.testing.assert_array_equal(sample(0), got)  # same seed, same respondents
    assert sample(1)[1] != got[1]
    np.testing.assert_allclose(np.asarray(readout_means(probs, "expected")), [3.0, 3.0])
    np.testing.assert_array_equal(np.asarray(readout_means(probs, "argmax")), [3.0, 1.0])
    with pytest.raises(ValueError, match="needs a PRNG key"):
        readout_means(probs, "sample")


def test_unknown_readout(lm, vsm):
    with pytest.raises(ValueError, match=r"unknown readout 'mode'.*expected, argmax, sample"):
        make_scorer(lm, vsm, k=K, readout="mode")
    with pytest.raises(ValueError, match="unknown readout"):
        readout_means(np.ones((2, 5)) / 5, "median")
    with pytest.raises(ValueError, match="n_respondents must be >= 1"):
        make_scorer(lm, vsm, k=K, readout="sample", n_respondents=0)


def test_auto_mode_follows_its_rules(lm, vsm):
    """``mode="auto"``: item-first layouts always cache; shared-prefix layouts take the measured
    choice; the scorer records the mode it runs, and a bad mode is refused."""
    from jaxalign import scoring

    assert scoring.resolve_mode("auto", prefix_shared=False) == "cached"
    assert scoring.resolve_mode("auto", prefix_shared=True) == scoring.SHARED_PREFIX_MODE
    assert scoring.resolve_mode("full", prefix_shared=False) == "full"
    assert make_scorer(lm, vsm, k=K, slot="after_item").mode == "cached"
    assert make_scorer(lm, vsm, k=K).mode == scoring.SHARED_PREFIX_MODE
    assert make_scorer(lm, vsm, k=K, mode="full").mode == "full"
    with pytest.raises(ValueError, match="unknown mode 'fast'; choose one of auto, cached, full"):
        make_scorer(lm, vsm, k=K, mode="fast")


# ----------------------------------------------------------------------------- 4-5. layouts
def test_reversed_options_come_back_in_code_order(lm, vsm, prompts, scores):
    reversed_scorer = make_scorer(lm, vsm, k=K, reverse_options=True)
    assert reversed_scorer.batch.answer_order.tolist() == [5, 4, 3, 2, 1]
    got = reversed_scorer(prompts)
    ref_probs, _, ref_dims = reference_scores(lm, vsm, prompts, reverse=True)
    np.testing.assert_allclose(np.asarray(got.probs), ref_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got.dims), ref_dims, atol=1e-3)
    # and the presentation really changed the answers (else the mapping would be untested)
    assert np.abs(np.asarray(got.probs) - np.asarray(scores.probs)).max() > 0.05


@pytest.mark.parametrize("slot", ["after_item", "user_end"])
def test_item_first_slots_match_their_reference(lm, vsm, prompts, slot):
    item_first = make_scorer(lm, vsm, k=K, slot=slot)
    assert not item_first.batch.prefix_shared  # per-item, left-padded prefixes
    got = item_first(prompts)
    ref_probs, ref_means, ref_dims = reference_scores(lm, vsm, prompts, slot=slot)
    np.testing.assert_allclose(np.asarray(got.probs), ref_probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got.item_means), ref_means, atol=5e-5)
    np.testing.assert_allclose(np.asarray(got.dims), ref_dims, atol=1e-3)


@pytest.mark.slow
def test_start_slot_matches_its_reference(lm, vsm, prompts):
    """Soft vectors before BOS: an empty prefix, in every scoring mode."""
    ref_probs, ref_means, _ = reference_scores(lm, vsm, prompts, slot="start")
    for mode in ("cached", "full"):
        start = make_scorer(lm, vsm, k=K, slot="start", mode=mode)
        assert start.batch.prefix_len == 0 and start.batch.prefix_shared
        got = start(prompts)
        np.testing.assert_allclose(np.asarray(got.probs), ref_probs, atol=1e-5)
        np.testing.assert_allclose(np.asarray(got.item_means), ref_means, atol=5e-5)


# ----------------------------------------------------------------------------- 6. spread
def test_answers_spread_over_random_soft_prompts(lm, vsm):
    """Soft prompts move the tiny model's answers a lot, so soft-prompt tests are not vacuous.

    32 prompts of K=4 random vocabulary rows (seed 0), expected readout. Measured: per-item std
    of the expected answer across prompts 0.46 averaged over items (0.09..1.13); expected
    answers 1.06..4.99; ranges of the six dims across prompts PDI 151, IDV 168, MAS 73, UAI 152,
    LTO 162, IVR 173 (std 19..43 points).
    """
    table = np.asarray(lm.embedding_matrix)
    rows = np.random.default_rng(0).integers(0, table.shape[0], size=(32, 4))
    got = make_scorer(lm, vsm, k=4)(table[rows])
    means, dims = np.asarray(got.item_means), np.asarray(got.dims)
    assert means.std(axis=0).mean() > 0.25, means.std(axis=0)
    assert np.ptp(dims, axis=0).min() > 20.0, np.ptp(dims, axis=0)
    assert dims.std(axis=0).min() > 5.0, dims.std(axis=0)
    assert means.min() < 1.5 and means.max() > 4.5


# ----------------------------------------------------------------------------- 7. errors, targets
def test_bad_prompt_shapes(scorer, prompts):
    d = prompts.shape[-1]
    with pytest.raises(ValueError, match=rf"expected prompts of shape \(P, {K}, d\), got \(3, 3, {d}\)"):
        scorer(np.zeros((3, K + 1, d), np.float32))
    with pytest.raises(ValueError, match="expected prompts of shape"):
        scorer(np.zeros((1, 3, K, d), np.float32))
    with pytest.raises(ValueError, match=rf"width {d + 1} does not match the model's hidden size {d}"):
        scorer(np.zeros((3, K, d + 1), np.float32))
    with pytest.raises(ValueError, match="k .* must be >= 0"):
        make_scorer(scorer.lm, scorer.instrument, k=-1)


def test_missing_target_dimensions_are_left_out(scorer, prompts, scores):
    dims = np.asarray(scores.dims)
    saudi = jaxalign.hofstede("Saudi Arabia")  # LTO 36, IVR 52 only
    got = np.asarray(scorer.with_target(saudi)(prompts).loss)
    np.testing.assert_allclose(got, (np.abs(dims[:, 4] - 36) + np.abs(dims[:, 5] - 52)) / 2, atol=1e-3)
    partial = np.array([50, np.nan, np.nan, 10, np.nan, np.nan], np.float32)
    partial_scorer = scorer.with_target(partial)
    traced = _score_program_jit._cache_size()
    got = np.asarray(partial_scorer(prompts).loss)
    assert _score_program_jit._cache_size() == traced  # the target is an argument: no new trace
    np.testing.assert_allclose(got, (np.abs(dims[:, 0] - 50) + np.abs(dims[:, 3] - 10)) / 2, atol=1e-3)
    with pytest.raises(ValueError, match=r"target has shape \(5,\), the instrument has 6 dimensions"):
        scorer.with_target(np.zeros(5, np.float32))


def test_equal_scorers_share_one_compiled_pass(lm, vsm, scorer, prompts, scores):
    """Another scorer of the same layout (a second ``make_scorer``, as a second ``align`` run
    makes) reuses the compiled pass and gives the same numbers; another readout or another index
    formula (the instrument's weights are baked into the program) is another program."""
    import dataclasses

    again = make_scorer(lm, vsm, k=K, target=np.array(list(TARGET.values()), np.float32))
    assert again.program(None) == scorer.program(None)
    traced = _score_program_jit._cache_size()
    np.testing.assert_array_equal(np.asarray(again(prompts).probs), np.asarray(scores.probs))
    assert _score_program_jit._cache_size() == traced
    assert make_scorer(lm, vsm, k=K, readout="argmax").program(None) != scorer.program(None)
    doubled = dataclasses.replace(vsm, weights=2 * np.asarray(vsm.weights))
    assert make_scorer(lm, doubled, k=K).program(None) != scorer.program(None)
    got = np.asarray(make_scorer(lm, doubled, k=K)(prompts).dims)
    np.testing.assert_allclose(got, 2 * np.asarray(scores.dims), rtol=1e-5, atol=1e-3)


# ----------------------------------------------------------------------------- 7. bucketing
SLOTS = ("user_start", "system", "after_item", "user_end", "start")


@pytest.fixture(scope="module")
def six_items(vsm):
    """Six VSM items of different lengths in one small instrument (one index: their mean), so
    every slot x mode x bucket count compiles in a second or two instead of 24 one-item passes."""
    lengths = {item.id: len(item.text) for item in vsm.items}
    picked = sorted(vsm.items, key=lambda item: lengths[item.id])[::4][:6]  # spread of lengths
    return jaxalign.Instrument(name="six", wording="test", items=tuple(picked), dimensions=("MEAN",),
                               weights=np.full((1, 6), 1 / 6), constants=np.zeros(1))


@pytest.mark.slow
@pytest.mark.parametrize("slot", SLOTS)
def test_bucketing_never_changes_what_is_scored(lm, six_items, prompts, slot):
    """Every slot, both modes, 2 buckets and one item per bucket, against the unbucketed full pass.

    The one-item case once scored every item of an item-first layout against bucket 0's question
    (a one-item bucket looked prefix-shared, so all buckets read bucket 0's cache): answer
    probabilities off by up to 0.97."""
    reference = np.asarray(make_scorer(lm, six_items, k=K, slot=slot, mode="full", n_buckets=1)(prompts).probs)
    for mode, n_buckets in (("cached", 1), ("cached", 2), ("cached", 6), ("full", 6)):
        scorer = make_scorer(lm, six_items, k=K, slot=slot, mode=mode, n_buckets=n_buckets)
        assert len(scorer.inputs.buckets) == n_buckets
        assert {b.prefix_shared for b in scorer.inputs.buckets} == {scorer.batch.prefix_shared}
        np.testing.assert_allclose(np.asarray(scorer(prompts).probs), reference, atol=1e-5,
                                   err_msg=f"slot={slot} mode={mode} n_buckets={n_buckets}")
    # not vacuous: the items' answers differ from each other, so reading the wrong item shows
    assert np.abs(reference[:, 1:] - reference[:, :1]).max() > 0.05


def test_one_item_buckets_keep_the_batch_prefix_layout(lm, vsm):
    """A sub-batch of a per-item-prefix layout is never taken for a shared-prefix one."""
    from jaxalign.prompting import bucket_items, render_items

    for slot in SLOTS:
        batch = render_items(lm.tokenizer, vsm, slot=slot)
        groups = bucket_items(batch, 24)
        assert len(groups) == 24
        assert all(sub.prefix_shared == batch.prefix_shared for _, sub in groups), slot
        assert not batch.take([3]).prefix_shared or batch.prefix_shared
