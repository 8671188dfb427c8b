"""The model-family extension point: a family of its own, registered, loads through jaxalign.load_model.

The toy family ``"toyllama"`` runs the shared decoder like Llama but names its tensors its own
way (GPT-2 style: ``transformer.h.N.attn.q.weight``, ...), stores its linear weights ``(in, out)``
rather than PyTorch's ``(out, in)``, and reads its biases from its own ``config.json`` key
(``use_bias``). The same weights saved as a Llama checkpoint must give the same logits, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import jaxalign
from jaxalign.model import families
from jaxalign.model.config import LlamaConfig, hf_decoder_config

SHAPE = {"vocab_size": 48, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "rms_norm_eps": 1e-5,
         "max_position_embeddings": 128, "tie_word_embeddings": False, "rope_theta": 10000.0}
LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": True, **SHAPE}
TOY_CONFIG = {"architectures": ["ToyLlamaForCausalLM"], "model_type": "toyllama", "use_bias": True, **SHAPE}

TOY_NAMES = families.TensorNames(
    globals={"embed_tokens": "transformer.wte.weight", "norm": "transformer.ln_f.weight", "lm_head": "head.weight"},
    layer={
        "input_layernorm": "transformer.h.{layer}.ln_1.weight",
        "q_proj": "transformer.h.{layer}.attn.q.weight",
        "k_proj": "transformer.h.{layer}.attn.k.weight",
        "v_proj": "transformer.h.{layer}.attn.v.weight",
        "o_proj": "transformer.h.{layer}.attn.out.weight",
        "post_attention_layernorm": "transformer.h.{layer}.ln_2.weight",
        "gate_proj": "transformer.h.{layer}.mlp.gate.weight",
        "up_proj": "transformer.h.{layer}.mlp.up.weight",
        "down_proj": "transformer.h.{layer}.mlp.down.weight",
        "q_bias": "transformer.h.{layer}.attn.q.bias",
        "k_bias": "transformer.h.{layer}.attn.k.bias",
        "v_bias": "transformer.h.{layer}.attn.v.bias",
        "o_bias": "transformer.h.{layer}.attn.out.bias",
    },
    transposed=frozenset(),  # stored (in, out), as the model holds them
)


def _toy_config_from_hf(config):
    return hf_decoder_config(config, "toyllama",
                             lambda c: {"qkv_bias": bool(c.get("use_bias")), "o_bias": bool(c.get("use_bias"))})


TOY = families.Family(name="toyllama", description="a test double", model_types=("toyllama",),
                      hf_architectures=("ToyLlamaForCausalLM",), config_from_hf=_toy_config_from_hf,
                      hf_names=TOY_NAMES)


@pytest.fixture
def toy_family():
    families.register(TOY)
    try:
        yield TOY
    finally:
        families.unregister(TOY.name)


def _weights(seed: int = 0) -> dict[tuple[str, int | None], np.ndarray]:
    """(parameter, block) -> weight in the model's layout (linear weights (in, out))."""
    rng = np.random.default_rng(seed)
    d, f, v = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    q, kv = SHAPE["num_attention_heads"] * SHAPE["head_dim"], SHAPE["num_key_value_heads"] * SHAPE["head_dim"]
    w = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float32)  # noqa: E731
    out = {("embed_tokens", None): w(v, d), ("norm", None): 1 + w(d), ("lm_head", None): w(v, d)}
    for i in range(SHAPE["num_hidden_layers"]):
        out |= {("input_layernorm", i): 1 + w(d), ("post_attention_layernorm", i): 1 + w(d),
                ("q_proj", i): w(d, q), ("k_proj", i): w(d, kv), ("v_proj", i): w(d, kv), ("o_proj", i): w(q, d),
                ("gate_proj", i): w(d, f), ("up_proj", i): w(d, f), ("down_proj", i): w(f, d),
                ("q_bias", i): w(q), ("k_bias", i): w(kv), ("v_bias", i): w(kv), ("o_bias", i): w(d)}
    return out


def _save(folder: Path, config: dict, names: families.TensorNames, weights: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {names.name(param, layer): np.ascontiguousarray(value.T if param in names.transposed else value)
               for (param, layer), value in weights.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _load(folder: Path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no tokenizer files.*")
        return jaxalign.load_model(folder, dtype="float32")


def test_registered_family_loads_like_llama(tmp_path, toy_family):
    weights = _weights()
    llama_names = families.get("llama").hf_names
    toy = _load(_save(tmp_path / "toy", TOY_CONFIG, TOY_NAMES, weights))
    llama = _load(_save(tmp_path / "llama", LLAMA_CONFIG, llama_names, weights))

    assert families.family_for_model_type("toyllama") is toy_family
    assert toy.config.model_type == "toyllama" and toy.config.qkv_bias and toy.config.o_bias
    assert dataclasses.replace(toy.config, model_type="llama") == llama.config
    ids = np.random.default_rng(1).integers(0, SHAPE["vocab_size"], (3, 7))
    toy_logits, llama_logits = np.asarray(toy.logits(ids)), np.asarray(llama.logits(ids))
    assert np.isfinite(llama_logits).all() and np.abs(llama_logits).max() > 0.1
    np.testing.assert_array_equal(toy_logits, llama_logits)


def test_registered_family_checks_its_own_names(tmp_path, toy_family):
    """A Llama-named checkpoint under the toy model_type is refused, naming the toy tensors it lacks."""
    folder = _save(tmp_path / "wrong", TOY_CONFIG, families.get("llama").hf_names, _weights())
    with pytest.raises(ValueError, match=r"lacks .*transformer\.wte\.weight"):
        _load(folder)


def test_unknown_model_type_lists_registered_families(tmp_path, toy_family):
    folder = _save(tmp_path / "gemma", {**LLAMA_CONFIG, "model_type": "gemma", "architectures": ["GemmaForCausalLM"]},
                   families.get("llama").hf_names, _weights())
    with pytest.raises(ValueError, match=r"unsupported model_type 'gemma'.*registered families llama, qwen2, "
                                         r"mistral, toyllama.*'toyllama' \(ToyLlamaForCausalLM: a test double\)"):
        _load(folder)
    with pytest.raises(ValueError, match="unsupported model_type 'gemma'.*'toyllama'"):
        families.family_for_model_type("gemma")
    with pytest.raises(ValueError, match="unknown model family 'gemma'; registered families: .*toyllama"):
        families.get("gemma")


def test_registry_refuses_a_second_claim(toy_family):
    with pytest.raises(ValueError, match="already registered"):
        families.register(TOY)
    with pytest.raises(ValueError, match=r"claims \['llama'\], already claimed by family 'llama'"):
        families.register(dataclasses.replace(TOY, name="other", model_types=("llama",)))
    with pytest.raises(TypeError, match="takes a Family"):
        families.register("toyllama")


def test_unregistered_family_is_gone(tmp_path):
    """Outside the fixture the toy family is not registered: its checkpoint and config are refused."""
    assert families.names() == ("llama", "qwen2", "mistral")
    folder = _save(tmp_path / "toy", TOY_CONFIG, TOY_NAMES, _weights())
    with pytest.raises(ValueError, match="unsupported model_type 'toyllama'"):
        _load(folder)
    with pytest.raises(ValueError, match="unsupported model_type 'toyllama'"):
        LlamaConfig(**SHAPE, model_type="toyllama")
