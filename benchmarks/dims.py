"""The paper's comparison: L1 loss to each country's Hofstede profile for Naive, Persona, ICL and DE.

For every country the same methods run with the same budget (population x generations for DE;
the baselines are single prompts), scored with the same instrument, readout and constants.
Prints a loss table (method x country) and the six dimensions per row, and writes
``results.json`` and ``results.md`` into ``--out``.

Examples::

    python benchmarks/dims.py                                   # tiny-random model, a few minutes on a CPU
    python benchmarks/dims.py --model meta-llama/Meta-Llama-3-8B-Instruct --dtype bfloat16 \\
        --population 32 --generations 100 --out runs/dims-llama3
    python benchmarks/dims.py --countries "Japan,Germany" --methods naive,de --layout after_item
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from jaxalign.prompting.layout import SLOTS as LAYOUTS  # noqa: E402

from benchmarks import common  # noqa: E402

DEFAULT_COUNTRIES = ("United States", "China", "India", "Saudi Arabia", "Arab countries")
BASELINE_METHODS = ("naive", "persona", "icl")
SEARCH_METHODS = ("de", "gradient")
METHODS = BASELINE_METHODS + SEARCH_METHODS


def _subspace(text: str) -> int | None:
    if text.lower() in ("none", "full", "0"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--subspace must be >= 1 or 'none', got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="L1 loss to Hofstede country profiles: Naive, Persona, ICL and DE per country.")
    parser.add_argument("--model", default="tiny-random",
                        help="Hugging Face Hub id, local checkpoint folder, or tiny-random (default)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="model dtype (default: float32 for tiny-random, bfloat16 otherwise)")
    parser.add_argument("--countries", default=",".join(DEFAULT_COUNTRIES),
                        help="comma-separated country names or codes (default: %(default)s)")
    parser.add_argument("--methods", default="naive,persona,icl,de",
                        help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)")
    parser.add_argument("--population", type=int, default=16, help="DE population size")
    parser.add_argument("--generations", type=int, default=40, help="DE generations")
    parser.add_argument("--k", type=int, default=10, help="soft-prompt length K")
    parser.add_argument("--subspace", type=_subspace, default=32,
                        help="search subspace dimension, or 'none' for the full K x d space")
    parser.add_argument("--readout", choices=("expected", "argmax", "sample"), default="expected")
    parser.add_argument("--layout", choices=LAYOUTS, default="user_start",
                        help="soft-prompt slot (after_item and user_end put the item first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/dims", help="folder for results.json and results.md")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    args.methods = tuple(m.strip().lower() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"unknown method(s) {unknown or args.methods}; choose from {', '.join(METHODS)}")
    args.countries = tuple(c.strip() for c in args.countries.split(",") if c.strip())
    if not args.countries:
        parser.error("--countries is empty")
    if args.dtype is None:
        args.dtype = "float32" if args.model == "tiny-random" else "bfloat16"
    return args


def gradient_function():
    """``jaxalign.optimize.gradient.gradient_align`` if the library has it, else a clear error."""
    try:
        module = importlib.import_module("jaxalign.optimize.gradient")
    except ImportError:
        module = None
    function = getattr(module, "gradient_align", None)
    if function is None:
        raise SystemExit("gradient method not available yet "
                         "(jaxalign.optimize.gradient.gradient_align is missing)")
    return function


def _values(array: Any) -> list[float | None]:
    return [None if math.isnan(v) else round(float(v), 4) for v in np.asarray(array, np.float64)]


def run_country(lm, instrument, target, args, progress: bool) -> dict[str, Any]:
    """All requested methods for one country -> ``{method: {"loss", "dims", "wall_s", ...}}``."""
    import jaxalign

    baselines = tuple(m for m in args.methods if m in BASELINE_METHODS)
    config = jaxalign.AlignConfig(
        k=args.k, subspace=args.subspace, population=args.population,
        generations=args.generations, readout=args.readout, slot=args.layout, seed=args.seed,
        baselines=baselines,
    )
    methods: dict[str, dict[str, Any]] = {}
    if "de" in args.methods:
        result = jaxalign.align(lm, target, instrument=instrument, config=config, progress=progress)
        for name, baseline in result.baselines.items():
            methods[name] = {"loss": float(baseline.loss), "dims": _values(baseline.dims)}
        methods["de"] = {
            "loss": float(result.loss), "dims": _values(result.dims),
            "wall_s": round(result.wall_s, 2), "compile_s": round(result.compile_s, 2),
            "evaluations": int(result.evaluations),
            "best_loss_history": [round(float(v), 4) for v in result.history["best_loss"]],
        }
    elif baselines:
        scored = jaxalign.run_baselines(lm, instrument, target, names=baselines,
                                        readout=args.readout, seed=args.seed)
        for name, baseline in scored.items():
            methods[name] = {"loss": float(baseline.loss), "dims": _values(baseline.dims)}
    if "gradient" in args.methods:
        gradient_align = gradient_function()
        t0 = time.perf_counter()
        result = gradient_align(lm, target, instrument=instrument,
                                config=dataclasses.replace(config, baselines=()), progress=progress)
        methods["gradient"] = {"loss": float(result.loss), "dims": _values(result.dims),
                               "wall_s": round(time.perf_counter() - t0, 2)}
    return {name: methods[name] for name in args.methods}


def loss_table(results: dict[str, Any], methods: tuple[str, ...]) -> list[list[str]]:
    """Rows ``[country, loss per method...]`` plus a mean row (over countries)."""
    rows = []
    for country, entry in results.items():
        rows.append([country] + [f"{entry['methods'][m]['loss']:.2f}" for m in methods])
    means = [np.mean([entry["methods"][m]["loss"] for entry in results.values()]) for m in methods]
    rows.append(["mean"] + [f"{v:.2f}" for v in means])
    return rows


def dims_table(results: dict[str, Any], methods: tuple[str, ...], dimensions) -> list[list[str]]:
    """Rows ``[country, row name, six dims..., loss]``: the target, then each method."""
    def fmt(v):
        return "-" if v is None else f"{v:.1f}"

    rows = []
    for country, entry in results.items():
        rows.append([country, "target"] + [fmt(v) for v in entry["target"]["dims"]] + [""])
        for m in methods:
            method = entry["methods"][m]
            rows.append([country, m] + [fmt(v) for v in method["dims"]] + [f"{method['loss']:.2f}"])
    return rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def markdown_report(report: dict[str, Any]) -> str:
    methods = tuple(report["methods"])
    dims = report["dimensions"]
    cfg = report["config"]
    lines = [
        f"# L1 loss to Hofstede profiles: {report['model']}",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}",
        f"- model: {report['model']} ({report['dtype']}), wording {report['wording']}",
        f"- DE: population {cfg['population']}, generations {cfg['generations']}, K {cfg['k']}, "
        f"subspace {cfg['subspace']}, readout {cfg['readout']}, layout {cfg['slot']}, seed {cfg['seed']}",
        "- loss: mean absolute difference over the country's available dimensions "
        "(missing ones are masked, shown as -)",
        f"- wall time: {report['wall_s']:.1f} s",
        "",
        "## L1 loss",
        "",
        markdown_table(["country", *methods], loss_table(report["countries"], methods)),
        "",
        "## Dimensions",
        "",
        markdown_table(["country", "row", *dims, "L1"],
                       dims_table(report["countries"], methods, dims)),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jaxalign
    from tqdm.auto import tqdm

    if "gradient" in args.methods:
        gradient_function()  # fail before anything runs
    targets = [jaxalign.resolve_target(name) for name in args.countries]
    meta = common.run_metadata("benchmarks/dims.py", args.argv)
    progress = not args.no_progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    lm = jaxalign.load_model(args.model, dtype=args.dtype)
    instrument = jaxalign.vsm13()
    results: dict[str, Any] = {}
    for target in tqdm(targets, desc="countries", unit="country", disable=not progress):
        entry = run_country(lm, instrument, target, args, progress)
        results[target.name] = {
            "code": target.code,
            "target": {"dims": _values(target.values), "source": target.source},
            "methods": entry,
        }
    wall = time.perf_counter() - start

    report = {
        **meta,
        "device": common.describe_device(),
        "model": args.model,
        "dtype": args.dtype,
        "wording": instrument.wording,
        "dimensions": list(instrument.dimensions),
        "methods": list(args.methods),
        "config": {
            "population": args.population, "generations": args.generations, "k": args.k,
            "subspace": args.subspace, "readout": args.readout, "slot": args.layout,
            "seed": args.seed,
        },
        "loss": "mean absolute difference over the target's available dimensions",
        "wall_s": wall,
        "countries": results,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown_report(report))

    methods = tuple(args.methods)
    print(f"\nL1 loss ({args.model}, P={args.population}, G={args.generations}, K={args.k}, "
          f"subspace={args.subspace}, layout={args.layout}; wall {wall:.1f}s)")
    print(text_table(["country", *methods], loss_table(results, methods)))
    print("\nDimensions (- = missing in the target, masked in the loss)")
    print(text_table(["country", "row", *instrument.dimensions, "L1"],
                     dims_table(results, methods, instrument.dimensions)))
    print(f"\nwrote {out / 'results.json'} and {out / 'results.md'}")
    return report


if __name__ == "__main__":
    main()
