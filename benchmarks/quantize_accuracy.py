"""Accuracy of weight-only int8 against the unquantised model, on a preset, on random soft prompts.

For each compute dtype asked for, the preset is built once in that dtype, quantised in memory
(:func:`jaxalign.model.int8_lm.quantize_lm`, the same arithmetic as ``load_model(quantize="int8")``),
and both score the same ``P`` random soft prompts (default layout, ``expected`` readout). Printed:
the largest and mean absolute answer-probability difference over ``P x 24 x 5`` probabilities, and
the largest and mean absolute dimension-score difference over ``P x 6`` scores. As a yardstick, the
same figures for bfloat16 against float32 (no quantisation) are printed too.

    python benchmarks/quantize_accuracy.py --preset 100m --population 8 --json \
        > benchmarks/results/quantize_accuracy_cpu_100m.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402


def _diffs(a, b) -> dict[str, float]:
    dp = np.abs(np.asarray(a.probs, np.float64) - np.asarray(b.probs, np.float64))
    dd = np.abs(np.asarray(a.dims, np.float64) - np.asarray(b.dims, np.float64))
    return {"probs_max": round(float(dp.max()), 5), "probs_mean": round(float(dp.mean()), 6),
            "dims_max": round(float(dd.max()), 4), "dims_mean": round(float(dd.mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("tiny", "100m"), default="100m")
    parser.add_argument("--population", "-P", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import jaxalign
    from jaxalign.model.int8_lm import quantize_lm
    from jaxalign.scoring import make_scorer

    instrument = jaxalign.vsm13()
    out = {"meta": common.run_metadata("benchmarks/quantize_accuracy.py", argv), "device": common.device_info(),
           "preset": args.preset, "population": args.population, "k": args.k, "rows": {}}
    scores = {}
    prompts = None
    for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
        lm = common.build_preset(args.preset, dtype)
        if prompts is None:
            prompts = common.random_prompts(lm, args.population, args.k, seed=0)
        scores[dtype] = make_scorer(lm, instrument, k=args.k)(prompts)
        scores[dtype + "+int8"] = make_scorer(quantize_lm(lm), instrument, k=args.k)(prompts)
        out["rows"][f"int8 vs {dtype}"] = _diffs(scores[dtype + "+int8"], scores[dtype])
        print(f"int8 vs {dtype}: {out['rows'][f'int8 vs {dtype}']}", file=sys.stderr)
    if "float32" in scores and "bfloat16" in scores:
        out["rows"]["bfloat16 vs float32 (yardstick)"] = _diffs(scores["bfloat16"], scores["float32"])
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, row in out["rows"].items():
            print(f"{name:34s} {row}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
