"""The GPU benchmarks run rarely (only where a GPU is lent): their --quick modes keep them from rotting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_own_model_bench_runs_quick_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "own_model.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(BENCH / "own_model.py"), "--quick", "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["ms_per_trial_epoch"]) == {"plain torch loop, 1 model", "lrfind engine, K=1",
                                                 "lrfind engine, K=2"}
    assert all(ms > 0 for ms in result["ms_per_trial_epoch"].values()) and result["device"] == "cpu"
