"""A claims table: each claim of a paper, the figure measured for it with its 95 % interval, and a verdict —
*holds*, *fails* or *not distinguishable* — decided by a rule stated beside it, never by eye.

Rules: ``above`` / ``below`` a threshold (the whole interval on one side holds, the whole interval on the other
side fails, an interval across it is not distinguishable), and ``within`` a margin of zero (an equivalence test:
the interval inside ±margin holds, wholly outside it fails). Modality-agnostic: the caller supplies figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

HOLDS, FAILS, UNDECIDED, NOT_RUN = "holds", "fails", "not distinguishable", "not run"


def verdict(ci: Sequence[float] | None, *, rule: str, threshold: float = 0.0) -> str:
    """The verdict of an interval ``ci = [low, high]`` under ``rule``: ``above`` (the figure exceeds
    ``threshold``), ``below`` (it is under ``threshold``) or ``within`` (|figure| ≤ ``threshold``)."""
    if ci is None or any(v is None or not math.isfinite(v) for v in ci):
        return NOT_RUN
    low, high = ci
    if rule == "above":
        return HOLDS if low > threshold else FAILS if high < threshold else UNDECIDED
    if rule == "below":
        return HOLDS if high < threshold else FAILS if low > threshold else UNDECIDED
    if rule == "within":
        if -threshold <= low and high <= threshold:
            return HOLDS
        return FAILS if high < -threshold or low > threshold else UNDECIDED
    raise ValueError(f"unknown verdict rule {rule!r}; use above, below or within.")


RULE_TEXT = {
    "above": "holds if the 95 % interval lies above {t}, fails if it lies below",
    "below": "holds if the 95 % interval lies below {t}, fails if it lies above",
    "within": "holds if the 95 % interval lies within ±{t}, fails if it lies wholly outside",
}


@dataclass
class Claim:
    """One row of the table. ``figure`` says what was measured; ``value``/``ci`` are None when not run."""

    key: str
    source: str
    statement: str
    figure: str
    value: float | None
    ci: list[float] | None
    rule: str
    threshold: float = 0.0
    note: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.ci, rule=self.rule, threshold=self.threshold)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "verdict": self.verdict,
            "rule_text": RULE_TEXT[self.rule].format(t=f"{self.threshold:g}"),
        }


def wilson_interval(successes: int, n: int, *, z: float = 1.959964) -> list[float]:
    """95 % Wilson score interval of a share ``successes / n`` (sound at 0 or n, unlike a bootstrap)."""
    if n <= 0:
        return [float("nan"), float("nan")]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def claims_summary(claims: Sequence[Claim]) -> dict:
    """``{"claims": [row, ...], "counts": {verdict: n}}`` as written to claims.json."""
    rows = [c.as_dict() for c in claims]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return {"claims": rows, "counts": counts}
