"""Memory before running: compiled scoring-pass memory, weight bytes, members_per_pass="auto"."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import jaxalign
from jaxalign import memory
from jaxalign.model import LlamaConfig
from jaxalign.scoring import make_scorer

POPULATION = 8


@pytest.fixture(scope="module")
def scorer(lm):
    return make_scorer(lm, jaxalign.vsm13(), k=2, n_buckets=1, target=[50.0] * 6)


@pytest.fixture(scope="module")
def reports(scorer):
    return {m: memory.scoring_memory(scorer, POPULATION, members_per_pass=m) for m in (None, 2)}


@pytest.mark.slow
def test_weight_bytes(lm):
    """Weights' bytes: every float32 parameter; int8 layers are 1 byte + a float32 scale per channel."""
    c = lm.config
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(lm.params))
    assert memory.weight_bytes_per_device(lm.params) == total
    int8 = jaxalign.load_model("tiny-random", dtype="float32", quantize="int8")
    qd, kvd = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    linear = c.hidden_size * (qd + 2 * kvd) + qd * c.hidden_size + 3 * c.hidden_size * c.intermediate_size
    channels = qd + 2 * kvd + c.hidden_size + 2 * c.intermediate_size + c.hidden_size
    saved = c.num_hidden_layers * (linear * 3 - channels * 4)   # 4 -> 1 byte per weight, plus scales
    assert memory.weight_bytes_per_device(int8.params) == total - saved


@pytest.mark.slow
def test_scoring_memory_reports_the_compiled_pass(reports, lm):
    full, sliced = reports[None], reports[2]
    assert full.platform == "cpu" and full.members_per_pass == POPULATION and sliced.members_per_pass == 2
    assert full.weights_bytes == memory.weight_bytes_per_device(lm.params)
    assert full.argument_bytes >= full.weights_bytes          # the weights are arguments
    assert full.temp_bytes > 0 and full.peak_bytes >= full.argument_bytes + full.temp_bytes - full.alias_bytes
    assert sliced.working_bytes < full.working_bytes          # fewer members per pass, less memory
    assert set(full.as_dict()) >= {"peak_bytes", "working_bytes", "weights_bytes", "temp_bytes"}


def test_abstract_lm_allocates_nothing_and_compiles():
    """An 8B-shaped model stands in abstractly; its weight bytes follow from the shapes."""
    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128)
    lm = memory.abstract_lm(config, "bfloat16", quantize="int8")
    leaves = jax.tree.leaves(lm.params)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    per_layer = 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336
    expected = (32 * per_layer                                   # int8 linear weights
                + 32 * 4 * (4096 + 2 * 1024 + 4096 + 2 * 14336 + 4096)  # float32 scales
                + 2 * 2 * 128256 * 4096 + 2 * (2 * 32 * 4096 + 4096))  # bf16 embed, head, norms
    assert memory.weight_bytes_per_device(lm.params) == expected
    assert math.isclose(expected / 1e9, 9.1, abs_tol=0.1)


def test_auto_is_the_whole_population_on_cpu(scorer):
    assert memory.device_free_bytes() is None          # the CPU backend reports no memory figures
    assert memory.auto_members_per_pass(scorer, POPULATION) == POPULATION


@pytest.mark.slow
def test_auto_picks_the_largest_slice_that_fits(scorer, reports, monkeypatch):
    """With a stated free memory between the 2- and 8-member passes, auto picks 2 or 4 and scores
    exactly as the whole population does; below the smallest slice it refuses clearly."""
    full, two = reports[None].working_bytes, reports[2].working_bytes
    free = int((two + (full - two) * 0.2) / (1 - memory.AUTO_MARGIN))   # fits 2, not 8
    picked = memory.auto_members_per_pass(scorer, POPULATION, free_bytes=free)
    assert picked in (2, 4) and POPULATION % picked == 0
    need = memory.scoring_memory(scorer, POPULATION, members_per_pass=picked).working_bytes
    assert need <= (1 - memory.AUTO_MARGIN) * free
    with pytest.raises(ValueError, match="does not fit even 1 member"):
        memory.auto_members_per_pass(scorer, POPULATION, free_bytes=1000)

    monkeypatch.setattr(memory, "device_free_bytes", lambda device=None: free)
    auto = make_scorer(scorer.lm, jaxalign.vsm13(), k=2, n_buckets=1, target=[50.0] * 6,
                       members_per_pass="auto")
    prompts = (0.2 * np.random.default_rng(0).standard_normal((POPULATION, 2, 64))).astype(np.float32)
    got = auto(prompts)
    assert auto.auto_members_per_pass(POPULATION) == picked
    want = scorer(prompts)
    np.testing.assert_allclose(np.asarray(got.probs), np.asarray(want.probs), atol=1e-6)


def test_bad_members_per_pass():
    lm = jaxalign.load_model("tiny-random", dtype="float32")
    with pytest.raises(ValueError, match="members_per_pass must be >= 1, None or 'auto'"):
        make_scorer(lm, jaxalign.vsm13(), k=2, members_per_pass="most")
    with pytest.raises(ValueError, match="margin"):
        memory.auto_members_per_pass(None, 8, margin=1.5)
