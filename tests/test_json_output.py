"""Output contracts: every ``--json`` output is exactly one JSON document on stdout, diagnostics go
to stderr, and a bad value is one line on stderr with exit code 2 (no usage block).

All commands run in ONE subprocess with two simulated CPU devices (so ``--mesh data=2,model=1``
is real), each with its file descriptor 1 and 2 redirected to files: whatever any library writes
to stdout, Python or C, lands in the captured stdout and must parse as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "culturalbench"

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from jaxalign.cli import main

    out_dir = sys.argv[1]
    commands = json.loads(sys.argv[2])
    for name, argv in commands.items():
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with open(os.path.join(out_dir, name + ".out"), "wb") as o, \\
                open(os.path.join(out_dir, name + ".err"), "wb") as e:
            os.dup2(o.fileno(), 1); os.dup2(e.fileno(), 2)
            try:
                code = main(argv)
            finally:
                sys.stdout.flush(); sys.stderr.flush()
                os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        with open(os.path.join(out_dir, name + ".code"), "w") as c:
            c.write(str(code))
""")


def _results_json(run: Path) -> None:
    dims = {d: 50.0 for d in ("PDI", "IDV", "MAS", "UAI", "LTO", "IVR")}
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "model": "tiny-random", "wording": "jaxalign-v1", "target": {"name": "X", "dims": dims},
        "config": {"generations": 1, "readout": "expected"},
        "methods": {"optimized": {"loss": 1.0, "dims": dims}}, "history": {"best_loss": [2.0, 1.0]},
    }))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    from jaxalign.softprompt import save_soft_prompt

    tmp = tmp_path_factory.mktemp("json")
    prompt = tmp / "p.safetensors"
    save_soft_prompt(prompt, np.random.default_rng(0).normal(0, 0.2, (2, 64)).astype(np.float32),
                     {"model": "tiny-random", "slot": "user_start", "readout": "expected"})
    _results_json(tmp / "run")
    commands = {
        "countries": ["countries", "jap", "--json"],
        "score": ["score", "--json", "--country", "China"],
        "score_mesh": ["score", "--json", "--mesh", "data=2,model=1", "--soft-prompt", str(prompt),
                       "--target", "PDI=80"],
        "culturalbench": ["eval", "culturalbench", "--json", "--data", str(DATA), "--country", "China",
                          "--soft-prompt", str(prompt)],
        "robustness": ["eval", "robustness", "--json", "--soft-prompt", str(prompt), "--country", "China"],
        "show": ["show", str(tmp / "run"), "--json", "--no-figures"],
        "bad_country": ["score", "--json", "--country", "Atlantis"],
        "bad_target": ["eval", "robustness", "--json", "--soft-prompt", str(prompt), "--target", "PDX=3"],
    }
    env = {**os.environ,
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip(),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp), json.dumps(commands)],
                            capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: (int((tmp / f"{name}.code").read_text()), (tmp / f"{name}.out").read_text(),
                   (tmp / f"{name}.err").read_text()) for name in commands}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["countries", "score", "score_mesh", "culturalbench", "robustness", "show"])
def test_json_output_is_one_document(outputs, name):
    code, out, err = outputs[name]
    assert code == 0, err
    document = json.loads(out)  # the whole of stdout: nothing before or after the document
    assert isinstance(document, dict) and document
    if name == "score_mesh":
        assert "mesh data=2,model=1" in err and "mesh" not in out
        assert document["loss"] >= 0


@pytest.mark.slow
@pytest.mark.parametrize("name, word", [("bad_country", "Atlantis"), ("bad_target", "PDX")])
def test_bad_value_is_one_line_without_usage(outputs, name, word):
    code, out, err = outputs[name]
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxalign: error:") and word in lines[0], err
    assert "usage:" not in err
