"""Soft-prompt parameterisations, initialisation and files."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from jaxalign import __version__
from jaxalign.softprompt import (
    check_soft_prompt,
    full_space,
    init_from_ids,
    init_random_vocab,
    load_soft_prompt,
    ordinary_token_ids,
    save_soft_prompt,
    subspace,
)

K, D = 4, 32


@pytest.fixture
def p0():
    return jax.random.normal(jax.random.PRNGKey(0), (K, D)) * 0.1


def test_full_space_decode(p0):
    space = full_space(p0)
    assert space.dim == K * D and space.num_tokens == K and space.width == D
    np.testing.assert_array_equal(space.decode(jnp.zeros(K * D)), p0)
    z = jnp.arange(K * D, dtype=jnp.float32)
    np.testing.assert_allclose(space.decode(z), np.asarray(p0) + np.arange(K * D).reshape(K, D), rtol=1e-6)
    batch = space.decode(jnp.ones((3, 2, K * D), jnp.bfloat16))
    assert batch.shape == (3, 2, K, D) and batch.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"decode expects z of shape \(\.\.\., 128\)"):
        space.decode(jnp.zeros(10))
    with pytest.raises(ValueError, match=r"p0 must have shape \(K, d\)"):
        full_space(jnp.zeros(5))


def test_subspace_shapes_and_linearity(p0):
    space = subspace(p0, 16, jax.random.PRNGKey(1), embedding_std=0.5)
    assert space.dim == 16 and space.basis.shape == (16, K * D) and space.basis.dtype == jnp.float32
    np.testing.assert_array_equal(space.decode(jnp.zeros(16)), p0)
    z1, z2 = jax.random.normal(jax.random.PRNGKey(2), (2, 16))
    delta = lambda z: space.decode(z) - p0  # noqa: E731
    np.testing.assert_allclose(delta(z1 + z2), delta(z1) + delta(z2), atol=1e-5)
    np.testing.assert_allclose(delta(z1), (np.asarray(z1) @ np.asarray(space.basis)).reshape(K, D), atol=1e-5)
    assert space.decode(jnp.zeros((5, 16))).shape == (5, K, D)
    # the space is a pytree: it can be a jit argument, not a baked-in constant
    assert len(jax.tree.leaves(space)) == 2 and len(jax.tree.leaves(full_space(p0))) == 1
    np.testing.assert_allclose(jax.jit(lambda s, z: s.decode(z))(space, z1), space.decode(z1), atol=1e-6)


def test_subspace_scaling_matches_embedding_std(p0):
    """Entries of A have std sigma/sqrt(n); a unit-normal z moves each coordinate by ~sigma."""
    n, sigma = 64, 0.3
    space = subspace(p0, n, jax.random.PRNGKey(3), embedding_std=sigma)
    assert float(jnp.std(space.basis)) == pytest.approx(sigma / np.sqrt(n), rel=0.03)
    z = jax.random.normal(jax.random.PRNGKey(4), (2000, n))
    moves = space.decode(z) - p0  # (2000, K, D)
    assert float(jnp.mean(moves)) == pytest.approx(0.0, abs=0.01)
    per_coordinate_std = jnp.std(moves, axis=0)  # (K, D)
    # coordinate j moves by z @ A[:, j], std ||A[:, j]|| = sigma * chi_n / sqrt(n), about sigma
    assert float(jnp.mean(per_coordinate_std)) == pytest.approx(sigma, rel=0.05)
    assert float(jnp.min(per_coordinate_std)) > 0.6 * sigma and float(jnp.max(per_coordinate_std)) < 1.4 * sigma


def test_subspace_validation(p0):
    with pytest.raises(ValueError, match="subspace dimension n must be an integer >= 1"):
        subspace(p0, 0, jax.random.PRNGKey(0), 1.0)
    with pytest.raises(ValueError, match="embedding_std must be a finite number > 0"):
        subspace(p0, 4, jax.random.PRNGKey(0), 0.0)


def test_init_from_ids_repeats_and_truncates():
    embedding = jnp.arange(10 * 3, dtype=jnp.float32).reshape(10, 3).astype(jnp.bfloat16)
    prompt = init_from_ids(embedding, [2, 5, 1], 5)
    assert prompt.shape == (5, 3) and prompt.dtype == jnp.float32
    np.testing.assert_array_equal(prompt[:, 0], [6, 15, 3, 6, 15])  # rows 2, 5, 1, 2, 5
    np.testing.assert_array_equal(init_from_ids(embedding, np.array([7, 8, 9]), 2)[:, 0], [21, 24])
    with pytest.raises(ValueError, match=r"token_ids must lie in \[0, 10\)"):
        init_from_ids(embedding, [3, 10], 4)
    with pytest.raises(ValueError, match="non-empty 1-D sequence of integers"):
        init_from_ids(embedding, [], 4)
    with pytest.raises(ValueError, match="K .* must be an integer >= 1"):
        init_from_ids(embedding, [1], 0)


def test_init_random_vocab_draws_distinct_rows():
    embedding = jnp.arange(50 * 2, dtype=jnp.float32).reshape(50, 2)
    prompt = init_random_vocab(embedding, 8, jax.random.PRNGKey(5))
    assert prompt.shape == (8, 2) and prompt.dtype == jnp.float32
    rows = np.asarray(prompt[:, 0]) / 2
    assert np.all(rows == np.round(rows)) and len(set(rows.tolist())) == 8  # real, distinct rows
    np.testing.assert_array_equal(prompt, init_random_vocab(embedding, 8, jax.random.PRNGKey(5)))
    assert init_random_vocab(embedding[:3], 5, jax.random.PRNGKey(0)).shape == (5, 2)  # K > V: repeats


def _drawn_ids(n_rows: int, k: int, seed: int, allowed) -> np.ndarray:
    """The row ids init_random_vocab draws (an embedding whose row i holds the number i)."""
    table = jnp.arange(n_rows, dtype=jnp.float32)[:, None]  # (V, 1), exact below 2**24
    return np.asarray(init_random_vocab(table, k, jax.random.key(seed), allowed_ids=allowed))[:, 0].astype(np.int64)


def test_init_random_vocab_draws_only_allowed_rows():
    allowed = np.arange(0, 50, 3)  # 17 rows
    for seed in range(5):
        ids = _drawn_ids(50, 8, seed, allowed)
        assert set(ids.tolist()) <= set(allowed.tolist()) and len(set(ids.tolist())) == 8
        # the first 8 allowed rows in the permutation's order: a draw that held no excluded row is
        # the same with and without allowed_ids
        order = np.asarray(jax.random.permutation(jax.random.key(seed), 50))
        assert ids.tolist() == [i for i in order.tolist() if i % 3 == 0][:8]
        np.testing.assert_array_equal(_drawn_ids(50, 8, seed, None), order[:8])
    many = _drawn_ids(50, 40, 0, allowed)  # K > allowed rows: repeats, still only allowed rows
    assert many.shape == (40,) and set(many.tolist()) <= set(allowed.tolist())
    table = jnp.zeros((50, 2))
    for bad, message in (([], "non-empty 1-D"), ([3, 50], r"lie in \[0, 50\)"), ([[1, 2]], "1-D")):
        with pytest.raises(ValueError, match=message):
            init_random_vocab(table, 4, jax.random.key(0), allowed_ids=bad)


@pytest.mark.slow
@pytest.mark.parametrize("family, n_rows, n_ordinary", [("llama3", 128256, 128000), ("qwen2.5", 151936, 151643)])
def test_ordinary_token_ids_of_real_tokenizers(real_tokenizer, family, n_rows, n_ordinary):
    """Llama-3: 128,000 BPE ranks, then 256 specials (250 of them reserved); Qwen2.5: 151,643
    ranks, then 22 added tokens (two of them not special), then 271 embedding rows past the
    tokenizer (293 rows beyond the ranks in all). Only the ranks are drawn."""
    tok = real_tokenizer(family, chat_template=False)
    ids = ordinary_token_ids(tok, n_rows)
    np.testing.assert_array_equal(ids, np.arange(n_ordinary))  # every rank, nothing after them
    added = set(tok.added_tokens_decoder)
    assert min(added) == n_ordinary and len(tok) == n_ordinary + len(added)
    assert n_rows - len(tok) == {"llama3": 0, "qwen2.5": 271}[family]  # padding rows past the tokenizer
    # what text encodes to is ordinary; special and added tokens are not
    text = "In choosing an ideal job, how important would it be to you? 1 2 3 4 5 über 東京"
    assert set(tok(text, add_special_tokens=False)["input_ids"]) <= set(ids.tolist())
    drawn = np.concatenate([_drawn_ids(n_rows, 2000, seed, ids) for seed in range(3)])
    assert drawn.max() < n_ordinary and not set(drawn.tolist()) & added  # no special, reserved or padding row
    everything = np.concatenate([_drawn_ids(n_rows, 2000, seed, None) for seed in range(3)])
    assert everything.max() >= n_ordinary  # every row allowed, the same seeds do reach them
    # fewer embedding rows than tokenizer ids: the table's rows bound the ids
    assert ordinary_token_ids(tok, 1000).tolist() == list(range(1000))


def test_initial_prompt_draws_ordinary_tiny_tokens():
    """tiny-random: 1016 BPE ids then 8 special ones (1016..1023), which old draws could hit
    (K=10: seeds 3, 5, 11, 15, ...; not the study's seeds 0..2, whose draws are unchanged)."""
    from types import SimpleNamespace

    from jaxalign.api import initial_prompt
    from jaxalign.model.tiny import tiny_model

    lm = tiny_model()
    table = np.asarray(lm.embedding_matrix, np.float32)  # (1024, d), distinct rows

    def rows(prompt: np.ndarray) -> list[int]:
        return [int(np.flatnonzero((table == row).all(axis=1))[0]) for row in prompt]

    ordinary = ordinary_token_ids(lm.tokenizer, table.shape[0])
    assert ordinary.tolist() == list(range(1016))
    for seed in (0, 1, 2, 3, 5, 11, 15):
        drawn = rows(initial_prompt(lm, 10, text=None, seed=seed))
        assert len(set(drawn)) == 10 and max(drawn) < 1016, (seed, drawn)  # no special row
        assert rows(initial_prompt(lm, 10, text=None, seed=seed)) == drawn  # deterministic per seed
        every_row = rows(initial_prompt(SimpleNamespace(embedding_matrix=lm.embedding_matrix, tokenizer=None),
                                        10, text=None, seed=seed))
        if max(every_row) < 1016:  # the draw over every row held no special one: the same rows
            assert every_row == drawn
        else:
            assert seed in (3, 5, 11, 15)
    assert rows(initial_prompt(lm, 10, text=None, seed=0)) != rows(initial_prompt(lm, 10, text=None, seed=1))


def test_save_load_round_trip(tmp_path, p0):
    path = tmp_path / "out" / "jp.safetensors"
    meta = {"model": "tiny-llama", "wording": "en", "readout": "expected", "target": "JP"}
    save_soft_prompt(path, p0, meta)
    prompt, loaded = load_soft_prompt(path)
    assert prompt.dtype == np.float32 and prompt.shape == (K, D)
    np.testing.assert_array_equal(prompt, np.asarray(p0))
    assert loaded == {**meta, "K": str(K), "d": str(D), "jaxalign_version": __version__}
    assert os.listdir(path.parent) == ["jp.safetensors"]  # no temporary file left behind
    # overwrite in place
    save_soft_prompt(path, np.zeros((2, D)), {"model": "m"})
    assert load_soft_prompt(path)[0].shape == (2, D)
    assert os.listdir(path.parent) == ["jp.safetensors"]


def test_failed_save_leaves_previous_file_intact(tmp_path, p0, monkeypatch):
    path = tmp_path / "jp.safetensors"
    save_soft_prompt(path, p0, {"model": "m"})

    def write_half_then_die(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 7)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", write_half_then_die)
    with pytest.raises(OSError, match="disk full"):
        save_soft_prompt(path, np.ones((K, D)), {"model": "m"})
    assert os.listdir(tmp_path) == ["jp.safetensors"]
    np.testing.assert_array_equal(load_soft_prompt(path)[0], np.asarray(p0))


def test_save_rejects_bad_input(tmp_path, p0):
    with pytest.raises(ValueError, match="metadata must map str to str.*'K': 'int'"):
        save_soft_prompt(tmp_path / "a.safetensors", p0, {"K": 4})
    with pytest.raises(ValueError, match=r"metadata\['d'\]='7' but the prompt has d=32"):
        save_soft_prompt(tmp_path / "a.safetensors", p0, {"d": "7"})
    with pytest.raises(ValueError, match=r"shape \(K, d\)"):
        save_soft_prompt(tmp_path / "a.safetensors", np.zeros(4), {})
    assert os.listdir(tmp_path) == []


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no soft prompt file"):
        load_soft_prompt(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"weights": np.zeros((2, 2), np.float32)}, str(other))
    with pytest.raises(ValueError, match=r"has no tensor 'soft_prompt' \(tensors found: \['weights'\]\)"):
        load_soft_prompt(other)
    flat = tmp_path / "flat.safetensors"
    safetensors.numpy.save_file({"soft_prompt": np.zeros(8, np.float32)}, str(flat))
    with pytest.raises(ValueError, match=r"must have rank 2 \(K, d\), got shape \(8,\)"):
        load_soft_prompt(flat)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_soft_prompt(junk)


def test_check_soft_prompt():
    check_soft_prompt(np.zeros((3, 64)), 64)
    with pytest.raises(ValueError, match="width d=32 does not match the model's hidden size 64"):
        check_soft_prompt(np.zeros((3, 32)), 64)
    with pytest.raises(ValueError, match=r"shape \(K, d\)"):
        check_soft_prompt(np.zeros((64,)), 64)
