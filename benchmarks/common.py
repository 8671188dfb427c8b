"""Shared pieces of the benchmark scripts: model presets, device facts, FLOP counts, the PyTorch twin.

Nothing here is part of the library's API; the scripts in this folder use it.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import resource
import shlex
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PRESETS: tuple[str, ...] = ("tiny", "100m", "llama3-8b")


# -- run metadata ---------------------------------------------------------------------------------

def run_metadata(script: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Date (local, ISO 8601 with offset), the exact command, and software versions.

    ``script`` is the script's path relative to the repository (``benchmarks/dims.py``);
    ``argv`` its arguments (default ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", script, *argv]),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "host": platform.node(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_cores() -> int:
    """Cores this process may run on (``sched_getaffinity``; logical CPUs, SMT siblings count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_info() -> dict[str, Any]:
    """What the default JAX device is: platform, kind, count, plus the host CPU."""
    device = jax.devices()[0]
    kind = device.device_kind
    if device.platform == "cpu":
        kind = f"{cpu_model()} ({cpu_cores()} cores)"
    return {
        "platform": device.platform,
        "device_kind": kind,
        "n_devices": jax.device_count(),
        "cpu_model": cpu_model(),
        "cpu_cores": cpu_cores(),
    }


def describe_device() -> str:
    """One line, e.g. ``"gpu: NVIDIA H100 80GB HBM3 x1"`` or ``"cpu: AMD EPYC (2 cores)"``."""
    info = device_info()
    suffix = f" x{info['n_devices']}" if info["platform"] != "cpu" else ""
    return f"{info['platform']}: {info['device_kind']}{suffix}"


# -- peak FLOP/s ----------------------------------------------------------------------------------

# Dense (no sparsity) peak FLOP/s of one chip, from the vendors' datasheets. Keys are matched as
# lower-case substrings of ``jax.Device.device_kind`` (first match wins, so specific names first).
# "float32" on NVIDIA tensor-core GPUs is the TF32 tensor-core peak: XLA runs float32 matmuls in
# TF32 by default there (jax_default_matmul_precision unset). On TPUs float32 matmuls are
# emulated with several bfloat16 passes, so no single peak applies (None: pass --peak-flops).
PEAK_FLOPS: tuple[tuple[str, dict[str, float | None]], ...] = (
    ("h200", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("h100 pcie", {"bfloat16": 756.0e12, "float32": 378.0e12}),
    ("h100 nvl", {"bfloat16": 835.0e12, "float32": 417.5e12}),
    ("h100", {"bfloat16": 989.4e12, "float32": 494.7e12}),    # SXM
    ("a100", {"bfloat16": 312.0e12, "float32": 156.0e12}),
    ("tpu v6 lite", {"bfloat16": 918.0e12, "float32": None}),  # v6e
    ("tpu v5 lite", {"bfloat16": 197.0e12, "float32": None}),  # v5e
    ("tpu v5p", {"bfloat16": 459.0e12, "float32": None}),
    ("tpu v5", {"bfloat16": 459.0e12, "float32": None}),       # v5p reports "TPU v5"
    ("tpu v4", {"bfloat16": 275.0e12, "float32": None}),
)


def cpu_peak_flops_estimate() -> tuple[float, str]:
    """A rough float32 peak for this CPU: cores x clock x FLOPs per cycle.

    FLOPs per cycle assume two FMA pipes: 64 with AVX-512 on Intel (two 512-bit FMAs), 32 with
    AVX2 or AVX-512 on AMD (Zen 4 splits 512-bit FMAs into two 256-bit halves), 8 otherwise.
    Logical CPUs are counted as cores, which overstates the peak when they are SMT siblings.
    XLA's CPU backend computes bfloat16 matmuls in float32, so the same figure serves both.
    """
    flags, mhz, vendor = set(), 0.0, ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "cpu MHz" and not mhz:
                    mhz = float(value)
                elif key == "vendor_id" and not vendor:
                    vendor = value.strip()
    except (OSError, ValueError):
        pass
    if "avx512f" in flags and "Intel" in vendor:
        per_cycle = 64
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 32
    else:
        per_cycle = 8
    ghz = (mhz or 2000.0) / 1000.0
    cores = cpu_cores()
    how = (f"estimate: {cores} cores x {ghz:.2f} GHz x {per_cycle} float32 FLOPs/cycle "
           f"({'/proc/cpuinfo clock' if mhz else 'assumed 2 GHz'})")
    return cores * ghz * 1e9 * per_cycle, how


def peak_flops(dtype: str, override: float | None = None) -> tuple[float | None, str]:
    """Peak FLOP/s of all local devices for ``dtype`` and where the figure comes from."""
    if override is not None:
        return float(override), "--peak-flops"
    device = jax.devices()[0]
    if device.platform == "cpu":
        return cpu_peak_flops_estimate()
    kind = device.device_kind.lower()
    for key, table in PEAK_FLOPS:
        if key in kind:
            value = table.get(dtype)
            if value is None:
                return None, f"no {dtype} peak listed for {device.device_kind}; pass --peak-flops"
            n = jax.local_device_count()
            return value * n, f"datasheet peak for {device.device_kind} ({dtype}, dense) x{n}"
    return None, f"unknown device {device.device_kind!r}; pass --peak-flops"


# -- FLOP counting -------------------------------------------------------------------------------

def non_embedding_params(config) -> int:
    """Weights used per token by the decoder layers and final norm (embeddings and LM head excluded)."""
    head = 0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size
    return int(config.num_parameters - config.vocab_size * config.hidden_size - head)


def model_flops(config, real_lengths: np.ndarray) -> float:
    """Forward FLOPs of sequences with ``real_lengths`` real tokens each (padding excluded).

    ``2 * non_embedding_params * tokens`` for the matmuls with weights, plus causal attention:
    per layer, ``Q K^T`` and ``A V`` each cost ``2 * heads * head_dim`` per (query, visible key)
    pair, and a sequence of ``n`` tokens has ``n (n + 1) / 2`` such pairs. The five answer rows of
    the LM head are negligible and not counted. This is the work of scoring every sequence from
    scratch: a scorer that shares work between sequences (a prefix computed once) does less, and
    its "MFU" by this count is an effective figure that can exceed what the hardware executes.
    """
    lengths = np.asarray(real_lengths, np.float64)
    dense = 2.0 * non_embedding_params(config) * lengths.sum()
    pairs = (lengths * (lengths + 1) / 2).sum()
    attention = config.num_hidden_layers * 4.0 * config.num_attention_heads * config.head_dim * pairs
    return float(dense + attention)


def executed_flops(config, scorer, population: int) -> float:
    """Forward FLOPs a :class:`jaxalign.scoring.Scorer` really executes for ``population`` members.

    Counted from its length buckets, padding included (the hardware computes it too), the
    attention as the full score matrix each call computes (masked entries included):

    - ``mode="full"``: ``P * Qb`` rows of ``T = Tp + K + Ts`` tokens, ``T * T`` pairs each.
    - ``mode="cached"``, shared prefix: the prefix once (``Tp`` tokens); ``P`` rows of ``K`` soft
      tokens against ``Tp + K`` keys; ``Qb * P`` rows of ``Ts`` item tokens against
      ``Tp + K + Ts`` keys.
    - ``mode="cached"``, per-item prefix (item first): ``Qb`` rows of ``Tp`` tokens; ``P * Qb``
      rows of ``K + Ts`` tokens against ``Tp + K + Ts`` keys.

    Dense work is ``2 * non_embedding_params`` per token, attention ``4 * heads * head_dim`` per
    (query, key) pair and layer, as in :func:`model_flops`; the five LM-head rows are not counted.
    """
    k = scorer.k
    tokens = pairs = 0.0
    for bucket in scorer.inputs.buckets:
        n_items, tp = bucket.prefix_ids.shape
        ts = bucket.suffix_ids.shape[1]
        if scorer.mode == "full":
            t = tp + k + ts
            tokens += population * n_items * t
            pairs += population * n_items * t * t
        elif bucket.prefix_shared:
            tokens += tp + population * k + n_items * population * ts
            pairs += tp * tp + population * k * (tp + k) + n_items * population * ts * (tp + k + ts)
        else:
            tokens += n_items * tp + population * n_items * (k + ts)
            pairs += n_items * tp * tp + population * n_items * (k + ts) * (tp + k + ts)
    dense = 2.0 * non_embedding_params(config) * tokens
    attention = config.num_hidden_layers * 4.0 * config.num_attention_heads * config.head_dim * pairs
    return float(dense + attention)


# -- memory --------------------------------------------------------------------------------------

def host_peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_device_memory() -> tuple[int, str]:
    """``(bytes, source)``: the device allocator's peak, or the host's peak RSS where there is none."""
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device memory_stats peak_bytes_in_use"
    return host_peak_rss_bytes(), "host peak RSS (no device memory stats on this backend)"


# -- model presets -------------------------------------------------------------------------------

def preset_config(preset: str, vocab_size: int | None = None, layers: int | None = None):
    """The :class:`jaxalign.LlamaConfig` of a preset (``layers`` overrides the depth)."""
    from jaxalign import LlamaConfig
    from jaxalign.model.tiny import tiny_config

    if preset == "tiny":
        config = tiny_config(vocab_size or 1024)
    elif preset == "100m":
        # ~134M weights in all, 85M of them in the 12 decoder layers (GPT-2-small-like width)
        config = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048,
                             num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                             head_dim=64, rms_norm_eps=1e-5, rope_theta=10_000.0)
    elif preset == "llama3-8b":
        config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                             num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                             head_dim=128, rms_norm_eps=1e-5, rope_theta=500_000.0)
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if layers is not None:
        if layers < 1:
            raise ValueError(f"--layers must be >= 1, got {layers}")
        config = dataclasses.replace(config, num_hidden_layers=int(layers))
    return config


def build_preset(preset: str, dtype: str = "float32", *, layers: int | None = None, seed: int = 0):
    """A :class:`jaxalign.LM` of the preset's shape with the tiny tokenizer for the text.

    ``tiny`` is exactly ``load_model("tiny-random")`` (unless ``layers`` changes it). ``100m`` draws
    weights N(0, 0.02), LM head N(0, 0.05) (so answer distributions are not uniform), with NumPy.
    ``llama3-8b`` draws bfloat16/float32 weights N(0, 0.02) on the device with ``jax.random`` (the
    host would need 32 GB and minutes for NumPy draws). The model's vocabulary may be larger than
    the tokenizer's: the text only uses the tokenizer's ids.
    """
    import jaxalign
    from jaxalign.model import LM, Llama
    from jaxalign.model.tiny import TINY_HEAD_INIT_STD, TINY_INIT_STD, random_llama
    from jaxalign.model.tiny_tokenizer import tiny_tokenizer

    if preset == "tiny" and layers is None:
        return jaxalign.load_model("tiny-random", dtype=dtype, seed=seed)
    tokenizer = tiny_tokenizer()
    config = preset_config(preset, vocab_size=len(tokenizer), layers=layers)
    if preset == "tiny":
        model = random_llama(config, dtype=dtype, seed=seed, init_std=TINY_INIT_STD,
                             head_init_std=TINY_HEAD_INIT_STD)
    elif preset == "100m":
        model = random_llama(config, dtype=dtype, seed=seed, init_std=0.02, head_init_std=0.05)
    else:
        from flax import nnx

        model = Llama(config, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(seed), init_std=0.02,
                      head_init_std=0.05)
    name = preset if layers is None else f"{preset}-{layers}layers"
    return LM(name=f"random-{name}", config=config, model=model, tokenizer=tokenizer)


def generations_for_budget(population: int, budget: int) -> int:
    """Generations that spend ``budget`` forward passes at ``population`` members per generation
    (the initial population included: ``population * (generations + 1)``; at least 1)."""
    return max(1, round(budget / population) - 1)


def random_prompts(lm, population: int, k: int, seed: int = 0) -> jax.Array:
    """``(P, K, d)`` float32 soft prompts drawn N(0, std of the embedding table)."""
    std = float(jnp.std(lm.embedding_matrix.astype(jnp.float32)))
    shape = (population, k, lm.config.hidden_size)
    return std * jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# -- the PyTorch twin -----------------------------------------------------------------------------

def hf_config(config, torch_dtype: str):
    """A transformers ``LlamaConfig`` equal to jaxalign's ``config``."""
    import transformers

    rope: dict[str, Any] = {"rope_type": config.rope_type, "rope_theta": config.rope_theta}
    if config.rope_type == "llama3":
        rope.update(factor=config.rope_factor, low_freq_factor=config.rope_low_freq_factor,
                    high_freq_factor=config.rope_high_freq_factor,
                    original_max_position_embeddings=config.rope_original_max_position_embeddings)
    return transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim,
        rms_norm_eps=config.rms_norm_eps, max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings, rope_parameters=rope,
        attention_bias=False, mlp_bias=False, hidden_act="silu", dtype=torch_dtype,
    )


def _to_torch(array: jax.Array, torch_dtype):
    import torch

    host = np.asarray(array)
    if host.dtype.name == "bfloat16":  # ml_dtypes bfloat16: reinterpret the bits
        return torch.from_numpy(host.view(np.uint16).copy()).view(torch.bfloat16).to(torch_dtype)
    return torch.from_numpy(np.array(host, copy=True)).to(torch_dtype)


def torch_model_from_lm(lm, *, device: str = "cpu"):
    """transformers ``LlamaForCausalLM`` holding exactly ``lm``'s weights (same dtype), eval mode.

    The inverse of jaxalign's loader: stacked ``(L, in, out)`` weights are split per layer and
    transposed to HF's ``(out, in)``. Bit-identical copies, so outputs differ only by kernels.
    """
    import torch
    import transformers

    dtype_name = "bfloat16" if lm.dtype == jnp.bfloat16 else "float32"
    torch_dtype = getattr(torch, dtype_name)
    config = hf_config(lm.config, dtype_name)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    weights = lm.model
    state = {
        "model.embed_tokens.weight": _to_torch(weights.embed_tokens[...], torch_dtype),
        "model.norm.weight": _to_torch(weights.norm[...], torch_dtype),
    }
    if weights.lm_head is not None:
        state["lm_head.weight"] = _to_torch(weights.lm_head[...], torch_dtype)
    hf_names = {
        "input_layernorm": "input_layernorm", "post_attention_layernorm": "post_attention_layernorm",
        "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
        "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
        "down_proj": "mlp.down_proj",
    }
    stacked = weights.layers.stacked()
    for name, hf_name in hf_names.items():
        full = _to_torch(stacked[name], torch_dtype)  # (L, ...)
        for layer in range(lm.config.num_hidden_layers):
            tensor = full[layer]
            if tensor.ndim == 2:
                tensor = tensor.T  # (in, out) -> HF's (out, in)
            state[f"model.layers.{layer}.{hf_name}.weight"] = tensor.contiguous()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("rotary_emb.inv_freq")]
    if lm.config.tie_word_embeddings:
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"weight transfer to torch failed: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval()
