"""Checkpoint replacement survives a kill at every moment: each state it can leave on disk is built here from real
checkpoints, and a resume from it must end with the weights of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperfit.common.config import TrainConfig
from hyperfit.common.runs import Run
from hyperfit.common.train import build_accelerator, train
from tests.conftest import make_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 97
IDS = torch.randint(3, VOCAB, (8, 16), generator=torch.Generator().manual_seed(1))


def fit(path: Path, *, epochs: int, resume: bool = False, seed: int = 0) -> dict:
    cfg = TrainConfig(lr=3e-3, epochs=epochs, batch_size=4, precision="fp32", eval_every_epochs=1)
    run = Run.open(path, resume=resume)
    return train(
        make_tiny_llama(VOCAB, seed=seed), IDS, cfg, accelerator=build_accelerator(cfg, cpu=True), run=run
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A run stopped after epoch 2 with its checkpoints of epoch 1 (step 2) and epoch 2 (step 4), and the weights
    of the same run trained for 3 epochs without interruption."""
    base = tmp_path_factory.mktemp("ckpt")
    fit(base / "run", epochs=1)
    shutil.copytree(base / "run/checkpoints/last", base / "epoch1")
    fit(base / "run", epochs=2, resume=True)
    shutil.copytree(base / "run/checkpoints/last", base / "epoch2")
    full = fit(base / "full", epochs=3)["model"]
    return base, {n: p.detach().clone() for n, p in full.named_parameters()}


def partial(source: Path, target: Path, *, keep_state: bool) -> None:
    """``source`` as a kill leaves it half written or half deleted: the model weights are gone."""
    shutil.copytree(source, target)
    for f in target.rglob("model*.safetensors"):
        f.unlink()
    if not keep_state:
        (target / "trainer_state.json").unlink()


# name: (last, last.tmp, last.old, step the resume must start from)
STATES = {
    "done": ("epoch2", None, None, 4),
    "killed while writing last.tmp": ("epoch2", "partial", None, 4),
    "killed before deleting last.old": ("epoch2", None, "epoch1", 4),
    "killed while deleting last.old": ("epoch2", None, "partial-old", 4),
    "killed between the two renames": (None, "epoch2", "epoch1", 4),
    "killed between the renames, last.tmp incomplete": (None, "partial", "epoch1", 2),
    "first checkpoint written, not renamed": (None, "epoch2", None, 4),
    "killed after writing last.tmp, before any rename": ("epoch1", "epoch2", None, 4),
    "first checkpoint half written": (None, "partial", None, 0),
}


@pytest.mark.parametrize("state", STATES)
def test_resume_recovers_from_every_checkpoint_state(checkpoints, tmp_path, state):
    base, full = checkpoints
    last, tmp, old, resumed_step = STATES[state]
    path = tmp_path / "run"
    path.mkdir()
    # The metrics the interrupted run had logged, tagged so that the ones a resume keeps can be counted.
    lines = [json.loads(line) for line in (base / "run/metrics.jsonl").read_text().splitlines()]
    (path / "metrics.jsonl").write_text("".join(json.dumps({**r, "tag": "old"}) + "\n" for r in lines))
    directory = path / "checkpoints"
    directory.mkdir()
    for name, content in (("last", last), ("last.tmp", tmp), ("last.old", old)):
        if content == "partial":
            partial(base / "epoch2", directory / name, keep_state=False)
        elif content == "partial-old":
            partial(base / "epoch1", directory / name, keep_state=True)
        elif content is not None:
            shutil.copytree(base / content, directory / name)

    resumed = fit(path, epochs=3, resume=True, seed=7 if resumed_step else 0)

    kept = [r["step"] for r in Run(path).metrics() if r["kind"] == "train" and r.get("tag") == "old"]
    assert kept == list(range(1, resumed_step + 1))
    assert [r["step"] for r in Run(path).metrics() if r["kind"] == "train"] == list(range(1, 7))
    for name, p in resumed["model"].named_parameters():
        assert torch.equal(p, full[name]), name
    assert sorted(p.name for p in directory.iterdir()) == ["last"]  # and the next save replaced it cleanly


KILLER = """
import os, shutil, signal, sys
from pathlib import Path
import torch
import hyperfit.common.train as train_module
from hyperfit.common.config import TrainConfig
from hyperfit.common.runs import Run
from tests.conftest import make_tiny_llama

path, moment = Path(sys.argv[1]), sys.argv[2]
rename = Path.rename
def kill_between_renames(self, target):
    rename(self, target)
    if self.name == "last" and Path(target).name == "last.old" and (path / "checkpoints/last.tmp").exists():
        state = (path / "checkpoints/last.tmp/trainer_state.json").read_text()
        if '"epoch": 2' in state:
            os.kill(os.getpid(), signal.SIGKILL)
def kill_while_deleting(target, *args, **kwargs):
    if Path(target).name == "last.old":
        next(Path(target).rglob("model*.safetensors")).unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return shutil.rmtree(target, *args, **kwargs)
if moment == "between-renames":
    Path.rename = kill_between_renames
else:
    train_module.shutil = type("S", (), {"rmtree": staticmethod(kill_while_deleting)})
cfg = TrainConfig(lr=3e-3, epochs=3, batch_size=4, precision="fp32", eval_every_epochs=1)
ids = torch.randint(3, 97, (8, 16), generator=torch.Generator().manual_seed(1))
train_module.train(make_tiny_llama(97), ids, cfg, accelerator=train_module.build_accelerator(cfg, cpu=True),
                   run=Run.open(path))
"""


@pytest.mark.parametrize(
    "moment",
    ["between-renames", pytest.param("while-deleting-last.old", marks=pytest.mark.slow)],  # also built above
)
def test_sigkill_during_checkpoint_replacement_then_resume_equals_an_uninterrupted_run(
    checkpoints, tmp_path, moment
):
    _, full = checkpoints
    path = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), moment],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert (path / "checkpoints/last.old").exists()  # the kill hit the replacement, as intended
    resumed = fit(path, epochs=3, resume=True, seed=7)
    for name, p in resumed["model"].named_parameters():
        assert torch.equal(p, full[name]), name
    assert [r["step"] for r in Run(path).metrics() if r["kind"] == "train"] == list(range(1, 7))
