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
from collections.abc import Callable, Hashable, Sequence

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


def _strata_members(n_units: int, strata: Sequence[Hashable] | None) -> list[np.ndarray]:
    """The unit indices of each stratum, in order of first appearance (all units when ``strata`` is None)."""
    if strata is None:
        return [np.arange(n_units)]
    labels = list(strata)
    if len(labels) != n_units:
        raise ValueError(f"strata must give one label per unit ({n_units}), got {len(labels)}.")
    index: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        index.setdefault(label, []).append(i)
    return [np.array(members) for members in index.values()]


def _stratified_draws(
    statistic: Callable[[list[np.ndarray]], np.ndarray],
    members: list[np.ndarray],
    n_resamples: int,
    seed: int,
) -> np.ndarray:
    """Resample units within each stratum, in blocks of rows (bounded memory); ``statistic`` maps the list of
    per-stratum index rows ``[r, n_s]`` to ``r`` figures. One stratum draws exactly as ``_batched_draws``."""
    rng = np.random.default_rng(seed)
    n_units = sum(len(m) for m in members)
    rows = max(1, 2_000_000 // max(n_units, 1))
    parts = []
    for start in range(0, n_resamples, rows):
        r = min(rows, n_resamples - start)
        parts.append(statistic([m[rng.integers(0, len(m), (r, len(m)))] for m in members]))
    return np.concatenate(parts)


def _ratio_figure(
    num_sums: np.ndarray, den_sums: np.ndarray, transform: Callable[[float], float] | None
) -> np.ndarray:
    """``transform(Σ num / Σ den)`` per stratum (last axis), averaged over strata; NaN where a total is 0."""
    ratios = np.divide(num_sums, den_sums, out=np.full(num_sums.shape, np.nan), where=den_sums != 0)
    if isinstance(transform, np.ufunc):  # e.g. np.exp: on the whole array at once
        with np.errstate(over="ignore"):
            ratios = transform(ratios)
    elif transform is not None:
        flat = [transform(float(r)) if np.isfinite(r) else float("nan") for r in ratios.reshape(-1)]
        ratios = np.array(flat, dtype=float).reshape(ratios.shape)
    return ratios.mean(-1)


def _resampled_figure(num: np.ndarray, den: np.ndarray, transform, idx: list[np.ndarray]) -> np.ndarray:
    """The figure on each resample: per-stratum sums of the resampled units, then :func:`_ratio_figure`."""
    num_sums = np.stack([num[i].sum(1) for i in idx], -1)
    den_sums = np.stack([den[i].sum(1) for i in idx], -1)
    return _ratio_figure(num_sums, den_sums, transform)


def _figure_of(num: np.ndarray, den: np.ndarray, transform, members: list[np.ndarray]) -> float:
    num_sums = np.array([num[m].sum() for m in members])
    den_sums = np.array([den[m].sum() for m in members])
    return float(_ratio_figure(num_sums, den_sums, transform))


def ratio_ci(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    transform: Callable[[float], float] | None = None,
    strata: Sequence[Hashable] | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Interval of ``transform(Σ numerators / Σ denominators)`` resampling units: corpus-level figures such as
    perplexity (per-block summed NLL over per-block token counts, ``transform=math.exp``, or ``np.exp``, which is
    applied to all resamples at once) or SimCTG's rep-n; a mean over units is the case of denominators all 1.

    With ``strata`` (one label per unit, e.g. the held-out domain of each prompt) units are resampled within
    their stratum and the figure is the unweighted mean over strata of each stratum's figure, as a table that
    averages its domains reports it (stratified bootstrap)."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    members = _strata_members(len(num), strata)
    if min(len(m) for m in members) < 2:
        return (float("nan"), float("nan"))
    draws = _stratified_draws(
        lambda idx: _resampled_figure(num, den, transform, idx), members, n_resamples, seed
    )
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


def paired_ratio_difference(
    numerators_a: Sequence[float],
    denominators_a: Sequence[float] | None,
    numerators_b: Sequence[float],
    denominators_b: Sequence[float] | None,
    *,
    transform: Callable[[float], float] | None = None,
    strata: Sequence[Hashable] | None = None,
    n_resamples: int = N_RESAMPLES,
    n_permutations: int = 10_000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict:
    """``F(a) - F(b)`` for a figure ``F = transform(Σ numerators / Σ denominators)`` measured on the same units
    (e.g. rep-4 or perplexity of two models on the same prompts), in :func:`paired_difference`'s form.

    The interval resamples units (within ``strata``, as :func:`ratio_ci`), the same units for a and b. ``p`` is
    the paired permutation test that swaps a and b within units (exactly, every swap pattern, for up to 16 units
    whose a and b differ; Monte Carlo with the +1 correction beyond): the sign-flip test of a ratio figure. A
    denominator of None means 1 per unit; for plain means without strata the result is exactly
    :func:`paired_difference`'s."""
    num_a, num_b = np.asarray(numerators_a, dtype=float), np.asarray(numerators_b, dtype=float)
    if num_a.shape != num_b.shape:
        raise ValueError(f"paired values need equal lengths, got {num_a.size} and {num_b.size}.")
    if denominators_a is None and denominators_b is None and transform is None and strata is None:
        return paired_difference(num_a, num_b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    ones = np.ones_like(num_a)
    den_a = ones if denominators_a is None else np.asarray(denominators_a, dtype=float)
    den_b = ones if denominators_b is None else np.asarray(denominators_b, dtype=float)
    members = _strata_members(len(num_a), strata)
    diff = _figure_of(num_a, den_a, transform, members) - _figure_of(num_b, den_b, transform, members)
    low = high = float("nan")
    if min(len(m) for m in members) >= 2:
        draws = _stratified_draws(
            lambda idx: (
                _resampled_figure(num_a, den_a, transform, idx)
                - _resampled_figure(num_b, den_b, transform, idx)
            ),
            members,
            n_resamples,
            seed,
        )
        low, high = _percentile_interval(draws, confidence)
    p = _swap_p_value(
        (num_a, den_a), (num_b, den_b), diff, transform, members, n_permutations=n_permutations, seed=seed
    )
    return {
        "diff": diff,
        "ci": [low, high],
        "p": p,
        "n": int(num_a.size),
        "ci_includes_zero": not (low > 0 or high < 0),
    }


def _swap_p_value(a, b, observed: float, transform, members, *, n_permutations: int, seed: int) -> float:
    """Two-sided p of :func:`paired_ratio_difference`: how often swapping a and b within a random subset of units
    gives a difference at least as far from 0 as the observed one."""
    if not math.isfinite(observed):
        return float("nan")
    (num_a, den_a), (num_b, den_b) = a, b
    changed = np.flatnonzero((num_a != num_b) | (den_a != den_b))  # swapping the others changes nothing
    if changed.size == 0:
        return 1.0
    if changed.size <= EXACT_PERMUTATION_LIMIT:
        # Every swap pattern once: the bits of 0 .. 2^k - 1.
        swaps = ((np.arange(2**changed.size)[:, None] >> np.arange(changed.size)) & 1).astype(float)
    else:
        swaps = np.random.default_rng(seed).choice((0.0, 1.0), size=(n_permutations, changed.size))
    stratum = np.empty(len(num_a), dtype=int)
    for s, m in enumerate(members):
        stratum[m] = s
    # [changed units, strata]: which stratum each unit that can be swapped belongs to.
    inside = np.eye(len(members))[stratum[changed]]

    def sums(values_a: np.ndarray, values_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # A swap moves (b - a) into a's total and out of b's, per stratum: [patterns, strata].
        base_a = np.array([values_a[m].sum() for m in members])
        base_b = np.array([values_b[m].sum() for m in members])
        moved = swaps @ ((values_b - values_a)[changed][:, None] * inside)
        return base_a + moved, base_b - moved

    num_sums_a, num_sums_b = sums(num_a, num_b)
    den_sums_a, den_sums_b = sums(den_a, den_b)
    swapped = _ratio_figure(num_sums_a, den_sums_a, transform)
    swapped = swapped - _ratio_figure(num_sums_b, den_sums_b, transform)
    extreme = np.abs(swapped) >= abs(observed) - 1e-12 * max(1.0, abs(observed))
    if changed.size <= EXACT_PERMUTATION_LIMIT:
        return float(extreme.mean())
    return (int(extreme.sum()) + 1) / (n_permutations + 1)


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
        # equal values have sd 0 exactly (the float sum can leave ~1e-17, printed as a spread)
        "sd": (0.0 if x.min() == x.max() else float(x.std(ddof=1))) if x.size > 1 else float("nan"),
        "n": int(x.size),
        "min": float(x.min()) if x.size else float("nan"),
        "max": float(x.max()) if x.size else float("nan"),
    }
