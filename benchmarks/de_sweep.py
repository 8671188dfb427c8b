"""Why is Differential Evolution the weakest optimizer here? A budgeted sweep of its settings.

Every configuration spends the same forward-pass budget ``B = population * (generations + 1)``
(default 16 x 41 = 656): a configuration with another population runs
``round(B / population) - 1`` generations. The countries x seeds of one configuration are
independent searches in ONE compiled program (``jaxalign.align`` with a list of targets; the
target of seed s is named "<country> #s", so it draws its own PRNG stream; the soft-prompt space,
p0 and subspace basis, comes from --space-seed and is shared, as in ``benchmarks/optimizers.py``)::

    config (CR, F/dither, elitism, init_scale, population, subspace)
        -> align(lm, [C x S targets]) -> final L1 per search (C*S,) + best-so-far curves
        -> mean over countries per seed -> mean, std over seeds

Writes ``de_sweep.json`` (date, command, load average at start and per config, every config and
every search's final L1 and curve) and ``de_sweep.md`` into ``--out``, after each config.

Example (the sweep behind AlignConfig's DE defaults)::

    nice -n 5 python benchmarks/de_sweep.py --out benchmarks/results/de_sweep_tiny_2026-12-01
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

# name -> AlignConfig overrides (on top of the paper preset: CR 0.9, F 0.8, no dither, DE/best/1,
# init_scale 1); "population" is rebalanced to the budget, "subspace" replaces --subspace.
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {},
    "dither": dict(dither=(0.5, 1.0)),
    "rand": dict(elitism=False),
    "rand-dither": dict(elitism=False, dither=(0.5, 1.0)),
    "best-cr0.3": dict(crossover_rate=0.3),
    "rand-cr0.3": dict(elitism=False, crossover_rate=0.3, dither=(0.5, 1.0)),
    "best-init0.5": dict(init_scale=0.5),
    "best-init2": dict(init_scale=2.0),
    "rand-init2": dict(elitism=False, init_scale=2.0, dither=(0.5, 1.0)),
    "best-p8": dict(population=8),
    "best-p32": dict(population=32),
    "rand-p32": dict(elitism=False, population=32, dither=(0.5, 1.0)),
    "best-sub16": dict(subspace=16),
}


def _list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _override(text: str) -> tuple[str, dict[str, Any]]:
    """``name=key:value;key:value`` -> (name, overrides); values parsed as JSON (``none`` -> None)."""
    name, _, body = text.partition("=")
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in body.split(";"))):
        key, _, value = part.partition(":")
        value = value.strip()
        parsed = None if value.lower() == "none" else json.loads(value)
        out[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    if not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=key:value;..., got {text!r}")
    return name.strip(), out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Equal-budget sweep of Differential Evolution's settings.")
    parser.add_argument("--model", default="tiny-random", help="Hub id, checkpoint folder or tiny-random (default)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--configs", type=_list, default=tuple(CONFIGS),
                        help=f"comma-separated names from {','.join(CONFIGS)} (default: all)")
    parser.add_argument("--config", type=_override, action="append", default=[], metavar="NAME=KEY:VALUE;...",
                        help="an extra config, e.g. 'mine=elitism:false;crossover_rate:0.5;dither:[0.5,1.0]' "
                             "(AlignConfig field names; population and subspace allowed)")
    parser.add_argument("--countries", type=_list, default=("China", "U.S.A.", "India"),
                        help="comma-separated countries (default: China,U.S.A.,India)")
    parser.add_argument("--seeds", type=int, default=1, help="replicates per country (default: 1)")
    parser.add_argument("--space-seed", type=int, default=0, help="seed of p0 and the subspace")
    parser.add_argument("--population", type=int, default=16, help="population of the budget (default 16)")
    parser.add_argument("--generations", type=int, default=40, help="generations of the budget (default 40)")
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--subspace", type=int, default=32)
    parser.add_argument("--out", default="runs/de_sweep")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    if args.seeds < 1 or args.population < 4 or args.generations < 1:
        parser.error("--seeds >= 1, --population >= 4 and --generations >= 1 are needed")
    return args


def sweep_config(overrides: dict[str, Any], args: argparse.Namespace):
    """The AlignConfig of one sweep entry: the paper preset, the overrides, the budget."""
    from jaxalign import AlignConfig

    overrides = dict(overrides)
    population = int(overrides.pop("population", args.population))
    generations = common.generations_for_budget(population, args.population * (args.generations + 1))
    subspace = overrides.pop("subspace", args.subspace)
    return AlignConfig.from_preset(
        "paper", k=args.k, subspace=subspace or None, population=population, generations=generations,
        seed=args.space_seed, baselines=(), chunk_size=generations + 1, **overrides)


def run_config(lm, instrument, name: str, config, countries, args) -> dict[str, Any]:
    import jaxalign

    replicas = [dataclasses.replace(c, name=f"{c.name} #{s}") for s in range(args.seeds) for c in countries]
    load = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    found = jaxalign.align(lm, replicas, instrument=instrument, config=config, progress=False)
    wall = time.perf_counter() - t0
    finals = np.array([r.loss for r in found], np.float64).reshape(args.seeds, len(countries))  # (S, C)
    per_seed = finals.mean(axis=1)
    return {
        "name": name,
        "config": config.to_dict(),
        "evaluations": int(found[0].evaluations),
        "load_average_1m": load,
        "wall_s": round(wall, 1),
        "final_l1": {f"{c.name}|{s}": float(finals[s, i]) for s in range(args.seeds) for i, c in enumerate(countries)},
        "mean": float(per_seed.mean()),
        "std_over_seeds": float(per_seed.std(ddof=1)) if args.seeds > 1 else None,
        "per_country": {c.name: float(finals[:, i].mean()) for i, c in enumerate(countries)},
        "curves": {f"{c.name}|{s}": np.asarray(found[s * len(countries) + i].history["best_loss"]).tolist()
                   for s in range(args.seeds) for i, c in enumerate(countries)},
    }


def markdown(report: dict[str, Any]) -> str:
    countries = report["setup"]["countries"]
    lines = [f"# DE sweep: {report['model']}", "",
             f"Date {report['date']}; command `{report['command']}`; device {report['device']}; "
             f"load average (1 min) at start {report['load_average_1m_at_start']}.", "",
             f"Budget {report['setup']['budget']} forward passes per search; {report['setup']['seeds']} seed(s); "
             "final L1 (mean over countries, ± std over seeds).", "",
             "| config | elitism | CR | F / dither | init | P x (G+1) | subspace | mean L1 | "
             + " | ".join(countries) + " | wall s | load |",
             "|---|---|---:|---|---:|---|---:|---:|" + "---:|" * len(countries) + "---:|---:|"]
    for row in report["rows"]:
        c = row["config"]
        f = c["differential_weight"] if c["dither"] is None else f"{c['dither'][0]}-{c['dither'][1]}"
        spread = "" if row["std_over_seeds"] is None else f" ± {row['std_over_seeds']:.2f}"
        lines.append(
            f"| {row['name']} | {c['elitism']} | {c['crossover_rate']} | {f} | {c['init_scale']} | "
            f"{c['population']} x {c['generations'] + 1} | {c['subspace']} | {row['mean']:.2f}{spread} | "
            + " | ".join(f"{row['per_country'][n]:.2f}" for n in countries)
            + f" | {row['wall_s']} | {row['load_average_1m']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jaxalign

    meta = common.run_metadata("benchmarks/de_sweep.py", args.argv)
    entries = [(n, CONFIGS[n]) for n in args.configs] + list(args.config)
    configs = [(n, sweep_config(o, args)) for n, o in entries]  # every config checked before running
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    countries = [jaxalign.resolve_target(c) for c in args.countries]
    lm = jaxalign.load_model(args.model, dtype=args.dtype)
    instrument = jaxalign.vsm13()
    report = {**meta, "device": common.describe_device(), "model": lm.name,
              "setup": {"countries": [c.name for c in countries], "seeds": args.seeds, "k": args.k,
                        "subspace": args.subspace, "budget": args.population * (args.generations + 1),
                        "space_seed": args.space_seed},
              "rows": []}
    for name, config in configs:
        row = run_config(lm, instrument, name, config, countries, args)
        report["rows"].append(row)
        print(f"{name}: mean L1 {row['mean']:.2f} ({row['wall_s']} s, load {row['load_average_1m']})",
              file=sys.stderr, flush=True)
        (out / "de_sweep.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "de_sweep.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
