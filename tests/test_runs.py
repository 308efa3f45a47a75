"""Run directories under a hostile-but-fair user: two processes, a replaced run, a crash mid-replacement, changed
settings on resume, file modes. Each test builds the situation for real (processes, files) and checks the disk."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperfit.common.runs import HyperfitError, Run, read_json, undo_unstarted_runs, write_json

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from hyperfit.common.runs import Run; run = Run.open(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _finished_run(path: Path, marker: str) -> None:
    run = Run.open(path)
    write_json(path / "config.json", {"lr": 1.0, "marker": marker})
    write_json(path / "summary.json", {"marker": marker})
    run.log({"kind": "train", "step": 1, "loss": 1.0})


def test_a_second_process_is_refused_with_the_holder_named(tmp_path):
    run = Run.open(tmp_path / "run")
    opener = "import sys; from hyperfit.common.runs import Run, HyperfitError\ntry:\n    Run.open(sys.argv[1], resume=True)\nexcept HyperfitError as e:\n    print(e)\n    sys.exit(2)"
    other = _python(opener, str(tmp_path / "run"))
    out, err = other.communicate(timeout=60)
    assert other.returncode == 2, err
    assert f"is in use by process {os.getpid()}" in out and "choose another --out" in out
    # This process may reopen its own run (a test, an experiment's variants) ...
    assert Run.open(tmp_path / "run", resume=True).path == run.path
    # ... and once it lets go, the other process gets it.
    del run
    gc.collect()
    other = _python(opener, str(tmp_path / "run"))
    assert other.wait(timeout=60) == 0, other.stderr.read()


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = _python(HOLD, str(tmp_path / "run"))
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(HyperfitError, match=f"in use by process {holder.pid}"):
        Run.open(tmp_path / "run", resume=True)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (
        Run.open(tmp_path / "run", resume=True).path == tmp_path / "run"
    )  # the stale .lock file is no obstacle


def test_overwrite_keeps_the_old_run_until_the_new_one_has_started(tmp_path):
    path = tmp_path / "run"
    _finished_run(path, "old")
    new = Run.open(path, overwrite=True)
    assert not (path / "summary.json").exists()  # the new run starts empty ...
    assert read_json(new.replaced / "summary.json")["marker"] == "old"  # ... the old one waits beside it
    assert undo_unstarted_runs() == [path]  # the new run failed before its config.json: the old one is back
    assert read_json(path / "summary.json")["marker"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]

    new = Run.open(path, overwrite=True)
    new.write_config({"lr": 2.0})  # the new run has started: the old one is deleted
    assert read_json(path / "config.json")["lr"] == 2.0
    assert not (path / "summary.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_an_overwrite_killed_before_the_new_run_started_is_undone_by_the_next_open(tmp_path):
    path = tmp_path / "run"
    _finished_run(path, "old")
    killed = _python(
        "import os, signal, sys; from hyperfit.common.runs import Run\n"
        "run = Run.open(sys.argv[1], overwrite=True)\n"
        "(run.path / 'data.pt').write_text('half-built')\n"
        "os.kill(os.getpid(), signal.SIGKILL)",
        str(path),
    )
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (path / "summary.json").exists() and len(list(tmp_path.glob(".run.replaced-*"))) == 1
    run = Run.open(path, resume=True)
    assert run.is_finished and read_json(path / "summary.json")["marker"] == "old"
    assert not (path / "data.pt").exists() and list(tmp_path.glob(".run.replaced-*")) == []


def _started_run(path: Path, **config) -> None:
    Run.open(path)
    write_json(path / "config.json", {"lr": 1e-3, "epochs": 2, "n_train": 8, "out": str(path), **config})


def test_resume_refuses_changed_settings_and_records_allowed_ones(tmp_path):
    path = tmp_path / "run"
    _started_run(path)
    wanted = {"lr": 1e-3, "epochs": 2, "n_train": 8, "out": "elsewhere"}  # --out itself may differ
    Run.open(path, resume=True, config=wanted)
    with pytest.raises(HyperfitError, match=r"epochs 2 → 4\); pass --allow_changes epochs"):
        Run.open(path, resume=True, config={**wanted, "epochs": 4})
    with pytest.raises(HyperfitError, match=r"n_train 8 → 6\); these cannot change"):
        Run.open(path, resume=True, config={**wanted, "n_train": 6}, allow_changes="epochs")
    with pytest.raises(
        HyperfitError, match="--allow_changes names n_train, which a resumed run cannot change"
    ):
        Run.open(path, resume=True, config=wanted, allow_changes="n_train")
    Run.open(path, resume=True, config={**wanted, "epochs": 4, "lr": 1e-4}, allow_changes="epochs,lr")
    config = read_json(path / "config.json")
    assert config["epochs"] == 4 and config["lr"] == 1e-4
    assert config["changes_on_resume"][0]["changed"] == {"epochs": [2, 4], "lr": [1e-3, 1e-4]}
    Run.open(path, resume=True, config={**wanted, "epochs": 4, "lr": 1e-4})  # now the recorded values


def test_resume_refuses_another_command(tmp_path):
    path = tmp_path / "run"
    _started_run(path, text_field="text")  # a fit-text run written before config.json named its command
    with pytest.raises(HyperfitError, match="holds a run of `hyperfit fit-text`, not `hyperfit fit-image`"):
        Run.open(path, resume=True, command="fit-image")


def test_atomic_writes_keep_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        Run(tmp_path).write_jsonl("b.jsonl", [{"x": 1}])
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.jsonl").stat().st_mode & 0o777 == 0o644


def test_wall_time_counts_every_process_that_worked_on_the_run(tmp_path):
    path = tmp_path / "run"
    worker = _python(
        "import sys, time; from hyperfit.common.runs import Run\n"
        "run = Run.open(sys.argv[1]); time.sleep(1.5); run.log({'kind': 'train', 'step': 1})",
        str(path),
    )
    assert worker.wait(timeout=60) == 0, worker.stderr.read()
    started = time.time()
    run = Run.open(path, resume=True)
    time.sleep(0.2)
    assert run.wall_seconds() >= 1.5 + 0.2
    assert run.wall_seconds() < 1.5 + (time.time() - started) + 30  # the other process's time, not the gap
    assert json.loads((path / ".lock").read_text())["earlier_seconds"] >= 1.5


def test_an_unwritable_out_is_one_sentence(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        HyperfitError, match=r"cannot write .*file/run \(Not a directory\); fix the permissions"
    ):
        Run.open(tmp_path / "file" / "run")
