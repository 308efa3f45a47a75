"""Export comparisons to the platforms researchers already use, and import their results into the same
database (so ``hyperfit study report`` is unchanged): Label Studio (tasks JSON + labeling config) and a plain
CSV for crowd platforms (one row per comparison; results as one row per worker and comparison).

Exports are blinded like the page: each task carries only an opaque key; which system is on which side stays
in the database (``exports`` table) and de-blinds the imported votes.
"""

from __future__ import annotations

import csv
import json
import secrets
import time
from pathlib import Path

from hyperfit.common.runs import HyperfitError, write_text_atomic
from hyperfit.study import store

LABELS = {"left": "Left is better", "equal": "Equally good", "right": "Right is better"}
LABEL_STUDIO_CONFIG = """<View>
  <Header value="Context"/>
  <Text name="context" value="$context"/>
  <Header value="Left"/>
  <Text name="left" value="$left"/>
  <Header value="Right"/>
  <Text name="right" value="$right"/>
  <Header value="Which continuation is better?"/>
  <Choices name="choice" toName="context" choice="single" required="true">
    <Choice value="Left is better" hotkey="1"/>
    <Choice value="Equally good" hotkey="2"/>
    <Choice value="Right is better" hotkey="3"/>
  </Choices>
</View>
"""
_CHOICE_WORDS = {
    **{label.lower(): choice for choice, label in LABELS.items()},
    **{choice: choice for choice in LABELS},
    "1": "left",
    "2": "equal",
    "3": "right",
}
_KEY_COLUMNS = ("key", "Input.key")
_WORKER_COLUMNS = ("worker", "worker_id", "WorkerId", "annotator", "participant_id")
_CHOICE_COLUMNS = ("choice", "Answer.choice", "answer")
_SECONDS_COLUMNS = ("seconds", "WorkTimeInSeconds", "time_seconds")


def export_study(db_path: str | Path, out: str | Path, *, fmt: str) -> dict:
    """Write every comparison (attention checks included) as a task with a fresh opaque key and a random
    side for each text; record the keys so results can be imported."""
    if fmt not in ("labelstudio", "csv"):
        raise HyperfitError(f"--format {fmt!r} is not labelstudio or csv; pick one of them.")
    out = Path(out)
    conn = store.connect(db_path)
    rows = conn.execute(
        "SELECT i.id, p.context, ta.text AS text_a, tb.text AS text_b FROM items i JOIN prompts p ON p.id = i.prompt_id "
        "JOIN texts ta ON ta.id = i.text_a JOIN texts tb ON tb.id = i.text_b ORDER BY i.id"
    ).fetchall()
    tasks, records = [], []
    now = time.time()
    for row in rows:
        key = secrets.token_hex(8)
        left = "a" if secrets.randbelow(2) == 0 else "b"
        texts = (row["text_a"], row["text_b"]) if left == "a" else (row["text_b"], row["text_a"])
        tasks.append({"key": key, "context": row["context"], "left": texts[0], "right": texts[1]})
        records.append((key, row["id"], left, fmt, now))
    if fmt == "labelstudio":
        write_text_atomic(out, json.dumps([{"data": t} for t in tasks], ensure_ascii=False, indent=1) + "\n")
        config = out.with_name(out.stem + ".labeling.xml")
        write_text_atomic(config, LABEL_STUDIO_CONFIG)
    else:
        write_text_atomic(out, _csv(tasks, ["key", "context", "left", "right"]))
        config = None
    # The keys are recorded only after the file exists, so a failed write leaves no orphan keys behind.
    with store.write(conn):
        conn.executemany(
            "INSERT INTO exports (key, item_id, left_side, format, created_at) VALUES (?, ?, ?, ?, ?)",
            records,
        )
    conn.close()
    return {"tasks": len(tasks), "config": str(config) if config else None}


def _csv(rows: list[dict], columns: list[str]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _pick(row: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        if row.get(name) not in (None, ""):
            return str(row[name])
    return None


def _choice(value: str | None, where: str) -> str:
    choice = _CHOICE_WORDS.get((value or "").strip().lower())
    if choice is None:
        raise HyperfitError(
            f"{where} has choice {value!r}; use left / equal / right, 1 / 2 / 3, or the labels "
            f"{', '.join(repr(v) for v in LABELS.values())}."
        )
    return choice


def _label_studio_votes(path: Path) -> list[dict]:
    """(key, worker, choice, seconds) from a Label Studio JSON export (full format, or JSON-MIN)."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise HyperfitError(f"{path} is not JSON ({err.msg}); pass Label Studio's JSON export.") from err
    if not isinstance(tasks, list):
        raise HyperfitError(f"{path} is not a list of tasks; pass Label Studio's JSON export.")
    votes = []
    for number, task in enumerate(tasks, 1):
        where = f"task {number} of {path}"
        if "annotations" not in task:  # JSON-MIN: one flat object per annotation
            votes.append(
                {
                    "key": task.get("key"),
                    "worker": str(task.get("annotator", "unknown")),
                    "choice": _choice(task.get("choice"), where),
                    "seconds": task.get("lead_time"),
                    "where": where,
                }
            )
            continue
        for annotation in task["annotations"]:
            if annotation.get("was_cancelled"):
                continue
            picked = [
                r["value"]["choices"][0]
                for r in annotation.get("result", [])
                if r.get("type") == "choices" and r.get("value", {}).get("choices")
            ]
            if not picked:
                continue
            worker = annotation.get("completed_by", "unknown")
            if isinstance(worker, dict):
                worker = worker.get("email") or worker.get("id")
            votes.append(
                {
                    "key": task.get("data", {}).get("key"),
                    "worker": str(worker),
                    "choice": _choice(picked[0], where),
                    "seconds": annotation.get("lead_time"),
                    "where": where,
                }
            )
    return votes


def _csv_votes(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    votes = []
    for number, row in enumerate(rows, 2):
        where = f"row {number} of {path}"
        worker = _pick(row, _WORKER_COLUMNS)
        if worker is None:
            raise HyperfitError(
                f"{where} has no worker id; add a column named one of {', '.join(_WORKER_COLUMNS)}."
            )
        votes.append(
            {
                "key": _pick(row, _KEY_COLUMNS),
                "worker": worker,
                "choice": _choice(_pick(row, _CHOICE_COLUMNS), where),
                "seconds": _pick(row, _SECONDS_COLUMNS),
                "where": where,
            }
        )
    return votes


def import_results(db_path: str | Path, path: str | Path, *, fmt: str) -> dict:
    """Add a platform's votes to the database in one transaction: every row is checked first, so a bad row
    adds nothing; a vote already imported (same worker and comparison) is not added twice."""
    path = Path(path)
    if not path.is_file():
        raise HyperfitError(f"results file {path} does not exist; pass the file the platform exported.")
    if fmt not in ("labelstudio", "csv"):
        raise HyperfitError(f"--format {fmt!r} is not labelstudio or csv; pick one of them.")
    votes = _label_studio_votes(path) if fmt == "labelstudio" else _csv_votes(path)
    conn = store.connect(db_path)
    exports = {r["key"]: r for r in conn.execute("SELECT * FROM exports")}
    for vote in votes:
        if vote["key"] not in exports:
            conn.close()
            raise HyperfitError(
                f"{vote['where']} names task key {vote['key']!r}, which no export of {db_path} made; import the "
                "results of an export of this database."
            )
    added = already = 0
    workers = sorted({v["worker"] for v in votes})
    now = time.time()
    with store.write(conn):
        ids = {}
        for worker in workers:
            label = f"{fmt}:{worker}"
            row = conn.execute(
                "SELECT id FROM annotators WHERE label = ? AND source = ?", (label, fmt)
            ).fetchone()
            if row is None:
                # An unusable random token: imported annotators never log in to this server.
                row = (
                    conn.execute(
                        "INSERT INTO annotators (token_sha256, label, source, created_at) VALUES (?, ?, ?, ?)",
                        (store.hash_token(store.new_token()), label, fmt, now),
                    ).lastrowid,
                )
            ids[worker] = row[0]
        for vote in votes:
            export = exports[vote["key"]]
            seconds = vote["seconds"]
            try:
                client_ms = None if seconds in (None, "") else round(1000 * float(seconds))
            except ValueError:
                client_ms = None
            if store.insert_external_vote(
                conn,
                annotator_id=ids[vote["worker"]],
                item_id=export["item_id"],
                left=export["left_side"],
                choice=vote["choice"],
                submission_id=f"{fmt}:{vote['key']}:{vote['worker']}",
                client_ms=client_ms,
                now=now,
            ):
                added += 1
            else:
                already += 1
    conn.close()
    return {"added": added, "already": already, "annotators": len(workers)}
