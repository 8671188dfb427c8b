"""Generation speed: time to first token and decode tokens/s, jaxalign vs transformers ``generate``.

Both decode the same batch greedily on the same weights: ``B`` chat prompts (survey items asked
as open questions) with a random ``K``-vector soft prompt spliced in at the ``user_start`` slot,
left-padded, as ``inputs_embeds``. Every row decodes exactly ``M`` new tokens (jaxalign: a stop
id outside the vocabulary; transformers: ``min_new_tokens=M``).

- **time to first token** (TTFT): prefill of the batch and the first token on the host
  (jaxalign: ``Decoder.start``; transformers: ``generate(max_new_tokens=1)``), median of repeats;
- **decode tokens/s**: ``B * (M - 1)`` tokens over (time of ``M`` tokens - TTFT), median;
- **compile_s**: jaxalign's first call of each program (prefill, step loop), done before timing.

Also reported: the fraction of generated tokens on which the two agree (greedy decoding on
identical weights; float differences can flip a near tie on a random model).

    python benchmarks/generate.py --preset 100m --batch 4 --new-tokens 32 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `jaxalign` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=common.PRESETS, default="tiny")
    parser.add_argument("--layers", type=int, default=None, help="override the preset's depth")
    parser.add_argument("--batch", "-B", type=int, default=4, help="prompts decoded together")
    parser.add_argument("--k", "-K", type=int, default=8, help="soft-prompt length")
    parser.add_argument("--new-tokens", "-M", type=int, default=32, help="tokens decoded per row")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="default: float32 on CPU, bfloat16 on accelerators")
    parser.add_argument("--no-torch", action="store_true", help="skip transformers generate")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("batch", "k", "new_tokens", "repeats"):
        if getattr(args, name) < (2 if name == "new_tokens" else 1):
            parser.error(f"--{name.replace('_', '-')} is too small")
    return args


def questions(batch: int) -> list[str]:
    """``batch`` survey items asked as open questions (cycled)."""
    import jaxalign

    texts = [str(item.text).strip() for item in jaxalign.vsm13().items]
    return [texts[i % len(texts)] for i in range(batch)]


def time_jax(lm, prompts: list[str], soft: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    from jaxalign.generation import decoding

    decoder, _, _ = decoding.prepare(lm, prompts, decoding.SoftPrompt(soft, slot="user_start"),
                                     max_new_tokens=args.new_tokens, stop_ids=[lm.config.vocab_size])
    start = time.perf_counter()
    state = jax.block_until_ready(decoder.advance(decoder.start()))  # compiles both programs
    compile_s = time.perf_counter() - start
    ttft, total = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        state = decoder.start()
        np.asarray(state.token)  # the first tokens, on the host
        ttft.append(time.perf_counter() - start)
        state = jax.block_until_ready(decoder.advance(state))
        total.append(time.perf_counter() - start)
    tokens, lengths, _ = decoder.emitted(state)
    assert (lengths == args.new_tokens).all()
    return {"ttft_s": statistics.median(ttft), "total_s": statistics.median(total),
            "first_call_s": compile_s, "tokens": tokens, "prompt_length_padded": int(decoder.rows.mask.shape[1]),
            "prompt_lengths": decoder.rows.lengths.tolist(), "embeds": decoder.rows.embeds,
            "mask": decoder.rows.mask}


def time_torch(lm, embeds, mask, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model = common.torch_model_from_lm(lm)
    inputs = torch.from_numpy(np.array(embeds.astype(np.float32))).to(model.dtype)
    attention = torch.from_numpy(np.array(mask)).long()
    pad = int(lm.tokenizer.pad_token_id)

    def run(n: int):
        with torch.no_grad():
            return model.generate(inputs_embeds=inputs, attention_mask=attention, max_new_tokens=n,
                                  min_new_tokens=n, do_sample=False, pad_token_id=pad)

    run(2)  # warm-up
    ttft, total, out = [], [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        run(1)
        ttft.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = run(args.new_tokens)
        total.append(time.perf_counter() - start)
    return {"ttft_s": statistics.median(ttft), "total_s": statistics.median(total),
            "tokens": out.numpy(), "threads": torch.get_num_threads()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    lm = common.build_preset(args.preset, dtype, layers=args.layers, seed=args.seed)
    soft = np.asarray(common.random_prompts(lm, 1, args.k, seed=args.seed)[0])
    prompts = questions(args.batch)
    print(f"jaxalign: {args.batch} rows x {args.new_tokens} tokens ...", file=sys.stderr, flush=True)
    ours = time_jax(lm, prompts, soft, args)
    decoded = args.batch * (args.new_tokens - 1)
    result: dict[str, Any] = {
        **common.run_metadata("benchmarks/generate.py", args.argv),
        "device": common.describe_device(), "preset": args.preset, "layers": lm.config.num_hidden_layers,
        "dtype": dtype, "B": args.batch, "K": args.k, "M": args.new_tokens,
        "prompt_length_padded": ours["prompt_length_padded"], "prompt_lengths": ours["prompt_lengths"],
        "ttft_s": round(ours["ttft_s"], 5),
        "decode_tokens_per_s": round(decoded / (ours["total_s"] - ours["ttft_s"]), 2),
        "total_s": round(ours["total_s"], 5), "first_call_s": round(ours["first_call_s"], 3),
        "torch_ttft_s": None, "torch_decode_tokens_per_s": None, "torch_total_s": None,
        "decode_speedup_vs_torch": None, "ttft_speedup_vs_torch": None, "tokens_agree": None,
    }
    if not args.no_torch:
        print(f"jaxalign done (TTFT {ours['ttft_s']:.3f} s, total {ours['total_s']:.3f} s); transformers ...",
              file=sys.stderr, flush=True)
        theirs = time_torch(lm, ours["embeds"], ours["mask"], args)
        torch_rate = decoded / (theirs["total_s"] - theirs["ttft_s"])
        agree = float(np.mean(theirs["tokens"] == ours["tokens"]))
        result.update(torch_ttft_s=round(theirs["ttft_s"], 5), torch_decode_tokens_per_s=round(torch_rate, 2),
                      torch_total_s=round(theirs["total_s"], 5), torch_threads=theirs["threads"],
                      decode_speedup_vs_torch=round(result["decode_tokens_per_s"] / torch_rate, 3),
                      ttft_speedup_vs_torch=round(theirs["ttft_s"] / ours["ttft_s"], 3),
                      tokens_agree=round(agree, 4))
    return result


def format_table(result: dict[str, Any]) -> str:
    rows = [("jaxalign", result["ttft_s"], result["decode_tokens_per_s"], result["total_s"])]
    if result["torch_ttft_s"] is not None:
        rows.append(("transformers", result["torch_ttft_s"], result["torch_decode_tokens_per_s"],
                     result["torch_total_s"]))
    lines = [f"{result['device']}; preset {result['preset']} ({result['dtype']}), B={result['B']}, "
             f"K={result['K']}, M={result['M']}, prompt {result['prompt_length_padded']} tokens (padded)",
             f"{'':14s}{'TTFT s':>10s}{'decode tok/s':>14s}{'total s':>10s}"]
    lines += [f"{name:14s}{ttft:10.4f}{rate:14.1f}{total:10.3f}" for name, ttft, rate, total in rows]
    if result["tokens_agree"] is not None:
        lines.append(f"decode speed-up {result['decode_speedup_vs_torch']}x, TTFT speed-up "
                     f"{result['ttft_speedup_vs_torch']}x; tokens agree {result['tokens_agree']:.1%}; "
                     f"jaxalign first call (compile) {result['first_call_s']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return result


if __name__ == "__main__":
    main()
