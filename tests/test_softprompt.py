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
