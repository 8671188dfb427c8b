"""How fast each DE setting recovers the planted targets of the test suite (tiny model, CPU).

The tests ``test_align.py::test_de_recovers_a_planted_target`` and
``test_optimizers.py::test_de_p8_preset_recovers_a_planted_target`` (and, on int8, this script's
``int8`` mode, once a test) demand that a search keep less
than a share of its starting L1. This script measures that share along the generations under four
target names' PRNG streams (one multi-target run: each target's search equals its single run), so
a test's budget and demand can be chosen from measured margins::

    python benchmarks/planted_curves.py float   # DE defaults, P 16, 40 generations
    python benchmarks/planted_curves.py int8    # the same on the int8 tiny model
    python benchmarks/planted_curves.py de-p8   # the de-p8 preset, 81 generations

It prints one line per stream: the starting L1 and the share kept after the marked generations.
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np

NAMES = ("planted", "planted-b", "planted-c", "planted-d")  # "planted" is the tests' stream


def planted_targets(lm, instrument):
    """The tests' planted target (the dims of a random 4-token prompt) under each name in NAMES."""
    from jaxalign.scoring import make_scorer
    from jaxalign.survey import DIMENSIONS, custom_target

    embedding = np.asarray(lm.embedding_matrix)
    prompt = embedding[np.random.default_rng(123).integers(0, embedding.shape[0], 4)]
    dims = np.asarray(make_scorer(lm, instrument, k=4)(prompt[None]).dims[0])
    return [custom_target(dict(zip(DIMENSIONS, dims.tolist())), name=n) for n in NAMES]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", choices=("float", "int8", "de-p8"))
    args = parser.parse_args(argv)

    import jax

    import jaxalign
    from jaxalign import api

    lm = jaxalign.load_model("tiny-random", dtype="float32", quantize="int8" if args.setting == "int8" else None)
    targets = planted_targets(lm, jaxalign.vsm13())
    if args.setting == "de-p8":
        config = api.AlignConfig.from_preset("de-p8", k=4, subspace=16, generations=81, seed=1,
                                             baselines=(), chunk_size=82)
        marks = (10, 20, 30, 40, 50, 60, 81)
    else:
        config = api.AlignConfig(k=4, subspace=16, population=16, generations=40, seed=1, baselines=())
        marks = (5, 10, 15, 20, 25, 30, 40)
    t0 = time.perf_counter()
    results = jaxalign.align(lm, targets, config=config, progress=False)
    header = (f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
              f"`python benchmarks/planted_curves.py {args.setting}`; jax {jax.__version__} "
              f"{jax.devices()[0].platform}; {time.perf_counter() - t0:.0f} s")
    lines = [header]
    for result in results:
        history = np.asarray(result.history["best_loss"])
        shares = " ".join(f"g{m}:{history[m] / history[0]:.3f}" for m in marks)
        lines.append(f"{args.setting} {result.target.name} start {history[0]:.2f} {shares}")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
