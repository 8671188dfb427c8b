"""The ``jaxalign countries`` command, run in-process, and the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from jaxalign import __version__
from jaxalign.cli import main, target_argument


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_countries_table(capsys):
    code, out, err = run(capsys, "countries")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["code", "country", "PDI", "IDV", "MAS", "UAI", "LTO", "IVR"]
    rows = [line for line in lines[2:] if line[:3].isupper() and line[3:5] == "  "]
    assert len(rows) == 111
    saudi = next(line for line in rows if line.startswith("SAU"))
    assert saudi.split()[-6:] == ["-", "-", "-", "-", "36", "52"]
    assert "2015-08-16" in out and "Minkov" in out


def test_countries_filter_and_alias(capsys):
    code, out, _ = run(capsys, "countries", "arab")
    assert code == 0
    assert "ARA   Arab countries" in out and "SAU" in out and "CHI" not in out
    code, out, _ = run(capsys, "countries", "South Korea")
    assert code == 0 and "KOR" in out


def test_countries_json(capsys):
    code, out, _ = run(capsys, "countries", "usa", "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload["release"] == "2015-08-16" and "Minkov" in payload["citation"]
    assert payload["dimensions"] == ["PDI", "IDV", "MAS", "UAI", "LTO", "IVR"]
    usa = [c for c in payload["countries"] if c["code"] == "USA"]
    assert usa == [{"name": "U.S.A.", "code": "USA", "PDI": 40.0, "IDV": 91.0, "MAS": 62.0,
                    "UAI": 46.0, "LTO": 26.0, "IVR": 68.0}]
    code, out, _ = run(capsys, "countries", "Saudi", "--json")
    saudi = json.loads(out)["countries"][0]
    assert saudi["PDI"] is None and saudi["LTO"] == 36.0


def test_bad_input_exit_code_2_without_traceback(capsys):
    code, out, err = run(capsys, "countries", "Chinaa")
    assert code == 2 and out == ""
    assert err.startswith("jaxalign: error:") and "China (CHI)" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "no-such-command")
    assert code == 2 and "invalid choice" in err
    code, _, err = run(capsys)
    assert code == 2 and "countries" in err  # help on stderr


def test_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "countries" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"jaxalign {__version__}"


def test_countries_does_not_import_jax():
    script = (
        "import sys; from jaxalign.cli import main; code = main(['countries', 'japan']); "
        "assert code == 0; assert 'jax' not in sys.modules, 'jax imported'"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "JPN" in result.stdout


@pytest.mark.skipif(shutil.which("jaxalign") is None, reason="console script not installed")
def test_console_script_help():
    result = subprocess.run(["jaxalign", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "countries" in result.stdout and "usage: jaxalign" in result.stdout


def test_target_argument_for_later_commands():
    assert target_argument("china").code == "CHI"
    assert target_argument("PDI=80,IVR=10").available == ("PDI", "IVR")
    from jaxalign.cli import CommandError

    with pytest.raises(CommandError, match="closest matches"):
        target_argument("Chinaa")
    with pytest.raises(CommandError, match="unknown dimension"):
        target_argument("PDX=3")
