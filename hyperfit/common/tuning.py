"""Sampling baselines tuned with an equal budget: every sampler family gets the same number of trials on a
development split of prompts, one rule picks each family's setting, and only then are the test prompts decoded.

The min-p re-analysis (arXiv 2506.13681) showed that comparing samplers at one fixed setting each misleads: the
ranking follows whichever sampler happened to be tuned more. Here a family is one parameter swept over a fixed
range; ``trials`` points spread evenly over it (in log space for cut-offs spanning decades) are the budget.
Modality-agnostic: the caller decodes and measures; this module only plans the trials and chooses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hyperfit.common.runs import HyperfitError


@dataclass(frozen=True)
class Family:
    """One sampler family: ``parameter`` swept over [low, high] (log-spaced when ``log``), the rest fixed."""

    name: str
    parameter: str
    low: float
    high: float
    log: bool = False
    fixed: dict = field(default_factory=dict)

    def grid(self, trials: int) -> list[float]:
        """``trials`` values of the parameter, evenly spread with both ends included (one trial: the middle)."""
        if trials < 1:
            raise HyperfitError(f"trials must be ≥ 1, got {trials}; pass --trials 1 or more.")
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        points = (
            [(lo + hi) / 2] if trials == 1 else [lo + (hi - lo) * i / (trials - 1) for i in range(trials)]
        )
        return [round(math.exp(p) if self.log else p, 6) for p in points]

    def settings(self, value: float) -> dict:
        """The strategy's keyword settings for one trial (``Strategy(**settings)`` minus its name)."""
        return {**self.fixed, self.parameter: value}


# Ranges cover each sampler's published recommendations with room on both sides: top-p 0.9-0.95 (Holtzman et
# al.), min-p 0.05-0.1 (Nguyen et al.), typical 0.2-0.95 (Meister et al.), eta 3e-4 to 2e-3 and epsilon 3e-4
# (Hewitt et al.), temperature 0.7-1.0. All but the temperature family sample at temperature 1.
FAMILIES: dict[str, Family] = {
    "top_p": Family("top_p", "top_p", 0.5, 0.98, fixed={"temperature": 1.0}),
    "min_p": Family("min_p", "min_p", 0.02, 0.3, log=True, fixed={"temperature": 1.0}),
    "typical": Family("typical", "typical_p", 0.2, 0.98, fixed={"temperature": 1.0}),
    "temperature": Family("temperature", "temperature", 0.4, 1.1),
    "eta": Family("eta", "eta", 3e-5, 3e-3, log=True, fixed={"temperature": 1.0}),
    "epsilon": Family("epsilon", "epsilon", 3e-5, 3e-3, log=True, fixed={"temperature": 1.0}),
}

SELECTION_RULE = (
    "on the development prompts, among the trials whose rep-4 is no higher than the human references' rep-4, the "
    "one whose TTR over the whole continuation is closest to the references' TTR over the same number of tokens; "
    "when no trial's rep-4 is that low, the trial with the lowest rep-4 (ties: the earlier trial)"
)


def select_trial(trials: Sequence[dict], reference: dict, *, ttr: str = "ttr", rep: str = "rep_4") -> int:
    """Index of the chosen trial under :data:`SELECTION_RULE`; each trial and ``reference`` hold ``ttr`` and
    ``rep`` figures measured on the same development prompts."""
    if not trials:
        raise ValueError("select_trial needs at least one trial.")
    eligible = [i for i, t in enumerate(trials) if t[rep] <= reference[rep]]
    if not eligible:
        return min(range(len(trials)), key=lambda i: (trials[i][rep], i))
    return min(eligible, key=lambda i: (abs(trials[i][ttr] - reference[ttr]), i))


def parse_families(spec: str) -> list[str]:
    """The comma list of sampler families, each known, none twice."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise HyperfitError(
            f"sampler family {unknown[0]!r} is unknown; choose from {', '.join(FAMILIES)} (comma list)."
        )
    if len(set(names)) != len(names):
        raise HyperfitError(f"the sampler families {spec!r} name one twice; list each once.")
    return names


def tune(
    families: Sequence[str],
    *,
    trials: int,
    measure: Callable[[str, int, dict], dict],
    reference: dict,
) -> dict[str, dict]:
    """Every family's ``trials`` settings measured by ``measure(family, trial_index, settings) -> figures`` (the
    caller decodes the development prompts), then one chosen by :func:`select_trial`.

    Returns ``{family: {"parameter", "trials": [{"settings", **figures}], "chosen": index, "settings"}}``; each
    family received exactly ``trials`` calls of ``measure``: the equal budget."""
    out: dict[str, dict] = {}
    for name in families:
        family = FAMILIES[name]
        results = []
        for index, value in enumerate(family.grid(trials)):
            settings = family.settings(value)
            results.append({"settings": settings, **measure(name, index, settings)})
        chosen = select_trial(results, reference)
        out[name] = {
            "parameter": family.parameter,
            "trials": results,
            "chosen": chosen,
            "settings": results[chosen]["settings"],
        }
    return out
