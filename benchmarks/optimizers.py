"""Which optimizer aligns best per unit of compute, and does the prompt generalise?

An equal-budget study of the soft-prompt optimizers on one model::

    methods    de-paper (plain DE, AlignConfig.from_preset("paper")), de (jaxalign's defaults),
               de-p8 (the "de-p8" preset: 8 members, so budget / 8 - 1 generations), CMA_ES,
               Sep_CMA_ES, SNES (evosax strategies), gradient (Adam on the expected readout),
               hybrid (an evolution phase, then Adam from its best prompt)
    options    normal (tune on the normal option order), both-orders (mean loss of the normal
               and reversed orders), each applied to --option-methods
    budget     population * (generations + 1) forward passes of one prompt for every method (equal
               FLOPs): a DE/SNES/CMA step scores P prompts (step 0's initial population
               included); an Adam step costs what XLA's cost analysis of the compiled programs
               says (its FLOPs over one member's forward pass, the rematerialised backward
               included; RESULTS.md has the figures; recorded per search as "cost"); hybrid
               spends --hybrid-fraction of it on evolution. Each search's loop time is measured
               too, and a second table compares the methods at equal wall time (each curve read
               at the loop time of the fastest method)
    replicates C countries x S seeds = C*S independent searches in ONE compiled program per
               method (``jaxalign.align`` with a list of targets); replicate s of a country is
               that country's target named "<country> #s", so it draws its own PRNG stream.
               The soft-prompt space (p0, subspace basis) comes from --space-seed and is shared;
               for deterministic Adam, whose search has no randomness given the space, replicate
               s runs with config seed --space-seed + s instead (its own p0 and subspace;
               one program per seed).
    slot       --slot: where the soft prompt goes, for the searches and their scorers alike
               (user_start by default; user_end is the fast item-first slot on a CPU)
    tuning     --init-text persona|icl starts every search from its country's written prompt (each
               country then its own program); --extra-wording FILE tunes on that wording too (the
               held-out one is refused); --set FIELD=VALUE changes an AlignConfig field of every
               method (F, CR, init_scale...); --options both-orders alone runs only that option
    pieces     --first-seed N --seeds S runs replicates N..N+S-1 only (the same searches as in a
               study with more seeds), so a study can be split over sessions and folders
    reports    per method: tuned L1 (the wording and order tuned on), held-out-wording L1 and
               reversed-order L1 (the scorers of ``jaxalign.evaluate_robustness``), as the mean
               over countries of each seed, then mean and std over seeds; per country means;
               CulturalBench accuracy with --culturalbench (each country's questions, matched by
               survey name; a country without any is left out of the means); the naive model's figures;
               loss-vs-forward-passes curves (best-so-far, mean over replicates) in one figure;
               other readings of the tuned wording's answers: Kendall tau between the model's and
               the target's six dimensions, and the L1 after the constants are anchored on the
               plain model's answers read as a U.S.A. respondent (:func:`readings`);
               --baselines persona,icl: the written prompts scored under every condition too

Writes ``optimizers.json``, ``optimizers.md``, ``optimizers.png`` and ``prompts.npz`` (every
search's best prompt, key ``method|option|country|seed``) into ``--out``, after each method (a
stopped run leaves its finished methods, marked ``"complete": false``). ``--append`` adds methods
to the study already in ``--out`` (same setup, checked): its searches are read back from
``optimizers.json`` and ``prompts.npz`` and the report covers both; ``"commands"`` lists every
invocation. With ``--culturalbench`` it also evaluates the searches already there that have no
figure from that file and set.

Examples::

    nice python benchmarks/optimizers.py --out benchmarks/results/optimizers_tiny     # tiny model
    python benchmarks/optimizers.py --model meta-llama/Meta-Llama-3-8B-Instruct --dtype bfloat16 \\
        --population 32 --generations 100 --subspace 64 --out runs/optimizers-llama3 \\
        --culturalbench path/to/CulturalBench-Hard.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from jaxalign.prompting.layout import SLOTS  # noqa: E402

from benchmarks import common  # noqa: E402

METHODS = ("de-paper", "SNES", "gradient", "de", "hybrid", "CMA_ES", "Sep_CMA_ES", "de-p8")
OPTIONS = ("normal", "both-orders")
CONDITIONS = ("tuned", "heldout", "reversed")
READINGS = ("tau", "anchored")  # other readings of the tuned wording's answers (see score_conditions)
BASELINES = ("persona", "icl")  # written prompts, scored like the searches (no search)
ANCHOR = "U.S.A."  # the plain model is read as a respondent of this country for "anchored"
DEFAULT_COUNTRIES = ("China", "U.S.A.", "India")
LEGACY_FORWARDS_PER_STEP = 3.0  # what searches recorded without a measured cost were run with


def _list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Equal-budget comparison of the soft-prompt optimizers (L1, held-out wording, "
                    "reversed order, CulturalBench).")
    parser.add_argument("--model", default="tiny-random",
                        help="Hugging Face Hub id, local checkpoint folder, tiny-random (default), or "
                             "the random preset 100m (benchmarks/common.py, tiny tokenizer)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="model dtype (default: float32 for tiny-random, bfloat16 otherwise)")
    parser.add_argument("--countries", type=_list, default=DEFAULT_COUNTRIES,
                        help="comma-separated countries (default: China,U.S.A.,India)")
    parser.add_argument("--seeds", type=int, default=3, help="replicates per country (default: 3)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="number of the first replicate (default 0): --first-seed 1 --seeds 1 runs "
                             "replicate 1 alone, the same search as replicate 1 of --seeds 2")
    parser.add_argument("--slot", choices=SLOTS, default="user_start",
                        help="soft-prompt position (default user_start; after_item and user_end put "
                             "the item first, which is much faster on a CPU)")
    parser.add_argument("--space-seed", type=int, default=0, help="seed of p0 and the subspace")
    parser.add_argument("--methods", type=_list, default=METHODS,
                        help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--options", type=_list, default=OPTIONS,
                        help="tuning presentations, from normal, both-orders (default: both)")
    parser.add_argument("--option-methods", type=_list, default=("de", "gradient"),
                        help="methods also run with the non-normal --options (default: de,gradient)")
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--generations", type=int, default=40)
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--subspace", type=int, default=32, help="0: the full K x d space")
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--hybrid-fraction", type=float, default=0.25)
    parser.add_argument("--hybrid-strategy", default="SNES",
                        help="evosax strategy of hybrid's evolution phase (default: SNES)")
    parser.add_argument("--readout", default="expected", choices=("expected", "argmax"))
    parser.add_argument("--init-text", choices=("persona", "icl"), default=None,
                        help="start every search from this written prompt's token embeddings (each "
                             "country its own text: persona or icl; default: random vocabulary rows)")
    parser.add_argument("--extra-wording", dest="extra_wordings", action="append", default=[],
                        metavar="FILE", help="a JSON wording tuned on beside the built-in one "
                                             "(AlignConfig.extra_wordings; repeat for several)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="an AlignConfig field for every method's config (value read as JSON, "
                             "else as text), e.g. --set crossover_rate=0.5 --set init_scale=2; repeat")
    parser.add_argument("--baselines", type=_list, default=(),
                        help=f"written prompts also scored under every condition, from {','.join(BASELINES)} "
                             "(default: none; the plain model is always scored)")
    parser.add_argument("--culturalbench", default=None, metavar="PATH",
                        help="CulturalBench csv/jsonl/parquet file or folder: accuracy per prompt")
    parser.add_argument("--culturalbench-set", default="hard", choices=("easy", "hard"))
    parser.add_argument("--out", default="runs/optimizers")
    parser.add_argument("--append", action="store_true",
                        help="add --methods to the study already in --out (its setup must equal this "
                             "run's; methods it holds are not rerun)")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if any(b not in BASELINES for b in args.baselines):
        parser.error(f"--baselines must be from {', '.join(BASELINES)}")
    bad = [o for o in args.options if o not in OPTIONS]
    if bad or not args.options:
        parser.error(f"--options must be from {', '.join(OPTIONS)}")
    try:
        args.overrides = parse_overrides(args.overrides)
    except ValueError as error:
        parser.error(str(error))
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.first_seed < 0:
        parser.error("--first-seed must be >= 0")
    if args.dtype is None:
        args.dtype = "float32" if args.model in ("tiny-random", "100m") else "bfloat16"
    return args


OWNED_FIELDS = ("k", "subspace", "population", "generations", "readout", "seed", "baselines", "slot",
                "chunk_size", "learning_rate", "hybrid_fraction", "both_orders", "extra_wordings",
                "init_text", "method", "strategy")  # set by the study's own flags or per method


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["FIELD=VALUE", ...]`` -> ``{field: value}`` (JSON values, else text; JSON lists kept as
    lists so the setup round-trips through optimizers.json). Raises ValueError for a field that is
    not an :class:`jaxalign.AlignConfig` field, or one the study sets itself."""
    from jaxalign import AlignConfig

    fields = {f.name for f in dataclasses.fields(AlignConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE")
        if key not in fields:
            raise ValueError(f"--set {key}: not an AlignConfig field")
        if key in OWNED_FIELDS:
            raise ValueError(f"--set {key}: the study sets this field (use its own flag or --methods)")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def method_config(name: str, option: str, args: argparse.Namespace):
    """The :class:`jaxalign.AlignConfig` of a method under an option (same space and budget)."""
    from jaxalign import AlignConfig, api

    common_fields = dict(k=args.k, subspace=None if args.subspace == 0 else args.subspace,
                         population=args.population, generations=args.generations,
                         readout=args.readout, seed=args.space_seed, baselines=(), slot=args.slot,
                         chunk_size=args.generations + 1, learning_rate=args.learning_rate,
                         hybrid_fraction=args.hybrid_fraction, both_orders=option == "both-orders",
                         extra_wordings=tuple(args.extra_wordings),
                         **{k: tuple(v) if isinstance(v, list) else v for k, v in args.overrides.items()})
    if name == "de-paper":
        return AlignConfig.from_preset("paper", **common_fields)
    if name == "de-p8":  # the preset's 8 members, the study's budget: more generations
        population = api.PRESETS["de-p8"]["population"]
        generations = common.generations_for_budget(population, args.population * (args.generations + 1))
        return AlignConfig.from_preset("de-p8", **{**common_fields, "population": population,
                                                    "generations": generations, "chunk_size": generations + 1})
    if name == "de":
        return AlignConfig(**common_fields)
    if name == "gradient":
        return AlignConfig(method="gradient", **common_fields)
    if name == "hybrid":
        return AlignConfig(method="hybrid", strategy=args.hybrid_strategy, **common_fields)
    return AlignConfig(strategy=name, **common_fields)


def step_costs(config, steps: int, cost: dict[str, Any] | None) -> np.ndarray:
    """Forward passes of one prompt spent by each of ``steps`` steps of ``config``'s run: P per
    evolution step, the measured ``cost["forwards_per_step"]`` per Adam step (3 for searches
    recorded before the cost was measured)."""
    from jaxalign.optimize.budget import evolution_steps

    per_step = LEGACY_FORWARDS_PER_STEP if not cost else float(cost["forwards_per_step"])
    s = np.arange(steps)
    if config.method not in ("gradient", "hybrid"):
        return np.full(steps, float(config.population))
    evolution = evolution_steps(config, per_step)
    return np.where(s < evolution, float(config.population), per_step)


def forward_passes(config, steps: int, cost: dict[str, Any] | None = None) -> np.ndarray:
    """Cumulative forward passes of one prompt after each of ``steps`` steps of ``config``'s run."""
    return np.cumsum(step_costs(config, steps, cost))


def loop_seconds(record: dict[str, Any]) -> np.ndarray:
    """Cumulative loop seconds after each step of a search: its measured loop time
    (``s_per_step * steps``) shared out in proportion to the steps' FLOPs (a hybrid's evolution
    and Adam steps differ; the other methods' steps are all alike)."""
    steps = len(record["curve"])
    costs = step_costs(record["config"], steps, record.get("cost"))
    total = float(record.get("s_per_step") or np.nan) * steps
    return total * np.cumsum(costs) / costs.sum()


def run_method(lm, instrument, name: str, option: str, countries, args) -> list[dict[str, Any]]:
    """Runs one method/option over countries x seeds; one record per search."""
    import jaxalign

    from jaxalign.baselines import baseline_system

    config = method_config(name, option, args)
    runs = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    # with --init-text each country starts from its own text, so each is its own program
    groups = [list(countries)] if args.init_text is None else [[c] for c in countries]
    for group in groups:
        start = config if args.init_text is None else dataclasses.replace(
            config, init_text=baseline_system(args.init_text, group[0]))
        if start.method == "gradient":  # deterministic given the space: seeds change the space
            for s in seeds:
                found = jaxalign.align(lm, group, instrument=instrument,
                                       config=dataclasses.replace(start, seed=args.space_seed + s),
                                       progress=not args.no_progress)
                runs += [(s, c, r) for c, r in zip(group, found)]
        else:
            replicas = [dataclasses.replace(c, name=f"{c.name} #{s}") for s in seeds for c in group]
            found = jaxalign.align(lm, replicas, instrument=instrument, config=start,
                                   progress=not args.no_progress)
            runs += [(s, c, found[j * len(group) + i]) for j, s in enumerate(seeds)
                     for i, c in enumerate(group)]
    out = []
    for seed, country, result in runs:
        out.append({"method": name, "option": option, "seed": seed, "country": country.name,
                    "evaluations": float(result.evaluations), "train_loss": float(result.loss),
                    "soft_prompt": result.soft_prompt, "config": result.config,
                    "curve": np.asarray(result.history["best_loss"], np.float64),
                    "wall_s": float(result.wall_s), "compile_s": float(result.compile_s),
                    "s_per_step": float(result.s_per_generation), "cost": result.cost})
    return out


def _settings(instrument) -> dict[str, tuple[Any, bool]]:
    """Per condition, the instrument and the reverse-options flag of its scorer."""
    from jaxalign.evaluate.robustness import heldout_for

    return {"tuned": (instrument, False), "reversed": (instrument, True), "heldout": (heldout_for(instrument), False)}


def make_condition_scorers(lm, instrument, args) -> dict[str, Any]:
    """Per condition, the scorer of a tuned prompt and the naive model's dims ``(6,)``, built once.

    The scorers are those of :func:`jaxalign.evaluate_robustness` (same readout, slot, reverse
    flag and held-out wording); each scores many prompts in one pass.
    """
    from jaxalign.scoring import make_scorer

    empty = np.zeros((1, 0, lm.config.hidden_size), np.float32)
    out = {}
    for condition, (inst, reverse) in _settings(instrument).items():
        scorer = make_scorer(lm, inst, k=args.k, readout=args.readout, seed=0, slot=args.slot,
                             reverse_options=reverse)
        plain = make_scorer(lm, inst, k=0, readout=args.readout, seed=0, reverse_options=reverse)
        out[condition] = (scorer, np.asarray(plain(empty).dims[0]))
    return out


def readings(dims: Any, target, plain_dims: Any, anchor) -> dict[str, float]:
    """The other readings of one answer set on the tuned wording (``dims``: ``(6,)`` with C = 0).

    ``tau``: Kendall's tau-b between the model's and the target's scores over the six
    dimensions (a ranking, free of the constants; the measure of Masoud et al.'s Cultural Alignment
    Test). ``anchored``: the L1 after the constants are anchored on the plain model's own answers
    read as a respondent of ``anchor`` (U.S.A.): C = anchor's scores - plain dims, so the plain
    model scores exactly ``anchor`` and every other answer set is read on that scale (the indices
    are linear in the item means, so this is ``dims + C``; see :func:`jaxalign.anchor_constants`).
    """
    from jaxalign.survey import kendall_tau, l1_loss

    dims = np.asarray(dims, np.float64)
    constants = np.asarray(anchor.values, np.float64) - np.asarray(plain_dims, np.float64)
    return {"tau": float(kendall_tau(dims, np.asarray(target.values, np.float64))),
            "anchored": float(l1_loss(dims + constants, np.asarray(target.values, np.float64)))}


def score_conditions(scorers: dict[str, Any], records: list[dict[str, Any]], countries) -> dict[str, Any]:
    """Writes the tuned, held-out and reversed L1 of each record's prompt into it (one pass per
    condition), its dims per condition (``"dims"``) and its :func:`readings`; returns the naive
    model's figures per metric and country (and its dims per condition, ``"dims"``)."""
    import jax
    import jax.numpy as jnp
    import jaxalign

    from jaxalign.survey import l1_loss

    prompts = np.stack([r["soft_prompt"] for r in records])  # (R, K, d)
    targets = {c.name: c for c in countries}
    anchor = jaxalign.resolve_target(ANCHOR)
    values = jnp.asarray(np.stack([np.asarray(targets[r["country"]].values, np.float32) for r in records]))
    naive: dict[str, Any] = {"dims": {}}
    for condition, (scorer, plain_dims) in scorers.items():
        dims = np.asarray(scorer(prompts).dims)  # (R, 6)
        losses = np.asarray(jax.vmap(l1_loss)(jnp.asarray(dims), values))  # (R,)
        for r, loss, d in zip(records, losses, dims):
            r[condition] = float(loss)
            r.setdefault("dims", {})[condition] = [float(v) for v in d]
        naive[condition] = {c.name: float(l1_loss(plain_dims, c.values)) for c in countries}
        naive["dims"][condition] = [float(v) for v in plain_dims]
    plain_tuned = scorers["tuned"][1]
    for r in records:
        r.update(readings(r["dims"]["tuned"], targets[r["country"]], plain_tuned, anchor))
    plain = {c.name: readings(plain_tuned, c, plain_tuned, anchor) for c in countries}
    for metric in READINGS:
        naive[metric] = {name: figures[metric] for name, figures in plain.items()}
    return naive


def score_written(lm, instrument, countries, args, plain_tuned: Any) -> dict[str, Any]:
    """The written-prompt baselines (Persona, ICL: :mod:`jaxalign.baselines`' system texts) of each
    country under every condition, and their :func:`readings`: ``{name: {metric: {country: value}}}``.
    No soft prompt; one compiled scorer per baseline, country and condition."""
    import jaxalign

    from jaxalign.baselines import baseline_system
    from jaxalign.scoring import make_scorer
    from jaxalign.survey import l1_loss

    empty = np.zeros((1, 0, lm.config.hidden_size), np.float32)
    anchor = jaxalign.resolve_target(ANCHOR)
    out: dict[str, Any] = {}
    for name in args.baselines:
        figures: dict[str, Any] = {m: {} for m in CONDITIONS + READINGS}
        figures["dims"] = {}
        for country in countries:
            figures["dims"][country.name] = {}
            for condition, (inst, reverse) in _settings(instrument).items():
                scorer = make_scorer(lm, inst, k=0, readout=args.readout, seed=0,
                                     system=baseline_system(name, country), reverse_options=reverse)
                dims = np.asarray(scorer(empty).dims[0])
                figures[condition][country.name] = float(l1_loss(dims, country.values))
                figures["dims"][country.name][condition] = [float(v) for v in dims]
            for metric, value in readings(figures["dims"][country.name]["tuned"], country,
                                          plain_tuned, anchor).items():
                figures[metric][country.name] = value
        out[name] = figures
    return out


def culturalbench_questions(args, countries) -> dict[str, Any]:
    """Each country's CulturalBench questions (``None`` when the file has none about it).

    Read before any search, so a wrong path or a file about none of the countries fails at once
    instead of after hours of searching. The benchmark's names are matched to the survey's
    (``"United States"`` for U.S.A.) by :meth:`BenchSet.for_country`.
    """
    from jaxalign.evaluate.culturalbench import load_culturalbench

    bench = load_culturalbench(args.culturalbench, set=args.culturalbench_set)
    subsets: dict[str, Any] = {}
    for country in countries:
        try:
            subsets[country.name] = bench.for_country(country.name)
        except ValueError:
            subsets[country.name] = None
    missing = [name for name, subset in subsets.items() if subset is None]
    if len(missing) == len(subsets):
        raise ValueError(f"--culturalbench: no CulturalBench-{args.culturalbench_set.title()} question about "
                         f"{', '.join(missing)} in {bench.source}; countries there: {', '.join(bench.countries())}")
    if missing:
        print(f"CulturalBench-{args.culturalbench_set.title()}: no question about {', '.join(missing)}; "
              "their accuracy is left out", file=sys.stderr, flush=True)
    return subsets


def culturalbench_accuracy(lm, records, subsets: dict[str, Any], naive: dict[str, Any]) -> None:
    """Sets ``record["culturalbench"]`` (accuracy on its country's questions, ``None`` without any)
    on every record that has none yet, and ``naive["culturalbench"]`` (per country) when absent."""
    from jaxalign.evaluate.culturalbench import evaluate_culturalbench

    if "culturalbench" not in naive:
        naive["culturalbench"] = {name: None if subset is None else evaluate_culturalbench(lm, subset).accuracy
                                  for name, subset in subsets.items()}
    for name, subset in subsets.items():
        for r in records:
            if r["country"] == name and "culturalbench" not in r:
                r["culturalbench"] = (None if subset is None else
                                      evaluate_culturalbench(lm, subset, soft_prompt=r["soft_prompt"]).accuracy)


def summarise(records: list[dict[str, Any]], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per (method, option): per metric the mean over countries of each seed, then the
    mean and sample std over seeds; per country the mean over seeds."""
    rows = []
    keys = list(dict.fromkeys((r["method"], r["option"]) for r in records))
    for method, option in keys:
        mine = [r for r in records if (r["method"], r["option"]) == (method, option)]
        seeds = sorted({r["seed"] for r in mine})
        countries = list(dict.fromkeys(r["country"] for r in mine))
        row: dict[str, Any] = {"method": method, "option": option, "evaluations": mine[0]["evaluations"],
                               "n_seeds": len(seeds), "countries": countries}
        for metric in metrics:
            if any(metric not in r for r in mine):
                continue
            # CulturalBench has no figure for a country without questions: the means skip it
            have = [r for r in mine if r[metric] is not None]
            if not have:
                continue
            per_seed = [float(np.mean([r[metric] for r in have if r["seed"] == s])) for s in seeds]
            row[metric] = {
                "mean": float(np.mean(per_seed)),
                "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
                "per_seed": per_seed,
                "per_country": {c: float(np.mean([r[metric] for r in have if r["country"] == c]))
                                for c in countries if any(r["country"] == c for r in have)},
            }
        row["wall_s"] = float(np.sum([r["wall_s"] for r in mine]) / max(1, len(mine)))
        costs = [r["cost"]["forwards_per_step"] for r in mine if r.get("cost")]
        row["forwards_per_step"] = float(np.mean(costs)) if costs else None
        loops = [float(loop_seconds(r)[-1]) for r in mine]
        row["loop_s"] = float(np.mean(loops)) if all(np.isfinite(loops)) else None
        rows.append(row)
    return rows


def equal_time(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Best-so-far training L1 of each (method, option) at equal wall time: every search's curve
    read at the mean loop time of the fastest (method, option), so all had at least that long.

    Returns ``{"seconds", "rows": [{"method", "option", "tuned": {"mean", "std", "per_seed"},
    "steps"}]}``; ``None`` when some search has no measured loop time (older records)."""
    keys = list(dict.fromkeys((r["method"], r["option"]) for r in records))
    times = {key: [loop_seconds(r) for r in records if (r["method"], r["option"]) == key] for key in keys}
    if any(not np.isfinite(t[-1]) for ts in times.values() for t in ts):
        return None
    budget_s = min(float(np.mean([t[-1] for t in ts])) for ts in times.values())
    rows = []
    for key in keys:
        mine = [r for r in records if (r["method"], r["option"]) == key]
        seeds = sorted({r["seed"] for r in mine})
        at, steps = [], []
        for r, t in zip(mine, times[key]):
            i = max(int(np.searchsorted(t, budget_s, side="right")) - 1, 0)  # last step done by then
            at.append(float(r["curve"][i]))
            steps.append(i + 1)
        per_seed = [float(np.mean([a for a, r in zip(at, mine) if r["seed"] == s])) for s in seeds]
        rows.append({"method": key[0], "option": key[1], "steps": float(np.mean(steps)),
                     "tuned": {"mean": float(np.mean(per_seed)), "per_seed": per_seed,
                               "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None}})
    return {"seconds": budget_s, "rows": rows}


def curves_figure(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Best-so-far training L1 against forward-pass equivalents, one line per (method, option):
    the mean over replicates, shaded between the replicates' min and max."""
    from matplotlib.figure import Figure

    from jaxalign.plots import save_figure

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    keys = list(dict.fromkeys((r["method"], r["option"]) for r in records))
    for method, option in keys:
        mine = [r for r in records if (r["method"], r["option"]) == (method, option)]
        x = forward_passes(mine[0]["config"], len(mine[0]["curve"]), mine[0].get("cost"))
        y = np.stack([r["curve"] for r in mine])
        label = method if option == "normal" else f"{method} ({option})"
        line, = ax.plot(x, y.mean(0), label=label, linestyle="-" if option == "normal" else "--")
        ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.12)
    ax.set_xlabel("forward passes of one prompt (an Adam step at its measured FLOP cost)")
    ax.set_ylabel("best-so-far training L1 (mean over replicates)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _cell(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "-"
    if entry.get("std") is None:
        return f"{entry['mean']:.2f}"
    return f"{entry['mean']:.2f} ± {entry['std']:.2f}"


def tuning_changes(setup: dict[str, Any]) -> str:
    """What the study changed from the methods' own configs, as a clause ("" when nothing)."""
    parts = []
    if setup.get("init_text"):
        parts.append(f"started from each country's {setup['init_text']} text")
    if setup.get("extra_wordings"):
        parts.append("also tuned on " + ", ".join(f"`{w}`" for w in setup["extra_wordings"]))
    if setup.get("overrides"):
        parts.append("config " + ", ".join(f"{k} = {v}" for k, v in setup["overrides"].items()))
    return "; " + "; ".join(parts) if parts else ""


def markdown_report(report: dict[str, Any]) -> str:
    """The report as Markdown: the summary table, the per-country table."""
    metrics = [m for m in CONDITIONS + READINGS + ("culturalbench",) if any(m in r for r in report["rows"])]
    names = {"tuned": "tuned L1", "heldout": "held-out wording L1", "reversed": "reversed order L1",
             "tau": "Kendall tau", "anchored": "anchored L1", "culturalbench": "CulturalBench acc."}
    setup = report["setup"]
    lines = [
        f"# Optimizers at equal budget: {report['model']}", "",
        f"Date {report['date']}; command `{report['command']}`; device {report['device']}.", "",
        f"Countries {', '.join(setup['countries'])}; {_count(setup['seeds'], 'seed', 'seeds')} each; K = {setup['k']}, "
        f"subspace {setup['subspace']}, population {setup['population']}, {setup['generations']} generations "
        f"= {setup['budget']} forward passes of one prompt per search; readout {setup['readout']}; "
        f"soft prompt at {setup.get('slot', 'user_start')}" + tuning_changes(setup) + ".", "",
        "**Equal FLOPs**: every search spends at most that budget; an Adam step is counted at its cost "
        "read from the compiled programs (XLA's FLOPs of one Adam step over one member's forward pass; "
        "column 'Adam step'; '3 (assumed)' for searches run before it was measured). Each cell: mean over "
        "seeds of the mean over countries, ± the std over seeds; 'loop s': seconds of the search loop "
        "(compile excluded). 'Kendall tau': the rank agreement of the six tuned-wording dimensions "
        f"with the target's; 'anchored L1': the tuned-wording L1 after the constants are anchored on the "
        f"plain model's answers read as {ANCHOR} (0 for the plain model on {ANCHOR} by construction).", "",
        "| method | tuned on | " + " | ".join(names[m] for m in metrics) + " | forward passes | Adam step | loop s |",
        "|---|---|" + "---:|" * (len(metrics) + 3),
    ]
    for row in report["rows"]:
        adam = ("-" if row["method"] not in ("gradient", "hybrid") else
                "3 (assumed)" if row.get("forwards_per_step") is None else f"{row['forwards_per_step']:.3f}")
        loop = "-" if row.get("loop_s") is None else f"{row['loop_s']:.0f}"
        lines.append(f"| {row['method']} | {row['option']} | "
                     + " | ".join(_cell(row.get(m)) for m in metrics)
                     + f" | {float(row['evaluations']):.6g} | {adam} | {loop} |")
    naive = report["naive"]
    naive_means = {m: [v for v in naive[m].values() if v is not None] for m in metrics if m in naive}
    lines.append("| naive (plain model) | - | " + " | ".join(
        f"{np.mean(naive_means[m]):.2f}" if naive_means.get(m) else "-" for m in metrics) + " | 0 | - | - |")
    for name, figures in naive.get("written", {}).items():
        lines.append(f"| {name} (written prompt) | - | " + " | ".join(
            f"{np.mean(list(figures[m].values())):.2f}" if m in figures else "-" for m in metrics) + " | 0 | - | - |")
    if "culturalbench" in metrics and "culturalbench" in report:
        bench = report["culturalbench"]
        lines += ["", f"CulturalBench-{bench['set'].title()} (`{bench['source']}`), questions per country: "
                  + ", ".join(f"{c} {n}" for c, n in bench["questions"].items())
                  + "; its column is the mean over the countries with questions."]
    lines += ["", "Per country (mean over seeds), tuned / held-out / reversed L1:", "",
              "| method | tuned on | " + " | ".join(setup["countries"]) + " |",
              "|---|---|" + "---|" * len(setup["countries"])]
    for row in report["rows"]:
        cells = []
        for c in setup["countries"]:
            cells.append(" / ".join(f"{row[m]['per_country'][c]:.2f}" if m in row else "-"
                                    for m in ("tuned", "heldout", "reversed")))
        lines.append(f"| {row['method']} | {row['option']} | " + " | ".join(cells) + " |")
    for name, figures in [("naive", naive)] + list(naive.get("written", {}).items()):
        lines.append(f"| {name} | - | " + " | ".join(
            " / ".join(f"{figures[m][c]:.2f}" for m in CONDITIONS) for c in setup["countries"]) + " |")
    timed = report.get("equal_time")
    if timed:
        lines += ["", f"**Equal wall time**: best-so-far training L1 (tuned wording) of each search after "
                  f"{timed['seconds']:.0f} s of its loop (the fastest method's mean loop time; a step's time "
                  "from the search's measured loop time, shared out by the steps' FLOPs); same searches "
                  "as above, so the slower methods are cut short.", "",
                  "| method | tuned on | training L1 | steps done |", "|---|---|---:|---:|"]
        for row in timed["rows"]:
            lines.append(f"| {row['method']} | {row['option']} | {_cell(row['tuned'])} | {row['steps']:.0f} |")
    else:
        lines += ["", "Equal wall time: not reported (some searches were recorded without their loop time)."]
    lines += ["", "Curves: `optimizers.png` (best-so-far training L1 against forward passes).", ""]
    if not report.get("complete", True):
        lines += ["**Partial**: the run was stopped before every method had run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jaxalign

    meta = common.run_metadata("benchmarks/optimizers.py", args.argv)
    out = Path(args.out)
    countries = [jaxalign.resolve_target(c) for c in args.countries]
    for name in args.methods:  # every config and the CulturalBench file checked before anything runs
        for option in args.options:
            method_config(name, option, args)
    subsets = culturalbench_questions(args, countries) if args.culturalbench else None
    if subsets is not None:
        meta["culturalbench"] = {"set": args.culturalbench_set, "source": args.culturalbench,
                                 "questions": {c: 0 if q is None else q.n_questions for c, q in subsets.items()}}
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.model == "100m":
        lm = common.build_preset("100m", dtype=args.dtype)
    else:
        lm = jaxalign.load_model(args.model, dtype=args.dtype)
    instrument = jaxalign.vsm13()
    saved = read_back(out, lm.name, countries, args) if args.append else None  # before any compile
    scorers = make_condition_scorers(lm, instrument, args)
    records: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    runs = [(name, option) for name in args.methods for option in args.options
            if option == "normal" or name in args.option_methods]
    commands = [{"date": meta["date"], "command": meta["command"]}]
    naive: dict[str, Any] = {}
    if args.append:
        records, naive, earlier, saved_bench = saved
        if subsets is None and saved_bench is not None:  # the earlier figures stay, with their source
            meta["culturalbench"] = saved_bench
        elif subsets is not None and saved_bench is not None and any(
                saved_bench[k] != meta["culturalbench"][k] for k in ("set", "source")):
            naive.pop("culturalbench", None)  # another set or file: every search is evaluated on this one
            for record in records:
                record.pop("culturalbench", None)
        commands = earlier + commands
        meta.update(date=commands[0]["date"], command=" ; ".join(c["command"] for c in commands))
        done = {(r["method"], r["option"]) for r in records}
        runs = [run for run in runs if run not in done]
    meta["commands"] = commands
    if args.baselines and set(args.baselines) - set(naive.get("written", {})):
        written = score_written(lm, instrument, countries, args, scorers["tuned"][1])
        naive["written"] = {**naive.get("written", {}), **written}
    for i, (name, option) in enumerate(runs):
        t0 = time.perf_counter()
        found = run_method(lm, instrument, name, option, countries, args)
        naive.update(score_conditions(scorers, found, countries))
        records += found
        if subsets is not None:  # also for searches read back without a figure (--append)
            culturalbench_accuracy(lm, records, subsets, naive)
        print(f"{name} ({option}): {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        report = write_report(out, meta, lm, countries, records, naive, args, start,
                              complete=i == len(runs) - 1)
    if not runs:  # --append with nothing new to run: the report of what is there (CulturalBench added)
        if subsets is not None:
            culturalbench_accuracy(lm, records, subsets, naive)
        report = write_report(out, meta, lm, countries, records, naive, args, start, complete=True)
    print(markdown_report(report))
    return report


SETUP_DEFAULTS = {"slot": "user_start", "first_seed": 0, "init_text": None, "extra_wordings": [],
                  "overrides": {}}  # of studies written before these keys
SETUP_KEYS = ("countries", "seeds", "first_seed", "slot", "k", "subspace", "population", "generations", "budget", "readout",
              "space_seed", "learning_rate", "hybrid_fraction", "hybrid_strategy", "init_text",
              "extra_wordings", "overrides")


def setup_of(args: argparse.Namespace, countries) -> dict[str, Any]:
    """The study's setup as optimizers.json records it (and ``--append`` compares)."""
    return {"countries": [c.name for c in countries], "seeds": args.seeds, "first_seed": args.first_seed,
            "slot": args.slot, "k": args.k, "subspace": args.subspace or None,
            "population": args.population, "generations": args.generations,
            "budget": args.population * (args.generations + 1), "readout": args.readout,
            "space_seed": args.space_seed, "learning_rate": args.learning_rate,
            "hybrid_fraction": args.hybrid_fraction, "hybrid_strategy": args.hybrid_strategy,
            "init_text": args.init_text, "extra_wordings": list(args.extra_wordings),
            "overrides": dict(args.overrides)}


def read_back(out: Path, model: str, countries, args
              ) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """The searches, naive figures, commands and CulturalBench setting (``None`` without one) of
    the study in ``out`` (for ``--append``).

    Raises ValueError when there is no study there or its setup differs from this run's.
    """
    from jaxalign import AlignConfig

    path = out / "optimizers.json"
    if not path.is_file() or not (out / "prompts.npz").is_file():
        raise ValueError(f"--append: {out} holds no study (optimizers.json and prompts.npz); drop --append")
    saved = json.loads(path.read_text())
    mine = setup_of(args, countries)
    there = {**SETUP_DEFAULTS, **saved["setup"]}
    differ = [f"{k}: {there.get(k)!r} there, {mine[k]!r} now" for k in SETUP_KEYS if there.get(k) != mine[k]]
    if saved.get("model") != model:
        differ.append(f"model: {saved.get('model')!r} there, {model!r} now")
    if differ:
        raise ValueError(f"--append: the study in {out} has another setup ({'; '.join(differ)})")
    prompts = np.load(out / "prompts.npz")
    configs = {}
    for key, fields in saved["setup"]["configs"].items():
        fields = dict(fields)
        fields.update(baselines=tuple(fields["baselines"]), extra_wordings=tuple(fields["extra_wordings"]),
                      dither=None if fields.get("dither") is None else tuple(fields["dither"]))
        configs[key] = AlignConfig(**fields)
    records = []
    for search in saved["searches"]:
        record = dict(search)
        record["curve"] = np.asarray(search["curve"], np.float64)
        record["config"] = configs[f"{search['method']}/{search['option']}"]
        record["soft_prompt"] = prompts[prompt_key(record)]
        records.append(record)
    earlier = saved.get("commands") or [{"date": saved["date"], "command": saved["command"]}]
    return records, saved["naive"], earlier, saved.get("culturalbench")


def prompt_key(record: dict[str, Any]) -> str:
    """The key of a search's best soft prompt ``(K, d)`` in ``prompts.npz``."""
    return f"{record['method']}|{record['option']}|{record['country']}|{record['seed']}"


def write_report(out: Path, meta, lm, countries, records, naive, args, start, *, complete: bool):
    """Writes optimizers.json/.md (and the figure) for the searches done so far."""
    metrics = CONDITIONS + READINGS + (("culturalbench",) if any("culturalbench" in r for r in records) else ())
    report = {
        **meta,
        "complete": complete,
        "device": common.describe_device(),
        "model": lm.name,
        "setup": {**setup_of(args, countries),
                  "configs": {f"{r['method']}/{r['option']}": r["config"].to_dict()
                              for r in records if r["seed"] == args.first_seed
                              and r["country"] == countries[0].name}},
        "rows": summarise(records, metrics),
        "equal_time": equal_time(records),
        "naive": naive,
        "searches": [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()
                      if k not in ("soft_prompt", "config", "curve")} | {"curve": r["curve"].tolist()}
                     for r in records],
        "wall_s": round(time.perf_counter() - start, 1),
    }
    (out / "optimizers.json").write_text(json.dumps(_clean(report), indent=1) + "\n")
    (out / "optimizers.md").write_text(markdown_report(report))
    np.savez_compressed(out / "prompts.npz", **{prompt_key(r): r["soft_prompt"] for r in records})
    if not args.no_figure:
        curves_figure(records, out / "optimizers.png",
                      f"{lm.name}: {_count(len(countries), 'country', 'countries')} x "
                      f"{_count(args.seeds, 'seed', 'seeds')}")
    return report


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    main()
