"""GGUF files: written by the test with ``gguf.GGUFWriter`` from random transformers checkpoints.

Each file is what llama.cpp's converter writes for its architecture: metadata from the HF config,
a byte-level BPE tokenizer and a chat template, tensors under GGUF names with the dimensions
reversed, the q/k rows of ``llama`` permuted for llama.cpp's RoPE (``qwen2`` not), no
``output.weight`` for tied embeddings, and several storage types (F32 norms, F16, Q8_0, Q4_1,
Q5_0 layers). jaxalign's model from the file is checked against transformers' own reading of the
same file (``from_pretrained(folder, gguf_file=...)``, float32) and, for float storage, against
the checkpoint it was written from. Bad files (unsupported architecture, truncated) are refused
with one line before any tensor is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign  # noqa: E402
from jaxalign.fingerprint import model_fingerprint  # noqa: E402
from jaxalign.model import gguf as jgguf  # noqa: E402
from jaxalign.model import loader  # noqa: E402

Q = gguf.GGMLQuantizationType
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _byte_tokens() -> list[str]:
    """GPT-2's byte-level alphabet: 256 printable characters, one per byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def _hf_model(arch: str, seed: int = 0, tie: bool = True):
    torch.manual_seed(seed)
    common = dict(vocab_size=len(_byte_tokens()) + len(SPECIALS) + 1, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                  max_position_embeddings=256, tie_word_embeddings=tie)
    if arch == "llama":
        config = transformers.LlamaConfig(rope_theta=10_000.0, **common)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen2Config(rope_theta=1_000_000.0, use_sliding_window=False, **common)
        model = transformers.Qwen2ForCausalLM(config)
    with torch.no_grad():  # bigger weights than the init's, so the logits are far from uniform
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if "bias" in name else 0.08))
    return model.eval()


def llamacpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter on a q/k weight (out, in) or bias (out,): per head, the two halves of
    the rows interleaved (row i * half + j goes to row 2 * j + i)."""
    out = np.empty_like(weight)
    rows = weight.shape[0] // heads
    half = rows // 2
    for h in range(heads):
        for i in range(2):
            for j in range(half):
                out[h * rows + 2 * j + i] = weight[h * rows + i * half + j]
    return out


# HF layer tensor -> (GGUF name, storage type)
_LAYER = {
    "input_layernorm.weight": ("attn_norm.weight", Q.F32),
    "self_attn.q_proj.weight": ("attn_q.weight", Q.Q8_0),
    "self_attn.k_proj.weight": ("attn_k.weight", Q.F16),
    "self_attn.v_proj.weight": ("attn_v.weight", Q.Q4_1),
    "self_attn.o_proj.weight": ("attn_output.weight", Q.Q5_0),
    "self_attn.q_proj.bias": ("attn_q.bias", Q.F32),
    "self_attn.k_proj.bias": ("attn_k.bias", Q.F32),
    "self_attn.v_proj.bias": ("attn_v.bias", Q.F32),
    "post_attention_layernorm.weight": ("ffn_norm.weight", Q.F32),
    "mlp.gate_proj.weight": ("ffn_gate.weight", Q.Q8_0),
    "mlp.up_proj.weight": ("ffn_up.weight", Q.Q4_1),
    "mlp.down_proj.weight": ("ffn_down.weight", Q.F16),
}


def write_gguf(path: Path, model, arch: str, *, quantized: bool = True, architecture: str | None = None,
               template: str = TEMPLATE) -> Path:
    """Write ``model`` as llama.cpp's converter would (``quantized=False``: every tensor F32)."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture or arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"] if getattr(config, "rope_parameters", None)
                                    else config.rope_theta))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(SPECIALS[:1] + _byte_tokens() + SPECIALS[1:] + ["Hi"])
    writer.add_token_types([3] + [1] * 256 + [3, 3, 1])
    writer.add_token_merges(["H i"])
    writer.add_bos_token_id(257)
    writer.add_eos_token_id(258)
    writer.add_pad_token_id(258)
    writer.add_chat_template(template)
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}

    def put(name: str, value: np.ndarray, qtype) -> None:
        if not quantized or qtype == Q.F32:
            writer.add_tensor(name, value.astype(np.float32))
        elif qtype == Q.F16:
            writer.add_tensor(name, value.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(value.astype(np.float32), qtype), raw_dtype=qtype)

    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    put("token_embd.weight", state["model.embed_tokens.weight"], Q.Q8_0)
    for layer in range(config.num_hidden_layers):
        for hf_name, (name, qtype) in _LAYER.items():
            key = f"model.layers.{layer}.{hf_name}"
            if key not in state:
                continue
            value = state[key]
            projection = hf_name.split(".")[1]
            if arch == "llama" and projection in heads:
                value = llamacpp_permute(value, heads[projection])
            put(f"blk.{layer}.{name}", value, qtype)
    put("output_norm.weight", state["model.norm.weight"], Q.F32)
    if not config.tie_word_embeddings:
        put("output.weight", state["lm_head.weight"], Q.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """arch -> (GGUF file, the transformers model it was written from), written on first use."""
    cache: dict[tuple, tuple[Path, object]] = {}

    def get(arch: str, quantized: bool = True, tie: bool = True):
        key = (arch, quantized, tie)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{arch}_{int(quantized)}_{int(tie)}")
            model = _hf_model(arch, tie=tie)
            cache[key] = (write_gguf(folder / f"tiny-{arch}.gguf", model, arch, quantized=quantized), model)
        return cache[key]

    return get


def _transformers_reading(file: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(file.parent), gguf_file=file.name, dtype=torch.float32).eval()


IDS = np.asarray([[257, 10, 80, 200, 33, 5, 71, 99, 258, 140, 141, 3],
                  [257, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70]])


def _logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


# ------------------------------------------------------------------------------ parity
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_logits_equal_transformers_reading_of_the_file(arch, files):
    file, _ = files(arch)
    lm = jaxalign.load_model(file, dtype="float32")
    assert lm.config.model_type == arch and lm.config.tie_word_embeddings
    assert lm.config.qkv_bias == (arch == "qwen2")
    reference = _logits(_transformers_reading(file), IDS)
    got = np.asarray(lm.logits(IDS))
    err = np.abs(got - reference).max()
    assert err < 1e-4, f"{arch}: max |diff| {err:.2e}"
    assert np.abs(reference).max() > 1.0
    # the cached path (prefill then extend) gives the same logits
    from jaxalign.model import llama

    embeds = lm.embed(IDS)
    mask = np.ones(IDS.shape, np.int32)
    _, cache = llama.prefill_fn(lm.graphdef, lm.params, embeds[:, :7], mask[:, :7])
    hidden, _ = llama.extend_fn(lm.graphdef, lm.params, embeds[:, 7:], mask[:, 7:], cache)
    vocab, width = lm.config.vocab_size, lm.config.hidden_size
    cached = np.asarray(llama.token_logits(lm.graphdef, lm.params, hidden.reshape(-1, width),
                                           np.arange(vocab))).reshape(2, -1, vocab)  # (B, 5, V)
    assert np.abs(cached - reference[:, 7:]).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_float_file_equals_the_checkpoint_it_was_written_from(arch, files):
    """All-F32 storage: the file holds the checkpoint's exact weights, so jaxalign's model from the
    file equals the original transformers model (the q/k permutation undone, untied head read)."""
    file, model = files(arch, quantized=False, tie=False)
    lm = jaxalign.load_model(file, dtype="float32")
    assert not lm.config.tie_word_embeddings
    assert np.abs(np.asarray(lm.logits(IDS)) - _logits(model, IDS)).max() < 1e-4


def test_unpermute_undoes_llamacpp_permutation():
    rng = np.random.default_rng(0)
    for heads, rows in ((4, 16), (2, 16), (3, 64)):
        weight = rng.standard_normal((heads * rows, 5)).astype(np.float32)
        np.testing.assert_array_equal(jgguf.unpermute_rows(llamacpp_permute(weight, heads), heads), weight)
        bias = weight[:, 0].copy()
        np.testing.assert_array_equal(jgguf.unpermute_rows(llamacpp_permute(bias, heads), heads), bias)


def test_header_config_tokenizer_and_template(files):
    file, model = files("llama")
    header = jgguf.read_gguf(file)
    config = header.config
    assert (config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers,
            config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (260, 64, 128, 2, 4, 2, 16)
    assert config.rms_norm_eps == pytest.approx(1e-5, rel=1e-6) and config.rope_theta == 10_000.0
    assert header.tensor_types == {"F16": 4, "F32": 5, "Q4_1": 4, "Q5_0": 2, "Q8_0": 5}
    assert header.tensors["model.layers.0.self_attn.q_proj.weight"].shape == (64, 64)
    assert header.tensors["model.layers.1.mlp.gate_proj.weight"].shape == (128, 64)
    assert jgguf.gguf_hidden_size(file) == 64
    tok = jgguf.gguf_tokenizer(file)
    assert tok.chat_template == TEMPLATE and tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok("Hi!", add_special_tokens=False)["input_ids"] == [259, 1]  # the one merge, then "!"
    assert tok("iH", add_special_tokens=False)["input_ids"] == [1 + ord("i") - 33, 1 + ord("H") - 33]


def test_folder_with_one_gguf_and_fingerprint(files, tmp_path):
    file, _ = files("qwen2")
    assert jgguf.find_gguf(file) == file and jgguf.find_gguf(file.parent) == file
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="2 GGUF files"):
        jgguf.find_gguf(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert jgguf.find_gguf(tmp_path) is None  # a safetensors folder is not a GGUF one
    lm = jaxalign.load_model(file.parent, dtype="float32")
    assert lm.source == str(file.resolve())
    weights = model_fingerprint(lm)["weights"]
    assert weights["format"] == "gguf" and weights["files"] == {file.name: file.stat().st_size}
    assert weights["tensor_types"] == {"F16": 4, "F32": 11, "Q4_1": 4, "Q5_0": 2, "Q8_0": 5}
    # a changed tensor byte in a sampled range changes the fingerprint
    copy = tmp_path / "edited" / file.name
    copy.parent.mkdir()
    data = bytearray(file.read_bytes())
    entry = jgguf.read_gguf(file).tensors["model.layers.1.mlp.down_proj.weight"]
    data[entry.offset + entry.nbytes - 1] ^= 0xFF
    copy.write_bytes(bytes(data))
    from jaxalign.fingerprint import gguf_weights_fingerprint

    assert gguf_weights_fingerprint(copy)["sample"] != weights["sample"]
    assert gguf_weights_fingerprint(file) == weights


def test_int8_from_gguf_equals_int8_of_the_dequantised_weights(files):
    file, _ = files("llama")
    lm = jaxalign.load_model(file, dtype="float32", quantize="int8")
    assert lm.quantize == "int8" and model_fingerprint(lm)["quantize"] == "int8"
    from jaxalign.model.quantize import quantize_int8

    want = quantize_int8(np.asarray(jgguf.read_gguf_tensor(
        jgguf.read_gguf(file).tensors["model.layers.1.self_attn.k_proj.weight"])).T)
    got = lm.model.layers.k_proj
    np.testing.assert_array_equal(np.asarray(got.q[1]), np.asarray(want.q))
    np.testing.assert_allclose(np.asarray(got.scale[1]), np.asarray(want.scale), rtol=1e-6)


# ------------------------------------------------------------------------------ refusals
def _no_tensor_read(monkeypatch):
    def refuse(entry):
        raise AssertionError(f"tensor {entry.name} read")

    monkeypatch.setattr(jgguf, "read_gguf_tensor", refuse)


def test_unsupported_architecture_refused_before_any_tensor(files, tmp_path, monkeypatch):
    _, model = files("llama")
    file = write_gguf(tmp_path / "phi.gguf", model, "llama", architecture="phi3")
    _no_tensor_read(monkeypatch)
    with pytest.raises(ValueError) as error:
        jaxalign.load_model(file, dtype="float32")
    message = str(error.value)
    assert "\n" not in message and "unsupported GGUF architecture 'phi3'" in message
    assert "'llama'" in message and "'qwen2'" in message


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.01])
def test_truncated_file_refused_in_one_line(files, tmp_path, monkeypatch, keep):
    file, _ = files("llama")
    data = file.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:int(len(data) * keep)])
    _no_tensor_read(monkeypatch)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ValueError) as error:
        jaxalign.load_model(cut, dtype="float32")
    message = str(error.value)
    assert "\n" not in message and "not a readable GGUF file (truncated or corrupt?)" in message
    assert str(cut) in message
    # only the clear line: no raw numpy/reader text (e.g. "cannot reshape array of size ...")
    assert message.endswith("(truncated or corrupt?)") or ": its tensors end at byte" in message, message
    assert "reshape" not in message and "array" not in message
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_cli_score_on_gguf_refuses_bad_file_in_one_line(tmp_path, capsys):
    from jaxalign.cli import main

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    code = main(["score", "--model", str(bad)])
    errors = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert code != 0 and len(errors) == 1 and "not a readable GGUF file" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


def test_peek_hidden_size_reads_the_metadata(files, monkeypatch, tmp_path):
    file, _ = files("llama")
    _no_tensor_read(monkeypatch)
    assert loader.peek_hidden_size(file) == 64 and loader.peek_hidden_size(file.parent) == 64
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(file.read_bytes()[:100])
    assert loader.peek_hidden_size(cut) is None  # never raises
