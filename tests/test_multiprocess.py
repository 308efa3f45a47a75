"""Two CPU processes under `accelerate launch` give the same losses as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperfit.common.runs import read_json
from tests.conftest import launch_failure, launch_two_processes

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    not (Path(sys.executable).parent / "accelerate").exists(), reason="accelerate launcher not installed"
)
def test_two_processes_match_one(tmp_path):
    two_dir = tmp_path / "two"
    done = launch_two_processes(["tests/mp_train.py", str(two_dir)], cwd=ROOT, clean=two_dir)
    assert done.returncode == 0, launch_failure(done)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "tests/mp_train.py", str(tmp_path / "one")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two, one = read_json(two_dir / "result.json"), read_json(tmp_path / "one/result.json")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert (two["micro"], two["accumulation"]) == (2, 1) and (one["micro"], one["accumulation"]) == (4, 1)
    assert len(two["losses"]) == 4
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["weight_norm"] == pytest.approx(one["weight_norm"], rel=1e-5)
