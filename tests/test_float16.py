"""float16 as a model dtype, and the overflow check that names the layer (planted overflow)."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxalign
from jaxalign.model import LM
from jaxalign.model.numerics import find_nonfinite_layer
from jaxalign.scoring import make_scorer

OVERFLOW_LAYER = 2


@pytest.fixture(scope="module")
def lm16():
    return jaxalign.load_model("tiny-random", dtype="float16")


@pytest.fixture(scope="module")
def overflowing(lm16):
    """The float16 tiny model with layer 2's down projection scaled by 1e4: layer 2 overflows."""
    pure = nnx.to_pure_dict(lm16.params)
    down = pure["layers"]["down_proj"]
    pure["layers"]["down_proj"] = down.at[OVERFLOW_LAYER].multiply(jnp.float16(1e4))
    state = nnx.state(lm16.model)
    graphdef = nnx.graphdef(lm16.model)
    nnx.replace_by_pure_dict(state, pure)
    return LM(name="overflow", config=lm16.config, model=nnx.merge(graphdef, state), tokenizer=lm16.tokenizer)


@pytest.fixture(scope="module")
def prompts():
    return (0.2 * np.random.default_rng(0).standard_normal((2, 4, 64))).astype(np.float32)


@pytest.mark.slow
def test_float16_scores_close_to_float32(lm16, prompts):
    """float16 weights and activations: finite scores, answer probabilities near float32's."""
    assert lm16.dtype == jnp.float16 and lm16.embedding_matrix.dtype == jnp.float16
    lm32 = jaxalign.load_model("tiny-random", dtype="float32")
    instrument = jaxalign.vsm13()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # no overflow warning on the plain model
        got = make_scorer(lm16, instrument, k=4, n_buckets=1)(prompts)
    want = make_scorer(lm32, instrument, k=4, n_buckets=1)(prompts)
    assert np.all(np.isfinite(np.asarray(got.probs)))
    # float16 keeps 10 mantissa bits; measured max difference ~0.01 on this chaotic std-0.2 model
    assert float(np.abs(np.asarray(got.probs) - np.asarray(want.probs)).max()) < 0.05
    assert find_nonfinite_layer(lm16, input_ids=[[5, 6, 7, 8]]) is None


def test_overflow_check_names_the_planted_layer(overflowing):
    report = find_nonfinite_layer(overflowing, input_ids=[[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]],
                                  attention_mask=[[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    assert report is not None and report.stage == "layer" and report.layer == OVERFLOW_LAYER, report
    assert "decoder layer 2 (model.layers.2, 0-based) of 4 in float16" in report.message
    assert np.isfinite(report.max_abs_input) and report.max_abs_input > 0


def test_overflow_in_input_is_named(lm16):
    huge = np.full((1, 3, 64), 1e6, np.float32)   # beyond float16's 65,504
    report = find_nonfinite_layer(lm16, inputs_embeds=huge)
    assert report is not None and report.stage == "input"


@pytest.mark.slow
def test_scorer_warns_with_the_layer(overflowing, prompts):
    """A non-finite float16 score triggers the check by itself; the warning names layer 2."""
    scorer = make_scorer(overflowing, jaxalign.vsm13(), k=4, n_buckets=1)
    with pytest.warns(RuntimeWarning, match=r"decoder layer 2 \(model.layers.2, 0-based\)"):
        scores = scorer(prompts)
    assert not np.all(np.isfinite(np.asarray(scores.probs)))


def test_float16_in_the_cli_parser():
    from jaxalign.cli import build_parser

    args = build_parser().parse_args(["score", "--dtype", "float16", "--quantize", "int8"])
    assert (args.dtype, args.quantize) == ("float16", "int8")
