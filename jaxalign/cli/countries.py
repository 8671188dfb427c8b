"""``jaxalign countries``: the countries with published scores, or one country's scores."""

from __future__ import annotations

import argparse
import json

from jaxalign.cli.common import (
    CommandError,
    _format_score,
)


def select_all_countries(min_dims: int):
    """Every Hofstede row with at least ``min_dims`` of the six dimensions (6: the 65 complete rows)."""
    from jaxalign.survey.targets import countries

    if not 1 <= min_dims <= 6:
        raise CommandError(f"--min-dims must be 1..6, got {min_dims}")
    return [t for t in countries() if int(t.mask.sum()) >= min_dims]


def add_countries_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "countries",
        help="list Hofstede country scores (release 2015-08-16)",
        description=(
            "List the countries and regions of the shipped Hofstede six-dimension scores "
            "(release 2015-08-16), with their PDI, IDV, MAS, UAI, LTO and IVR scores "
            "('-' where missing). Any name, alias or code shown here is a valid --target."
        ),
    )
    parser.add_argument(
        "filter",
        nargs="?",
        default=None,
        help="keep rows whose name or code contains this text (case-insensitive); "
        "a common alias such as 'UK' or 'South Korea' also selects its row",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run_countries)


def run_countries(args: argparse.Namespace) -> int:
    from jaxalign.survey.dimensions import DIMENSIONS
    from jaxalign.survey.targets import (
        HOFSTEDE_CITATION,
        HOFSTEDE_RELEASE,
        HOFSTEDE_SOURCE,
        countries,
        hofstede,
    )

    rows = countries(args.filter)
    if not rows:
        try:  # an exact name/alias the substring test missed, else its "closest matches"
            rows = [hofstede(args.filter)]
        except ValueError as error:
            raise CommandError(f"no country matches {args.filter!r}: {error}") from None
    if args.json:
        payload = {
            "release": HOFSTEDE_RELEASE,
            "citation": HOFSTEDE_CITATION,
            "dimensions": list(DIMENSIONS),
            "countries": [{"name": t.name, "code": t.code, **t.as_dict()} for t in rows],
        }
        print(json.dumps(payload, indent=2))
        return 0
    name_width = max(len("country"), *(len(t.name) for t in rows))
    header = f"{'code':<4}  {'country':<{name_width}}" + "".join(f"{d:>5}" for d in DIMENSIONS)
    print(header)
    print("-" * len(header))
    for target in rows:
        scores = "".join(f"{_format_score(v):>5}" for v in target.values)
        print(f"{target.code:<4}  {target.name:<{name_width}}{scores}")
    print(f"\n{len(rows)} row(s). Source: {HOFSTEDE_SOURCE}.")
    return 0
