"""The prompt x target matrix: does a country's prompt move the model towards *that* country?

A prompt tuned on one presentation may have learned its answer format. This test scores every
country's prompt on **test presentations** that nothing was tuned on (by default the three
held-out wordings, each in both option orders) and asks about differences between countries
only, never about the arbitrary constants::

    entries: (arm, country, seed) -> a soft prompt, a system text, or the plain model
      -> dims per test presentation                                   (E, S, D)
      per arm, seed and presentation, the C countries' dims           (C, D)
      -> constants fitted on that presentation: median_c(t_c - dims_c)  (D,)
      -> relative L1 matrix M[i, j] = L1(dims_i + constants, t_j)       (C, C)
      -> diagonal dominance: prompts closest to their own country     (count of C)
      -> between-country correlation: corr(dims_i - dims_j, t_i - t_j) over pairs x dims

Each statistic is computed per presentation and seed and averaged; bootstrap intervals resample,
per item, which test presentations its answers come from (items x presentations) and, per arm,
the seeds (with replacement). The plain model gives every country the same dims, so it has no
between-country differences (correlation undefined) and its "prompts" tie on every row.

``jaxalign eval matrix RUN...`` runs it on the prompts of finished runs; :func:`score_entries`
and :func:`matrix_statistics` are the pieces (the CLI and the tests use them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxalign.survey import Instrument, Target
from jaxalign.survey.objectives import between_country_correlation, fitted_constants, relative_matrix
from jaxalign.survey.presentations import Presentation, presentations


@dataclasses.dataclass(frozen=True)
class Entry:
    """One prompt to place in the matrix.

    Attributes:
      arm: the method it comes from (``"DE relative both"``, ``"persona"``, ``"plain"``...).
      target: the country it was made for.
      seed: the run's seed (``0`` for written prompts).
      soft_prompt: ``(K, d)`` float32, or ``None`` for none.
      system: a system text (persona, ICL) or ``None``.
      slot: where the soft prompt goes.
    """

    arm: str
    target: Target
    seed: int = 0
    soft_prompt: np.ndarray | None = None
    system: str | None = None
    slot: str = "user_end"


def test_presentations(base: Instrument | None = None, orders: str = "both") -> tuple[Presentation, ...]:
    """The held-out wordings (``jaxalign-heldout-v1``..``v3``), each in every order of ``orders``,
    with ``base``'s formulas and constants (default :func:`jaxalign.vsm13`). Nothing tunes on
    them (tuning on a held-out wording is refused)."""
    from jaxalign.survey.paraphrase import HELDOUT_WORDINGS, heldout_wording
    from jaxalign.survey.vsm13 import vsm13

    base = base or vsm13()
    wordings = [heldout_wording(name, base=base) for name in HELDOUT_WORDINGS]
    shown = []
    for wording in wordings:
        shown.extend(dataclasses.replace(p, name=f"{wording.wording}/{p.name}")
                     for p in presentations(wording, orders))
    return tuple(shown)


test_presentations.__test__ = False  # a library function, not a pytest test (its name starts with "test")


def score_entries(lm: Any, entries: Sequence[Entry], shown: Sequence[Presentation], *,
                  readout: str = "expected", seed: int = 0,
                  progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Item means ``(E, S, Q)`` of every entry in every presentation (answers in code order).

    Entries sharing a slot, a prompt length and a system text are scored together as one
    population per presentation (one compiled pass each).
    """
    from jaxalign.scoring import make_scorer

    d = lm.config.hidden_size
    n_items = len(shown[0].instrument.items)
    out = np.full((len(entries), len(shown), n_items), np.nan, np.float32)
    groups: dict[tuple, list[int]] = {}
    for e, entry in enumerate(entries):
        k = 0 if entry.soft_prompt is None else int(np.shape(entry.soft_prompt)[0])
        groups.setdefault((entry.slot, k, entry.system), []).append(e)
    for (slot, k, system), members in groups.items():
        prompts = np.stack([np.zeros((0, d), np.float32) if entries[e].soft_prompt is None
                            else np.asarray(entries[e].soft_prompt, np.float32) for e in members])  # (P, K, d)
        for s, p in enumerate(shown):
            if progress is not None:
                progress(f"scoring {len(members)} prompt(s) (k={k}, slot {slot}) on {p.name}")
            scorer = make_scorer(lm, p.instrument, k=k, system=system, slot=slot, readout=readout,
                                 seed=seed, option_order=p.option_order)
            out[members, s] = np.asarray(scorer(prompts).item_means)
    return out


def matrix_statistics(dims: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """The matrix and its statistics for C countries' prompts read on one presentation.

    Args:
      dims: ``(C, D)``, row ``i`` the indices of country ``i``'s prompt.
      targets: ``(C, D)`` the countries' published scores (NaN where missing).

    Returns:
      ``constants (D,)`` (fitted: median over countries of target - dims), ``matrix (C, C)``
      (relative L1 of prompt i to target j), ``own_l1`` (mean of the diagonal), ``diagonal``
      (how many prompts are closest to their own country: ties count as a fraction), and
      ``correlation`` (between-country differences of the prompts against the targets').
    """
    dims = np.asarray(dims, np.float64)
    targets = np.asarray(targets, np.float64)
    constants = fitted_constants(dims, targets)
    matrix = relative_matrix(dims, targets, constants)                          # (C, C)
    diagonal = 0.0
    for i in range(matrix.shape[0]):
        best = np.isclose(matrix[i], matrix[i].min(), rtol=0, atol=1e-9)
        diagonal += float(best[i]) / float(best.sum())
    return {"constants": constants, "matrix": matrix, "own_l1": float(np.mean(np.diag(matrix))),
            "diagonal": diagonal, "correlation": between_country_correlation(dims, targets)}


@dataclasses.dataclass(frozen=True)
class ArmScores:
    """One arm's item means: ``item_means (C, N, S, Q)`` for C countries, N seeds, S presentations."""

    arm: str
    countries: tuple[Target, ...]
    seeds: tuple[int, ...]
    item_means: np.ndarray


def arm_scores(entries: Sequence[Entry], item_means: np.ndarray) -> list[ArmScores]:
    """Groups :func:`score_entries`' rows by arm into ``(C, N, S, Q)`` arrays (countries in first
    appearance order, seeds sorted; every country of an arm needs every seed of that arm)."""
    arms: dict[str, dict[tuple[str, int], int]] = {}
    for e, entry in enumerate(entries):
        arms.setdefault(entry.arm, {})[(entry.target.name, entry.seed)] = e
    out = []
    for arm, rows in arms.items():
        names = list(dict.fromkeys(name for name, _ in rows))
        seeds = sorted({seed for _, seed in rows})
        missing = [f"{n} seed {s}" for n in names for s in seeds if (n, s) not in rows]
        if missing:
            raise ValueError(f"arm {arm!r} lacks {', '.join(missing)}: every country needs every seed")
        targets = {entries[e].target.name: entries[e].target for e in rows.values()}
        stacked = np.stack([np.stack([item_means[rows[(n, s)]] for s in seeds]) for n in names])
        out.append(ArmScores(arm, tuple(targets[n] for n in names), tuple(seeds), stacked))
    return out


def arm_statistics(arm: ArmScores, instrument: Instrument, *, n_bootstrap: int = 0,
                   seed: int = 0) -> dict[str, Any]:
    """The statistics of one arm: :func:`matrix_statistics` per seed and test presentation,
    averaged (``own_l1``, ``diagonal``, ``correlation``, the mean matrix), the same on the dims
    averaged over the test presentations (``averaged``), and with ``n_bootstrap`` > 0 the 2.5 and
    97.5 percentiles of the averaged statistics over bootstrap draws (items x presentations,
    seeds)."""
    targets = np.stack([np.asarray(t.values, np.float64) for t in arm.countries])  # (C, D)
    c, n, s, q = arm.item_means.shape
    dims = np.asarray(instrument.indices(arm.item_means), np.float64)            # (C, N, S, D)
    per = [matrix_statistics(dims[:, i, j], targets) for i in range(n) for j in range(s)]
    out: dict[str, Any] = {
        "arm": arm.arm, "countries": [t.name for t in arm.countries], "seeds": list(arm.seeds),
        "presentations": s,
        "own_l1": float(np.mean([p["own_l1"] for p in per])),
        "diagonal": float(np.mean([p["diagonal"] for p in per])),
        "correlation": _nanmean([p["correlation"] for p in per]),
        "matrix": np.mean([p["matrix"] for p in per], axis=0).tolist(),
    }
    averaged = _averaged_statistics(dims.mean(axis=2), targets)                  # over presentations
    out["averaged"] = averaged
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(n_bootstrap):
            picks = rng.integers(0, s, size=(q, s))                              # per item: S presentations
            means = np.take_along_axis(arm.item_means, np.broadcast_to(picks.T[None, None], (c, n, s, q)),
                                       axis=2).mean(axis=2)                    # (C, N, Q)
            seeds = rng.integers(0, n, size=n)
            boot_dims = np.asarray(instrument.indices(means[:, seeds]), np.float64)  # (C, N, D)
            draws.append(_averaged_statistics(boot_dims, targets))
        out["bootstrap"] = {
            key: [_nanpercentile([d[key] for d in draws], 2.5), _nanpercentile([d[key] for d in draws], 97.5)]
            for key in ("own_l1", "diagonal", "correlation")}
        out["bootstrap"]["draws"] = n_bootstrap
    return out


def _averaged_statistics(dims: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``dims (C, N, D)`` (N seeds, read on the presentation-averaged answers) -> the mean over
    seeds of :func:`matrix_statistics`' scalars."""
    per = [matrix_statistics(dims[:, i], targets) for i in range(dims.shape[1])]
    return {"own_l1": float(np.mean([p["own_l1"] for p in per])),
            "diagonal": float(np.mean([p["diagonal"] for p in per])),
            "correlation": _nanmean([p["correlation"] for p in per])}


def _nanmean(values: Sequence[float]) -> float:
    values = np.asarray(values, np.float64)
    return float("nan") if np.all(np.isnan(values)) else float(np.nanmean(values))


def _nanpercentile(values: Sequence[float], q: float) -> float:
    values = np.asarray(values, np.float64)
    return float("nan") if np.all(np.isnan(values)) else float(np.nanpercentile(values, q))


def written_entries(targets: Sequence[Target], names: Sequence[str] = ("naive", "persona", "icl"), *,
                    slot: str = "user_end") -> list[Entry]:
    """The baselines as entries: the plain model (arm ``"plain"``, the same for every country)
    and the persona / ICL system texts written for each country (:mod:`jaxalign.baselines`)."""
    from jaxalign.baselines import baseline_system

    out = []
    for name in names:
        arm = "plain" if name == "naive" else name
        out.extend(Entry(arm=arm, target=t, system=baseline_system(name, t), slot=slot) for t in targets)
    return out


def run_entries(folders: Sequence[Any], *, label: Callable[[Mapping[str, Any]], str] | None = None) -> list[Entry]:
    """The tuned prompts of finished runs: each folder is one country's run (``results.json`` and
    ``soft_prompt.safetensors``) or a several-country run (one such sub-folder per country). The
    arm is ``label(results)`` (default :func:`run_label`), the seed the run's."""
    import json

    from jaxalign.softprompt import load_soft_prompt
    from jaxalign.survey.targets import custom_target

    label = label or run_label
    out = []
    for folder in folders:
        for run in run_folders(folder):
            results = json.loads((run / "results.json").read_text())
            dims = results["target"]["dims"]
            target = custom_target({k: v for k, v in dims.items() if v is not None}, name=results["target"]["name"])
            target = dataclasses.replace(target, code=results["target"].get("code"))
            prompt, _ = load_soft_prompt(run / "soft_prompt.safetensors")
            out.append(Entry(arm=label(results), target=target, seed=int(results["seed"]), soft_prompt=prompt,
                             slot=results["config"]["slot"]))
    return out


def run_folders(folder: Any) -> list[Any]:
    """The finished one-country runs in ``folder``: itself (it holds ``results.json``) or its
    sub-folders that do (a several-country run). ValueError when there is none."""
    from pathlib import Path

    folder = Path(folder)
    runs = [folder] if (folder / "results.json").is_file() else sorted(p.parent for p in folder.glob("*/results.json"))
    if not runs:
        raise ValueError(f"{str(folder)!r} holds no finished run (no results.json in it or its sub-folders)")
    return runs


def run_label(results: Mapping[str, Any]) -> str:
    """An arm's name from a run's ``results.json``: method (strategy), loss, orders, wording pool,
    the item-pair half it was tuned on."""
    config = results["config"]
    method = config["method"]
    if method != "gradient":
        method = {"DifferentialEvolution": "DE"}.get(config["strategy"], config["strategy"]) + (
            "+Adam" if method == "hybrid" else "")
    else:
        method = "Adam"
    pool = f" +{len(config.get('extra_wordings') or [])} wordings" if config.get("extra_wordings") else ""
    pairs = f" pairs={config['item_pairs']}" if config.get("item_pairs") else ""
    return f"{method} loss={config.get('loss', 'paper')} orders={config.get('orders', 'one')}{pool}{pairs}"
