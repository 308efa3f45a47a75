"""Load and durability of the study server (``hyperfit study serve``), over HTTP on 127.0.0.1.

1. Load: 50 concurrent simulated annotators × 40 votes each against a server process (10 % of votes sent twice,
   as a double click or a retried request would). Prints request latency p50 / p99 and checks 0 lost, 0 duplicated.
2. Kill: the same load; after a third of the votes the server is killed with SIGKILL and restarted. Every vote the
   server acknowledged before the kill must be in the database (read before the restart), and after the clients
   finish (retrying what failed, with the same submission ids) every annotator has exactly 40 votes.
3. The cost of ``synchronous=FULL`` (fsync every commit, the server's setting) against NORMAL, per vote.

Writes benchmarks/results/study_load.json.

    python benchmarks/bench_study_load.py [--annotators 50] [--votes 40]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from hyperfit.study import store
from hyperfit.study.server import free_port

ROOT = Path(__file__).resolve().parents[1]


def synthetic_study(db: Path, *, prompts: int, systems: int, annotations: int, per_annotator: int) -> None:
    """A study database with made-up texts (the server never looks at where texts came from)."""
    conn = store.create(db, overwrite=True)
    words = "the river rose above the old stone bridge while the town slept and rain kept falling".split()
    with store.write(conn):
        for p in range(1, prompts + 1):
            conn.execute(
                "INSERT INTO prompts (id, source, prompt_index, domain, context) VALUES (?, 'bench', ?, 'news', ?)",
                (p, p, " ".join(words[(p + k) % len(words)] for k in range(12))),
            )
            reference = conn.execute(
                "INSERT INTO texts (prompt_id, system, length, text, ids) VALUES (?, 'reference', 64, ?, '[]')",
                (p, " ".join(words[(p * 3 + k) % len(words)] for k in range(48))),
            ).lastrowid
            for s in range(systems):
                text = conn.execute(
                    "INSERT INTO texts (prompt_id, system, length, text, ids) VALUES (?, ?, 64, ?, '[]')",
                    (p, f"model/s{s}", " ".join(words[(p * 7 + s + k) % len(words)] for k in range(48))),
                ).lastrowid
                conn.execute(
                    "INSERT INTO items (prompt_id, length, kind, text_a, text_b) VALUES (?, 64, 'reference', ?, ?)",
                    (p, text, reference),
                )
        for key, value in {
            "seed": 0,
            "annotations": annotations,
            "check_share": 0.0,
            "per_annotator": per_annotator,
            "stale_minutes": 60,
            "lengths": [64],
            "pairs": "reference",
            "systems": [f"model/s{s}" for s in range(systems)],
            "sources": [],
        }.items():
            store.set_setting(conn, key, value)
    conn.close()


def start_server(db: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "hyperfit.cli", "study", "serve", str(db), "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    raise RuntimeError("server did not start within 120 s")


class Annotator(threading.Thread):
    """Fetch, vote, repeat; every request is retried (same submission id) until the server answers."""

    def __init__(self, base: str, token: str, votes: int, *, replay_every: int, ledger: dict, stop_at: float):
        super().__init__(daemon=True)
        self.base, self.token, self.votes, self.replay_every = base, token, votes, replay_every
        self.ledger, self.stop_at = ledger, stop_at
        self.latencies: list[tuple[str, float]] = []
        self.acked: list[tuple[str, float]] = []  # (submission id, time acknowledged)
        self.failures = 0
        self.error: str | None = None

    def request(self, client: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
        while time.monotonic() < self.stop_at:
            started = time.perf_counter()
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError:
                self.failures += 1
                time.sleep(0.2)  # the server is down: wait and send the same request again
                continue
            self.latencies.append((method, time.perf_counter() - started))
            response.raise_for_status()
            return response
        raise TimeoutError("gave up waiting for the server")

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.base, timeout=30, headers={"Accept": "application/json"}
            ) as client:
                for n in range(self.votes):
                    item = self.request(client, "GET", f"/a/{self.token}/item").json()["item"]
                    if item is None:
                        raise RuntimeError(f"annotator ran out of items after {n} votes")
                    body = {
                        "assignment": item["assignment"],
                        "choice": ("left", "equal", "right")[n % 3],
                        "submission_id": uuid.uuid4().hex,
                        "client_ms": 1000,
                    }
                    answer = self.request(client, "POST", f"/a/{self.token}/vote", json=body).json()
                    self.acked.append((answer["submission_id"], time.monotonic()))
                    if n % self.replay_every == 0:  # the same vote again: must come back as a replay
                        again = self.request(client, "POST", f"/a/{self.token}/vote", json=body).json()
                        self.ledger["replays"] += int(again["replayed"])
                        self.ledger["replays_sent"] += 1
        except Exception as err:  # reported in the summary
            self.error = repr(err)


def votes_in(db: Path) -> tuple[set[str], int, int]:
    """(submission ids, vote rows, distinct (annotator, item)) as stored, read by a fresh connection."""
    conn = sqlite3.connect(db)
    ids = {r[0] for r in conn.execute("SELECT submission_id FROM votes")}
    rows = conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
    distinct = conn.execute(
        "SELECT COUNT(*) FROM (SELECT DISTINCT annotator_id, item_id FROM votes)"
    ).fetchone()[0]
    conn.close()
    return ids, rows, distinct


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return 1000 * values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_load(db: Path, *, annotators: int, votes: int, kill_after: int | None) -> dict:
    conn = store.connect(db)
    tokens = [t for _, t in store.add_annotators(conn, annotators)]
    conn.close()
    port = free_port()
    server = start_server(db, port)
    ledger = {"replays": 0, "replays_sent": 0}
    stop_at = time.monotonic() + 900
    clients = [
        Annotator(f"http://127.0.0.1:{port}", t, votes, replay_every=10, ledger=ledger, stop_at=stop_at)
        for t in tokens
    ]
    started = time.perf_counter()
    for client in clients:
        client.start()
    killed = {}
    if kill_after is not None:
        while sum(len(c.acked) for c in clients) < kill_after:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        server.wait()
        killed_at = time.monotonic()
        acked_before = {s for c in clients for s, t in c.acked if t <= killed_at}
        stored, _, _ = votes_in(db)  # the database as the killed server left it
        killed = {
            "acknowledged_before_kill": len(acked_before),
            "lost_at_kill": len(acked_before - stored),
            "stored_at_kill": len(stored),
        }
        time.sleep(1.0)
        server = start_server(db, port)
    for client in clients:
        client.join()
    seconds = time.perf_counter() - started
    server.send_signal(signal.SIGINT)
    server.wait(timeout=60)
    stored, rows, distinct = votes_in(db)
    acked = {s for c in clients for s, _ in c.acked}
    posts = [t for c in clients for m, t in c.latencies if m == "POST"]
    gets = [t for c in clients for m, t in c.latencies if m == "GET"]
    return {
        "annotators": annotators,
        "votes_each": votes,
        "seconds": seconds,
        "votes_acknowledged": len(acked),
        "votes_stored": rows,
        "lost": len(acked - stored),
        "duplicated": rows - distinct,
        "replays_sent": ledger["replays_sent"],
        "replays_answered_as_replays": ledger["replays"],
        "client_errors": [c.error for c in clients if c.error],
        "failed_requests_retried": sum(c.failures for c in clients),
        "vote_latency_p50_ms": percentile(posts, 0.5),
        "vote_latency_p99_ms": percentile(posts, 0.99),
        "item_latency_p50_ms": percentile(gets, 0.5),
        "item_latency_p99_ms": percentile(gets, 0.99),
        **killed,
    }


def sync_cost(folder: Path, *, votes: int = 300) -> dict:
    """Mean milliseconds per committed vote with synchronous=FULL (the server's) and NORMAL."""
    result = {}
    for mode in ("FULL", "NORMAL"):
        db = folder / f"sync-{mode}.db"
        synthetic_study(db, prompts=votes, systems=1, annotations=1, per_annotator=0)
        conn = store.connect(db)
        conn.execute(f"PRAGMA synchronous={mode}")
        [(annotator, _)] = store.add_annotators(conn, 1)
        started = time.perf_counter()
        for n in range(votes):
            item = store.next_assignment(conn, annotator)
            store.record_vote(conn, annotator, item["assignment"], "left", submission_id=f"s{n}")
        result[f"ms_per_vote_{mode.lower()}"] = 1000 * (time.perf_counter() - started) / votes
        conn.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--votes", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "study_load.json"))
    args = parser.parse_args()
    needed = args.annotators * args.votes
    prompts = needed // 3 + 10  # 3 systems × 3 annotations: every vote finds an item
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for phase, kill_after in (("load", None), ("sigkill", needed // 3)):
            db = folder / f"{phase}.db"
            synthetic_study(db, prompts=prompts, systems=3, annotations=3, per_annotator=args.votes)
            results[phase] = run_load(db, annotators=args.annotators, votes=args.votes, kill_after=kill_after)
            print(phase, json.dumps(results[phase], indent=1))
        results["sync"] = sync_cost(folder)
        print("sync", json.dumps(results["sync"]))
    ok = (
        all(
            r["lost"] == 0 and r["duplicated"] == 0 and r["votes_stored"] == needed and not r["client_errors"]
            for r in (results["load"], results["sigkill"])
        )
        and results["sigkill"]["lost_at_kill"] == 0
    )
    results["ok"] = ok
    results["cpu_count"] = os.cpu_count()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("OK: 0 lost, 0 duplicated, every acknowledged vote survived SIGKILL" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
