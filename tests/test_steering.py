"""Steering vectors on the tiny model: the fast scorer, the plain path and transformers agree.

The reference is transformers' ``LlamaForCausalLM`` holding the tiny model's exact weights
(``benchmarks.common.torch_model_from_lm``) with a forward hook on ``model.model.layers[L]`` that
adds the vector to the block's output (transformers 5 returns the tensor; a tuple is handled too),
fed the same token ids one unpadded item at a time. Six items of spread lengths in two buckets keep
the compiled passes small.
"""

from __future__ import annotations

import numpy as np
import pytest

import jaxalign
from jaxalign.interventions import steering
from jaxalign.scoring_steering import make_steering_scorer

torch = pytest.importorskip("torch")

TOL = 1e-4


@pytest.fixture(scope="module")
def twin(lm):
    from benchmarks.common import torch_model_from_lm

    return torch_model_from_lm(lm)


@pytest.fixture(scope="module")
def six_items():
    vsm = jaxalign.vsm13()
    picked = sorted(vsm.items, key=lambda item: len(item.text))[::4][:6]
    return jaxalign.Instrument(name="six", wording="test", items=tuple(picked), dimensions=("MEAN",),
                               weights=np.full((1, 6), 1 / 6), constants=np.zeros(1))


def vectors_for(lm, scorer, n_members: int, seed: int = 0) -> np.ndarray:
    """``(P, d)`` random vectors of the residual stream's size at the scorer's layer; member 0 is zero."""
    std = steering.residual_std(lm, scorer.plain.batch, scorer.layer)
    rows = np.random.default_rng(seed).standard_normal((n_members, lm.config.hidden_size)) * std
    rows[0] = 0.0
    return rows.astype(np.float32)


def add_after(block, vector: np.ndarray):
    """A forward hook adding ``vector`` to ``block``'s output (a tensor, or a tuple's first item)."""
    add = torch.from_numpy(np.asarray(vector, np.float32))

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + add,) + tuple(output[1:])
        return output + add

    return block.register_forward_hook(hook)


def hooked_probs(twin, batch, layers, rows) -> np.ndarray:
    """``(Q, 5)`` answer probabilities (answer-code order) of transformers with ``rows (n, d)`` added
    after ``layers`` (hooks), each item's real tokens as one unpadded sequence."""
    handles = [add_after(twin.model.layers[layer], row) for layer, row in zip(layers, rows)]
    out = np.zeros((batch.n_items, len(batch.answer_ids)))
    try:
        with torch.no_grad():
            for q in range(batch.n_items):
                ids = np.concatenate([batch.prefix_ids[q][batch.prefix_mask[q] == 1],
                                      batch.suffix_ids[q][batch.suffix_mask[q] == 1]])
                logits = twin(torch.tensor(ids[None], dtype=torch.long)).logits[0, -1]
                presented = torch.softmax(logits[torch.tensor(batch.answer_ids, dtype=torch.long)].double(), -1)
                out[q] = batch.to_original_order(presented.numpy())
    finally:
        for handle in handles:
            handle.remove()
    return out


@pytest.mark.parametrize("layer", [0, 3])
def test_fast_plain_and_transformers_hook_agree(lm, twin, six_items, layer):
    """Layer 0 (three blocks per member, the last trimmed) and the last block (none per member)."""
    scorer = make_steering_scorer(lm, six_items, layer=layer, n_buckets=2)
    vectors = vectors_for(lm, scorer, 3)
    fast, plain_path = scorer(vectors), scorer.reference(vectors)
    fast_probs = np.asarray(fast.probs)
    assert fast_probs.shape == (3, 6, 5) and np.asarray(fast.loss).shape == (3,)
    path_err = float(np.abs(fast_probs - np.asarray(plain_path.probs)).max())
    want = np.stack([hooked_probs(twin, scorer.plain.batch, [layer], v[None]) for v in vectors])
    hook_err = float(np.abs(fast_probs - want).max())
    print(f"\nlayer {layer}: fast - plain path {path_err:.1e}, fast - transformers hook {hook_err:.1e}")
    assert path_err < TOL and hook_err < TOL
    assert np.abs(want[1] - want[0]).max() > 1e-2  # the vector changes the answers: not a vacuous match


def test_item_first_split_runs_every_row_whole(lm, twin, six_items):
    """``user_end`` renders each item's text before the split, so no prefix is shared and every
    (member, item) row runs whole after block L (the other branch of ``steered_last_hidden``)."""
    scorer = make_steering_scorer(lm, six_items, layer=1, slot="user_end", n_buckets=2)
    assert not scorer.plain.batch.prefix_shared
    vectors = vectors_for(lm, scorer, 2, seed=4)
    got = np.asarray(scorer(vectors).probs)
    want = np.stack([hooked_probs(twin, scorer.plain.batch, [1], v[None]) for v in vectors])
    assert float(np.abs(got - want).max()) < TOL


def test_zero_vector_is_the_plain_model(lm, six_items):
    scorer = make_steering_scorer(lm, six_items, layer=1, n_buckets=2)
    zero = np.zeros((2, lm.config.hidden_size), np.float32)
    plain = scorer.plain(np.zeros((1, 0, lm.config.hidden_size), np.float32))   # the k = 0 scorer
    got = scorer(zero)
    err = float(np.abs(np.asarray(got.probs) - np.asarray(plain.probs)).max())
    print(f"\nzero vector - k=0 scorer: max |prob diff| {err:.1e}")
    assert err < 1e-5
    np.testing.assert_allclose(np.asarray(got.dims), np.repeat(np.asarray(plain.dims), 2, 0), atol=1e-3)


def test_two_layers_and_the_pure_function(lm, twin, six_items):
    """``(P, n, d)`` at layers (1, 2) against two hooks; ``score_fn`` under an outer jit, with a
    target and members in two passes, gives the same scores."""
    import jax

    scorer = make_steering_scorer(lm, six_items, layer=(2, 1), n_buckets=2, members_per_pass=1,
                                  target=np.asarray([3.0], np.float32))
    assert scorer.layers == (1, 2) and scorer.vector_shape == (2, lm.config.hidden_size)
    rng = np.random.default_rng(3)
    vectors = (rng.standard_normal((2, 2, lm.config.hidden_size)) * 5).astype(np.float32)
    fast = scorer(vectors)
    want = np.stack([hooked_probs(twin, scorer.plain.batch, [1, 2], v) for v in vectors])
    err = float(np.abs(np.asarray(fast.probs) - want).max())
    print(f"\ntwo layers: fast - transformers hooks {err:.1e}")
    assert err < TOL
    pure = jax.jit(scorer.score_fn)(vectors, scorer.inputs)
    np.testing.assert_allclose(np.asarray(pure.probs), np.asarray(fast.probs), atol=1e-6)
    np.testing.assert_allclose(np.asarray(pure.loss), np.abs(np.asarray(fast.dims)[:, 0] - 3.0), rtol=1e-5)


def test_residual_std_is_the_output_of_block_l(lm, twin, six_items):
    """transformers' ``hidden_states[L + 1]`` is the output of block L (0-based)."""
    scorer = make_steering_scorer(lm, six_items, layer=1, n_buckets=1)
    batch = scorer.plain.batch
    got = steering.residual_std(lm, batch, 1)
    states = []
    with torch.no_grad():
        for q in range(batch.n_items):
            ids = np.concatenate([batch.prefix_ids[q][batch.prefix_mask[q] == 1],
                                  batch.suffix_ids[q][batch.suffix_mask[q] == 1]])
            out = twin(torch.tensor(ids[None], dtype=torch.long), output_hidden_states=True)
            states.append(out.hidden_states[2][0].numpy())
    want = float(np.concatenate(states).std())
    assert got == pytest.approx(want, rel=1e-4)


def test_search_space_scales_to_the_residual_stream(lm):
    import jax

    d = lm.config.hidden_size
    for subspace in (None, 16):
        space = steering.steering_space(d, residual_scale=7.0, subspace=subspace, key=jax.random.key(0))
        z = steering.initial_z(jax.random.key(1), 64, space, residual_scale=7.0, init_scale=0.5)
        vectors = np.asarray(space.decode(z))
        assert vectors.shape == (64, 1, d)
        assert float(vectors.std()) == pytest.approx(3.5, rel=0.1), subspace
    with pytest.raises(ValueError, match="residual_scale"):
        steering.steering_space(d, residual_scale=0.0)


def test_bad_vectors_and_layers_are_refused(lm, six_items):
    d = lm.config.hidden_size
    with pytest.raises(ValueError, match="out of range.*4 decoder blocks"):
        make_steering_scorer(lm, six_items, layer=4)
    with pytest.raises(ValueError, match="out of range"):
        make_steering_scorer(lm, six_items, layer=-1)
    with pytest.raises(ValueError, match="distinct"):
        make_steering_scorer(lm, six_items, layer=(1, 1))
    scorer = make_steering_scorer(lm, six_items, layer=1, n_buckets=1)
    with pytest.raises(ValueError, match=r"shape \(P, 64\)"):
        scorer(np.zeros((2, d + 1), np.float32))
    with pytest.raises(ValueError, match=r"shape \(P, 64\)"):
        scorer(np.zeros((2, 2, d), np.float32))
    with pytest.raises(ValueError, match="must divide"):
        make_steering_scorer(lm, six_items, layer=1, n_buckets=1, members_per_pass=2)(np.zeros((3, d), np.float32))


# -- files ---------------------------------------------------------------------------------------


def test_file_round_trip_with_provenance(lm, six_items, tmp_path):
    d = lm.config.hidden_size
    vector = np.arange(d, dtype=np.float32)
    meta = steering.steering_metadata(lm, instrument=six_items, target="China", config={"init_scale": 0.5},
                                      residual_scale=4.0)
    path = steering.save_steering(tmp_path / "v.safetensors", vector, 2, meta)
    loaded = steering.load_steering(path)
    assert loaded.layers == (2,) and loaded.layer == 2 and loaded.vectors.shape == (1, d)
    np.testing.assert_array_equal(loaded.vectors[0], vector)
    assert loaded.metadata["layer"] == "2" and loaded.metadata["model_type"] == "llama"
    assert loaded.metadata["config"] == '{"init_scale": 0.5}' and loaded.has_provenance
    notes: list[str] = []
    record = steering.steering_provenance(loaded, lm, instrument=six_items, warn=notes.append)
    assert record["checked"] == ["model", "wording"] and not record["mismatches"] and not notes
    # several layers: (n, d), rows sorted with their layers
    rows = np.stack([vector, -vector])
    loaded = steering.load_steering(steering.save_steering(tmp_path / "two.safetensors", rows, [3, 1]))
    assert loaded.layers == (1, 3) and loaded.metadata["layers"] == "1,3"
    np.testing.assert_array_equal(loaded.vectors, rows[::-1])


def test_plain_file_gets_a_note_and_another_model_a_warning(lm, tmp_path):
    from safetensors.numpy import save_file

    d = lm.config.hidden_size
    save_file({"vector": np.ones(d, np.float32)}, str(tmp_path / "plain.safetensors"), metadata={"layer": "1"})
    loaded = steering.load_steering(tmp_path / "plain.safetensors")
    notes: list[str] = []
    record = steering.steering_provenance(loaded, lm, warn=notes.append)
    assert notes == [steering.NO_PROVENANCE_NOTE] and record["note"] == steering.NO_PROVENANCE_NOTE
    meta = steering.steering_metadata(lm) | {"model_fingerprint": "0" * 64, "model": "other"}
    other = steering.load_steering(steering.save_steering(tmp_path / "o.safetensors", np.ones(d), 1, meta))
    notes.clear()
    record = steering.steering_provenance(other, lm, warn=notes.append)
    assert record["mismatches"] and "--allow-mismatch" in notes[0]


def test_bad_files_are_refused(lm, tmp_path):
    from safetensors.numpy import save_file

    from jaxalign.softprompt import save_soft_prompt

    d = lm.config.hidden_size
    with pytest.raises(FileNotFoundError):
        steering.load_steering(tmp_path / "missing.safetensors")
    save_soft_prompt(tmp_path / "soft.safetensors", np.ones((2, d)), {})
    with pytest.raises(ValueError, match="soft prompt file.*--soft-prompt"):
        steering.load_steering(tmp_path / "soft.safetensors")
    save_file({"vector": np.ones(d, np.float32)}, str(tmp_path / "nolayer.safetensors"))
    with pytest.raises(ValueError, match="no metadata 'layer'"):
        steering.load_steering(tmp_path / "nolayer.safetensors")
    save_file({"vector": np.ones((2, d), np.float32)}, str(tmp_path / "shape.safetensors"), metadata={"layer": "1"})
    with pytest.raises(ValueError, match="does not fit 1 layer"):
        steering.load_steering(tmp_path / "shape.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        steering.load_steering(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="distinct ints >= 0"):
        steering.save_steering(tmp_path / "neg.safetensors", np.ones(d), -1)
    with pytest.raises(ValueError, match=r"\(n, d\) for n layers"):
        steering.save_steering(tmp_path / "n.safetensors", np.ones((2, d)), 1)
    wide = steering.load_steering(steering.save_steering(tmp_path / "w.safetensors", np.ones(d + 2), 1))
    with pytest.raises(ValueError, match="width d=66"):
        steering.check_steering(wide, lm.config)
    deep = steering.load_steering(steering.save_steering(tmp_path / "deep.safetensors", np.ones(d), 9))
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        steering.check_steering(deep, lm.config)
