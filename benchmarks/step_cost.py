"""What an Adam step costs in forward passes, read from the compiled programs (issue 25 point 3).

Builds the alignment problem of `benchmarks/optimizers.py`'s shapes (China, K = 10, subspace 32,
P = 16, float32) and prints :func:`jaxalign.optimize.pipeline.measure_cost`: XLA's FLOP count of one
compiled Adam step and of one compiled scoring pass of P members, and their ratio per member (the
figure the equal-FLOP budget of gradient and hybrid runs uses). Compiles, never runs.

    python benchmarks/step_cost.py [--model tiny-random] [--k 10] [--subspace 32] [--population 16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
from pathlib import Path

import jax

import jaxalign
from jaxalign.optimize import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--subspace", type=int, default=32)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--slot", default="user_start")
    args = parser.parse_args()
    lm = jaxalign.load_model(args.model, dtype="float32")
    config = jaxalign.AlignConfig(method="gradient", k=args.k, subspace=args.subspace,
                                  population=args.population, slot=args.slot, baselines=())
    targets, _ = jaxalign.api.resolve_targets("China")
    problem = pipeline.setup(lm, targets, jaxalign.vsm13(), config)
    cost = pipeline.measure_cost(problem)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "commit": commit, "backend": jax.default_backend(), "model": args.model,
                      "k": args.k, "subspace": args.subspace, "population": args.population,
                      "slot": args.slot, "cost": cost.to_dict()}, indent=1))


if __name__ == "__main__":
    main()
