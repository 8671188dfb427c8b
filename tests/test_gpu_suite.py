"""``benchmarks/gpu_suite.sh`` stays runnable: every step with tiny shapes on the CPU
(``GPU_SUITE_SMALL=1``), so a lent GPU's minutes are not spent on a broken script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_suite_runs_every_step_with_tiny_shapes(tmp_path):
    env = {**os.environ, "GPU_SUITE_SMALL": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "log.txt").read_text()
    steps = ["throughput_8b.json", "de_8b.json", "throughput_100m.json", "de_100m_P.json", "de_tiny_K_100gen.json",
             "throughput_8b_modes.json", "de_8b_user_start.json", "de_8b_user_end.json"]
    for name in steps:
        assert f"=== {name}: exit 0 " in log, f"{name} failed:\n{log[-3000:]}"
        assert json.loads((tmp_path / name).read_text()), name  # each step wrote its JSON figures
    assert "=== done" in log
