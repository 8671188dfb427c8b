"""Checkpoint loading: config.json forms, safetensors streaming, errors, Hub ids, memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import jaxalign
from jaxalign.model import LlamaConfig

# A tiny checkpoint written with safetensors' numpy API (no torch needed here).
TINY_HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 48, "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 4, "rms_norm_eps": 1e-5, "max_position_embeddings": 128, "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
}


def _tensors(config: dict, dtype=np.float32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v, d, f = config["vocab_size"], config["hidden_size"], config["intermediate_size"]
    hd, h, kv = config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"]

    def w(*shape):
        return rng.normal(0, 0.2, shape).astype(dtype)

    out = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": w(d), "lm_head.weight": w(v, d)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out |= {p + "input_layernorm.weight": w(d), p + "post_attention_layernorm.weight": w(d),
                p + "self_attn.q_proj.weight": w(h * hd, d), p + "self_attn.k_proj.weight": w(kv * hd, d),
                p + "self_attn.v_proj.weight": w(kv * hd, d), p + "self_attn.o_proj.weight": w(d, h * hd),
                p + "mlp.gate_proj.weight": w(f, d), p + "mlp.up_proj.weight": w(f, d),
                p + "mlp.down_proj.weight": w(d, f)}
    return out


def _write(folder: Path, config: dict | None, tensors: dict | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _load(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no tokenizer files.*")
        return jaxalign.load_model(folder, **kwargs)


# -- config.json forms ------------------------------------------------------------------------

LLAMA_31_8B_CONFIG = {  # as published on the Hub (top-level rope_theta / rope_scaling)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "hidden_act": "silu",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}


def test_config_from_hub_form_llama31():
    config = LlamaConfig.from_hf(LLAMA_31_8B_CONFIG)
    assert (config.hidden_size, config.num_key_value_heads, config.head_dim) == (4096, 8, 128)
    assert config.rope_type == "llama3" and config.rope_theta == 500000.0
    assert config.rope_original_max_position_embeddings == 8192 and config.rope_factor == 8.0
    assert config.num_parameters == 8_030_261_248  # Llama-3.1-8B's published parameter count
    hash(config)  # static in the graph definition


def test_llama3_rope_frequencies_match_transformers():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig as HFConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = HFConfig(**{k: v for k, v in LLAMA_31_8B_CONFIG.items() if k not in ("architectures", "model_type")})
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, torch.device("cpu"))
    got = LlamaConfig.from_hf(LLAMA_31_8B_CONFIG).rope_inverse_frequencies()
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("rope_scaling", [None, "absent", {"rope_type": "default"}, {"type": "default"}])
def test_config_unscaled_rope_forms(rope_scaling):
    raw = {**LLAMA_31_8B_CONFIG, "rope_scaling": rope_scaling}  # Llama-3-8B has rope_scaling null
    if rope_scaling == "absent":
        del raw["rope_scaling"]
    config = LlamaConfig.from_hf(raw)
    assert config.rope_type == "default" and config.rope_theta == 500000.0
    exponents = np.arange(0, 128, 2) / 128
    np.testing.assert_allclose(config.rope_inverse_frequencies(), 500000.0 ** -exponents, rtol=1e-5)


def test_config_save_pretrained_form():
    raw = {**TINY_HF_CONFIG, "rope_parameters": {"rope_type": "llama3", "rope_theta": 1234.0, "factor": 4.0,
                                                  "low_freq_factor": 1.0, "high_freq_factor": 2.0}}
    config = LlamaConfig.from_hf(raw)
    assert config.rope_theta == 1234.0 and config.rope_factor == 4.0
    assert config.rope_original_max_position_embeddings == 128  # falls back to max_position_embeddings


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gemma"}, "unsupported model_type 'gemma'.*'llama'.*'qwen2'.*'mistral'"),
    ({"model_type": None}, "unsupported model_type None"),
    ({"architectures": ["LlamaForSequenceClassification"]}, "LlamaForCausalLM only"),
    ({"model_type": "qwen2", "architectures": ["LlamaForCausalLM"]}, "Qwen2ForCausalLM only"),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True},
     "Qwen2 sliding-window attention"),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
      "layer_types": ["full_attention", "sliding_attention"]}, "Qwen2 sliding-window"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "unsupported rope scaling type 'yarn'"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 0}, "sliding_window"),
    ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
])
def test_config_errors(change, message):
    with pytest.raises(ValueError, match=message):
        LlamaConfig.from_hf({**TINY_HF_CONFIG, **change})


def test_config_family_fields():
    """Biases and sliding window follow each family's config.json (transformers' defaults when absent)."""
    llama = LlamaConfig.from_hf(TINY_HF_CONFIG)
    assert (llama.model_type, llama.qkv_bias, llama.o_bias, llama.sliding_window) == ("llama", False, False, None)
    biased = LlamaConfig.from_hf({**TINY_HF_CONFIG, "attention_bias": True})  # Llama: q, k, v and o biases
    assert biased.qkv_bias and biased.o_bias
    assert biased.num_parameters == llama.num_parameters + 2 * (16 + 2 * 8 + 16)
    qwen = LlamaConfig.from_hf({**TINY_HF_CONFIG, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                                "use_sliding_window": False, "sliding_window": 32768})
    assert (qwen.model_type, qwen.qkv_bias, qwen.o_bias, qwen.sliding_window) == ("qwen2", True, False, None)
    mistral = {**TINY_HF_CONFIG, "model_type": "mistral", "architectures": ["MistralForCausalLM"]}
    assert LlamaConfig.from_hf({**mistral, "sliding_window": None}).sliding_window is None
    assert LlamaConfig.from_hf({**mistral, "sliding_window": 4096}).sliding_window == 4096
    assert LlamaConfig.from_hf(mistral).sliding_window == 4096  # transformers' MistralConfig default
    assert not LlamaConfig.from_hf(mistral).qkv_bias


def test_config_missing_field():
    raw = dict(TINY_HF_CONFIG)
    del raw["hidden_size"]
    with pytest.raises(ValueError, match="hidden_size"):
        LlamaConfig.from_hf(raw)


# -- loading ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    tensors = _tensors(TINY_HF_CONFIG)
    return _write(folder, TINY_HF_CONFIG, tensors), tensors


def test_weights_land_where_they_belong(checkpoint):
    folder, tensors = checkpoint
    lm = _load(folder, dtype="float32")
    assert lm.name == str(folder) and lm.dtype == jnp.float32 and lm.tokenizer is None
    layers = lm.model.layers
    assert layers.q_proj[...].shape == (2, 16, 16) and layers.k_proj[...].shape == (2, 16, 8)
    np.testing.assert_array_equal(np.asarray(layers.k_proj[...][1]),
                                  tensors["model.layers.1.self_attn.k_proj.weight"].T)
    np.testing.assert_array_equal(np.asarray(layers.down_proj[...][0]),
                                  tensors["model.layers.0.mlp.down_proj.weight"].T)
    np.testing.assert_array_equal(np.asarray(layers.post_attention_layernorm[...][1]),
                                  tensors["model.layers.1.post_attention_layernorm.weight"])
    np.testing.assert_array_equal(np.asarray(lm.model.lm_head[...]), tensors["lm_head.weight"])
    np.testing.assert_array_equal(np.asarray(lm.embedding_matrix), tensors["model.embed_tokens.weight"])


def test_missing_tokenizer_warns(checkpoint):
    with pytest.warns(UserWarning, match="no tokenizer files"):
        lm = jaxalign.load_model(checkpoint[0], dtype="float32")
    assert lm.tokenizer is None


def test_tokenizer_is_loaded_from_folder(checkpoint, tmp_path):
    from jaxalign.model.tiny_tokenizer import tiny_tokenizer

    folder = tmp_path / "with_tokenizer"
    shutil.copytree(checkpoint[0], folder)
    tiny_tokenizer().save_pretrained(folder)
    lm = jaxalign.load_model(folder, dtype="float32")
    text = "How often do you feel nervous or tense? 3"
    assert lm.tokenizer.encode(text) == tiny_tokenizer().encode(text)
    assert lm.tokenizer.chat_template == tiny_tokenizer().chat_template


def test_bfloat16_checkpoint_to_both_dtypes(tmp_path):
    tensors = _tensors(TINY_HF_CONFIG, dtype=ml_dtypes.bfloat16)
    folder = _write(tmp_path / "bf16", TINY_HF_CONFIG, tensors)
    for dtype, jdtype in [("float32", jnp.float32), (jnp.bfloat16, jnp.bfloat16)]:
        lm = _load(folder, dtype=dtype)
        q = lm.model.layers.q_proj[...]
        assert q.dtype == jdtype
        np.testing.assert_array_equal(np.asarray(q[0], np.float32),
                                      tensors["model.layers.0.self_attn.q_proj.weight"].T.astype(np.float32))


def test_float16_checkpoint(tmp_path):
    tensors = _tensors(TINY_HF_CONFIG, dtype=np.float16)
    lm = _load(_write(tmp_path / "f16", TINY_HF_CONFIG, tensors), dtype="float32")
    np.testing.assert_array_equal(np.asarray(lm.model.norm[...]), tensors["model.norm.weight"].astype(np.float32))


def test_tied_checkpoint_ignores_redundant_head_and_inv_freq(tmp_path):
    config = {**TINY_HF_CONFIG, "tie_word_embeddings": True}
    tensors = _tensors(config)
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(2, np.float32)  # old checkpoints
    lm = _load(_write(tmp_path / "tied", config, tensors), dtype="float32")
    assert lm.model.lm_head is None
    np.testing.assert_array_equal(np.asarray(lm.model.unembedding), tensors["model.embed_tokens.weight"])


@pytest.mark.parametrize("dtype", ["float16", "fp32", jnp.int8, None])
def test_bad_dtype(checkpoint, dtype):
    with pytest.raises(ValueError, match="dtype must be float32 or bfloat16"):
        jaxalign.load_model(checkpoint[0], dtype=dtype)


def test_folder_without_weights(tmp_path):
    folder = _write(tmp_path / "noweights", TINY_HF_CONFIG, None)
    (folder / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors weights.*pytorch_model\.bin"):
        _load(folder)


def test_missing_config(tmp_path):
    folder = _write(tmp_path / "noconfig", None, _tensors(TINY_HF_CONFIG))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        _load(folder)


@pytest.mark.parametrize("model_type, architecture", [
    ("gemma", "GemmaForCausalLM"), ("phi3", "Phi3ForCausalLM"), ("llava", "LlavaForConditionalGeneration")])
def test_unsupported_model_type_refused_before_weights(tmp_path, model_type, architecture):
    """The model_type error comes first: the (corrupt) safetensors file is never opened."""
    folder = _write(tmp_path / model_type, {**TINY_HF_CONFIG, "model_type": model_type,
                                             "architectures": [architecture]}, None)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)  # not a safetensors file
    with pytest.raises(ValueError, match=f"unsupported model_type '{model_type}'.*supported.*'llama'.*"
                                         "'qwen2'.*'mistral'"):
        _load(folder)
    (folder / "config.json").write_text(json.dumps(TINY_HF_CONFIG))  # a supported model reads the file
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        _load(folder)


def test_unsupported_hub_model_downloads_only_its_config(tmp_path, monkeypatch):
    import huggingface_hub

    folder = _write(tmp_path / "gemma", {**TINY_HF_CONFIG, "model_type": "gemma",
                                          "architectures": ["GemmaForCausalLM"]}, None)
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append(allow_patterns)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ValueError, match="unsupported model_type 'gemma'"):
        jaxalign.load_model("google/gemma-2b")
    assert calls == [["config.json"]]


def test_mismatched_shape_names_tensor(tmp_path):
    tensors = _tensors(TINY_HF_CONFIG)
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((25, 16), np.float32)
    folder = _write(tmp_path / "shape", TINY_HF_CONFIG, tensors)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*model\.safetensors.*\(25, 16\)"):
        _load(folder)


def test_missing_tensor_named(tmp_path):
    tensors = _tensors(TINY_HF_CONFIG)
    del tensors["model.layers.0.self_attn.v_proj.weight"]
    with pytest.raises(ValueError, match=r"lacks 1 tensor.*model\.layers\.0\.self_attn\.v_proj\.weight"):
        _load(_write(tmp_path / "missing", TINY_HF_CONFIG, tensors))


def test_untied_config_without_head_is_missing(tmp_path):
    tensors = _tensors(TINY_HF_CONFIG)
    del tensors["lm_head.weight"]
    with pytest.raises(ValueError, match="lm_head.weight"):
        _load(_write(tmp_path / "nohead", TINY_HF_CONFIG, tensors))


def test_unexpected_tensor_named(tmp_path):
    tensors = _tensors(TINY_HF_CONFIG)
    tensors["model.layers.2.mlp.up_proj.weight"] = np.zeros((24, 16), np.float32)
    with pytest.raises(ValueError, match=r"unexpected tensor.*model\.layers\.2\.mlp\.up_proj\.weight"):
        _load(_write(tmp_path / "extra", TINY_HF_CONFIG, tensors))


def test_unsupported_tensor_dtype_named(tmp_path):
    tensors = _tensors(TINY_HF_CONFIG)
    tensors["model.layers.0.mlp.gate_proj.weight"] = np.zeros((24, 16), np.int8)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*unsupported dtype I8"):
        _load(_write(tmp_path / "int8", TINY_HF_CONFIG, tensors))


def test_truncated_file(tmp_path):
    folder = _write(tmp_path / "trunc", TINY_HF_CONFIG, _tensors(TINY_HF_CONFIG))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        _load(folder)


def test_sharded_index_with_missing_shard(tmp_path):
    folder = _write(tmp_path / "shards", TINY_HF_CONFIG, None)
    tensors = _tensors(TINY_HF_CONFIG)
    names = sorted(tensors)
    save_file({n: tensors[n] for n in names[:10]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({n: tensors[n] for n in names[10:]}, str(folder / "model-00002-of-00002.safetensors"))
    weight_map = {n: ("model-00001-of-00002.safetensors" if i < 10 else "model-00002-of-00002.safetensors")
                  for i, n in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    lm = _load(folder, dtype="float32")
    np.testing.assert_array_equal(np.asarray(lm.model.norm[...]), tensors["model.norm.weight"])
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        _load(folder)


def test_nonexistent_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        jaxalign.load_model(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        jaxalign.load_model("not-a-model")


def test_hub_id_goes_through_snapshot_download(checkpoint, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns))
        return str(checkpoint[0])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    lm = _load("meta-llama/Meta-Llama-3-8B-Instruct", dtype="float32", revision="main")
    assert lm.name == "meta-llama/Meta-Llama-3-8B-Instruct"
    (config_call, (repo_id, revision, patterns)) = calls
    assert config_call == ("meta-llama/Meta-Llama-3-8B-Instruct", "main", ["config.json"])  # checked first
    assert repo_id == "meta-llama/Meta-Llama-3-8B-Instruct" and revision == "main"
    assert {"config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json"} <= set(patterns)
    assert not any(p.endswith((".bin", ".pth", "*")) and p != "*.safetensors" for p in patterns)


def test_hub_failure_is_clear(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="downloading it as a Hugging Face Hub id failed.*unreachable"):
        jaxalign.load_model("someone/some-model")


# -- memory ----------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(r"""
    import json, sys, numpy as np
    from safetensors.numpy import save_file
    folder = sys.argv[1]
    # ~300 MB float32; like Llama-3-8B, no single tensor is more than a few % of the model
    v, d, f, L, kv = 4096, 768, 2048, 12, 256
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": v,
              "hidden_size": d, "intermediate_size": f, "num_hidden_layers": L,
              "num_attention_heads": 12, "num_key_value_heads": 4, "rms_norm_eps": 1e-5,
              "tie_word_embeddings": False, "rope_theta": 500000.0, "rope_scaling": None}
    if sys.argv[2] == "write":
        rng = np.random.default_rng(0)
        shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), "lm_head.weight": (v, d)}
        for i in range(L):
            p = f"model.layers.{i}."
            shapes |= {p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                       p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                       p + "mlp.down_proj.weight": (d, f)}
        names = sorted(shapes)
        half = len(names) // 2
        weight_map = {}
        for k, part in enumerate((names[:half], names[half:])):
            file = f"model-0000{k + 1}-of-00002.safetensors"
            save_file({n: rng.standard_normal(shapes[n], dtype=np.float32) for n in part}, f"{folder}/{file}")
            weight_map |= {n: file for n in part}
        json.dump({"weight_map": weight_map}, open(f"{folder}/model.safetensors.index.json", "w"))
        json.dump(config, open(f"{folder}/config.json", "w"))
        sys.exit(0)

    import warnings
    import jax, jax.numpy as jnp
    import jaxalign
    from jaxalign.model import loader

    def status(key):
        with open("/proc/self/status") as lines:
            for line in lines:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    # warm up: imports and the small jitted write/cast programs (not part of a model's footprint)
    warm = jax.block_until_ready(loader._write_layer_jit(jnp.zeros((2, 3, 2)), jnp.int32(0), jnp.ones((2, 3)), True))
    baseline = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak-RSS counter (VmHWM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = jaxalign.load_model(folder, dtype="float32")
    jax.block_until_ready(lm.params)
    peak = status("VmHWM:")
    after = status("VmRSS:")
    param_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(lm.params))
    print(json.dumps({"baseline": baseline, "peak": peak, "after": after, "param_bytes": param_bytes}))
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_loading_streams_without_a_second_copy(tmp_path):
    """Peak RSS growth while loading a ~300 MB float32 checkpoint stays below 1.3x its size.

    A loader that first reads the whole checkpoint into host memory and then converts it would
    need ~2x; this one holds the finished model plus about one tensor.
    """
    script = tmp_path / "memory_probe.py"
    script.write_text(_MEMORY_SCRIPT)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, str(script), str(tmp_path), "write"], check=True, env=env)
    checkpoint_bytes = sum(p.stat().st_size for p in tmp_path.glob("*.safetensors"))
    result = subprocess.run([sys.executable, str(script), str(tmp_path), "load"], check=True, env=env,
                            capture_output=True, text=True)
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    growth = numbers["peak"] - numbers["baseline"]
    assert numbers["param_bytes"] == pytest.approx(checkpoint_bytes, rel=0.01)
    ratio = growth / checkpoint_bytes
    print(f"checkpoint {checkpoint_bytes / 2**20:.0f} MiB, peak RSS growth {growth / 2**20:.0f} MiB "
          f"({ratio:.2f}x)")
    assert ratio < 1.3, f"peak RSS growth {growth / 2**20:.0f} MiB = {ratio:.2f}x the checkpoint"
    assert ratio > 0.9  # the measurement sees the model itself
