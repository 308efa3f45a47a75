"""Run directories: every run describes itself (config, data manifest, metrics.jsonl, checkpoints, summary).

Files are written atomically (temporary file, then ``os.replace``) so an interrupted run never leaves a
half-written result, and a finished run is never overwritten unless the caller asks for it. A run directory is
locked by the one process that writes it; ``--overwrite`` keeps the old run aside until the new one has started;
``--resume`` refuses a configuration that differs from the recorded one unless the change is allowed and safe.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # runs.py stays free of torch at import time: report and config import it
    import torch

FINISHED_MARKER = "summary.json"
STARTED_MARKER = "config.json"  # written once the data and the configuration are known: the run has started
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints/last"  # the trainer's resumable state (hyperfit.common.train)
# Settings a resumed run may change when ``--allow_changes`` names them: how long and with which step size it
# trains, how often it evaluates, checkpoints and logs, memory layout, and what is decoded once training is over.
# Never the data, the model, the batch, the seed, the optimizer or what each evaluation measures: those would make
# the before and after columns of one report come from two different experiments.
MAY_CHANGE_ON_RESUME = frozenset(
    {
        "epochs",
        "stop_loss",
        "lr",
        "warmup_steps",
        "max_grad_norm",
        "precision",
        "eval_every_epochs",
        "eval_every_steps",
        "log_every_steps",
        "checkpoint_every_epochs",
        "gradient_checkpointing",
        "micro_batch_size",
        "num_processes",
        "eval_batch_size",
        "samples_shown",
        "strategies",
        "blocker_n",
        "word_finish",
        "save_model",
    }
)
# How to open a run and where else its metrics go, not what it is.
RUN_CONTROL = ("out", "overwrite", "resume", "allow_changes", "report_to")


class HyperfitError(RuntimeError):
    """A user-facing error: its message is one sentence naming the input and the fix."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says where it stopped and how to continue."""


def write_failure(path: str | Path, err: OSError) -> HyperfitError:
    """One sentence for a failed write: a full disk or a directory that cannot be written."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return HyperfitError(
            f"no space left on the device of {path} ({err.strerror}); free some space or choose another --out, "
            "then rerun the same command (with --resume, a training run continues from its last checkpoint)."
        )
    return HyperfitError(
        f"cannot write {path} ({err.strerror or err}); fix the permissions or choose another --out."
    )


def interrupted_message(out: str | Path | None) -> str:
    """One sentence for Ctrl-C: where the run in ``out`` stopped and how to continue it."""
    if out is None or not Path(out).is_dir():
        return "interrupted before the run started; nothing was written, rerun the same command to start it."
    out = Path(out)
    if (out / "experiment.json").exists():
        return f"interrupted; rerun the same command with --resume to continue {out} (finished variants are kept)."
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r.get("kind") == "train"]
    at = f" at step {steps[-1]}" if steps else ""
    state = out / CHECKPOINT_DIR / "trainer_state.json"
    if state.exists():
        saved = read_json(state)
        where = f"the checkpoint at step {saved['step']} (epoch {saved['epoch']})"
    else:
        where = "the beginning (no checkpoint was saved yet)"
    return f"interrupted{at}; rerun the same command with --resume to continue {out} from {where}."


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _jsonable(value: Any) -> Any:
    """Turn paths, tuples, tensors and non-finite floats into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable instead of invalid
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return value


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_failure(path, err) from err
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the user's usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            _write(f, text)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_failure(path, err) from err
        raise


def _write(f, text: str) -> None:
    """The one place result text reaches the disk (a test makes it fail as a full disk would)."""
    f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sha256_ids(ids: torch.Tensor) -> str:
    """sha256 of the ids as int64 bytes: the manifest's fingerprint of the exact ids a run trains on."""
    return hashlib.sha256(ids.long().numpy().tobytes()).hexdigest()  # .long() is .to(torch.int64)


def fingerprint_files(
    path: str | Path, *, patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
) -> str:
    """A cheap identity of the weight files at ``path`` (a file or a directory, ``checkpoints/`` skipped): sha256
    over each file's name, size and first and last MiB. Two checkpoints of one shape but other weights differ in
    it; a copied or re-downloaded model does not (a modification time would)."""
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(
            f
            for pattern in patterns
            for f in path.rglob(pattern)
            if f.is_file() and "checkpoints" not in f.parts
        )
    )
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if file != path else file.name}:{size}:".encode())
        with open(file, "rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                digest.update(f.read(1 << 20))
    return digest.hexdigest()


def config_changes(saved: dict, wanted: dict) -> dict[str, tuple[Any, Any]]:
    """``{field: (recorded, wanted)}`` for every field both configurations name and that differs (run control
    such as --out or --resume excluded)."""
    wanted = _jsonable(wanted)
    return {
        key: (saved[key], value)
        for key, value in wanted.items()
        if key in saved and key not in RUN_CONTROL and saved[key] != value
    }


def _describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in changes.items())


def _recorded_command(path: Path) -> str | None:
    """Which command made the run at ``path`` (recorded in config.json, or recognised by its fields)."""
    if (path / "experiment.json").exists():
        return f"experiment {read_json(path / 'experiment.json').get('experiment')}"
    if not (path / STARTED_MARKER).exists():
        return None
    config = read_json(path / STARTED_MARKER)
    if "command" in config:
        return config["command"]
    for command, field in (("fit-image", "prior"), ("pretrain-image", "photos"), ("eval", "models")):
        if field in config:
            return command
    return "fit-text" if "text_field" in config else None


class _RunLock:
    """An exclusive ``flock`` on ``<run>/.lock`` held by this process for as long as it uses the run.

    The operating system releases it when the process ends, even on SIGKILL, so a stale file never blocks a
    later run. The file says who holds it (pid, host, command, start) and how many seconds earlier processes
    spent on the run, so a resumed run's wall time counts every process.
    """

    def __init__(self, path: Path):
        self.file = path / LOCK_FILE
        try:
            self.fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise write_failure(path, err) from err
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read()
            os.close(self.fd)
            raise HyperfitError(
                f"{path} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                f"(`{holder.get('command', '?')}`, started {holder.get('started_at', '?')}); wait for it to "
                "finish or stop it, or choose another --out."
            ) from None
        previous = self._read()
        now = time.time()
        self.earlier_seconds = float(previous.get("earlier_seconds", 0.0)) + max(
            0.0, float(previous.get("alive", now)) - float(previous.get("started", now))
        )
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]) if sys.argv else "python",
            "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "started": now,
            "alive": now,
            "earlier_seconds": self.earlier_seconds,
        }
        self._store()
        self._finalizer = weakref.finalize(self, _RunLock._close, self.fd, self.info, self.file)

    def _read(self) -> dict:
        try:
            data = os.pread(self.fd, 1 << 16, 0)
            return json.loads(data) if data.strip() else {}
        except (OSError, ValueError):
            return {}

    def _store(self) -> None:
        data = json.dumps(self.info).encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError:
            pass  # the lock itself holds; only the wall-time bookkeeping is lost on a full disk

    def heartbeat(self, *, every: float = 5.0) -> None:
        """Note that the run is still being worked on (at most every ``every`` seconds)."""
        now = time.time()
        if now - self.info["alive"] >= every:
            self.info["alive"] = now
            self._store()

    @property
    def wall_seconds(self) -> float:
        return self.earlier_seconds + time.time() - self.info["started"]

    @staticmethod
    def _close(fd: int, info: dict, file: Path) -> None:
        info["alive"] = time.time()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass
        os.close(fd)

    def release(self) -> None:
        self._finalizer()


# Locks this process holds, by directory: a process may reopen its own run (a test, an experiment's variants).
_LOCKS: weakref.WeakValueDictionary[str, _RunLock] = weakref.WeakValueDictionary()
# Runs this process created or replaced that have not started yet: undone if the command fails. Weak, so that a
# run nobody uses any more releases its lock.
_UNSTARTED: weakref.WeakValueDictionary[str, Run] = weakref.WeakValueDictionary()


def _lock(path: Path) -> _RunLock:
    key = str(path.resolve())
    held = _LOCKS.get(key)
    if held is None or not held.file.exists():
        held = _LOCKS[key] = _RunLock(path)
    return held


def _aside_dirs(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.replaced-*"))


def _has_started(path: Path) -> bool:
    """A run has started once its configuration is written or it has logged a metric."""
    return (path / STARTED_MARKER).exists() or (path / "metrics.jsonl").exists()


def undo_unstarted_runs() -> list[Path]:
    """After a failed command: put back every run an ``--overwrite`` of this process moved aside, and remove every
    directory this process created, for runs that never started. So a failed command loses nothing and leaves
    nothing half-written behind. Returns the directories restored or removed."""
    undone = []
    for key, run in list(_UNSTARTED.items()):
        _UNSTARTED.pop(key, None)
        if _has_started(run.path):
            run.commit()
            continue
        if run.replaced is not None and run.replaced.exists():
            shutil.rmtree(run.path, ignore_errors=True)
            run.replaced.rename(run.path)
            run.replaced = None
            if run._replaced_lock is not None:
                _LOCKS[key] = run._lock = run._replaced_lock
                run._replaced_lock = None
            undone.append(run.path)
        elif run.created:
            shutil.rmtree(run.path, ignore_errors=True)
            undone.append(run.path)
    return undone


class Run:
    """A run directory. Only the main process should write (pass ``writer=False`` elsewhere)."""

    def __init__(self, path: str | Path, *, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self.command: str | None = None
        self.replaced: Path | None = None  # the older run an --overwrite keeps aside until this one starts
        self._lock: _RunLock | None = None
        self._replaced_lock: _RunLock | None = None
        self.created = False  # this process made the directory
        self._opened = time.time()
        # Also given every logged record (experiment trackers); metrics.jsonl stays the record.
        self.mirror: Callable[[dict], Any] | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        overwrite: bool = False,
        resume: bool = False,
        writer: bool = True,
        barrier: Callable[[], None] = lambda: None,
        command: str | None = None,
        config: dict | None = None,
        allow_changes: str = "",
        may_change: Collection[str] = MAY_CHANGE_ON_RESUME,
        resumable: bool = True,
    ) -> Run:
        """Create or reopen a run directory, refusing to clobber earlier results.

        - missing or empty directory: created;
        - finished run (has ``summary.json``): refused unless ``overwrite`` (replaced) or ``resume`` (reopened:
          the caller sees ``is_finished`` and can skip straight to reporting);
        - unfinished run: refused unless ``resume`` (continue from its last checkpoint) or ``overwrite``.

        The writer locks the directory for as long as this process uses it (a second process is refused with one
        sentence naming the holder). ``overwrite`` moves the older run aside to ``.<name>.replaced-<time>`` and
        deletes it only once the new run has started (:meth:`write_config`); a process that fails before that
        puts it back, and so does the next ``open`` after a crash. ``resume`` compares ``config`` with the
        recorded ``config.json`` and refuses any difference unless ``allow_changes`` (comma list) names it and it
        is in ``may_change``; accepted changes are written into ``config.json`` with their history. A
        ``command`` other than the one that made the run is refused. ``resumable=False`` is for commands that
        cannot continue a run (their refusal does not suggest ``--resume``).

        With several processes every one checks first, then ``barrier()``, then only the writer changes the disk,
        so no process can see a directory half made by another.
        """
        path = Path(path)
        if overwrite and resume:
            raise HyperfitError("--overwrite and --resume contradict each other; pass only one of them.")
        if path.exists() and not path.is_dir():
            raise HyperfitError(f"run directory {path} is a file; choose another --out.")
        allowed = [name.strip() for name in allow_changes.split(",") if name.strip()]
        unsafe = sorted(set(allowed) - set(may_change))
        if unsafe:
            raise HyperfitError(
                f"--allow_changes names {', '.join(unsafe)}, which a resumed run cannot change (they would mix two "
                f"experiments in one run); allow only {', '.join(sorted(may_change))}, or start a new run."
            )
        run = cls(path, writer=writer)
        run.command = command
        if writer:
            if not path.exists():
                try:
                    path.mkdir(parents=True)
                    run.created = True
                except FileExistsError:
                    pass  # another process made it first: the lock below decides who uses it
                except OSError as err:
                    raise write_failure(path, err) from err
            run._lock = _lock(path)
            _recover_overwrite(path)
            if run.created:
                _UNSTARTED[str(path.resolve())] = run
        exists = _holds_run(path)
        finished = (path / FINISHED_MARKER).exists()
        if exists and not (overwrite or resume):
            state = "a finished run" if finished else "an unfinished run"
            fix = (
                "pass --resume to continue it, --overwrite to replace it"
                if resumable
                else "pass --overwrite to replace it"
            )
            raise HyperfitError(f"{path} already holds {state}; {fix}, or choose another --out.")
        if exists and resume:
            recorded = _recorded_command(path)
            if command and recorded and recorded != command:
                raise HyperfitError(
                    f"{path} holds a run of `hyperfit {recorded}`, not `hyperfit {command}`; resume it with "
                    f"`hyperfit {recorded} --resume`, or choose another --out."
                )
            if config is not None and (path / STARTED_MARKER).exists():
                run._check_resume(config, allowed=allowed, finished=finished)
        barrier()
        if writer and exists and overwrite:
            run._move_aside()
        barrier()
        return run

    def _check_resume(self, config: dict, *, allowed: list[str], finished: bool) -> None:
        saved = read_json(self.path / STARTED_MARKER)
        changes = config_changes(saved, config)
        if not changes:
            return
        if finished:
            raise HyperfitError(
                f"{self.path} is a finished run made with other settings ({_describe_changes(changes)}); --resume "
                "only re-reports it: drop the changed flags, or choose another --out for a new run."
            )
        refused = {k: v for k, v in changes.items() if k not in allowed}
        if refused:
            safe = [k for k in refused if k in MAY_CHANGE_ON_RESUME]
            hint = (
                f"pass --allow_changes {','.join(safe)} to continue with them"
                if len(safe) == len(refused)
                else "these cannot change in a resumed run: restore the recorded values, or start a new run with "
                "another --out or --overwrite"
            )
            raise HyperfitError(
                f"--resume of {self.path} with settings that differ from its config.json "
                f"({_describe_changes(refused)}); {hint}."
            )
        if self.writer:
            history = saved.get("changes_on_resume", [])
            history.append(
                {
                    "at": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "changed": {k: list(v) for k, v in changes.items()},
                }
            )
            write_json(
                self.path / STARTED_MARKER,
                {**saved, **{k: new for k, (_, new) in changes.items()}, "changes_on_resume": history},
            )

    def _move_aside(self) -> None:
        """Move the older run to a hidden sibling and start an empty directory under the same name."""
        aside = self.path.with_name(
            f".{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        )
        self._replaced_lock = self._lock
        self.path.rename(aside)
        self.replaced = aside
        self.path.mkdir()
        key = str(self.path.resolve())
        _LOCKS.pop(key, None)
        self._lock = _lock(self.path)
        _UNSTARTED[key] = self

    def write_config(self, config: dict) -> None:
        """Write ``config.json`` (with the command that made the run): from here on the run has started, so the
        older run an ``--overwrite`` kept aside is deleted."""
        if not self.writer:
            return
        write_json(
            self.path / STARTED_MARKER, {"command": self.command, **config} if self.command else config
        )
        self.commit()

    def commit(self) -> None:
        """The new run has started: delete the older run that ``--overwrite`` kept aside."""
        _UNSTARTED.pop(str(self.path.resolve()), None)
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None
        if self._replaced_lock is not None:
            self._replaced_lock.release()
            self._replaced_lock = None

    def wall_seconds(self) -> float:
        """Seconds every process so far has spent on this run (a resumed run counts the interrupted ones too)."""
        return self._lock.wall_seconds if self._lock is not None else time.time() - self._opened

    @property
    def is_finished(self) -> bool:
        return (self.path / FINISHED_MARKER).exists()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        if self.writer:
            write_json(self.path / name, obj)

    def write_text(self, name: str, text: str) -> None:
        if self.writer:
            write_text_atomic(self.path / name, text)

    def write_jsonl(self, name: str, records: list[dict]) -> None:
        """Write ``records`` as one JSON object a line (UTF-8 text kept readable), atomically."""
        if self.writer:
            write_text_atomic(
                self.path / name,
                "".join(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in records),
            )

    def log(self, record: dict) -> None:
        """Append one JSON object as a line of ``metrics.jsonl`` (flushed at once)."""
        if not self.writer:
            return
        path = self.path / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as f:
                _write(f, json.dumps(_jsonable(record)) + "\n")
                f.flush()
        except OSError as err:
            raise write_failure(path, err) from err
        if self._lock is not None:
            self._lock.heartbeat()
        if self.replaced is not None or self.created:
            self.created = False
            self.commit()  # logging means training has started (for callers that write no config.json)
        if self.mirror is not None:
            self.mirror(record)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / "metrics.jsonl")

    def truncate_metrics(self, *, after_step: int) -> None:
        """Drop metrics logged after ``after_step`` (used when resuming from an earlier checkpoint)."""
        if not self.writer:
            return
        kept = [r for r in self.metrics() if r.get("step", 0) <= after_step]
        write_text_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))


def _holds_run(path: Path) -> bool:
    """Whether ``path`` holds anything but this module's lock file."""
    return path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir())


def _recover_overwrite(path: Path) -> None:
    """Finish an ``--overwrite`` that a killed process left half done (the caller holds the lock of ``path``).

    The new run never started (no config.json, no metrics): the older run is put back. It had started: the older
    one is deleted, as the replacing process would have done.
    """
    for aside in _aside_dirs(path):
        if str(path.resolve()) in _UNSTARTED or not aside.is_dir():
            continue
        if _has_started(path):
            shutil.rmtree(aside, ignore_errors=True)
            continue
        for child in list(path.iterdir()):
            if child.name != LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for child in aside.iterdir():
            if child.name != LOCK_FILE:
                child.rename(path / child.name)
        shutil.rmtree(aside, ignore_errors=True)
        print(f"restored the run that an interrupted --overwrite had moved to {aside}", file=sys.stderr)
        return


# ---------------------------------------------------------------------------------------------------------------
# What every recipe does the same way with its run directory


def finished_summary(
    run: Run, *, write_report: Callable[[Path], Any], say: Callable[[str], Any] = print
) -> dict:
    """A finished run is only re-reported: rewrite its report (the writer process) and return its summary."""
    say(f"{run.path} is already finished; its report is {run.path / 'report.html'}")
    if run.writer:
        write_report(run.path)
    return read_json(run.file(FINISHED_MARKER))


def load_saved_ids(run: Run) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(the tensors of ``data.pt``, ``manifest.json``) of a run being resumed, or None when it has no data.pt yet.

    Every tensor whose sha256 the manifest records (``<name>_sha256``) must still have it: a resumed run trains
    on exactly the ids it started with, or stops with one sentence.
    """
    if not run.file("data.pt").exists():
        return None
    import torch

    if not run.file("manifest.json").exists():
        raise HyperfitError(f"{run.file('data.pt')} has no manifest.json beside it; rerun with --overwrite.")
    saved = torch.load(run.file("data.pt"))
    manifest = read_json(run.file("manifest.json"))
    for name, ids in saved.items():
        recorded = manifest.get(f"{name}_sha256")
        if recorded is not None and sha256_ids(ids) != recorded:
            raise HyperfitError(
                f"{run.file('data.pt')} ({name}) does not match its manifest; rerun with --overwrite."
            )
    return saved, manifest
