"""Interval methods against known cases and against scipy's implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hyperfit.common import stats

scipy_stats = pytest.importorskip("scipy.stats")


def test_mean_interval_matches_scipy_percentile_bootstrap():
    x = np.random.default_rng(1).normal(0.5, 0.2, size=40)
    ours = stats.mean_ci(x, n_resamples=4000, seed=3)
    theirs = scipy_stats.bootstrap(
        (x,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(3)
    ).confidence_interval
    assert ours[0] == pytest.approx(theirs.low, abs=0.01) and ours[1] == pytest.approx(theirs.high, abs=0.01)
    assert ours[0] < x.mean() < ours[1]


def test_mean_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for r in range(200):
        sample = rng.normal(1.0, 1.0, size=30)
        low, high = stats.mean_ci(sample, n_resamples=500, seed=r)
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / 200 <= 0.99  # percentile bootstrap undercovers slightly at n = 30


def test_clustered_bootstrap_moves_clusters_together():
    """Each prompt annotated 3 times with identical votes: the clustered interval is the one of the 20 prompts,
    while pretending the 60 votes are independent gives a falsely narrow interval."""
    v = np.random.default_rng(2).random(20)
    votes, prompt = np.repeat(v, 3), np.repeat(np.arange(20), 3)
    clustered = stats.mean_ci(votes, clusters=prompt, seed=0)
    per_prompt = stats.mean_ci(v, seed=0)
    naive = stats.mean_ci(votes, seed=0)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(clustered) == pytest.approx(width(per_prompt), rel=0.15)
    assert width(naive) < 0.8 * width(clustered)


def test_ratio_interval_is_corpus_level():
    nll, tokens = np.array([10.0, 20.0, 30.0, 40.0]), np.array([10.0, 10.0, 10.0, 10.0])
    low, high = stats.ratio_ci(nll, tokens, transform=math.exp, seed=0)
    assert low <= math.exp(2.5) <= high and low >= math.exp(1.0) and high <= math.exp(4.0)


def test_sign_flip_p_value_exact_known_case_and_scipy():
    # d = [1, 2, 3]: only the all-plus and all-minus patterns reach |mean| 2 -> p = 2 / 8.
    assert stats.sign_flip_p_value([1, 2, 3]) == pytest.approx(0.25)
    d = np.random.default_rng(4).normal(0.3, 1.0, size=12)
    theirs = scipy_stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    ).pvalue
    assert stats.sign_flip_p_value(d) == pytest.approx(theirs, abs=1e-9)


def test_sign_flip_monte_carlo_agrees_with_scipy():
    d = np.random.default_rng(5).normal(0.4, 1.0, size=40)
    theirs = scipy_stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        n_resamples=20000,
        alternative="two-sided",
        random_state=np.random.default_rng(0),
    ).pvalue
    assert stats.sign_flip_p_value(d, n_resamples=20000) == pytest.approx(theirs, abs=0.01)


def test_sign_test_equals_scipy_binomtest():
    for wins, losses in ((9, 1), (5, 5), (12, 3), (0, 7)):
        assert stats.sign_test(wins, losses) == pytest.approx(
            scipy_stats.binomtest(wins, wins + losses).pvalue
        )
    assert stats.sign_test(0, 0) == 1.0


def test_paired_difference_reports_diff_interval_and_p():
    rng = np.random.default_rng(6)
    base = rng.random(30)
    shifted = stats.paired_difference(base + 0.2 + rng.normal(0, 0.05, 30), base)
    assert shifted["diff"] == pytest.approx(0.2, abs=0.03)
    assert shifted["ci"][0] > 0 and shifted["p"] < 0.001 and not shifted["ci_includes_zero"]
    same = stats.paired_difference(base + rng.normal(0, 0.05, 30), base)
    assert same["ci_includes_zero"] and same["p"] > 0.01
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_mean_sd_and_degenerate_inputs():
    assert stats.mean_sd([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3, "min": 1.0, "max": 3.0}
    assert math.isnan(stats.mean_sd([1.0])["sd"])
    assert stats.mean_sd([0.372] * 3)["sd"] == 0.0  # not the ~1e-17 that summing floats leaves
    assert all(math.isnan(v) for v in stats.mean_ci([1.0]))
    assert stats.sign_flip_p_value([0.0, 0.0]) == 1.0


def test_paired_ratio_difference_is_the_paired_mean_difference_for_plain_means():
    """With denominators 1 the ratio path (here forced through one stratum) gives paired_difference's numbers:
    the same resamples, and swapping a and b within a unit is flipping the sign of its difference."""
    rng = np.random.default_rng(7)
    for n in (12, 40):  # exact enumeration, then Monte Carlo
        a = rng.random(n)
        b = a + rng.normal(0.1, 0.2, n)
        plain = stats.paired_difference(a, b)
        ratio = stats.paired_ratio_difference(a, np.ones(n), b, np.ones(n), strata=[0] * n)
        assert ratio["diff"] == pytest.approx(plain["diff"], abs=1e-12)
        assert ratio["ci"] == pytest.approx(plain["ci"], abs=1e-12)
        assert ratio["p"] == pytest.approx(plain["p"], abs=1e-12)
        assert stats.paired_ratio_difference(a, None, b, None) == plain


def test_paired_ratio_difference_swap_test_known_case():
    """Corpus figure Σnum/Σden of three units. a = (1/2, 1/2, 1/2) and b = (0/2, 0/2, 0/2): the observed
    difference 0.5 is reached only by swapping no unit or every unit (-0.5), so p = 2/8."""
    result = stats.paired_ratio_difference([1, 1, 1], [2, 2, 2], [0, 0, 0], [2, 2, 2])
    assert result["diff"] == pytest.approx(0.5) and result["p"] == pytest.approx(0.25)
    assert result["ci"] == [pytest.approx(0.5), pytest.approx(0.5)]  # every resample gives 0.5
    # exp of a mean NLL: perplexity 2 -> 1 on every block, a difference of e^... known exactly.
    nll = np.full(5, 10.0 * math.log(2.0))
    tokens = np.full(5, 10.0)
    ppl = stats.paired_ratio_difference(nll, tokens, np.zeros(5), tokens, transform=math.exp)
    assert ppl["diff"] == pytest.approx(1.0) and ppl["p"] == pytest.approx(2 / 32)
    unchanged = stats.paired_ratio_difference([1, 2], [2, 2], [1, 2], [2, 2])
    assert unchanged["diff"] == 0.0 and unchanged["p"] == 1.0 and unchanged["ci_includes_zero"]


def test_stratified_interval_resamples_within_each_stratum():
    """Two strata of very different levels: the stratified figure is the mean of the two stratum means, and
    since each resample keeps half its units in each stratum, its interval is much narrower than the pooled one
    (where a resample can draw mostly from one stratum)."""
    rng = np.random.default_rng(8)
    values = np.concatenate([rng.normal(0.0, 0.05, 20), rng.normal(1.0, 0.05, 20)])
    strata = ["low"] * 20 + ["high"] * 20
    stratified = stats.ratio_ci(values, np.ones(40), strata=strata, seed=1)
    pooled = stats.ratio_ci(values, np.ones(40), seed=1)
    assert stratified[0] < values.mean() < stratified[1]
    assert (stratified[1] - stratified[0]) < 0.5 * (pooled[1] - pooled[0])
    # One stratum is the plain interval, resample for resample.
    assert stats.ratio_ci(values, np.ones(40), strata=[0] * 40, seed=1) == pooled
    with pytest.raises(ValueError, match="one label per unit"):
        stats.ratio_ci(values, np.ones(40), strata=strata[:3])
