"""The paper's table: L1 loss to each country's Hofstede profile for Naive, Persona, ICL, DE and Adam.

Every country runs the same methods with the same budget (population x generations for DE; Adam
gets the same forward-pass budget; the baselines are single prompts), scored with the same
instrument, readout and constants. All countries are searched together: one
``jaxalign.align(lm, [countries...])`` run for DE and one ``gradient_align`` run for Adam (one
compiled program each, every country's search independent of the others, see
:mod:`jaxalign.optimize.pipeline`). ``--seeds 0,1,2`` repeats everything per seed and reports
the mean and the spread (sample standard deviation over seeds).

Writes into ``--out``: ``results.json`` (every number, per seed and aggregated), ``results.md``
(L1 per country and the mean, one row per method; the six dimensions per country; with
``--culturalbench`` the Easy/Hard accuracy per country for the plain and the DE-aligned model) and
``results.png`` (model vs target score per dimension and country).

Examples::

    python benchmarks/dims.py                                   # the paper's 4 countries, tiny-random
    python benchmarks/dims.py --countries all --methods naive,de --seeds 0,1,2
    python benchmarks/dims.py --culturalbench tests/data/culturalbench
    python benchmarks/dims.py --model meta-llama/Meta-Llama-3-8B-Instruct --dtype bfloat16 \\
        --population 32 --generations 100 --subspace 64 --out runs/dims-llama3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from jaxalign.prompting.layout import SLOTS as LAYOUTS  # noqa: E402

from benchmarks import common  # noqa: E402

DEFAULT_COUNTRIES = ("U.S.A.", "China", "India", "Saudi Arabia")  # the paper's four
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


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="L1 loss to Hofstede country profiles: Naive, Persona, ICL, DE and Adam per country.")
    parser.add_argument("--model", default="tiny-random",
                        help="Hugging Face Hub id, local checkpoint folder, or tiny-random (default)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="model dtype (default: float32 for tiny-random, bfloat16 otherwise)")
    parser.add_argument("--countries", default=",".join(DEFAULT_COUNTRIES),
                        help="comma-separated country names or codes, or 'all' (every country with "
                             "all six dimensions; see --min-dims) (default: %(default)s)")
    parser.add_argument("--min-dims", type=int, default=6,
                        help="with --countries all: keep countries with at least this many dimensions")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)")
    parser.add_argument("--population", type=int, default=16, help="DE population size")
    parser.add_argument("--generations", type=int, default=40, help="DE generations")
    parser.add_argument("--k", type=int, default=10, help="soft-prompt length K")
    parser.add_argument("--subspace", type=_subspace, default=32,
                        help="search subspace dimension, or 'none' for the full K x d space")
    parser.add_argument("--readout", choices=("expected", "argmax", "sample"), default="expected")
    parser.add_argument("--layout", choices=LAYOUTS, default="user_start",
                        help="soft-prompt slot (after_item and user_end put the item first)")
    parser.add_argument("--learning-rate", type=float, default=0.1, help="Adam's step size (gradient)")
    parser.add_argument("--seeds", type=_seeds, default=(0,),
                        help="comma-separated seeds; several report mean and spread (default: 0)")
    parser.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    parser.add_argument("--culturalbench", default=None, metavar="PATH",
                        help="folder with CulturalBench-Easy.csv and CulturalBench-Hard.csv: adds Easy/"
                             "Hard accuracy per country for the plain and the DE-aligned model")
    parser.add_argument("--out", default="runs/dims", help="folder for results.json/.md/.png")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.seed is not None:
        args.seeds = (args.seed,)
    args.methods = tuple(m.strip().lower() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"unknown method(s) {unknown or args.methods}; choose from {', '.join(METHODS)}")
    if args.culturalbench is not None and "de" not in args.methods:
        parser.error("--culturalbench compares the plain and the DE-aligned model: add de to --methods")
    if args.countries.strip().lower() == "all":
        args.countries = ("all",)
    else:
        args.countries = tuple(c.strip() for c in args.countries.split(",") if c.strip())
    if not args.countries:
        parser.error("--countries is empty")
    if args.dtype is None:
        args.dtype = "float32" if args.model == "tiny-random" else "bfloat16"
    return args


def resolve_countries(names: tuple[str, ...], min_dims: int) -> list[Any]:
    import jaxalign

    if names == ("all",):
        if not 1 <= min_dims <= 6:
            raise SystemExit(f"--min-dims must be 1..6, got {min_dims}")
        return [t for t in jaxalign.countries() if int(t.mask.sum()) >= min_dims]
    return [jaxalign.resolve_target(name) for name in names]


def _values(array: Any) -> list[float | None]:
    return [None if math.isnan(v) else round(float(v), 4) for v in np.asarray(array, np.float64)]


def align_config(args: argparse.Namespace, seed: int):
    """The :class:`jaxalign.AlignConfig` every method of one seed runs with (the optimizer's own
    settings, e.g. DE's F and CR, are jaxalign's defaults)."""
    import jaxalign

    return jaxalign.AlignConfig(
        k=args.k, subspace=args.subspace, population=args.population,
        generations=args.generations, readout=args.readout, slot=args.layout, seed=seed,
        baselines=tuple(m for m in args.methods if m in BASELINE_METHODS),
        learning_rate=args.learning_rate,
    )


#: The optimizer's settings recorded beside the table (``init_scale`` as resolved, never None).
DE_SETTINGS = ("strategy", "crossover_rate", "differential_weight", "dither", "elitism", "init_scale",
               "scoring_mode")


def run_seed(lm, instrument, targets, args, seed: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Every method for every country with one seed -> ``{country: {method: {...}}}`` plus the
    DE prompts (``"_prompts"``) for CulturalBench."""
    import jaxalign
    from jaxalign.api import gradient_align

    config = align_config(args, seed)
    baselines = config.baselines
    out: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
    prompts = {}
    if "de" in args.methods:
        results = jaxalign.align(lm, list(targets), instrument=instrument, config=config, progress=progress)
        for target, result in zip(targets, results):
            for name, baseline in result.baselines.items():
                out[target.name][name] = {"loss": float(baseline.loss), "dims": _values(baseline.dims)}
            out[target.name]["de"] = {
                "loss": float(result.loss), "dims": _values(result.dims),
                "evaluations": int(result.evaluations),
                "best_loss_history": [round(float(v), 4) for v in result.history["best_loss"]],
            }
            prompts[target.name] = result.soft_prompt
        wall, compile_s = results[0].wall_s, results[0].compile_s
        for target in targets:
            out[target.name]["de"].update(wall_s_all_countries=round(wall, 2), compile_s=round(compile_s, 2))
    elif baselines:
        for target in targets:
            scored = jaxalign.run_baselines(lm, instrument, target, names=baselines,
                                            readout=args.readout, seed=seed)
            for name, baseline in scored.items():
                out[target.name][name] = {"loss": float(baseline.loss), "dims": _values(baseline.dims)}
    if "gradient" in args.methods:
        t0 = time.perf_counter()
        results = gradient_align(lm, list(targets), instrument=instrument, learning_rate=args.learning_rate,
                                 config=dataclasses.replace(config, baselines=()), progress=progress)
        for target, result in zip(targets, results):
            out[target.name]["gradient"] = {
                "loss": float(result.loss), "dims": _values(result.dims),
                "evaluations": int(result.evaluations),
                "wall_s_all_countries": round(time.perf_counter() - t0, 2)}
    for target in targets:
        if "persona" in args.methods and "persona" not in out[target.name]:
            out[target.name]["persona"] = {"loss": float("nan"), "dims": [None] * 6}  # custom target
    return {"methods": out, "_prompts": prompts}


def aggregate(per_seed: list[dict[str, Any]], targets, methods) -> dict[str, Any]:
    """Mean and sample std over seeds of every loss and dimension."""
    countries = {}
    for target in targets:
        entry = {"code": target.code, "target": {"dims": _values(target.values), "source": target.source},
                 "methods": {}}
        for m in methods:
            losses = np.array([run["methods"][target.name][m]["loss"] for run in per_seed], np.float64)
            dims = np.array([[np.nan if v is None else v for v in run["methods"][target.name][m]["dims"]]
                             for run in per_seed], np.float64)
            entry["methods"][m] = {
                "loss": float(np.mean(losses)),
                "loss_std": float(np.std(losses, ddof=1)) if len(losses) > 1 else None,
                "losses": [round(float(v), 4) for v in losses],
                "dims": _values(np.mean(dims, axis=0)),
            }
        countries[target.name] = entry
    return countries


def culturalbench_accuracy(lm, path: str, targets, prompts_per_seed: list[dict[str, Any]], slot: str):
    """Easy/Hard accuracy per country: plain model and DE-aligned prompt (mean over seeds)."""
    from jaxalign.evaluate.culturalbench import evaluate_culturalbench, load_culturalbench

    table: dict[str, dict[str, Any]] = {}
    for set_name in ("easy", "hard"):
        bench = load_culturalbench(path, set=set_name)
        for target in targets:
            row = table.setdefault(target.name, {})
            try:  # the benchmark's name for the country may differ ("United States" for U.S.A.)
                subset = bench.for_country(target.name)
            except ValueError:  # no question about it
                row[set_name] = None
                continue
            plain = evaluate_culturalbench(lm, subset, slot=slot)
            aligned = [evaluate_culturalbench(lm, subset, soft_prompt=prompts[target.name], slot=slot)
                       for prompts in prompts_per_seed]
            accs = np.array([a.accuracy for a in aligned])
            row[set_name] = {
                "questions": subset.n_questions, "plain": plain.accuracy,
                "aligned": float(np.mean(accs)),
                "aligned_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
            }
    return table


def _cell(mean: float | None, std: float | None = None, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def loss_table(results: dict[str, Any], methods: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """Header and rows ``[method, L1 per country..., mean]`` (``mean ± std`` over seeds when several)."""
    header = ["method", *results, "mean"]
    rows = []
    for m in methods:
        cells = [_cell(e["methods"][m]["loss"], e["methods"][m]["loss_std"]) for e in results.values()]
        per_seed = np.array([e["methods"][m]["losses"] for e in results.values()], np.float64)  # (C, S)
        means = np.nanmean(per_seed, axis=0)  # the mean over countries, per seed
        std = float(np.std(means, ddof=1)) if means.size > 1 else None
        rows.append([m, *cells, _cell(float(np.mean(means)), std)])
    return header, rows


def dims_table(results: dict[str, Any], methods: tuple[str, ...], dimensions) -> list[list[str]]:
    """Rows ``[country, row name, six dims..., loss]``: the target, then each method (seed means)."""
    def fmt(v):
        return "-" if v is None else f"{v:.1f}"

    rows = []
    for country, entry in results.items():
        rows.append([country, "target"] + [fmt(v) for v in entry["target"]["dims"]] + [""])
        for m in methods:
            method = entry["methods"][m]
            rows.append([country, m] + [fmt(v) for v in method["dims"]] + [_cell(method["loss"])])
    return rows


def bench_table(bench: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["country", "questions (easy/hard)", "easy plain", "easy aligned", "hard plain", "hard aligned"]
    rows = []
    for country, row in bench.items():
        cells = [country, "/".join(str(row[s]["questions"]) if row[s] else "0" for s in ("easy", "hard"))]
        for s in ("easy", "hard"):
            r = row[s]
            cells += ["-", "-"] if r is None else [_cell(r["plain"]), _cell(r["aligned"], r["aligned_std"])]
        rows.append(cells)
    return header, rows


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
    seeds = cfg["seeds"]
    de = cfg.get("de") or {}
    dither = de.get("dither")
    de_text = (f"; {de.get('strategy')}, CR {de.get('crossover_rate')}, F "
               + (f"uniform in [{dither[0]}, {dither[1]}] per generation" if dither else
                  str(de.get("differential_weight")))
               + f", elitism {de.get('elitism')}, init scale {de.get('init_scale')}, scoring {de.get('scoring_mode')}") if de else ""
    load = report.get("load_average_1_5_15m")
    lines = [
        f"# L1 loss to Hofstede profiles: {report['model']}",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}"
        + (f", {report['cpu_count']} CPUs" if report.get("cpu_count") else "")
        + (f"; load average (1/5/15 min) {load['start']} at start, {load['end']} at end" if load else ""),
        f"- model: {report['model']} ({report['dtype']}), wording {report['wording']}",
        f"- DE: population {cfg['population']}, generations {cfg['generations']}, K {cfg['k']}, "
        f"subspace {cfg['subspace']}, readout {cfg['readout']}, layout {cfg['slot']}{de_text}; Adam: the same "
        f"forward-pass budget, learning rate {cfg['learning_rate']}; all countries in one run per method",
        f"- seeds: {', '.join(map(str, seeds))}"
        + (" (cells: mean ± sample std over seeds)" if len(seeds) > 1 else ""),
        "- loss: mean absolute difference over the country's available dimensions "
        "(missing ones are masked, shown as -)",
        f"- wall time: {report['wall_s']:.1f} s",
        "",
        "## L1 loss",
        "",
        markdown_table(*loss_table(report["countries"], methods)),
        "",
    ]
    if report.get("culturalbench"):
        lines += ["## CulturalBench accuracy (plain model vs DE-aligned prompt)", "",
                  f"Questions from `{report['culturalbench_path']}`, matched to a country by its Hofstede "
                  "code; - where the file has no question about it.", "",
                  markdown_table(*bench_table(report["culturalbench"])), ""]
    lines += [
        "## Dimensions",
        "",
        markdown_table(["country", "row", *dims, "L1"], dims_table(report["countries"], methods, dims)),
        "",
        "![model vs target](results.png)",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per country: target and every method's score per dimension (seed means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    countries = report["countries"]
    dims = report["dimensions"]
    methods = list(report["methods"])
    n = len(countries)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    series = ["target", *methods]
    width = 0.8 / len(series)
    for i, (country, entry) in enumerate(countries.items()):
        ax = axes[i // cols][i % cols]
        for j, name in enumerate(series):
            values = entry["target"]["dims"] if name == "target" else entry["methods"][name]["dims"]
            values = np.array([np.nan if v is None else v for v in values], np.float64)
            xs = np.arange(len(dims)) + (j - (len(series) - 1) / 2) * width
            ok = ~np.isnan(values)
            ax.bar(xs[ok], values[ok], width, label=name, color="black" if name == "target" else None)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(np.arange(len(dims)), dims, fontsize=7)
        title = country + "".join(f", {m} {entry['methods'][m]['loss']:.1f}" for m in methods if m == "de")
        ax.set_title(title, fontsize=8)
    for i in range(n, rows * cols):
        axes[i // cols][i % cols].axis("off")
    axes[0][0].legend(fontsize=6, ncols=2)
    fig.suptitle(f"{report['model']}: model vs target per dimension (L1 = DE's)", fontsize=9)
    fig.text(0.01, 0.005, f"{report['date']}, {report['device']}: {report['command']}", fontsize=5,
             ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jaxalign

    targets = resolve_countries(args.countries, args.min_dims)
    meta = common.run_metadata("benchmarks/dims.py", args.argv)
    progress = not args.no_progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    lm = jaxalign.load_model(args.model, dtype=args.dtype)
    instrument = jaxalign.vsm13()
    per_seed = [run_seed(lm, instrument, targets, args, seed, progress) for seed in args.seeds]
    results = aggregate(per_seed, targets, args.methods)
    bench = None
    if args.culturalbench is not None:
        bench = culturalbench_accuracy(lm, args.culturalbench, targets, [r["_prompts"] for r in per_seed],
                                       args.layout)
    wall = time.perf_counter() - start
    de_config = align_config(args, args.seeds[0])

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
            "seeds": list(args.seeds), "learning_rate": args.learning_rate,
            "de": {name: value for name, value in de_config.to_dict().items() if name in DE_SETTINGS},
        },
        "align_config": de_config.to_dict(),  # the first seed's; other seeds differ only in seed
        "loss": "mean absolute difference over the target's available dimensions",
        "wall_s": wall,
        "load_average_1_5_15m": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
        "cpu_count": os.cpu_count(),
        "countries": results,
        "per_seed": [{"seed": seed, "methods": run["methods"]} for seed, run in zip(args.seeds, per_seed)],
    }
    if bench is not None:
        report["culturalbench"] = bench
        report["culturalbench_path"] = args.culturalbench
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown_report(report))
    plot(report, out / "results.png")

    methods = tuple(args.methods)
    print(f"\n{report['date']}, {report['device']}: {report['command']}")
    print(f"L1 loss ({args.model}, P={args.population}, G={args.generations}, K={args.k}, "
          f"subspace={args.subspace}, layout={args.layout}, seeds={','.join(map(str, args.seeds))}; "
          f"wall {wall:.1f}s)")
    print(text_table(*loss_table(results, methods)))
    if bench is not None:
        print("\nCulturalBench accuracy")
        print(text_table(*bench_table(bench)))
    print("\nDimensions (- = missing in the target, masked in the loss)")
    print(text_table(["country", "row", *instrument.dimensions, "L1"],
                     dims_table(results, methods, instrument.dimensions)))
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'} and {out / 'results.png'}")
    return report


if __name__ == "__main__":
    main()
