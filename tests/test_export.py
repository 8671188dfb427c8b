"""PEFT export: a prompt aligned in the ``start`` slot, loaded by ``peft`` on the PyTorch twin.

The 24 VSM items' answer distributions of ``PeftModel.from_pretrained(twin, DIR)`` (PEFT's own
prompt-tuning forward: virtual tokens before the input embeddings) must equal jaxalign's scorer
with the same prompt in the ``start`` slot, < 1e-4 in float32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxalign
from jaxalign import api
from jaxalign.generation.export import (
    PEFT_CONFIG,
    PEFT_TENSOR,
    PEFT_WEIGHTS,
    export_peft,
)
from jaxalign.scoring import make_scorer

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def aligned(lm, tmp_path_factory):
    """A subspace prompt (p0 + A z) for the start slot, saved as ``jaxalign align`` saves it."""
    from jaxalign.softprompt import save_soft_prompt

    config = api.AlignConfig(k=3, subspace=8, slot="start")
    space, _ = api.search_space(lm, config)
    z = np.random.default_rng(0).normal(size=(space.dim,)).astype(np.float32)
    path = tmp_path_factory.mktemp("run") / "soft_prompt.safetensors"
    save_soft_prompt(path, np.asarray(space.decode(z)), {"model": lm.name, "slot": config.slot})
    return path


@pytest.mark.slow
def test_peft_loads_the_export_and_answers_like_jaxalign(lm, aligned, tmp_path):
    from safetensors.numpy import load_file

    from benchmarks.common import torch_model_from_lm
    from jaxalign.softprompt import load_soft_prompt

    prompt, metadata = load_soft_prompt(aligned)
    assert metadata["slot"] == "start"
    out = export_peft(aligned, tmp_path / "adapter")
    config = json.loads((out / PEFT_CONFIG).read_text())
    assert config["base_model_name_or_path"] == "tiny-random" == lm.name
    assert config["num_virtual_tokens"] == 3 and config["token_dim"] == lm.config.hidden_size
    tensors = load_file(out / PEFT_WEIGHTS)
    assert list(tensors) == [PEFT_TENSOR]
    np.testing.assert_array_equal(tensors[PEFT_TENSOR], prompt)  # the materialised p0 + A z

    model = peft.PeftModel.from_pretrained(torch_model_from_lm(lm), str(out)).eval()
    assert model.peft_config["default"].peft_type == peft.PeftType.PROMPT_TUNING
    loaded = model.get_prompt_embedding_to_save("default").numpy()
    np.testing.assert_array_equal(loaded, prompt)

    scorer = make_scorer(lm, jaxalign.vsm13(), k=3, slot="start", n_buckets=1)
    ours = scorer(prompt)
    from jaxalign.prompting import render_items

    scorer_batch = render_items(lm.tokenizer, jaxalign.vsm13(), slot="start")
    assert scorer_batch.prefix_len == 0
    probs = np.zeros((24, 5))
    with torch.no_grad():
        for q in range(24):
            ids = scorer_batch.suffix_ids[q][scorer_batch.suffix_mask[q] == 1]
            input_ids = torch.tensor(ids[None], dtype=torch.long)
            logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
            assert logits.shape[1] == 3 + len(ids)  # PEFT prepended the 3 virtual tokens
            answers = logits[0, -1, torch.tensor(scorer_batch.answer_ids, dtype=torch.long)].double()
            probs[q] = torch.softmax(answers, -1).numpy()
            if q == 0:  # the prompt matters: without the adapter the answer differs
                with model.disable_adapter():
                    bare = model(input_ids=input_ids).logits[0, -1, torch.tensor(scorer_batch.answer_ids)]
                assert np.abs(torch.softmax(bare.double(), -1).numpy() - probs[q]).max() > 1e-2
    np.testing.assert_allclose(np.asarray(ours.probs[0]), probs, atol=1e-4)


def test_config_fields_are_peft_own(lm, tmp_path):
    """Every field written is one PEFT's PromptTuningConfig has, and PEFT reads it back."""
    out = export_peft(np.ones((2, lm.config.hidden_size), np.float32), tmp_path, slot="start", base_model="m")
    written = json.loads((out / PEFT_CONFIG).read_text())
    own = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2).to_dict()
    assert set(written) <= set(own)
    read = peft.PeftConfig.from_pretrained(str(out))
    assert isinstance(read, peft.PromptTuningConfig)
    assert (read.num_virtual_tokens, read.token_dim, read.base_model_name_or_path) == (2, lm.config.hidden_size, "m")


def test_prompts_of_other_slots_are_refused(tmp_path):
    from jaxalign.softprompt import save_soft_prompt

    path = tmp_path / "p.safetensors"
    save_soft_prompt(path, np.ones((2, 64), np.float32), {"slot": "user_start", "model": "tiny-random"})
    with pytest.raises(ValueError, match="'user_start' slot.*before the whole input.*--slot start"):
        export_peft(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_align_takes_the_start_slot():
    from jaxalign.cli import build_parser

    args = build_parser().parse_args(["align", "--country", "Japan", "--out", "x", "--slot", "start"])
    assert args.slot == "start" and api.AlignConfig(slot=args.slot).slot == "start"


@pytest.mark.slow
def test_export_cli(tmp_path, capsys):
    """``jaxalign export`` (the command's main, in this process: two subprocesses only added two
    interpreter and JAX start-ups)."""
    from jaxalign.cli import main
    from jaxalign.softprompt import save_soft_prompt

    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_soft_prompt(good, np.ones((2, 64), np.float32), {"slot": "start", "model": "tiny-random"})
    save_soft_prompt(bad, np.ones((2, 64), np.float32), {"slot": "system", "model": "tiny-random"})
    capsys.readouterr()
    assert main(["export", "--format", "peft", "--soft-prompt", str(good), "--out", str(tmp_path / "a")]) == 0
    done = capsys.readouterr()
    assert (tmp_path / "a" / PEFT_WEIGHTS).is_file() and str(tmp_path / "a") in done.out, done.err
    assert main(["export", "--format", "peft", "--soft-prompt", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "'system' slot" in capsys.readouterr().err
