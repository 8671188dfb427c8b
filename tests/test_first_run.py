"""What a newcomer meets on a first run (issue 25, point 11): the README's recipes work after a
plain ``import jaxalign``, a run that fails leaves no folder behind, messages speak the
interface they are read in, and a target no answers can reach is refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxalign
from jaxalign import api
from jaxalign.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = ["align", "--country", "China", "--population", "4", "--k", "2", "--subspace", "4",
            "--generations", "1", "--baselines", "none", "--no-progress"]


# ---------------------------------------------------------------------------- subpackages
def test_readme_wording_recipe_works_after_a_plain_import(tmp_path):
    """README: ``jaxalign.survey.save_wording(jaxalign.vsm13(), "official.json")`` in a fresh
    interpreter that imported nothing but ``jaxalign`` (and that import stays free of jax)."""
    script = (
        "import sys, jaxalign\n"
        "light = 'jax' not in sys.modules\n"
        "jaxalign.survey.save_wording(jaxalign.vsm13(), 'official.json')\n"
        "names = ['survey', 'model', 'prompting', 'optimize', 'evaluate', 'generation', 'softprompt',\n"
        "         'scoring', 'baselines', 'parallel', 'api']\n"
        "kinds = {n: type(getattr(jaxalign, n)).__name__ for n in names}\n"
        "try:\n"
        "    jaxalign.no_such_room\n"
        "    missing = 'no error'\n"
        "except AttributeError as error:\n"
        "    missing = str(error)\n"
        "print(repr((light, kinds, 'survey' in dir(jaxalign), missing)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    light, kinds, listed, missing = eval(done.stdout.strip().splitlines()[-1])
    assert light, "import jaxalign pulled in jax"
    assert set(kinds.values()) == {"module"}
    assert listed and "no_such_room" in missing
    written = jaxalign.load_wording(tmp_path / "official.json")
    assert [item.id for item in written.items] == [item.id for item in jaxalign.vsm13().items]


# ---------------------------------------------------------------------------- no folder left behind
def _bad_wording(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    return str(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (lambda t: ["--model", str(t / "missing-model")], "missing-model"),
        (lambda t: ["--wording", str(t / "nope.json")], "nope.json"),
        (lambda t: ["--wording", _bad_wording(t)], "broken.json"),
        (lambda t: ["--extra-wording", str(t / "other.json")], "other.json"),
        (lambda t: ["--mesh", "model=7"], "7"),
        (lambda t: ["--log", "wandb"], "wandb"),
    ],
    ids=["model", "wording", "bad-wording", "extra-wording", "mesh", "logger"],
)
def test_a_failed_run_leaves_no_out_folder(tmp_path, capsys, extra, message):
    if "--log" in extra(tmp_path) and importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    out = tmp_path / "runs" / "first"
    code = main([*TINY_RUN, "--out", str(out), *extra(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), sorted(p.name for p in (tmp_path / "runs").rglob("*"))


def test_a_run_failing_after_its_set_up_removes_what_it_made(lm, tmp_path, monkeypatch):
    """Failing after the search space is written (here: in the baselines), a first run removes
    its files and the folders it made; a folder that held a file of the user's keeps it."""
    from jaxalign.optimize import pipeline

    made = []

    def broken_baselines(problem):
        made.extend(sorted(p.name for p in (tmp_path / "new" / "run").iterdir()) if
                    (tmp_path / "new" / "run").is_dir() else [])
        raise RuntimeError("the device fell over")

    monkeypatch.setattr(pipeline, "baselines", broken_baselines)
    with pytest.raises(RuntimeError, match="fell over"):
        jaxalign.align(lm, "China", k=2, population=4, subspace=4, generations=1, baselines=(),
                       out=tmp_path / "new" / "run", progress=False)
    assert made == [api.SPACE_FILE]  # the run had written into its folder before it failed
    assert not (tmp_path / "new").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(RuntimeError, match="fell over"):
        jaxalign.align(lm, "China", k=2, population=4, subspace=4, generations=1, baselines=(),
                       out=mine, progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_unwritable_out_is_refused_without_creating_anything(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write"):
        api.check_out_dir(blocker / "deeper" / "run", resume=False)
    api.check_out_dir(tmp_path / "x" / "y", resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# ---------------------------------------------------------------------------- the interface's words
def test_a_folder_holding_a_run_is_refused_in_the_callers_words(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({}))
    assert main([*TINY_RUN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "resume=True" not in err
    with pytest.raises(ValueError, match="already holds a run") as error:
        api.check_out_dir(out, resume=False)
    assert "resume=True" in str(error.value) and "--resume" not in str(error.value)


# ---------------------------------------------------------------------------- unreachable targets
def test_the_api_refuses_an_unreachable_target_before_rendering(lm, tmp_path, monkeypatch):
    from jaxalign.optimize import pipeline

    def no_setup(*args, **kwargs):
        raise AssertionError("the run was set up")

    monkeypatch.setattr(pipeline, "setup", no_setup)
    with pytest.raises(ValueError, match=r"PDI=800 \(reachable: -240\.\.240\).*0\.\.112"):
        jaxalign.align(lm, "PDI=800,IDV=20", out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_cli_refuses_an_unreachable_target(tmp_path, capsys):
    assert main([*TINY_RUN[:1], "--target", "PDI=800", *TINY_RUN[3:], "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "PDI=800" in err and "-240..240" in err and "usage:" not in err
    assert not (tmp_path / "run").exists()
