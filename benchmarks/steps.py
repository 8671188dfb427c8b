"""Each speed step of the scorer measured before/after, in one run on one device.

Steps (each row: the scoring pass with the step off, then on; everything else equal):

- ``lm_head``: full-vocabulary logits ``(B, T, V)`` then the five answer ids at the last position
  (before) vs. only the last position's hidden state against the five LM-head rows (after), on
  the preset's layers with a Llama-3-sized vocabulary (V = 128,256), ``B`` full sequences.
- ``buckets``: one length bucket (``n_buckets=1``, every item padded to the longest) vs. the
  default buckets, plain (``mode="full"``) pass.
- ``caches``: every sequence run whole (``mode="full"``) vs. shared tokens computed once via
  key/value caches (``mode="cached"``, the default), default layout.
- ``item_first``: default layout vs. the item-first layout ``user_end`` (both cached): the item
  text once per item, only ``K`` + answer-cue tokens per member.
- ``last_layer``: the cached pass (default layout) with the last layer run whole for every
  position (``trim_last_layer=False``) vs. computing only what is read (the default: keys/values
  alone for the prefix and soft tokens, the last real position alone for the item rows).
- ``chunking``: the whole population in one pass vs. ``members_per_pass`` members at a time
  (what a memory budget forces; results equal, the cost is smaller batches).
- ``depth`` (compile time only): the scorer's compile time for 1, 2, 4, 8 and 16 layers; the layer
  stack is one ``lax.scan``, so it should not grow with depth.

bfloat16 is not a step here: on a CPU XLA computes it in float32; the GPU figures in RESULTS.md
use bfloat16 throughout.

    python benchmarks/steps.py --preset 100m --population 4 --json > benchmarks/results/steps_cpu_100m.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.throughput import time_compiled, time_jax  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The scorer's speed steps, each before/after.")
    parser.add_argument("--preset", choices=("tiny", "100m"), default="100m")
    parser.add_argument("--population", "-P", type=int, default=4)
    parser.add_argument("--k", "-K", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--steps", default="lm_head,buckets,caches,item_first,last_layer,chunking,depth",
                        help="comma-separated subset of the steps")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(args.steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    if args.population < 2 or args.population % 2:
        parser.error("--population must be even and >= 2 (the chunking step halves it)")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _scorer_row(lm, prompts, *, repeats: int, **options) -> dict[str, Any]:
    import jaxalign

    scorer = jaxalign.make_scorer(lm, jaxalign.vsm13(), k=prompts.shape[1], **options)
    timed = time_jax(scorer, prompts, warmup=1, repeats=repeats)
    n_sequences = prompts.shape[0] * scorer.n_items
    return {"options": options, "median_s": timed["median_s"], "compile_s": timed["compile_s"],
            "sequences_per_s": n_sequences / timed["median_s"], "probs": timed["probs"]}


def _pair(name: str, before: dict, after: dict, what: str) -> dict[str, Any]:
    diff = float(np.abs(before.pop("probs") - after.pop("probs")).max())
    row = {"step": name, "what": what, "before": before, "after": after,
           "speedup": before["median_s"] / after["median_s"], "max_abs_prob_diff": diff}
    log(f"{name}: {before['median_s']:.3f}s -> {after['median_s']:.3f}s "
        f"({row['speedup']:.2f}x), max |dp| {diff:.1e}")
    return row


def step_lm_head(args, lm, prompts) -> dict[str, Any]:
    """Full-vocabulary logits vs the five answer rows, V = 128,256, B = P x 24 full sequences."""
    from flax import nnx

    from jaxalign.model import llama
    from jaxalign.model.tiny import random_llama

    config = dataclasses.replace(lm.config, vocab_size=128_256)
    model = random_llama(config, dtype=args.dtype, seed=0, init_std=0.02, head_init_std=0.05)
    graphdef, params = nnx.split(model)
    batch, length = args.population * 24, 139  # the 100m default layout's longest sequence
    embeds = 0.02 * jax.random.normal(jax.random.key(1), (batch, length, config.hidden_size),
                                      jnp.dtype(args.dtype))
    mask = jnp.ones((batch, length), jnp.int32)
    answer_ids = jnp.arange(5, dtype=jnp.int32) + 20

    def before_fn(params, embeds, mask):
        logits = llama.logits_fn(graphdef, params, embeds, mask)                  # (B, T, V)
        return logits[:, -1][:, answer_ids]

    def after_fn(params, embeds, mask):
        return llama.selected_logits_fn(graphdef, params, embeds, mask, answer_ids)  # (B, 5)

    rows = []
    for fn in (before_fn, after_fn):
        timed = time_compiled(fn, (params, embeds, mask), warmup=1, repeats=args.repeats)
        rows.append({"median_s": timed["median_s"], "compile_s": timed["compile_s"],
                     "sequences_per_s": batch / timed["median_s"],
                     "probs": np.asarray(jax.nn.softmax(timed["output"], axis=-1), np.float64)})
    return _pair("lm_head", rows[0], rows[1],
                 f"full (B, T, V) logits vs 5 LM-head rows at the last position; B={batch}, T={length}, "
                 f"V=128256, {config.num_hidden_layers} layers")


def step_buckets(args, lm, prompts) -> dict[str, Any]:
    before = _scorer_row(lm, prompts, repeats=args.repeats, mode="full", n_buckets=1)
    after = _scorer_row(lm, prompts, repeats=args.repeats, mode="full")
    return _pair("buckets", before, after, "mode=full: n_buckets=1 vs the default buckets")


def step_caches(args, lm, prompts) -> dict[str, Any]:
    before = _scorer_row(lm, prompts, repeats=args.repeats, mode="full")
    after = _scorer_row(lm, prompts, repeats=args.repeats, mode="cached")
    return _pair("caches", before, after, "default layout: mode=full vs mode=cached")


def step_item_first(args, lm, prompts) -> dict[str, Any]:
    before = _scorer_row(lm, prompts, repeats=args.repeats, mode="cached")
    after = _scorer_row(lm, prompts, repeats=args.repeats, mode="cached", slot="user_end")
    row = _pair("item_first", before, after, "cached: layout user_start vs user_end (other prompts: "
                                             "probabilities are not comparable)")
    row["max_abs_prob_diff"] = None  # different prompts: not an equality check
    return row


def step_last_layer(args, lm, prompts) -> dict[str, Any]:
    before = _scorer_row(lm, prompts, repeats=args.repeats, mode="cached", trim_last_layer=False)
    after = _scorer_row(lm, prompts, repeats=args.repeats, mode="cached")
    return _pair("last_layer", before, after,
                 f"cached, default layout: last layer whole vs only what is read "
                 f"({lm.config.num_hidden_layers} layers)")


def step_chunking(args, lm, prompts) -> dict[str, Any]:
    before = _scorer_row(lm, prompts, repeats=args.repeats)
    after = _scorer_row(lm, prompts, repeats=args.repeats, members_per_pass=args.population // 2)
    return _pair("chunking", before, after,
                 f"members_per_pass None (all {args.population}) vs {args.population // 2}")


def step_depth(args, lm, prompts) -> dict[str, Any]:
    import jaxalign

    rows = []
    for layers in (1, 2, 4, 8, 16):
        deep = common.build_preset(args.preset, args.dtype, layers=layers, seed=0)
        scorer = jaxalign.make_scorer(deep, jaxalign.vsm13(), k=prompts.shape[1])
        start = time.perf_counter()
        jax.jit(scorer.score_fn).lower(prompts, scorer.inputs).compile()
        rows.append({"layers": layers, "compile_s": time.perf_counter() - start})
        log(f"depth {layers}: compile {rows[-1]['compile_s']:.2f}s")
    return {"step": "depth", "what": "scorer compile time (trace + XLA) vs number of layers",
            "rows": rows}


STEPS = {"lm_head": step_lm_head, "buckets": step_buckets, "caches": step_caches,
         "item_first": step_item_first, "last_layer": step_last_layer, "chunking": step_chunking, "depth": step_depth}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    meta = common.run_metadata("benchmarks/steps.py", args.argv)
    lm = common.build_preset(args.preset, args.dtype, seed=0)
    prompts = common.random_prompts(lm, args.population, args.k, seed=1)
    log(f"device: {common.describe_device()}; {lm.name}, P={args.population}, K={args.k}")
    rows = [STEPS[name](args, lm, prompts) for name in args.steps]
    report = {**meta, "device": common.describe_device(), "preset": args.preset, "dtype": args.dtype,
              "P": args.population, "K": args.k, "steps": rows}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for row in rows:
            if "rows" in row:
                print(f"{row['step']:<11} " + ", ".join(
                    f"{r['layers']} layers {r['compile_s']:.1f}s" for r in row["rows"]))
            else:
                diff = row["max_abs_prob_diff"]
                print(f"{row['step']:<11} {row['before']['median_s']:.3f}s -> {row['after']['median_s']:.3f}s "
                      f"= {row['speedup']:.2f}x  (max |dp| {'-' if diff is None else f'{diff:.1e}'}): "
                      f"{row['what']}")
        print(f"device {report['device']}; date {report['date']}; command {report['command']}")
    return report


if __name__ == "__main__":
    main()
