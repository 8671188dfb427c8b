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

o = json.loads(sys.argv[1])
n, model_axis, population = o["n"], o["model_axis"], o["population"]
devices = jax.devices()[:n]
mesh = parallel.make_mesh(n // model_axis, model_axis, devices=devices)
if o.get("preset"):  # a benchmarks/common.py preset (random weights), placed on the mesh
    from benchmarks import common
    lm = parallel.shard_lm(common.build_preset(o["preset"], o["dtype"], layers=o.get("layers"),
                                               seed=o.get("seed", 0)), mesh)
else:
    lm = load_model(o["model"], dtype=o["dtype"], mesh=mesh)
options = {"mode": o["mode"]} if o.get("mode") else {}
k = o.get("k", 8)
scorer = make_scorer(lm, vsm13(), k=k, slot=o.get("slot", "user_start"), mesh=mesh, **options)
rng = np.random.default_rng(0)
std = float(np.std(np.asarray(lm.embedding_matrix, np.float32)))
prompts = (std * rng.standard_normal((population, k, lm.config.hidden_size))).astype(np.float32)
t0 = time.perf_counter()
jax.block_until_ready(scorer(prompts).loss)
compile_s = time.perf_counter() - t0
times = []
for _ in range(o["repeats"]):
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
    """One scoring pass timed on ``n`` devices, in a fresh subprocess (see :data:`CHILD`).

    ``args`` needs ``real``, ``model_axis``, ``population``, ``repeats``, ``dtype``, ``mode`` and
    either ``model`` (a checkpoint or ``tiny-random``) or ``preset`` (+ ``layers``, ``seed``:
    a ``benchmarks/common.py`` preset); optional ``k`` (default 8) and ``slot``.
    """
    env = dict(os.environ)
    if not args.real:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
        env["JAX_PLATFORMS"] = "cpu"
    options = {"n": n, **{name: getattr(args, name, None) for name in (
        "model_axis", "population", "repeats", "model", "dtype", "mode", "preset", "layers", "seed",
        "k", "slot")}}
    payload = json.dumps({key: value for key, value in options.items() if value is not None})
    proc = subprocess.run([sys.executable, "-c", CHILD, payload], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{n} device(s) failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def scaling_rows(counts: list[int], args: argparse.Namespace) -> list[dict]:
    """:func:`run_one` for each device count, with the throughput figures added to each row.

    ``sequences_per_s`` (total), ``per_device_sequences_per_s`` and ``scaling_efficiency`` =
    ``per_device(n) / per_device(counts[0])`` (1.0 for the first count: perfect scaling keeps it).
    """
    rows = [run_one(n, args) for n in counts]
    for row in rows:
        row["sequences_per_s"] = row["sequences"] / row["pass_s"]
        row["per_device_sequences_per_s"] = row["sequences_per_s"] / row["devices"]
    base = rows[0]["per_device_sequences_per_s"]
    for row in rows:
        row["scaling_efficiency"] = row["per_device_sequences_per_s"] / base
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`scaling_rows` as a text table."""
    lines = [f"{'devices':>7s} {'mesh':>34s} {'compile s':>9s} {'pass s':>8s} {'seq/s':>9s} "
             f"{'seq/s/dev':>9s} {'efficiency':>10s}"]
    for row in rows:
        lines.append(f"{row['devices']:7d} {row['mesh']:>34s} {row['compile_s']:9.2f} {row['pass_s']:8.4f} "
                     f"{row['sequences_per_s']:9.1f} {row['per_device_sequences_per_s']:9.1f} "
                     f"{row['scaling_efficiency']:10.2f}")
    return "\n".join(lines)


def parse_counts(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]``; SystemExit with the accepted form otherwise."""
    try:
        counts = [int(c) for c in str(text).split(",") if c.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit(f"--devices expects comma-separated device counts >= 1, e.g. 1,2,4,8; got {text!r}")
    return counts


def default_platform() -> str:
    """``jax.default_backend()`` as a subprocess sees it ("cpu", "gpu", "tpu").

    Asked in a subprocess so that this process never starts a backend (on a GPU it would hold
    memory the per-count subprocesses need; a TPU admits one process at a time).
    """
    proc = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"cannot start jax:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


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
    counts = parse_counts(args.devices)

    rows = scaling_rows(counts, args)
    print(format_table(rows))
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
