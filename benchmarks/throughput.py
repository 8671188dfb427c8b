"""Scoring throughput: one population of soft prompts x 24 VSM items, jaxalign vs a PyTorch loop.

What is measured:

- **jaxalign**: ``make_scorer(lm, vsm13(), k=K, slot=layout)`` called on a ``(P, K, d)`` population,
  exactly as the optimizer uses it (its pure ``score_fn``, the function ``scorer(prompts)`` and
  ``align``'s jit run). ``compile_s`` is the time to trace and compile it ahead of time
  (``jax.jit(scorer.score_fn).lower(...).compile()``); then ``--warmup`` untimed and
  ``--repeats`` timed calls of the compiled program, each ended by ``jax.block_until_ready``;
  the median is reported (and the best).
- **PyTorch, the way a user would write it**: transformers ``LlamaForCausalLM`` holding the SAME
  weights (copied from the JAX model, bit for bit), ``torch.inference_mode()``, a Python loop over
  the P members; per member the 24 items are one left-padded batch of ``inputs_embeds`` (item
  token embeddings around the member's K soft vectors) with an attention mask and position ids
  that skip the padding, ``logits_to_keep=1`` (only the last position's logits), softmax over the
  five answer tokens. The answer distributions of both are compared (max abs difference).

Figures: sequences/s (P x 24 per pass), tokens/s (real tokens only, padding excluded), compile
time, peak memory (device allocator where it reports one, else host peak RSS: say which), and
model FLOP utilisation. ``mfu`` = FLOPs the scorer executes (padding and shared-work reuse
accounted, ``common.executed_flops``) / time / peak FLOP/s: what the hardware does, at most 100%.
``effective_mfu`` = FLOPs of scoring every sequence from scratch without padding
(``common.model_flops``) / time / peak: the work a plain pass would need, which exceeds 100% where
the scorer skips more work than the hardware leaves idle.

Examples::

    python benchmarks/throughput.py --preset tiny
    python benchmarks/throughput.py --preset 100m --population 16 --k 10 --layout after_item
    python benchmarks/throughput.py --preset llama3-8b --dtype bfloat16 --population 32 --json
    python benchmarks/throughput.py --preset 100m --layout user_start,user_end --mode cached,full
    python benchmarks/throughput.py --preset tiny --population 32 --devices 1,2,4,8   # scaling

Several ``--layout``/``--mode`` values (comma-separated) are measured one after the other on the
same weights and the same PyTorch twin; ``--json`` then prints the first combination's figures at
the top level and every combination under ``"runs"``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Leave GPU memory for the PyTorch twin on the same device (JAX grabs 75% by default).
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

from jaxalign.prompting.layout import SLOTS as LAYOUTS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Scoring throughput of one population (P soft prompts x 24 items), "
                    "jaxalign vs a transformers loop on identical weights.")
    parser.add_argument("--preset", choices=common.PRESETS, default="tiny",
                        help="model shape: tiny (the tiny-random model), 100m (~134M weights, 85M "
                             "non-embedding), llama3-8b (Llama-3-8B shape, random weights; GPU/TPU)")
    parser.add_argument("--layers", type=int, default=None,
                        help="override the preset's number of layers (to see how cost grows with depth)")
    parser.add_argument("--population", "-P", type=int, default=16, help="soft prompts per pass (P)")
    parser.add_argument("--k", "-K", type=int, default=10, help="soft-prompt length K")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed passes before the timed ones (both jaxalign and torch)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="weights and activations (default: bfloat16 for llama3-8b, else float32)")
    parser.add_argument("--layout", default="user_start",
                        help="soft-prompt slot(s) passed to make_scorer(slot=...), comma-separated: "
                             "user_start (default), system, or item first: after_item ([prefix][item]"
                             "[K soft][instruction + answer cue]) or user_end ([prefix][item + "
                             "instruction][K soft][answer cue])")
    parser.add_argument("--mode", default=None,
                        help="make_scorer(mode=...), comma-separated: 'cached' (shared tokens computed "
                             "once) or 'full' (every sequence run whole); default: the library's default")
    parser.add_argument("--members-per-pass", type=int, default=None,
                        help="make_scorer(members_per_pass=...): members per forward pass "
                             "(memory bound); default: the whole population at once")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--torch", action="store_true",
                        help="run the PyTorch comparison for llama3-8b too (needs a CUDA torch)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the PyTorch loop (default: torch's own choice)")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="peak FLOP/s of the device for the MFU (overrides the built-in table)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the prompts")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with the figures (human-readable text otherwise)")
    parser.add_argument("--devices", default=None, metavar="1,2,4,8",
                        help="instead: total and per-device sequences/s and scaling efficiency of the "
                             "jaxalign pass over this many devices each (population on the data axis; "
                             "simulated CPU devices on a CPU host), via benchmarks/scaling.py")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    for name in ("population", "k", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.preset == "llama3-8b" else "float32"
    args.layouts = _comma_choices(parser, "--layout", args.layout, LAYOUTS)
    args.modes = [None] if args.mode is None else _comma_choices(parser, "--mode", args.mode,
                                                                 ("cached", "full"))
    return args


def _comma_choices(parser: argparse.ArgumentParser, flag: str, text: str,
                   allowed: tuple[str, ...]) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``, each one of ``allowed`` (else a usage error naming the flag)."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        parser.error(f"{flag}: unknown {', '.join(bad) or 'empty value'}; choose from {', '.join(allowed)}")
    return values


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- jaxalign -----------------------------------------------------------------------------------

def scorer_options(args: argparse.Namespace, mode: str | None) -> dict[str, Any]:
    """The optional ``make_scorer`` keywords the user set, checked against its signature."""
    import inspect

    import jaxalign

    wanted = {"mode": mode, "members_per_pass": args.members_per_pass}
    wanted = {name: value for name, value in wanted.items() if value is not None}
    accepted = inspect.signature(jaxalign.make_scorer).parameters
    missing = [name for name in wanted if name not in accepted]
    if missing:
        raise SystemExit(f"this jaxalign's make_scorer has no {', '.join(missing)} option")
    return wanted


def time_compiled(fn, args: tuple, *, warmup: int, repeats: int) -> dict[str, Any]:
    """``jax.jit(fn)`` compiled ahead of time on ``args`` (timed: ``compile_s``, tracing + XLA),
    then ``warmup`` untimed and ``repeats`` timed calls, each ended by ``jax.block_until_ready``.

    Returns ``compile_s``, ``median_s``, ``times_s`` and ``output`` (the last call's result).
    """
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    output = None
    for _ in range(warmup):
        output = jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "median_s": statistics.median(times), "times_s": times,
            "output": output}


def time_jax(scorer, prompts, *, warmup: int, repeats: int) -> dict[str, Any]:
    """:func:`time_compiled` of the scorer's pure function on ``(prompts, scorer.inputs)``.

    That function is what ``scorer(prompts)`` and the optimizer's jit run. Adds ``probs``, the
    answer distributions ``(P, Q, 5)`` as float64.
    """
    timed = time_compiled(scorer.score_fn, (prompts, scorer.inputs), warmup=warmup, repeats=repeats)
    timed["probs"] = np.asarray(timed.pop("output").probs, np.float64)
    return timed


# -- PyTorch --------------------------------------------------------------------------------------

def torch_device_for(preset: str, want_torch: bool) -> tuple[str | None, str]:
    """Where the PyTorch loop runs (None: skipped) and why."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    platform = jax.devices()[0].platform
    if preset == "llama3-8b" and not (want_torch and torch.cuda.is_available()):
        return None, "llama3-8b: PyTorch loop skipped (needs --torch and a CUDA torch)"
    if platform == "gpu" and torch.cuda.is_available():
        return "cuda", "same GPU"
    if platform != "cpu":
        return "cpu", f"torch has no {platform} device here: PyTorch runs on the host CPU"
    return "cpu", "same CPU"


def torch_score_loop(model, batch, prompts: np.ndarray, *, device: str, warmup: int, repeats: int):
    """Scores ``prompts (P, K, d)`` member by member, the 24 items batched per member.

    Returns ``(probs (P, Q, 5) float64 in answer-code order, times_s)``.
    """
    import torch

    dtype = next(model.parameters()).dtype
    embed = model.get_input_embeddings()
    answer_ids = torch.as_tensor(np.array(batch.answer_ids), dtype=torch.long, device=device)
    with torch.inference_mode():
        # each item's real (unpadded) text before and after the slot, embedded once
        before = [embed(torch.as_tensor(ids[mask == 1], dtype=torch.long, device=device))
                  for ids, mask in zip(batch.prefix_ids, batch.prefix_mask)]
        after = [embed(torch.as_tensor(ids[mask == 1], dtype=torch.long, device=device))
                 for ids, mask in zip(batch.suffix_ids, batch.suffix_mask)]
        soft_all = torch.as_tensor(np.array(prompts), device=device).to(dtype)  # (P, K, d)

        def score_member(soft):  # (K, d) -> (Q, 5) presented order
            rows = [torch.cat([b, soft, a]) for b, a in zip(before, after)]
            length = max(row.shape[0] for row in rows)
            embeds = soft.new_zeros((len(rows), length, soft.shape[-1]))
            mask = torch.zeros((len(rows), length), dtype=torch.long, device=device)
            for q, row in enumerate(rows):  # left padding: the last position is the answer's
                embeds[q, length - row.shape[0]:] = row
                mask[q, length - row.shape[0]:] = 1
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                           logits_to_keep=1).logits[:, -1]
            return torch.softmax(logits[:, answer_ids].float(), dim=-1)

        for _ in range(warmup):  # one member per warm-up (kernel selection, allocator)
            score_member(soft_all[0])
        times, probs = [], None
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = [score_member(soft_all[p]) for p in range(soft_all.shape[0])]
            probs = torch.stack(out).cpu()  # waits for the device
            times.append(time.perf_counter() - start)
    probs = probs.double().numpy()[..., np.asarray(batch.original_index)]
    return probs, times


def torch_peak_memory(device: str) -> tuple[int, str]:
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    return common.host_peak_rss_bytes(), "host peak RSS of the whole process (after the JAX run)"


# -- the run --------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every ``--layout`` x ``--mode`` combination on one model (and one PyTorch twin).

    One combination: its figures (see :func:`run_one`). Several: the first one's figures, with
    every combination's under ``"runs"``.
    """
    platform = jax.devices()[0].platform
    if args.preset == "llama3-8b" and platform == "cpu" and args.layers is None:
        raise SystemExit("--preset llama3-8b is for GPUs/TPUs (16 GB of bfloat16 weights); "
                         "on a CPU use --preset 100m, or --layers to shrink it")
    meta = common.run_metadata("benchmarks/throughput.py", args.argv)
    log(f"device: {common.describe_device()}")
    t0 = time.perf_counter()
    lm = common.build_preset(args.preset, args.dtype, layers=args.layers, seed=args.seed)
    jax.block_until_ready(lm.params)
    build_s = time.perf_counter() - t0
    config = lm.config
    log(f"model {lm.name}: {config.num_parameters / 1e6:.1f}M weights "
        f"({common.non_embedding_params(config) / 1e6:.1f}M non-embedding), {args.dtype}, built in {build_s:.1f}s")
    torch_device, torch_note = (None, "--no-torch") if args.no_torch else torch_device_for(
        args.preset, args.torch)
    twin: dict[str, Any] = {}  # the PyTorch model, built on first use; its results per layout
    prompts = common.random_prompts(lm, args.population, args.k, seed=args.seed + 1)  # (P, K, d)
    runs = []
    for layout in args.layouts:
        for mode in args.modes:
            runs.append(run_one(args, lm, prompts, layout, mode, meta, torch_device, torch_note, twin,
                                first=not runs))
    twin.clear()
    if len(runs) == 1:
        return runs[0]
    return {**runs[0], "runs": runs}


def run_one(args: argparse.Namespace, lm, prompts: jax.Array, layout: str, mode: str | None,
            meta: dict[str, Any], torch_device: str | None, torch_note: str,
            twin: dict[str, Any], *, first: bool = True) -> dict[str, Any]:
    """The figures of one layout and scorer mode (the PyTorch loop is timed once per layout).

    ``peak_memory_bytes`` is the process's peak so far, so after the first combination it also
    covers the earlier ones (``first=False``: the source string says so).
    """
    import jaxalign

    config = lm.config
    scorer = jaxalign.make_scorer(lm, jaxalign.vsm13(), k=args.k, slot=layout,
                                  **scorer_options(args, mode))
    batch = scorer.batch
    n_items = batch.n_items
    real_lengths = np.tile(batch.real_lengths(args.k), args.population)  # (P*Q,)
    n_sequences = args.population * n_items
    real_tokens = int(real_lengths.sum())
    padded_tokens = n_sequences * scorer.seq_len

    log(f"jaxalign: P={args.population} x Q={n_items} = {n_sequences} sequences, "
        f"{real_tokens} real tokens ({padded_tokens} with padding), layout {layout}, "
        f"mode {getattr(scorer, 'mode', None)}")
    jax_result = time_jax(scorer, prompts, warmup=args.warmup, repeats=args.repeats)
    memory, memory_source = common.peak_device_memory()
    if not first:
        memory_source += " (process peak so far: includes the earlier combinations of this call)"
    flops = common.model_flops(config, real_lengths)
    executed = common.executed_flops(config, scorer, args.population)
    peak, peak_source = common.peak_flops(args.dtype, args.peak_flops)
    median = jax_result["median_s"]
    result: dict[str, Any] = {
        "preset": args.preset,
        "model": lm.name,
        "layers": config.num_hidden_layers,
        "params": int(config.num_parameters),
        "non_embedding_params": common.non_embedding_params(config),
        "P": args.population,
        "K": args.k,
        "Q": n_items,
        "layout": layout,
        "dtype": args.dtype,
        "mode": getattr(scorer, "mode", None),
        "members_per_pass": getattr(scorer, "members_per_pass", None),
        "sequences_per_pass": n_sequences,
        "real_tokens_per_pass": real_tokens,
        "padded_tokens_per_pass": int(padded_tokens),
        "seq_len_padded": int(scorer.seq_len),
        "sequences_per_s": n_sequences / median,
        "tokens_per_s": real_tokens / median,
        "median_s": median,
        "best_s": min(jax_result["times_s"]),
        "times_s": jax_result["times_s"],
        "warmup": args.warmup,
        "compile_s": jax_result["compile_s"],
        "model_flops_per_pass": flops,
        "executed_flops_per_pass": executed,
        "achieved_flops_per_s": executed / median,
        "peak_flops_per_s": peak,
        "peak_flops_source": peak_source,
        "mfu": None if peak is None else executed / median / peak,
        "effective_mfu": None if peak is None else flops / median / peak,
        "peak_memory_bytes": memory,
        "peak_memory_source": memory_source,
        "device": common.describe_device(),
        "device_info": common.device_info(),
        **meta,
    }
    log(f"jaxalign: {result['sequences_per_s']:.2f} seq/s, {result['tokens_per_s']:.0f} tok/s, "
        f"median {median:.3f}s, compile {jax_result['compile_s']:.2f}s")

    result.update(torch_sequences_per_s=None, torch_tokens_per_s=None, torch_median_s=None,
                  speedup_vs_torch=None, max_abs_prob_diff=None, torch_device=torch_device,
                  torch_note=torch_note)
    if torch_device is not None:
        import torch
        import transformers

        if args.torch_threads is not None:
            torch.set_num_threads(args.torch_threads)
        if "model" not in twin:
            twin["model"] = common.torch_model_from_lm(lm, device=torch_device)
        model = twin["model"]
        if layout not in twin:
            log(f"torch {torch.__version__} ({torch_device}, {torch.get_num_threads()} threads, "
                f"attention {model.config._attn_implementation}): looping over {args.population} members")
            twin[layout] = torch_score_loop(model, batch, np.asarray(prompts), device=torch_device,
                                            warmup=args.warmup, repeats=args.repeats)
        torch_probs, torch_times = twin[layout]
        torch_median = statistics.median(torch_times)
        torch_memory, torch_memory_source = torch_peak_memory(torch_device)
        result.update(
            torch_sequences_per_s=n_sequences / torch_median,
            torch_tokens_per_s=real_tokens / torch_median,
            torch_median_s=torch_median,
            torch_times_s=torch_times,
            torch_best_s=min(torch_times),
            speedup_vs_torch=torch_median / median,
            speedup_vs_torch_best=min(torch_times) / min(jax_result["times_s"]),
            max_abs_prob_diff=float(np.abs(torch_probs - jax_result["probs"]).max()),
            torch_threads=torch.get_num_threads(),
            torch_version=torch.__version__,
            transformers_version=transformers.__version__,
            torch_attention=model.config._attn_implementation,
            torch_peak_memory_bytes=torch_memory,
            torch_peak_memory_source=torch_memory_source,
        )
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return result


def format_report(r: dict[str, Any]) -> str:
    """The human-readable summary of :func:`run`'s figures."""
    def gib(n):
        return f"{n / 2**30:.2f} GiB"

    peak = "n/a" if r["peak_flops_per_s"] is None else f"{r['peak_flops_per_s'] / 1e12:.3f} TFLOP/s"

    lines = [
        f"device         {r['device']}",
        f"model          {r['model']}: {r['params'] / 1e6:.1f}M weights, "
        f"{r['non_embedding_params'] / 1e6:.1f}M non-embedding, {r['layers']} layers, {r['dtype']}",
        f"population     P={r['P']} x Q={r['Q']} items = {r['sequences_per_pass']} sequences, K={r['K']}, "
        f"layout {r['layout']}, scorer mode {r['mode']}",
        f"tokens/pass    {r['real_tokens_per_pass']} real ({r['padded_tokens_per_pass']} padded, "
        f"T={r['seq_len_padded']})",
        f"jaxalign       {r['sequences_per_s']:.2f} seq/s   {r['tokens_per_s']:.0f} tok/s   "
        f"median {r['median_s']:.4f}s of {len(r['times_s'])}",
        f"compile        {r['compile_s']:.2f}s (trace + XLA compile of the scorer, ahead of time)",
        f"peak memory    {gib(r['peak_memory_bytes'])} ({r['peak_memory_source']})",
        f"model FLOPs    {r['model_flops_per_pass'] / 1e12:.3f} TFLOP/pass from scratch, "
        f"{r['executed_flops_per_pass'] / 1e12:.3f} executed, "
        f"{r['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s executed",
        "MFU            " + ("n/a" if r["mfu"] is None else
                             f"{100 * r['mfu']:.1f}% executed, {100 * r['effective_mfu']:.1f}% effective")
        + f" (peak {peak}: {r['peak_flops_source']})",
    ]
    if r["torch_sequences_per_s"] is None:
        lines.append(f"torch          skipped ({r['torch_note']})")
    else:
        lines += [
            f"torch loop     {r['torch_sequences_per_s']:.2f} seq/s   {r['torch_tokens_per_s']:.0f} tok/s   "
            f"median {r['torch_median_s']:.4f}s ({r['torch_device']}, {r['torch_threads']} threads, "
            f"{r['torch_attention']})",
            f"speedup        {r['speedup_vs_torch']:.2f}x vs the PyTorch loop (medians; "
            f"{r['speedup_vs_torch_best']:.2f}x best vs best)",
            f"agreement      max |p_jax - p_torch| = {r['max_abs_prob_diff']:.2e} over the answer probabilities",
        ]
    lines += [
        f"host load      1-min load average {r['load_average_1m_at_start']} at start, "
        f"{r['load_average_1m_at_end']} at end ({r['device_info']['cpu_cores']} cores)",
        f"date           {r['date']}",
        f"command        {r['command']}",
    ]
    return "\n".join(lines)


def device_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """``--devices``: the scoring pass of this preset, P, K, layout and mode on 1..N devices.

    Each count runs in its own subprocess (:func:`benchmarks.scaling.run_one`): real devices
    when the default backend is an accelerator, else that many simulated CPU devices, which
    share this machine's cores (so their efficiency shows overhead, not speed-up). Best of
    ``--repeats`` passes after a compiling one; no PyTorch twin. Prints a table (or the JSON
    with ``--json``) and returns ``{"rows": [{"devices", "sequences_per_s",
    "per_device_sequences_per_s", "scaling_efficiency", ...}], ...}``.
    """
    from benchmarks import scaling

    if len(args.layouts) > 1 or len(args.modes) > 1:
        raise SystemExit("--devices takes one --layout and one --mode")
    layout, mode = args.layouts[0], args.modes[0]
    counts = scaling.parse_counts(args.devices)
    platform = scaling.default_platform()
    if args.preset == "llama3-8b" and platform == "cpu" and args.layers is None:
        raise SystemExit("--preset llama3-8b is for GPUs/TPUs; on a CPU use --preset 100m, or --layers")
    options = argparse.Namespace(
        real=platform != "cpu", model_axis=1, population=args.population, repeats=args.repeats,
        preset=args.preset, layers=args.layers, seed=args.seed, dtype=args.dtype, mode=mode,
        k=args.k, slot=layout)
    rows = scaling.scaling_rows(counts, options)
    result = {"preset": args.preset, "P": args.population, "K": args.k, "layout": layout,
              "dtype": args.dtype, "mode": mode, "simulated_cpu_devices": not options.real,
              "platform": platform, "rows": rows,
              **common.run_metadata("benchmarks/throughput.py", args.argv)}
    print(json.dumps(result, indent=2) if args.json else scaling.format_table(rows))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.devices:
        return device_scaling(args)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n\n".join(format_report(r) for r in result.get("runs", [result])))
    return result


if __name__ == "__main__":
    main()
