"""``jaxalign score --steering FILE`` and ``jaxalign export --format llama.cpp --steering FILE``.

The score command's dims equal the steering scorer's; the export is read back with
``gguf.GGUFReader`` (architecture, model hint, layer count, ``direction.L`` for jaxalign's block L,
F32 values bit-equal to the file's vector).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxalign
from jaxalign import cli
from jaxalign.interventions import steering


@pytest.fixture(scope="module")
def saved(lm, tmp_path_factory):
    """A steering file at block 2 with provenance, and the same vector as a plain file at block 1."""
    folder = tmp_path_factory.mktemp("steering")
    vector = (np.random.default_rng(0).standard_normal(lm.config.hidden_size) * 6).astype(np.float32)
    full = steering.save_steering(folder / "v.safetensors", vector, 2,
                                  steering.steering_metadata(lm, instrument=jaxalign.vsm13(), target="China"))
    from safetensors.numpy import save_file

    save_file({"vector": vector}, str(folder / "plain.safetensors"), metadata={"layer": "1"})
    return vector, full, folder / "plain.safetensors"


def test_score_with_steering_equals_the_scorer(lm, saved, capsys):
    from jaxalign.scoring_steering import make_steering_scorer

    vector, path, _ = saved
    code = cli.main(["score", "--model", "tiny-random", "--dtype", "float32", "--steering", str(path),
                     "--country", "China", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["steering"]["layers"] == [2] and out["steering"]["provenance"]["checked"] == ["model", "wording"]
    want = make_steering_scorer(lm, jaxalign.vsm13(), layer=2, target=jaxalign.hofstede("China"))(vector)
    np.testing.assert_allclose([out["dims"][d] for d in jaxalign.vsm13().dimensions], np.asarray(want.dims[0]),
                               atol=1e-3)
    assert out["loss"] == pytest.approx(float(want.loss[0]), abs=1e-3)
    plain = jaxalign.score(lm)
    assert np.abs(np.asarray(plain.dims[0]) - np.asarray(want.dims[0])).max() > 1.0  # it steers


def test_score_refusals(saved, capsys, tmp_path):
    vector, path, plain = saved
    code = cli.main(["score", "--model", "tiny-random", "--steering", str(path), "--soft-prompt", str(path)])
    assert code == 2 and "not supported yet" in capsys.readouterr().err
    steering.save_steering(tmp_path / "wide.safetensors", np.ones(65), 1)
    code = cli.main(["score", "--model", "tiny-random", "--steering", str(tmp_path / "wide.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "width d=65" in err and "loading weights" not in err  # before the weights load
    steering.save_steering(tmp_path / "deep.safetensors", np.ones(64), 7)
    code = cli.main(["score", "--model", "tiny-random", "--steering", str(tmp_path / "deep.safetensors")])
    assert code == 2 and "layer 7 is out of range" in capsys.readouterr().err
    code = cli.main(["score", "--model", "tiny-random", "--steering", str(tmp_path / "missing.safetensors")])
    assert code == 2 and "no file" in capsys.readouterr().err


def test_export_llama_cpp_reads_back(lm, saved, tmp_path, capsys):
    pytest.importorskip("gguf")
    from jaxalign.generation.control_vector import read_control_vector

    vector, path, plain = saved
    out = tmp_path / "cv" / "x.gguf"
    assert cli.main(["export", "--format", "llama.cpp", "--steering", str(path), "--out", str(out)]) == 0
    assert "block 2 -> direction.2" in capsys.readouterr().out
    got = read_control_vector(out)
    assert got["architecture"] == "controlvector" and got["model_hint"] == "llama" and got["layer_count"] == 1
    assert list(got["directions"]) == [2] and got["types"] == {"direction.2": "F32"}
    np.testing.assert_array_equal(got["directions"][2], vector)
    # a plain file: a note, and the hint must be given
    assert cli.main(["export", "--format", "llama.cpp", "--steering", str(plain), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no provenance" in err and "--model-hint" in err
    assert cli.main(["export", "--format", "llama.cpp", "--steering", str(plain), "--out", str(out),
                     "--model-hint", "qwen2"]) == 0
    assert read_control_vector(out)["model_hint"] == "qwen2" and list(read_control_vector(out)["directions"]) == [1]


def test_export_refuses_block_zero_and_the_wrong_kind(saved, tmp_path, capsys):
    pytest.importorskip("gguf")
    vector, path, _ = saved
    zero = steering.save_steering(tmp_path / "zero.safetensors", vector, 0, {"model_type": "llama"})
    out = tmp_path / "x.gguf"
    assert cli.main(["export", "--format", "llama.cpp", "--steering", str(zero), "--out", str(out)]) == 2
    assert "never steers block 0" in capsys.readouterr().err and not out.exists()
    assert cli.main(["export", "--format", "peft", "--steering", str(path), "--out", str(out)]) == 2
    assert "--format llama.cpp" in capsys.readouterr().err
    two = steering.save_steering(tmp_path / "two.safetensors", np.stack([vector, -vector]), [3, 1],
                                 {"model_type": "llama", "num_hidden_layers": "4"})
    assert cli.main(["export", "--format", "llama.cpp", "--steering", str(two), "--out", str(out)]) == 0
    from jaxalign.generation.control_vector import read_control_vector

    got = read_control_vector(out)
    assert sorted(got["directions"]) == [1, 3] and got["layer_count"] == 2
    np.testing.assert_array_equal(got["directions"][3], vector)
