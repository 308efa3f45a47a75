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


def launch_fsdp(out: Path, *extra: str) -> dict:
    done = launch_two_processes(
        ["tests/mp_train.py", str(out), *extra],
        cwd=ROOT,
        clean=None if extra else out,
        config_file=ROOT / "configs/accelerate/fsdp.yaml",
    )
    assert done.returncode == 0, launch_failure(done)
    return read_json(out / "result.json")


def assert_sharded_like_one(result: dict, one: dict) -> None:
    assert result["sharding"] == "fsdp" and result["world_size"] == 2
    for rank in result["shards"]:
        assert rank["all_dtensors"], rank
        assert rank["local_numel"] < 0.6 * rank["full_numel"], rank
    assert result["losses"] == pytest.approx(one["losses"], rel=1e-4)
    assert result["evals"] == pytest.approx(one["evals"], rel=1e-4)


@needs_launcher
def test_fsdp_shards_over_two_cpu_processes_and_matches_one(tmp_path, single):
    """configs/accelerate/fsdp.yaml on two gloo processes: every parameter becomes a DTensor and each process
    holds about half of the numbers; losses and evaluations (run by both processes) equal one process; the
    checkpoint is sharded; the gathered model is a safetensors file from_pretrained loads, equal to one process's."""
    one, one_dir = single
    out = tmp_path / "fsdp"
    result = launch_fsdp(out)
    assert_sharded_like_one(result, one)
    assert [r["evaluations"] for r in result["shards"]] == [[0, 1, 2], [0, 1, 2]]  # every process evaluates
    assert len(list((out / "checkpoints/last").rglob("*.distcp"))) >= 4  # model and optimizer, per process
    assert_same_weights(out, one_dir)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out / "model")
    assert type(loaded).__name__ == "LlamaForCausalLM"


@pytest.mark.slow
@needs_launcher
def test_fsdp_resumes_from_its_sharded_checkpoint(tmp_path, single):
    """Stopped after epoch 1 and resumed from the sharded checkpoint, the run equals an uninterrupted one."""
    one, one_dir = single
    out = tmp_path / "fsdp"
    launch_fsdp(out, "1")
    assert len(list((out / "checkpoints/last").rglob("*.distcp"))) >= 4
    result = launch_fsdp(out, "2")
    assert_sharded_like_one(result, one)
    assert [r["evaluations"] for r in result["shards"]] == [[2], [2]]
    assert_same_weights(out, one_dir)
