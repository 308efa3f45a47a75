"""The study database: one SQLite file holding the comparisons, the annotators (hashed tokens), what was served
to whom and on which side, and the votes.

Durability: WAL journal with ``synchronous=FULL``, and every vote is committed before the server answers. With
WAL, NORMAL already survives a killed server process (the WAL is in the OS page cache); FULL also fsyncs the WAL
on every commit, so an acknowledged vote survives a power cut or an OS crash too. A vote is a few hundred bytes
and studies see a few votes a second, so the fsync costs nothing that matters.

Idempotency: a vote is unique per (annotator, item) and per served assignment, and carries a client-made
submission id; a replayed or doubled request returns the stored vote instead of adding one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hyperfit.common.runs import HyperfitError

SCHEMA_VERSION = 1
CHOICES = ("left", "equal", "right")

SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    prompt_index INTEGER NOT NULL,
    domain TEXT NOT NULL,
    context TEXT NOT NULL,
    UNIQUE (source, prompt_index)
);
CREATE TABLE texts (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts (id),
    system TEXT NOT NULL,
    length INTEGER NOT NULL,
    text TEXT NOT NULL,
    ids TEXT NOT NULL,
    UNIQUE (prompt_id, system, length)
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts (id),
    length INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('reference', 'systems', 'check')),
    text_a INTEGER NOT NULL REFERENCES texts (id),
    text_b INTEGER NOT NULL REFERENCES texts (id),
    expected TEXT CHECK (expected IN ('a', 'b'))
);
CREATE TABLE annotators (
    id INTEGER PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'link',
    created_at REAL NOT NULL,
    started_at REAL
);
CREATE TABLE assignments (
    id INTEGER PRIMARY KEY,
    annotator_id INTEGER NOT NULL REFERENCES annotators (id),
    item_id INTEGER NOT NULL REFERENCES items (id),
    position INTEGER NOT NULL,
    left_side TEXT NOT NULL CHECK (left_side IN ('a', 'b')),
    served_at REAL NOT NULL,
    UNIQUE (annotator_id, item_id),
    UNIQUE (annotator_id, position)
);
CREATE INDEX assignments_item ON assignments (item_id);
CREATE TABLE votes (
    id INTEGER PRIMARY KEY,
    assignment_id INTEGER NOT NULL UNIQUE REFERENCES assignments (id),
    annotator_id INTEGER NOT NULL REFERENCES annotators (id),
    item_id INTEGER NOT NULL REFERENCES items (id),
    left_system TEXT NOT NULL,
    right_system TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'equal', 'right')),
    winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'equal')),
    client_ms INTEGER,
    server_ms INTEGER NOT NULL,
    submission_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    UNIQUE (annotator_id, item_id)
);
CREATE TABLE exports (
    key TEXT PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id),
    left_side TEXT NOT NULL CHECK (left_side IN ('a', 'b')),
    format TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE simulated (
    annotator_id INTEGER PRIMARY KEY REFERENCES annotators (id),
    kind TEXT NOT NULL,
    noise REAL NOT NULL
);
"""


# ------------------------------------------------------------------------------------------------------------
# Opening and creating
# ------------------------------------------------------------------------------------------------------------


def _configure(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")  # other writers (a CLI import while serving) wait, not fail
    return conn


def connect(path: str | Path) -> sqlite3.Connection:
    """Open an existing study database (autocommit; callers group writes with :func:`write`)."""
    path = Path(path)
    if not path.is_file():
        raise HyperfitError(
            f"study database {path} does not exist; create one with `hyperfit study create --out {path}`."
        )
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as err:
        raise HyperfitError(
            f"{path} is not an SQLite database ({err}); pass a file made by `hyperfit study create`."
        ) from err
    if "schema_version" not in names:
        conn.close()
        raise HyperfitError(
            f"{path} is not a hyperfit study database (no schema_version table); pass a file made by "
            "`hyperfit study create`."
        )
    version = conn.execute("SELECT version FROM schema_version").fetchone()
    if version is None or version[0] != SCHEMA_VERSION:
        conn.close()
        found = "no version" if version is None else f"schema version {version[0]}"
        raise HyperfitError(
            f"{path} has {found} but this hyperfit reads schema version {SCHEMA_VERSION}; open it with the "
            "hyperfit release that created it, or re-create the study."
        )
    return _configure(conn)


def create(path: str | Path, *, overwrite: bool = False) -> sqlite3.Connection:
    """Create an empty study database at ``path`` (refusing to replace one unless ``overwrite``)."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise HyperfitError(
                f"{path} already exists; choose another --out or pass --overwrite to replace it (its votes "
                "are lost)."
            )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _configure(sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30))
    with write(conn):
        for statement in [s for s in SCHEMA.split(";") if s.strip()]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    return conn


# Writers in one process queue on this lock instead of on SQLite's busy handler, which polls with growing
# sleeps and lets an unlucky request starve for seconds under many concurrent annotators.
_WRITE_LOCK = threading.Lock()


@contextlib.contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken immediately (so two writers queue instead of deadlocking) and committed
    (fsynced) before the block's caller goes on."""
    with _WRITE_LOCK:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def get_setting(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM study WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


def set_setting(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO study (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value)),
    )


def settings(conn: sqlite3.Connection) -> dict[str, Any]:
    return {row[0]: json.loads(row[1]) for row in conn.execute("SELECT key, value FROM study")}


# ------------------------------------------------------------------------------------------------------------
# One serving process per database
# ------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock beside the database while serving; the OS drops it when the process dies (even
    by SIGKILL), so a crashed server never blocks its restart."""
    lock_path = Path(f"{path}.serve.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise HyperfitError(
                f"{path} is already being served (process {holder}); stop that `hyperfit study serve` first, "
                "or serve a copy of the database."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ------------------------------------------------------------------------------------------------------------
# Tokens
# ------------------------------------------------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_annotators(
    conn: sqlite3.Connection, count: int, *, source: str = "link", labels: list[str] | None = None
) -> list[tuple[int, str]]:
    """Create ``count`` annotators; return (id, token) pairs. Only the sha256 of a token is stored, so the
    printed link is the only copy of it."""
    made = []
    now = time.time()
    with write(conn):
        start = conn.execute("SELECT COALESCE(MAX(id), 0) FROM annotators").fetchone()[0]
        for n in range(count):
            token = new_token()
            label = labels[n] if labels else f"annotator-{start + n + 1}"
            cursor = conn.execute(
                "INSERT INTO annotators (token_sha256, label, source, created_at) VALUES (?, ?, ?, ?)",
                (hash_token(token), label, source, now),
            )
            made.append((cursor.lastrowid, token))
    return made


def annotator_for_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    """The annotator holding ``token``, or None. The lookup compares sha256 digests, never the token itself,
    so its timing says nothing about the secret; the final comparison is constant-time."""
    digest = hash_token(token)
    row = conn.execute("SELECT * FROM annotators WHERE token_sha256 = ?", (digest,)).fetchone()
    if row is None or not hmac.compare_digest(row["token_sha256"], digest):
        return None
    return row


def new_admin_token(conn: sqlite3.Connection) -> str:
    """Issue the admin token (replacing any earlier one) and return it; only its hash is kept."""
    token = new_token()
    with write(conn):
        set_setting(conn, "admin_token_sha256", hash_token(token))
    return token


def is_admin(conn: sqlite3.Connection, token: str) -> bool:
    stored = get_setting(conn, "admin_token_sha256")
    return stored is not None and hmac.compare_digest(stored, hash_token(token))


# ------------------------------------------------------------------------------------------------------------
# Serving items and recording votes
# ------------------------------------------------------------------------------------------------------------


def _digest_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


_MASK = (1 << 64) - 1


def _ranks(seed: int, annotator_id: int, item_ids: list[int]) -> list[int]:
    """The annotator's own random order of items: a splitmix64 hash of the item id under a per-annotator key
    drawn from the recorded seed (cheap enough to rank a whole study on every request)."""
    key = _digest_int(seed, "order", annotator_id)
    ranks = []
    for item_id in item_ids:
        z = (key + 0x9E3779B97F4A7C15 * (item_id + 1)) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        ranks.append(z ^ (z >> 31))
    return ranks


def _first_in_order(seed: int, annotator_id: int, item_ids: list[int]) -> int | None:
    if not item_ids:
        return None
    ranks = _ranks(seed, annotator_id, item_ids)
    return item_ids[ranks.index(min(ranks))]


def left_side(seed: int, annotator_id: int, item_id: int) -> str:
    """Which of the item's texts ('a' or 'b') this annotator sees on the left: a fair coin per item and
    annotator, reproducible from the study's seed."""
    return "a" if _digest_int(seed, "left", annotator_id, item_id) % 2 == 0 else "b"


class NotServed(Exception):
    """A vote for an assignment that does not exist or belongs to another annotator."""


class VoteConflict(Exception):
    """A submission id that is already used by another vote."""


def _pending(conn: sqlite3.Connection, annotator_id: int) -> sqlite3.Row | None:
    return conn.execute(
        "SELECT a.* FROM assignments a LEFT JOIN votes v ON v.assignment_id = a.id "
        "WHERE a.annotator_id = ? AND v.id IS NULL ORDER BY a.position LIMIT 1",
        (annotator_id,),
    ).fetchone()


def _choose_item(conn: sqlite3.Connection, annotator_id: int, cfg: dict, now: float) -> int | None:
    """The next item for this annotator, or None when nothing is left for them.

    Attention checks are interleaved at the study's share (a per-annotator random phase, so their positions
    cannot be learned). Other items go to whoever asks, fullest first (items reach their annotation count
    early, so agreement is measurable on a partly done study), then in the annotator's own random order. An
    assignment served but not voted on for ``stale_minutes`` no longer reserves its slot."""
    served = conn.execute(
        "SELECT COUNT(*) AS n, COALESCE(SUM(i.kind = 'check'), 0) AS checks FROM assignments a "
        "JOIN items i ON i.id = a.item_id WHERE a.annotator_id = ?",
        (annotator_id,),
    ).fetchone()
    cap = cfg.get("per_annotator") or 0
    if cap and served["n"] >= cap:
        return None
    seed = cfg["seed"]
    phase = (_digest_int(seed, "phase", annotator_id) % 1000) / 1000
    if served["checks"] < math.floor((served["n"] + 1) * cfg.get("check_share", 0.0) + phase):
        unseen = conn.execute(
            "SELECT i.id FROM items i WHERE i.kind = 'check' AND NOT EXISTS (SELECT 1 FROM assignments x "
            "WHERE x.item_id = i.id AND x.annotator_id = ?)",
            (annotator_id,),
        ).fetchall()
        check = _first_in_order(seed, annotator_id, [r[0] for r in unseen])
        if check is not None:
            return check
    cutoff = now - 60 * cfg.get("stale_minutes", 60)
    # One pass over the assignments (not a subquery per item): live slots per item, and this annotator's items.
    live: dict[int, int] = {}
    mine: set[int] = set()
    for item_id, owner, voted, served_at in conn.execute(
        "SELECT a.item_id, a.annotator_id, v.id IS NOT NULL, a.served_at FROM assignments a "
        "LEFT JOIN votes v ON v.assignment_id = a.id"
    ):
        if owner == annotator_id:
            mine.add(item_id)
        if voted or served_at > cutoff:
            live[item_id] = live.get(item_id, 0) + 1
    open_items: dict[int, list[int]] = {}
    for (item_id,) in conn.execute("SELECT id FROM items WHERE kind != 'check'"):
        filled = live.get(item_id, 0)
        if item_id not in mine and filled < cfg["annotations"]:
            open_items.setdefault(filled, []).append(item_id)
    if not open_items:
        return None
    return _first_in_order(seed, annotator_id, open_items[max(open_items)])


def next_assignment(conn: sqlite3.Connection, annotator_id: int, *, now: float | None = None) -> dict | None:
    """The annotator's current item: the one served and not yet voted on (so "continue later" resumes exactly
    there), else a newly assigned one; None when the annotator is done. Returns what the page shows, never
    which system wrote which text."""
    now = time.time() if now is None else now
    pending = _pending(conn, annotator_id)  # the common case (a reload, "continue later") needs no write
    if pending is not None:
        return _page(conn, pending)
    with write(conn):
        pending = _pending(
            conn, annotator_id
        )  # again inside the transaction: a parallel request may have won
        if pending is None:
            cfg = settings(conn)
            item_id = _choose_item(conn, annotator_id, cfg, now)
            if item_id is None:
                return None
            position = conn.execute(
                "SELECT COALESCE(MAX(position), 0) + 1 FROM assignments WHERE annotator_id = ?",
                (annotator_id,),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO assignments (annotator_id, item_id, position, left_side, served_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (annotator_id, item_id, position, left_side(cfg["seed"], annotator_id, item_id), now),
            )
            conn.execute(
                "UPDATE annotators SET started_at = ? WHERE id = ? AND started_at IS NULL",
                (now, annotator_id),
            )
            pending = _pending(conn, annotator_id)
    return _page(conn, pending)


def _page(conn: sqlite3.Connection, assignment: sqlite3.Row) -> dict:
    row = conn.execute(
        "SELECT p.context, ta.text AS text_a, tb.text AS text_b FROM items i "
        "JOIN prompts p ON p.id = i.prompt_id JOIN texts ta ON ta.id = i.text_a JOIN texts tb ON tb.id = i.text_b "
        "WHERE i.id = ?",
        (assignment["item_id"],),
    ).fetchone()
    left, right = (row["text_a"], row["text_b"])
    if assignment["left_side"] == "b":
        left, right = right, left
    return {
        "assignment": assignment["id"],
        "position": assignment["position"],
        "context": row["context"],
        "left": left,
        "right": right,
    }


def progress_of(conn: sqlite3.Connection, annotator_id: int) -> dict:
    """(done, planned) for the page's progress count: planned = votes so far + what is still open to this
    annotator, at most the per-annotator cap."""
    cfg = settings(conn)
    done = conn.execute("SELECT COUNT(*) FROM votes WHERE annotator_id = ?", (annotator_id,)).fetchone()[0]
    served = conn.execute(
        "SELECT COUNT(*) FROM assignments WHERE annotator_id = ?", (annotator_id,)
    ).fetchone()[0]
    open_items = conn.execute(
        """
        SELECT COUNT(*) FROM items i
        WHERE i.kind != 'check'
          AND NOT EXISTS (SELECT 1 FROM assignments x WHERE x.item_id = i.id AND x.annotator_id = :me)
          AND (SELECT COUNT(*) FROM assignments x WHERE x.item_id = i.id) < :annotations
        """,
        {"me": annotator_id, "annotations": cfg["annotations"]},
    ).fetchone()[0]
    share = cfg.get("check_share", 0.0)
    planned = served + math.ceil(open_items / (1 - share)) if share < 1 else served
    cap = cfg.get("per_annotator") or 0
    return {"done": done, "planned": min(planned, cap) if cap else planned}


def record_vote(
    conn: sqlite3.Connection,
    annotator_id: int,
    assignment_id: int,
    choice: str,
    *,
    submission_id: str,
    client_ms: int | None = None,
    now: float | None = None,
) -> tuple[dict, bool]:
    """Store one vote and commit it; return (the stored vote, whether it was already there).

    Raises NotServed for an assignment that is not this annotator's (nothing written) and VoteConflict for a
    submission id another vote already used. A second vote for the same assignment, whatever its choice,
    returns the first one unchanged: a vote is saved once."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
    now = time.time() if now is None else now
    with write(conn):
        assignment = conn.execute(
            "SELECT * FROM assignments WHERE id = ? AND annotator_id = ?", (assignment_id, annotator_id)
        ).fetchone()
        if assignment is None:
            raise NotServed(assignment_id)
        stored = conn.execute("SELECT * FROM votes WHERE assignment_id = ?", (assignment_id,)).fetchone()
        if stored is not None:
            return dict(stored), True
        used = conn.execute("SELECT 1 FROM votes WHERE submission_id = ?", (submission_id,)).fetchone()
        if used is not None:
            raise VoteConflict(submission_id)
        systems = conn.execute(
            "SELECT ta.system AS a, tb.system AS b FROM items i JOIN texts ta ON ta.id = i.text_a "
            "JOIN texts tb ON tb.id = i.text_b WHERE i.id = ?",
            (assignment["item_id"],),
        ).fetchone()
        left = assignment["left_side"]
        right = "b" if left == "a" else "a"
        winner = {"left": left, "right": right, "equal": "equal"}[choice]
        conn.execute(
            "INSERT INTO votes (assignment_id, annotator_id, item_id, left_system, right_system, choice, winner, "
            "client_ms, server_ms, submission_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                assignment_id,
                annotator_id,
                assignment["item_id"],
                systems[left],
                systems[right],
                choice,
                winner,
                client_ms,
                max(0, round(1000 * (now - assignment["served_at"]))),
                submission_id,
                now,
            ),
        )
        stored = conn.execute("SELECT * FROM votes WHERE assignment_id = ?", (assignment_id,)).fetchone()
    return dict(stored), False


def insert_external_vote(
    conn: sqlite3.Connection,
    *,
    annotator_id: int,
    item_id: int,
    left: str,
    choice: str,
    submission_id: str,
    client_ms: int | None,
    now: float,
) -> bool:
    """Record a vote made on another platform (inside the caller's transaction); False if that annotator
    already has a vote on that item (re-importing a file adds nothing)."""
    if conn.execute(
        "SELECT 1 FROM votes WHERE annotator_id = ? AND item_id = ?", (annotator_id, item_id)
    ).fetchone():
        return False
    position = conn.execute(
        "SELECT COALESCE(MAX(position), 0) + 1 FROM assignments WHERE annotator_id = ?", (annotator_id,)
    ).fetchone()[0]
    assignment_id = conn.execute(
        "INSERT INTO assignments (annotator_id, item_id, position, left_side, served_at) VALUES (?, ?, ?, ?, ?)",
        (annotator_id, item_id, position, left, now),
    ).lastrowid
    systems = conn.execute(
        "SELECT ta.system AS a, tb.system AS b FROM items i JOIN texts ta ON ta.id = i.text_a "
        "JOIN texts tb ON tb.id = i.text_b WHERE i.id = ?",
        (item_id,),
    ).fetchone()
    right = "b" if left == "a" else "a"
    conn.execute(
        "INSERT INTO votes (assignment_id, annotator_id, item_id, left_system, right_system, choice, winner, "
        "client_ms, server_ms, submission_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (
            assignment_id,
            annotator_id,
            item_id,
            systems[left],
            systems[right],
            choice,
            {"left": left, "right": right, "equal": "equal"}[choice],
            client_ms,
            submission_id,
            now,
        ),
    )
    return True


# ------------------------------------------------------------------------------------------------------------
# Reading results
# ------------------------------------------------------------------------------------------------------------


def vote_rows(conn: sqlite3.Connection) -> list[dict]:
    """Every vote, de-blinded: item, prompt, domain, length, kind, the two systems (a, b), the winner
    ('a', 'b' or 'equal'), the check's expected side, annotator and timing."""
    return [
        dict(r)
        for r in conn.execute(
            """
            SELECT v.id AS vote_id, v.annotator_id, an.label AS annotator, an.source AS annotator_source,
                   v.item_id, i.kind, i.length, i.expected, i.prompt_id, p.domain, p.source,
                   ta.system AS system_a, tb.system AS system_b, v.left_system, v.right_system, v.choice,
                   v.winner, v.client_ms, v.server_ms, v.submission_id, v.created_at
            FROM votes v
            JOIN items i ON i.id = v.item_id
            JOIN prompts p ON p.id = i.prompt_id
            JOIN texts ta ON ta.id = i.text_a
            JOIN texts tb ON tb.id = i.text_b
            JOIN annotators an ON an.id = v.annotator_id
            ORDER BY v.id
            """
        )
    ]


def annotator_progress(conn: sqlite3.Connection) -> list[dict]:
    """Per annotator: votes, checks answered and passed, last activity (for the admin page)."""
    return [
        dict(r)
        for r in conn.execute(
            """
            SELECT an.id, an.label, an.source, an.started_at,
                   COUNT(v.id) AS votes,
                   COALESCE(SUM(i.kind = 'check'), 0) AS checks,
                   COALESCE(SUM(i.kind = 'check' AND v.winner = i.expected), 0) AS checks_passed,
                   MAX(v.created_at) AS last_vote
            FROM annotators an
            LEFT JOIN votes v ON v.annotator_id = an.id
            LEFT JOIN items i ON i.id = v.item_id
            GROUP BY an.id ORDER BY an.id
            """
        )
    ]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    return {
        "items": one("SELECT COUNT(*) FROM items WHERE kind != 'check'"),
        "checks": one("SELECT COUNT(*) FROM items WHERE kind = 'check'"),
        "annotators": one("SELECT COUNT(*) FROM annotators"),
        "votes": one("SELECT COUNT(*) FROM votes"),
    }
