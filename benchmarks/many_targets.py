"""C targets in one compiled run vs C single-target runs one after another (wall time, s/generation).

The batched run is ``jaxalign.align(lm, [C countries])``: the C x P members share each scoring
pass and the C optimizer states are vmapped. The sequential figure for C is the sum of the first C
single-target runs ``jaxalign.align(lm, country)`` (each compiles its own program), measured in the
same process, so the ratios are side by side. Per run: ``wall_s`` (set-up, compile, generations,
final scoring; no baselines), ``compile_s`` and the steady ``s_per_generation`` (device chunks
only; for the sequential case the sum over the C runs).

Example::

    python benchmarks/many_targets.py --counts 1,2,4,8 --generations 10 --json \\
        > benchmarks/results/many_targets_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

COUNTRIES = ("U.S.A.", "China", "India", "Saudi Arabia", "Japan", "Germany", "Brazil", "Nigeria",
             "France", "Mexico", "Sweden", "Russia", "Turkey", "Indonesia", "Egypt", "Korea South")


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--counts must be comma-separated integers, got {text!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > len(COUNTRIES):
        raise argparse.ArgumentTypeError(f"--counts must lie in 1..{len(COUNTRIES)}, got {text!r}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--counts", type=_counts, default=(1, 2, 4, 8), help="values of C")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--subspace", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    return args


def _timed(run) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = run()
    wall = time.perf_counter() - t0
    first = result if not hasattr(result, "results") else result[0]
    return {"wall_s": round(wall, 3), "compile_s": round(first.compile_s, 3),
            "s_per_generation": round(first.s_per_generation, 5),
            "load_average_1m_after": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jaxalign

    meta = common.run_metadata("benchmarks/many_targets.py", args.argv)  # date and load at the start
    load_start = [round(v, 2) for v in os.getloadavg()]
    lm = jaxalign.load_model(args.model, dtype=args.dtype)
    config = jaxalign.AlignConfig(k=args.k, subspace=args.subspace, population=args.population,
                                  generations=args.generations, chunk_size=args.chunk_size, baselines=())
    countries = COUNTRIES[: max(args.counts)]
    jaxalign.align(lm, countries[0], config=config, progress=False)  # warm-up: imports, tokenizer
    singles = []
    for name in countries:
        row = _timed(lambda: jaxalign.align(lm, name, config=config, progress=False))
        singles.append({"country": name, **row})
        print(f"single {name}: {row}", file=sys.stderr)
    rows = []
    for c in args.counts:
        batched = _timed(lambda: jaxalign.align(lm, list(countries[:c]), config=config, progress=False))
        sequential = {
            "wall_s": round(sum(s["wall_s"] for s in singles[:c]), 3),
            "compile_s": round(sum(s["compile_s"] for s in singles[:c]), 3),
            "s_per_generation": round(sum(s["s_per_generation"] for s in singles[:c]), 5),
        }
        row = {"C": c, "batched": batched, "sequential": sequential,
               "wall_speedup": round(sequential["wall_s"] / batched["wall_s"], 3),
               "s_per_generation_speedup": round(sequential["s_per_generation"] / batched["s_per_generation"], 3),
               "batched_s_per_generation_vs_C1": None}
        rows.append(row)
        print(f"C={c}: {row}", file=sys.stderr)
    base = rows[0]["batched"]["s_per_generation"] if rows[0]["C"] == 1 else None
    for row in rows:
        if base:
            row["batched_s_per_generation_vs_C1"] = round(row["batched"]["s_per_generation"] / base, 3)
    report = {
        **meta,
        "device": common.describe_device(),
        "model": args.model, "dtype": args.dtype,
        "config": {"population": args.population, "generations": args.generations, "k": args.k,
                   "subspace": args.subspace, "chunk_size": args.chunk_size},
        "countries": list(countries), "singles": singles, "rows": rows,
        "load_average_1_5_15m": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['command']}\n{report['date']}, {report['device']}, {args.model} ({args.dtype}), "
              f"P={args.population}, generations={args.generations}, K={args.k}, "
              f"load average (1/5/15 min) {load_start} -> {report['load_average_1_5_15m']['end']}")
        print(f"{'C':>3}  {'batched wall':>12}  {'sequential wall':>15}  {'speedup':>7}  "
              f"{'batched s/gen':>13}  {'sequential s/gen':>16}  {'speedup':>7}")
        for row in rows:
            b, s = row["batched"], row["sequential"]
            print(f"{row['C']:>3}  {b['wall_s']:>12.2f}  {s['wall_s']:>15.2f}  {row['wall_speedup']:>7.2f}  "
                  f"{b['s_per_generation']:>13.4f}  {s['s_per_generation']:>16.4f}  "
                  f"{row['s_per_generation_speedup']:>7.2f}")
    return report


if __name__ == "__main__":
    main()
