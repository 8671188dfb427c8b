"""Several processes (``jax.distributed``) on this CPU: two processes x 2 simulated devices each.

Each run below is the real ``jaxalign align`` command (:func:`jaxalign.cli.main`) in fresh Python
processes that find each other through ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID`` (read by :func:`jaxalign.parallel.initialize_distributed`), with CPU
collectives over gloo (jax's default). All processes share one ``--out`` folder, as the hosts of
a pod share a file system.

* ``part`` then ``resumed``: 2 processes x 2 devices, 2 generations into a folder (progress on),
  then 2 processes again with ``--resume`` up to 4 generations, from the orbax checkpoint the
  first pair wrote;
* ``one``: the same command, uninterrupted, 4 generations, run in this test process on its one
  device (the reference; a multi-device mesh in one process is tested in tests/test_sharding.py).

The resumed two-process result must equal the uninterrupted one-device result: one comparison
covers both "two processes compute what one does" and "a two-process checkpoint resumes exactly".
(Until 2026-12-02 the reference was a third launch, 1 process x 4 devices, and before that a
fourth, an uninterrupted two-process run; dropped to shorten the suite: neither could show a
failure that this comparison cannot.)

To keep the module short, every run scores no baselines (``--baselines none``; a separate compile
each, irrelevant here), the children spy on :meth:`jaxalign.AlignResult.save` (a line on stderr
says which process wrote the result files) and share the suite's persistent compilation cache.
Tolerance: losses, dims and the prompt within 1e-5 relative of the reference (measured on
2026-12-02: the final loss, dims, answers and prompt equal to the last bit; the best-so-far
history within 2e-5 absolute on losses of ~40, i.e. 5e-7 relative: one device scores all 8
members in one batch, each of the 4 devices 2).

If the first two-process run fails and two jax processes cannot talk on this machine at all (a
probe with no jaxalign in it, run only then, fails too), the tests are skipped with the probe's
error; any other failure fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
TIMEOUT_S = 600  # per launch; a loaded 2-core machine compiles slowly

# jax alone (no jaxalign): can two processes on this machine run one computation together?
PROBE = textwrap.dedent(r"""
    import os, jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    jax.distributed.initialize(num_processes=2, process_id=int(os.environ["JAX_PROCESS_ID"]))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jax.make_array_from_callback((4,), NamedSharding(mesh, P("data")), lambda i: np.arange(4.0)[i])
    total = jax.jit(lambda v: v.sum(), out_shardings=NamedSharding(mesh, P()))(x)
    print("PROBE", jax.process_count(), len(jax.devices()), float(total))
    """)

# Runs `jaxalign align` through jaxalign.cli.main. Its patches go in once the CLI has started
# jax.distributed and imported jaxalign.api (the first call of common._load), so the CLI's own order
# of start-up is what runs here.
CHILD = textwrap.dedent(r"""
    import sys
    from jaxalign import cli
    from jaxalign.cli import common

    original_load = common._load

    def load_and_patch(*args, **kwargs):
        import jax
        import jaxalign.api as api

        original_save = api.AlignResult.save

        def spy_save(self, out):
            print(f"SAVE by process {jax.process_index()}", file=sys.stderr, flush=True)
            return original_save(self, out)

        api.AlignResult.save = spy_save
        return original_load(*args, **kwargs)

    common._load = load_and_patch
    sys.exit(cli.main(sys.argv[1:]))
    """)

ALIGN = ["align", "--model", "tiny-random", "--country", "China", "--population", "8", "-k", "2",
         "--subspace", "8", "--chunk-size", "2", "--seed", "3", "--baselines", "none"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def base_env(devices: int, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "TPU_", "SLURM_", "OMPI_", "MEGASCALE_")) and k != "COORDINATOR_ADDRESS"}
    env.update(
        XLA_FLAGS=(env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip(),
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return env


def launch(argv: list[str], *, processes: int, devices: int, cache: Path) -> list[dict[str, str]]:
    """Runs ``python <argv>`` as ``processes`` processes of one jax.distributed job; their outputs."""
    env = base_env(devices, cache)
    if processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{free_port()}", JAX_NUM_PROCESSES=str(processes))
    procs = [subprocess.Popen([sys.executable, *argv], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              env={**env, "JAX_PROCESS_ID": str(i)} if processes > 1 else env)
             for i in range(processes)]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
            outputs.append({"rc": proc.returncode, "stdout": stdout, "stderr": stderr})
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


def check_ok(outputs: list[dict[str, str]], what: str) -> None:
    for i, out in enumerate(outputs):
        # the Python frames first (a crash's C++ log after them can be long), then the tail
        frames = [ln for ln in out["stderr"].splitlines() if ln.lstrip().startswith(('File "', "jax.errors"))]
        assert out["rc"] == 0, (f"{what}: process {i} exited {out['rc']}:\n" + "\n".join(frames[-30:])
                                + "\n...\n" + out["stderr"][-3000:])


def _skip_unless_jax_distributed_works(cache: Path) -> None:
    """Called when a two-process run failed: skips the module if the probe (jax alone) fails too."""
    probe = launch(["-c", PROBE], processes=2, devices=2, cache=cache)
    if any(o["rc"] != 0 or "PROBE 2 4 6.0" not in o["stdout"] for o in probe):
        error = next(o for o in probe if o["rc"] != 0 or "PROBE" not in o["stdout"])
        pytest.skip("jax.distributed with CPU collectives does not work here: "
                    + (error["stderr"].strip().splitlines() or ["(no error text)"])[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("multiprocess")
    # the suite's persistent cache (tests/conftest.py), else one of this module's own
    cache = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or tmp / "jax_cache")
    child = ["-c", CHILD]
    out = {"dirs": {name: tmp / name for name in ("one", "resumable")}}
    resumable = tmp / "resumable"
    out["part"] = launch(child + ALIGN + ["--generations", "2", "--out", str(resumable)],
                         processes=2, devices=2, cache=cache)
    if any(o["rc"] != 0 for o in out["part"]):
        _skip_unless_jax_distributed_works(cache)
    check_ok(out["part"], "2 processes, first 2 generations")
    out["steps_after_part"] = sorted(int(p.name) for p in (resumable / "checkpoints").iterdir()
                                     if p.name.isdigit())
    out["resumed"] = launch(child + ALIGN + ["--generations", "4", "--resume", "--no-progress",
                                             "--out", str(resumable)],
                            processes=2, devices=2, cache=cache)
    check_ok(out["resumed"], "2 processes, resumed")
    from jaxalign.cli import main  # the reference: the same command in this process, one device

    assert main(ALIGN + ["--generations", "4", "--no-progress", "--out", str(out["dirs"]["one"])]) == 0
    for name in ("one", "resumable"):
        out[name + "_json"] = json.loads((out["dirs"][name] / "results.json").read_text())
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL * max(1.0, abs(a))


def _assert_same_result(got: dict, want: dict) -> None:
    g, w = got["methods"]["optimized"], want["methods"]["optimized"]
    assert _close(g["loss"], w["loss"]), (g["loss"], w["loss"])
    for dim in w["dims"]:
        assert _close(g["dims"][dim], w["dims"][dim]), (dim, g["dims"][dim], w["dims"][dim])
    assert len(got["history"]["best_loss"]) == len(want["history"]["best_loss"]) == 5
    for a, b in zip(got["history"]["best_loss"], want["history"]["best_loss"]):
        assert _close(a, b), (got["history"]["best_loss"], want["history"]["best_loss"])
    assert np.allclose(got["answers"], want["answers"], rtol=0, atol=TOL)


def _prompt(folder: Path) -> np.ndarray:
    from jaxalign.softprompt import load_soft_prompt

    return load_soft_prompt(folder / "soft_prompt.safetensors")[0]


@pytest.mark.slow
def test_runs_really_used_two_processes(runs):
    # the mesh line is a diagnostic: stderr, so that stdout stays the result
    for launched in ("part", "resumed"):
        assert "mesh data=4,model=1 (4 cpu devices, 2 processes)" in runs[launched][0]["stderr"]


@pytest.mark.slow
def test_only_process_zero_writes_and_prints(runs):
    zero, other = runs["part"]
    # result files: written once, by process 0
    assert "SAVE by process 0" in zero["stderr"]
    assert "SAVE by process" not in other["stderr"]
    for name in ("results.json", "soft_prompt.safetensors", "dims.png"):
        assert (runs["dirs"]["resumable"] / name).is_file(), name
    # stdout: the results table on process 0 only
    for line in ("target China; model tiny-random", "aligned ", "wall "):
        assert line in zero["stdout"], line
        assert line not in other["stdout"], (line, other["stdout"])
    # stderr: the mesh line, the phase lines and the progress (plain lines: no terminal) on
    # process 0 only
    for line in ("mesh data=4", "loading weights", "generation 2/2: best loss"):
        assert line in zero["stderr"], (line, zero["stderr"][-2000:])
        assert line not in other["stderr"], (line, other["stderr"][-2000:])
    zero, other = runs["resumed"]
    assert "SAVE by process 0" in zero["stderr"] and "SAVE by process" not in other["stderr"]


@pytest.mark.slow
def test_two_processes_resumed_give_the_one_process_result(runs):
    one, resumed = runs["one_json"], runs["resumable_json"]
    history = one["history"]["best_loss"]
    assert history[-1] < history[0]  # the run did something
    assert runs["steps_after_part"] == [2]  # the first pair stopped after generation 2
    assert resumed["resumed_from"] == 2 and one["resumed_from"] is None
    _assert_same_result(resumed, one)
    assert np.allclose(_prompt(runs["dirs"]["resumable"]), _prompt(runs["dirs"]["one"]), rtol=TOL, atol=TOL)


# -- cheap checks in this process ---------------------------------------------------------------

def test_process_settings_from_the_environment(monkeypatch):
    from jaxalign import parallel

    for name in (*parallel._CLUSTER_ENV, "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert parallel._process_settings_from_env() == {}
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert parallel._process_settings_from_env() == {"num_processes": 4, "process_id": 3}
    assert parallel.launched_on_several_hosts()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert not parallel.launched_on_several_hosts()
    monkeypatch.setenv("JAX_PROCESS_ID", "first")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='first' is not a non-negative integer"):
        parallel._process_settings_from_env()


def test_cli_prints_on_process_zero_only(monkeypatch, capsys):
    import jax

    from jaxalign.cli import main

    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert main(["countries", "Japan"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert main(["countries", "Japan"]) == 0
    assert "Japan" in capsys.readouterr().out
