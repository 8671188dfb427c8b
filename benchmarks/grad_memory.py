"""Memory of the backward pass (Adam on a soft prompt), compile-only with abstract shapes.

One Adam step differentiates the answer logits of ``B`` sequences (the 24 survey items of one
prompt, times the targets run together) with respect to the ``(K, d)`` soft prompt, through the
model's layer scan. Without rematerialisation the backward pass keeps every layer's internals
(attention scores ``(B, H, T, T)``, MLP activations ``(B, T, f)``) for all ``L`` layers; with
``jax.checkpoint`` on the scan body it keeps only each layer's input ``(B, T, d)`` and recomputes
the rest. This script lowers and compiles (never runs, never allocates weights: the Llama-3-8B
shape is fine on a laptop) ``grad`` of a last-position answer-logit loss through the layer scan
built from :mod:`jaxalign.model.llama`'s own layer function, with and without ``jax.checkpoint``,
and prints XLA's ``memory_analysis`` (temporary buffers; arguments are the weights)::

    python benchmarks/grad_memory.py --preset 100m llama3-8b --batch 24 --length 96 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import common  # noqa: E402
from jaxalign.model.llama import (  # noqa: E402
    attention_mask_4d,
    decoder_layer,
    layer_param_shapes,
    rms_norm,
    rotary_cos_sin,
)


def loss_fn(config, remat: bool, k: int):
    """``(soft (K, d), weights, embeds (B, T, d), head (5, d)) -> scalar``: the soft prompt
    written over positions ``1..K`` of every row, the layer scan, the 5 answer logits at the end."""

    def loss(soft, layers, embeds, head, norm):
        batch, length, _ = embeds.shape
        x = embeds.at[:, 1:1 + k].set(jnp.broadcast_to(soft.astype(embeds.dtype), (batch, k, soft.shape[-1])))
        positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        cos, sin = rotary_cos_sin(config, positions, embeds.dtype)
        mask = attention_mask_4d(jnp.ones((batch, length), bool), length)

        def layer(hidden, weights):
            return decoder_layer(config, weights, hidden, cos, sin, mask), None

        body = jax.checkpoint(layer, prevent_cse=False) if remat else layer
        hidden, _ = jax.lax.scan(body, x, layers)
        last = rms_norm(hidden[:, -1], norm, config.rms_norm_eps)  # (B, d)
        logits = (last @ head.T).astype(jnp.float32)  # (B, 5)
        return jnp.sum(jax.nn.softmax(logits) * jnp.arange(5.0))

    return loss


def measure(preset: str, dtype: str, batch: int, length: int, k: int, remat: bool) -> dict:
    config = common.preset_config(preset)
    dt = jnp.dtype(dtype)
    d = config.hidden_size
    layers = {name: jax.ShapeDtypeStruct(shape, dt) for name, shape in layer_param_shapes(config).items()}
    args = (jax.ShapeDtypeStruct((k, d), jnp.float32), layers, jax.ShapeDtypeStruct((batch, length, d), dt),
            jax.ShapeDtypeStruct((5, d), dt), jax.ShapeDtypeStruct((d,), dt))
    compiled = jax.jit(jax.value_and_grad(loss_fn(config, remat, k))).lower(*args).compile()
    memory = compiled.memory_analysis()
    return {"preset": preset, "dtype": dtype, "batch": batch, "length": length, "k": k, "remat": remat,
            "layers": config.num_hidden_layers,
            "temp_bytes": int(memory.temp_size_in_bytes),
            "argument_bytes": int(memory.argument_size_in_bytes),
            "output_bytes": int(memory.output_size_in_bytes)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["100m", "llama3-8b"], choices=common.PRESETS)
    parser.add_argument("--dtype", default=None, help="default: float32 for tiny/100m, bfloat16 for llama3-8b")
    parser.add_argument("--batch", type=int, default=24, help="sequences per step (24 items x targets)")
    parser.add_argument("--length", type=int, default=96, help="tokens per sequence")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for preset in args.preset:
        dtype = args.dtype or ("bfloat16" if preset == "llama3-8b" else "float32")
        for remat in (False, True):
            rows.append(measure(preset, dtype, args.batch, args.length, args.k, remat))
            print(f"{preset} {dtype} remat={remat}: temp {rows[-1]['temp_bytes'] / 2**30:.3f} GiB, "
                  f"arguments {rows[-1]['argument_bytes'] / 2**30:.2f} GiB", file=sys.stderr)
    if args.json:
        print(json.dumps({**common.run_metadata("benchmarks/grad_memory.py", args_list(argv)),
                          "device": common.describe_device(), "rows": rows}, indent=1))
    return rows


def args_list(argv):
    return list(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
