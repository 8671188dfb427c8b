"""Markdown tables from the JSON files the benchmark scripts write (for ``RESULTS.md``).

    python benchmarks/summarize.py benchmarks/results

Reads every ``throughput_*.json`` (``throughput.py --json`` output) and ``de_cost_*.json``
(``de_cost.py --out``) in the folder and prints one table of each kind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _mfu(r: dict) -> str:
    """``executed; effective`` MFU in percent (files before ``effective_mfu`` hold only the latter)."""
    if r.get("mfu") is None:
        return "-"
    if "effective_mfu" not in r:
        return f"-; {100 * r['mfu']:.1f}%"
    return f"{100 * r['mfu']:.1f}%; {100 * r['effective_mfu']:.1f}%"


def throughput_table(rows: list[dict]) -> str:
    header = ("| preset | layout | scorer mode | dtype | P | K | jaxalign seq/s | tok/s | compile s "
              "| MFU executed; effective "
              "| torch seq/s (threads) | speedup (median; best) | max abs prob diff | load start/end "
              "| date |")
    lines = [header, "|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|"]
    order = {"tiny": 0, "100m": 1, "llama3-8b": 2}
    for r in sorted(rows, key=lambda r: (order.get(r["preset"], 9), r["layout"] != "user_start",
                                         {"full": 0, "cached": 1}.get(r.get("mode"), 2),
                                         r.get("torch_threads") or 0)):
        torch = ("-" if r.get("torch_sequences_per_s") is None
                 else f"{r['torch_sequences_per_s']:.2f} ({r.get('torch_threads')})")
        speedup = "-"
        if r.get("speedup_vs_torch") is not None:
            best = r.get("speedup_vs_torch_best")
            speedup = f"{r['speedup_vs_torch']:.2f}x" + ("" if best is None else f"; {best:.2f}x")
        lines.append(
            f"| {r['preset']} | {r['layout']} | {r.get('mode') or '-'} | {r['dtype']} | {r['P']} | {r['K']} "
            f"| {r['sequences_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['compile_s']:.1f} "
            f"| {_mfu(r)} | {torch} | {speedup} "
            f"| {_fmt(r.get('max_abs_prob_diff'), '.1e')} "
            f"| {r.get('load_average_1m_at_start')}/{r.get('load_average_1m_at_end')} | {r['date']} |")
    return "\n".join(lines)


def de_cost_table(reports: list[dict]) -> str:
    lines = ["| model | layers | scoring | P | K | generations | wall s | compile s | s/generation "
             "| final L1 | date |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for report in reports:
        for r in report["rows"]:
            lines.append(
                f"| {r['model']} | {r['layers']} | {r.get('scoring_mode') or '-'} | {r['P']} | {r['K']} "
                f"| {r['generations']} | {r['wall_s']:.1f} | {r['compile_s']:.1f} "
                f"| {r['s_per_generation']:.3f} | {r['final_loss']:.2f} | {report['date']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "benchmarks/results")
    throughput = []
    for p in sorted(folder.glob("throughput_*.json")):
        if p.stat().st_size:
            report = json.loads(p.read_text())
            throughput += report.get("runs", [report])  # several --layout/--mode runs per file
    de_cost = [json.loads(p.read_text()) for p in sorted(folder.glob("de_cost_*.json"))]
    out = []
    if throughput:
        out += ["### Scoring throughput", "", throughput_table(throughput), ""]
    if de_cost:
        out += ["### DE runs", "", de_cost_table(de_cost), ""]
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main()
