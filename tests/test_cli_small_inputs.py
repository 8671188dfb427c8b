"""Small command-line items (issue 37): each gets one clear line, refused before any model loads
where the value can be checked without it.

Loading is replaced by a function that fails the test (``jaxalign.cli.common._load``), so a
refusal that comes only after the weights load shows up as that failure.
"""

from __future__ import annotations

import pytest

from jaxalign.cli import common, main


class Loaded(Exception):
    """Raised instead of loading a model."""


@pytest.fixture
def no_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise Loaded("the model was loaded before the value was refused")

    monkeypatch.setattr(common, "_load", refuse)


def _run(argv, capsys) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_eval_help_says_what_auto_dtype_chooses(capsys):
    for command in (["eval", "robustness", "--help"], ["eval", "culturalbench", "--help"]):
        code, out, _ = _run(command, capsys)
        text = " ".join(out.split())
        assert code == 0
        assert "auto: float32 on a CPU backend" in text and "bfloat16 on GPUs and TPUs" in text
        assert "bfloat16 otherwise" not in text
        assert "default: the model the --soft-prompt was tuned on" in text


@pytest.mark.parametrize("command", [["score"], ["align", "--out", "never-made"]])
def test_a_target_with_missing_dimensions_gets_a_one_line_note(command, capsys, no_load, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Loaded):
        main([*command, "--country", "Albania"])
    err = capsys.readouterr().err.strip().splitlines()
    notes = [line for line in err if line.startswith("note: target")]
    assert notes == ["note: target Albania has 2 of 6 dimensions (LTO, IVR); the loss covers only those "
                     "(the others print as '-')"]


def test_a_full_target_gets_no_note(capsys, no_load):
    with pytest.raises(Loaded):
        main(["score", "--country", "China"])
    assert "note: target" not in capsys.readouterr().err
    with pytest.raises(Loaded):
        main(["score", "--target", "PDI=80,IDV=20"])
    assert "note: target custom has 2 of 6 dimensions (PDI, IDV)" in capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [
    ("1.0", "jaxalign: error: --dither expects two numbers 'FMIN,FMAX' (e.g. 0.5,1.0) or 'none', got '1.0'"),
    ("0.5,3", "dither must satisfy 0 <= F_min < F_max <= 2"),
])
def test_dither_refused_in_one_line(value, expected, capsys, no_load, tmp_path):
    code, _, err = _run(["align", "--country", "China", "--out", str(tmp_path / "x"), "--dither", value], capsys)
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not any(line.startswith("usage:") for line in err)
    assert not (tmp_path / "x").exists()


def test_export_without_out_is_one_line(capsys, tmp_path):
    code, _, err = _run(["export", "--format", "peft", "--soft-prompt", str(tmp_path / "p.safetensors")], capsys)
    assert code == 2 and err == ["jaxalign: error: export needs --out: the adapter folder (peft) or .gguf file (llama.cpp) to write"]


@pytest.mark.parametrize("flags, expected", [
    (["--temperature", "-1"], "temperature must be >= 0 (0: greedy), got -1.0"),
    (["--top-p", "0"], "top_p must be in (0, 1], got 0.0"),
    (["--max-new-tokens", "0"], "max_new_tokens must be an integer >= 1, got 0"),
])
@pytest.mark.parametrize("command", ["generate", "chat"])
def test_decoding_settings_refused_before_the_model_loads(command, flags, expected, capsys, no_load):
    code, _, err = _run([command, *flags, *(["Hi"] if command == "generate" else [])], capsys)
    assert code == 2 and err == [f"jaxalign: error: {expected}"]
