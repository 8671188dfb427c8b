"""Every supported model family against transformers' PyTorch model, from Hub-form checkpoints.

Each checkpoint is written by :func:`checkpoints.write_hub_checkpoint`: ``config.json`` exactly as
the Hub ships it for Llama-2, Llama-3, Llama-3.1 (llama3 RoPE scaling), Llama-3.2 (tied),
Qwen2.5 (q/k/v biases, tied, real 151,936-row vocabulary) and Mistral v0.3, plus two variants:
Mistral with a 5-token sliding window (the v0.1 design, window shrunk below the test length) and
Llama with ``attention_bias`` (q/k/v/o biases). Weights come from transformers'
``XxxForCausalLM(config).save_pretrained`` (re-drawn so outputs are far from uniform). The
reference is ``AutoModelForCausalLM.from_pretrained`` of the same folder, so transformers reads
the same Hub-form config.json that jaxalign's loader reads. Float32 logits must agree to 1e-4,
through the full pass, ``selected_logits`` and the KV-cache path (prefill + extend).

``test_model_parity.py`` covers the numerics in depth on save_pretrained-form Llama checkpoints
(padding anywhere, inputs_embeds, bfloat16 compute, sharded files); this file covers the families.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign  # noqa: E402
from checkpoints import REAL_VOCAB_SIZES, load_reference, write_hub_checkpoint  # noqa: E402
from jaxalign.model import llama  # noqa: E402

TOL_F32 = 1e-4
_prefill = jax.jit(llama.prefill_fn, static_argnums=0)
_extend = jax.jit(llama.extend_fn, static_argnums=0)
_select = jax.jit(llama.select_logits, static_argnums=0)
VOCAB = 256  # small vocabulary where the real one does not matter (Qwen2.5 keeps its real one)
WINDOW = 5
# name -> (family, write_hub_checkpoint overrides)
VARIANTS = {
    "llama2": ("llama2", dict(vocab_size=VOCAB)),
    "llama3": ("llama3", dict(vocab_size=VOCAB)),
    "llama3.1": ("llama3.1", dict(vocab_size=VOCAB)),
    "llama3.2": ("llama3.2", dict(vocab_size=VOCAB)),
    "qwen2.5": ("qwen2.5", dict()),
    "mistral": ("mistral", dict(vocab_size=VOCAB)),
    "mistral_window": ("mistral", dict(vocab_size=VOCAB, sliding_window=WINDOW)),
    "llama_bias": ("llama3", dict(vocab_size=VOCAB, attention_bias=True)),
}


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    with jax.default_matmul_precision("float32"):
        yield


def _load(folder, dtype="float32"):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no tokenizer files.*")
        return jaxalign.load_model(folder, dtype=dtype)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """variant -> (PyTorch reference, jaxalign LM), both from the same Hub-form folder."""
    out = {}
    for name, (family, overrides) in VARIANTS.items():
        folder = write_hub_checkpoint(tmp_path_factory.mktemp(name.replace(".", "_")), family, **overrides)
        out[name] = (load_reference(folder), _load(folder))
    return out


def _ids(lm, batch=2, length=12, seed=0):
    return np.random.default_rng(seed).integers(0, lm.config.vocab_size, (batch, length))


def _torch_logits(model, ids, mask=None):
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.as_tensor(mask)}
        return model(torch.as_tensor(ids), **kwargs).logits.float().numpy()


def test_configs_are_what_they_claim(models):
    config = {name: lm.config for name, (_, lm) in models.items()}
    assert config["llama2"].num_key_value_heads == config["llama2"].num_attention_heads  # MHA
    assert config["llama2"].rope_theta == 10_000.0 and config["llama3"].rope_theta == 500_000.0
    assert config["llama3"].num_key_value_heads < config["llama3"].num_attention_heads  # GQA
    assert config["llama3.1"].rope_type == "llama3" and config["llama3.1"].rope_factor == 8.0
    assert config["llama3.2"].tie_word_embeddings and config["llama3.2"].rope_factor == 32.0
    qwen = config["qwen2.5"]
    assert (qwen.model_type, qwen.qkv_bias, qwen.o_bias, qwen.tie_word_embeddings) == ("qwen2", True, False, True)
    assert (qwen.vocab_size, qwen.rope_theta, qwen.rms_norm_eps) == (REAL_VOCAB_SIZES["qwen2.5"], 1e6, 1e-6)
    assert qwen.sliding_window is None  # use_sliding_window: false
    assert config["mistral"].model_type == "mistral" and config["mistral"].sliding_window is None
    assert config["mistral_window"].sliding_window == WINDOW
    assert config["llama_bias"].qkv_bias and config["llama_bias"].o_bias
    for name, (reference, lm) in models.items():  # both sides read the same config.json
        assert reference.config.vocab_size == lm.config.vocab_size, name
        assert (lm.model.lm_head is None) == lm.config.tie_word_embeddings, name


def test_biases_land_where_they_belong(models):
    reference, lm = models["qwen2.5"]
    attention = reference.model.layers[1].self_attn
    layers = lm.model.layers
    for ours, theirs in [("q_bias", attention.q_proj), ("k_bias", attention.k_proj), ("v_bias", attention.v_proj)]:
        np.testing.assert_array_equal(np.asarray(getattr(layers, ours)[...][1]), theirs.bias.detach().numpy())
    assert attention.o_proj.bias is None and not hasattr(layers, "o_bias")
    reference, lm = models["llama_bias"]
    np.testing.assert_array_equal(np.asarray(lm.model.layers.o_bias[...][0]),
                                  reference.model.layers[0].self_attn.o_proj.bias.detach().numpy())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_full_logits_match_transformers(models, variant):
    reference, lm = models[variant]
    ids = _ids(lm)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    expected = _torch_logits(reference, ids, mask)
    got = np.asarray(lm.logits(ids, attention_mask=mask))
    real = mask.astype(bool)
    err = np.abs(got - expected)[real].max()
    assert err < TOL_F32, f"{variant}: max |diff| {err:.2e}, max |logit| {np.abs(expected).max():.2f}"
    assert np.abs(expected[real]).max() > 1.0  # not vacuous
    # selected_logits (last real position, a few ids) agree with the reference too
    token_ids = np.array([0, 5, lm.config.vocab_size - 1])
    selected = np.asarray(lm.selected_logits(token_ids, input_ids=ids, attention_mask=mask))
    last = np.array([11, 8])
    np.testing.assert_allclose(selected, expected[np.arange(2), last][:, token_ids], atol=TOL_F32, rtol=0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kv_cache_path_matches_transformers(models, variant):
    """A 7-token prefix cached once for 2 rows, then 5 new tokens per row (one right-padded)."""
    reference, lm = models[variant]
    ids = _ids(lm, seed=1)
    ids[1, :7] = ids[0, :7]  # the shared prefix
    g, p = lm.graphdef, lm.params
    _, cache = _prefill(g, p, lm.embed(ids[:1, :7]), jnp.ones((1, 7), jnp.int32))
    suffix_mask = np.ones((2, 5), np.int32)
    suffix_mask[1, 4] = 0
    hidden, new_cache = _extend(g, p, lm.embed(ids[:, 7:]), jnp.asarray(suffix_mask), cache)
    assert new_cache.keys.shape[:3] == (lm.config.num_hidden_layers, 2, 5)
    got = np.asarray(jnp.einsum("btd,vd->btv", hidden, lm.model.unembedding))
    mask = np.concatenate([np.ones((2, 7), np.int32), suffix_mask], axis=1)
    expected = _torch_logits(reference, ids, mask)[:, 7:]
    real = suffix_mask.astype(bool)
    err = np.abs(got - expected)[real].max()
    assert err < TOL_F32, f"{variant}: cached path max |diff| {err:.2e}"
    answers = np.asarray(_select(g, p, hidden, jnp.asarray(suffix_mask), jnp.array([1, 2])))
    np.testing.assert_allclose(answers, expected[np.arange(2), [4, 3]][:, [1, 2]], atol=TOL_F32, rtol=0)


def test_sliding_window_changes_the_answer(models):
    """The window matters on this input (so the parity above tests it), and only beyond the window."""
    reference, lm = models["mistral_window"]
    ids = _ids(lm, length=12, seed=2)
    no_window = dataclasses.replace(lm.config, sliding_window=None)  # same weights, no window
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: llama.Llama(no_window, rngs=nnx.Rngs(0))))
    full = np.asarray(llama.logits_fn(graphdef, lm.params, lm.embed(ids)))
    windowed = np.asarray(lm.logits(ids))
    np.testing.assert_allclose(windowed[:, :WINDOW], full[:, :WINDOW], atol=1e-5)  # nothing cut yet
    assert np.abs(windowed[:, WINDOW:] - full[:, WINDOW:]).max() > 1e-2
    np.testing.assert_allclose(windowed, _torch_logits(reference, ids), atol=TOL_F32, rtol=0)


def test_sliding_window_counts_real_tokens_under_left_padding(models):
    """A left-padded row equals the same tokens unpadded: the window counts real tokens, not pads.

    (transformers counts sequence indices, pads included, so it differs here; jaxalign's
    positions are ``cumsum(mask) - 1`` everywhere.)
    """
    _, lm = models["mistral_window"]
    ids = _ids(lm, batch=1, length=9, seed=3)
    padded = np.concatenate([np.zeros((1, 3), ids.dtype), ids], axis=1)
    mask = np.concatenate([np.zeros((1, 3), int), np.ones((1, 9), int)], axis=1)
    np.testing.assert_allclose(np.asarray(lm.logits(padded, attention_mask=mask))[:, 3:],
                               np.asarray(lm.logits(ids)), atol=1e-5)


def test_bfloat16_checkpoint_loads_exactly(models, tmp_path):
    """A bfloat16 Qwen2.5 checkpoint (torch_dtype bfloat16, as on the Hub) loads bit-exactly."""
    folder = write_hub_checkpoint(tmp_path / "qwen_bf16", "qwen2.5", vocab_size=VOCAB, dtype="bfloat16")
    reference = load_reference(folder, dtype="bfloat16")
    lm16 = _load(folder, dtype="bfloat16")
    lm32 = _load(folder, dtype="float32")
    torch_q_bias = reference.model.layers[0].self_attn.q_proj.bias.detach().float().numpy()
    torch_k = reference.model.layers[1].self_attn.k_proj.weight.detach().float().numpy()
    for lm in (lm16, lm32):
        np.testing.assert_array_equal(np.asarray(lm.model.layers.q_bias[...][0], np.float32), torch_q_bias)
        np.testing.assert_array_equal(np.asarray(lm.model.layers.k_proj[...][1], np.float32), torch_k.T)
    assert lm16.model.layers.q_proj[...].dtype == jnp.bfloat16
    # the same bfloat16 weights upcast: float32 parity with the upcast reference
    ids = _ids(lm32, seed=4)
    expected = _torch_logits(load_reference(folder, dtype="float32"), ids)
    assert np.abs(np.asarray(lm32.logits(ids)) - expected).max() < TOL_F32


_SHARDED_CHILD = textwrap.dedent(r"""
    import json, sys, warnings
    import numpy as np, jax
    from jaxalign import parallel
    from jaxalign.model import load_model
    warnings.simplefilter("ignore")
    folder = sys.argv[1]
    ids = np.random.default_rng(0).integers(0, 256, (2, 9))
    with jax.default_matmul_precision("float32"):
        plain = np.asarray(load_model(folder, dtype="float32").logits(ids))
        mesh = parallel.make_mesh(1, 2)
        lm = load_model(folder, dtype="float32", mesh=mesh)
        sharded = np.asarray(lm.logits(ids))
    layers = lm.params["layers"]
    print("RESULT " + json.dumps({"diff": float(np.abs(sharded - plain).max()),
                                  "q_bias": str(layers["q_bias"][...].sharding.spec),
                                  "k_bias": str(layers["k_bias"][...].sharding.spec)}))
""")


def test_biased_model_loads_sharded_over_the_model_axis(tmp_path):
    """Qwen2.5's q/k/v biases are placed on their heads' shards as they are read (2 CPU devices)."""
    folder = write_hub_checkpoint(tmp_path / "qwen_sharded", "qwen2.5", vocab_size=VOCAB)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()}
    proc = subprocess.run([sys.executable, "-c", _SHARDED_CHILD, str(folder)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    assert result["diff"] < TOL_F32, result
    assert "'model'" in result["q_bias"] and "'model'" in result["k_bias"], result
