"""Numerical parity of jaxalign's Flax Llama with transformers' PyTorch LlamaForCausalLM.

Checkpoints are made here with ``LlamaForCausalLM(config).save_pretrained(dir)`` (CPU torch),
with weights re-drawn at std 0.15 (HF's 0.02 makes logits tiny and the comparison vacuous) and
RMSNorm weights drawn in [0.5, 1.5] (so a missing norm weight would show), then loaded with
``jaxalign.load_model`` and compared on the same inputs.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign  # noqa: E402
from jaxalign.model import embed_fn, forward_hidden, logits_fn, selected_logits_fn  # noqa: E402

VOCAB, D, LAYERS, HEADS = 160, 64, 2, 4
TOL_F32 = 1e-4
LLAMA3_ROPE = {
    "rope_type": "llama3", "rope_theta": 10_000.0, "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
}
VARIANTS = {
    "mha": dict(num_key_value_heads=4),
    "gqa": dict(num_key_value_heads=2),
    "llama3_rope": dict(num_key_value_heads=2, rope_parameters=LLAMA3_ROPE),
    "tied": dict(num_key_value_heads=1, tie_word_embeddings=True),
}


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    # GPUs may use TF32 for float32 matmuls by default; parity needs true float32.
    with jax.default_matmul_precision("float32"):
        yield


def _make_reference(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=D, intermediate_size=128, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, rms_norm_eps=1e-5, max_position_embeddings=256,
        **VARIANTS[variant])
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.15)
            else:
                param.uniform_(0.5, 1.5)
    return model


def _load(folder, dtype="float32"):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no tokenizer files.*")
        return jaxalign.load_model(folder, dtype=dtype)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """variant -> (torch reference model, jaxalign LM loaded in float32 from its save_pretrained)."""
    out = {}
    for variant in VARIANTS:
        reference = _make_reference(variant)
        folder = tmp_path_factory.mktemp(variant)
        reference.save_pretrained(folder)
        out[variant] = (reference, _load(folder))
    return out


def _torch_logits(model, **inputs) -> np.ndarray:
    with torch.no_grad():
        tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in inputs.items()}
        return model(**tensors).logits.float().numpy()


def _ids(batch=3, length=11, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_full_logits_match_transformers(pairs, variant):
    reference, lm = pairs[variant]
    ids = _ids()
    expected = _torch_logits(reference, input_ids=ids)
    got = np.asarray(lm.logits(ids))
    assert got.dtype == np.float32 and got.shape == (3, 11, VOCAB)
    err = np.abs(got - expected).max()
    assert err < TOL_F32, f"{variant}: max |diff| {err:.2e}, max |logit| {np.abs(expected).max():.2f}"
    assert np.abs(expected).max() > 1.0  # the comparison is not vacuous


def test_variants_are_what_they_claim(pairs):
    assert pairs["mha"][1].config.num_key_value_heads == HEADS
    assert pairs["gqa"][1].config.num_key_value_heads == 2
    assert pairs["tied"][1].config.tie_word_embeddings and pairs["tied"][1].model.lm_head is None
    config = pairs["llama3_rope"][1].config
    assert config.rope_type == "llama3" and config.rope_original_max_position_embeddings == 16
    scaled = config.rope_inverse_frequencies()
    plain = jaxalign.LlamaConfig(**{**config.__dict__, "rope_type": "default"}).rope_inverse_frequencies()
    # with head_dim 16 and original context 16, scaling changes most frequencies
    assert (np.abs(scaled - plain) > 1e-6 * plain).sum() >= 4
    # and the reference's own frequencies agree with ours
    torch_inv_freq = pairs["llama3_rope"][0].model.rotary_emb.inv_freq.numpy()
    np.testing.assert_allclose(scaled, torch_inv_freq, rtol=1e-6)


def test_right_padding_matches_on_real_positions(pairs):
    reference, lm = pairs["gqa"]
    ids = _ids(batch=3, length=10, seed=1)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    expected = _torch_logits(reference, input_ids=ids, attention_mask=mask)
    got = np.asarray(lm.logits(ids, attention_mask=mask))
    real = mask.astype(bool)
    err = np.abs(got - expected)[real].max()
    assert err < TOL_F32, f"max |diff| {err:.2e} on real positions"
    assert np.isfinite(got).all()
    # a right-padded row equals the same row run unpadded
    alone = np.asarray(lm.logits(ids[1:2, :6]))
    assert np.abs(alone[0] - got[1, :6]).max() < TOL_F32


def test_padding_anywhere_uses_cumsum_positions(pairs):
    """Left-padded prefix + right-padded suffix: matches HF given position_ids = cumsum(mask) - 1."""
    reference, lm = pairs["llama3_rope"]
    ids = _ids(batch=2, length=12, seed=2)
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    mask[0, 9:] = 0
    mask[1, :5] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    expected = _torch_logits(reference, input_ids=ids, attention_mask=mask, position_ids=positions)
    got = np.asarray(lm.logits(ids, attention_mask=mask))
    real = mask.astype(bool)
    err = np.abs(got - expected)[real].max()
    assert err < TOL_F32, f"max |diff| {err:.2e}"
    assert np.isfinite(got).all()  # padding queries (including fully padded prefixes) give no NaN
    # the padded row's real tokens behave like the unpadded sequence
    alone = np.asarray(lm.logits(ids[0:1, 3:9]))
    assert np.abs(alone[0] - got[0, 3:9]).max() < TOL_F32


def test_fully_padded_row_is_finite(pairs):
    _, lm = pairs["gqa"]
    mask = np.zeros((2, 5), int)
    mask[1] = 1
    got = np.asarray(lm.logits(_ids(2, 5), attention_mask=mask))
    assert np.isfinite(got).all()


def test_inputs_embeds_with_non_vocabulary_vectors(pairs):
    reference, lm = pairs["gqa"]
    embeds = np.random.default_rng(3).normal(0.0, 1.0, (2, 9, D)).astype(np.float32)
    mask = np.ones((2, 9), int)
    mask[0, 7:] = 0
    expected = _torch_logits(reference, inputs_embeds=embeds, attention_mask=mask)
    got = np.asarray(lm.logits(inputs_embeds=embeds, attention_mask=mask))
    err = np.abs(got - expected)[mask.astype(bool)].max()
    assert err < TOL_F32, f"max |diff| {err:.2e}, max |logit| {np.abs(expected).max():.2f}"


def test_embed_matches_embedding_matrix(pairs):
    reference, lm = pairs["tied"]
    ids = _ids(2, 4)
    table = reference.model.embed_tokens.weight.detach().numpy()
    np.testing.assert_array_equal(np.asarray(lm.embedding_matrix), table)
    np.testing.assert_array_equal(np.asarray(lm.embed(ids)), table[ids])


@pytest.mark.parametrize("variant", ["gqa", "tied"])
def test_selected_logits_equal_slice_of_full_logits(pairs, variant):
    _, lm = pairs[variant]
    ids = _ids(3, 8, seed=4)
    mask = np.ones_like(ids)
    mask[0, 5:] = 0
    mask[2, :2] = 0  # left padding too
    mask[2, 7:] = 0
    token_ids = np.array([7, 3, 150, 42, 0])
    full = np.asarray(lm.logits(ids, attention_mask=mask))
    last = np.array([4, 7, 6])
    expected = full[np.arange(3), last][:, token_ids]
    got = np.asarray(lm.selected_logits(token_ids, input_ids=ids, attention_mask=mask))
    assert got.shape == (3, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # per-row ids (B, n)
    per_row = np.array([[1, 2], [3, 4], [5, 6]])
    got_rows = np.asarray(lm.selected_logits(per_row, input_ids=ids, attention_mask=mask))
    np.testing.assert_allclose(got_rows, full[np.arange(3)[:, None], last[:, None], per_row], atol=1e-5)


def test_selected_logits_never_form_full_vocabulary(pairs):
    _, lm = pairs["gqa"]
    embeds = jnp.zeros((2, 6, D), jnp.float32)
    mask = jnp.ones((2, 6), jnp.int32)
    jaxpr = jax.make_jaxpr(selected_logits_fn, static_argnums=0)(
        lm.graphdef, lm.params, embeds, mask, jnp.arange(5))
    text = str(jaxpr)
    assert f"2,6,{VOCAB}]" not in text.replace(" ", "")
    assert f"f32[2,6,{VOCAB}]" not in text


@pytest.mark.slow
def test_pure_functions_take_params_as_arguments(pairs):
    """Under an outer jit the weights are traced arguments, not baked-in constants; layers are one scan."""
    _, lm = pairs["gqa"]
    ids = _ids(2, 7, seed=5)
    token_ids = jnp.array([1, 2, 3])

    def score(params, input_ids):
        embeds = embed_fn(lm.graphdef, params, input_ids)
        mask = jnp.ones(input_ids.shape, jnp.int32)
        return selected_logits_fn(lm.graphdef, params, embeds, mask, token_ids)

    closed = jax.make_jaxpr(score)(lm.params, ids)
    assert all(np.size(c) < 1000 for c in closed.consts), "weights were closed over as constants"
    text = str(closed)
    assert "scan" in text and f"length={LAYERS}" in text, "decoder layers are not run by one lax.scan"
    got = jax.jit(score)(lm.params, ids)
    np.testing.assert_allclose(np.asarray(got), np.asarray(lm.selected_logits(token_ids, input_ids=ids)),
                               atol=1e-5)
    hidden = jax.jit(forward_hidden, static_argnums=0)(lm.graphdef, lm.params, lm.embed(ids), None)
    assert hidden.shape == (2, 7, D)
    full = jax.jit(logits_fn, static_argnums=0)(lm.graphdef, lm.params, lm.embed(ids))
    np.testing.assert_allclose(np.asarray(full), np.asarray(lm.logits(ids)), atol=1e-5)


def test_jitted_methods_are_cached(pairs):
    from jaxalign.model import llama

    _, lm = pairs["mha"]
    ids = _ids(2, 5)
    lm.logits(ids)
    before = llama._logits_jit._cache_size()
    lm.logits(ids + 1)
    lm.logits(ids)
    assert llama._logits_jit._cache_size() == before


def test_bfloat16_close_to_float32(tmp_path_factory, pairs):
    reference, lm32 = pairs["gqa"]
    folder = tmp_path_factory.mktemp("gqa_bf16")
    reference.save_pretrained(folder)
    lm16 = _load(folder, dtype="bfloat16")
    assert lm16.dtype == jnp.bfloat16 and lm16.model.layers.q_proj[...].dtype == jnp.bfloat16
    ids = _ids(3, 11)
    ref = np.asarray(lm32.logits(ids))
    got = lm16.logits(ids)
    assert got.dtype == jnp.float32
    scale = np.abs(ref).max()
    err = np.abs(np.asarray(got) - ref).max()
    # bfloat16 has an 8-bit mantissa (relative step 2^-8 = 0.4%); two layers of it stay within 5% of scale
    assert err < 0.05 * scale, f"bf16 max |diff| {err:.3f} vs max |logit| {scale:.2f}"
    # same answer ranking on most positions
    agree = (np.asarray(got).argmax(-1) == ref.argmax(-1)).mean()
    assert agree > 0.9, agree


def test_sharded_checkpoint_loads_identically(tmp_path_factory, pairs):
    reference, lm = pairs["gqa"]
    folder = tmp_path_factory.mktemp("gqa_sharded")
    reference.save_pretrained(folder, max_shard_size="60KB")
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert (folder / "model.safetensors.index.json").is_file() and len(shards) > 2, shards
    sharded = _load(folder)
    ids = _ids()
    np.testing.assert_array_equal(np.asarray(sharded.logits(ids)), np.asarray(lm.logits(ids)))
