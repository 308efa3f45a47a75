"""Uncertainty for every reported figure: bootstrap intervals over units, paired differences, exact tests.

Units are whatever was sampled (held-out prompts, blocks, annotated items); a figure computed from them gets a
95 % percentile-bootstrap interval by resampling units with replacement (Efron & Tibshirani), optionally in
clusters (e.g. several annotations of one prompt move together). Two systems measured on the *same* units are
compared by their paired difference: a bootstrap interval of the mean difference and a two-sided sign-flip
permutation p-value (exact up to 2**16 sign patterns, Monte Carlo beyond). Plain numpy, seeded, CPU-only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

N_RESAMPLES = 2000
CONFIDENCE = 0.95
EXACT_PERMUTATION_LIMIT = 16  # 2**16 sign patterns are enumerated; more units are sampled

Interval = tuple[float, float]


def _percentile_interval(draws: np.ndarray, confidence: float) -> Interval:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return (float(low), float(high))


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_units: int,
    *,
    clusters: Sequence[int] | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of ``statistic(indices)`` over ``n_units`` units.

    ``statistic`` receives an integer array of unit indices (a resample, with repeats) and returns the figure
    computed on those units, so ratios such as corpus perplexity (exp of summed NLL over summed tokens) resample
    correctly. With ``clusters`` (one cluster id per unit) whole clusters are resampled, keeping the units of a
    cluster together (clustered bootstrap). Fewer than 2 units (or clusters) give ``(nan, nan)``.
    """
    rng = np.random.default_rng(seed)
    if clusters is None:
        if n_units < 2:
            return (float("nan"), float("nan"))
        draws = np.array(
            [statistic(rng.integers(0, n_units, n_units)) for _ in range(n_resamples)], dtype=float
        )
        return _percentile_interval(draws, confidence)
    labels = np.asarray(clusters)
    if labels.shape != (n_units,):
        raise ValueError(f"clusters must give one id per unit ({n_units}), got shape {labels.shape}.")
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    if len(members) < 2:
        return (float("nan"), float("nan"))
    draws = np.empty(n_resamples)
    for r in range(n_resamples):
        chosen = rng.integers(0, len(members), len(members))
        draws[r] = statistic(np.concatenate([members[c] for c in chosen]))
    return _percentile_interval(draws, confidence)


def _batched_draws(
    statistic: Callable[[np.ndarray], np.ndarray], n_units: int, n_resamples: int, seed: int
) -> np.ndarray:
    """Resample units in blocks of index rows ``[r, n]`` (bounded memory); ``statistic`` maps rows to figures."""
    rng = np.random.default_rng(seed)
    rows = max(1, 2_000_000 // max(n_units, 1))
    parts = []
    for start in range(0, n_resamples, rows):
        idx = rng.integers(0, n_units, (min(rows, n_resamples - start), n_units))
        parts.append(statistic(idx))
    return np.concatenate(parts)


def mean_ci(
    values: Sequence[float],
    *,
    clusters: Sequence[int] | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of the mean of per-unit ``values`` (e.g. per-prompt TTR)."""
    x = np.asarray(values, dtype=float)
    if clusters is not None:
        return bootstrap_ci(
            lambda idx: float(x[idx].mean()),
            len(x),
            clusters=clusters,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
        )
    if len(x) < 2:
        return (float("nan"), float("nan"))
    draws = _batched_draws(lambda idx: x[idx].mean(1), len(x), n_resamples, seed)
    return _percentile_interval(draws, confidence)


def ratio_ci(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    transform: Callable[[float], float] = lambda r: r,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Interval of ``transform(Σ numerators / Σ denominators)`` resampling units: corpus-level figures such as
    perplexity (per-block summed NLL over per-block token counts, ``transform=math.exp``) or SimCTG's rep-n."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if len(num) < 2:
        return (float("nan"), float("nan"))

    def statistic(idx: np.ndarray) -> np.ndarray:
        totals = den[idx].sum(1)
        ratios = np.divide(num[idx].sum(1), totals, out=np.full(len(idx), np.nan), where=totals != 0)
        return np.array([transform(float(r)) if np.isfinite(r) else float("nan") for r in ratios])

    draws = _batched_draws(statistic, len(num), n_resamples, seed)
    return _percentile_interval(draws, confidence)


def sign_flip_p_value(differences: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of "the mean paired difference is 0": a permutation test that flips the sign of each
    unit's difference. Exact (every sign pattern) for up to 16 non-zero differences, else Monte Carlo with the
    +1 correction so p is never 0. All differences zero gives p = 1."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.mean()) - 1e-12 * max(1.0, abs(d).max())  # ties with the observed count as extreme
    if d.size <= EXACT_PERMUTATION_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        means = np.abs(signs @ d) / d.size
        return float((means >= observed).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_resamples, d.size))
    extreme = int((np.abs(signs @ d) / d.size >= observed).sum())
    return (extreme + 1) / (n_resamples + 1)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict:
    """``a - b`` on the same units: ``{"diff": mean difference, "ci": [low, high], "p": two-sided p, "n": units}``.

    The interval is the percentile bootstrap of the mean difference over units; ``p`` is the sign-flip
    permutation test (:func:`sign_flip_p_value`). ``ci_includes_zero`` says plainly whether the data leave the
    sign of the difference open.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.size} and {y.size}.")
    d = x - y
    low, high = mean_ci(d, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {
        "diff": float(d.mean()) if d.size else float("nan"),
        "ci": [low, high],
        "p": sign_flip_p_value(d, seed=seed),
        "n": int(d.size),
        "ci_includes_zero": not (low > 0 or high < 0),
    }


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial (sign) test of wins vs losses with p = 1/2; ties are left out by the caller."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mean_sd(values: Sequence[float]) -> dict:
    """Seed spread: ``{"mean", "sd" (sample, n-1), "n", "min", "max"}``; ``sd`` is nan for a single seed."""
    x = np.asarray(values, dtype=float)
    return {
        "mean": float(x.mean()) if x.size else float("nan"),
        "sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
        "n": int(x.size),
        "min": float(x.min()) if x.size else float("nan"),
        "max": float(x.max()) if x.size else float("nan"),
    }
