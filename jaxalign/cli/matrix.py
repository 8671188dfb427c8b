"""``jaxalign eval matrix RUN...``: every country's prompt scored on test presentations against
every country's target (:mod:`jaxalign.evaluate.matrix`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def add_matrix_command(evals: argparse._SubParsersAction, model_arguments) -> None:
    """Adds ``eval matrix`` to the ``eval`` sub-commands."""
    parser = evals.add_parser(
        "matrix",
        help="prompt x target matrix on held-out presentations: does each prompt move the model "
             "towards its own country?",
        description=(
            "Score every country's tuned prompt (the runs given) on test presentations nothing was "
            "tuned on (jaxalign's three held-out wordings, each in both option orders), beside the "
            "plain model and the persona / ICL prompts written for each country. Per arm: the "
            "relative L1 matrix (constants fitted on each presentation: the median over countries of "
            "target - dims), how many prompts are closest to their own country (diagonal), and the "
            "correlation between the prompts' between-country differences and the targets', with "
            "bootstrap intervals over items x presentations and seeds."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folders of 'jaxalign align' (one country, or several: one sub-folder each); "
                             "runs of one setting and several seeds form one arm")
    model_arguments(parser)
    parser.set_defaults(model=None)
    parser.add_argument("--baselines", default="naive,persona,icl",
                        help="written prompts scored beside the runs: a comma list of naive, persona, icl, or 'none'")
    parser.add_argument("--orders", default="both", choices=("one", "both", "cyclic"),
                        help="option orders of every held-out wording")
    parser.add_argument("--item-pairs", default=None, choices=("a", "b"),
                        help="read every index from one item pair only (a: the manual's first pair, b: the "
                             "second; the item-pair holdout of runs tuned with 'align --item-pairs'); "
                             "default: both pairs")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--out", default=None, help="write matrix.json (and the item means, matrix_items.npz) here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run_matrix)


def _baseline_names(text: str) -> tuple[str, ...]:
    from jaxalign.cli.common import CommandError

    if text.strip() == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ("naive", "persona", "icl")]
    if unknown:
        raise CommandError(f"--baselines: unknown {', '.join(unknown)}; choose from naive, persona, icl, or 'none'")
    return names


def run_matrix(args: argparse.Namespace) -> int:
    from jaxalign.cli.common import CommandError, _load
    from jaxalign.evaluate.matrix import (
        arm_scores,
        arm_statistics,
        run_entries,
        run_folders,
        score_entries,
        test_presentations,
        written_entries,
    )
    from jaxalign.survey import vsm13
    from jaxalign.survey.item_pairs import item_pair_half

    names = _baseline_names(args.baselines)
    if args.bootstrap < 0:
        raise CommandError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    try:  # every run read (and refused) before any weight is loaded
        tuned = run_entries(args.runs)
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise CommandError(str(error)) from None
    models = sorted({_recorded_model(run / "results.json") for folder in args.runs
                     for run in run_folders(folder)} - {None})
    model = args.model
    if model is None:
        if len(models) != 1:
            raise CommandError("the runs record " + (f"several models ({', '.join(models)})" if models else "no model")
                               + "; pass --model")
        model = models[0]
        print(f"model {model} (recorded by the runs)", file=sys.stderr)
    slots = sorted({e.slot for e in tuned})
    targets = list({e.target.name: e.target for e in tuned}.values())
    entries = tuned + written_entries(targets, names, slot=slots[0])
    lm = _load(model, args.dtype, None, args.quantize, args.chat_template)
    instrument = item_pair_half(vsm13(), args.item_pairs)  # the indices the matrix reads
    shown = test_presentations(instrument, args.orders)
    say = (lambda text: print(text, file=sys.stderr)) if not args.json else None
    item_means = score_entries(lm, entries, shown, progress=say)               # (E, S, Q)
    arms = [arm_statistics(a, instrument, n_bootstrap=args.bootstrap, seed=args.seed)
            for a in arm_scores(entries, item_means)]
    report: dict[str, Any] = {
        "model": lm.name, "presentations": [p.name for p in shown], "countries": [t.name for t in targets],
        "runs": [str(r) for r in args.runs], "bootstrap": args.bootstrap, "arms": arms,
        "item_pairs": args.item_pairs,
        "notes": _notes(targets),
    }
    if args.out is not None:
        import numpy as np

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "matrix.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        np.savez_compressed(out / "matrix_items.npz", item_means=item_means,
                            arm=np.asarray([e.arm for e in entries]), country=np.asarray([e.target.name for e in entries]),
                            seed=np.asarray([e.seed for e in entries]))
    if args.json:
        print(json.dumps(report, indent=2, default=_json_default))
        return 0
    print(table(report))
    return 0


def _notes(targets) -> list[str]:
    import numpy as np

    notes = []
    for t in targets:
        n = int(np.sum(~np.isnan(np.asarray(t.values, np.float64))))
        if n < len(t.values):
            notes.append(f"{t.name} has {n} of {len(t.values)} dimensions: its rows cover only those")
    return notes


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per arm."""
    def fmt(v: float, digits: int = 2) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"

    def interval(arm: dict, key: str, digits: int) -> str:
        b = arm.get("bootstrap", {}).get(key)
        return "" if not b else f" [{fmt(b[0], digits)}, {fmt(b[1], digits)}]"

    n = len(report["countries"])
    pairs = report.get("item_pairs")
    lines = [f"model {report['model']}; {n} countries; {len(report['presentations'])} test presentations "
             f"({', '.join(report['presentations'])})"
             + (f"; indices from item pairs {pairs} only" if pairs else ""), "",
             "| arm | seeds | own relative L1 | closest to own country (of %d) | between-country r |"
             " on averaged answers: own L1 / closest / r |" % n,
             "|---|---|---|---|---|---|"]
    for arm in report["arms"]:
        avg = arm["averaged"]
        lines.append(
            f"| {arm['arm']} | {len(arm['seeds'])} | {fmt(arm['own_l1'])} | {fmt(arm['diagonal'], 2)} | "
            f"{fmt(arm['correlation'], 3)} | {fmt(avg['own_l1'])}{interval(arm, 'own_l1', 2)} / "
            f"{fmt(avg['diagonal'], 2)}{interval(arm, 'diagonal', 2)} / "
            f"{fmt(avg['correlation'], 3)}{interval(arm, 'correlation', 3)} |")
    lines += [f"- {note}" for note in report.get("notes", [])]
    return "\n".join(lines)


def _recorded_model(path: Path) -> str | None:
    return json.loads(path.read_text()).get("model")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")
