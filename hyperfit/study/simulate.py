"""Synthetic annotators with a known truth, voting through the same HTTP endpoints as people, so the whole
pipeline and its statistics can be checked against that truth.

The truth is a Davidson (Bradley–Terry with ties) model: each system has a log-strength θ against the human
reference (θ = 0) and one tie parameter ν; each context shifts every system's θ against the reference by a
normal effect (some human texts are better than others), which is what makes votes cluster by prompt. A
careful annotator answers from the model except with probability ``noise`` (then uniformly); a spammer always
answers uniformly and so fails the attention checks.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hyperfit.common.runs import HyperfitError
from hyperfit.study import store
from hyperfit.study.items import REFERENCE


@dataclass
class Truth:
    """The simulated population: strengths against the reference, ties, annotator noise and spammers."""

    theta: dict[str, float] = field(
        metadata={"help": "Log-strength of each system against the reference (0)."}
    )
    nu: float = field(default=0.6, metadata={"help": "Davidson tie parameter (0 = no ties)."})
    prompt_sd: float = field(
        default=0.5,
        metadata={"help": "Standard deviation of each context's shift of θ against the reference."},
    )
    noise: float = field(default=0.1, metadata={"help": "Chance a careful annotator answers at random."})
    spammers: float = field(
        default=0.1, metadata={"help": "Share of annotators who always answer at random."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of strengths, context effects, annotators and choices."}
    )


def davidson_probabilities(theta_a: float, theta_b: float, nu: float) -> tuple[float, float, float]:
    """(P(a better), P(equal), P(b better)) under Davidson's model: π_a : ν√(π_a π_b) : π_b."""
    a, b, tie = math.exp(theta_a), math.exp(theta_b), nu * math.exp((theta_a + theta_b) / 2)
    total = a + b + tie
    return a / total, tie / total, b / total


def default_truth(systems: list[str], *, seed: int, noise: float = 0.1, spammers: float = 0.1) -> Truth:
    """Strengths drawn from the seed: θ uniform in [-2, 0.5] (a system preferred or judged equal to the
    human text between about 15 % and 65 % of the time)."""
    rng = random.Random(seed)
    return Truth(
        theta={s: round(rng.uniform(-2.0, 0.5), 3) for s in sorted(systems)},
        noise=noise,
        spammers=spammers,
        seed=seed,
    )


def parse_truth(spec: str, systems: list[str], *, seed: int, noise: float, spammers: float) -> Truth:
    """``SYSTEM=THETA,...`` for some or all systems (the rest drawn from the seed)."""
    truth = default_truth(systems, seed=seed, noise=noise, spammers=spammers)
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, sep, value = part.rpartition("=")
        try:
            theta = float(value)
        except ValueError:
            theta = None
        if not sep or name not in truth.theta or theta is None:
            raise HyperfitError(
                f"--truth item {part!r} is not SYSTEM=THETA for a system of this study; systems: "
                f"{', '.join(sorted(truth.theta))}."
            )
        truth.theta[name] = theta
    return truth


def _uniform(*parts: object) -> float:
    """A uniform number in [0, 1) that depends only on ``parts`` (so a choice does not depend on timing)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def prompt_effect(truth: Truth, prompt_id: int) -> float:
    """This context's shift of every system's θ against the reference (normal, from the seed)."""
    u1, u2 = _uniform(truth.seed, "prompt", prompt_id, 1), _uniform(truth.seed, "prompt", prompt_id, 2)
    return truth.prompt_sd * math.sqrt(-2 * math.log(1 - u1)) * math.cos(2 * math.pi * u2)  # Box–Muller


def expected_choice_probabilities(truth: Truth, system: str, prompt_id: int) -> tuple[float, float, float]:
    """(P(system better), P(equal), P(reference better)) for a careful annotator on this context."""
    p = davidson_probabilities(truth.theta[system] + prompt_effect(truth, prompt_id), 0.0, truth.nu)
    return tuple((1 - truth.noise) * q + truth.noise / 3 for q in p)


def population_shares(truth: Truth, system: str) -> dict[str, float]:
    """The shares a careful annotator population gives a system against the reference, averaged over the
    normal context effect (Gauss–Hermite quadrature): what an interval over a large sample of contexts should
    cover."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    wins = ties = 0.0
    for x, w in zip(nodes, weights, strict=True):
        win, tie, _ = davidson_probabilities(truth.theta[system] + truth.prompt_sd * x, 0.0, truth.nu)
        wins += w * win
        ties += w * tie
    wins = (1 - truth.noise) * wins + truth.noise / 3
    ties = (1 - truth.noise) * ties + truth.noise / 3
    return {"preferred": wins, "equal": ties, "preferred_or_equal": wins + ties}


def simulated_winner(
    truth: Truth,
    *,
    annotator_id: int,
    spammer: bool,
    item_id: int,
    prompt_id: int,
    system_a: str,
    system_b: str,
    expected: str | None,
) -> str:
    """The winner ('a', 'b' or 'equal') a simulated annotator picks for one item."""
    u = _uniform(truth.seed, "choice", annotator_id, item_id)
    if spammer or _uniform(truth.seed, "noise", annotator_id, item_id) < truth.noise:
        return ("a", "equal", "b")[min(int(u * 3), 2)]
    if expected is not None:
        return expected  # an attention check has an obvious answer for someone who reads
    if REFERENCE in (system_a, system_b):
        shift = prompt_effect(truth, prompt_id)
        theta_a = 0.0 if system_a == REFERENCE else truth.theta[system_a] + shift
        theta_b = 0.0 if system_b == REFERENCE else truth.theta[system_b] + shift
    else:  # the context's effect is on the human text, so it shifts two systems alike
        theta_a, theta_b = truth.theta[system_a], truth.theta[system_b]
    p_a, p_tie, _ = davidson_probabilities(theta_a, theta_b, truth.nu)
    return "a" if u < p_a else "equal" if u < p_a + p_tie else "b"


def _annotate(
    base_url: str,
    token: str,
    annotator_id: int,
    spammer: bool,
    truth: Truth,
    db_path: Path,
    *,
    replay: float,
    limit: int | None,
) -> dict:
    """One simulated annotator: open the link, then fetch and vote until done. Returns counts and latencies."""
    import httpx

    conn = store.connect(db_path)
    latencies: list[float] = []
    votes = replays = 0
    with httpx.Client(base_url=base_url, timeout=60, headers={"Accept": "application/json"}) as client:
        client.get(f"/a/{token}").raise_for_status()
        while limit is None or votes < limit:
            started = time.perf_counter()
            response = client.get(f"/a/{token}/item")
            response.raise_for_status()
            current = response.json()["item"]
            if current is None:
                break
            # The simulator plays the reader: it looks up which text is which to apply the known truth.
            row = conn.execute(
                "SELECT a.left_side, i.id, i.prompt_id, i.expected, ta.system AS a, tb.system AS b "
                "FROM assignments a JOIN items i ON i.id = a.item_id JOIN texts ta ON ta.id = i.text_a "
                "JOIN texts tb ON tb.id = i.text_b WHERE a.id = ?",
                (current["assignment"],),
            ).fetchone()
            winner = simulated_winner(
                truth,
                annotator_id=annotator_id,
                spammer=spammer,
                item_id=row["id"],
                prompt_id=row["prompt_id"],
                system_a=row["a"],
                system_b=row["b"],
                expected=row["expected"],
            )
            choice = "equal" if winner == "equal" else "left" if winner == row["left_side"] else "right"
            body = {
                "assignment": current["assignment"],
                "choice": choice,
                "submission_id": uuid.uuid4().hex,
                "client_ms": 1000 + int(9000 * _uniform(truth.seed, "ms", annotator_id, row["id"])),
            }
            response = client.post(f"/a/{token}/vote", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            votes += 1
            if _uniform(truth.seed, "replay", annotator_id, row["id"]) < replay:
                again = client.post(
                    f"/a/{token}/vote", json=body
                )  # a resubmitted request: must not count twice
                again.raise_for_status()
                replays += int(again.json()["replayed"])
    conn.close()
    return {"votes": votes, "replays": replays, "latencies": latencies}


def simulate(
    db_path: str | Path,
    *,
    annotators: int,
    truth: Truth,
    base_url: str | None = None,
    concurrency: int = 8,
    replay: float = 0.0,
    votes_per_annotator: int | None = None,
) -> dict:
    """Add ``annotators`` simulated annotators and let them vote over HTTP (a local server is started unless
    ``base_url`` names a running one), each at most ``votes_per_annotator`` times (default: an even share of the
    study, plus a half). Returns the vote count, replays and request latencies."""
    from hyperfit.study.server import background_server

    if annotators < 1:
        raise HyperfitError("--annotators must be at least 1.")
    db_path = Path(db_path)
    conn = store.connect(db_path)
    if votes_per_annotator is None:
        # Like a real pool, each annotator does a share of the work (with slack for checks and for annotators
        # who run out); without a limit the first few threads would take every item.
        cfg = store.settings(conn)
        slots = store.counts(conn)["items"] * cfg["annotations"] / max(1e-9, 1 - cfg.get("check_share", 0.0))
        votes_per_annotator = math.ceil(1.5 * slots / annotators)
    made = store.add_annotators(conn, annotators, source="simulated")
    rng = random.Random(truth.seed)
    kinds = [rng.random() < truth.spammers for _ in made]
    with store.write(conn):
        conn.executemany(
            "INSERT INTO simulated (annotator_id, kind, noise) VALUES (?, ?, ?)",
            [(a, "spammer" if s else "careful", truth.noise) for (a, _), s in zip(made, kinds, strict=True)],
        )
        store.set_setting(conn, "simulation", asdict(truth))
    conn.close()

    def run(url: str) -> list[dict]:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            jobs = [
                pool.submit(
                    _annotate,
                    url,
                    token,
                    annotator_id,
                    spammer,
                    truth,
                    db_path,
                    replay=replay,
                    limit=votes_per_annotator,
                )
                for (annotator_id, token), spammer in zip(made, kinds, strict=True)
            ]
            return [job.result() for job in jobs]

    started = time.perf_counter()
    if base_url is None:
        with background_server(db_path) as url:
            results = run(url)
    else:
        results = run(base_url)
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "annotators": annotators,
        "spammers": sum(kinds),
        "votes": sum(r["votes"] for r in results),
        "replays": sum(r["replays"] for r in results),
        "seconds": time.perf_counter() - started,
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "latency_p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        if latencies
        else None,
    }
