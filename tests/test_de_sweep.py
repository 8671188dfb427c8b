"""benchmarks/de_sweep.py: every configuration gets the same forward-pass budget (no compile)."""

from __future__ import annotations

import pytest

from benchmarks import de_sweep


def test_configs_share_the_budget_and_start_from_the_paper_preset():
    args = de_sweep.parse_args(["--config", "mine=elitism:false;crossover_rate:0.5;dither:[0.5,1.0]",
                                "--configs", "paper,best-p8,best-p32,best-init2,best-sub16"])
    entries = [(n, de_sweep.CONFIGS[n]) for n in args.configs] + list(args.config)
    configs = {n: de_sweep.sweep_config(o, args) for n, o in entries}
    budget = 16 * 41
    for name, config in configs.items():
        evaluations = config.population * (config.generations + 1)
        assert abs(evaluations - budget) <= config.population / 2, (name, evaluations)
    assert (configs["best-p8"].population, configs["best-p8"].generations) == (8, 81)
    assert (configs["best-p32"].population, configs["best-p32"].generations) == (32, 19)  # 640 of 656
    paper = configs["paper"]
    assert (paper.crossover_rate, paper.differential_weight, paper.dither, paper.elitism, paper.spread) == (
        0.9, 0.8, None, True, 1.0)
    assert configs["best-init2"].spread == 2.0 and configs["best-sub16"].subspace == 16
    mine = configs["mine"]
    assert (mine.elitism, mine.crossover_rate, mine.dither, mine.spread) == (False, 0.5, (0.5, 1.0), 1.0)


def test_unknown_configs_are_refused():
    with pytest.raises(SystemExit):
        de_sweep.parse_args(["--configs", "nonsense"])
