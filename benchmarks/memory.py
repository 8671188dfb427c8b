"""Per-device memory of the weights and of one scoring pass, compile-only, for real model shapes.

Rows (population P = 32, K = 10, default layout, cached mode, the tiny tokenizer's text):

- Llama-3-8B shape, bfloat16 and int8 weights (compute in bfloat16), one device;
- Llama-3-70B shape, bfloat16 and int8, on a model axis of 8 (``data=1, model=8``): run in a child
  process with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (simulated CPU devices).

Everything is abstract (:func:`jaxalign.memory.abstract_lm`): no weight is allocated, the pass is
lowered and compiled ahead of time and ``compiled.memory_analysis()`` gives its argument, output
and temporary bytes per device. On a CPU these are XLA:CPU's buffer assignment (which may keep
bfloat16 intermediates in float32); on a GPU run this script there to get its own figures.

Target (issue 15): the 8B shape in int8 scores P = 32 within 15 GB per device.

    python benchmarks/memory.py --json > benchmarks/results/memory_cpu_compile_only.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_BYTES = 15e9
ROOT = Path(__file__).resolve().parents[1]

LLAMA3_70B = dict(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                  num_attention_heads=64, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
                  rope_theta=500_000.0)


def measure(shape: str, quantize: str | None, population: int, k: int, model_axis: int) -> dict:
    """One row: builds the abstract model (on a mesh when ``model_axis`` > 1) and compiles its pass."""
    import jax

    import jaxalign
    from benchmarks import common
    from jaxalign import memory, parallel
    from jaxalign.model import LlamaConfig
    from jaxalign.scoring import make_scorer

    config = common.preset_config("llama3-8b") if shape == "llama3-8b" else LlamaConfig(**LLAMA3_70B)
    mesh = None
    if model_axis > 1:
        mesh = parallel.make_mesh(1, model_axis, devices=jax.devices()[:model_axis])
    lm = memory.abstract_lm(config, "bfloat16", quantize=quantize, mesh=mesh, name=shape)
    scorer = make_scorer(lm, jaxalign.vsm13(), k=k, target=[50.0] * 6, mesh=mesh)
    start = time.perf_counter()
    report = memory.scoring_memory(scorer, population)
    row = {"shape": shape, "weights": "int8" if quantize else "bfloat16", "compute_dtype": "bfloat16",
           "population": population, "k": k, "mesh": f"data=1,model={model_axis}",
           "seq_len": scorer.seq_len, "compile_s": round(time.perf_counter() - start, 1), **report.as_dict()}
    row["peak_gb"] = None if report.peak_bytes is None else round(report.peak_bytes / 1e9, 2)
    row["weights_gb"] = round(report.weights_bytes / 1e9, 2)
    return row


def _child_rows(population: int, k: int) -> list[dict]:
    """The 70B rows, in a child process that sees 8 simulated CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = (
        "import json\n"
        "from benchmarks.memory import measure\n"
        f"rows = [measure('llama3-70b', q, {population}, {k}, 8) for q in (None, 'int8')]\n"
        "print('ROWS ' + json.dumps(rows))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"70B child failed:\n{out.stderr[-4000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("ROWS "))
    return json.loads(line[5:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-device weight and scoring-pass bytes, compile-only.")
    parser.add_argument("--population", "-P", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--skip-70b", action="store_true", help="only the 8B rows")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from benchmarks import common

    rows = [measure("llama3-8b", q, args.population, args.k, 1) for q in (None, "int8")]
    for row in rows:
        print(f"{row['shape']} {row['weights']}: weights {row['weights_gb']} GB, pass peak {row['peak_gb']} GB "
              f"(compile {row['compile_s']} s)", file=sys.stderr)
    if not args.skip_70b:
        rows += _child_rows(args.population, args.k)
    int8_8b = next(r for r in rows if r["shape"] == "llama3-8b" and r["weights"] == "int8")
    out = {
        "meta": common.run_metadata("benchmarks/memory.py", argv),
        "device": common.device_info(),
        "note": ("compile-only on CPU (XLA:CPU buffer assignment; abstract weights, nothing allocated); "
                 "GPU figures not measured"),
        "rows": rows,
        "target": {"what": "Llama-3-8B shape, int8 weights, P = 32: peak bytes per device <= 15 GB",
                   "peak_gb": int8_8b["peak_gb"],
                   "met": None if int8_8b["peak_bytes"] is None else int8_8b["peak_bytes"] <= TARGET_BYTES},
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'shape':12s} {'weights':9s} {'mesh':16s} {'weights GB':>10s} {'args GB':>8s} "
              f"{'temp GB':>8s} {'peak GB':>8s}")
        for r in rows:
            gb = (lambda v: "-" if v is None else f"{v / 1e9:.2f}")
            print(f"{r['shape']:12s} {r['weights']:9s} {r['mesh']:16s} {r['weights_gb']:>10.2f} "
                  f"{gb(r['argument_bytes']):>8s} {gb(r['temp_bytes']):>8s} {gb(r['peak_bytes']):>8s}")
        print(f"target (8B int8, P={args.population}, <= 15 GB per device): {out['target']['met']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
