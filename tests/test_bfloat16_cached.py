"""The default cached scorer in bfloat16 against float32 and against the bfloat16 full pass.

Measured on the tiny model (4 random prompts of 3 vectors, 24 items; 2026-12-01): the largest
answer-probability difference is 0.044 between bfloat16 and float32 (cached and full alike), 0.047
between the bfloat16 cached and full passes (the two orders of rounding), and 3e-6 between the
float32 cached and full passes. The tiny model is chaotic by construction (weights at std 0.2), so
these are upper-end figures; the tests assert 0.1 for bfloat16 and that the cache adds no error of
its own beyond bfloat16 rounding (its mean error against float32 at most 1.5x the full pass's).
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxalign.model.tiny import tiny_model
from jaxalign.scoring import make_scorer
from jaxalign.survey import vsm13

BF16_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def probs():
    vsm = vsm13()
    f32, b16 = tiny_model(dtype="float32"), tiny_model(dtype="bfloat16")
    emb = np.asarray(f32.embedding_matrix)
    prompts = emb[np.random.default_rng(0).integers(0, emb.shape[0], size=(4, 3))].astype(np.float32)
    return {(name, mode): np.asarray(make_scorer(lm, vsm, k=3, mode=mode)(prompts).probs, np.float64)
            for name, lm in (("f32", f32), ("b16", b16)) for mode in ("cached", "full")}


@pytest.mark.slow
def test_bfloat16_cached_path_is_within_bfloat16_rounding(probs):
    reference = probs["f32", "full"]
    np.testing.assert_allclose(probs["f32", "cached"], reference, atol=1e-5)
    cached_err = np.abs(probs["b16", "cached"] - reference)
    full_err = np.abs(probs["b16", "full"] - reference)
    assert cached_err.max() < BF16_TOLERANCE and full_err.max() < BF16_TOLERANCE
    assert np.abs(probs["b16", "cached"] - probs["b16", "full"]).max() < BF16_TOLERANCE
    # the cache adds no error of its own: it is as close to float32 as the plain bf16 pass
    assert cached_err.mean() <= 1.5 * full_err.mean() + 1e-3
    # and bfloat16 does round: the comparison is not vacuous
    assert full_err.max() > 1e-4
