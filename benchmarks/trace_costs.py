"""What one default scoring pass and one ``dims.png`` cost on the host, in a fresh process.

A run of ``jaxalign align`` traces, lowers and compiles the scoring pass several times (baselines,
the optimizer loop, the results), and writes one ``dims.png`` per target; on a small model these
host costs, not the forward passes, dominate short runs and the test suite. Measured here:

- ``trace_s`` / ``lower_s`` / ``mlir_kb``: the first trace and lowering of the default scorer
  (``make_scorer`` defaults: cached mode, length buckets) in this process, and the size of the
  lowered program;
- ``compile_s``: XLA's compile of it (no persistent compilation cache);
- ``pass_ms``: the median wall time of one compiled pass (``--repeats`` passes);
- ``dims_png_ms``: the median time to build and save one ``dims.png``
  (:func:`jaxalign.plots.dims_figure` + :func:`jaxalign.plots.save_figure`).

Run it on two commits (a worktree of each) to compare them side by side::

    python benchmarks/trace_costs.py --json > out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # XLA's own compile, not a cache read (before jax)

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import random_prompts, run_metadata


def measure(population: int, k: int, repeats: int) -> dict:
    import jax
    import numpy as np

    from jaxalign import vsm13
    from jaxalign.model import load_model
    from jaxalign.plots import dims_figure, save_figure
    from jaxalign.scoring import make_scorer

    lm = load_model("tiny-random", dtype="float32")
    instrument = vsm13()
    target = np.asarray([80, 20, 66, 30, 87, 24], np.float32)
    prompts = np.asarray(random_prompts(lm, population, k))  # (P, K, d)
    scorer = make_scorer(lm, instrument, k=k, target=target)
    t0 = time.perf_counter()
    traced = jax.jit(scorer.score_fn).trace(prompts, scorer.inputs)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    scores = jax.block_until_ready(compiled(prompts, scorer.inputs))
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(prompts, scorer.inputs))
        passes.append(time.perf_counter() - start)
    dims = {name: float(v) for name, v in zip(instrument.dimensions, np.asarray(scores.dims[0]))}
    run = {"target": {"name": "China", "dims": dict(zip(instrument.dimensions, target.tolist()))},
           "model": "tiny-random", "methods": {"naive": {"dims": dims, "loss": float(scores.loss[0])},
                                               "optimized": {"dims": dims, "loss": float(scores.loss[0])}}}
    figures = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            start = time.perf_counter()
            save_figure(dims_figure(run), Path(folder) / "dims.png")
            figures.append(time.perf_counter() - start)
    return {
        "population": population, "k": k, "repeats": repeats,
        "trace_s": round(t1 - t0, 3), "lower_s": round(t2 - t1, 3),
        "mlir_kb": round(len(lowered.as_text()) / 1000, 1), "compile_s": round(t3 - t2, 3),
        "pass_ms": round(1000 * float(np.median(passes)), 1),
        "dims_png_ms": round(1000 * float(np.median(figures)), 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = {**run_metadata("benchmarks/trace_costs.py", argv), **measure(args.population, args.k, args.repeats)}
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
