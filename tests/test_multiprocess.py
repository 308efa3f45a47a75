"""Two CPU processes under `accelerate launch` give the same losses as one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hyperfit.common.runs import read_json

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.skipif(
    shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
    reason="accelerate launcher not installed",
)
def test_two_processes_match_one(tmp_path):
    launcher = str(Path(sys.executable).parent / "accelerate")
    # Plain `--cpu --num_processes 2` silently starts ONE process on a machine without CUDA; --multi_gpu with
    # ACCELERATE_USE_CPU=1 starts two gloo processes. The world size is asserted below, not assumed.
    run(
        [
            launcher,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            "tests/mp_train.py",
            str(tmp_path / "two"),
        ]
    )
    run([sys.executable, "tests/mp_train.py", str(tmp_path / "one")])
    two, one = read_json(tmp_path / "two/result.json"), read_json(tmp_path / "one/result.json")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert (two["micro"], two["accumulation"]) == (2, 1) and (one["micro"], one["accumulation"]) == (4, 1)
    assert len(two["losses"]) == 4
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["weight_norm"] == pytest.approx(one["weight_norm"], rel=1e-5)
