"""Content fingerprints: each changes when what it covers changes, and only then."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import jaxalign
from jaxalign import fingerprint as fp
from jaxalign.model.tiny_tokenizer import tiny_tokenizer
from jaxalign.survey import Target, vsm13

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 48, "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 4, "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
}


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v, d, f, hd, h, kv = 48, 16, 24, 4, 4, 2

    def w(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    p = "model.layers.0."
    return {"model.embed_tokens.weight": w(v, d), "model.norm.weight": w(d), "lm_head.weight": w(v, d),
            p + "input_layernorm.weight": w(d), p + "post_attention_layernorm.weight": w(d),
            p + "self_attn.q_proj.weight": w(h * hd, d), p + "self_attn.k_proj.weight": w(kv * hd, d),
            p + "self_attn.v_proj.weight": w(kv * hd, d), p + "self_attn.o_proj.weight": w(d, h * hd),
            p + "mlp.gate_proj.weight": w(f, d), p + "mlp.up_proj.weight": w(f, d),
            p + "mlp.down_proj.weight": w(d, f)}


def _checkpoint(folder: Path, tensors: dict, config: dict = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _sample_bytes(nbytes: int) -> int:
    return sum(count for _, count in fp.sample_ranges(nbytes))


# ------------------------------------------------------------------------------ weights on disk
def test_weights_fingerprint_tracks_content_not_path(tmp_path):
    base = fp.weights_fingerprint(_checkpoint(tmp_path / "a", _tensors()))
    assert base == fp.weights_fingerprint(_checkpoint(tmp_path / "b", _tensors()))  # same content elsewhere
    # weights edited behind the same path: same names, shapes and file size
    edited = _tensors()
    edited["lm_head.weight"][0, 0] += 1.0
    changed = fp.weights_fingerprint(_checkpoint(tmp_path / "a", edited))
    assert changed["files"] == base["files"] and changed["sample"] != base["sample"]
    assert fp.weights_fingerprint(_checkpoint(tmp_path / "c", _tensors(seed=1)))["sample"] != base["sample"]


def test_weights_fingerprint_reads_a_small_sample(tmp_path, monkeypatch):
    """A 32 MiB tensor costs a few KiB of reads; the blind spot is bytes between the samples."""
    big = np.random.default_rng(0).normal(size=(2048, 4096)).astype(np.float32)  # 32 MiB
    folder = tmp_path / "big"
    folder.mkdir()
    save_file({"w": big, "b": np.ones(8, np.float32)}, str(folder / "model.safetensors"))
    read = []
    real = fp._read_at
    monkeypatch.setattr(fp, "_read_at", lambda h, o, n: read.append(n) or real(h, o, n))
    base = fp.weights_fingerprint(folder)
    header = (folder / "model.safetensors").stat().st_size - big.nbytes - 32
    assert sum(read) == header + _sample_bytes(big.nbytes) + 32
    assert sum(read) < 4096 < big.nbytes // 1000
    # a byte inside a sampled range is seen; one between the ranges is not (documented limit),
    # except by the exact full=True hash
    base_full = fp.weights_fingerprint(folder, full=True)
    start, count = fp.sample_ranges(big.nbytes)[1]
    for offset, seen in ((start + 4, True), (start + count + 1000, False)):
        flipped = big.copy().reshape(-1)
        flipped.view(np.uint8)[offset] ^= 1
        save_file({"w": flipped.reshape(big.shape), "b": np.ones(8, np.float32)}, str(folder / "model.safetensors"))
        assert (fp.weights_fingerprint(folder)["sample"] != base["sample"]) is seen, offset
        assert fp.weights_fingerprint(folder, full=True)["sample"] != base_full["sample"]


def test_sample_ranges_are_fixed_and_inside():
    for nbytes in (0, 4, 1535, 1536, 1537, 10_000, 1 << 30):
        ranges = fp.sample_ranges(nbytes)
        assert ranges == fp.sample_ranges(nbytes)
        assert all(0 <= o and o + n <= nbytes for o, n in ranges)
        assert sum(n for _, n in ranges) == min(nbytes, 1536)


# ------------------------------------------------------------------------------ model fingerprint
@pytest.fixture(scope="module")
def tokenized_checkpoint(tmp_path_factory):
    tok = tiny_tokenizer()
    config = {**CONFIG, "vocab_size": len(tok)}
    tensors = _tensors()
    rng = np.random.default_rng(2)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        tensors[name] = rng.normal(0, 0.2, (len(tok), 16)).astype(np.float32)
    folder = _checkpoint(tmp_path_factory.mktemp("ckpt") / "model", tensors, config)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_model_fingerprint_of_a_folder(tokenized_checkpoint, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = jaxalign.load_model(tokenized_checkpoint, dtype="float32")
    assert lm.source == str(Path(tokenized_checkpoint).resolve())
    base = fp.model_fingerprint(lm)
    assert base["weights"]["sampled"] == "sample" and "tokenizer_config.json" in base["tokenizer_files"]
    # the same files loaded with int8 weights: a resume or a saved prompt can tell
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = fp.model_fingerprint(jaxalign.load_model(tokenized_checkpoint, dtype="float32", quantize="int8"))
    assert "quantize" not in base and [k for k in int8 if int8[k] != base.get(k)] == ["quantize"]
    copy = tmp_path / "copy"
    shutil.copytree(tokenized_checkpoint, copy)
    assert fp.model_fingerprint(lm, folder=copy) == base
    # another chat template behind the same folder name
    template_file = copy / "chat_template.jinja"
    assert template_file.is_file(), sorted(p.name for p in copy.iterdir())
    template_file.write_text(template_file.read_text() + " ")
    changed = fp.model_fingerprint(lm, folder=copy)
    assert [k for k in base if changed[k] != base[k]] == ["chat_template_files"]
    # a config change with the same weights
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-6}))
    assert fp.model_fingerprint(lm, folder=copy)["config_files"] != base["config_files"]


@pytest.mark.slow
def test_model_fingerprint_in_memory():
    from jaxalign.model.tiny import tiny_model

    a = fp.model_fingerprint(tiny_model(seed=0))
    assert a == fp.model_fingerprint(tiny_model(seed=0))
    assert a["weights"]["sampled"] == "memory"
    b = fp.model_fingerprint(tiny_model(seed=1))
    assert b["weights"] != a["weights"] and b["config"] == a["config"] and b["tokenizer"] == a["tokenizer"]
    c = fp.model_fingerprint(tiny_model(dtype="bfloat16", seed=0))
    assert c["dtype"] == "bfloat16" and c["weights"] != a["weights"]


# ------------------------------------------------------------------------------ instrument, target
def test_instrument_fingerprint(tmp_path):
    base = vsm13()
    f0 = fp.instrument_fingerprint(base)
    assert f0 == fp.instrument_fingerprint(vsm13())
    item = base.items[3]
    reworded = dataclasses.replace(base, items=base.items[:3] + (dataclasses.replace(item, text=item.text + "?"),)
                                   + base.items[4:])
    relabelled = dataclasses.replace(base, items=base.items[:3] + (
        dataclasses.replace(item, options=item.options[:4] + (item.options[4] + ".",)),) + base.items[4:])
    constants = dataclasses.replace(base, constants=base.constants + np.eye(6)[2])
    weights = base.weights.copy()
    weights[0, 0] += 1
    formulas = dataclasses.replace(base, weights=weights)
    for changed, key in ((reworded, "items"), (relabelled, "items"), (constants, "constants"),
                         (formulas, "formulas")):
        f1 = fp.instrument_fingerprint(changed)
        assert [k for k in f0 if f0[k] != f1[k]] == [key]


def test_wording_file_edited_under_the_same_name(tmp_path):
    from jaxalign.survey.vsm13 import save_wording

    path = save_wording(vsm13(), tmp_path / "mine.json", name="mine")
    first = vsm13(wording=path)
    data = json.loads(path.read_text())
    data["items"][4]["text"] += " Please answer."
    path.write_text(json.dumps(data))
    second = vsm13(wording=path)
    assert first.wording == second.wording  # the name alone cannot tell them apart
    assert fp.instrument_fingerprint(first)["items"] != fp.instrument_fingerprint(second)["items"]


def test_target_fingerprint():
    a = Target("X", None, np.array([1, 2, 3, 4, 5, np.nan], np.float32))
    assert fp.target_fingerprint(a) == fp.target_fingerprint(Target("Y", "Y", a.values.copy()))
    b = Target("X", None, np.array([1, 2, 3, 4, 5.5, np.nan], np.float32))
    c = Target("X", None, np.array([1, 2, 3, 4, 5, 6], np.float32))
    assert len({fp.target_fingerprint(t)["values"] for t in (a, b, c)}) == 3


# ------------------------------------------------------------------------------ prompts, space
def test_prompt_fingerprint():
    from jaxalign.prompting import render_items as build_prompt_batch

    tok, inst = tiny_tokenizer(), vsm13()
    base = fp.prompt_fingerprint(build_prompt_batch(tok, inst))
    assert base == fp.prompt_fingerprint(build_prompt_batch(tok, inst))
    assert base != fp.prompt_fingerprint(build_prompt_batch(tok, inst, slot="system"))
    assert base != fp.prompt_fingerprint(build_prompt_batch(tok, inst, system="Be brief."))


def test_space_fingerprint():
    import jax

    from jaxalign.softprompt import full_space, subspace

    p0 = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    a = fp.space_fingerprint(subspace(p0, 4, jax.random.key(1), 0.5))
    assert a == fp.space_fingerprint(subspace(p0.copy(), 4, jax.random.key(1), 0.5))
    b = fp.space_fingerprint(subspace(p0, 4, jax.random.key(2), 0.5))
    assert b["p0"] == a["p0"] and b["basis"] != a["basis"]
    p1 = p0.copy()
    p1[2, 7] = np.nextafter(p1[2, 7], np.float32(np.inf))
    assert fp.space_fingerprint(full_space(p1))["p0"] != fp.space_fingerprint(full_space(p0))["p0"]
    assert fp.space_fingerprint(full_space(p0))["basis"] == "full space"
