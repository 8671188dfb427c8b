"""Scaling of one scoring pass over 1, 2, 4, ... devices of a ("data", "model") mesh.

Scores the same population of soft prompts (P members x 24 VSM 2013 items) on a mesh with the
data axis of each size in ``--devices`` and reports sequences/s (one sequence = one member on
one item), per-device throughput and scaling efficiency ``throughput(n) / (n * throughput(1))``.

Each device count runs in its own subprocess, because the number of simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``) is fixed when jax starts. Simulated CPU
devices share this machine's cores, so on a CPU the efficiency says nothing about real
accelerators; on a TPU VM or a multi-GPU host run it with ``--real`` (no simulation: the first
``n`` real devices are used for each ``n``).

    python benchmarks/scaling.py                       # 1, 2, 4, 8 simulated CPU devices
    python benchmarks/scaling.py --real --devices 1,2,4,8 --model <ckpt> --population 256
    python benchmarks/scaling.py --json benchmarks/results/scaling_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import numpy as np, jax
from jaxalign import parallel, vsm13
from jaxalign.model import load_model
from jaxalign.scoring import make_scorer

n, model_axis, population, repeats, model, dtype, mode = json.loads(sys.argv[1])
devices = jax.devices()[:n]
mesh = parallel.make_mesh(n // model_axis, model_axis, devices=devices)
lm = load_model(model, dtype=dtype, mesh=mesh)
scorer = make_scorer(lm, vsm13(), k=8, mesh=mesh, mode=mode)
rng = np.random.default_rng(0)
std = float(np.std(np.asarray(lm.embedding_matrix, np.float32)))
prompts = (std * rng.standard_normal((population, 8, lm.config.hidden_size))).astype(np.float32)
t0 = time.perf_counter()
jax.block_until_ready(scorer(prompts).loss)
compile_s = time.perf_counter() - t0
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(scorer(prompts).loss)
    times.append(time.perf_counter() - t0)
best = min(times)
print("RESULT " + json.dumps({
    "devices": n, "mesh": parallel.describe_mesh(mesh), "platform": devices[0].platform,
    "device_kind": devices[0].device_kind, "compile_s": compile_s, "pass_s": best,
    "pass_s_all": times, "sequences": population * scorer.n_items,
}))
"""


def run_one(n: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if not args.real:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
        env["JAX_PLATFORMS"] = "cpu"
    payload = json.dumps([n, args.model_axis, args.population, args.repeats, args.model, args.dtype, args.mode])
    proc = subprocess.run([sys.executable, "-c", CHILD, payload], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{n} device(s) failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts")
    parser.add_argument("--model-axis", type=int, default=1, help="model axis size (data = devices / this)")
    parser.add_argument("--population", type=int, default=32, help="population size P (divisible by every data size)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per device count (best is kept)")
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--mode", default="cached", choices=("cached", "full"))
    parser.add_argument("--real", action="store_true", help="use real devices (TPU/GPU), no CPU simulation")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.devices.split(",")]

    rows = [run_one(n, args) for n in counts]
    base = rows[0]["sequences"] / rows[0]["pass_s"] / rows[0]["devices"]
    print(f"{'devices':>7s} {'mesh':>34s} {'compile s':>9s} {'pass s':>8s} {'seq/s':>9s} "
          f"{'seq/s/dev':>9s} {'efficiency':>10s}")
    for row in rows:
        total = row["sequences"] / row["pass_s"]
        row["sequences_per_s"] = total
        row["sequences_per_s_per_device"] = total / row["devices"]
        row["scaling_efficiency"] = row["sequences_per_s_per_device"] / base
        print(f"{row['devices']:7d} {row['mesh']:>34s} {row['compile_s']:9.2f} {row['pass_s']:8.4f} "
              f"{total:9.1f} {row['sequences_per_s_per_device']:9.1f} {row['scaling_efficiency']:10.2f}")
    record = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/scaling.py", *(sys.argv[1:] if argv is None else argv)]),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "simulated_cpu_devices": not args.real,
        "population": args.population,
        "model": args.model,
        "mode": args.mode,
        "rows": rows,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
