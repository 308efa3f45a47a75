"""Statistics of pairwise preference votes: Bradley–Terry strengths with ties (Davidson 1970), agreement
(Krippendorff's α, Fleiss' κ, each annotator against the others' majority) and metric–preference correlation.

Votes are coded by what the annotator preferred: 0 = the item's first text (a), 1 = equally good, 2 = the second
text (b). Library implementations are used where they exist (``krippendorff``, ``statsmodels``,
``scikit-learn``, ``scipy``); the Davidson fit is ours and is checked against ``choix`` (no ties) and the closed
form for two systems.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

A, EQUAL, B = 0, 1, 2
CATEGORIES = (A, EQUAL, B)


# ------------------------------------------------------------------------------------------------------------
# Bradley–Terry with ties (Davidson)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class DavidsonFit:
    """Maximum-likelihood Davidson model: ``theta[i]`` log-strengths (``anchor`` at 0), tie parameter ``nu``.

    P(i beats j) = π_i / D, P(tie) = ν √(π_i π_j) / D, D = π_i + π_j + ν √(π_i π_j), π = exp(θ)."""

    players: list[str]
    theta: np.ndarray
    nu: float
    log_likelihood: float
    anchor: str


def _pair_counts(
    comparisons: Sequence[tuple[str, str, int]], players: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate (a, b, outcome) into unique pairs (i < j) with wins of i, ties and wins of j."""
    index = {p: k for k, p in enumerate(players)}
    counts: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for a, b, outcome in comparisons:
        i, j = index[a], index[b]
        if i == j:
            raise ValueError(f"a comparison of {a!r} with itself")
        if i > j:
            i, j, outcome = j, i, 2 - outcome
        counts[(i, j)][outcome] += 1
    pairs = np.array(list(counts), dtype=int).reshape(-1, 2)
    table = np.array(list(counts.values()), dtype=float).reshape(-1, 3)
    return pairs[:, 0], pairs[:, 1], table[:, 0], table[:, 1], table[:, 2]


def fit_davidson(
    comparisons: Sequence[tuple[str, str, int]],
    *,
    players: Sequence[str] | None = None,
    anchor: str | None = None,
    ties: bool = True,
    ridge: float = 1e-6,
) -> DavidsonFit:
    """Fit strengths to (a, b, outcome) comparisons, outcome 0 = a better, 1 = equal, 2 = b better.

    ``ties=False`` is plain Bradley–Terry (ties must then be absent). ``anchor`` (default: the first player)
    has θ = 0. A tiny ridge on θ keeps a player that never loses (or never wins) finite; it moves estimates by
    far less than their uncertainty. Fitted with L-BFGS on the exact log-likelihood and its gradient."""
    from scipy.optimize import minimize

    players = list(players) if players is not None else sorted({p for a, b, _ in comparisons for p in (a, b)})
    anchor = players[0] if anchor is None else anchor
    i, j, wins_i, n_ties, wins_j = _pair_counts(comparisons, players)
    if not ties and n_ties.sum() > 0:
        raise ValueError("ties=False but the comparisons contain ties")
    total = wins_i + n_ties + wins_j
    free = [k for k, p in enumerate(players) if p != anchor]

    def unpack(x: np.ndarray) -> tuple[np.ndarray, float]:
        theta = np.zeros(len(players))
        theta[free] = x[: len(free)]
        return theta, (x[-1] if ties else -np.inf)

    def negative_log_likelihood(x: np.ndarray) -> tuple[float, np.ndarray]:
        theta, log_nu = unpack(x)
        ti, tj = theta[i], theta[j]
        half = (ti + tj) / 2
        # log D computed stably around the larger of θ_i, θ_j
        top = np.maximum(ti, tj)
        terms = np.exp(ti - top) + np.exp(tj - top) + (np.exp(log_nu + half - top) if ties else 0.0)
        log_d = top + np.log(terms)
        ll = wins_i @ ti + wins_j @ tj - total @ log_d
        if ties:
            ll += n_ties @ (log_nu + half)
        share_i = np.exp(ti - log_d)
        share_j = np.exp(tj - log_d)
        share_t = np.exp(log_nu + half - log_d) if ties else np.zeros_like(ti)
        grad_theta = np.zeros(len(players))
        np.add.at(grad_theta, i, wins_i + n_ties / 2 - total * (share_i + share_t / 2))
        np.add.at(grad_theta, j, wins_j + n_ties / 2 - total * (share_j + share_t / 2))
        grad = list(grad_theta[free] - 2 * ridge * theta[free])
        if ties:
            grad.append(n_ties.sum() - total @ share_t)
        ll -= ridge * (theta[free] ** 2).sum()
        return -ll, -np.array(grad)

    start = np.zeros(len(free) + (1 if ties else 0))
    if ties:
        start[-1] = np.log(max(n_ties.sum(), 0.5) / max((wins_i + wins_j).sum(), 0.5))
    result = minimize(negative_log_likelihood, start, jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    theta, log_nu = unpack(result.x)
    return DavidsonFit(players, theta, float(np.exp(log_nu)), float(-result.fun), anchor)


def davidson_probabilities(fit: DavidsonFit, a: str, b: str) -> tuple[float, float, float]:
    """(P(a better), P(equal), P(b better)) under a fitted model."""
    ta, tb = fit.theta[fit.players.index(a)], fit.theta[fit.players.index(b)]
    pa, pb, tie = np.exp(ta), np.exp(tb), fit.nu * np.exp((ta + tb) / 2)
    total = pa + pb + tie
    return float(pa / total), float(tie / total), float(pb / total)


# ------------------------------------------------------------------------------------------------------------
# Agreement
# ------------------------------------------------------------------------------------------------------------


def reliability_matrix(votes: Sequence[tuple[object, object, int]]) -> tuple[np.ndarray, list, list]:
    """(annotators × items matrix of codes with NaN where an annotator did not vote, annotators, items)."""
    annotators = sorted({v[0] for v in votes}, key=str)
    items = sorted({v[1] for v in votes}, key=str)
    row = {a: k for k, a in enumerate(annotators)}
    col = {i: k for k, i in enumerate(items)}
    matrix = np.full((len(annotators), len(items)), np.nan)
    for annotator, item, code in votes:
        matrix[row[annotator], col[item]] = code
    return matrix, annotators, items


def krippendorff_alpha(votes: Sequence[tuple[object, object, int]], *, level: str = "nominal") -> float:
    """Krippendorff's α of (annotator, item, code) votes (the ``krippendorff`` package; items with a single
    vote carry no information on agreement and are dropped). NaN when fewer than two items have two votes."""
    import krippendorff

    per_item = Counter(item for _, item, _ in votes)
    kept = [v for v in votes if per_item[v[1]] >= 2]
    if len({v[1] for v in kept}) < 2 or len({v[2] for v in kept}) < 2:
        return float("nan")
    matrix, _, _ = reliability_matrix(kept)
    return float(
        krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=CATEGORIES)
    )


def fleiss_table(votes: Sequence[tuple[object, object, int]], *, raters: int) -> np.ndarray:
    """Items × categories counts for Fleiss' κ, which needs the same number of raters per item: items with
    at least ``raters`` votes, each cut to its first ``raters`` votes (in the order given)."""
    by_item: dict[object, list[int]] = defaultdict(list)
    for _, item, code in votes:
        by_item[item].append(code)
    rows = [codes[:raters] for codes in by_item.values() if len(codes) >= raters]
    return np.array([[row.count(c) for c in CATEGORIES] for row in rows], dtype=float).reshape(
        -1, len(CATEGORIES)
    )


def fleiss_kappa(votes: Sequence[tuple[object, object, int]], *, raters: int) -> tuple[float, int]:
    """(Fleiss' κ from ``statsmodels``, number of items used); NaN with fewer than two usable items."""
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

    table = fleiss_table(votes, raters=raters)
    if len(table) < 2 or raters < 2:
        return float("nan"), len(table)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(statsmodels_fleiss(table, method="fleiss")), len(table)


def leave_one_out_majority(
    votes: Sequence[tuple[object, object, int]],
) -> list[tuple[object, object, int, int]]:
    """(annotator, item, own code, majority code of the item's OTHER votes) wherever those others have a
    strict plurality (at least two other votes, no tie for first place)."""
    by_item: dict[object, list[tuple[object, int]]] = defaultdict(list)
    for annotator, item, code in votes:
        by_item[item].append((annotator, code))
    pairs = []
    for item, entries in by_item.items():
        for k, (annotator, code) in enumerate(entries):
            others = Counter(c for m, (_, c) in enumerate(entries) if m != k)
            if sum(others.values()) < 2:
                continue
            (first, n_first), *rest = others.most_common()
            if rest and rest[0][1] == n_first:
                continue
            pairs.append((annotator, item, code, first))
    return pairs


def annotator_agreement(votes: Sequence[tuple[object, object, int]]) -> dict[object, dict]:
    """Per annotator: items compared with the others' majority, share agreeing, and Cohen's κ against it
    (scikit-learn; NaN when either side uses a single category)."""
    from sklearn.metrics import cohen_kappa_score

    by_annotator: dict[object, list[tuple[int, int]]] = defaultdict(list)
    for annotator, _, code, majority in leave_one_out_majority(votes):
        by_annotator[annotator].append((code, majority))
    result = {}
    for annotator, pairs in by_annotator.items():
        own, majority = [p[0] for p in pairs], [p[1] for p in pairs]
        kappa = float("nan")
        if len(set(own)) > 1 or len(set(majority)) > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                kappa = float(cohen_kappa_score(own, majority, labels=list(CATEGORIES)))
        result[annotator] = {
            "items": len(pairs),
            "agreement": sum(o == m for o, m in pairs) / len(pairs),
            "cohen_kappa": kappa,
        }
    return result


# ------------------------------------------------------------------------------------------------------------
# Automatic metrics against preference
# ------------------------------------------------------------------------------------------------------------


def correlation(x: Sequence[float], y: Sequence[float]) -> dict:
    """Spearman's ρ and Kendall's τ-b with their two-sided p-values (scipy); NaN when either side is constant
    or there are fewer than three points."""
    from scipy.stats import kendalltau, spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        nan = float("nan")
        return {"n": len(x), "spearman": nan, "spearman_p": nan, "kendall": nan, "kendall_p": nan}
    rho = spearmanr(x, y)
    tau = kendalltau(x, y)
    return {
        "n": len(x),
        "spearman": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
        "kendall": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
    }
