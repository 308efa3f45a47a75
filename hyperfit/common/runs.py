"""Run directories: every run describes itself (config, data manifest, metrics.jsonl, checkpoints, summary).

Files are written atomically (temporary file, then ``os.replace``) so an interrupted run never leaves a
half-written result, and a finished run is never overwritten unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # runs.py stays free of torch at import time: report and config import it
    import torch

FINISHED_MARKER = "summary.json"


class HyperfitError(RuntimeError):
    """A user-facing error: its message is one sentence naming the input and the fix."""


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class Run:
    """A run directory. Only the main process should write (pass ``writer=False`` elsewhere)."""

    def __init__(self, path: str | Path, *, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
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
    ) -> Run:
        """Create or reopen a run directory, refusing to clobber earlier results.

        - missing or empty directory: created;
        - finished run (has ``summary.json``): refused unless ``overwrite`` (deleted) or ``resume`` (reopened:
          the caller sees ``is_finished`` and can skip straight to reporting);
        - unfinished run: refused unless ``resume`` (continue from its last checkpoint) or ``overwrite``.

        With several processes every one checks first, then ``barrier()``, then only the writer changes the disk,
        so no process can see a directory half made by another.
        """
        path = Path(path)
        if overwrite and resume:
            raise HyperfitError("--overwrite and --resume contradict each other; pass only one of them.")
        if path.exists() and not path.is_dir():
            raise HyperfitError(f"run directory {path} is a file; choose another --out.")
        exists = path.exists() and any(path.iterdir())
        if exists and not (overwrite or resume):
            state = "a finished run" if (path / FINISHED_MARKER).exists() else "an unfinished run"
            raise HyperfitError(
                f"{path} already holds {state}; pass --resume to continue it, --overwrite to replace it, "
                "or choose another --out."
            )
        barrier()
        if writer:
            if exists and overwrite:
                shutil.rmtree(path)
            path.mkdir(parents=True, exist_ok=True)
        barrier()
        return cls(path, writer=writer)

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
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")
            f.flush()
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
