"""Several CPU processes under `accelerate launch` give the same training as one process with the same global
batch: plain DDP, and FSDP2 through the shipped configs/accelerate/fsdp.yaml, which really shards here (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperfit.common.runs import read_json
from tests.conftest import launch_failure, launch_two_processes

ROOT = Path(__file__).resolve().parents[1]
needs_launcher = pytest.mark.skipif(
    not (Path(sys.executable).parent / "accelerate").exists(), reason="accelerate launcher not installed"
)


def one_process(out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "tests/mp_train.py", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return read_json(out / "result.json")


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("one") / "run"
    return one_process(out), out


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-6, msg=name)


@needs_launcher
def test_two_processes_match_one(tmp_path, single):
    one, one_dir = single
    two_dir = tmp_path / "two"
    done = launch_two_processes(["tests/mp_train.py", str(two_dir)], cwd=ROOT, clean=two_dir)
    assert done.returncode == 0, launch_failure(done)
    two = read_json(two_dir / "result.json")
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["sharding"] == "none"
    assert (two["micro"], two["accumulation"]) == (2, 1) and (one["micro"], one["accumulation"]) == (4, 1)
    assert len(two["losses"]) == 4
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert [r["evaluations"] for r in two["shards"]] == [[0, 1, 2], []]  # DDP: the main process evaluates
    assert_same_weights(two_dir, one_dir)


@needs_launcher
def test_fsdp_shards_over_two_cpu_processes_and_matches_one(tmp_path, single):
    """configs/accelerate/fsdp.yaml on two gloo processes: every parameter becomes a DTensor and each process
    holds about half of the numbers; losses, evaluations (run by both processes) and the gathered safetensors
    model equal one process; the sharded checkpoint resumes to the same result."""
    one, one_dir = single
    out = tmp_path / "fsdp"
    config = ROOT / "configs/accelerate/fsdp.yaml"
    done = launch_two_processes(["tests/mp_train.py", str(out), "1"], cwd=ROOT, clean=out, config_file=config)
    assert done.returncode == 0, launch_failure(done)
    # The first epoch's checkpoint is sharded: one file per process.
    shards = sorted(p.name for p in (out / "checkpoints/last").rglob("*.distcp"))
    assert len(shards) >= 2, sorted(p.name for p in (out / "checkpoints/last").rglob("*"))
    done = launch_two_processes(["tests/mp_train.py", str(out), "2"], cwd=ROOT, config_file=config)
    assert done.returncode == 0, launch_failure(done)
    result = read_json(out / "result.json")
    assert result["sharding"] == "fsdp" and result["world_size"] == 2
    for rank in result["shards"]:
        assert rank["all_dtensors"], rank
        assert rank["local_numel"] < 0.6 * rank["full_numel"], rank
    assert result["losses"] == pytest.approx(one["losses"], rel=1e-4)
    assert result["evals"] == pytest.approx(one["evals"], rel=1e-4)
    assert [r["evaluations"] for r in result["shards"]] == [[2], [2]]  # sharded: every process evaluates
    assert_same_weights(out, one_dir)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out / "model")
    assert type(loaded).__name__ == "LlamaForCausalLM"
