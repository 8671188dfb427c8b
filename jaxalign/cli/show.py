"""``jaxalign show``: a run folder's summary and figures, read from its files (no model is loaded)."""

from __future__ import annotations

import argparse
import json

from jaxalign.cli.common import (
    CommandError,
    _dims_table,
    read_resume_command,
)


def add_show_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="summarise a finished or interrupted run and draw its figures",
        description=(
            "Print the summary of the run in RUN (its results.json: target, model, losses and "
            "dims per method, generations done) and write its figures into RUN: dims.png (dims "
            "per method), loss.png (best-so-far and population-mean loss per generation) and "
            "answers.png (each item's answer distribution, plain vs aligned)."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="the --out folder of 'jaxalign align'")
    parser.add_argument("--no-figures", action="store_true",
                        help="print the summary only; write no figure (default: write them)")
    parser.add_argument("--open", action="store_true",
                        help="open the figures with the system's default viewer (default: no)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as one JSON document (default: a table)")
    parser.set_defaults(run=run_show)


def _continue_command(run_dir) -> str:
    """The full command an interrupted run left (:func:`~jaxalign.cli.common.read_resume_command`),
    else what to type when it left none (a run killed without a chance to write it)."""
    command = read_resume_command(run_dir)
    return command or (f"the 'jaxalign align' command that started it, with --resume added "
                       f"(its --out is {str(run_dir)!r})")


def run_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    run_dir = Path(args.run_dir)
    results = run_dir / "results.json"
    if not run_dir.is_dir():
        raise CommandError(f"{str(run_dir)!r} is not a folder")
    if not results.is_file():
        hint = (" It holds a checkpoint: the run was interrupted before it wrote any results; "
                f"continue it with: {_continue_command(run_dir)}"
                if (run_dir / "checkpoints").exists() else "")
        raise CommandError(f"no results.json in {str(run_dir)!r}.{hint}")
    try:
        run = json.loads(results.read_text())
    except json.JSONDecodeError as error:
        raise CommandError(f"{str(results)!r} is not valid JSON: {error}") from None
    dimensions = list(run["target"]["dims"])
    best = run.get("history", {}).get("best_loss", [])
    generations = run.get("config", {}).get("generations")
    done = max(len(best) - 1, 0)
    figures = []
    if not args.no_figures:
        from jaxalign.plots import save_run_figures

        figures = [str(p) for p in save_run_figures(run, run_dir)]
    if args.json:
        print(json.dumps({
            "run": str(run_dir), "partial": bool(run.get("partial")), "model": run.get("model"),
            "target": run["target"]["name"], "generations_done": done,
            "generations": generations,
            "resume_command": read_resume_command(run_dir) if run.get("partial") else None,
            "methods": {m: {"loss": r.get("loss"), "dims": r.get("dims")}
                        for m, r in run["methods"].items()},
            "figures": figures,
        }, indent=2))
    else:
        state = "partial (interrupted)" if run.get("partial") else "finished"
        print(f"run {run_dir}: {state}, {done} of {generations} generations")
        if run.get("partial"):
            print(f"continue it with: {_continue_command(run_dir)}")
        print(f"target {run['target']['name']}; model {run.get('model')}; "
              f"wording {run.get('wording')}; readout {run.get('config', {}).get('readout')}")

        def value(v):
            return float("nan") if v is None else float(v)

        rows = [("target", [value(run["target"]["dims"][d]) for d in dimensions])]
        for method, record in run["methods"].items():
            name = "aligned" if method == "optimized" else method
            rows.append((name, [value(record["dims"].get(d)) for d in dimensions],
                         value(record.get("loss"))))
        print(_dims_table(dimensions, rows))
        if figures:
            print("figures: " + ", ".join(figures))
    if args.open and figures:
        import webbrowser

        for path in figures:
            webbrowser.open(Path(path).resolve().as_uri())
    return 0
