"""Mechanism analyses (hyperfit.common.mechanism) against hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyperfit.common.mechanism import (
    StaticLogitBias,
    _pr_from_counts,
    _pr_moments,
    fit_logit_bias,
    layer_change,
    mean_distribution,
    participation_ratio,
    participation_ratios,
    rank_reordering,
)


def test_participation_ratio_equals_the_eigenvalue_formula():
    g = torch.Generator().manual_seed(0)
    # 3 directions with variances 9, 4, 1 (plus noise-free zeros): PR = (9+4+1)^2 / (81+16+1).
    h = torch.zeros(4, 500, 6)
    h[..., 0] = 3 * torch.randn(4, 500, generator=g)
    h[..., 1] = 2 * torch.randn(4, 500, generator=g)
    h[..., 2] = torch.randn(4, 500, generator=g)
    eig = torch.linalg.eigvalsh(torch.cov(h.reshape(-1, 6).T.double(), correction=0))
    assert participation_ratio(h) == pytest.approx(float(eig.sum() ** 2 / (eig**2).sum()), rel=1e-9)
    assert participation_ratio(h) == pytest.approx(14**2 / 98, rel=0.05)
    isotropic = torch.randn(8, 400, 5, generator=g)
    assert participation_ratio(isotropic) == pytest.approx(5, rel=0.05)


def test_block_resample_formula_equals_recomputing_on_the_resample():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, 7, 4, generator=g) + torch.arange(4.0) * 10  # a large mean, to test the centring
    moments = _pr_moments(h)
    for draw in ([0, 0, 1, 3, 4], [2, 2, 2, 4, 1], [0, 1, 2, 3, 4]):
        counts = np.bincount(draw, minlength=5)[None, :]
        assert _pr_from_counts(moments, counts)[0] == pytest.approx(participation_ratio(h[draw]), rel=1e-8)


def test_participation_ratios_see_an_expansion_and_its_interval_excludes_zero():
    g = torch.Generator().manual_seed(2)
    narrow = torch.randn(12, 64, 8, generator=g) * torch.tensor([4.0, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    wide = torch.randn(12, 64, 8, generator=g)
    result = participation_ratios(narrow, wide, n_resamples=300)
    assert result["b"] > 6 and result["a"] < 2
    assert result["diff_ci"][0] > 0 and not result["ci_includes_zero"]
    assert result["a_ci"][0] <= result["a"] <= result["a_ci"][1]


def test_layer_change_of_a_scaled_copy():
    h = torch.randn(3, 10, 4, generator=torch.Generator().manual_seed(3))
    change = layer_change(h, 1.5 * h)
    assert change["relative_change"] == pytest.approx(0.5) and change["cosine"] == pytest.approx(1.0)
    assert len(change["block_relative_change"]) == 3


def test_fitted_static_bias_matches_the_target_marginal():
    g = torch.Generator().manual_seed(4)
    logits_a = torch.randn(300, 12, generator=g) * 2
    logits_b = torch.randn(300, 12, generator=g) * 3 + torch.linspace(-2, 2, 12)
    target = mean_distribution(logits_b)
    bias, fit = fit_logit_bias(logits_a, target, iterations=200)
    assert fit["tv_after"] < 1e-3 < fit["tv_before"]
    torch.testing.assert_close(mean_distribution(logits_a, bias=bias), target, atol=1e-3, rtol=0)
    scores = torch.zeros(2, 12)
    assert torch.equal(StaticLogitBias(bias)(torch.zeros(2, 1, dtype=torch.long), scores), bias.expand(2, 12))


def test_rank_reordering_separates_reordering_from_sharpening_and_static_bias():
    # 2 blocks × 2 positions, vocab 3. Position 0: same top-1, b sharper. Position 1: top-1 changes 0 -> 1
    # (reproducible by a static bias towards token 1). Position 2: same and not sharper. Position 3: top-1 changes
    # 2 -> 0, which the same static bias does not reproduce.
    a = torch.tensor([[2.0, 0, 0], [2.0, 1.0, 0], [2.0, 0, 0], [0.0, 0.5, 3.0]])
    b = torch.tensor([[5.0, 0, 0], [0.0, 3.0, 0], [1.0, 0, 0], [4.0, 0, 3.0]])
    bias = torch.tensor([0.0, 1.5, 0.0])
    result = rank_reordering(a, b, n_blocks=2, bias=bias, top_k=3)
    assert result["argmax_changed"]["value"] == 0.5
    assert result["argmax_changed"]["per_block"] == [0.5, 0.5]
    assert result["sharpened_only"]["value"] == 0.25
    assert result["static_reproduces"]["value"] == 0.5
    assert result["plain_agreement"]["value"] == 0.5
