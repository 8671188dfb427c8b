"""Ctrl-C during `jaxalign align`: the message, the partial results, and the resume line.

The run is a real subprocess interrupted by a real SIGINT once its progress lines show that a
few generations are done (chunks of one generation, so a checkpoint follows each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["align", "--country", "China", "--population", "4", "--k", "2", "--subspace", "4",
        "--chunk-size", "1", "--baselines", "naive", "--no-progress"]  # one baseline: one compile, not three


def _jaxalign(argv, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # a SIGINT must reach Python's handler even when the test itself runs in the background
    return subprocess.Popen([sys.executable, "-m", "jaxalign.cli", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_writes_partial_results_and_says_how_to_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*ARGS, "--generations", "400", "--out", str(out)]
    proc = _jaxalign(argv)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("generation 2/400"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode == 130, "".join(seen) + rest
    # the phases were announced before the loop
    head = "".join(seen)
    for phase in ("loading weights: tiny-random", "rendering 24 survey items", "compiling", "compiled in"):
        assert phase in head
    # the message: where it stopped, which checkpoint is kept, the exact command to continue
    assert "interrupted after generation" in rest
    stopped = int(rest.split("interrupted after generation ")[1].split()[0])
    kept = int(rest.split("kept: the checkpoint of generation ")[1].split()[0])
    assert 2 <= kept <= stopped < 400
    assert str(out / "checkpoints") in rest
    command = rest.split("continue with:\n")[1].strip().splitlines()[0]
    assert command.startswith("jaxalign align ") and command.endswith("--resume")
    assert f"--out {out}" in command
    # partial results: the best prompt so far, marked partial
    results = json.loads((out / "results.json").read_text())
    assert results["partial"] is True and results["generations_done"] == stopped
    assert (out / "soft_prompt.safetensors").exists()
    best = results["history"]["best_loss"]
    assert len(best) == stopped + 1
    assert results["methods"]["optimized"]["loss"] == pytest.approx(best[-1], abs=1e-3)

    # resuming (budget lowered to a few more generations) announces where it starts; run in this
    # process through the console script's function (a second interpreter would only re-import jax)
    from jaxalign.cli import main

    resume = [*ARGS, "--generations", str(kept + 2), "--out", str(out), "--resume"]
    capsys.readouterr()
    code = main(resume)
    stderr = capsys.readouterr().err
    assert code == 0, stderr
    assert f"resuming from generation {kept} of {kept + 2}" in stderr
    done = [line for line in stderr.splitlines() if line.startswith("generation ")]
    assert done[0].startswith(f"generation {kept + 1}/") and done[-1].startswith(f"generation {kept + 2}/")
    final = json.loads((out / "results.json").read_text())
    assert "partial" not in final and len(final["history"]["best_loss"]) == kept + 3
    assert final["history"]["best_loss"][: kept + 1] == best[: kept + 1]


@pytest.mark.slow
def test_ctrl_c_while_compiling_says_how_to_go_on_and_the_resume_warns_like_the_cli(tmp_path, capsys,
                                                                                   monkeypatch):
    """A Ctrl-C before the first generation (here: in the compile) gives the command to run; that
    --resume finds no checkpoint and says so as a `jaxalign: warning:` line, not in Python
    logging's format. (In this process: the compile is replaced by the interrupt.)"""
    from jaxalign.cli import main
    from jaxalign.optimize import pipeline

    def interrupted_compile(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "loop_program", interrupted_compile)
    out = tmp_path / "run"
    argv = ["align", "--country", "China", "--population", "4", "--k", "2", "--subspace", "4",
            "--baselines", "none", "--no-progress", "--generations", "3", "--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first generation (while compiling the optimizer loop" in err, err
    assert "no checkpoint had been written yet" in err
    command = err.split("start it again with:\n")[1].strip().splitlines()[0]
    assert command.startswith("jaxalign align ") and command.endswith(f"--out {out} --resume")

    assert main([*argv, "--resume"]) == 130  # interrupted in the compile once more
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "holds no checkpoint" in line]
    assert len(warnings) == 1 and warnings[0].startswith("jaxalign: warning: "), err
    assert "WARNING:" not in err and "resume=True" not in err
    assert command in err  # the same command again


def test_an_interrupt_before_the_loop_of_a_resumed_run_names_the_kept_checkpoint():
    from jaxalign.api import RunInterrupted

    stop = RunInterrupted(-1, 6, 4, "/runs/x/checkpoints")
    stop.phase = "compiling the optimizer loop (scoring pass included)..."
    lines = stop.explain("jaxalign align --out /runs/x --resume").splitlines()
    assert lines == [
        "interrupted before the run went on from generation 4 (while compiling the optimizer loop "
        "(scoring pass included)).",
        "kept: the checkpoint of generation 4 in /runs/x/checkpoints",
        "continue with:",
        "  jaxalign align --out /runs/x --resume",
    ]
    api_side = RunInterrupted(-1, 6, None, "/runs/x/checkpoints").explain()
    assert api_side.splitlines()[-1] == "  the same align(...) call with resume=True"
    assert RunInterrupted(-1, 6, None, None).explain().splitlines()[-1].startswith("no checkpoint")


@pytest.mark.slow
def test_sigterm_keeps_results_says_how_to_resume_and_the_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    """A real SIGTERM (preemption, a batch scheduler) during `align` is handled as Ctrl-C: the
    checkpoint, partial results, the full command to continue (also from `jaxalign show`); that
    command, with the budget set, ends where an uninterrupted run of that budget ends."""
    from jaxalign.cli import main

    out = tmp_path / "run"
    argv = [*ARGS, "--generations", "400", "--out", str(out)]
    proc = _jaxalign(argv)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("generation 2/400"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode == 130, "".join(seen) + rest
    stopped = int(rest.split("interrupted after generation ")[1].split()[0])
    kept = int(rest.split("kept: the checkpoint of generation ")[1].split()[0])
    assert 2 <= kept <= stopped < 400
    command = rest.split("continue with:\n")[1].strip().splitlines()[0]
    assert command.startswith("jaxalign align ") and command.endswith("--resume") and f"--out {out}" in command
    partial = json.loads((out / "results.json").read_text())
    assert partial["partial"] is True and partial["generations_done"] == stopped

    # `show` on the interrupted run prints the full command, not "jaxalign align ... --resume"
    capsys.readouterr()
    assert main(["show", str(out), "--no-figures"]) == 0
    shown = capsys.readouterr().out
    assert f"continue it with: {command}" in shown and "align ... --resume" not in shown
    assert main(["show", str(out), "--no-figures", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resume_command"] == command
    (out / "results.json").rename(out / "partial.json")  # as if stopped before any results were written
    assert main(["show", str(out), "--no-figures"]) == 2
    assert f"continue it with: {command}" in capsys.readouterr().err
    (out / "partial.json").rename(out / "results.json")

    total = kept + 2
    assert main([*ARGS, "--generations", str(total), "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
    assert not (out / "resume_command.json").exists()   # the run is whole again
    straight = tmp_path / "straight"
    assert main([*ARGS, "--generations", str(total), "--out", str(straight)]) == 0, capsys.readouterr().err
    resumed, uninterrupted = (json.loads((d / "results.json").read_text()) for d in (out, straight))
    assert "partial" not in resumed
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["methods"] == uninterrupted["methods"]
    assert resumed["answers"] == uninterrupted["answers"]
    from jaxalign.softprompt import load_soft_prompt

    a, _ = load_soft_prompt(out / "soft_prompt.safetensors")
    b, _ = load_soft_prompt(straight / "soft_prompt.safetensors")
    np.testing.assert_array_equal(a, b)
