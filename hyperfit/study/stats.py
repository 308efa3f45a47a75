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
    tol: float = 1e-10,
) -> DavidsonFit:
    """Fit strengths to (a, b, outcome) comparisons, outcome 0 = a better, 1 = equal, 2 = b better.

    ``ties=False`` is plain Bradley–Terry (ties must then be absent). ``anchor`` (default: the first player)
    has θ = 0. A tiny ridge on θ keeps a player that never loses (or never wins) finite; it moves estimates by
    far less than their uncertainty. Newton's method on the exact log-likelihood: log D is a log-sum-exp of
    θ_i, θ_j and log ν + (θ_i + θ_j)/2, so its Hessian is the covariance of those three directions under the
    outcome probabilities, and each step is a small linear solve (bootstrap refits stay cheap)."""
    players = list(players) if players is not None else sorted({p for a, b, _ in comparisons for p in (a, b)})
    anchor = players[0] if anchor is None else anchor
    i, j, wins_i, n_ties, wins_j = _pair_counts(comparisons, players)
    if not ties and n_ties.sum() > 0:
        raise ValueError("ties=False but the comparisons contain ties")
    total = wins_i + n_ties + wins_j
    n = len(players)
    size = n + 1 if ties else n  # θ for every player, then log ν
    # Each outcome's direction in (θ_i, θ_j, log ν): i wins, j wins, tie.
    directions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 1.0]])[:, : 3 if ties else 2]
    counts = np.stack([wins_i, wins_j, n_ties], axis=1)[:, : 3 if ties else 2]
    columns = np.stack([i, j, np.full_like(i, n)], axis=1)[:, : 3 if ties else 2]
    free = np.array([k for k in range(size) if k != players.index(anchor)])

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(log-likelihood, gradient, negative Hessian) at full parameter vector x."""
        local = x[columns]  # [pairs, 2 or 3]
        logits = local @ directions.T  # [pairs, outcomes]
        if not ties:
            logits = logits[:, :2]
        top = logits.max(axis=1, keepdims=True)
        log_d = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        shares = np.exp(logits - log_d[:, None])
        ll = float((counts * logits[:, : counts.shape[1]]).sum() - total @ log_d)
        used = directions[: shares.shape[1]]
        mean = shares @ used  # [pairs, dims]
        grad_local = counts @ used - total[:, None] * mean
        cov = np.einsum("po,od,oe->pde", shares, used, used) - np.einsum("pd,pe->pde", mean, mean)
        grad = np.zeros(size)
        hess = np.zeros((size, size))
        np.add.at(grad, columns, grad_local)
        dims = columns.shape[1]
        for a in range(dims):
            for b in range(dims):
                np.add.at(hess, (columns[:, a], columns[:, b]), total * cov[:, a, b])
        theta = x[:n]
        penalty = ridge * float((theta**2).sum())
        grad[:n] -= 2 * ridge * theta
        hess[np.arange(n), np.arange(n)] += 2 * ridge
        return ll - penalty, grad, hess

    x = np.zeros(size)
    if ties:
        x[n] = np.log(max(n_ties.sum(), 0.5) / max((wins_i + wins_j).sum(), 0.5))
    ll, grad, hess = evaluate(x)
    for _ in range(200):
        step = np.zeros(size)
        step[free] = np.linalg.lstsq(hess[np.ix_(free, free)], grad[free], rcond=None)[0]
        scale = 1.0
        while scale > 1e-8:  # halve the step until the likelihood does not fall
            candidate = x + scale * step
            new_ll, new_grad, new_hess = evaluate(candidate)
            if new_ll >= ll - 1e-12:
                break
            scale /= 2
        x, improvement = candidate, new_ll - ll
        ll, grad, hess = new_ll, new_grad, new_hess
        if abs(improvement) < tol and np.abs(grad[free]).max() < 1e-6 * max(1.0, total.sum()):
            break
    theta = x[:n] - x[players.index(anchor)]
    nu = float(np.exp(x[n])) if ties else 0.0
    return DavidsonFit(players, theta, nu, ll, anchor)


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
