"""Benchmark scripts: ``throughput.py`` (scoring speed vs a PyTorch loop), ``dims.py`` (the paper's
table), ``de_cost.py`` (DE wall time vs population, K and depth). Run them as scripts, e.g.
``python benchmarks/throughput.py --preset tiny``; results are recorded in ``RESULTS.md``."""
