"""Decoding strategies, the entropy-matched temperature and the two-model sharpness comparison."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hyperfit.common.compare import (
    STRATEGIES,
    compare_sharpness,
    entropy_at_temperatures,
    generation_metrics,
    match_temperature,
    run_strategy,
)
from hyperfit.common.decode import greedy_decode
from hyperfit.common.evaluate import collect_token_stats
from tests.conftest import make_tiny_llama

VOCAB = 61


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama(VOCAB, seed=3).eval()


def prompts(b: int = 4, p: int = 6) -> torch.Tensor:
    return torch.randint(3, VOCAB, (b, p), generator=torch.Generator().manual_seed(11))


def test_greedy_strategy_is_greedy_decode(model):
    ids = prompts()
    seqs, _ = run_strategy(model, ids, STRATEGIES["greedy"], max_new_tokens=12)
    assert seqs == greedy_decode(model, ids, max_new_tokens=12).sequences()


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    ids = prompts()
    top_p = STRATEGIES["top_p"]
    a, _ = run_strategy(model, ids, top_p, max_new_tokens=20, seed=1)
    b, _ = run_strategy(model, ids, top_p, max_new_tokens=20, seed=1)
    c, _ = run_strategy(model, ids, top_p, max_new_tokens=20, seed=2)
    assert a == b and a != c
    top1 = dataclasses.replace(top_p, top_k=1, top_p=None)
    greedy, _ = run_strategy(model, ids, STRATEGIES["greedy"], max_new_tokens=20)
    assert run_strategy(model, ids, top1, max_new_tokens=20, seed=5)[0] == greedy


def test_blocked_greedy_never_reproduces_a_training_5gram(model):
    ids = prompts()
    greedy, _ = run_strategy(model, ids, STRATEGIES["greedy"], max_new_tokens=24)
    train_ids = torch.tensor(
        [p + g for p, g in zip(ids.tolist(), greedy, strict=True)]
    )  # "hyperfitted on its output"
    blocked, facts = run_strategy(
        model, ids, STRATEGIES["greedy_blocked"], max_new_tokens=24, train_ids=train_ids
    )
    assert facts["blocker_fired"] > 0
    train_grams = {tuple(row[i : i + 5]) for row in train_ids.tolist() for i in range(len(row) - 4)}
    for p, g in zip(ids.tolist(), blocked, strict=True):
        full = p + g
        assert not any(tuple(full[i : i + 5]) in train_grams for i in range(len(p) - 4, len(full) - 4))


def test_entropy_matched_temperature_hits_the_target(model):
    blocks = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(2))
    at_one = entropy_at_temperatures(model, blocks, [1.0])[0]
    target = 0.6 * at_one
    t, _ = match_temperature(model, blocks, target)
    assert t < 1.0
    assert entropy_at_temperatures(model, blocks, [t])[0] == pytest.approx(target, rel=0.02)
    with pytest.raises(ValueError, match="resolve it with match_temperature"):
        run_strategy(model, prompts(), STRATEGIES["entropy_matched"], max_new_tokens=4)


def test_model_compared_with_itself(model):
    blocks = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(2))
    stats = collect_token_stats(model, blocks)
    result = compare_sharpness(stats, stats)
    assert result["top1_agreement"] == 1.0
    assert result["rank_shift"]["share_unchanged"] == 1.0
    assert result["before"] == result["after"]


def test_generation_metrics_on_a_loop_and_a_copy():
    looping = [[1, 2, 3] * 10]
    varied = [list(range(30))]
    loop_m = generation_metrics(looping, train_seqs=[list(range(100, 130))])
    var_m = generation_metrics(varied, train_seqs=[list(range(30))])
    assert (
        loop_m["ttr"] == pytest.approx(0.1)
        and loop_m["loop_share"] == 1.0
        and loop_m["copy_gt10_share"] == 0.0
    )
    assert var_m["ttr"] == 1.0 and var_m["rep_2"] == 0.0 and var_m["copy_gt10_share"] == 1.0


def test_binned_shares_cover_every_value_once():
    from hyperfit.common.compare import ENTROPY_BINS, TOP1_BINS, binned_shares

    values = torch.tensor([0.0, 0.49, 0.5, 1.2, 2.9, 3.99, 4.0, 100.0])
    shares = binned_shares(values, ENTROPY_BINS)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["0–0.5"] == pytest.approx(2 / 8) and shares["≥6"] == pytest.approx(1 / 8)
    assert sum(binned_shares(torch.rand(100), TOP1_BINS).values()) == pytest.approx(1.0)
