"""Wall time of whole DE alignment runs, and how it grows with population P, prompt length K and depth.

Each configuration runs ``jaxalign.align`` end to end (no baselines) on a preset model and records
``wall_s`` (everything: scorer setup, compilation, all generations, the final scoring),
``compile_s`` (the optimizer loop's compilation, as ``align`` reports it), ``s_per_generation``
(the steady cost of one generation, ``AlignResult.s_per_generation``: the device chunks' time over
the steps they ran, initial population included) and ``overhead_s`` (the rest: scorer set-up,
the final scoring, host work).

Examples::

    python benchmarks/de_cost.py --preset tiny --populations 16 --ks 10 --generations 100
    python benchmarks/de_cost.py --preset tiny --populations 8,16,32 --ks 5,10,20 --generations 20
    python benchmarks/de_cost.py --preset 100m --populations 16 --ks 10 --generations 3
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from jaxalign.prompting.layout import SLOTS  # noqa: E402


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Wall time of DE runs vs P, K and model depth.")
    parser.add_argument("--preset", choices=common.PRESETS, default="tiny")
    parser.add_argument("--layers", type=_int_list, default=None,
                        help="comma-separated depths to try (default: the preset's own)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="default: bfloat16 for llama3-8b, else float32")
    parser.add_argument("--populations", type=_int_list, default=[16], help="comma-separated P values")
    parser.add_argument("--ks", type=_int_list, default=[10], help="comma-separated K values")
    parser.add_argument("--scoring-modes", default=None,
                        help="comma-separated AlignConfig.scoring_mode values to compare "
                             "(e.g. full,cached); default: the library's default")
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--subspace", type=int, default=64)
    parser.add_argument("--layout", choices=SLOTS, default="user_start")
    parser.add_argument("--target", default="China", help="country whose profile is the target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.generations < 1:
        parser.error("--generations must be >= 1")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.preset == "llama3-8b" else "float32"
    args.scoring_modes = ([m.strip() for m in args.scoring_modes.split(",") if m.strip()]
                          if args.scoring_modes else [None])
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jaxalign

    meta = common.run_metadata("benchmarks/de_cost.py", args.argv)
    rows = []
    for layers in args.layers or [None]:
        lm = common.build_preset(args.preset, args.dtype, layers=layers, seed=args.seed)
        for mode, population, k in itertools.product(args.scoring_modes, args.populations, args.ks):
            options = {} if mode is None else {"scoring_mode": mode}
            if options and "scoring_mode" not in {f.name for f in dataclasses.fields(jaxalign.AlignConfig)}:
                raise SystemExit("this jaxalign's AlignConfig has no scoring_mode field")
            config = jaxalign.AlignConfig(
                k=k, population=population, generations=args.generations,
                subspace=args.subspace, slot=args.layout, seed=args.seed, baselines=(), **options)
            result = jaxalign.align(lm, args.target, config=config, progress=False)
            row = {
                "model": lm.name, "layers": lm.config.num_hidden_layers,
                "scoring_mode": getattr(config, "scoring_mode", None), "P": population, "K": k,
                "generations": args.generations, "wall_s": round(result.wall_s, 3),
                "compile_s": round(result.compile_s, 3),
                "s_per_generation": round(result.s_per_generation, 4),
                "overhead_s": round(result.wall_s - result.compile_s
                                    - result.s_per_generation * (args.generations + 1), 3),
                "evaluations": int(result.evaluations), "final_loss": round(float(result.loss), 3),
            }
            rows.append(row)
            print(f"{row['model']} L={row['layers']} {row['scoring_mode']} P={population} K={k} "
                  f"G={args.generations}: "
                  f"wall {row['wall_s']:.1f}s, compile {row['compile_s']:.1f}s, "
                  f"{row['s_per_generation']:.3f} s/gen, loss {row['final_loss']:.2f}",
                  file=sys.stderr, flush=True)
    report = {**meta, "device": common.describe_device(), "preset": args.preset, "dtype": args.dtype,
              "layout": args.layout, "subspace": args.subspace, "target": args.target, "rows": rows,
              "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("| model | layers | scoring | P | K | generations | wall s | compile s | s/generation | final L1 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['layers']} | {r['scoring_mode']} | {r['P']} | {r['K']} | "
                  f"{r['generations']} | "
                  f"{r['wall_s']:.1f} | {r['compile_s']:.1f} | {r['s_per_generation']:.3f} | "
                  f"{r['final_loss']:.2f} |")
        print(f"\ndevice {report['device']}; date {report['date']}; command {report['command']}")
    return report


if __name__ == "__main__":
    main()
